"""The array path of template profiles writes the very texts of the per-user path it replaced.

The archived Food x Kitchen results were made with the per-user texts (`template_profile` on
`split_by_cluster`, kept in llm/profiling.py as the reference), so every byte must agree.
"""
import numpy as np
import pytest

from llm4cdsr.config import load_config
from llm4cdsr.llm.profiling import cluster_items, group_by_cluster, split_by_cluster, template_profile, template_profiles

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
