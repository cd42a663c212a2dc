"""The next-item objectives (bce, ce, sampled_ce), the authors' chimeric ruler, block and null key."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import llm4cdsr.models.sasrec as sasrec
from llm4cdsr.config import load_config
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.models import MODEL_NAMES, build_model
from llm4cdsr.models.base import LossConfig, Recommender, next_item_loss
from llm4cdsr.models.sasrec import EncoderConfig, SASRecEncoder
from llm4cdsr.training.batching import TrainBatches
from llm4cdsr.training.candidates import load_or_draw
from llm4cdsr.training.evaluate import EvalInputs, rank_targets

torch.set_num_threads(1)


def _softplus(x):
    return np.log1p(np.exp(x))


# ----- losses on hand-computed logits -------------------------------------------------------
# Two domains of 3 items each (A: global 1..3, B: 4..6). Item vectors are 2-d; three steps with
# targets: A item 1, A item 3, B item 2 (global 5).
TABLES = {0: torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
          1: torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.5, 0.5]])}
QUERIES = torch.tensor([[1.0, 2.0], [0.5, -1.0], [1.0, 1.0]])
POS_LOCAL = torch.tensor([1, 3, 2])
DOMAIN = torch.tensor([0, 0, 1])
STEPS = torch.tensor([[True, True, True]])


def _loss(kind, batch, **kw):
    return float(next_item_loss(LossConfig(kind, **kw), QUERIES, POS_LOCAL, DOMAIN, batch, STEPS, 3,
                                lambda d, ids: TABLES[d][ids], lambda d: TABLES[d]))


def _logits(q, rows):
    return np.asarray([float(q @ TABLES[d][i]) for d, i in rows])


def test_bce_is_the_mean_per_domain_of_the_pair_losses():
    batch = {"negatives": torch.tensor([[2, 1, 4]])}  # global ids: A 2, A 1, B 1
    # step logits by hand: pos q.t (A1: 1, A3: -0.5, B2: -1), neg (A2: 2, A1: 0.5, B1: 2)
    pos, neg = np.array([1.0, -0.5, -1.0]), np.array([2.0, 0.5, 2.0])
    pair = _softplus(-pos) + _softplus(neg)
    assert _loss("bce", batch) == pytest.approx(pair[:2].mean() + pair[2], rel=1e-6)


def test_ce_is_the_softmax_over_the_whole_target_domain():
    per_step = []
    for q, d, t in zip(QUERIES, DOMAIN.tolist(), POS_LOCAL.tolist()):
        logits = (TABLES[d][1:] @ q).numpy()  # every item of the domain
        per_step.append(np.log(np.exp(logits).sum()) - logits[t - 1])
    assert _loss("ce", {}) == pytest.approx((per_step[0] + per_step[1]) / 2 + per_step[2], rel=1e-6)


def test_sampled_ce_masks_the_target_among_its_shared_negatives_and_applies_log_q():
    shared = torch.tensor([[1, 2], [5, 6]])  # A: items 1, 2; B: items 2, 3 (global 5, 6)
    logq = torch.log(torch.tensor([1.0, 0.5, 0.25, 0.25, 0.2, 0.3, 0.5]))  # by global id
    batch = {"shared_negatives": shared, "item_logq": logq}

    def expected(correct):
        out = []
        for q, d, t in zip(QUERIES, DOMAIN.tolist(), POS_LOCAL.tolist()):
            negs = [i for i in shared[d].tolist()]
            offset = 3 if d == 1 else 0
            pos = float(q @ TABLES[d][t]) - (float(logq[t + offset]) if correct else 0.0)
            logits = [pos] + [float(q @ TABLES[d][i - offset]) - (float(logq[i]) if correct else 0.0)
                              for i in negs if i - offset != t]  # the target's own id is no negative
            out.append(np.log(np.exp(logits).sum()) - pos)
        return (out[0] + out[1]) / 2 + out[2]

    assert _loss("sampled_ce", batch) == pytest.approx(expected(False), rel=1e-6)
    assert _loss("sampled_ce", batch, logq_correction=True) == pytest.approx(expected(True), rel=1e-6)
    assert expected(True) != pytest.approx(expected(False))


def test_sampled_ce_with_every_item_as_a_negative_equals_ce():
    every = {"shared_negatives": torch.tensor([[1, 2, 3], [4, 5, 6]])}
    assert _loss("sampled_ce", every) == pytest.approx(_loss("ce", {}), rel=1e-6)


@pytest.mark.parametrize("kind", ["bce", "ce", "sampled_ce"])
def test_epoch_loss_norm_sums_each_domain_and_divides_by_its_norm(kind):
    batch = {"negatives": torch.tensor([[2, 1, 4]]), "shared_negatives": torch.tensor([[1, 2], [5, 6]])}
    # Two A targets and one B target: with norms (2, 1) the epoch form equals the batch mean ...
    assert _loss(kind, {**batch, "target_norm": torch.tensor([2.0, 1.0])}) == pytest.approx(_loss(kind, batch), rel=1e-6)
    # ... and with norms (4, 2), a batch holding half its epoch's share, it is half of it.
    assert _loss(kind, {**batch, "target_norm": torch.tensor([4.0, 2.0])}) == pytest.approx(_loss(kind, batch) / 2, rel=1e-6)


def test_chimeric_training_negatives_need_bce():
    with pytest.raises(ValueError, match="bce"):
        LossConfig("ce", chimeric_negatives=True)
    with pytest.raises(ValueError, match="train.loss"):
        LossConfig("bpr")


# ----- every model, every objective: one epoch ----------------------------------------------


@pytest.fixture(scope="module")
def small_world():
    ds = synth_dataset(0, n_users=60)
    split = ds.split()
    rng = np.random.default_rng(0)
    vectors = SimpleNamespace(
        global_pca=rng.normal(size=(ds.n_items_total + 1, 16)).astype(np.float32),
        local_pca=tuple(rng.normal(size=(n + 1, 8)).astype(np.float32) for n in ds.n_items),
    )
    profiles = rng.normal(size=(ds.n_users, 8)).astype(np.float32)
    info = {"domains": list(ds.domains), "n_items": list(ds.n_items), "n_users": ds.n_users}
    return ds, split, vectors, profiles, info


LOSS_CASES = [("bce", {}), ("ce", {}), ("sampled_ce", {"num_negatives": 16}),
              ("sampled_ce", {"num_negatives": 16, "logq_correction": True})]
SEQUENCE_MODELS = [n for n in ("llm4cdsr", "sasrec_mixed", "sasrec_mixed_llm", "sasrec_single", "gru4rec") if n in MODEL_NAMES]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
@pytest.mark.parametrize("kind,extra", LOSS_CASES)
def test_one_epoch_of_every_sequence_model_under_every_objective(small_world, name, kind, extra):
    ds, split, vectors, profiles, info = small_world
    cfg = load_config()["model"]
    cfg.update(name=name, hidden=8, max_len=12, dropout=0.1)
    loss = LossConfig(kind, **extra)
    torch.manual_seed(0)
    model = build_model(cfg, info, vectors, profiles, loss=loss)
    batches = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 16, seed=0, loss=loss)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for index, users in enumerate(batches.plan(1)):
        out = model(batches.build(users, 1, index))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert all(np.isfinite(losses)) and losses[0] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batches_carry_what_each_objective_needs(small_world):
    ds, split, *_ = small_world
    def batch(loss):
        tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 16, seed=0, loss=loss)
        return tb.build(tb.plan(0)[0], 0, 0)

    shared = batch(LossConfig("sampled_ce", num_negatives=40))["shared_negatives"]
    assert shared.shape == (2, 40)
    assert bool((shared[0] >= 1).all() and (shared[0] <= ds.n_items[0]).all())
    assert bool((shared[1] > ds.n_items[0]).all() and (shared[1] <= ds.n_items_total).all())
    assert "item_logq" in batch(LossConfig("sampled_ce", logq_correction=True))
    chimeric = batch(LossConfig("bce", chimeric_negatives=True))
    has = chimeric["targets"] > 0
    assert bool((chimeric["chimeric_negatives"][has] > 0).all())
    assert not torch.equal(chimeric["chimeric_negatives"][has], chimeric["negatives"][has])
    # the second negative is of the target's domain, like the first
    same = (chimeric["chimeric_negatives"][has] > ds.n_items[0]) == (chimeric["targets"][has] > ds.n_items[0])
    assert bool(same.all())


# ----- the authors' chimeric ruler ----------------------------------------------------------


class TwoPart(Recommender):
    """A fixed two-part scorer: K = 2, the local part is column 1."""

    def __init__(self):
        super().__init__()
        self.n_items, self.max_len, self.score_split = (3, 3), 5, 1
        self.tables = {0: torch.tensor([[0.0, 0.0], [2.0, 2.0], [3.0, 0.0], [0.0, 3.0]]), 1: torch.zeros(4, 2)}

    def user_states(self, mixed_seq, user_idx=None):
        return torch.ones(mixed_seq.shape[0], 2, 2)

    def item_table(self, domain):
        return self.tables[domain]


def test_chimeric_scoring_takes_each_part_of_a_negative_from_another_item():
    # Target A1 scores 2 + 2 = 4. Negative A2 alone scores 3, A3 alone 3: the target ranks first.
    # The authors' ruler scores negative j as global(A2) + local(A3) = 3 + 3 = 6: the target drops.
    inputs = EvalInputs(np.array([0, 1]), np.array([3]), np.array([1]))
    fair = rank_targets(TwoPart(), inputs, (3, 3), np.array([[2]]), ("sampled",))["sampled"]
    chimeric = rank_targets(TwoPart(), inputs, (3, 3), np.array([[2]]), ("sampled",),
                            local_negatives=np.array([[3]]))["sampled"]
    assert fair.tolist() == [0.0] and chimeric.tolist() == [1.0]
    one_part = TwoPart()
    one_part.score_split = None  # a model whose score has one part ignores the second set
    assert rank_targets(one_part, inputs, (3, 3), np.array([[2]]), ("sampled",),
                        local_negatives=np.array([[3]]))["sampled"].tolist() == [0.0]


# ----- the authors' block and the null key --------------------------------------------------


def _allow_padding_keys(real, causal):
    """The authors' attention: no key-padding mask, so real queries also see the padding keys."""
    length = real.shape[1]
    allowed = torch.ones(real.shape[0], length, length, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
    return (allowed | torch.eye(length, dtype=torch.bool))[:, None]


@pytest.mark.parametrize("block", ["prenorm", "authors"])
@pytest.mark.parametrize("causal", [True, False])
def test_null_key_equals_attending_to_explicit_padding_keys(monkeypatch, block, causal):
    torch.manual_seed(0)
    cfg = EncoderConfig(hidden=8, blocks=2, heads=2, dropout=0.0, max_len=9, causal=causal, block=block, null_key=True)
    encoder = SASRecEncoder(cfg).eval()
    with torch.no_grad():  # biases away from zero, so that padding keys carry something
        for name, p in encoder.named_parameters():
            if p.dim() == 1:
                p.normal_()
    lengths = [3, 5, 1]
    vectors = torch.randn(3, 5, 8)
    real = torch.tensor([[i >= 5 - n for i in range(5)] for n in lengths])  # (3, 5), left-padded to 5
    vectors = vectors * real[..., None]
    null_out = encoder(vectors, real)  # dynamically padded to 5, one null key per row
    null_last = encoder(vectors, real, last_only=True)

    plain = SASRecEncoder(EncoderConfig(**{**cfg.__dict__, "null_key": False})).eval()
    plain.load_state_dict(encoder.state_dict())
    padded = torch.cat([torch.zeros(3, 4, 8), vectors], dim=1)  # (3, 9): padded to max_len
    padded_real = torch.cat([torch.zeros(3, 4, dtype=torch.bool), real], dim=1)
    monkeypatch.setattr(sasrec, "attention_mask", _allow_padding_keys)
    explicit = plain(padded, padded_real)[:, 4:]  # (3, 5)
    torch.testing.assert_close(null_out, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(null_last, explicit[:, -1], atol=1e-5, rtol=1e-5)
    monkeypatch.undo()
    assert not torch.allclose(plain(vectors, real), null_out, atol=1e-3)  # the padding keys matter


def test_null_key_dropout_keeps_each_padding_key_on_its_own():
    # Under dropout the n explicit padding keys are dropped one by one; the null key must give the
    # same distribution of outputs, not drop all n at once (same mean, far larger variance).
    torch.manual_seed(0)
    samples, n_padding, p, dim = 40000, 40, 0.5, 2
    q = torch.randn(1, 1, 1, dim).expand(samples, -1, -1, -1)  # (S, nh, Lq, hd): one query, many draws
    real_k, real_v = torch.randn(1, 1, 3, dim), torch.randn(1, 1, 3, dim)
    pad_k, pad_v = torch.randn(1, 1, 1, dim), torch.randn(1, 1, 1, dim)
    count = torch.full((samples,), float(n_padding))
    k = torch.cat([pad_k, real_k], dim=2).expand(samples, -1, -1, -1)
    v = torch.cat([pad_v, real_v], dim=2).expand(samples, -1, -1, -1)
    bias = torch.cat([torch.tensor([math.log(n_padding)]), torch.zeros(3)]).view(1, 1, 1, 4)
    null = sasrec._attend_dropping_padding_keys(q, k, v, bias, count, p)

    explicit_k = torch.cat([pad_k.expand(-1, -1, n_padding, -1), real_k], dim=2)
    explicit_v = torch.cat([pad_v.expand(-1, -1, n_padding, -1), real_v], dim=2)
    weights = torch.softmax(q @ explicit_k.transpose(-2, -1) / math.sqrt(dim), dim=-1)
    explicit = torch.nn.functional.dropout(weights, p) @ explicit_v
    whole_key = torch.nn.functional.dropout(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim) + bias, -1), p) @ v

    torch.testing.assert_close(null.mean(0), explicit.mean(0), atol=0.02, rtol=0.02)
    torch.testing.assert_close(null.var(0), explicit.var(0), atol=0.0, rtol=0.06)
    assert (whole_key.var(0) > 2 * explicit.var(0)).all()  # what dropping the null key whole would give
    # no padding (a history of max_len): the null key takes nothing and draws no NaN
    no_null = torch.tensor([float("-inf"), 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    empty = sasrec._attend_dropping_padding_keys(q[:4], k[:4], v[:4], no_null, torch.zeros(4), p)
    assert torch.isfinite(empty).all()


def test_authors_block_layout():
    torch.manual_seed(0)
    cfg = EncoderConfig(hidden=4, blocks=1, heads=1, dropout=0.0, max_len=3, causal=False, block="authors")
    block = sasrec.Block(cfg).eval()
    x = torch.randn(1, 3, 4)
    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    q = block.ln_attn(x)
    attn = torch.nn.functional.scaled_dot_product_attention(
        *(t.view(1, 1, 3, 4) for t in (torch.nn.functional.linear(q, *_part(block, 0)),
                                       torch.nn.functional.linear(x, *_part(block, 1)),
                                       torch.nn.functional.linear(x, *_part(block, 2)))))
    h = block.ln_ffn(q + block.attn.proj(attn.view(1, 3, 4)))
    expected = h + block.ffn(h)
    torch.testing.assert_close(block(x, mask), expected)


def _part(block, i):
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    return w[4 * i : 4 * (i + 1)], b[4 * i : 4 * (i + 1)]


def test_the_chimeric_ruler_saves_a_second_independent_candidate_set(tmp_path):
    ds = synth_dataset(0, n_users=80)
    split = ds.split()
    plain = load_or_draw(tmp_path, ds, split, 10, seed=3)
    assert set(plain) == {"valid", "test"}
    chimeric = load_or_draw(tmp_path, ds, split, 10, seed=3, chimeric=True)
    for stage in ("valid", "test"):
        assert np.array_equal(chimeric[stage], plain[stage])  # the first set is the one every model uses
        second = chimeric[f"{stage}_local"]
        assert second.shape == plain[stage].shape and not np.array_equal(second, plain[stage])
        assert (ds.domain_of(second) == ds.domain_of(plain[stage])).all()  # same rule: the target's domain
    again = load_or_draw(tmp_path, ds, split, 10, seed=3, chimeric=True)  # saved, not redrawn
    assert np.array_equal(again["test_local"], chimeric["test_local"])


@pytest.mark.parametrize("positions", ["first", "last"])
def test_both_position_schemes_ignore_how_much_a_batch_is_padded(positions):
    torch.manual_seed(0)
    cfg = EncoderConfig(hidden=8, blocks=2, heads=1, dropout=0.0, max_len=9, positions=positions, block="authors", null_key=True)
    encoder = SASRecEncoder(cfg).eval()
    real = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    vectors = torch.randn(2, 5, 8) * real[..., None]
    wider = torch.cat([torch.zeros(2, 3, 8), vectors], dim=1)
    wider_real = torch.cat([torch.zeros(2, 3, dtype=torch.bool), real], dim=1)
    torch.testing.assert_close(encoder(wider, wider_real)[:, 3:], encoder(vectors, real), atol=1e-5, rtol=1e-5)
    last = SASRecEncoder(EncoderConfig(**{**cfg.__dict__, "positions": "last"})).eval()
    first = SASRecEncoder(EncoderConfig(**{**cfg.__dict__, "positions": "first"})).eval()
    first.load_state_dict(last.state_dict())
    # a short history: the two schemes give its items other positions, so other states
    assert not torch.allclose(last(vectors, real)[0, -1], first(vectors, real)[0, -1])
