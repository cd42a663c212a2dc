"""Measures of how the two domains' items sit in a model's item space, for training logs and reports.

The cross-domain neighbour share is the bridge's measure: the mean share of an item's k nearest
neighbours (cosine) that come from the other domain. 0: the domains live apart; random neighbours
give `chance_share`. LLM4CDSR's item alignment is meant to raise it in the adapted space.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors


def cross_domain_neighbours(vectors: np.ndarray, domain: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (cosine) that come from the other domain.

    0 means the domains live apart; bridged domains put related items of both side by side.
    """
    k = min(k, len(vectors) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(vectors)
    _, nbrs = index.kneighbors(vectors)
    other = domain[nbrs[:, 1:]] != domain[:, None]  # (n, k), the item itself dropped
    return float(other.mean())


def chance_share(domain: np.ndarray) -> float:
    """The cross-domain neighbour share if each item's neighbours were drawn at random."""
    n = len(domain)
    if n < 2:
        return 0.0
    n_b = int((domain == 1).sum())
    n_a = n - n_b
    return 2 * n_a * n_b / (n * (n - 1))


def item_sample(n_items: tuple[int, int], n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of global item ids (sorted) and their domains (0 / 1): the report's sample."""
    total = int(n_items[0]) + int(n_items[1])
    ids = np.sort(np.random.default_rng(seed).choice(np.arange(1, total + 1), size=min(n, total), replace=False))
    return ids, (ids > n_items[0]).astype(int)


def adapter_mixing(global_items, n_items: tuple[int, int], n: int = 3000, seed: int = 0):
    """A callback for the trainer: the cross-domain neighbour share of a seeded item sample after
    the global adapter (`global_items`: the model's GlobalItems of kind "llm"), each epoch."""
    ids, domain = item_sample(n_items, n, seed)
    index = torch.as_tensor(ids)

    @torch.no_grad()
    def measure(_module) -> dict[str, float]:
        vectors = global_items.adapter(global_items.llm_vectors[index]).cpu().numpy()
        return {"cross_nbrs": cross_domain_neighbours(vectors, domain)}

    def before() -> float:
        return cross_domain_neighbours(global_items.llm_vectors[index].cpu().numpy(), domain)

    measure.before = before
    return measure
