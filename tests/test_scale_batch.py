"""Batch files: `embed` / `profile` --write-batch, results shaped like OpenAI's batch output made by the
local stub, --read-batch; then the live stages find every call cached and build what a live run builds."""
import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from openai_stub import OpenAIStub, default_reply, stub_overrides

from llm4cdsr.cli import main as cli_main
from llm4cdsr.config import load_config
from llm4cdsr.llm import http as llm_http
from llm4cdsr.llm.batch import BatchError, chat_body, chat_identity_openai
from llm4cdsr.llm.chat import CachedChat, ChatRequest, make_chat_backend
from llm4cdsr.llm.stages import read_batch, run_embed, run_profile, write_embed_batch, write_profile_batch
from llm4cdsr.workspace import Workspace

KEY_ENV = "LLM4CDSR_BATCH_TEST_KEY"
SECRET = "sk-batch-test-secret-0123456789"


def reply(prompt: str) -> str:
    """Every fifth first-try analysis is unusable (empty), its retry is fine: a retry round too."""
    if "no apology or refusal" not in prompt and "group of items" not in prompt \
            and hashlib.sha256(prompt.encode()).digest()[0] % 5 == 0:
        return ""
    return default_reply(prompt)


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=32) as s:
        s.state.reply_fn = reply
        yield s


@pytest.fixture
def workspace(tmp_path, synth_ds, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)

    def make(name: str) -> Path:
        root = tmp_path / name
        synth_ds.save(Workspace(root).dataset_dir)
        return root
    return make


def cfg_for(ws: Path, stub: OpenAIStub, *extra: str) -> dict:
    return load_config([], [f"workspace={ws}", *stub_overrides(stub, KEY_ENV), "profile.max_users=60", *extra])


def answer_with_stub(folder: Path, stub: OpenAIStub, keep=lambda i: True, fail=lambda i: False) -> int:
    """What a batch endpoint does: every request of every requests-*.jsonl sent to the stub, the
    answers written as results-*.jsonl lines in OpenAI's batch output shape. `keep(i)` drops lines
    (a partial download), `fail(i)` makes the i-th an error result. Returns the lines written."""
    root = stub.url.rsplit("/v1", 1)[0]
    written = 0
    client = httpx.Client(timeout=10)  # one connection: a new one per request costs the loaded machine seconds
    for req_file in sorted(folder.rglob("requests-*.jsonl")):
        out = []
        for i, line in enumerate(req_file.read_text().splitlines()):
            req = json.loads(line)
            if not keep(i):
                continue
            if fail(i):
                out.append({"id": f"batch_req_{i}", "custom_id": req["custom_id"], "response": None,
                            "error": {"code": "server_error", "message": "failed"}})
                continue
            body = client.post(root + req["url"], json=req["body"]).json()
            out.append({"id": f"batch_req_{i}", "custom_id": req["custom_id"],
                        "response": {"status_code": 200, "request_id": f"req_{i}", "body": body}, "error": None})
        (req_file.parent / req_file.name.replace("requests-", "results-")).write_text(
            "".join(json.dumps(r) + "\n" for r in out))
        written += len(out)
    client.close()
    return written


def test_batch_body_is_what_the_live_client_posts(stub, monkeypatch, workspace):
    cfg = cfg_for(workspace("a"), stub)
    sent = []

    def post(self, path, payload, check):
        sent.append(payload)
        return check({"choices": [{"message": {"content": "fine"}}]})

    monkeypatch.setattr(llm_http.OpenAIClient, "post", post)
    request = ChatRequest((("system", "s"), ("user", "u")), 77)
    backend = make_chat_backend(cfg)
    backend.complete_one(request)
    ns, fixed = chat_identity_openai(cfg["profile"])
    assert chat_body(fixed, request) == sent[0]
    assert ns == CachedChat(backend, None).ns  # the live cache namespace: the same keys


def test_embed_and_profile_through_batch_files_equal_a_live_run(stub, workspace, tmp_path):
    live, batch, files = workspace("live"), workspace("batch"), tmp_path / "batch-files"
    run_profile(cfg_for(live, stub))  # the live run (embed first)

    cfg = cfg_for(batch, stub)
    stub.reset_counts()
    out = write_embed_batch(cfg, files, shard_requests=7)
    assert out["round"] == "item-embeddings" and out["requests"] == len(pd.read_parquet(batch / "dataset" / "items.parquet"))
    shards = sorted((files / "item-embeddings").glob("requests-*.jsonl"))
    assert len(shards) == -(-out["requests"] // 7) and all(len(s.read_text().splitlines()) <= 7 for s in shards)
    first = json.loads(shards[0].read_text().splitlines()[0])
    assert set(first) == {"custom_id", "method", "url", "body"} and first["url"] == "/v1/embeddings"
    assert first["method"] == "POST" and len(first["body"]["input"]) == 1
    answer_with_stub(files / "item-embeddings", stub)
    assert read_batch(cfg, files)["embeddings_imported"] == out["requests"]
    assert write_embed_batch(cfg, files)["round"] is None
    stub.reset_counts()
    run_embed(cfg)
    assert stub.counts["total"] == 0  # every vector came from the imported results

    rounds = []
    while True:
        out = write_profile_batch(cfg, files)
        if out["round"] is None:
            break
        rounds.append(out["round"])
        answer_with_stub(Path(out["folder"]), stub)
        read_batch(cfg, files)
    assert rounds == ["analyzer", "analyzer-retry", "summarizer", "profile-embeddings"]
    stub.reset_counts()
    run_profile(cfg)
    assert stub.counts["total"] == 0
    for name in ("profiles.parquet",):
        pd.testing.assert_frame_equal(pd.read_parquet(live / "profiles" / name), pd.read_parquet(batch / "profiles" / name))
    np.testing.assert_array_equal(np.load(live / "profiles" / "embeddings.npy"), np.load(batch / "profiles" / "embeddings.npy"))
    np.testing.assert_array_equal(np.load(live / "embeddings" / "items.npy"), np.load(batch / "embeddings" / "items.npy"))
    for f in files.rglob("*"):
        assert not f.is_file() or SECRET not in f.read_text()  # no key in any batch file


def test_partial_and_failed_results_resume(stub, workspace, tmp_path):
    cfg = cfg_for(workspace("p"), stub)
    files = tmp_path / "files"
    total = write_embed_batch(cfg, files)["requests"]
    answer_with_stub(files, stub, keep=lambda i: i % 2 == 0, fail=lambda i: i % 4 == 0)
    with open(files / "item-embeddings" / "results-00000.jsonl", "a") as f:
        f.write('{"custom_id": "ab", "response": {"status_code": 200, "body": {"data": [')  # cut short
    report = read_batch(cfg, files)
    kept = (total + 1) // 2
    failed = (total + 3) // 4
    assert report["embeddings_imported"] == kept - failed
    assert report["failed_requests"] == failed and report["malformed_lines"] == 1
    assert read_batch(cfg, files)["already_cached"] == kept - failed  # importing again changes nothing
    again = write_embed_batch(cfg, files)
    assert again["requests"] == total - (kept - failed)  # only what is still missing
    (files / "item-embeddings" / "results-00000.jsonl").unlink()
    answer_with_stub(files, stub)
    read_batch(cfg, files)
    assert write_embed_batch(cfg, files)["round"] is None


def test_shard_size_limit_and_wrong_backend(stub, workspace, tmp_path):
    cfg = cfg_for(workspace("s"), stub)
    out = write_embed_batch(cfg, tmp_path / "f", shard_mb=1e-4)  # ~100 bytes: one request per file
    assert len(out["shards"]) == out["requests"]
    with pytest.raises(BatchError, match="embed.backend=openai"):
        write_embed_batch(load_config([], [f"workspace={cfg['workspace']}"]), tmp_path / "g")
    run_embed(cfg)
    with pytest.raises(BatchError, match="profile.backend=openai"):
        write_profile_batch(cfg_for(cfg["workspace"], stub, "profile.backend=template"), tmp_path / "g")


def test_cli_write_and_read(stub, workspace, tmp_path, capsys):
    ws = workspace("cli")
    files = tmp_path / "cli-files"
    args = ["-w", str(ws), *stub_overrides(stub, KEY_ENV)]
    assert cli_main(["embed", *args, "--write-batch", str(files), "--shard-requests", "100"]) == 0
    assert "requests of round 'item-embeddings'" in capsys.readouterr().out
    answer_with_stub(files, stub)
    assert cli_main(["embed", *args, "--read-batch", str(files)]) == 0
    assert '"embeddings_imported": 300' in capsys.readouterr().out
    assert cli_main(["embed", *args, "--write-batch", str(files)]) == 0
    assert "every item embedding is cached" in capsys.readouterr().out
