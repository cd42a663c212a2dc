"""Training batches against a plain per-user construction; negatives, bucketing, determinism."""
import numpy as np
import torch

from llm4cdsr.config import load_config
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.models import build_model
from llm4cdsr.training.batching import (
    MembershipIndex,
    TrainBatches,
    left_pad,
    sample_negatives,
)

torch.set_num_threads(1)


def _split():
    ds = synth_dataset(0, n_users=120)
    return ds, ds.split()


def test_batch_matches_a_per_user_construction():
    ds, split = _split()
    max_len = 6
    tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, max_len, 16, seed=3)
    users = tb.plan(0)[0]
    batch = tb.build(users, 0, 0)
    width = batch["mixed_seq"].shape[1]
    assert width == min(max(split.train_lengths[users]) - 1, max_len)  # padded to the batch's longest
    history = MembershipIndex(split.train_offsets, split.train_items, ds.n_items_total)
    for row, u in enumerate(users):
        window = split.train_sequence(u)[-(max_len + 1):]
        inputs, nexts = window[:-1], window[1:]
        expected_seq = np.concatenate([np.zeros(width - len(inputs), int), inputs])
        expected_targets = np.concatenate([np.zeros(width - len(nexts), int), nexts])
        assert batch["mixed_seq"][row].tolist() == expected_seq.tolist()
        assert batch["targets"][row].tolist() == expected_targets.tolist()
        neg = batch["negatives"][row].numpy()
        has = expected_targets > 0
        assert (neg[~has] == 0).all()
        assert (ds.domain_of(neg[has]) == ds.domain_of(expected_targets[has])).all()  # the target's domain
        assert not history.contains(np.full(has.sum(), u), neg[has]).any()  # never in the history
        a, b = batch["reg_items"][row].tolist()
        assert (a == 0) == (not (window <= ds.n_items[0]).any()) and (a == 0 or a in window and a <= ds.n_items[0])
        assert (b == 0) == (not (window > ds.n_items[0]).any()) and (b == 0 or b in window and b > ds.n_items[0])
    assert batch["user_idx"].tolist() == users.tolist()


def test_epoch_loss_norm_is_the_mean_targets_per_batch_of_each_domain():
    # A: items 1..3, B: 4..6; max_len 2 keeps the newest 3 items, whose last 2 are targets.
    offsets = np.array([0, 3, 5, 6, 10])
    items = np.array([1, 2, 4, 5, 6, 1, 1, 4, 2, 5])
    tb = TrainBatches(offsets, items, (3, 3), max_len=2, batch_size=2, seed=0, bucket_pool=1, loss_norm="epoch")
    # targets: user 0 [2, 4], user 1 [6], user 2 none (one item), user 3 [2, 5]: A 2, B 3; 2 batches
    assert tb.target_norm.tolist() == [1.0, 1.5]
    assert TrainBatches(offsets, items, (3, 3), 2, 2, seed=0).target_norm is None  # loss_norm=batch


def test_epoch_loss_norm_equals_the_targets_the_batches_hold():
    ds, split = _split()
    for pool in (1, 64):  # random order and length-bucketed: the same epoch total
        tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 6, 16, seed=3, bucket_pool=pool,
                          loss_norm="epoch")
        held = np.zeros(2)
        for b, users in enumerate(tb.plan(0)):
            batch = tb.build(users, 0, b)
            targets = batch["targets"][batch["targets"] > 0].numpy()
            held += np.bincount(ds.domain_of(targets), minlength=2)
            assert torch.equal(batch["target_norm"], tb.target_norm)
        assert np.allclose(held / len(tb), tb.target_norm.numpy())


def test_negatives_reach_the_last_id_of_each_domain():
    # The authors' sampler used an exclusive upper bound: the last id of a domain was never drawn.
    rng = np.random.default_rng(0)
    offsets, items = np.array([0, 2]), np.array([1, 5])  # user 0 had A item 1 and B item 2 (global 5)
    index = MembershipIndex(offsets, items, 6)
    domains = np.array([0, 1] * 500)
    draws = sample_negatives(rng, np.zeros(1000, dtype=np.int64), domains, (3, 3), index)
    assert set(draws[domains == 0]) == {2, 3}
    assert set(draws[domains == 1]) == {4, 6}


def test_plan_buckets_by_length_and_covers_every_user_once():
    ds, split = _split()
    tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 50, 8, seed=1, bucket_pool=4)
    plan = tb.plan(0)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == sorted(tb.users.tolist())
    for batch in plan:
        lengths = tb.lengths[batch]
        assert (np.diff(lengths) >= 0).all()  # sorted inside its pool, so inside each batch
    again = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 50, 8, seed=1, bucket_pool=4)
    assert all((x == y).all() for x, y in zip(plan, again.plan(0)))  # deterministic
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(plan, tb.plan(1)))  # reshuffled per epoch
    b1, b2 = tb.build(plan[0], 0, 0), again.build(plan[0], 0, 0)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)


def test_bucketing_wastes_little_padding():
    ds, split = _split()
    bucketed = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 50, 8, seed=1, bucket_pool=16)
    unbucketed = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 50, 8, seed=1, bucket_pool=1)

    def cells(tb):
        return sum(tb.build(b, 0, i)["mixed_seq"].numel() for i, b in enumerate(tb.plan(0)))
    assert cells(bucketed) < 0.8 * cells(unbucketed)


def test_dynamic_padding_gives_the_same_loss_as_padding_to_max_len():
    ds, split = _split()
    cfg = load_config()["model"]
    cfg.update(name="sasrec_mixed", hidden=8, max_len=12)
    info = {"domains": ds.domains, "n_items": ds.n_items, "n_users": ds.n_users}
    torch.manual_seed(0)
    model = build_model(cfg, info).eval()
    # length-bucketed, so that the first batch is narrower than max_len
    dynamic = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 16, seed=0, bucket_pool=64)
    padded = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 16, seed=0, bucket_pool=64,
                          dynamic_padding=False)
    users = dynamic.plan(0)[0]
    a, b = dynamic.build(users, 0, 0), padded.build(users, 0, 0)
    assert b["mixed_seq"].shape[1] == 12 and a["mixed_seq"].shape[1] < 12
    with torch.no_grad():
        torch.testing.assert_close(model(a)["loss"], model(b)["loss"])


def test_left_pad_keeps_the_newest_items():
    offsets, items = np.array([0, 3, 4, 9]), np.arange(1, 10)
    assert left_pad(offsets, items, np.array([0, 1, 2]), 4).tolist() == [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9]]
    assert left_pad(offsets, items, np.array([1]), 4, width=2).tolist() == [[0, 4]]
