"""What a newcomer meets first: log lines that agree, duplicates embedded once, `compare` with no
run names, and the report's words about the item map."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.config import load_config
from llm4cdsr.data.dataset import SYNTHETIC_NOTE
from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.embedders import CachedEmbedder
from llm4cdsr.llm.stages import run_embed, run_profile
from llm4cdsr.report import chance_share, describe_mixing
from llm4cdsr.workspace import Workspace


class CountingEmbedder:
    backend, model, params, batch_size, concurrency = "fake", "fake", {}, 4, 1

    def __init__(self):
        self.seen: list[str] = []

    def embed_batch(self, texts):
        self.seen += texts
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_duplicate_texts_are_embedded_once(tmp_path):
    inner = CountingEmbedder()
    texts = ["tea", "pan", "tea", "kettle", "pan", "tea"]
    with Cache(tmp_path / "c.sqlite") as cache:
        vectors = CachedEmbedder(inner, cache, progress=False).embed(texts)
    assert sorted(inner.seen) == ["kettle", "pan", "tea"]
    np.testing.assert_array_equal(vectors[:, 0], [len(t) for t in texts])  # every row still answered


def test_profile_after_embed_does_not_say_embed_is_current(tmp_path, synth_ds, caplog):
    """`run` used to log `embed: wrote ...` and then, from the profile stage, `embed: ... is current`."""
    synth_ds.save(Workspace(tmp_path).dataset_dir)
    with OpenAIStub(dim=16) as stub:
        cfg = load_config([], [f"workspace={tmp_path}", *stub_overrides(stub, chat=False), "profile.backend=template"])
        caplog.set_level("INFO")
        run_embed(cfg)
        run_profile(cfg)
    embed_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embed:")]
    assert any("wrote" in m for m in embed_lines)
    assert not any("is current" in m for m in embed_lines)


def _finished_run(root, name, model, seed, ranks, synthetic=False):
    d = root / "runs" / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "model": {"name": model}}), encoding="utf-8")
    metrics = {"overall": {"hit@10": 0.5, "ndcg@10": 0.25}, "a": {"ndcg@10": 0.3}, "b": {"ndcg@10": 0.2}}
    results = {"dataset": {"domains": ["a", "b"], "synthetic": synthetic}, "test": {"sampled": metrics, "full": metrics}}
    (d / "results.json").write_text(json.dumps(results), encoding="utf-8")
    pd.DataFrame({"user_idx": np.arange(len(ranks)), "rank_sampled": np.asarray(ranks, dtype=float),
                  "rank_full": np.asarray(ranks, dtype=float)}).to_parquet(d / "ranks.parquet")
    return d


def test_compare_with_no_run_names_compares_every_finished_run(tmp_path, capsys):
    _finished_run(tmp_path, "gru4rec-seed1", "gru4rec", 1, [3, 2, 9])
    _finished_run(tmp_path, "llm4cdsr-seed1", "llm4cdsr", 1, [0, 1, 20])
    _finished_run(tmp_path, "pop-seed1", "pop", 1, [1, 0, 5])
    (tmp_path / "runs" / "unfinished").mkdir()  # no results.json: not a run to compare
    assert main(["compare", "-w", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "against llm4cdsr-seed1" in out  # the method is the default reference, not the first by name
    for model in ("gru4rec", "llm4cdsr", "pop"):
        assert any(line.startswith(model) for line in out.splitlines())
    assert "unfinished" not in out and "SYNTHETIC" not in out


def test_compare_of_synthetic_runs_says_so(tmp_path, capsys):
    _finished_run(tmp_path, "llm4cdsr-seed1", "llm4cdsr", 1, [0, 1, 20], synthetic=True)
    assert main(["compare", "-w", str(tmp_path), "--markdown"]) == 0
    assert capsys.readouterr().out.startswith(f"**{SYNTHETIC_NOTE}.**\n")


def test_compare_of_an_empty_workspace_is_a_clean_error(tmp_path, capsys):
    assert main(["compare", "-w", str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_serve_help_names_the_default_port(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "default 8000" in capsys.readouterr().out


def test_chance_share_is_what_random_neighbours_give():
    domain = np.array([0] * 30 + [1] * 70)
    rng = np.random.default_rng(0)
    draws = [domain[rng.choice(np.delete(np.arange(100), i), 10, replace=False)] != domain[i]
             for i in range(100) for _ in range(20)]
    assert chance_share(domain) == pytest.approx(np.mean(draws), abs=0.01)
    assert chance_share(domain) == pytest.approx(2 * 30 * 70 / (100 * 99))


def test_item_map_verdict_in_words():
    apart = describe_mixing(0.0, 0.001, 0.48)
    assert "0.0%" in apart and "0.1%" in apart and "48%" in apart and "stay apart" in apart
    assert "closer" in describe_mixing(0.013, 0.082, 0.45) and "6.3x" in describe_mixing(0.013, 0.082, 0.45)
    assert "separates" in describe_mixing(0.2, 0.05, 0.45)
    assert "changes little" in describe_mixing(0.2, 0.205, 0.45)
