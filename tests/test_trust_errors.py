"""A one-line `error:` and exit 2 for every bad value, path or disk, checked before any folder is
made; the same `train` command continues an interrupted run (in a copied workspace too); a fatal
LLM error stops the stage's other requests at once."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.config import load_config
from llm4cdsr.llm.stages import run_embed
from llm4cdsr.training import trainer as trainer_module
from llm4cdsr.workspace import Workspace

TINY = ["model.name=sasrec_mixed", "model.hidden=16", "embed.local_dim=16", "model.max_len=20", "train.progress=false",
        "eval.num_negatives=20", "train.epochs=2", "train.num_threads=1"]


@pytest.fixture
def ws(tmp_path, synth_ds) -> Path:
    synth_ds.save(Workspace(tmp_path / "ws").dataset_dir)
    return tmp_path / "ws"


def _one_line_error(capsys, command: str = "train") -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(f"llm4cdsr {command}: error: "), err[-1000:]
    return last


BAD_VALUES = [
    ("model.name=foo", "model.name must be one of llm4cdsr"),
    ("model.name=sasrec", "model.name must be one of"),
    ("model.name=llm4cdsr model.hidden=64", "embed.local_dim (16) must equal model.hidden (64)"),
    ("model.max_len=0", "model.max_len must be an integer >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
    ("train.batch_size=-5", "train.batch_size must be an integer >= 1, got -5"),
    ("train.lr=0", "train.lr must be a number > 0"),
    ("train.lr=-0.001", "train.lr must be a number > 0"),
    ("model.heads=3", "model.heads must divide model.hidden (16), got 3"),
    ("model.dropout=1.0", "model.dropout must be in [0, 1), got 1.0"),
    ("model.dropout=-0.1", "model.dropout must be in [0, 1)"),
    ("train.valid_metric=precision@10", "train.valid_metric must be hit@K | ndcg@K | mrr@K"),
    ("eval.num_negatives=0", "eval.num_negatives must be an integer >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
    ("train.loss=hinge", "train.loss must be one of bce | ce | sampled_ce"),
    ("train.num_negatives=0", "train.num_negatives must be an integer >= 1"),
    ("model.block=postnorm", "model.block must be one of prenorm | authors"),
    ("eval.ks=[0,10]", "eval.ks must be a non-empty list of integers >= 1"),
    ("train.valid_mode=both", "train.valid_mode must be one of sampled | full"),
    ("run.name=../../x", "run.name must be a plain folder name"),
    ("run.name=.hidden", "run.name must be a plain folder name"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_key_and_no_run_folder_is_made(ws, capsys, override, message):
    assert main(["train", "-w", str(ws), *TINY, *override.split()]) == 2
    assert message in _one_line_error(capsys)
    assert not (ws / "runs").exists() and not (ws / "candidates").exists()


def test_every_bad_value_is_named_in_the_one_line(ws, capsys):
    assert main(["train", "-w", str(ws), *TINY, "train.lr=0", "model.max_len=0", "train.epochs=-1"]) == 2
    line = _one_line_error(capsys)
    assert "train.lr" in line and "model.max_len" in line and "train.epochs" in line


def test_run_name_with_a_path_separator_is_refused(ws, capsys, tmp_path):
    assert main(["train", "-w", str(ws), *TINY, "--run-name", "../../escaped"]) == 2
    assert "run.name must be a plain folder name" in _one_line_error(capsys)
    assert not (tmp_path / "escaped").exists() and not (ws / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_config_error(ws, capsys):
    assert main(["train", "-w", str(ws), *TINY, "device=cuda"]) == 2
    assert "device is 'cuda' but this machine has no CUDA device" in _one_line_error(capsys)
    assert not (ws / "runs").exists()


def test_run_checks_before_any_stage(tmp_path, capsys):
    assert main(["run", "-w", str(tmp_path / "ws"), *TINY, "model.dropout=2"]) == 2
    assert "model.dropout must be in [0, 1)" in _one_line_error(capsys, "run")
    assert not (tmp_path / "ws").exists()


def test_out_pointing_at_a_file(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    assert main(["prepare", "--out", str(target)]) == 2
    assert f"workspace {target} is a file, not a folder" in _one_line_error(capsys, "prepare")
    assert main(["prepare", "--out", str(target / "ws")]) == 2
    assert "is a file, so the folder cannot be made there" in _one_line_error(capsys, "prepare")
    assert target.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_workspace(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["prepare", "--out", str(ro / "ws")]) == 2
        assert "is not writable" in _one_line_error(capsys, "prepare")
    finally:
        ro.chmod(0o755)


def test_an_os_error_while_writing_is_one_line(tmp_path, capsys, monkeypatch):
    """What a read-only file system or a permission gives when a write fails midway."""
    import llm4cdsr.data.dataset as dataset_module

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "ws" / "dataset" / "items.parquet"))

    monkeypatch.setattr(dataset_module, "save_npy", refused)
    assert main(["prepare", "--out", str(tmp_path / "ws"), "data.synth.users=60", "--no-progress"]) == 2
    assert _one_line_error(capsys, "prepare").endswith("dataset/items.parquet: Permission denied")


def test_a_full_disk_says_so(ws, capsys, monkeypatch):
    """torch.save on a full disk says only `unexpected pos N vs M`; the command names the file and
    says the disk is full."""

    def full(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(trainer_module.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 4096, 4096))
    assert main(["train", "-w", str(ws), *TINY, "--run-name", "r"]) == 2
    line = _one_line_error(capsys)
    assert line.endswith("runs/r/checkpoint.pt: No space left on device (4,096 bytes free)"), line


WRITE_LIMITED = textwrap.dedent("""
    import resource, signal, sys, torch
    from llm4cdsr.training.trainer import atomic_torch_save, save_weights
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    module = torch.nn.Linear(200, 200)
    for name, save in (("checkpoint.pt", lambda p: atomic_torch_save(module.state_dict(), p)),
                       ("model.safetensors", lambda p: save_weights(module, p))):
        try:
            save(sys.argv[1] + "/" + name)
        except OSError as e:
            print(name, e.errno, e.filename, e.strerror)
""")


def test_a_failed_checkpoint_or_weights_write_is_an_os_error_naming_the_file(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WRITE_LIMITED, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["checkpoint.pt", str(errno.EFBIG)], ["model.safetensors", str(errno.EFBIG)]]
    assert all(str(tmp_path) in line for line in lines)
    assert not list(tmp_path.iterdir())  # no temporary file left


class Interrupted(KeyboardInterrupt):
    pass


def test_the_same_train_command_resumes_after_ctrl_c_also_in_a_copied_workspace(ws, tmp_path, capsys, monkeypatch):
    args = ["train", "-w", str(ws), *TINY, "--run-name", "r"]

    def ctrl_c_after_first_epoch(self, epoch):
        if epoch == 1:
            raise Interrupted()

    monkeypatch.setattr(trainer_module.Trainer, "after_epoch", ctrl_c_after_first_epoch)
    assert main(args) == 130
    assert "run the command again to resume" in capsys.readouterr().err
    monkeypatch.undo()

    copy = tmp_path / "copied-ws"
    shutil.copytree(ws, copy)
    for workspace in (copy, ws):  # a copy of the workspace, then the original: the very same command
        run_dir = workspace / "runs" / "r"
        assert main(["train", "-w", str(workspace), *TINY, "--run-name", "r"]) == 0
        results = json.loads((run_dir / "results.json").read_text())
        assert results["epochs_run"] == 2
        assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert "resumed after epoch 1" in (run_dir / "train.log").read_text()
    # a different config under that name is still refused
    assert main(["train", "-w", str(ws), *TINY, "train.lr=0.01", "--run-name", "r"]) == 2


def test_a_fatal_llm_error_stops_the_other_requests(tmp_path, synth_ds):
    """A 401 on one chat request while the others get 500s: the stage fails at once; the requests
    in flight do not go on retrying (each retry waited 2 s) while the error is already shown."""
    ws = tmp_path / "ws"
    synth_ds.save(Workspace(ws).dataset_dir)
    with OpenAIStub(dim=32) as stub:
        overrides = [*stub_overrides(stub), "profile.concurrency=4", "profile.backoff_s=2.0", "profile.backoff_max_s=2.0",
                     "profile.max_retries=3", "profile.n_clusters=3"]
        run_embed(load_config([], [f"workspace={ws}", *overrides]))
        stub.reset_counts()
        stub.inject("401", 1)
        stub.inject("500", 200)
        env = dict(os.environ, LLM4CDSR_STUB_KEY="k", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-m", "llm4cdsr", "profile", "-w", str(ws), *overrides],
                              capture_output=True, text=True, env=env, timeout=300)
        chat_requests = stub.counts["/v1/chat/completions"]
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr.strip().splitlines()[-1]
    # at most the first wave (4 in flight) and one more taken by the freed worker: no retries
    assert chat_requests <= 5, chat_requests


def test_a_profile_sample_with_guidance_is_refused_before_training(ws, capsys):
    """profile.max_users=20 with model.beta=1 passed validation and then crashed in training (IndexError):
    guidance needs every user's profile."""
    assert main(["train", "-w", str(ws), "model.name=llm4cdsr", "model.hidden=16", "embed.local_dim=16",
                 "model.beta=1", "profile.max_users=20", "--run-name", "r"]) == 2
    line = _one_line_error(capsys)
    assert "profile.max_users (20) profiles a sample of the users, but model.beta (1) > 0" in line, line
    assert not (ws / "runs" / "r").exists()
    assert main(["profile", "-w", str(ws), "profile.max_users=20", "--dry-run"]) == 0  # a sample to look at is fine
