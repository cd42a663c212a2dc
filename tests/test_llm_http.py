"""The OpenAI-compatible client against a real local server with injected faults."""
import time

import numpy as np
import pytest
from openai_stub import OpenAIStub, fake_vector

from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.chat import CachedChat, ChatRequest, OpenAIChat
from llm4cdsr.llm.embedders import CachedEmbedder, OpenAIEmbedder
from llm4cdsr.llm.http import LLMError, RetryPolicy, parse_retry_after

FAST = RetryPolicy(timeout_s=0.5, max_retries=3, backoff_s=0.01, backoff_max_s=2.0)


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=8, hang_s=1.5) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(stub):
    stub.state.faults.clear()
    stub.wait_idle()
    stub.reset_counts()
    stub.state.latency_s = 0.0


def _embedder(stub, **kw):
    return OpenAIEmbedder("m", stub.url, api_key_env="", batch_size=kw.pop("batch_size", 4), policy=kw.pop("policy", FAST),
                          concurrency=kw.pop("concurrency", 2), **kw)


def test_embeddings_match_the_server(stub):
    vecs = _embedder(stub).embed_batch(["a", "b"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 8)
    np.testing.assert_array_equal(vecs[1], np.asarray(fake_vector("b", 8), dtype=np.float32))


@pytest.mark.parametrize("fault", ["500", "malformed", "timeout"])
def test_transient_faults_are_retried(stub, fault):
    stub.inject(fault, 2)
    vecs = _embedder(stub).embed_batch(["x"])
    assert vecs.shape == (1, 8)
    assert stub.counts["total"] == 3


def test_retry_after_is_honoured(stub):
    stub.inject("429", 1, retry_after="1")
    t0 = time.perf_counter()
    _embedder(stub).embed_batch(["x"])
    assert time.perf_counter() - t0 >= 0.9  # waited what the server asked, not the 10 ms backoff
    assert stub.counts["total"] == 2


def test_exhausted_retries_name_the_stage(stub):
    stub.inject("500", 10)
    with pytest.raises(LLMError, match=r"^embed: .*/v1/embeddings failed after 4 attempts; last error: HTTP 500"):
        _embedder(stub).embed_batch(["x"])
    stub.state.faults.clear()
    stub.inject("timeout", 10)
    chat = OpenAIChat("m", stub.url, api_key_env="", policy=RetryPolicy(0.2, 1, 0.01, 0.05), stage="profile")
    with pytest.raises(LLMError, match=r"^profile: .*chat/completions failed after 2 attempts; last error: timed out"):
        chat.complete_one(ChatRequest((("user", "hi"),), 10))


def test_client_errors_are_not_retried(stub):
    stub.inject("400", 5)
    with pytest.raises(LLMError, match="answered HTTP 400"):
        _embedder(stub).embed_batch(["x"])
    assert stub.counts["total"] == 1


def test_unreachable_server_fails_clearly():
    emb = OpenAIEmbedder("m", "http://127.0.0.1:9/v1", api_key_env="", policy=RetryPolicy(0.2, 1, 0.01, 0.05))
    with pytest.raises(LLMError, match="embed: .*connection error"):
        emb.embed_batch(["x"])


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # in the past
    assert parse_retry_after("soon") is None


def test_cached_embedder_calls_only_for_missing_texts(stub, tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        emb = CachedEmbedder(_embedder(stub), cache, progress=False)
        first = emb.embed(["a", "bb", "a", "ccc", "dddd", "e"])
        assert len(stub.state.embedded_texts) == 5  # duplicates embedded once
        stub.reset_counts()
        again = CachedEmbedder(_embedder(stub), cache, progress=False).embed(["e", "a", "new"])
        assert stub.state.embedded_texts == ["new"]
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(again[1], first[0])


def test_cached_chat_and_concurrency(stub, tmp_path):
    stub.state.latency_s = 0.05
    requests = [ChatRequest((("user", f"q{i}"),), 20) for i in range(16)]
    with Cache(tmp_path / "c.sqlite") as cache:
        chat = CachedChat(OpenAIChat("m", stub.url, api_key_env="", concurrency=8, policy=FAST), cache, progress=False)
        replies = chat.complete(requests)
        assert stub.counts["total"] == 16 and chat.calls == 16
        assert 1 < stub.state.max_in_flight <= 8  # in parallel, never past the limit
        assert all(r.startswith(("This", "The")) for r in replies)
        assert chat.complete(requests) == replies and stub.counts["total"] == 16
