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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

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


def paired_tests(groups: dict[str, list[Path]], reference: str, metric: str, mode: str) -> dict[str, tuple[float, float]]:
    """label -> (mean difference, p) of a paired t-test of the per-user `metric` (each group's mean over
    its runs) against the reference group's, over the users both evaluated."""
    def group_metric(runs: list[Path]) -> pd.Series:
        series = []
        for r in runs:
            ranks = pd.read_parquet(r / "ranks.parquet", columns=["user_idx", f"rank_{mode}"])
            series.append(pd.Series(per_user(ranks[f"rank_{mode}"].to_numpy(), metric), index=ranks["user_idx"].to_numpy()))
        return pd.concat(series, axis=1).mean(axis=1)

    ref = group_metric(groups[reference])
    out = {}
    for label, runs in groups.items():
        if label == reference:
            continue
        mine = group_metric(runs)
        both = mine.index.intersection(ref.index)
        a, b = mine.loc[both].to_numpy(), ref.loc[both].to_numpy()
        ok = ~(np.isnan(a) | np.isnan(b))
        if ok.sum() >= 2:
            out[label] = (float((a[ok] - b[ok]).mean()), float(stats.ttest_rel(a[ok], b[ok]).pvalue))
    return out
