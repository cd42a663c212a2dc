"""The CLI does what it was asked, or says in one line why not: compare's metric, recommend's
options and inputs, serve's options, overrides after options."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from llm4cdsr.cli import main


def _finished_run(root, name):
    d = root / "runs" / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": 1, "model": {"name": "pop"}}), encoding="utf-8")
    metrics = {"overall": {"hit@10": 0.5, "ndcg@10": 0.25}, "a": {"ndcg@10": 0.3}, "b": {"ndcg@10": 0.2}}
    (d / "results.json").write_text(json.dumps({"dataset": {"domains": ["a", "b"]},
                                                "test": {"sampled": metrics, "full": metrics}}), encoding="utf-8")
    pd.DataFrame({"user_idx": np.arange(3), "rank_sampled": [0.0, 2.0, 30.0],
                  "rank_full": [0.0, 2.0, 30.0]}).to_parquet(d / "ranks.parquet")
    return d


def test_compare_refuses_a_metric_the_runs_never_computed(tmp_path, capsys):
    _finished_run(tmp_path, "a")
    _finished_run(tmp_path, "b")
    assert main(["compare", "-w", str(tmp_path), "--metric", "ndcg@7"]) == 2
    err = capsys.readouterr().err
    assert "'ndcg@7' is not among the metrics" in err and "hit@10, ndcg@10" in err
    assert main(["compare", "-w", str(tmp_path), "--metric", "ndcg@10"]) == 0
