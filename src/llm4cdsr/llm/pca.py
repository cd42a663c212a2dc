"""PCA views of the item embeddings: one global (both domains), one local per domain.

Fitted on item vectors only (scikit-learn). The fitted mean and components are saved next to the
projected tables, so a vector made later (an item unseen in training) projects the same way:
`project(vector, mean, components)`.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA

log = logging.getLogger(__name__)


def fit_pca(vectors: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(projected (n, k), mean (D,), components (k, D), explained variance ratio (k,)).

    k is at most min(n_components, n, D); the caller pads to the size it promised.
    """
    n, d = vectors.shape
    k = min(n_components, n, d)
    if k < 1:
        raise ValueError(f"cannot fit PCA on {n} vectors of width {d}")
    # Exact and deterministic. With many more items than dimensions, the eigendecomposition of the
    # D x D covariance is far cheaper than an SVD of the n x D matrix (36k x 384: ~1 s vs ~20 s).
    solver = "covariance_eigh" if n >= 2 * d else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed)
    projected = pca.fit_transform(vectors.astype(np.float64))
    c = np.ascontiguousarray
    return (c(projected, dtype=np.float32), c(pca.mean_, dtype=np.float32), c(pca.components_, dtype=np.float32),
            c(pca.explained_variance_ratio_, dtype=np.float32))


def project(vectors: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Apply a saved PCA: (n, D) -> (n, k)."""
    return ((np.asarray(vectors, dtype=np.float32) - mean) @ components.T).astype(np.float32)


def pca_tables(raw: np.ndarray, n_items: tuple[int, int], domains: tuple[str, str], global_dim: int, local_dim: int,
               seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors for pca.safetensors and a summary for meta.json.

    raw: (N + 1, D) by global id, row 0 padding. Output "global" (N + 1, d_g) by global id and
    "local.<domain>" (n_d + 1, local_dim) by local id, row 0 zeros. d_g = min(global_dim, D):
    never wider than the model. A local table keeps its promised width even when a tiny domain
    has fewer items than local_dim (missing components are zero columns), so model shapes do not
    depend on the data size.
    """
    n_a, n_b = n_items
    items = raw[1:]
    d = raw.shape[1]
    d_g = min(global_dim, d)
    tensors: dict[str, np.ndarray] = {}
    summary: dict = {}

    proj, mean, comps, evr = fit_pca(items, d_g, seed)
    table = np.zeros((len(raw), d_g), dtype=np.float32)
    table[1:, : proj.shape[1]] = proj
    tensors.update({"global": table, "global.mean": mean, "global.components": comps,
                    "global.explained_variance_ratio": evr})
    summary["global"] = {"dim": d_g, "fitted_components": int(proj.shape[1]), "explained_variance": float(evr.sum())}

    for name, lo, hi in ((domains[0], 0, n_a), (domains[1], n_a, n_a + n_b)):
        proj, mean, comps, evr = fit_pca(items[lo:hi], local_dim, seed)
        table = np.zeros((hi - lo + 1, local_dim), dtype=np.float32)
        table[1:, : proj.shape[1]] = proj
        tensors.update({f"local.{name}": table, f"local.{name}.mean": mean, f"local.{name}.components": comps,
                        f"local.{name}.explained_variance_ratio": evr})
        if proj.shape[1] < local_dim:
            log.warning("embed: domain %s has %d items, PCA width %d < %d; padded with zero columns",
                        name, hi - lo, proj.shape[1], local_dim)
        summary[f"local.{name}"] = {"dim": local_dim, "fitted_components": int(proj.shape[1]),
                                    "explained_variance": float(evr.sum())}
    return tensors, summary
