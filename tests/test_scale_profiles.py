"""The array path of template profiles writes the very texts of the per-user path it replaced, and
the pieces path (profile.template_vectors=pieces) pools exactly the parts those texts are made of.

The archived Food x Kitchen results were made with the per-user texts (`template_profile` on
`split_by_cluster`, kept in llm/profiling.py as the reference), so every byte must agree.
"""
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from openai_stub import OpenAIStub, fake_vector, stub_overrides

from llm4cdsr.config import ConfigError, load_config
from llm4cdsr.llm.profiling import (
    cluster_items,
    frequent_keywords,
    group_by_cluster,
    recent_titles,
    split_by_cluster,
    template_pieces,
    template_profile,
    template_profiles,
)
from llm4cdsr.llm.stages import make_embedder, profile_config_hash, profile_is_current, run_profile
from llm4cdsr.validation import validate_config
from llm4cdsr.workspace import Workspace

TRICKY = ["Caf&eacute; Cr&egrave;me &amp; Co, 12 oz Pack", "nan", "", "The the THE of a", "Bread bread-maker's Bread",
          "Set of 3 pieces, inch size", "x" * 400, "Spice  \t  Rack\nOrganizer", "Tea; tea: TEA!", "None",
          "o'brien's Irish-style oats", "12345 678", "Über Grüner Tee"]


@pytest.fixture(scope="module")
def world(synth_ds):
    labels = cluster_items(np.random.default_rng(0).standard_normal((synth_ds.n_items_total, 16)), 10, 0)
    titles = np.concatenate([[""], synth_ds.items["title"].astype(str).to_numpy()]).astype(object)
    rng = np.random.default_rng(1)
    # Odd titles on a fifth of the items: entities, noise words, repeats, over-long, empty.
    for i in rng.choice(np.arange(1, len(titles)), size=len(titles) // 5, replace=False):
        titles[i] = TRICKY[int(rng.integers(len(TRICKY)))] + (" " + titles[i] if rng.random() < 0.5 else "")
    return synth_ds, synth_ds.split(), labels, titles


@pytest.mark.parametrize("overrides", [[], ["profile.template_keywords=0"], ["profile.template_keywords=2"],
                                       ["profile.max_titles=3", "profile.max_title_chars=12"],
                                       ["profile.max_titles=1", "profile.template_keywords=50"]])
def test_template_texts_identical_to_the_per_user_path(world, overrides):
    ds, split, labels, titles = world
    prof = load_config([], overrides)["profile"]
    users = np.arange(ds.n_users)
    want = [template_profile(split_by_cluster(split.train_sequence(int(u)), labels), titles, prof) for u in users]
    got = template_profiles(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)
    assert got == want


def test_groups_match_split_by_cluster_for_a_user_sample(world):
    ds, split, labels, _ = world
    users = np.sort(np.random.default_rng(2).choice(ds.n_users, size=50, replace=False))
    per_user = group_by_cluster(split.train_items, split.train_offsets, users, labels).user_clusters()
    for u, uc in zip(users, per_user):
        ref = split_by_cluster(split.train_sequence(int(u)), labels)
        assert [c for c, _ in uc.clusters] == [c for c, _ in ref.clusters]
        for (_, a), (_, b) in zip(uc.clusters, ref.clusters):
            np.testing.assert_array_equal(a, b)


def test_user_without_training_items_gets_an_empty_text(world):
    _, split, labels, titles = world
    offsets = np.array([0, 0, 2], dtype=np.int64)  # user 0: no training item
    items = split.train_items[:2]
    prof = load_config([], [])["profile"]
    got = template_profiles(group_by_cluster(items, offsets, np.arange(2), labels), titles, prof)
    assert got[0] == "" and got[1] == template_profile(split_by_cluster(items, labels), titles, prof)


# ----- pieces: profile.template_vectors=pieces --------------------------------------------------
def reference_parts(history: np.ndarray, labels, titles, prof) -> dict[str, float]:
    """The parts of one user's template text and their characters, from the per-user path."""
    parts: dict[str, float] = {}
    for _, ids in split_by_cluster(history, labels).clusters:
        keywords = frequent_keywords(ids, titles, prof["template_keywords"])
        texts = ["Interested in:", *recent_titles(ids, titles, prof["max_titles"], prof["max_title_chars"])]
        for text in texts + (["Frequent words:", *keywords] if keywords else []):
            parts[text] = parts.get(text, 0.0) + len(text)
    parts = {t: w for t, w in parts.items() if w > 0}
    return parts or {"": 1.0}  # no training item: the empty text, as the whole-text path embeds it


def text_vectors(texts: list[str], dim: int = 8) -> np.ndarray:
    """A fixed vector per text (any text-to-vector function will do for pooling)."""
    return np.stack([np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
                     .standard_normal(dim).astype(np.float32) for t in texts])


@pytest.mark.parametrize("overrides", [[], ["profile.template_keywords=0"],
                                       ["profile.max_titles=3", "profile.max_title_chars=12"]])
def test_pieces_are_the_parts_of_the_per_user_texts(world, overrides):
    ds, split, labels, titles = world
    prof = load_config([], overrides)["profile"]
    users = np.arange(ds.n_users)
    pieces = template_pieces(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)
    assert len(set(pieces.texts)) == len(pieces.texts)  # each distinct part embedded once
    rows = pieces.weights.tocsr()
    for u in users:
        row = rows[u]
        got = {pieces.texts[j]: float(w) for j, w in zip(row.indices, row.data)}
        assert got == reference_parts(split.train_sequence(int(u)), labels, titles, prof)


def test_pooled_vector_is_the_character_weighted_mean_and_ignores_other_users(world):
    ds, split, labels, titles = world
    prof = load_config([], [])["profile"]
    users = np.arange(ds.n_users)
    pieces = template_pieces(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles, prof)
    got = pieces.pool(text_vectors(pieces.texts))
    assert got.shape == (ds.n_users, 8) and got.dtype == np.float32
    for u in range(0, ds.n_users, 7):
        parts = reference_parts(split.train_sequence(int(u)), labels, titles, prof)
        want = sum(w * v for w, v in zip(parts.values(), text_vectors(list(parts))))
        np.testing.assert_allclose(got[u], want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)
    # A user's vector does not depend on who else is profiled (nor on their order).
    some = np.array([250, 3, 17, 120])
    alone = template_pieces(group_by_cluster(split.train_items, split.train_offsets, some, labels), titles, prof)
    np.testing.assert_allclose(alone.pool(text_vectors(alone.texts)), got[some], rtol=1e-5, atol=1e-6)


def test_user_without_training_items_pools_the_empty_text(world):
    _, split, labels, titles = world
    offsets = np.array([0, 0, 2], dtype=np.int64)  # user 0: no training item
    pieces = template_pieces(group_by_cluster(split.train_items[:2], offsets, np.arange(2), labels), titles,
                             load_config([], [])["profile"])
    vectors = text_vectors(pieces.texts)
    np.testing.assert_allclose(pieces.pool(vectors)[0], vectors[pieces.texts.index("")] /
                               np.linalg.norm(vectors[pieces.texts.index("")]), rtol=1e-6)


def test_template_vectors_setting_keeps_old_workspaces_current_and_is_checked():
    cfg = load_config([], [])
    before = {**cfg, "profile": {k: v for k, v in cfg["profile"].items() if k != "template_vectors"}}
    assert profile_config_hash(cfg) == profile_config_hash(before)  # whole texts: the hash of before the key
    pieces = load_config([], ["profile.template_vectors=pieces"])
    assert profile_config_hash(pieces) != profile_config_hash(cfg)
    # LLM-written profiles are embedded whole whatever the key says.
    llm = ["profile.backend=openai", "profile.chat_model=m"]
    assert profile_config_hash(load_config([], llm)) == profile_config_hash(load_config([], [*llm, "profile.template_vectors=pieces"]))
    with pytest.raises(ConfigError, match="profile.template_vectors"):
        validate_config(load_config([], ["profile.template_vectors=titles"]))


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dim=16) as s:
        yield s


def test_stage_with_pieces_writes_the_same_texts_pooled_vectors_and_is_stale_for_text(synth_ds, tmp_path_factory, stub):
    ws = tmp_path_factory.mktemp("ws")
    synth_ds.save(Workspace(ws).dataset_dir)
    text_cfg = load_config([], [f"workspace={ws}", *stub_overrides(stub, chat=False)])
    pieces_cfg = load_config([], [f"workspace={ws}", *stub_overrides(stub, chat=False), "profile.template_vectors=pieces",
                                  "profile.output=profiles-pieces"])
    run_profile(text_cfg)
    run_profile(pieces_cfg)
    texts = pd.read_parquet(ws / "profiles" / "profiles.parquet")["text"].tolist()
    assert pd.read_parquet(ws / "profiles-pieces" / "profiles.parquet")["text"].tolist() == texts
    report = json.loads((ws / "profiles-pieces" / "report.json").read_text())
    assert report["vectors"].startswith("pieces") and report["embedding_cache_hits"] == 0

    # The vectors: the parts' embeddings (the stub's, one per text) pooled.
    split = synth_ds.split()
    labels = np.load(ws / "profiles-pieces" / "clusters.npy")
    titles = np.concatenate([[""], synth_ds.items["title"].astype(str).to_numpy()])
    users = np.arange(synth_ds.n_users)
    pieces = template_pieces(group_by_cluster(split.train_items, split.train_offsets, users, labels), titles,
                             pieces_cfg["profile"])
    assert report["embedded_texts"] == len(pieces.texts)
    want = pieces.pool(np.array([fake_vector(t, 16) for t in pieces.texts], dtype=np.float32))
    np.testing.assert_allclose(np.load(ws / "profiles-pieces" / "embeddings.npy"), want, rtol=1e-5, atol=1e-6)

    # Each setting's artifacts are stale for the other (the same output folder is rebuilt, not mixed).
    assert profile_is_current(text_cfg) and profile_is_current(pieces_cfg)
    moved = load_config([], [f"workspace={ws}", *stub_overrides(stub, chat=False), "profile.template_vectors=pieces"])
    assert not profile_is_current(moved)
    shutil.rmtree(ws / "profiles-pieces")
    # Every part is in the call cache: a rebuild makes no embedding call.
    calls = stub.counts["total"]
    run_profile(pieces_cfg)
    assert stub.counts["total"] == calls
    with make_embedder(pieces_cfg, "profile", progress=False).cache as cache:
        assert cache.counts()["embeddings"] >= len(pieces.texts)
