"""One writer per run or stage folder: a second writer fails at once naming the holder (pid and
command), leaves the folder as the holder made it, and a lock left by a killed process is taken over."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llm4cdsr.config import load_config
from llm4cdsr.data.prepare import run_prepare
from llm4cdsr.locks import LockError, folder_lock, holder, lock_paths
from llm4cdsr.workspace import Workspace

TRAIN = ["model.name=sasrec_mixed", "model.hidden=16", "embed.local_dim=16", "model.max_len=20", "train.progress=false",
         "eval.num_negatives=20", "train.epochs=2", "train.num_threads=1"]

# A real `llm4cdsr train` that stops after its first epoch (checkpoint written, lock held) and
# says so, then waits for a line on stdin before it goes on.
HOLDER = textwrap.dedent("""
    import sys
    from llm4cdsr.cli import main
    from llm4cdsr.training import trainer

    def after_epoch(self, epoch):
        if epoch == 1:
            print("HOLDING", flush=True)
            sys.stdin.readline()

    trainer.Trainer.after_epoch = after_epoch
    sys.argv = ["llm4cdsr", *sys.argv[1:]]
    sys.exit(main(sys.argv[1:]))
""")


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    for line in proc.stdout:
        if line.strip() == expected:
            return
    raise AssertionError(f"the holder ended without saying {expected!r}: {proc.stderr.read()[-2000:]}")


@pytest.fixture
def workspace(tmp_path, synth_ds) -> Path:
    synth_ds.save(Workspace(tmp_path).dataset_dir)
    return tmp_path


def test_second_train_on_a_run_folder_fails_at_once_and_a_killed_holder_is_taken_over(workspace):
    run_dir = workspace / "runs" / "r"
    args = ["train", "-w", str(workspace), "--run-name", "r", *TRAIN]
    first = subprocess.Popen([sys.executable, "-c", HOLDER, *args, "train.lr=0.001"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for_line(first, "HOLDING")
        config_before = (run_dir / "config.yaml").read_bytes()
        command_before = (run_dir / "command.txt").read_text()
        # A second writer with another config, 3 s later in the report: refused at once.
        second = subprocess.run([sys.executable, "-m", "llm4cdsr", *args, "train.lr=0.005", "train.epochs=1"],
                                capture_output=True, text=True, env=_env(), timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        message = second.stderr.strip().splitlines()[-1]
        assert message.startswith("llm4cdsr train: error: ") and "Traceback" not in second.stderr
        assert f"pid {first.pid}" in message and "llm4cdsr train -w" in message and "train.lr=0.001" in message
        # The holder's folder is untouched: its config, its command line, its metrics only.
        assert (run_dir / "config.yaml").read_bytes() == config_before
        assert (run_dir / "command.txt").read_text() == command_before
        assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]
        assert holder(run_dir)["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: a stale lock with a dead pid
        first.wait(timeout=60)
    assert holder(run_dir)["pid"] == first.pid  # the note of the dead holder is still there

    third = subprocess.run([sys.executable, "-m", "llm4cdsr", *args, "train.lr=0.001", "--resume"],
                           capture_output=True, text=True, env=_env(), timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 2
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr"] == 0.001
    assert holder(run_dir) is None  # released, note removed


LOCK_HOLDER = textwrap.dedent("""
    import sys
    from llm4cdsr.locks import folder_lock
    with folder_lock(sys.argv[1]):
        print("HOLDING", flush=True)
        sys.stdin.readline()
""")


def test_a_stage_folder_held_by_another_process_refuses_prepare(tmp_path):
    cfg = load_config([], [f"workspace={tmp_path}", "data.synth.users=60", "data.synth.items_a=20", "data.synth.items_b=30"])
    folder = Workspace(tmp_path).dataset_dir
    other = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for_line(other, "HOLDING")
        with pytest.raises(LockError, match=rf"{folder} is being written by another process \(pid {other.pid}: "):
            run_prepare(cfg)
        assert not folder.exists()
    finally:
        other.communicate("\n", timeout=60)
    assert other.returncode == 0
    assert run_prepare(cfg).n_users > 0  # released: the next writer goes ahead


def test_lock_is_reentrant_in_one_process_and_a_dead_holders_note_is_replaced(tmp_path):
    folder = tmp_path / "runs" / "x"
    lock_file, note = lock_paths(folder)
    note.parent.mkdir(parents=True)
    note.write_text(json.dumps({"pid": 2**22 + 12345, "command": "llm4cdsr train (killed)"}))  # no such process
    with folder_lock(folder):
        assert holder(folder)["pid"] == os.getpid()
        with folder_lock(folder):  # `run` holds it and calls training, which takes it again
            pass
        assert holder(folder)["pid"] == os.getpid()
    assert holder(folder) is None and lock_file.exists()
