"""Temporary files a kill -9 left (`.checkpoint.pt.*.tmp` the size of a checkpoint, `.results.json.*.tmp`)
are removed by the next writer of their folder; a live writer's are left alone."""
from __future__ import annotations

import os

from llm4cdsr.cli import main
from llm4cdsr.io import remove_stale_temp_files, temp_prefix, write_json
from llm4cdsr.workspace import Workspace

POP = ["model.name=pop", "eval.num_negatives=20", "train.progress=false", "train.num_threads=1"]
DEAD = 999_999_999  # above any pid_max


def test_the_next_writer_of_a_run_folder_removes_what_a_killed_one_left(tmp_path, synth_ds):
    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    run_dir = ws / "runs" / "r"
    run_dir.mkdir(parents=True)
    orphans = [run_dir / ".checkpoint.pt.k3j_x9q2.tmp",  # torch.save's, no pid: the folder's lock vouches
               run_dir / f".results.json.{DEAD}.abcd1234.tmp",
               ws / "runs" / f".r.lock.json.{DEAD}.q1w2e3r4.tmp"]  # beside the folder, a dead pid
    live = ws / "runs" / f".other.lock.json.{os.getpid()}.zzzz.tmp"  # another folder's live writer
    for path in orphans + [live]:
        path.write_bytes(b"x" * 1000)
    assert main(["train", "-w", str(ws), *POP, "--run-name", "r"]) == 0
    assert not [p for p in orphans if p.exists()]
    assert live.exists()
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_temporary_names_carry_the_pid_and_only_dead_ones_go_without_the_lock(tmp_path):
    assert temp_prefix(tmp_path / "a.json") == f".a.json.{os.getpid()}."
    write_json(tmp_path / "a.json", {"x": 1})  # leaves nothing behind
    mine = tmp_path / f".a.json.{os.getpid()}.abc.tmp"
    dead = tmp_path / f".a.json.{DEAD}.abc.tmp"
    unknown = tmp_path / ".a.json.abc.tmp"
    for path in (mine, dead, unknown):
        path.write_text("")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert remove_stale_temp_files(tmp_path, locked=True) == [unknown]
    assert mine.exists() and (tmp_path / "a.json").exists()
