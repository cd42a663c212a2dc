"""`compare_table` on hand-made run folders: grouping, labels and the paired t-test against the
reference group, checked against values computed by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from llm4cdsr.cli.compare import compare_table


def _run(root, name, model, seed, ranks):
    """A finished run folder with the files compare reads; `ranks`: 0-based sampled rank per user."""
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "model": {"name": model}}), encoding="utf-8")
    metrics = {"overall": {"hit@10": 0.5, "ndcg@10": 0.25}, "a": {"ndcg@10": 0.3}, "b": {"ndcg@10": 0.2}}
    results = {"dataset": {"domains": ["a", "b"]}, "test": {"sampled": metrics, "full": metrics}}
    (d / "results.json").write_text(json.dumps(results), encoding="utf-8")
    pd.DataFrame({"user_idx": np.arange(len(ranks)), "rank_sampled": np.asarray(ranks, dtype=float),
                  "rank_full": np.asarray(ranks, dtype=float)}).to_parquet(d / "ranks.parquet")
    return d


def _ndcg(rank):
    return 1 / math.log2(rank + 2) if rank < 10 else 0.0


def test_t_test_pairs_group_means_against_the_reference_group(tmp_path):
    ref_ranks = [[0, 1, 20], [0, 3, 20]]
    other_ranks = [1, 0, 5]
    refs = [_run(tmp_path, f"ref-seed{s}", "llm4cdsr", s, r) for s, r in zip((1, 2), ref_ranks)]
    other = _run(tmp_path, "pop-seed1", "pop", 1, other_ranks)
    labels = {refs[0]: "LLM4CDSR", refs[1]: "LLM4CDSR", other: "popularity"}
    table = compare_table([*refs, other], refs[0], "ndcg@10", "sampled", markdown=True, labels=labels)

    # By hand: the reference's per-user ndcg@10 is the mean of its two seeds.
    ref_user = [(_ndcg(a) + _ndcg(b)) / 2 for a, b in zip(*ref_ranks)]
    diffs = np.array([_ndcg(r) for r in other_ranks]) - np.array(ref_user)  # 0.6309-1, 1-0.5308, 0.3562-0
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(len(diffs)))
    p = 2 * stats.t.sf(abs(t), len(diffs) - 1)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"model", "LLM4CDSR", "popularity"}
    assert rows["LLM4CDSR"].split(" | ")[1] == "2" and "ref" in rows["LLM4CDSR"]
    cells = rows["popularity"].rstrip(" |").split(" | ")
    assert cells[-2] == f"{diffs.mean():+.4f}" == "+0.1521"
    assert cells[-1] == f"{p:.2g}"
    assert "against LLM4CDSR (per-user mean over its 2 runs)" in table
    # Without labels, rows are named by config (model name; seeds of one config share a row).
    plain = compare_table([*refs, other], refs[0], "ndcg@10", "sampled")
    assert any(line.startswith("llm4cdsr ") and " 2 " in line for line in plain.splitlines())


def test_a_key_added_after_a_run_reads_as_its_default(tmp_path):
    # Two seeds of one model, the older run saved before model.local_anchor existed: one group, and
    # a run with the key set apart is its own group, named by that key only.
    old = _run(tmp_path, "old-seed1", "llm4cdsr", 1, [0, 1, 2])
    new = _run(tmp_path, "new-seed2", "llm4cdsr", 2, [0, 1, 3])
    anchored = _run(tmp_path, "anchored-seed1", "llm4cdsr", 1, [1, 1, 3])
    for run, model in ((new, {"name": "llm4cdsr", "local_anchor": 0.0}), (anchored, {"name": "llm4cdsr", "local_anchor": 30.0})):
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 2, "model": model}), encoding="utf-8")
    rows = [line for line in compare_table([old, new, anchored], old, "ndcg@10", "sampled", markdown=True).splitlines()
            if line.startswith("| llm4cdsr")]
    assert [row.split(" | ")[:2] for row in rows] == [["| llm4cdsr local_anchor=0.0", "2"], ["| llm4cdsr local_anchor=30.0", "1"]]
