"""Filters against plain-Python references, and the leave-one-out split's invariants."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from llm4cdsr.data import filters
from llm4cdsr.data.prepare import prepare_tables


def kcore_reference(pairs, min_user, min_item):
    """The obvious loop: drop every under-threshold user and item, until nothing changes."""
    kept = list(range(len(pairs)))
    while True:
        users = Counter(pairs[k][0] for k in kept)
        items = Counter(pairs[k][1] for k in kept)
        nxt = [k for k in kept if users[pairs[k][0]] >= min_user and items[pairs[k][1]] >= min_item]
        if nxt == kept:
            return set(kept)
        kept = nxt


@pytest.mark.parametrize("seed", range(8))
def test_kcore_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    users = rng.integers(0, 40, size=n)
    items = np.minimum(rng.zipf(1.6, size=n) - 1, 59)  # skewed: some items are rare, so the k-core iterates
    min_user, min_item = int(rng.integers(0, 7)), int(rng.integers(0, 5))
    keep = filters.kcore(users, items, min_user, min_item)
    assert set(np.flatnonzero(keep)) == kcore_reference(list(zip(users, items)), min_user, min_item)
    if keep.any():
        assert (np.bincount(users[keep])[np.unique(users[keep])] >= min_user).all()
        assert (np.bincount(items[keep])[np.unique(items[keep])] >= min_item).all()


def test_most_recent_and_min_length():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    assert filters.most_recent(users, 2).tolist() == [False, False, True, True, True, True, False, True, True]
    assert filters.most_recent(users, 0).all()
    assert filters.min_length(users, 3).tolist() == [True] * 4 + [False] * 2 + [True] * 3


def test_repeats():
    users, items = np.array([0, 0, 0, 1, 1]), np.array([5, 6, 5, 5, 5])
    assert filters.repeats(users, items, "keep_first").tolist() == [True, True, False, True, False]
    assert filters.repeats(users, items, "keep_last").tolist() == [False, True, True, False, True]
    assert filters.repeats(users, items, "keep_all").all()


def random_dataset(seed):
    """Random histories with repeats and equal timestamps, both domains."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(40)],
                          "domain": ["A"] * 30 + ["B"] * 40, "title": [f"t{i}" for i in range(70)]})
    n = 1500
    picks = rng.integers(0, 70, size=n)
    inter = pd.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 120, size=n)],
                          "item_id": items["item_id"].to_numpy()[picks], "domain": items["domain"].to_numpy()[picks],
                          "timestamp": rng.integers(0, 50, size=n)})
    return inter, prepare_tables(inter, items)


@pytest.mark.parametrize("seed", range(3))
def test_split_invariants(seed, synth_ds):
    inter, ds = random_dataset(seed)
    for data in (ds, synth_ds):
        split = data.split()
        lengths = data.lengths
        assert (split.train_lengths == lengths - 2).all()
        ends = data.seq_offsets[1:]
        assert (split.test_target == data.seq_items[ends - 1]).all()
        assert (split.valid_target == data.seq_items[ends - 2]).all()
        for u in range(data.n_users):
            # Training inputs are exactly the history before both targets: no target position leaks.
            assert (split.train_sequence(u) == data.sequence(u)[:-2]).all()
        # Target domains: the domain of that item in the items table.
        dom_names = data.items["domain"].to_numpy()
        for targets in (split.test_target, split.valid_target):
            assert (np.asarray(data.domains)[data.domain_of(targets)] == dom_names[targets - 1]).all()
    # Synthetic histories never repeat an item, so no target appears among its user's training inputs.
    split = synth_ds.split()
    for u in range(synth_ds.n_users):
        train = set(split.train_sequence(u).tolist())
        assert split.test_target[u] not in train and split.valid_target[u] not in train


def test_random_dataset_matches_pandas_reference():
    """Histories equal a pandas stable sort by (user, time) with exact duplicate rows (the default
    data.duplicates=drop) and the <3 users removed."""
    inter, ds = random_dataset(11)
    assert inter.duplicated().any()  # the draw holds some, so the reference covers them
    ref = inter.drop_duplicates(keep="first").sort_values(["user_id", "timestamp"], kind="stable")
    ref = ref[ref.groupby("user_id")["item_id"].transform("size") >= 3]
    lookup = ds.item_lookup()
    assert list(ds.user_ids) == sorted(ref["user_id"].unique())
    for u, (_, group) in enumerate(ref.groupby("user_id", sort=True)):
        assert ds.sequence(u).tolist() == [lookup[i] for i in group["item_id"]]
        assert ds.seq_times[ds.seq_offsets[u]:ds.seq_offsets[u + 1]].tolist() == group["timestamp"].tolist()
