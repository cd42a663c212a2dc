"""`llm4cdsr benchmark` end to end on a tiny synthetic world (2 models, 2 seeds, 1 epoch, real
`llm4cdsr run` processes): the tables, progress and summary; a failing variant reported while the
others finish; a second call trains nothing; the tables rebuilt from the archive alone equal the
workspace's."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from llm4cdsr import benchmark as bm
from llm4cdsr.cli import main

TINY = {"data": {"synth": {"users": 150, "items_a": 60, "items_b": 90}},
        "model": {"hidden": 16, "max_len": 20, "blocks": 1, "beta": 0.0},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
        "eval": {"num_negatives": 20}, "run": {"baselines": []}}


def tiny_config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "workspace": str(folder / "ws")}), encoding="utf-8")
    return path


def benchmark(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["benchmark", *argv])
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One benchmark of sasrec_mixed and gru4rec over seeds 42, 43, two jobs of one thread, with a
    third variant (from a variants file) that cannot run."""
    root = tmp_path_factory.mktemp("bench")
    config = tiny_config(root)
    variants = root / "variants.yaml"
    variants.write_text(yaml.safe_dump({"broken": {"name": "a variant that cannot run",
                                                   "overrides": ["model.init_from=[runs/nowhere]"]}}), encoding="utf-8")
    rc, text = benchmark("-c", str(config), "--models", "sasrec_mixed,gru4rec,broken", "--variants", str(variants),
                         "--seeds", "42,43", "--jobs", "2", "--threads", "1", "--out", str(root / "out"))
    return SimpleNamespace(root=root, config=config, ws=root / "ws", out=root / "out", rc=rc, text=text)


def test_the_benchmark_trains_every_run_and_writes_the_tables(done):
    out = done.out
    assert {p.name for p in out.iterdir()} == {"benchmark.md", "summary.csv", "runs.csv", "index.html", "runs"}
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["gru4rec-seed42", "gru4rec-seed43", "sasrec_mixed-seed42",
                                                                "sasrec_mixed-seed43"]
    table = (out / "benchmark.md").read_text(encoding="utf-8")
    for mode in ("sampled candidates", "full ranking"):
        assert f"*Test, {mode}" in table
    assert "| model | runs | hit@10 | ndcg@10 | books ndcg@10 | movies ndcg@10 | one-domain users ndcg@10 | " \
           "both-domain users ndcg@10 | diff ndcg@10 | p (paired t) |" in table
    assert table.count("| SASRec, mixed sequence, ID embeddings | 2 | ") == 2 and table.count("| GRU4Rec, mixed sequence | 2 | ") == 2
    assert "| ref | - |" in table and " ± " in table and "SYNTHETIC" in table
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["block"]) == {"overall", "books", "movies", "one", "both"} and set(summary["mode"]) == {"sampled", "full"}
    assert (summary["runs"] == 2).all() and summary["p"].notna().sum() == 2  # gru4rec against sasrec_mixed, both protocols
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["seed"]) == {42, 43} and set(runs["variant"]) == {"sasrec_mixed", "gru4rec"}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2 and "GRU4Rec, mixed sequence" in html
    # Progress over the whole benchmark, then the summary.
    assert "[6/6]" in done.text and "ETA" in done.text
    assert "benchmark: 6 runs: 4 trained, 0 already finished, 2 failed" in done.text


def test_a_failing_variant_is_reported_and_the_others_finish(done):
    assert done.rc == 1
    assert "failed: broken seed 42" in done.text and "failed: broken seed 43" in done.text
    assert "model.init_from" in done.text  # the run's own error line, with its log
    assert (done.ws / "logs" / "broken-seed42.log").is_file()
    assert "a variant that cannot run" not in (done.out / "benchmark.md").read_text(encoding="utf-8")


def test_a_second_call_trains_nothing(done, monkeypatch):
    before = (done.out / "benchmark.md").read_text(encoding="utf-8")

    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(bm.subprocess, "call", no_process)
    rc, text = benchmark("-c", str(done.config), "--models", "sasrec_mixed,gru4rec", "--seeds", "42,43", "--jobs", "2",
                         "--out", str(done.out))
    assert rc == 0 and "benchmark: 4 runs: 0 trained, 4 already finished, 0 failed" in text
    assert (done.out / "benchmark.md").read_text(encoding="utf-8") == before


def test_the_tables_rebuilt_from_the_archive_alone_equal_the_workspaces(done, tmp_path):
    moved = tmp_path / "out"
    shutil.copytree(done.out, moved)  # another machine: the out folder (archive inside), no workspace
    for name in ("benchmark.md", "summary.csv", "runs.csv", "index.html"):
        (moved / name).unlink()
    rc, text = benchmark("-c", str(done.config), "-w", str(tmp_path / "empty"), "--models", "sasrec_mixed,gru4rec",
                         "--seeds", "42,43", "--out", str(moved), "--table-only")
    assert rc == 0 and not (tmp_path / "empty").exists()
    for name in ("benchmark.md", "summary.csv", "runs.csv"):  # t-tests included: the per-user ranks are archived
        assert (moved / name).read_bytes() == (done.out / name).read_bytes(), name


def test_unknown_variants_and_bad_grids_are_one_line_errors(done, capsys):
    assert main(["benchmark", "-c", str(done.config), "--models", "sasrec_mixed,nope", "--table-only",
                 "--out", str(done.out)]) == 2
    assert "unknown variants: nope" in capsys.readouterr().err
    assert main(["benchmark", "-c", str(done.config), "--tune", "--grid", "train.nokey=1,2", "--out", str(done.out)]) == 2
    assert "--grid" in capsys.readouterr().err


def test_variants_file_forms(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("plain: [model.dropout=0.3]\nnamed: {name: Named one, overrides: [model.name=gru4rec]}\n", encoding="utf-8")
    variants, names = bm.load_variants(path)
    assert variants == {"plain": ["model.dropout=0.3"], "named": ["model.name=gru4rec"]}
    assert names == {"plain": "plain", "named": "Named one"}
    path.write_text("bad: {overrides: [1]}\n", encoding="utf-8")
    with pytest.raises(bm.BenchmarkError):
        bm.load_variants(path)
    assert bm.expand_models("pop,ablations", {**bm.MODELS, **bm.ABLATIONS})[:2] == ["pop", "ablation-id_global"]
