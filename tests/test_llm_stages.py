"""embed and profile stages end to end against the local stub server (fake, fast embedder)."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from openai_stub import OpenAIStub, default_reply, stub_overrides
from safetensors.numpy import load_file

from llm4cdsr.config import load_config
from llm4cdsr.llm.chat import OpenAIChat, chat_identity
from llm4cdsr.llm.http import LLMError
from llm4cdsr.llm.pca import project
from llm4cdsr.llm.profiling import check_reply
from llm4cdsr.llm.stages import (
    dry_run_profile,
    embed_is_current,
    item_texts,
    make_embedder,
    profile_is_current,
    run_embed,
    run_profile,
)
from llm4cdsr.workspace import Workspace, load_item_vectors, load_profile_embeddings


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=32) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(stub):
    stub.state.faults.clear()
    stub.reset_counts()
    stub.state.latency_s = 0.0
    stub.state.reply_fn = default_reply


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, synth_ds):
    root = tmp_path_factory.mktemp("ws")
    synth_ds.save(Workspace(root).dataset_dir)
    return root


def _cfg(ws, stub, *extra):
    return load_config([], [f"workspace={ws}", *stub_overrides(stub), *extra])


def _copy_ws(prepared, tmp_path):
    import shutil

    shutil.copytree(prepared / "dataset", tmp_path / "dataset")
    return tmp_path


def test_embed_artifacts_and_skip_when_current(prepared, tmp_path, stub, synth_ds):
    ws = _copy_ws(prepared, tmp_path)
    cfg = _cfg(ws, stub)
    assert not embed_is_current(cfg)
    meta = run_embed(cfg)
    n = synth_ds.n_items_total
    iv = load_item_vectors(Workspace(ws), synth_ds.domains)
    assert iv.raw.shape == (n + 1, 32) and iv.raw.dtype == np.float32 and not iv.raw[0].any()
    assert iv.global_pca.shape == (n + 1, 32)  # d_g = min(1024, model width)
    assert [t.shape for t in iv.local_pca] == [(synth_ds.n_items[0] + 1, 8), (synth_ds.n_items[1] + 1, 8)]
    tensors = load_file(str(ws / "embeddings" / "pca.safetensors"))
    a = synth_ds.domains[0]
    np.testing.assert_allclose(project(iv.raw[1:3], tensors[f"local.{a}.mean"], tensors[f"local.{a}.components"]),
                               iv.local_pca[0][1:3], atol=1e-4)
    texts = pd.read_parquet(ws / "embeddings" / "texts.parquet")
    assert texts["text"].tolist() == item_texts(synth_ds.items, cfg)
    assert meta["model"] == "stub-embed" and meta["backend"] == "openai" and meta["config_hash"]
    assert embed_is_current(cfg)
    calls = stub.counts["total"]
    assert run_embed(cfg)["created"] == meta["created"] and stub.counts["total"] == calls  # skipped
    # A runtime knob does not make the artifacts stale; a template change does, and rebuilds.
    assert embed_is_current(_cfg(ws, stub, "embed.concurrency=1"))
    changed = _cfg(ws, stub, "embed.template='Item: {title}'")
    assert not embed_is_current(changed)
    run_embed(changed)
    assert pd.read_parquet(ws / "embeddings" / "texts.parquet")["text"][0].startswith("Item: ")
    assert not embed_is_current(cfg)


def test_template_profiles_use_training_history_only(prepared, tmp_path, stub, synth_ds):
    ws = _copy_ws(prepared, tmp_path)
    cfg = _cfg(ws, stub, "profile.backend=template")
    meta = run_profile(cfg)  # runs embed first
    assert embed_is_current(cfg) and profile_is_current(cfg)
    assert meta["source"].startswith("template") and meta["chat_model"] is None
    prof = pd.read_parquet(ws / "profiles" / "profiles.parquet")
    assert len(prof) == synth_ds.n_users and set(prof["source"]) == {"template"}
    assert load_profile_embeddings(Workspace(ws)).shape == (synth_ds.n_users, 32)
    report = json.loads((ws / "profiles" / "report.json").read_text())
    assert report["chat_calls"] == 0 and report["sources"] == {"template": synth_ds.n_users}
    titles = synth_ds.items["title"].to_numpy()
    split = synth_ds.split()
    for u in range(20):
        text = prof["text"][u]
        assert text.startswith("Interested in: ")
        # Titles of the validation/test targets appear only if also in the training history.
        train_titles = {titles[i - 1] for i in split.train_sequence(u)}
        for target in (split.valid_target[u], split.test_target[u]):
            if titles[target - 1] not in train_titles:
                assert titles[target - 1] not in text
        for i in split.train_sequence(u)[-3:]:
            assert titles[i - 1] in text
    # A changed embedding model makes the profiles stale (they were clustered on the old vectors).
    assert not profile_is_current(_cfg(ws, stub, "profile.backend=template", "embed.model=other"))
    # Another run seed trains on the same artifacts; another profile seed re-clusters.
    assert embed_is_current(_cfg(ws, stub, "profile.backend=template", "seed=43"))
    assert profile_is_current(_cfg(ws, stub, "profile.backend=template", "seed=43"))
    assert not profile_is_current(_cfg(ws, stub, "profile.backend=template", "profile.seed=1"))
    # A changed prompt does not matter to template profiles.
    assert profile_is_current(_cfg(ws, stub, "profile.backend=template", "profile.analyzer_prompt='x {titles}'"))


def test_llm_profiles_dry_run_cache_and_fallbacks(prepared, tmp_path, stub, synth_ds):
    ws = _copy_ws(prepared, tmp_path)
    # profile.seed 42 draws a sample that holds users with exactly two clusters (the fallback case below).
    cfg = _cfg(ws, stub, "profile.max_users=40", "profile.output=profiles-sample", "profile.seed=42")
    run_embed(cfg)
    stub.reset_counts()
    dry = dry_run_profile(cfg)
    assert stub.counts["total"] == 0
    # Users who share a cluster's recent titles share the analyzer call: to_make counts distinct prompts.
    assert dry["users"] == 40 and dry["analyzer_calls"] >= dry["analyzer_calls_to_make"] > 40
    assert dry["estimated_prompt_tokens"] > 0 and dry["estimated_completion_tokens_at_most"] > 0

    # Every 7th distinct analyzer prompt gets a bad first answer; the retry (it carries the note) is
    # fine. Summaries of exactly two statements fail twice: those users fall back.
    bad = ["", "I'm sorry, but I cannot help with that.", "!!! ### 12 34 56 78 !!!", "word " * 200]
    words = ["tea", "pasta", "knives", "baking", "coffee", "spices", "grills", "snacks", "pans", "cereal", "sauces"]

    def reply(prompt):
        h = sum(map(ord, prompt))
        if "Merge them" in prompt:
            return "" if re.search(r"^2\. ", prompt, re.M) and not re.search(r"^3\. ", prompt, re.M) else \
                f"Overall this user favours {words[h % 11]} and {words[(h // 11) % 11]} of good quality."
        if "no apology" not in prompt and h % 7 == 0:
            return bad[h % len(bad)]
        return f"This user enjoys {words[h % 11]}, {words[(h // 7) % 11]} and practical tools of good quality."

    stub.state.reply_fn = reply
    meta = run_profile(cfg)
    report = json.loads((ws / "profiles-sample" / "report.json").read_text())
    assert not (ws / "profiles").exists()  # the sample went to its own folder
    assert meta["n_users"] == 40 and meta["subsample"] and meta["chat_model"] == "openai:stub-chat"
    a, s = report["analyzer"], report["summarizer"]
    assert a["ok_first_try"] + a["ok_after_retry"] + a["fallback"] == dry["analyzer_calls"]
    assert a["ok_after_retry"] > 0 and a["bad_reply_reasons"]
    assert s["fallback"] == report["fallback_users"] > 0
    assert report["chat_calls"] == stub.counts["/v1/chat/completions"]
    prof = pd.read_parquet(ws / "profiles-sample" / "profiles.parquet")
    assert set(prof["source"]) == {"llm", "fallback"}
    assert (prof["source"] == "fallback").sum() == report["fallback_users"]
    assert prof["text"].str.len().min() > 0
    # Re-run with --force: everything comes from the cache, same artifacts.
    calls = stub.counts["total"]
    run_profile(cfg, force=True)
    assert stub.counts["total"] == calls
    pd.testing.assert_frame_equal(prof, pd.read_parquet(ws / "profiles-sample" / "profiles.parquet"))
    again = dry_run_profile(cfg)
    assert again["analyzer_calls_to_make"] == 0


def test_chat_identity_matches_backend(stub):
    cfg = load_config([], stub_overrides(stub))
    backend = OpenAIChat(cfg["profile"]["chat_model"], stub.url, "", temperature=cfg["profile"]["temperature"],
                         seed=cfg["profile"]["seed"])
    assert chat_identity(cfg) == (backend.backend, backend.model, backend.params)


def test_failure_names_the_stage(prepared, tmp_path, stub):
    ws = _copy_ws(prepared, tmp_path)
    cfg = _cfg(ws, stub)
    stub.inject("500", 1000)
    with pytest.raises(LLMError, match="^embed: "):
        run_embed(cfg)
    assert not (ws / "embeddings").exists()


def test_make_embedder_for_new_texts(prepared, tmp_path, stub):
    cfg = _cfg(tmp_path, stub)
    emb = make_embedder(cfg, progress=False)
    try:
        v = emb.embed(["an unseen item", "another"])
    finally:
        emb.cache.close()
    assert v.shape == (2, 32) and v.dtype == np.float32


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   ", "empty"), ("word " * 80, "too_long"), ("I'm sorry, I can't do that here.", "refusal"),
    ("As an AI language model I have no opinion", "refusal"), ("#### 1234 5678 ####", "garbage"),
    ("tea tea tea tea tea tea tea tea tea tea", "garbage"),
    ("Enjoys green tea, dark chocolate and sturdy cast iron pans.", None),
])
def test_reply_checks(text, reason):
    assert check_reply(text, 50, 1.5) == reason
