"""Ranking metrics: hand-computed values, tie handling, and rank_targets against brute force."""
import math

import numpy as np
import pytest
import torch

from llm4cdsr.data.dataset import Split
from llm4cdsr.models.base import Recommender
from llm4cdsr.training.evaluate import (
    EvalInputs,
    _bucket_labels,
    eval_inputs,
    rank_targets,
)
from llm4cdsr.training.metrics import (
    metrics_from_ranks,
    parse_metric,
    per_user,
    target_rank,
)


def test_metrics_match_hand_computed_values():
    ranks = np.array([0, 1, 4, 9.5, 10, 25])
    m = metrics_from_ranks(ranks, ks=(5, 10))
    assert m["hit@5"] == pytest.approx(3 / 6)
    assert m["hit@10"] == pytest.approx(4 / 6)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 6)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11.5)) / 6)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 6)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10.5) / 6)


def test_unevaluated_users_are_left_out():
    m = metrics_from_ranks(np.array([0.0, np.nan, 3.0]), ks=(1,))
    assert m["hit@1"] == pytest.approx(0.5)
    assert np.isnan(per_user(np.array([np.nan]), "ndcg@10")[0])


def test_target_rank_counts_higher_and_half_the_ties():
    others = torch.tensor([[3.0, 1.0, 2.0], [2.0, 2.0, 1.0], [0.0, 0.0, 0.0], [5.0, 6.0, 7.0]])
    target = torch.tensor([2.0, 2.0, 1.0, 1.0])
    # row 0: one higher (3) and one tie (2); row 1: two ties; row 2: none above; row 3: all three above
    assert target_rank(others, target).tolist() == [1.5, 1.0, 0.0, 3.0]


def test_metric_names_are_checked():
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    for bad in ("ndcg", "recall@10", "hit@0", "hit@x"):
        with pytest.raises(ValueError):
            parse_metric(bad)


def test_bucket_labels():
    labels = _bucket_labels(np.array([0, 5, 6, 10, 11, 21]), [5, 10, 20], "len")
    assert labels.tolist() == ["len<=5", "len<=5", "len6-10", "len6-10", "len11-20", "len>20"]
    assert _bucket_labels(np.array([0, 1, 60]), [0, 10, 50], "pop").tolist() == ["pop<=0", "pop1-10", "pop>50"]


def test_test_inputs_append_the_validation_target():
    split = Split(np.array([0, 2, 3]), np.array([1, 2, 3], dtype=np.int32), np.array([4, 5], dtype=np.int32), np.array([6, 7], dtype=np.int32))
    test = eval_inputs(split, "test")
    assert test.offsets.tolist() == [0, 3, 5]
    assert test.items.tolist() == [1, 2, 4, 3, 5]
    assert test.targets.tolist() == [6, 7]
    assert eval_inputs(split, "valid").targets.tolist() == [4, 5]


class StubModel(Recommender):
    """Scores from fixed random tables; the user query depends on the last two history items."""

    def __init__(self, n_items, width, integer):
        super().__init__()
        self.n_items, self.max_len = n_items, 4
        g = torch.Generator().manual_seed(0)
        draw = (lambda *s: torch.randint(0, 3, s, generator=g).float()) if integer else (lambda *s: torch.randn(*s, generator=g).round(decimals=1))
        self.item_vectors = draw(sum(n_items) + 1, width)
        self.tables = [draw(n + 1, width) for n in n_items]

    def user_states(self, mixed_seq, user_idx=None):
        q = self.item_vectors[mixed_seq[:, -1]] + 0.5 * self.item_vectors[mixed_seq[:, -2]] if mixed_seq.shape[1] > 1 else self.item_vectors[mixed_seq[:, -1]]
        q = q + 1.0  # never all zero
        return torch.stack([q, -q], dim=1)  # (B, 2, K)

    def item_table(self, domain):
        return self.tables[domain]


@pytest.mark.parametrize("integer", [False, True])
def test_rank_targets_matches_brute_force(integer):
    rng = np.random.default_rng(1)
    n_items = (7, 9)
    n_users = 40
    histories = [rng.choice(np.arange(1, 17), size=rng.integers(1, 8), replace=False) for _ in range(n_users)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(1, 17), h)) for h in histories])
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])])
    inputs = EvalInputs(offsets.astype(np.int64), np.concatenate(histories).astype(np.int64), targets.astype(np.int64))
    negatives = np.zeros((n_users, 3), dtype=np.int64)
    for u in range(n_users):
        d = int(targets[u] > n_items[0])
        pool = np.arange(1, n_items[d] + 1) + (n_items[0] if d else 0)
        negatives[u] = rng.choice(np.setdiff1d(pool, np.append(histories[u], targets[u])), size=3, replace=False)
    model = StubModel(n_items, 1 if integer else 4, integer)
    got = rank_targets(model, inputs, n_items, negatives, batch_size=7)

    for u in range(n_users):
        d = int(targets[u] > n_items[0])
        off = n_items[0] if d else 0
        kept = histories[u][-model.max_len:]
        state = model.user_states(torch.tensor(kept)[None])[0, d].numpy()
        table = model.tables[d].numpy()

        def score(g, state=state, table=table, off=off):
            return float(np.dot(state, table[g - off]))

        t = score(targets[u])
        others = [score(g) for g in negatives[u]]
        assert got["sampled"][u] == sum(s > t for s in others) + 0.5 * sum(s == t for s in others)
        seen = set(histories[u].tolist())
        others = [score(g) for g in range(off + 1, off + n_items[d] + 1) if g != targets[u] and g not in seen]
        assert got["full"][u] == sum(s > t for s in others) + 0.5 * sum(s == t for s in others)
