"""benchmarks/food_kitchen_comparison.py (a thin use of llm4cdsr.benchmark) keeps what its table needs
outside the workspace: a table rebuilt from the archive alone equals the one made from the workspace,
archived runs are not trained again, and an archived run made with another config than its variant
gets now is stale."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

from llm4cdsr.config import load_config
from llm4cdsr.training.run import train_run

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "food_kitchen_comparison.py"
SMALL = ["model.hidden=16", "model.max_len=20", "train.batch_size=64", "eval.num_negatives=30", "eval.batch_size=128"]


def _script():
    spec = importlib.util.spec_from_file_location("food_kitchen_comparison", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_survives_the_workspace_and_stale_runs_are_left_out(synth_ds, tmp_path, capsys):
    script = _script()
    ws = tmp_path / "ws"
    args = SimpleNamespace(workspace=str(ws), archive=str(tmp_path / "archive"), config="food-kitchen", epochs=1,
                           set=SMALL, out=str(tmp_path / "table.md"), readme="", retrain_archived=False)
    labels = ["sasrec_mixed", "gru4rec"]
    for label in labels:  # what `llm4cdsr run` would make for (label, 42), on the small synthetic world
        config, overrides = script.benchmark(args).run_arguments(label, 42)
        train_run(load_config([config], [f"workspace={ws}", *overrides]), ws / "runs" / f"{label}-seed42", synth_ds)
    assert script.benchmark(args).runs_to_train(labels, [42, 43]) == [("sasrec_mixed", 42), ("gru4rec", 42), ("sasrec_mixed", 43), ("gru4rec", 43)]

    script.write_table(args, labels, [42])
    from_workspace = Path(args.out).read_text(encoding="utf-8")
    assert "| SASRec, mixed sequence, ID embeddings | 1 |" in from_workspace and "| GRU4Rec, mixed sequence | 1 |" in from_workspace
    for label in labels:
        copy = tmp_path / "archive" / f"{label}-seed42"
        assert {p.name for p in copy.iterdir()} == {"config.yaml", "results.json", "ranks.parquet", "train.log"}

    shutil.rmtree(ws / "runs")  # a new machine: the workspace is gone, the archive is committed
    Path(args.out).unlink()
    script.write_table(args, labels, [42])
    assert Path(args.out).read_text(encoding="utf-8") == from_workspace  # t-tests included: per-user ranks kept
    # Archived runs are not trained again unless asked; runs of other seeds are.
    assert script.benchmark(args).runs_to_train(labels, [42, 43]) == [("sasrec_mixed", 43), ("gru4rec", 43)]
    args.retrain_archived = True
    assert len(script.benchmark(args).runs_to_train(labels, [42, 43])) == 4

    # The preset (here: the overrides of every run) changed since: the archived runs are stale.
    args.retrain_archived, args.set = False, [*SMALL, "model.dropout=0.3"]
    assert script.benchmark(args).runs_to_train(labels, [42]) == [("sasrec_mixed", 42), ("gru4rec", 42)]
    Path(args.out).unlink()
    script.write_table(args, labels, [42])
    assert not Path(args.out).exists() and "made with another config" in capsys.readouterr().out

    # A stale run in the workspace is moved aside (kept), so that `run` can make it again under its name.
    for label in labels:
        config, overrides = script.benchmark(SimpleNamespace(**{**vars(args), "set": SMALL})).run_arguments(label, 42)
        train_run(load_config([config], [f"workspace={ws}", *overrides]), ws / "runs" / f"{label}-seed42", synth_ds)
    aside = script.benchmark(args).set_aside_stale("gru4rec", 42)
    assert aside == ws / "runs" / "gru4rec-seed42.stale-1" and (aside / "results.json").is_file()
    assert not (ws / "runs" / "gru4rec-seed42").exists()
    args.set = SMALL  # the config it was made with: current, left where it is
    assert script.benchmark(args).set_aside_stale("sasrec_mixed", 42) is None and (ws / "runs" / "sasrec_mixed-seed42").is_dir()
    # The same config, stopped before its first checkpoint: nothing to continue from, and said so.
    capsys.readouterr()
    for name in ("results.json", "checkpoint.pt"):
        (ws / "runs" / "sasrec_mixed-seed42" / name).unlink(missing_ok=True)
    assert script.benchmark(args).set_aside_stale("sasrec_mixed", 42) == ws / "runs" / "sasrec_mixed-seed42.stale-1"
    said = capsys.readouterr().out
    assert "stopped before its first epoch ended" in said and "another config" not in said


def test_a_pretrained_variant_gets_its_seeds_runs_and_needs_their_weights(synth_ds, tmp_path):
    script = _script()
    ws = tmp_path / "ws"
    args = SimpleNamespace(workspace=str(ws), archive=str(tmp_path / "archive"), config="food-kitchen", epochs=1,
                           set=SMALL, out=str(tmp_path / "table.md"), readme="", retrain_archived=False)
    _, overrides = script.benchmark(args).run_arguments("tri_cdr-pretrained", 43)
    assert "model.init_from=[runs/sasrec_mixed-seed43,runs/sasrec_single-seed43]" in overrides
    todo = [("tri_cdr-pretrained", 42), ("tri_cdr-pretrained", 43), ("tri_cdr", 42)]
    assert script.benchmark(args).missing_needs(todo) == [("sasrec_mixed", 42), ("sasrec_single", 42), ("sasrec_mixed", 43),
                                                ("sasrec_single", 43)]
    for label in ("sasrec_mixed", "sasrec_single"):
        config, overrides = script.benchmark(args).run_arguments(label, 42)
        train_run(load_config([config], [f"workspace={ws}", *overrides]), ws / "runs" / f"{label}-seed42", synth_ds)
    assert script.benchmark(args).missing_needs(todo) == [("sasrec_mixed", 43), ("sasrec_single", 43)]
    # An archived copy has no weights: the workspace run is what counts.
    script.write_table(args, ["sasrec_mixed", "sasrec_single"], [42])
    shutil.rmtree(ws / "runs" / "sasrec_single-seed42")
    assert ("sasrec_single", 42) in script.benchmark(args).missing_needs(todo)


# The variants of the committed table (docs/results.md: its --table-only command).
COMMITTED = ("llm4cdsr,ablation-beta,ablation-id_global,ablation-random_local,ablation-alpha0,llm4cdsr-cosine-a1,"
             "ablation-freeze_local_flipped,"
             "variant-authors_block,llm4cdsr-l2,sasrec_mixed,sasrec_mixed-l2,sasrec_single,gru4rec,tri_cdr,tri_cdr-pretrained,"
             "c2dsr-sampled_ce,c2dsr-sampled_ce-l2,pop,authors-setting,authors-setting-noncausal")


def test_the_committed_archive_rebuilds_the_committed_table(tmp_path, capsys):
    """The archive alone (an empty workspace) gives benchmarks/results/food-kitchen-comparison.md byte for byte."""
    script = _script()
    results = SCRIPT.parent / "results"
    args = SimpleNamespace(workspace=str(tmp_path / "ws"), archive=str(results / "food-kitchen-runs"), config="food-kitchen",
                           epochs=50, set=[], out=str(tmp_path / "table.md"), readme="", retrain_archived=False)
    script.write_table(args, COMMITTED.split(","), [42, 43, 44])
    assert Path(args.out).read_bytes() == (results / "food-kitchen-comparison.md").read_bytes()
    assert "made with another config" not in capsys.readouterr().out
