"""Three switches that reproduce smaller differences of the authors' code, for comparison only:

    train.global_negative_domain  target | input   the global part's negative of a chimeric pair
    model.first_local_target      keep | drop      a target whose domain has no earlier item
    model.empty_local_state       zero | ln_bias   the local state of a domain without items

Each test below fails when its switch is ignored; the defaults keep the earlier losses exactly.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from llm4cdsr.config import PRESET_DIR, ConfigError, load_config
from llm4cdsr.data.synth import synth_dataset
from llm4cdsr.models import build_model
from llm4cdsr.models.base import LossConfig
from llm4cdsr.training.batching import TrainBatches
from llm4cdsr.training.run import load_run, train_run
from llm4cdsr.validation import validate_config

torch.set_num_threads(1)
N_ITEMS = (10, 14)  # A: 1..10, B: 11..24
H = 8
INFO = {"domains": ["a", "b"], "n_items": list(N_ITEMS), "n_users": 3, "global_dim": 12, "profile_dim": 8}
PROFILES = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)


def _vectors(seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        global_pca=rng.normal(scale=0.3, size=(sum(N_ITEMS) + 1, 12)).astype(np.float32),
        local_pca=tuple(rng.normal(scale=0.3, size=(n + 1, H)).astype(np.float32) for n in N_ITEMS),
    )


def _model(loss=None, **over):
    cfg = load_config()["model"]
    cfg.update(hidden=H, max_len=10, dropout=0.2, beta=1.0, freeze_local=True)
    cfg.update(over)
    torch.manual_seed(0)
    return build_model(cfg, INFO, _vectors(), PROFILES, loss=loss).eval()  # eval: no dropout


def _batch():
    """Three users. Row 0: A B A B (its first B target, step 2, has no earlier B item); row 1: A only
    (no B state at all); row 2: B B A B B A (its first A target, step 1, has no earlier A item)."""
    return {
        "mixed_seq": torch.tensor([[0, 0, 1, 12, 3, 15], [0, 2, 4, 6, 8, 9], [11, 13, 5, 14, 16, 7]]),
        "targets": torch.tensor([[0, 0, 12, 3, 15, 4], [0, 4, 6, 8, 9, 10], [13, 5, 14, 16, 7, 17]]),
        # one negative per step of the TARGET's domain, and a second one (chimeric local part)
        "negatives": torch.tensor([[0, 0, 20, 7, 18, 6], [0, 1, 3, 5, 7, 1], [19, 10, 21, 22, 2, 23]]),
        "chimeric_negatives": torch.tensor([[0, 0, 22, 9, 13, 2], [0, 3, 1, 2, 5, 3], [21, 8, 23, 13, 4, 20]]),
        # the global part's negative of the INPUT item's domain (global_negative_domain=input)
        "global_negatives": torch.tensor([[0, 0, 6, 19, 8, 24], [0, 5, 1, 3, 2, 7], [18, 24, 9, 20, 22, 1]]),
        "shared_negatives": torch.tensor([[1, 2, 3, 7], [11, 15, 20, 24]]),
        "reg_items": torch.tensor([[1, 12], [2, 0], [5, 11]]),
        "user_idx": torch.tensor([0, 1, 2]),
    }


def _steps(batch):
    """(row, col, target, domain, has an earlier item of the target's domain) of every step with a
    target, in row-major order, computed by hand from the lists."""
    out = []
    for r, (seq, tgt) in enumerate(zip(batch["mixed_seq"].tolist(), batch["targets"].tolist())):
        for c, t in enumerate(tgt):
            if t == 0:
                continue
            d = int(t > N_ITEMS[0])
            earlier = any(i > 0 and int(i > N_ITEMS[0]) == d for i in seq[: c + 1])
            out.append((r, c, t, d, earlier))
    return out


def _local(global_id):
    return global_id - N_ITEMS[0] if global_id > N_ITEMS[0] else global_id


def _bce(pos, neg, domains):
    pair = F.softplus(-pos) + F.softplus(neg)
    return sum(pair[domains == d].mean() for d in (0, 1) if bool((domains == d).any()))


def _hand_bce(model, batch, steps, global_neg_key="negatives", local_neg_key="negatives"):
    """Domain-balanced BCE over `steps`, each logit written out: <global query, global vector> +
    <local query, local vector>, with the negative's two parts taken from the named batch keys."""
    queries = _keep_queries(model, batch)
    index = {(r, c): i for i, (r, c, *_) in enumerate(_steps(batch))}
    pos, neg = [], []
    for r, c, t, d, _ in steps:
        q = queries[index[(r, c)]]
        pos.append(q @ model.item_vectors(d, torch.tensor(_local(t))))
        g, loc = int(batch[global_neg_key][r, c]), int(batch[local_neg_key][r, c])
        g_vec = model.item_vectors(int(g > N_ITEMS[0]), torch.tensor(_local(g)))[:H]
        l_vec = model.item_vectors(d, torch.tensor(_local(loc)))[H:]
        neg.append(q[:H] @ g_vec + q[H:] @ l_vec)
    return _bce(torch.stack(pos), torch.stack(neg), torch.tensor([s[3] for s in steps]))


def _keep_queries(model, batch):
    """Every step's query as `keep` forms it (same weights, first_local_target=keep)."""
    keep = model.cfg.first_local_target
    model.cfg.first_local_target = "keep"
    try:
        queries, *_ = model.step_queries(batch["mixed_seq"], batch["targets"])
    finally:
        model.cfg.first_local_target = keep
    return queries


# ----- train.global_negative_domain -------------------------------------------------------------


def test_global_negative_domain_needs_chimeric_bce_and_a_known_value():
    with pytest.raises(ValueError, match="train.global_negative_domain.*chimeric_negatives=true"):
        LossConfig("bce", global_negative_domain="input")
    with pytest.raises(ValueError, match="train.global_negative_domain must be one of"):
        LossConfig("bce", chimeric_negatives=True, global_negative_domain="source")
    section = {"loss": "bce", "chimeric_negatives": True, "global_negative_domain": "input"}
    assert LossConfig.from_section(section).input_domain_negatives
    assert not LossConfig.from_section({"loss": "bce", "chimeric_negatives": True}).input_domain_negatives


def test_input_domain_global_negatives_are_drawn_from_the_input_items_domain():
    ds = synth_dataset(0, n_users=60)
    split = ds.split()
    loss = LossConfig("bce", chimeric_negatives=True, global_negative_domain="input")
    tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 32, seed=0, loss=loss)
    n_a = ds.n_items[0]
    crossing = 0
    for index, users in enumerate(tb.plan(0)):
        b = tb.build(users, 0, index)
        has = b["targets"] > 0
        glob, inputs, targets = b["global_negatives"][has], b["mixed_seq"][has], b["targets"][has]
        assert bool((glob > 0).all())
        assert torch.equal(glob > n_a, inputs > n_a)  # the global part: the input item's domain
        for key in ("negatives", "chimeric_negatives"):  # the local part (and one-part models): the target's
            assert torch.equal(b[key][has] > n_a, targets > n_a)
        other = (inputs > n_a) != (targets > n_a)
        crossing += int(other.sum())
        # never an item of the user's training history
        rows = has.nonzero()[:, 0]
        assert not tb.membership.contains(users[rows.numpy()], glob.numpy()).any()
    assert crossing > 0  # steps whose input is of the other domain exist, so the test can fail
    plain = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 32, seed=0,
                         loss=LossConfig("bce", chimeric_negatives=True))
    assert "global_negatives" not in plain.build(plain.plan(0)[0], 0, 0)


def test_input_domain_negatives_score_the_global_part_on_the_input_domain_item():
    batch = _batch()
    steps = _steps(batch)
    assert any(s[3] != int(int(batch["global_negatives"][s[0], s[1]]) > N_ITEMS[0]) for s in steps)
    model = _model(LossConfig("bce", chimeric_negatives=True, global_negative_domain="input"), alpha=0.0, beta=0.0)
    with torch.no_grad():
        rec = model(batch)["rec"]
        expected = _hand_bce(model, batch, steps, global_neg_key="global_negatives", local_neg_key="chimeric_negatives")
        target = _hand_bce(model, batch, steps, global_neg_key="negatives", local_neg_key="chimeric_negatives")
        assert float(rec) == pytest.approx(float(expected), rel=1e-5)
        assert float(rec) != pytest.approx(float(target), rel=1e-3)
        # "negatives" (the target-domain draw) plays no part; "global_negatives" does
        changed = {**batch, "negatives": batch["chimeric_negatives"]}
        assert float(model(changed)["rec"]) == float(rec)
        model.loss = LossConfig("bce", chimeric_negatives=True)  # the default, target: the other way round
        assert float(model(batch)["rec"]) == pytest.approx(float(target), rel=1e-5)


# ----- model.first_local_target -----------------------------------------------------------------


def test_drop_leaves_out_every_step_whose_target_domain_has_no_earlier_item():
    batch = _batch()
    steps = _steps(batch)
    first = [s for s in steps if not s[4]]
    assert [(r, c) for r, c, *_ in first] == [(0, 2), (2, 1)]  # row 0's first B target, row 2's first A target
    keep, drop = _model(), _model(first_local_target="drop")
    with torch.no_grad():
        q_keep, pos_keep, _, _, mask_keep = keep.step_queries(batch["mixed_seq"], batch["targets"])
        q_drop, pos_drop, dom_drop, _, mask_drop = drop.step_queries(batch["mixed_seq"], batch["targets"])
    assert torch.equal(mask_keep, batch["targets"] > 0)
    kept = torch.tensor([s[4] for s in steps])
    assert torch.equal(pos_drop, pos_keep[kept]) and len(pos_drop) == len(steps) - 2
    assert dom_drop.tolist() == [s[3] for s in steps if s[4]]
    torch.testing.assert_close(q_drop, q_keep[kept], rtol=0, atol=0)
    assert mask_drop[0, 2].item() is False and mask_drop[2, 1].item() is False
    assert int(mask_drop.sum()) == len(pos_drop)
    # today (keep) such a step has local state 0: its logit is the global logit alone
    assert not q_keep[~kept][:, H:].any()


@pytest.mark.parametrize("chimeric", [False, True])
def test_drop_loss_equals_the_hand_computed_loss_over_the_kept_steps(chimeric):
    batch = _batch()
    steps = _steps(batch)
    loss = LossConfig("bce", chimeric_negatives=chimeric)
    local_key = "chimeric_negatives" if chimeric else "negatives"
    drop, keep = _model(loss, first_local_target="drop"), _model(loss)
    with torch.no_grad():
        out = drop(batch)
        expected = _hand_bce(drop, batch, [s for s in steps if s[4]], local_neg_key=local_key)
        everything = _hand_bce(drop, batch, steps, local_neg_key=local_key)
        assert float(out["rec"]) == pytest.approx(float(expected), rel=1e-5)
        assert float(keep(batch)["rec"]) == pytest.approx(float(everything), rel=1e-5)
        assert float(expected) != pytest.approx(float(everything), rel=1e-5)
        # a dropped step contributes nothing: its negatives may be anything
        changed = {k: v.clone() for k, v in batch.items()}
        for key in ("negatives", "chimeric_negatives"):
            changed[key][0, 2], changed[key][2, 1] = 11, 1
        assert float(drop(changed)["rec"]) == float(out["rec"])
        assert float(keep(changed)["rec"]) != pytest.approx(float(keep(batch)["rec"]), rel=1e-4)


@pytest.mark.parametrize("kind", ["ce", "sampled_ce"])
def test_drop_applies_to_the_softmax_objectives_too(kind):
    batch = _batch()
    drop = _model(LossConfig(kind, num_negatives=4), first_local_target="drop", alpha=0.0, beta=0.0)
    keep = _model(LossConfig(kind, num_negatives=4), alpha=0.0, beta=0.0)
    kept_rows = batch["mixed_seq"][[1]], batch["targets"][[1]]  # row 1 (A only, its first item is no target) drops nothing
    with torch.no_grad():
        assert float(drop(batch)["rec"]) != pytest.approx(float(keep(batch)["rec"]), rel=1e-4)
        one = {**batch, "mixed_seq": kept_rows[0], "targets": kept_rows[1], "user_idx": torch.tensor([1])}
        assert float(drop(one)["rec"]) == float(keep(one)["rec"])


def test_drop_of_every_step_gives_zero_with_a_graph():
    model = _model(first_local_target="drop", alpha=0.0, beta=0.0).train()
    batch = {"mixed_seq": torch.tensor([[1], [12]]), "targets": torch.tensor([[12], [3]]),
             "negatives": torch.tensor([[13], [4]]), "reg_items": torch.tensor([[1, 12], [3, 12]]),
             "user_idx": torch.tensor([0, 1])}
    out = model(batch)
    assert float(out["loss"].detach()) == 0.0
    out["loss"].backward()  # no "does not require grad" error


# ----- model.empty_local_state ------------------------------------------------------------------


def _with_ln_biases(model):
    """LayerNorm biases start at 0, where ln_bias and zero would agree: give them values."""
    with torch.no_grad():
        for branch in model.local:
            branch.encoder.ln_final.bias.normal_()
    return model


def test_ln_bias_is_the_state_of_a_domain_without_items_in_scoring():
    batch = _batch()
    ln, zero = _with_ln_biases(_model(empty_local_state="ln_bias")), _model()
    zero.load_state_dict(ln.state_dict())
    bias_b = ln.local[1].encoder.ln_final.bias
    assert torch.equal(ln.local[1].encoder.ln_final(torch.zeros(H)), bias_b)  # LN(0) = bias: the authors' all-padding state
    with torch.no_grad():
        s_ln, s_zero = ln.user_states(batch["mixed_seq"]), zero.user_states(batch["mixed_seq"])
    assert torch.equal(s_ln[1, 1, H:], bias_b)  # row 1 has no B item
    assert not s_zero[1, 1, H:].any()
    s_ln[1, 1, H:] = 0
    torch.testing.assert_close(s_ln, s_zero, rtol=0, atol=0)  # nothing else changes
    # the score of a B candidate for that user adds <bias, local vector>
    with torch.no_grad():
        diff = ln.score(ln.user_states(batch["mixed_seq"]), 1)[1, 1:] - zero.score(s_zero, 1)[1, 1:]
    torch.testing.assert_close(diff, ln.local[1].items.weight[1:] @ bias_b, rtol=1e-5, atol=1e-5)


def test_ln_bias_is_the_state_before_the_first_item_of_a_domain_in_training():
    batch = _batch()
    steps = _steps(batch)
    ln, zero = _with_ln_biases(_model(empty_local_state="ln_bias")), _model()
    zero.load_state_dict(ln.state_dict())
    q_ln, *_ = ln.step_queries(batch["mixed_seq"], batch["targets"])
    with torch.no_grad():
        q_zero, *_ = zero.step_queries(batch["mixed_seq"], batch["targets"])
    for i, (r, c, t, d, earlier) in enumerate(steps):
        if earlier:
            torch.testing.assert_close(q_ln[i].detach(), q_zero[i], rtol=0, atol=0)
        else:
            torch.testing.assert_close(q_ln[i, H:].detach(), ln.local[d].encoder.ln_final.bias.detach(), rtol=0, atol=0)
            torch.testing.assert_close(q_ln[i, :H].detach(), q_zero[i, :H], rtol=0, atol=0)
    first_b = next(i for i, s in enumerate(steps) if not s[4] and s[3] == 1)
    bias = ln.local[1].encoder.ln_final.bias
    (grad,) = torch.autograd.grad(q_ln[first_b, H:].sum(), bias)  # it learns, as LN(0) does
    torch.testing.assert_close(grad, torch.ones(H))
    with torch.no_grad():
        assert float(ln(batch)["rec"]) != pytest.approx(float(zero(batch)["rec"]), rel=1e-4)


def test_bad_model_switch_values_name_their_key():
    with pytest.raises(ValueError, match="model.first_local_target"):
        _model(first_local_target="skip")
    with pytest.raises(ValueError, match="model.empty_local_state"):
        _model(empty_local_state="bias")


# ----- config: validation, the authors' preset, defaults ----------------------------------------


@pytest.mark.parametrize("override,key", [
    ("model.first_local_target=skip", "model.first_local_target"),
    ("model.empty_local_state=bias", "model.empty_local_state"),
    ("train.global_negative_domain=source", "train.global_negative_domain"),
])
def test_config_validation_names_the_bad_key(override, key):
    with pytest.raises(ConfigError, match=key):
        validate_config(load_config([], [override]))


def test_input_domain_negatives_without_chimeric_bce_is_a_config_error():
    with pytest.raises(ConfigError, match="train.global_negative_domain=input.*train.chimeric_negatives=true"):
        validate_config(load_config([], ["train.global_negative_domain=input", "train.loss=bce"]))
    validate_config(load_config([], ["train.global_negative_domain=input", "train.loss=bce", "train.chimeric_negatives=true"]))


def test_the_defaults_are_ours_and_the_authors_preset_takes_all_three():
    cfg = load_config()
    assert (cfg["model"]["first_local_target"], cfg["model"]["empty_local_state"], cfg["train"]["global_negative_domain"]) \
        == ("keep", "zero", "target")
    authors = load_config(["food-kitchen-authors"])
    assert (authors["model"]["first_local_target"], authors["model"]["empty_local_state"],
            authors["train"]["global_negative_domain"]) == ("drop", "ln_bias", "input")


# Losses of the default switches on fixed weights and batches, as computed before the switches
# existed (commit 0d34459): the defaults must keep them.
BEFORE = {"bce": 5.091930866241455, "chimeric": 4.62547492980957, "sampled_ce": 5.332696437835693,
          "ce": 7.630245685577393}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_default_switches_keep_the_earlier_losses(name):
    kind = "bce" if name in ("bce", "chimeric") else name
    loss = LossConfig(kind, num_negatives=4, chimeric_negatives=name == "chimeric")
    batch = _batch()
    del batch["global_negatives"]  # the default batches have none
    implicit = _model(loss)
    explicit = _model(loss, first_local_target="keep", empty_local_state="zero")
    with torch.no_grad():
        value = implicit(batch)["loss"]
        assert float(value) == pytest.approx(BEFORE[name], rel=1e-6)
        assert torch.equal(explicit(batch)["loss"], value)


def test_default_batches_are_drawn_as_before():
    ds = synth_dataset(0, n_users=60)
    split = ds.split()
    # bucket_pool 64: the class default when these figures were recorded (the plan's order is part of them)
    tb = TrainBatches(split.train_offsets, split.train_items, ds.n_items, 12, 16, seed=0, bucket_pool=64,
                      loss=LossConfig("bce", chimeric_negatives=True))
    b = tb.build(tb.plan(1)[0], 1, 0)
    # align_pairs is no draw: the random streams are those of before it was added.
    assert set(b) == {"mixed_seq", "targets", "negatives", "chimeric_negatives", "reg_items", "align_pairs", "user_idx"}
    assert (int(b["negatives"].sum()), int(b["chimeric_negatives"].sum()), int(b["reg_items"].sum())) == (21905, 21197, 2807)


# ----- one epoch with the authors' preset ---------------------------------------------------------


def test_one_epoch_with_the_authors_model_and_train_sections(synth_ds, tmp_path):
    preset = yaml.safe_load((PRESET_DIR / "food-kitchen-authors.yaml").read_text(encoding="utf-8"))
    assert {"first_local_target", "empty_local_state"} <= set(preset["model"])
    assert "global_negative_domain" in preset["train"]
    hidden = 16
    cfg = load_config(["food-kitchen-authors"], [
        f"workspace={tmp_path}", f"model.hidden={hidden}", "model.max_len=20", "model.dropout=0.2", f"embed.local_dim={hidden}",
        "train.batch_size=64", "train.progress=false", "train.epochs=1", "eval.num_negatives=30", "eval.batch_size=128"])
    assert cfg["model"]["block"] == "authors" and cfg["train"]["loss"] == "bce" and cfg["eval"]["chimeric_negatives"]
    rng = np.random.default_rng(0)
    vectors = SimpleNamespace(
        global_pca=rng.normal(scale=0.3, size=(synth_ds.n_items_total + 1, 24)).astype(np.float32),
        local_pca=tuple(rng.normal(scale=0.3, size=(n + 1, hidden)).astype(np.float32) for n in synth_ds.n_items))
    profiles = rng.normal(size=(synth_ds.n_users, 12)).astype(np.float32)
    run_dir = tmp_path / "runs" / "authors"
    results = train_run(cfg, run_dir, synth_ds, item_vectors=vectors, profiles=profiles)
    assert results["best_epoch"] == 1 and results["sampled_scoring"].startswith("chimeric")
    for mode in ("sampled", "full"):
        for block in ("overall", *synth_ds.domains):
            assert 0.0 <= results["test"][mode][block]["ndcg@10"] <= 1.0
    model, saved, _ = load_run(run_dir)  # the saved config rebuilds the switches
    assert (model.cfg.first_local_target, model.cfg.empty_local_state) == ("drop", "ln_bias")
    assert saved["train"]["global_negative_domain"] == "input"
    a_only = torch.tensor([[0, 1, 2, 3]])  # no item of the second domain
    with torch.no_grad():
        states = model.user_states(a_only)
    torch.testing.assert_close(states[0, 1, hidden:], model.local[1].encoder.ln_final.bias, rtol=0, atol=0)
