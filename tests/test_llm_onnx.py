"""embed.backend=onnx: the packaged all-MiniLM-L6-v2 exported once to int8 ONNX, offline, close to torch."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from llm4cdsr.config import load_config
from llm4cdsr.io import read_json
from llm4cdsr.llm import embedders
from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.embedders import CachedEmbedder, OnnxEmbedder, SentenceTransformerEmbedder, make_raw_embedder

TEXTS = [
    "The food item has the following attributes: name is Matcha Green Tea Powder, Organic, 1 Ounce.",
    "The food item has the following attributes: name is Organic Sencha Green Tea Bags, 100 count.",
    "The kitchen item has the following attributes: name is Lodge Cast Iron Skillet, 12 inch.",
    "This user buys coffee beans, spices and baking supplies, and recently a stand mixer and bread pans.",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export for the module, made with the network unreachable: nothing may be downloaded."""
    root = tmp_path_factory.mktemp("onnx")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise OSError("network access attempted during the ONNX export")

    mp.setattr(socket.socket, "connect", no_network)
    try:
        embedder = OnnxEmbedder("", root, batch_size=8)
        embedder.load()
    finally:
        mp.undo()
    return embedder


def test_export_is_offline_and_close_to_torch(exported):
    meta = (exported.export_dir / "meta.json")
    assert meta.is_file() and (exported.export_dir / "model.onnx").is_file()
    assert not (exported.export_dir / "fp32.onnx").exists()  # only the int8 model is kept
    got = exported.embed_batch(TEXTS)
    want = SentenceTransformerEmbedder("", "cpu", 8).embed_batch(TEXTS)
    assert got.shape == want.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # normalised in the graph
    assert np.sum(got * want, axis=1).min() > 0.98
    assert got[0] @ got[1] > got[0] @ got[2]  # tea is still nearer tea than a pan


def test_export_is_made_once_and_reused(exported, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(embedders, "export_onnx_int8", fail)
    again = OnnxEmbedder("", exported.export_dir.parent, batch_size=8)
    assert again.export_dir == exported.export_dir
    np.testing.assert_allclose(again.embed_batch(TEXTS[:2]), exported.embed_batch(TEXTS[:2]), atol=1e-6)


def test_a_batch_moves_a_vector_only_slightly_and_repeats_exactly(exported):
    """Dynamic quantisation scales the activations per batch, so a text's vector depends a little on
    its batch-mates (the stage's batches are deterministic: sorted by length); the same batch gives
    the same vectors every time."""
    alone = np.concatenate([exported.embed_batch([t]) for t in TEXTS])
    batched = exported.embed_batch(TEXTS)
    assert np.sum(alone * batched, axis=1).min() > 0.99
    np.testing.assert_array_equal(exported.embed_batch(TEXTS), batched)


def test_texts_are_cut_to_the_model_window(exported):
    window = exported._max_seq_length
    assert window == 256
    long = "spices and coffee " * 400  # ~1,200 tokens
    ids = exported._tokenizer.encode(long).ids
    assert len(ids) == window
    cut = exported._tokenizer.decode(ids[1:-1])  # the window without [CLS] and [SEP]
    np.testing.assert_allclose(exported.embed_batch([long]), exported.embed_batch([cut]), atol=1e-4)


def test_config_selects_the_backend_with_its_own_cache_namespace(exported, tmp_path):
    cfg = load_config([], [f"workspace={tmp_path}", "embed.backend=onnx"])
    raw = make_raw_embedder(cfg)
    assert isinstance(raw, OnnxEmbedder) and raw.export_dir.parent == tmp_path / "onnx"
    with Cache(tmp_path / "c.sqlite") as cache:
        onnx_ns = CachedEmbedder(exported, cache, progress=False).ns
        torch_ns = CachedEmbedder(SentenceTransformerEmbedder("", "cpu", 8), cache, progress=False).ns
    assert onnx_ns != torch_ns  # int8 vectors never answer for torch ones, nor the other way round


def test_export_fuses_the_bert_layers(exported):
    """ONNX Runtime's transformer optimiser ran before quantisation: one Attention op per layer,
    embeddings + LayerNorm, bias + GELU and residual + LayerNorm fused (MiniLM-L6: 6 layers)."""
    fusions = read_json(exported.export_dir / "meta.json")["fusions"]
    assert fusions == {"EmbedLayerNormalization": 1, "Attention": 6, "BiasGelu": 6, "SkipLayerNormalization": 12}


def test_runs_hold_at_most_the_token_budget_longest_first():
    lengths = np.array([10, 250, 40, 256, 30, 120, 9])
    runs = embedders._onnx_runs(lengths, 512)
    assert sorted(np.concatenate(runs).tolist()) == list(range(len(lengths)))  # every text once
    assert all(len(r) * lengths[r[0]] <= 512 and lengths[r[0]] == lengths[r].max() for r in runs)
    assert [lengths[r[0]] for r in runs] == sorted((lengths[r[0]] for r in runs), reverse=True)
    assert [len(r) for r in embedders._onnx_runs(np.array([300, 300, 5]), 256)] == [1, 1, 1]  # too long: alone


def test_a_batch_cut_into_runs_keeps_each_text_in_its_row(exported):
    """With a budget of one token every text runs alone: the same vectors as embedding each text by
    itself, in the rows of the batch; the budget is part of the cache key, not of the export."""
    alone = OnnxEmbedder("", exported.export_dir.parent, batch_size=8, tokens_per_run=1)
    assert alone.export_dir == exported.export_dir and alone.params != exported.params
    np.testing.assert_array_equal(alone.embed_batch(TEXTS), np.concatenate([exported.embed_batch([t]) for t in TEXTS]))
