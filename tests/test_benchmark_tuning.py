"""`llm4cdsr benchmark --tune`: the coordinate search over the grid, a CI-sized tuning on the tiny
world whose chosen point is recorded and trained, and the proof that tuning never reads a test
target: test figures planted in the tuning runs change nothing, validation figures do."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llm4cdsr import benchmark as bm

# The tiny world and the command runner of the command tests (pytest puts tests/ on sys.path).
from test_benchmark_command import benchmark, tiny_config  # noqa: E402

GRID = {"train.lr": [0.001, 0.01]}


def test_the_search_takes_one_key_at_a_time_and_keeps_the_earlier_point_on_a_tie():
    scores = {(2, 10): 0.3, (1, 10): 0.5, (3, 10): 0.5, (1, 20): 0.4}
    asked = []

    def score(points):
        asked.append([(p["a"], p["b"]) for p in points])
        return [scores[(p["a"], p["b"])] for p in points]

    chosen, tried = bm.coordinate_search({"a": 2, "b": 10}, {"a": [1, 2, 3], "b": [10, 20]}, score)
    assert asked == [[(2, 10), (1, 10), (3, 10)], [(1, 20)]]  # the start first; a point is never trained twice
    assert chosen == {"a": 1, "b": 10}  # 1 and 3 tie on a: the earlier; then b=20 is worse
    assert len(tried) == 4
    assert bm.choose_point([({"x": 1}, 0.2), ({"x": 2}, 0.2)]) == {"x": 1}


def test_the_grid_is_the_documented_one_and_skips_what_a_model_does_not_learn():
    assert bm.TUNE_GRID == {"train.lr": [0.0005, 0.001, 0.002], "model.dropout": [0.2, 0.5],
                            "train.weight_decay": [0.0, 0.0005], "train.loss": ["sampled_ce", "bce"]}
    assert bm.tune_grid_for({"model": {"name": "pop"}}, bm.TUNE_GRID) == {}
    assert "train.loss" not in bm.tune_grid_for({"model": {"name": "c2dsr", "c2dsr_objective": "ce"}}, bm.TUNE_GRID)
    assert bm.parse_grid(["train.lr=0.001,0.01", "train.loss=bce,sampled_ce"]) == {"train.lr": [0.001, 0.01],
                                                                                  "train.loss": ["bce", "sampled_ce"]}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    config = tiny_config(root)
    rc, text = benchmark("-c", str(config), "--models", "sasrec_mixed,pop", "--seeds", "42", "--tune",
                         "--grid", "train.lr=0.001,0.01", "--out", str(root / "out"))
    return SimpleNamespace(root=root, config=config, ws=root / "ws", out=root / "out", rc=rc, text=text)


def test_tuning_records_the_point_trains_the_seeds_there_and_says_so(tuned):
    assert tuned.rc == 0, tuned.text
    record = json.loads((tuned.out / "tuning.json").read_text(encoding="utf-8"))
    assert record["grid"] == GRID and record["seed"] == 42 and list(record["variants"]) == ["sasrec_mixed"]  # pop: nothing to tune
    entry = record["variants"]["sasrec_mixed"]
    assert [t["point"] for t in entry["tried"]] == [{"train.lr": 0.001}, {"train.lr": 0.01}]
    assert all(t["valid"] is not None for t in entry["tried"]) and entry["metric"] == "ndcg@10 (sampled, validation)"
    assert (tuned.out / "runs" / "tuning.json").is_file()  # the archive rebuilds the tuned rows elsewhere
    seeded = yaml.safe_load((tuned.ws / "runs" / "sasrec_mixed-tuned-seed42" / "config.yaml").read_text(encoding="utf-8"))
    assert seeded["train"]["lr"] == entry["point"]["train.lr"]
    table = (tuned.out / "benchmark.md").read_text(encoding="utf-8")
    assert f"| tuned: lr {entry['point']['train.lr']} |" in table and "| popularity | 1 | as configured |" in table
    assert "Tuned on validation only (seed 42): grid train.lr in {0.001, 0.01}" in table
    # --table-only --tune on the archive alone: the same tuned rows.
    rc, _ = benchmark("-c", str(tuned.config), "-w", str(tuned.root / "empty"), "--models", "sasrec_mixed,pop", "--seeds", "42",
                      "--tune", "--grid", "train.lr=0.001,0.01", "--out", str(tuned.root / "again"), "--archive",
                      str(tuned.out / "runs"), "--table-only")
    assert rc == 0 and (tuned.root / "again" / "benchmark.md").read_text(encoding="utf-8") == table


class _NoTest(dict):
    """A results.json whose test block cannot be read."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("tuning read a test figure")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "test":
            raise AssertionError("tuning read a test figure")
        return super().get(key, default)


def _set_all(block, value: float) -> None:
    for v in block.values():
        if isinstance(v, dict):
            _set_all(v, value)
    for k in block:
        if "@" in k:
            block[k] = value


def test_tuning_never_reads_a_test_target(tuned, monkeypatch):
    record = json.loads((tuned.out / "tuning.json").read_text(encoding="utf-8"))
    entry = record["variants"]["sasrec_mixed"]
    loser = next(t for t in entry["tried"] if t["point"] != entry["point"])
    winner = next(t for t in entry["tried"] if t["point"] == entry["point"])
    read = bm.read_json
    monkeypatch.setattr(bm, "read_json", lambda path: _NoTest(read(path)))
    monkeypatch.setattr(bm.pd, "read_parquet", lambda *a, **k: pytest.fail("tuning read per-user test ranks"))
    monkeypatch.setattr(bm.subprocess, "call", lambda *a, **k: pytest.fail("every tuning run is finished"))

    def plant(run: str, block: str, value: float) -> None:
        path = tuned.ws / "runs" / run / "results.json"
        results = json.loads(path.read_text(encoding="utf-8"))
        _set_all(results[block], value)
        path.write_text(json.dumps(results), encoding="utf-8")

    def choice() -> dict:
        bench = bm.Benchmark(config=str(tuned.config), workspace=tuned.ws, archive=None, echo=lambda s: None)
        return bm.tune(bench, ["sasrec_mixed"], 42, GRID)["variants"]["sasrec_mixed"]["point"]

    # Perfect test figures for the loser, none for the winner: the choice stays.
    plant(loser["run"], "test", 1.0)
    plant(winner["run"], "test", 0.0)
    assert choice() == entry["point"]
    # The loser's validation made perfect: now it wins (the choice follows validation).
    plant(loser["run"], "valid", 1.0)
    assert choice() == loser["point"]


def test_a_recorded_tuning_is_reused_for_the_same_grid_seed_and_config(tuned, monkeypatch):
    record = json.loads((tuned.out / "tuning.json").read_text(encoding="utf-8"))
    monkeypatch.setattr(bm.subprocess, "call", lambda *a, **k: pytest.fail("a recorded tuning needs no run"))
    bench = bm.Benchmark(config=str(tuned.config), workspace=Path(tuned.root / "elsewhere"), echo=lambda s: None)
    again = bm.tune(bench, ["sasrec_mixed"], 42, GRID, previous=record)
    assert again["variants"]["sasrec_mixed"] == record["variants"]["sasrec_mixed"]
    assert bench.tuned["sasrec_mixed"]["point"] == record["variants"]["sasrec_mixed"]["point"]


def test_the_seeded_run_at_the_tuning_seed_is_the_tuning_run_copied_not_trained_again(tuned):
    record = json.loads((tuned.out / "tuning.json").read_text(encoding="utf-8"))
    winner = next(t for t in record["variants"]["sasrec_mixed"]["tried"] if t["point"] == record["variants"]["sasrec_mixed"]["point"])
    assert "is this very run (same config and seed); copied" in tuned.text
    # (Other tests plant figures in the tuning runs' results: the weights tell the copy.)
    seeded = (tuned.ws / "runs" / "sasrec_mixed-tuned-seed42" / "model.safetensors").read_bytes()
    assert seeded == (tuned.ws / "runs" / winner["run"] / "model.safetensors").read_bytes()


@pytest.mark.parametrize("where", ["workspace", "archive"])
def test_tuning_reads_the_plain_seeded_run_at_the_configs_own_point(tuned, tmp_path, monkeypatch, where):
    import shutil

    record = json.loads((tuned.out / "tuning.json").read_text(encoding="utf-8"))
    entry = record["variants"]["sasrec_mixed"]
    start = next(t for t in entry["tried"] if t["point"] == entry["start"])
    ws, archive = tmp_path / "ws", tmp_path / "archive"
    shutil.copytree(tuned.ws, ws)
    archive.mkdir()
    # The config's own point exists only as the variant's plain seeded run (in the workspace, or only
    # as the archive's copy of it on another machine).
    (ws / "runs" / start["run"]).rename((ws / "runs" if where == "workspace" else archive) / "sasrec_mixed-seed42")
    monkeypatch.setattr(bm.subprocess, "call", lambda *a, **k: pytest.fail("the config's point was trained again"))
    bench = bm.Benchmark(config=str(tuned.config), workspace=ws, archive=archive, echo=lambda s: None)
    again = bm.tune(bench, ["sasrec_mixed"], 42, GRID)["variants"]["sasrec_mixed"]
    runs = {json.dumps(t["point"]): t["run"] for t in again["tried"]}
    assert runs == {json.dumps(t["point"]): ("sasrec_mixed-seed42" if t["point"] == entry["start"] else t["run"])
                    for t in entry["tried"]}
    assert all(t["valid"] is not None for t in again["tried"])
