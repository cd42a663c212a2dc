"""C2DSR: the transition graphs, causality, train/score consistency, the saved graph, one epoch."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llm4cdsr.config import load_config
from llm4cdsr.models import build_model, model_shell, pad_histories
from llm4cdsr.models.base import LossConfig
from llm4cdsr.models.c2dsr import transition_edges
from llm4cdsr.training.run import load_run
from llm4cdsr.training.trainer import save_weights

torch.set_num_threads(1)
N_ITEMS = (3, 3)  # A: global 1..3, B: global 4..6 (local 1..3)
INFO = {"domains": ["a", "b"], "n_items": list(N_ITEMS), "n_users": 3}

# Three training histories (CSR). Transitions never cross users: 5 -> 2 (u0 -> u1) and
# 4 -> 6 (u1 -> u2) are not edges.
OFFSETS = np.array([0, 5, 9, 10])
ITEMS = np.array([1, 4, 2, 1, 5,   2, 1, 4, 4,   6])


def _cfg(**over):
    cfg = load_config()["model"]
    cfg.update(name="c2dsr", hidden=8, max_len=10, dropout=0.2)
    cfg.update(over)
    return cfg


def _model(n_items=N_ITEMS, loss=None, **over):
    torch.manual_seed(0)
    info = {"domains": ["a", "b"], "n_items": list(n_items), "n_users": 3}
    return build_model(_cfg(**over), info, loss=loss)


def test_graphs_match_the_hand_computed_row_normalised_transition_counts():
    model = _model()
    model.fit_statistics(OFFSETS, ITEMS)
    # mixed, global ids: 1->4 twice, 1->5 once; 2->1 twice; 4->2 once, 4->4 once
    mixed = np.zeros((7, 7), dtype=np.float32)
    mixed[1, 4], mixed[1, 5] = 2 / 3, 1 / 3
    mixed[2, 1] = 1.0
    mixed[4, 2], mixed[4, 4] = 0.5, 0.5
    np.testing.assert_allclose(model.graph.dense().numpy(), mixed, rtol=1e-6)
    # domain A subsequences [1, 2, 1], [2, 1]: 1->2 once, 2->1 twice
    a = np.zeros((4, 4), dtype=np.float32)
    a[1, 2], a[2, 1] = 1.0, 1.0
    np.testing.assert_allclose(model.domain_graphs[0].dense().numpy(), a, rtol=1e-6)
    # domain B, local ids: [1, 2], [1, 1], [3]: 1->2 once, 1->1 once
    b = np.zeros((4, 4), dtype=np.float32)
    b[1, 2], b[1, 1] = 0.5, 0.5
    np.testing.assert_allclose(model.domain_graphs[1].dense().numpy(), b, rtol=1e-6)


def test_transition_edges_are_sorted_row_major():
    edges, weights = transition_edges(np.array([0, 0, 0, 1, 1]), np.array([3, 1, 2, 2, 0]), 4)
    assert edges.tolist() == [[1, 2, 3], [2, 0, 1]] and weights.tolist() == [1.0, 1.0, 1.0]


def test_graph_encoder_propagates_over_successors():
    """One layer, no dropout: graph vector of item i = (E[i] + A E[i] + b) / 2."""
    model = _model().eval()
    model.fit_statistics(OFFSETS, ITEMS)
    with torch.no_grad():
        mixed, _ = model.tables()
        e, bias = model.items.weight, model.gnn.biases[0]
        expected_1 = e[1] + (e[1] + (2 / 3 * e[4] + 1 / 3 * e[5]) + bias) / 2  # table + graph encoding
        torch.testing.assert_close(mixed[1], expected_1)
        expected_3 = e[3] + (e[3] + bias) / 2  # item 3 has no successor
        torch.testing.assert_close(mixed[3], expected_3)


def _batch():
    mixed_seq = torch.tensor([[0, 0, 1, 4, 2, 5], [0, 2, 1, 3, 1, 2], [4, 5, 1, 6, 4, 3]])
    targets = torch.tensor([[0, 0, 4, 2, 5, 3], [0, 1, 3, 1, 2, 3], [5, 1, 6, 4, 3, 2]])
    return {"mixed_seq": mixed_seq, "targets": targets, "negatives": torch.zeros_like(targets)}


def test_a_later_item_never_changes_an_earlier_step():
    model = _model().eval()
    model.fit_statistics(OFFSETS, ITEMS)
    seq = _batch()["mixed_seq"]
    with torch.no_grad():
        h_before, steps_before, *_ = model.step_states(seq)
        changed = seq.clone()
        changed[:, 4] = torch.tensor([6, 5, 2])  # other items, two of them of the other domain
        h_after, steps_after, *_ = model.step_states(changed)
    torch.testing.assert_close(h_after[:, :4], h_before[:, :4])
    for d in (0, 1):
        torch.testing.assert_close(steps_after[d][:, :4], steps_before[d][:, :4])
    assert not torch.allclose(h_after[:, 4:], h_before[:, 4:])


def test_the_last_training_logit_is_the_score():
    model = _model().eval()
    model.fit_statistics(OFFSETS, ITEMS)
    seq = _batch()["mixed_seq"]
    with torch.no_grad():
        h_mixed, at_step, *_ = model.step_states(seq)
        states = model.user_states(seq)
        for d in (0, 1):
            logits = model.heads[d](h_mixed[:, -1] + at_step[d][:, -1])  # (B, n_d): specific head
            torch.testing.assert_close(model.score(states, d)[:, 1:], logits, rtol=1e-5, atol=1e-5)


def test_the_paper_softmax_is_the_scoring_softmax_and_train_follows_train_loss():
    batch = _batch()
    batch["targets"][:, :-1] = 0  # the last step only, where the specific head is the score
    batch["targets"][2, -1] = 5  # one target of each domain
    batch["negatives"] = torch.where(batch["targets"] > 3, 5, 2) * (batch["targets"] > 0)  # bce's, same domain
    model = _model(c2dsr_lambda=1.0, loss=LossConfig("sampled_ce")).eval()  # ce whatever train.loss says
    model.fit_statistics(OFFSETS, ITEMS)
    with torch.no_grad():
        got = float(model(batch)["rec"])
        h_mixed, *_ = model.step_states(batch["mixed_seq"])
        states = model.user_states(batch["mixed_seq"])
        last = batch["targets"][:, -1]
        expected = 0.0
        for d in (0, 1):
            rows = (last > 3) == bool(d)
            labels = last[rows] - (3 if d else 0) - 1
            expected += float(torch.nn.functional.cross_entropy(model.heads[d](h_mixed[rows, -1]), labels))  # shared head
            expected += float(torch.nn.functional.cross_entropy(model.score(states[rows], d)[:, 1:], labels))  # specific
        assert got == pytest.approx(expected, rel=1e-5)
        follows = _model(c2dsr_lambda=1.0, c2dsr_objective="train", loss=LossConfig("bce")).eval()
        follows.load_state_dict(model.state_dict())
        bce = float(follows(batch)["rec"])
        assert bce != pytest.approx(got, rel=1e-3)
        other = {**batch, "negatives": torch.where(batch["targets"] > 3, 6, 3) * (batch["targets"] > 0)}
        assert float(follows(other)["rec"]) != pytest.approx(bce, rel=1e-4)  # it reads the negatives


def test_loss_is_lambda_weighted_and_infomax_needs_two_domain_users():
    model = _model(c2dsr_lambda=0.6)
    model.fit_statistics(OFFSETS, ITEMS)
    torch.manual_seed(1)
    out = model(_batch())
    assert set(out) == {"loss", "rec", "mi"}
    assert float(out["loss"].detach()) == pytest.approx(float(0.6 * out["rec"] + 0.4 * out["mi"]), rel=1e-5)
    single = {k: v[1:2] for k, v in _batch().items()}  # one user, domain A only
    out = model(single)
    assert "mi" not in out and float(out["loss"].detach()) == pytest.approx(0.6 * float(out["rec"]), rel=1e-6)
    out["loss"].backward()
    assert model.discriminators[0].weight.grad is None  # no infomax term reached it


def test_steps_limits_the_prediction_losses_to_the_newest_steps():
    model = _model(c2dsr_steps=1, c2dsr_lambda=1.0).eval()
    model.fit_statistics(OFFSETS, ITEMS)
    batch = _batch()
    with torch.no_grad():
        rec = float(model(batch)["rec"])
        cut = {k: v.clone() for k, v in batch.items()}
        cut["targets"][:, :-1] = 0  # only the last step has a target
        assert float(model(cut)["rec"]) == pytest.approx(rec, rel=1e-6)
        everything = _model(c2dsr_steps=0, c2dsr_lambda=1.0).eval()
        everything.load_state_dict(model.state_dict())
        assert float(everything(batch)["rec"]) != pytest.approx(rec, rel=1e-3)


def test_saved_weights_carry_the_graph_into_a_shell(tmp_path):
    model = _model().eval()
    model.fit_statistics(OFFSETS, ITEMS)
    save_weights(model, tmp_path / "w.safetensors")
    shell = model_shell(_cfg(), INFO)
    assert shell.graph.edges.shape[1] == 0  # built before any data
    shell.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    shell.eval()
    torch.testing.assert_close(shell.graph.dense(), model.graph.dense())
    seq = pad_histories([[1, 4, 2], [6]], 10)
    with torch.no_grad():
        torch.testing.assert_close(shell.score(shell.user_states(seq), 0), model.score(model.user_states(seq), 0))


def test_one_epoch_through_train_run(synth_ds, one_epoch_run):
    _, run_dir = one_epoch_run("c2dsr")
    model, _, _ = load_run(run_dir)
    split = synth_ds.split()
    edges, weights = transition_edges(np.repeat(np.arange(synth_ds.n_users), split.train_lengths), split.train_items,
                                      synth_ds.n_items_total + 1)
    assert model.graph.edges.tolist() == edges.tolist()  # the training split's graph, restored from the run
    np.testing.assert_allclose(model.graph.weights.numpy(), weights, rtol=1e-6)
    with torch.no_grad():
        scores = model.score(model.user_states(torch.tensor([[0, 1, synth_ds.n_items[0] + 2]])), 1)
    assert torch.isfinite(scores[:, 1:]).all()
