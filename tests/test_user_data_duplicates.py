"""A user's own data, never silently wrong: exact duplicate rows and targets already in the
training history are reported at prepare time (and in stats.json), duplicates dropped by default."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from llm4cdsr.cli import main
from llm4cdsr.data.prepare import dataset_stats, prepare_tables


def _doubled(world):
    interactions, items = world
    return pd.concat([interactions, interactions], ignore_index=True), items


def test_exact_duplicate_rows_are_dropped_with_a_warning(synth_world, caplog):
    interactions, items = synth_world
    clean = prepare_tables(interactions, items)
    doubled, _ = _doubled(synth_world)
    with caplog.at_level(logging.WARNING):
        ds = prepare_tables(doubled, items)
    # The doubled file gives the very dataset of the clean one, and says what it removed.
    assert np.array_equal(ds.seq_items, clean.seq_items) and np.array_equal(ds.seq_offsets, clean.seq_offsets)
    assert ds.meta["prepare_report"]["duplicate_rows_dropped"] == len(interactions)
    assert any("exact duplicate row" in r.getMessage() for r in caplog.records)
    assert dataset_stats(ds)["duplicate_rows_dropped"] == len(interactions)


def test_kept_duplicates_put_every_test_target_in_the_history(synth_world):
    """Doubled rows make each test target the copy of the validation item the model reads at test
    time, while validation looks clean: why early stopping could not catch it."""
    doubled, items = _doubled(synth_world)
    ds = prepare_tables(doubled, items, {"duplicates": "keep"})
    seen = dataset_stats(ds)["targets_in_training_history"]
    assert seen["test"] == ds.n_users and seen["test_share"] == 1.0
    assert seen["valid"] == 0
    clean = dataset_stats(prepare_tables(*synth_world))["targets_in_training_history"]
    assert clean["test_share"] < 0.5


def test_targets_in_history_are_counted_exactly():
    items = pd.DataFrame({"item_id": ["a1", "a2", "b1", "b2"], "domain": ["x", "x", "y", "y"], "title": list("abcd")})
    rows = [("u1", "a1", 1), ("u1", "b1", 2), ("u1", "a2", 3), ("u1", "a1", 4),   # test target a1 seen before
            ("u2", "a1", 1), ("u2", "b2", 2), ("u2", "b1", 3), ("u2", "a2", 4),   # none
            ("u3", "b2", 1), ("u3", "a1", 2), ("u3", "b2", 3), ("u3", "a2", 4)]   # valid target b2 seen before
    inter = pd.DataFrame([(u, i, "x" if i[0] == "a" else "y", t) for u, i, t in rows],
                         columns=["user_id", "item_id", "domain", "timestamp"])
    seen = dataset_stats(prepare_tables(inter, items))["targets_in_training_history"]
    assert seen == {"test": 1, "test_share": round(1 / 3, 6), "valid": 1, "valid_share": round(1 / 3, 6)}


def test_prepare_prints_and_records_what_it_removed(synth_world, tmp_path, capsys):
    doubled, items = _doubled(synth_world)
    doubled.to_csv(tmp_path / "inter.csv", index=False)
    items.to_csv(tmp_path / "items.csv", index=False)
    ws = tmp_path / "ws"
    assert main(["prepare", "--interactions", str(tmp_path / "inter.csv"), "--items", str(tmp_path / "items.csv"),
                 "--out", str(ws), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{len(doubled) // 2:,} exact duplicate rows dropped" in out
    assert "targets seen" in out
    stats = json.loads((ws / "dataset" / "stats.json").read_text())
    assert stats["duplicate_rows_dropped"] == len(doubled) // 2
    assert stats["targets_in_training_history"]["test_share"] < 0.5
