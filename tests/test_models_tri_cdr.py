"""Tri-CDR: the attention unit, causality, train/score consistency, the triple contrast, one epoch."""
import shutil

import numpy as np
import pytest
import torch

from llm4cdsr.cli.compare import compare_table
from llm4cdsr.config import load_config
from llm4cdsr.models import build_model
from llm4cdsr.models.base import LossConfig, domain_of
from llm4cdsr.models.tri_cdr import AttentionUnit, nt_xent
from llm4cdsr.training.run import load_run

torch.set_num_threads(1)
N_ITEMS = (10, 14)  # A: 1..10, B: 11..24
INFO = {"domains": ["a", "b"], "n_items": list(N_ITEMS), "n_users": 4}


def _cfg(**over):
    cfg = load_config()["model"]
    cfg.update(name="tri_cdr", hidden=8, max_len=10, dropout=0.2)
    cfg.update(over)
    return cfg


def _model(**over):
    torch.manual_seed(0)
    return build_model(_cfg(**over), INFO)


def _batch():
    # Rows 0, 2 and 3 have both domains; rows 0 and 3 end on an A target, row 2 on a B target.
    mixed_seq = torch.tensor([[0, 0, 1, 12, 3, 15], [0, 2, 4, 6, 8, 9], [11, 13, 5, 14, 16, 7], [12, 1, 13, 2, 14, 3]])
    targets = torch.tensor([[0, 0, 12, 3, 15, 4], [0, 4, 6, 8, 9, 10], [13, 5, 14, 16, 7, 17], [1, 13, 2, 14, 3, 5]])
    negatives = torch.tensor([[0, 0, 20, 7, 18, 6], [0, 1, 3, 5, 7, 1], [19, 10, 21, 22, 2, 23], [2, 11, 3, 12, 4, 6]])
    return {"mixed_seq": mixed_seq, "targets": targets, "negatives": negatives}


def test_attention_unit_equals_the_mlp_over_the_concatenated_features():
    torch.manual_seed(0)
    unit = AttentionUnit(4)
    query, summary, keys = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    q = query[:, :, None].expand(-1, -1, 5, -1)  # (B, Q, K, H)
    s = summary[:, :, None].expand(-1, -1, 5, -1)
    k = keys[:, None].expand(-1, 3, -1, -1)
    naive = torch.cat([k, q, k * q, q - k, s], dim=-1)  # DIN's input, as their code builds it
    expected = unit.out(unit.act2(unit.second(unit.act1(unit.first(naive))))).squeeze(-1)  # (B, Q, K)
    torch.testing.assert_close(unit(query, summary, keys), expected, rtol=1e-5, atol=1e-6)
    allowed = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(1)) < 0.5  # only these pairs are scored
    got = unit(query, summary, keys, allowed)
    torch.testing.assert_close(got[allowed], expected[allowed], rtol=1e-5, atol=1e-6)
    assert (got[~allowed] == torch.finfo(got.dtype).min).all()


def test_nt_xent_follows_simclr():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    z = np.concatenate([a, b])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = np.exp(z @ z.T / 0.5)
    pos = np.concatenate([np.diag(sim, 3), np.diag(sim, 3)])
    expected = -np.log(pos / (sim.sum(1) - np.diag(sim))).mean()
    assert float(nt_xent(torch.tensor(a), torch.tensor(b), 0.5)) == pytest.approx(expected, rel=1e-6)


def test_a_later_item_never_changes_an_earlier_step():
    model = _model().eval()
    batch = _batch()
    step_domain = domain_of(batch["targets"], N_ITEMS[0])
    with torch.no_grad():
        before = model.fuse(model.step_attention(batch["mixed_seq"], step_domain), step_domain)
        changed = batch["mixed_seq"].clone()
        changed[:, 4] = torch.tensor([20, 21, 2, 6])  # other items, some of the other domain
        after = model.fuse(model.step_attention(changed, step_domain), step_domain)
    torch.testing.assert_close(after[:, :4], before[:, :4])
    assert not torch.allclose(after[:, 4:], before[:, 4:])


def test_every_step_and_the_score_agree_at_the_last_step():
    """The training path (all steps at once, masks per step) and the scoring path (last step, one
    query per domain) compute the same user vector."""
    model = _model().eval()
    seq = _batch()["mixed_seq"]
    with torch.no_grad():
        states = model.user_states(seq)  # (B, 2, H)
        for d in (0, 1):
            step_domain = torch.full_like(seq, d)
            fused = model.fuse(model.step_attention(seq, step_domain), step_domain)[:, -1]  # (B, H)
            expected = torch.nn.functional.normalize(fused, dim=-1) * model.cfg.logit_scale
            torch.testing.assert_close(states[:, d], expected, rtol=1e-5, atol=1e-5)


def test_loss_parts_and_the_triple_contrast_per_target_domain():
    model = _model(tri_cdr_cl_weight=0.5, tri_cdr_triplet_weight=2.0)
    out = model(_batch())
    # rows 0 and 3 (both domains, last target A) form a group of two; row 2 is alone for B
    assert set(out) == {"loss", "rec", "cl", "triplet"}
    assert float(out["loss"].detach()) == pytest.approx(float(out["rec"] + 0.5 * out["cl"] + 2.0 * out["triplet"]), rel=1e-5)
    out["loss"].backward()
    assert model.heads[0].project[0][0].weight.grad is not None
    assert model.heads[1].project[0][0].weight.grad is None  # B's group has one user: no contrast
    single_domain = {k: v[1:2] for k, v in _batch().items()}
    assert set(model(single_domain)) == {"loss", "rec"}


def test_the_paper_objective_reads_the_negatives_and_ce_is_the_scoring_softmax():
    batch = _batch()
    batch["targets"][:, :-1] = 0  # the last step only, whose user vector is the score's
    bce = _model().eval()
    with torch.no_grad():
        rec = float(bce(batch)["rec"])
        other = {**batch, "negatives": batch["negatives"] + 1}  # other negatives (same domains)
        assert float(bce(other)["rec"]) != pytest.approx(rec, rel=1e-4)
        ce = _model()
        ce.load_state_dict(bce.state_dict())
        ce.loss = LossConfig("ce")
        ce.eval()
        no_negatives = {**batch, "negatives": torch.zeros_like(batch["negatives"])}  # ce batches carry none
        got = float(ce(no_negatives)["rec"])
        scores = ce.user_states(batch["mixed_seq"])
        last = batch["targets"][:, -1]
        expected = 0.0
        for d in (0, 1):
            rows = domain_of(last, N_ITEMS[0]) == d
            logits = ce.score(scores[rows], d)[:, 1:]  # (R, n_d)
            expected += float(torch.nn.functional.cross_entropy(logits, last[rows] - (N_ITEMS[0] if d else 0) - 1))
    assert got == pytest.approx(expected, rel=1e-5)


def test_one_epoch_through_train_run(synth_ds, one_epoch_run):
    _, run_dir = one_epoch_run("tri_cdr")
    model, _, _ = load_run(run_dir)
    with torch.no_grad():
        scores = model.score(model.user_states(torch.tensor([[0, 1, synth_ds.n_items[0] + 2]])), 1)
    assert torch.isfinite(scores[:, 1:]).all()


def _sasrec(name: str, **over):
    cfg = _cfg(name=name, **over)
    torch.manual_seed(1)
    return build_model(cfg, INFO)


def test_warm_start_takes_the_encoders_and_tables_of_trained_sasrecs():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mixed, single = _sasrec("sasrec_mixed"), _sasrec("sasrec_single")
    set_mixed = model.warm_start("sasrec_mixed", mixed.state_dict())
    set_single = model.warm_start("sasrec_single", single.state_dict())
    ours = model.state_dict()
    # The mixed SASRec gives the mixed encoder and the global ID table, whole.
    for name, tensor in mixed.state_dict().items():
        target = name.replace("global_encoder.", "encoder.").replace("global_items.table.", "items.")
        assert target in set_mixed
        torch.testing.assert_close(ours[target], tensor, rtol=0, atol=0)
    assert len(set_mixed) == len(mixed.state_dict())
    # The per-domain SASRecs give both domain branches under the same names.
    assert set_single == sorted(single.state_dict())
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=0)
    # Tri-CDR's own parts (attention unit, fusion and projection heads) keep their start.
    own = [k for k in ours if k.startswith(("attention.", "heads."))]
    assert own and all(torch.equal(ours[k], before[k]) for k in own)


def test_warm_start_refuses_a_run_of_another_width():
    with pytest.raises(ValueError, match=r"sasrec_mixed tensor .* has shape .*16.*differ in model width"):
        _model().warm_start("sasrec_mixed", _sasrec("sasrec_mixed", hidden=16).state_dict())


def test_init_from_through_train_run(synth_ds, tmp_path):
    from llm4cdsr.config import ConfigError
    from llm4cdsr.training.run import train_run

    def cfg(name, *over):
        return load_config([], [f"workspace={tmp_path}", f"model.name={name}", "model.hidden=16", "model.max_len=20",
                                "model.dropout=0.2", "train.batch_size=64", "train.progress=false", "train.epochs=1",
                                "eval.num_negatives=30", "eval.batch_size=128", *over])

    for name in ("sasrec_mixed", "sasrec_single"):
        train_run(cfg(name), tmp_path / "runs" / name, synth_ds)
    # A folder that holds no finished run is named before anything is made.
    with pytest.raises(ConfigError, match=r"model.init_from: .*runs/sasrec_gone is not a finished run"):
        train_run(cfg("tri_cdr", "model.init_from=[runs/sasrec_gone]"), tmp_path / "runs" / "tri", synth_ds)
    assert not (tmp_path / "runs" / "tri").exists()
    results = train_run(cfg("tri_cdr", "model.init_from=[runs/sasrec_mixed, runs/sasrec_single]"), tmp_path / "runs" / "tri", synth_ds)
    got = [(r["run"], r["model"], r["tensors"]) for r in results["init_from"]]
    # 28 tensors: 2 blocks x 12, final LayerNorm 2, positions 1, item table 1; twice that for two domains.
    assert got == [("runs/sasrec_mixed", "sasrec_mixed", 28), ("runs/sasrec_single", "sasrec_single", 56)]
    assert all(len(r["weights_sha256"]) == 64 for r in results["init_from"])

    # Another seed started from other runs of the same models is the same model to `compare`.
    for name in ("sasrec_mixed", "sasrec_single"):
        shutil.copytree(tmp_path / "runs" / name, tmp_path / "runs" / f"{name}-b")
    train_run(cfg("tri_cdr", "seed=7", "model.init_from=[runs/sasrec_mixed-b, runs/sasrec_single-b]"), tmp_path / "runs" / "tri-b", synth_ds)
    table = compare_table([tmp_path / "runs" / n for n in ("sasrec_mixed", "tri", "tri-b")], tmp_path / "runs" / "sasrec_mixed",
                          "ndcg@10", "sampled")
    rows = [line for line in table.splitlines() if line.startswith("tri_cdr")]
    label = "tri_cdr init_from=['sasrec_mixed', 'sasrec_single']"
    assert len(rows) == 1 and rows[0].startswith(label) and rows[0][len(label):].split()[0] == "2"  # one row, two runs
