import numpy as np
import pytest

from llm4cdsr.experiments import overlap_users, reduce_overlap, subsample_users


@pytest.fixture(scope="module")
def world(synth_ds):
    return synth_ds, synth_ds.split()


def test_full_ratio_changes_nothing(world):
    ds, split = world
    reduced, info = reduce_overlap(ds, split, 1.0, seed=0)
    assert info["training_items_dropped"] == 0
    assert np.array_equal(reduced.train_items, split.train_items)


def test_zero_ratio_leaves_no_overlapping_user(world):
    ds, split = world
    both = overlap_users(ds, split)
    assert len(both) > 10
    reduced, info = reduce_overlap(ds, split, 0.0, seed=0)
    assert len(overlap_users(ds, reduced)) == 0
    # Targets, and so the test set, never change.
    assert np.array_equal(reduced.test_target, split.test_target)
    assert np.array_equal(reduced.valid_target, split.valid_target)
    # Each reduced user keeps exactly their majority domain, and single-domain users are untouched.
    for u in both[:20]:
        before = split.train_sequence(u)
        after = reduced.train_sequence(u)
        counts = np.bincount(ds.domain_of(before), minlength=2)
        majority = ds.domain_of(after)[0]
        assert counts[majority] >= counts[1 - majority] and len(after) == counts[majority]
        assert np.array_equal(after, before[ds.domain_of(before) == majority])  # order kept
    others = np.setdiff1d(np.arange(ds.n_users), both)
    for u in others[:20]:
        assert np.array_equal(reduced.train_sequence(u), split.train_sequence(u))


def test_half_ratio_keeps_half(world):
    ds, split = world
    reduced, info = reduce_overlap(ds, split, 0.5, seed=3)
    assert len(overlap_users(ds, reduced)) == info["kept_both"] == round(0.5 * info["overlap_users"])
    with pytest.raises(ValueError):
        reduce_overlap(ds, split, 1.5, seed=0)


def test_subsample_keeps_whole_histories(synth_ds):
    sub = subsample_users(synth_ds, 40, seed=1)
    assert sub.n_users == 40 and sub.n_items == synth_ds.n_items
    lookup = synth_ds.user_lookup()
    for u in range(40):
        assert np.array_equal(sub.sequence(u), synth_ds.sequence(lookup[sub.user_ids[u]]))
    sub.validate()
