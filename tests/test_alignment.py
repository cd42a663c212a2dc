"""The cross-domain item alignment (model.align), its diagnostics, and the overlap experiment with profiles."""
import math

import numpy as np
import pytest
import torch

from llm4cdsr.models.base import cosine_alignment_loss, soft_contrastive_loss
from llm4cdsr.training.batching import cross_domain_pairs
from llm4cdsr.training.diagnostics import chance_share, cross_domain_neighbours

torch.set_num_threads(1)


def test_cosine_alignment_by_hand():
    # Two pairs; x and y rows already unit length: cos(x_i, y_j) = [[1, 0], [0, 1]].
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Hard targets (identity): each row's loss is -log(e^{1/t} / (e^{1/t} + e^0)).
    t = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(cosine_alignment_loss(x, y, t)) == pytest.approx(expected, rel=1e-6)
    # Scale does not matter (cosine), unlike the paper's dot products.
    assert float(cosine_alignment_loss(3 * x, 0.1 * y, t)) == pytest.approx(expected, rel=1e-6)
    # Soft targets from priors: identical priors for both pairs split each row's mass in half.
    prior = torch.ones(2, 3)
    soft = -(0.5 * math.log(math.exp(2) / (math.exp(2) + 1)) + 0.5 * math.log(1 / (math.exp(2) + 1)))
    assert float(cosine_alignment_loss(x, y, t, prior, prior)) == pytest.approx(soft, rel=1e-6)


def test_cosine_alignment_moves_where_the_papers_form_is_flat():
    # Small adapted vectors, as measured on trained runs (norm ~0.8, dot products ~0.03).
    gen = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(32, 16, generator=gen)).requires_grad_()
    y = (0.1 * torch.randn(32, 16, generator=gen)).requires_grad_()
    paper = soft_contrastive_loss(x, y, 1.0)
    assert float(paper.detach()) == pytest.approx(math.log(32), abs=0.01)  # at its floor: ln N
    (g_paper,) = torch.autograd.grad(paper, x)
    cosine = cosine_alignment_loss(x, y, 0.1)
    (g_cosine,) = torch.autograd.grad(cosine, x)
    assert float(g_paper.norm()) < 0.01 * float(g_cosine.norm())
    # And a step along the gradient lowers it.
    with torch.no_grad():
        stepped = cosine_alignment_loss(x - 0.01 * g_cosine, y, 0.1)
    assert float(stepped) < float(cosine.detach())


def test_cross_domain_pairs_of_a_window():
    n_a = 10  # A: 1..10, B: 11..
    window = np.array([
        [0, 0, 1, 2, 11, 3, 12],  # switches: (2, 11), (11, 3) -> (3, 11), (3, 12)
        [0, 0, 0, 0, 4, 5, 6],  # A only: none
        [0, 13, 14, 7, 0 + 7, 15, 0],  # (14, 7) -> (7, 14); (7, 15); the trailing 0 is no item
    ])
    pairs = cross_domain_pairs(window, n_a)
    assert pairs.tolist() == [[2, 11], [3, 11], [3, 12], [7, 14], [7, 15]]
    assert cross_domain_pairs(window, n_a, limit=2).tolist() == [[2, 11], [3, 11]]


def test_cross_domain_neighbour_share_by_hand():
    # Two tight clusters, each holding one A and one B item: every item's nearest neighbour is the
    # other domain's item of its cluster. Second neighbours (cosines by hand): item 0 (A) -> item 3
    # (B, cos 0.10 against item 2's 0.00), item 1 (B) -> item 3 (B, 0.198), item 2 (A) -> item 1
    # (B, 0.10), item 3 (B) -> item 1 (B, 0.198): with k = 2, (2 + 1 + 2 + 1) / 8 = 0.75.
    vectors = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    domain = np.array([0, 1, 0, 1])
    assert cross_domain_neighbours(vectors, domain, k=1) == 1.0
    assert cross_domain_neighbours(vectors, domain, k=2) == 0.75
    # Domains apart: each cluster one domain.
    assert cross_domain_neighbours(vectors, np.array([0, 0, 1, 1]), k=1) == 0.0
    assert chance_share(domain) == pytest.approx(2 * 2 * 2 / (4 * 3))


def _model(align="cosine", profiles=None):
    from types import SimpleNamespace

    from llm4cdsr.config import load_config
    from llm4cdsr.models import build_model

    cfg = load_config()["model"]
    cfg.update(hidden=8, max_len=10, dropout=0.0, beta=1.0 if profiles is not None else 0.0, alpha=1.0, align=align)
    rng = np.random.default_rng(0)
    vectors = SimpleNamespace(global_pca=rng.normal(size=(25, 12)).astype(np.float32),
                              local_pca=tuple(rng.normal(size=(n + 1, 8)).astype(np.float32) for n in (10, 14)))
    info = {"domains": ["a", "b"], "n_items": [10, 14], "n_users": 4, "global_dim": 12, "profile_dim": 6}
    torch.manual_seed(0)
    return build_model(cfg, info, vectors, profiles)


def _batch():
    from llm4cdsr.training.batching import TrainBatches

    offsets = np.array([0, 5, 10, 14, 18])
    items = np.array([1, 11, 2, 12, 3, 4, 5, 13, 6, 14, 15, 16, 7, 17, 8, 9, 10, 1])
    batches = TrainBatches(offsets, items, (10, 14), max_len=10, batch_size=4, seed=0)
    return batches.build(batches.plan(1)[0], 1, 0)


def test_cosine_alignment_trains_the_adapter_through_the_model():
    model = _model("cosine")
    out = model(_batch())
    assert "reg" in out and float(out["reg"]) > 0
    grads = torch.autograd.grad(out["terms"]["reg"], model.global_items.adapter.inner.weight)
    assert float(grads[0].norm()) > 0


def test_users_without_a_profile_get_no_guidance():
    profiles = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    batch = _batch()
    full = _model("paper", profiles)(batch)["user"]
    cut = profiles.copy()
    cut[1] = np.nan  # e.g. a user the overlap experiment cut back to one domain
    masked = _model("paper", cut)(batch)
    assert math.isfinite(float(masked["loss"].detach())) and float(masked["user"]) != pytest.approx(float(full))
    cut[:] = np.nan
    assert "user" not in _model("paper", cut)(batch)


def test_overlap_experiment_with_profiles_cuts_their_guidance(synth_ds, tmp_path):
    from llm4cdsr.config import load_config
    from llm4cdsr.experiments import overlap_users, reduce_overlap, run_overlap

    cfg = load_config([], [f"workspace={tmp_path}", "model.beta=1", "model.hidden=16", "model.max_len=20",
                           "train.epochs=1", "train.progress=false", "eval.num_negatives=20", "model.global_item=id",
                           "model.local_init=random"])
    profiles = np.random.default_rng(0).normal(size=(synth_ds.n_users, 8)).astype(np.float32)
    split = synth_ds.split()
    reduced, info = reduce_overlap(synth_ds, split, 0.0, cfg["seed"])
    assert len(overlap_users(synth_ds, reduced)) == 0 and len(info["reduced_users"]) == info["overlap_users"] > 0
    table = run_overlap(cfg, [0.0], ["llm4cdsr", "noreg:model.alpha=0"], tmp_path / "out", synth_ds,
                        profiles=profiles, seeds=[1, 2])
    assert sorted(set(table["model"])) == ["llm4cdsr", "noreg"] and sorted(set(table["seed"])) == [1, 2]
    assert (table["kept_both"] == 0).all()
    text = (tmp_path / "out" / "results.md").read_text()
    # No pair to align at share 0: alpha 0 is the preset, figure for figure, and its test says so.
    assert "| 0 | llm4cdsr | 2 |" in text and "| 0 | noreg | 2 | - | - | - | - |" in text
    assert (tmp_path / "out" / "tests.csv").is_file()
    with pytest.raises(ValueError, match="profile embeddings"):
        run_overlap(cfg, [0.0], ["llm4cdsr"], tmp_path / "out2", synth_ds)


def test_overlap_t_tests_by_hand(tmp_path):
    import json

    import pandas as pd
    from scipy import stats

    from llm4cdsr.experiments import overlap_tests

    def run(name, model, seed, ranks):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "overlap.json").write_text(json.dumps({"ratio": 0.5, "model": model, "seed": seed}))
        pd.DataFrame({"user_idx": [0, 1, 2, 3], "rank_sampled": ranks, "rank_full": ranks}).to_parquet(d / "ranks.parquet")

    run("ref-1", "llm4cdsr", 1, [0.0, 1.0, 20.0, 3.0])
    run("ref-2", "llm4cdsr", 2, [0.0, 3.0, 20.0, 3.0])
    run("other-1", "cosine", 1, [1.0, 0.0, 0.0, float("nan")])  # user 3 not evaluated: left out
    tests = overlap_tests(tmp_path)
    ndcg = lambda r: 1 / np.log2(r + 2) if r < 10 else 0.0  # noqa: E731
    ref = [1.0, (ndcg(1) + ndcg(3)) / 2, 0.0]  # per-user mean over the reference's two seeds
    mine = [ndcg(1), 1.0, 1.0]
    row = tests.iloc[0]
    assert (row["ratio"], row["model"], row["seeds"]) == (0.5, "cosine", 1) and len(tests) == 1
    assert row["sampled diff"] == pytest.approx(np.mean(np.subtract(mine, ref)))
    assert row["sampled p"] == pytest.approx(stats.ttest_rel(mine, ref).pvalue)
