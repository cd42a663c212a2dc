"""kill -9 in the middle of `embed` or `profile`, run again: it finishes, asks the server only for
what was not yet in the cache, and the artifacts equal those of an uninterrupted run."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from openai_stub import OpenAIStub, stub_overrides
from safetensors.numpy import load_file

from llm4cdsr.config import load_config
from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.stages import item_texts, run_embed, run_profile
from llm4cdsr.workspace import Workspace

CHAT = "/v1/chat/completions"
USERS = 30


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=32) as s:
        yield s


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synth_ds, stub):
    """An uninterrupted embed + profile run, and the number of distinct calls it needed."""
    root = tmp_path_factory.mktemp("ref")
    synth_ds.save(Workspace(root).dataset_dir)
    cfg = load_config([], [f"workspace={root}", *stub_overrides(stub), f"profile.max_users={USERS}"])
    stub.reset_counts()
    run_embed(cfg)
    embed_texts = len(stub.state.embedded_texts)
    stub.reset_counts()
    run_profile(cfg)
    return root, embed_texts, stub.counts[CHAT]


# The stage run as a plain script (not the CLI, which imports every subcommand's libraries).
_SCRIPT = """
import sys
from llm4cdsr.config import load_config
from llm4cdsr.llm import stages
cfg = load_config([], sys.argv[2:])
getattr(stages, sys.argv[1])(cfg)
"""


def _start(ws, stub, stage):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    overrides = [f"workspace={ws}", *stub_overrides(stub), f"profile.max_users={USERS}", "embed.concurrency=1",
                 "profile.concurrency=2"]
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, stage, *overrides], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill_when(proc, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"stage ended before the kill: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("stage made too few requests before the timeout")
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait(timeout=30)
    time.sleep(0.3)  # let the stub finish (and log) the requests the dead process had in flight


def _fresh(tmp_path, reference):
    shutil.copytree(reference[0] / "dataset", tmp_path / "dataset")
    return tmp_path


def test_kill_during_embed_then_resume(tmp_path, stub, reference, synth_ds):
    ws = _fresh(tmp_path, reference)
    stub.reset_counts()
    stub.state.latency_s = 0.05
    proc = _start(ws, stub, "run_embed")
    try:
        _kill_when(proc, lambda: stub.counts["/v1/embeddings"] >= 5)
    finally:
        stub.state.latency_s = 0.0
    assert not (ws / "embeddings" / "meta.json").exists()
    with Cache(ws / "cache.sqlite") as cache:
        cached = cache.counts()["embeddings"]
    assert 0 < cached < reference[1]
    stub.reset_counts()
    cfg = load_config([], [f"workspace={ws}", *stub_overrides(stub), f"profile.max_users={USERS}"])
    run_embed(cfg)
    assert len(stub.state.embedded_texts) == reference[1] - cached  # nothing finished before the kill was redone
    assert len(set(item_texts(synth_ds.items, cfg))) == reference[1]
    ref = reference[0] / "embeddings"
    np.testing.assert_array_equal(np.load(ws / "embeddings" / "items.npy"), np.load(ref / "items.npy"))
    a, b = load_file(str(ws / "embeddings" / "pca.safetensors")), load_file(str(ref / "pca.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_kill_during_profile_then_resume(tmp_path, stub, reference):
    ws = _fresh(tmp_path, reference)
    cfg = load_config([], [f"workspace={ws}", *stub_overrides(stub), f"profile.max_users={USERS}"])
    run_embed(cfg)
    stub.reset_counts()
    stub.state.latency_s = 0.02
    proc = _start(ws, stub, "run_profile")
    try:
        _kill_when(proc, lambda: stub.counts[CHAT] >= 30)
    finally:
        stub.state.latency_s = 0.0
    assert not (ws / "profiles").exists()
    with Cache(ws / "cache.sqlite") as cache:
        cached = cache.counts()["chats"]
    assert 0 < cached < reference[2]
    stub.reset_counts()
    run_profile(cfg)
    assert stub.counts[CHAT] == reference[2] - cached
    ref = reference[0] / "profiles"
    pd.testing.assert_frame_equal(pd.read_parquet(ws / "profiles" / "profiles.parquet"),
                                  pd.read_parquet(ref / "profiles.parquet"))
    np.testing.assert_array_equal(np.load(ws / "profiles" / "embeddings.npy"), np.load(ref / "embeddings.npy"))
