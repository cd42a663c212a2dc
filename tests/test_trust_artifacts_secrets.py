"""Secrets, weaker points: a key pasted as `api_key_env` is refused without being shown or written; a
key never goes over plain http to another machine unless asked; which variable goes to which host is
said; a reply that echoes the key is scrubbed before the cache and the profiles keep it."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
from openai_stub import OpenAIStub, default_reply, stub_overrides

from llm4cdsr.cli import main
from llm4cdsr.llm.http import LLMError, OpenAIClient
from llm4cdsr.workspace import Workspace

KEY = "sk-stub-SECRET-4242-echoed-back"


@pytest.fixture
def ws(tmp_path, synth_ds):
    synth_ds.save(Workspace(tmp_path / "ws").dataset_dir)
    return tmp_path / "ws"


def test_a_key_pasted_as_the_variable_name_is_refused_unseen(ws, capsys):
    pasted = "sk-proj-AbC123/xyz+9=="
    assert main(["train", "-w", str(ws), f"embed.api_key_env={pasted}", "--run-name", "r"]) == 2
    err = capsys.readouterr().err
    assert "embed.api_key_env must be the NAME of an environment variable" in err and pasted not in err
    assert not (ws / "runs").exists()  # no config.yaml, no command.txt holding it


def test_no_key_over_plain_http_to_another_machine_unless_asked(ws, capsys, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    args = ["embed", "-w", str(ws), "embed.backend=openai", "embed.base_url=http://192.0.2.7:8000/v1",
            "embed.api_key_env=MY_KEY"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "$MY_KEY would go over plain http to 192.0.2.7" in err[0] and KEY not in err[0], err
    with pytest.raises(LLMError, match="plain http to 192.0.2.7"):  # the client refuses too (API callers)
        OpenAIClient("http://192.0.2.7:8000/v1", "MY_KEY")
    monkeypatch.setenv("LLM4CDSR_ALLOW_HTTP_KEY", "1")
    OpenAIClient("http://192.0.2.7:8000/v1", "MY_KEY").close()  # asked for: allowed (nothing is sent here)
    monkeypatch.delenv("LLM4CDSR_ALLOW_HTTP_KEY")
    OpenAIClient("https://192.0.2.7/v1", "MY_KEY").close()
    OpenAIClient("http://localhost:8000/v1", "MY_KEY").close()
    OpenAIClient("http://[::1]:8000/v1", "MY_KEY").close()


def test_an_echoed_key_is_scrubbed_and_the_host_named(ws, monkeypatch, caplog):
    monkeypatch.setenv("LLM4CDSR_STUB_KEY", KEY)
    caplog.set_level(logging.INFO)
    with OpenAIStub(dim=16) as stub:
        stub.state.reply_fn = lambda prompt: default_reply(prompt) + f" Your key {KEY} works."
        args = ["-w", str(ws), *stub_overrides(stub), "profile.max_users=20", "model.beta=0"]
        assert main(["profile", *args]) == 0
        host = stub.url.split("//", 1)[1].split("/", 1)[0]
    assert f"profile: sending $LLM4CDSR_STUB_KEY as the API key to {host}" in caplog.text
    texts = pd.read_parquet(ws / "profiles" / "profiles.parquet")["text"]
    assert texts.str.contains("Your key").any()  # the replies were kept, the key was not
    for path in [p for p in ws.rglob("*") if p.is_file()]:
        assert KEY.encode() not in path.read_bytes(), path
