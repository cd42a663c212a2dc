"""Models: pure torch, no file I/O. One interface for every model, built by `build_model`.

    model = build_model(model_cfg, dataset_info, item_vectors=None, profile_vectors=None)

model_cfg: the `model` config section (defaults/model.yaml). dataset_info: {"domains": [A, B],
"n_items": [n_A, n_B], "n_users": U} (plus "global_dim" / "profile_dim", which `model_shell`
uses to build a model for saved weights without the vectors). item_vectors: anything with `.global_pca` (N + 1, d_g) by global
id and `.local_pca` (two arrays (n_d + 1, H) by local id), e.g. `workspace.ItemVectors`.
profile_vectors: (U, D) user profile embeddings, read in training only (beta > 0).

Names (model.name):
    llm4cdsr          the method; ablations are switches: global_item=id, local_init=random,
                      freeze_local=false, alpha=0, beta=0, causal=false (the authors' leak);
                      first_local_target=drop and empty_local_state=ln_bias as the authors' code
    sasrec_mixed      SASRec over the mixed sequence with ID embeddings
    sasrec_mixed_llm  SASRec over the mixed sequence with adapted LLM vectors (no domain branches)
    sasrec_single     one SASRec per domain over that domain's items (single_domain: one of them)
    gru4rec           GRU4Rec over the mixed sequence
    pop               popularity (training counts)
    c2dsr             C2DSR (Cao et al., CIKM 2022): transition-graph encoder + SASRecs over the mixed
                      and both domain sequences, per-domain softmax, contrastive infomax (c2dsr_*)
    tri_cdr           Tri-CDR (Ma et al., TOIS 2024): SASRecs over the three sequences, triple
                      cross-domain attention, InfoNCE + triplet contrast (tri_cdr_*)

Scoring interface (models/base.py), the same for every model. Ids are global (A: 1..n_A,
B: n_A+1..n_A+n_B) in histories and LOCAL (1..n_d) for candidates of a domain; 0 is padding.

    mixed_seq = pad_histories(histories, model.max_len)        # (B, L) left-padded global ids
    states = model.user_states(mixed_seq, user_idx=None)       # (B, 2, K) a query per domain
    table = model.item_table(domain)                           # (n_d + 1, K), reusable
    model.score(states, domain)                                # (B, n_d + 1); column = local id, col 0 = -inf
    model.score(states, domain, candidates, table=table)       # (B, C) for local ids (B, C)
    model.score_vectors(states, domain, global_vectors, local_vectors=None)
        # (B, C) items given by LLM vectors (unseen in training): global vectors (C, d_g) go
        # through the adapter; LLM-vector models only (llm4cdsr, sasrec_mixed_llm)
    model.eval_domains                                         # domains it is evaluated on
    model(batch) -> {"loss": scalar, ...detached parts}        # training (see training/batching.py);
        # the objective is `build_model(..., loss=LossConfig(kind="bce" | "ce" | "sampled_ce"))`

Call `model.eval()` and `torch.no_grad()` for scoring. Scores are dot products, so the tables
can go into any maximum-inner-product index.
"""
from __future__ import annotations

from typing import Any

from llm4cdsr.models.base import LOSSES, LossConfig, Recommender, pad_histories
from llm4cdsr.models.baselines import GRU4Rec, Popularity, SASRecSingle
from llm4cdsr.models.c2dsr import C2DSR, C2DSRConfig
from llm4cdsr.models.llm4cdsr import LLM4CDSR, LLM4CDSRConfig
from llm4cdsr.models.sasrec import EncoderConfig, SASRecEncoder
from llm4cdsr.models.tri_cdr import TriCDR, TriCDRConfig

MODEL_NAMES = ("llm4cdsr", "sasrec_mixed", "sasrec_mixed_llm", "sasrec_single", "gru4rec", "pop", "c2dsr", "tri_cdr")

__all__ = [
    "C2DSR",
    "LLM4CDSR",
    "MODEL_NAMES",
    "C2DSRConfig",
    "EncoderConfig",
    "GRU4Rec",
    "LLM4CDSRConfig",
    "LOSSES",
    "LossConfig",
    "Popularity",
    "Recommender",
    "SASRecEncoder",
    "SASRecSingle",
    "TriCDR",
    "TriCDRConfig",
    "build_model",
    "model_needs",
    "model_shell",
    "pad_histories",
]


def model_needs(model_cfg: dict[str, Any]) -> set[str]:
    """Which LLM artifacts a model reads: a subset of {"item_vectors", "profiles"}."""
    name = model_cfg["name"]
    needs: set[str] = set()
    if name == "sasrec_mixed_llm" or (name == "llm4cdsr" and (model_cfg["global_item"] == "llm" or model_cfg["local_init"] == "pca")):
        needs.add("item_vectors")
    if name == "llm4cdsr" and model_cfg["beta"] > 0:
        needs.add("profiles")
    return needs


def build_model(model_cfg: dict[str, Any], dataset_info: dict[str, Any], item_vectors=None, profile_vectors=None,
                loss: LossConfig | None = None) -> Recommender:
    """`loss`: the training objective (`LossConfig.from_section(cfg["train"])`; default: the paper's BCE)."""
    return _build(model_cfg, dataset_info, item_vectors, profile_vectors, loading=False, loss=loss)


def model_shell(model_cfg: dict[str, Any], dataset_info: dict[str, Any]) -> Recommender:
    """The model with zero placeholders (of dataset_info's widths) where LLM vectors go, ready for
    `load_state_dict` of saved weights (which hold the vectors)."""
    return _build(model_cfg, dataset_info, None, None, loading=True)


def _build(model_cfg, dataset_info, item_vectors, profile_vectors, loading: bool, loss: LossConfig | None = None) -> Recommender:
    """`loading`: vectors may be absent; zero placeholders of the recorded widths take their place."""
    name = model_cfg["name"]
    n_items = tuple(int(n) for n in dataset_info["n_items"])
    encoder = EncoderConfig(
        hidden=model_cfg["hidden"], blocks=model_cfg["blocks"], heads=model_cfg["heads"],
        dropout=model_cfg["dropout"], max_len=model_cfg["max_len"], causal=model_cfg["causal"],
        block=model_cfg.get("block", "prenorm"), null_key=model_cfg.get("null_key", False),
        positions=model_cfg.get("positions", "first"),
    )
    if name in ("llm4cdsr", "sasrec_mixed", "sasrec_mixed_llm"):
        cfg = LLM4CDSRConfig(
            encoder=encoder, global_item=model_cfg["global_item"], local_init=model_cfg["local_init"],
            freeze_local=model_cfg["freeze_local"], alpha=model_cfg["alpha"], beta=model_cfg["beta"],
            tau=model_cfg["tau"], tau_reg=model_cfg["tau_reg"],
            align=model_cfg.get("align", "paper"), align_tau=float(model_cfg.get("align_tau", 0.1)),
            first_local_target=model_cfg.get("first_local_target", "keep"),
            empty_local_state=model_cfg.get("empty_local_state", "zero"),
            local_anchor=float(model_cfg.get("local_anchor", 0.0)),
        )
        if name != "llm4cdsr":  # the mixed-sequence SASRec baselines: global branch only
            cfg.global_item = "id" if name == "sasrec_mixed" else "llm"
            cfg.local_branches, cfg.alpha, cfg.beta = False, 0.0, 0.0
        global_vectors = item_vectors.global_pca if item_vectors is not None else None
        local_vectors = item_vectors.local_pca if item_vectors is not None else None
        dims = {"global_dim": dataset_info.get("global_dim"), "profile_dim": dataset_info.get("profile_dim")} if loading else None
        return LLM4CDSR(cfg, n_items, global_vectors, local_vectors, profile_vectors, placeholder_dims=dims, loss=loss)
    if name == "sasrec_single":
        domains: tuple[int, ...] = (0, 1)
        if model_cfg["single_domain"]:
            names = list(dataset_info["domains"])
            if model_cfg["single_domain"] not in names:
                raise ValueError(f"model.single_domain {model_cfg['single_domain']!r} is not a domain of this dataset ({names})")
            domains = (names.index(model_cfg["single_domain"]),)
        return SASRecSingle(encoder, n_items, domains, loss=loss)
    if name == "gru4rec":
        return GRU4Rec(n_items, model_cfg["hidden"], model_cfg["gru_layers"], model_cfg["dropout"], model_cfg["max_len"], loss=loss)
    # C2DSR's objective is its paper's softmax over the whole domain unless c2dsr_objective=train.
    if name == "c2dsr":
        return C2DSR(encoder, n_items, C2DSRConfig(
            lambda_=model_cfg["c2dsr_lambda"], gnn_layers=model_cfg["c2dsr_gnn_layers"], steps=model_cfg["c2dsr_steps"],
            objective=model_cfg["c2dsr_objective"]), loss=loss)
    if name == "tri_cdr":
        return TriCDR(encoder, n_items, TriCDRConfig(
            logit_scale=model_cfg["tri_cdr_logit_scale"], temperature=model_cfg["tri_cdr_temperature"],
            margin=model_cfg["tri_cdr_margin"], cl_weight=model_cfg["tri_cdr_cl_weight"],
            triplet_weight=model_cfg["tri_cdr_triplet_weight"]), loss=loss)
    if name == "pop":
        return Popularity(n_items, model_cfg["max_len"])
    raise ValueError(f"unknown model.name {name!r} (known: {', '.join(MODEL_NAMES)})")
