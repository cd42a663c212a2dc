"""The API key is used (sent to the server) and never written: not to logs, output, configs,
the cache or any artifact, not even when the server echoes it back in an error."""
import logging

import pytest
from openai_stub import OpenAIStub, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.llm.embedders import OpenAIEmbedder
from llm4cdsr.llm.http import LLMError, RetryPolicy
from llm4cdsr.workspace import Workspace

KEY = "sk-stub-SECRET-4242-never-write-me"


def test_api_key_never_written(tmp_path, synth_ds, monkeypatch, capsys, caplog):
    monkeypatch.setenv("LLM4CDSR_STUB_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    synth_ds.save(Workspace(tmp_path).dataset_dir)
    with OpenAIStub(dim=16) as stub:
        args = ["-w", str(tmp_path), *stub_overrides(stub), "profile.max_users=20"]
        stub.inject("429", 1, retry_after="0")
        stub.inject("500", 1)  # retries log at debug level: those lines must be clean too
        assert main(["-v", "embed", *args]) == 0
        assert main(["-v", "profile", "--dry-run", *args]) == 0
        assert main(["-v", "profile", *args]) == 0
        assert f"Bearer {KEY}" in stub.state.auth_headers
        stub.inject("401", 1)
        emb = OpenAIEmbedder("m", stub.url, "LLM4CDSR_STUB_KEY", policy=RetryPolicy(1.0, 0, 0.01, 0.01))
        with pytest.raises(LLMError) as err:
            emb.embed_batch(["x"])
    assert "HTTP 401" in str(err.value) and "LLM4CDSR_STUB_KEY" in str(err.value)
    captured = capsys.readouterr()
    texts = {"stdout": captured.out, "stderr": captured.err, "log": caplog.text, "error": str(err.value)}
    assert "profiles: 20 users" in captured.out
    for where, text in texts.items():
        assert KEY not in text, where
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files) and any(p.name == "meta.json" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
