"""Ranking metrics from the rank of each user's target.

Ranks are 0-based (0 = the target scored highest) and count ties as a half each: rank =
#(other candidates scoring higher) + #(other candidates scoring equal) / 2, the target's expected
position under a random tie-break, rounded to the mid-rank. Models with float scores rarely tie;
popularity does, and neither pessimistic nor optimistic tie counting would be fair to it.

    hit@k  = 1 if rank < k
    ndcg@k = 1 / log2(rank + 2) if rank < k  (one relevant item, so the ideal DCG is 1)
    mrr@k  = 1 / (rank + 1) if rank < k
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

METRICS = ("hit", "ndcg", "mrr")


def target_rank(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """Mid-rank of each target among the OTHER candidates: scores (B, C) without the target itself
    (mask it to -inf or leave it out), target_scores (B,) -> (B,) float."""
    higher = (scores > target_scores[:, None]).sum(1)
    ties = (scores == target_scores[:, None]).sum(1)
    return higher.float() + ties.float() / 2


def per_user(ranks: np.ndarray, name: str) -> np.ndarray:
    """One metric ("ndcg@10", ...) for each user; NaN ranks (user not evaluated) stay NaN."""
    metric, k = parse_metric(name)
    ranks = np.asarray(ranks, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        within = ranks < k
    if metric == "hit":
        value = within.astype(np.float64)
    elif metric == "ndcg":
        value = np.where(within, 1.0 / np.log2(np.where(within, ranks, 0) + 2.0), 0.0)
    else:
        value = np.where(within, 1.0 / (np.where(within, ranks, 0) + 1.0), 0.0)
    return np.where(np.isnan(ranks), np.nan, value)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = (5, 10, 20)) -> dict[str, float]:
    """Mean hit@k, ndcg@k, mrr@k over the users with a rank (NaN ranks are left out)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    ranks = ranks[~np.isnan(ranks)]
    out: dict[str, float] = {}
    for metric in METRICS:
        for k in ks:
            name = f"{metric}@{k}"
            out[name] = float(per_user(ranks, name).mean()) if len(ranks) else float("nan")
    return out


def parse_metric(name: str) -> tuple[str, int]:
    metric, sep, k = name.partition("@")
    if not sep or metric not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric must look like hit@10, ndcg@10 or mrr@10, got {name!r}")
    return metric, int(k)
