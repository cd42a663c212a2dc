"""LLM4CDSR and the baselines as modules: subsequences, losses, switches, the scoring interface."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llm4cdsr.config import load_config
from llm4cdsr.models import (
    MODEL_NAMES,
    build_model,
    model_needs,
    model_shell,
    pad_histories,
)
from llm4cdsr.models.base import domain_subsequence, soft_contrastive_loss

torch.set_num_threads(1)
N_ITEMS = (10, 14)  # A: 1..10, B: 11..24
INFO = {"domains": ["a", "b"], "n_items": list(N_ITEMS), "n_users": 6, "global_dim": 12, "profile_dim": 8}


def _cfg(**over):
    cfg = load_config()["model"]
    cfg.update(hidden=8, max_len=10, dropout=0.2, beta=1.0, freeze_local=True)  # the authors' setting
    cfg.update(over)
    return cfg


def _vectors(seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        global_pca=rng.normal(scale=0.3, size=(sum(N_ITEMS) + 1, 12)).astype(np.float32),
        local_pca=tuple(rng.normal(scale=0.3, size=(n + 1, 8)).astype(np.float32) for n in N_ITEMS),
    )


PROFILES = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)


def _batch():
    mixed_seq = torch.tensor([[0, 0, 1, 12, 3, 15], [0, 2, 4, 6, 8, 9], [11, 13, 5, 14, 16, 7]])
    targets = torch.tensor([[0, 0, 12, 3, 15, 4], [0, 4, 6, 8, 9, 10], [13, 5, 14, 16, 7, 17]])
    negatives = torch.tensor([[0, 0, 20, 7, 18, 6], [0, 1, 3, 5, 7, 1], [19, 10, 21, 22, 2, 23]])
    reg_items = torch.tensor([[1, 12], [2, 0], [5, 11]])
    return {"mixed_seq": mixed_seq, "targets": targets, "negatives": negatives, "reg_items": reg_items, "user_idx": torch.tensor([0, 1, 2])}


def test_domain_subsequence_keeps_order_and_maps_each_step():
    seq = torch.tensor([[0, 0, 1, 12, 3, 15], [11, 13, 5, 14, 16, 7]])
    local_b, last_b = domain_subsequence(seq, 10, 1)
    assert local_b.tolist() == [[0, 0, 2, 5], [1, 3, 4, 6]]
    assert last_b.tolist() == [[-1, -1, -1, 2, 2, 3], [0, 1, 1, 2, 3, 3]]
    local_a, last_a = domain_subsequence(seq, 10, 0)
    assert local_a.tolist() == [[1, 3], [5, 7]]
    assert last_a.tolist() == [[-1, -1, 0, 0, 1, 1], [-1, -1, 0, 0, 0, 1]]
    empty, cols = domain_subsequence(torch.tensor([[0, 11, 12]]), 10, 0)
    assert empty.tolist() == [[0]] and cols.tolist() == [[-1, -1, -1]]


def test_soft_contrastive_loss_follows_the_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    tau = 0.7
    logits = x @ y.T / tau
    sim = (x @ x.T + y @ y.T) / 2 * tau
    targets = np.exp(sim) / np.exp(sim).sum(1, keepdims=True)
    log_rows = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    log_cols = logits.T - np.log(np.exp(logits.T).sum(1, keepdims=True))
    expected = np.mean((-(targets * log_rows).sum(1) - (targets.T * log_cols).sum(1)) / 2)
    got = soft_contrastive_loss(torch.tensor(x), torch.tensor(y), tau)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_loss_parts_and_skipped_item_regularisation():
    torch.manual_seed(0)
    model = build_model(_cfg(), INFO, _vectors(), PROFILES)
    with torch.no_grad():
        out = model(_batch())
    assert set(out) == {"loss", "rec", "reg", "user", "terms"} and set(out["terms"]) == {"rec", "reg", "user"}
    assert float(out["loss"]) == pytest.approx(float(out["rec"] + 0.1 * out["reg"] + 1.0 * out["user"]), rel=1e-5)
    batch = _batch()
    batch["reg_items"][:, 1] = 0  # nobody has both domains: the authors' code gives NaN here
    out = model(batch)
    assert "reg" not in out and torch.isfinite(out["loss"])


def _step_logits(model, batch):
    """Each step's training logit of its own target: <query, the target's item vector>."""
    queries, pos, domain, _, _ = model.step_queries(batch["mixed_seq"], batch["targets"])
    local = pos - N_ITEMS[0] * domain
    return torch.stack([(queries[i] * model.item_vectors(int(domain[i]), local[i])).sum() for i in range(len(pos))])


def test_training_logit_of_the_last_step_equals_the_score():
    torch.manual_seed(0)
    model = build_model(_cfg(), INFO, _vectors(), PROFILES).eval()
    batch = _batch()
    with torch.no_grad():
        pos_logits = _step_logits(model, batch)
        states = model.user_states(batch["mixed_seq"])
    per_row = (batch["targets"] > 0).sum(1).cumsum(0) - 1  # index of each row's last step in P
    for row in range(3):
        target = int(batch["targets"][row, -1])
        d = int(target > N_ITEMS[0])
        with torch.no_grad():
            score = model.score(states[row:row + 1], d)[0, target - (N_ITEMS[0] if d else 0)]
        assert float(pos_logits[per_row[row]]) == pytest.approx(float(score), rel=1e-5, abs=1e-5)


def test_changing_a_later_item_never_changes_earlier_step_logits():
    torch.manual_seed(0)
    model = build_model(_cfg(), INFO, _vectors(), PROFILES).eval()
    batch = _batch()
    row = batch["mixed_seq"][1:2].clone()  # [0, 2, 4, 6, 8, 9]: all domain A
    targets = batch["targets"][1:2]
    before = _step_logits(model, {"mixed_seq": row, "targets": targets})
    changed = row.clone()
    changed[0, 4] = 20  # a later item, even of the other domain, reshapes the local subsequences
    after = _step_logits(model, {"mixed_seq": changed, "targets": targets})
    torch.testing.assert_close(after[:3], before[:3])  # steps 1..3 (step 0 is padding)
    assert not torch.allclose(after[3:], before[3:])


def test_freeze_local_switch():
    frozen = build_model(_cfg(), INFO, _vectors(), PROFILES)
    learned = build_model(_cfg(freeze_local=False), INFO, _vectors(), PROFILES)
    random_init = build_model(_cfg(local_init="random"), INFO, _vectors(), PROFILES)
    assert not any(b.items.weight.requires_grad for b in frozen.local)
    assert all(b.items.weight.requires_grad for b in learned.local)
    assert all(b.items.weight.requires_grad for b in random_init.local)  # frozen noise would be useless
    np.testing.assert_allclose(frozen.local[1].items.weight.detach().numpy(), _vectors().local_pca[1])
    # the frozen table stays put through a step
    opt = torch.optim.Adam([p for p in frozen.parameters() if p.requires_grad])
    frozen(_batch())["loss"].backward()
    opt.step()
    np.testing.assert_allclose(frozen.local[1].items.weight.detach().numpy(), _vectors().local_pca[1])


def test_needs_and_errors():
    assert model_needs(_cfg()) == {"item_vectors", "profiles"}
    assert model_needs(_cfg(beta=0.0)) == {"item_vectors"}
    assert model_needs(_cfg(global_item="id", local_init="random", beta=0.0)) == set()
    assert model_needs(_cfg(name="sasrec_mixed_llm")) == {"item_vectors"}
    assert model_needs(_cfg(name="gru4rec")) == set()
    with pytest.raises(ValueError, match="profile"):
        build_model(_cfg(), INFO, _vectors(), None)
    with pytest.raises(ValueError, match="LLM"):
        build_model(_cfg(beta=0.0), INFO, None, None)
    with pytest.raises(ValueError, match="unknown model.name"):
        build_model(_cfg(name="bert4rec"), INFO)
    with pytest.raises(ValueError, match="local PCA width"):
        build_model(_cfg(hidden=16, beta=0.0), INFO, _vectors())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_scoring_interface(name):
    torch.manual_seed(0)
    model = build_model(_cfg(name=name), INFO, _vectors(), PROFILES)
    model.fit_statistics(np.array([0, 3]), np.array([1, 1, 12]))
    model.eval()
    seq = pad_histories([[1, 12, 3], [14], [2, 4, 6, 8, 9, 10, 1, 3, 5, 7, 11, 12]], model.max_len)
    assert seq.shape == (3, 10) and seq[1].tolist() == [0] * 9 + [14]
    with torch.no_grad():
        states = model.user_states(seq)
        for d in (0, 1):
            full = model.score(states, d)
            assert full.shape == (3, N_ITEMS[d] + 1) and torch.isinf(full[:, 0]).all()
            cands = torch.tensor([[1, 2, N_ITEMS[d]]] * 3)
            torch.testing.assert_close(model.score(states, d, cands), full.gather(1, cands))
    # a saved model loads into a shell built without vectors and scores the same
    shell = model_shell(_cfg(name=name), INFO)
    shell.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(shell.eval().score(shell.user_states(seq), 1), model.score(states, 1))


def test_score_vectors_scores_new_items_like_known_ones():
    torch.manual_seed(0)
    vectors = _vectors()
    model = build_model(_cfg(), INFO, vectors, PROFILES).eval()
    seq = pad_histories([[1, 12, 3], [14, 2]], model.max_len)
    with torch.no_grad():
        states = model.user_states(seq)
        known = model.score(states, 1)[:, [3, 7]]
        new = model.score_vectors(states, 1, torch.from_numpy(vectors.global_pca[[N_ITEMS[0] + 3, N_ITEMS[0] + 7]]),
                                  torch.from_numpy(vectors.local_pca[1][[3, 7]]))
    torch.testing.assert_close(new, known)
    with pytest.raises(NotImplementedError):
        build_model(_cfg(name="sasrec_mixed"), INFO).score_vectors(states, 1, torch.zeros(1, 12))


def test_single_domain_baseline_trains_one_domain_only():
    torch.manual_seed(0)
    model = build_model(_cfg(name="sasrec_single", single_domain="b"), INFO)
    assert model.eval_domains == (1,)
    out = model(_batch())
    out["loss"].backward()
    assert model.branches[0].items.weight.grad is None and model.branches[1].items.weight.grad is not None


def test_local_anchor_is_the_mean_squared_drift_from_the_pca_start():
    # Only learned PCA tables are anchored: frozen ones cannot drift, random ones have no start.
    assert build_model(_cfg(local_anchor=2.0), INFO, _vectors(), PROFILES).anchored == []
    assert build_model(_cfg(local_anchor=2.0, freeze_local=False, local_init="random"), INFO, _vectors(), PROFILES).anchored == []
    assert build_model(_cfg(freeze_local=False), INFO, _vectors(), PROFILES).anchored == []  # weight 0: off
    torch.manual_seed(0)
    model = build_model(_cfg(local_anchor=2.0, freeze_local=False), INFO, _vectors(), PROFILES)
    assert model.anchored == [0, 1] and float(model.local_anchor_loss().detach()) == 0.0  # at the start
    with torch.no_grad():
        model.local[0].items.weight[3] += 1.0  # one of A's 10 items moves by 1 in each of 8 dims
        model.local[1].items.weight[0] += 5.0  # padding row: not an item, not counted
    assert float(model.local_anchor_loss().detach()) == pytest.approx(8.0 / 10)
    out = model(_batch())
    assert float(out["anchor"]) == pytest.approx(0.8)
    assert float(out["loss"].detach()) == pytest.approx(float(out["rec"] + 0.1 * out["reg"] + out["user"] + 2.0 * out["anchor"]), rel=1e-5)
    # the pull: with no other loss, a step moves the moved row back toward its start
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    (2.0 * model.local_anchor_loss()).backward()
    opt.step()
    assert float(model.local_anchor_loss().detach()) < 0.8
    assert "local_start_0" not in model.state_dict()  # rebuilt from the workspace, not saved with the weights
