"""benchmarks/food_kitchen_comparison.py keeps what its table needs outside the workspace: a table
rebuilt from the archive alone equals the one made from the workspace, and archived runs are not
trained again."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "food_kitchen_comparison.py"


def _script():
    spec = importlib.util.spec_from_file_location("food_kitchen_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_survives_the_workspace(one_epoch_run, tmp_path):
    script = _script()
    ws = tmp_path / "ws"
    for label in ("sasrec_mixed", "gru4rec"):
        _, run_dir = one_epoch_run(label)
        shutil.copytree(run_dir, ws / "runs" / f"{label}-seed42")
    args = SimpleNamespace(workspace=str(ws), archive=str(tmp_path / "archive"), config="food-kitchen",
                           out=str(tmp_path / "table.md"), readme="", retrain_archived=False)
    labels = ["sasrec_mixed", "gru4rec"]
    assert script.runs_to_train(labels, [42, 43], args) == [("sasrec_mixed", 42), ("gru4rec", 42), ("sasrec_mixed", 43), ("gru4rec", 43)]

    script.write_table(args, labels, [42])
    from_workspace = Path(args.out).read_text(encoding="utf-8")
    assert "SASRec, mixed sequence, ID embeddings" in from_workspace and "| GRU4Rec, mixed sequence | 1 |" in from_workspace
    for label in labels:
        copy = tmp_path / "archive" / f"{label}-seed42"
        assert {p.name for p in copy.iterdir()} == {"config.yaml", "results.json", "ranks.parquet", "train.log"}

    shutil.rmtree(ws / "runs")  # a new machine: the workspace is gone, the archive is committed
    Path(args.out).unlink()
    script.write_table(args, labels, [42])
    assert Path(args.out).read_text(encoding="utf-8") == from_workspace  # t-tests included: per-user ranks kept
    # Archived runs are not trained again unless asked; runs of other seeds are.
    assert script.runs_to_train(labels, [42, 43], args) == [("sasrec_mixed", 43), ("gru4rec", 43)]
    args.retrain_archived = True
    assert len(script.runs_to_train(labels, [42, 43], args)) == 4
