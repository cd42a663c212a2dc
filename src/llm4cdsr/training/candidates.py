"""The sampled mode's candidates: drawn once with a seed, saved, reused by every model, seed and epoch.

For each user and stage (valid, test): `num_negatives` distinct items drawn uniformly from the
domain of that stage's target, none of them an item of the user's WHOLE history (training items and
both targets). Excluding the whole history keeps the candidates independent of the training split,
so an experiment that changes training data (keeping the users) scores on the same candidates.
The only thing the test target decides about validation is that it is never a validation negative.

    <workspace>/candidates/sampled-n<N>-seed<S>-<dataset fingerprint>/
        valid.npy   int32 (U, N) global ids
        test.npy    int32 (U, N) global ids
        meta.json   num_negatives, seed, dataset fingerprint, users, domains
        valid_local.npy, test_local.npy   the authors' chimeric ruler only (eval.chimeric_negatives):
                    a second set, drawn independently by the same rule, whose item j gives negative j
                    its local part
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from llm4cdsr.data.dataset import PreparedDataset, Split
from llm4cdsr.io import load_npy, read_json, save_npy, write_json
from llm4cdsr.training.batching import MembershipIndex

log = logging.getLogger(__name__)


class CandidateError(ValueError):
    """Saved candidates do not fit this dataset or split."""


def dataset_fingerprint(dataset: PreparedDataset) -> str:
    """SHA-256 of what decides ids and histories (domains, item counts, the sequences)."""
    h = hashlib.sha256()
    h.update(repr((list(dataset.domains), list(map(int, dataset.n_items)))).encode())
    h.update(np.ascontiguousarray(dataset.seq_offsets, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(dataset.seq_items, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def draw_negatives(
    dataset: PreparedDataset, target_domain: np.ndarray, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """(U, n) distinct global ids per row from each row's target domain, outside the user's history."""
    n_users = dataset.n_users
    n_dom = np.where(target_domain == 1, dataset.n_items[1], dataset.n_items[0]).astype(np.int64)  # (U,)
    own_items = _history_count_by_domain(dataset)[np.arange(n_users), target_domain]  # (U,)
    short = np.flatnonzero(n_dom - own_items < num_negatives)
    if len(short):
        u = int(short[0])
        raise CandidateError(
            f"user {u} has only {int(n_dom[u] - own_items[u])} items of its target's domain left to draw "
            f"{num_negatives} negatives from; lower eval.num_negatives"
        )
    offset = np.where(target_domain == 1, dataset.n_items[0], 0).astype(np.int64)[:, None]  # (U, 1)
    membership = MembershipIndex(dataset.seq_offsets, dataset.seq_items, dataset.n_items_total)
    users = np.broadcast_to(np.arange(n_users)[:, None], (n_users, num_negatives))  # (U, n)
    out = offset + rng.integers(1, n_dom[:, None] + 1, size=(n_users, num_negatives))  # (U, n)
    bad = membership.contains(users, out) | _duplicates(out)
    while bad.any():  # redraw the rejected entries only
        rows, cols = np.nonzero(bad)
        out[rows, cols] = offset[rows, 0] + rng.integers(1, n_dom[rows] + 1)
        bad[:] = False
        bad[rows, cols] = membership.contains(rows, out[rows, cols])
        bad |= _duplicates(out)
    return out.astype(np.int32)


def _duplicates(rows: np.ndarray) -> np.ndarray:
    """True at every repeat of a value within its row (the first occurrence in sorted order stays)."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat_sorted = np.zeros(rows.shape, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return repeat


def _history_count_by_domain(dataset: PreparedDataset) -> np.ndarray:
    user_of = np.repeat(np.arange(dataset.n_users), dataset.lengths)
    counts = np.zeros((dataset.n_users, 2), dtype=np.int64)
    np.add.at(counts, (user_of, dataset.domain_of(dataset.seq_items)), 1)
    return counts


def load_or_draw(folder: Path, dataset: PreparedDataset, split: Split, num_negatives: int, seed: int,
                 chimeric: bool = False) -> dict[str, np.ndarray]:
    """{"valid": (U, n), "test": (U, n)} from `folder` (under the workspace's candidates/), drawn
    and saved on first use. Checked against the split: no candidate is a target or input item.
    `chimeric`: also {"valid_local", "test_local"}, the second set of the authors' chimeric ruler."""
    fingerprint = dataset_fingerprint(dataset)
    path = Path(folder) / f"sampled-n{num_negatives}-seed{seed}-{fingerprint}"
    if (path / "meta.json").is_file():
        meta = read_json(path / "meta.json")
        if meta.get("dataset_fingerprint") != fingerprint or meta.get("users") != dataset.n_users:
            raise CandidateError(f"{path}: made for another dataset; delete it")
        cands = {stage: load_npy(path / f"{stage}.npy") for stage in ("valid", "test")}
    else:
        cands = {}
        for stage_id, stage in enumerate(("valid", "test")):
            targets = split.valid_target if stage == "valid" else split.test_target
            rng = np.random.default_rng([seed, stage_id])
            cands[stage] = draw_negatives(dataset, dataset.domain_of(targets).astype(np.int64), num_negatives, rng)
            save_npy(path / f"{stage}.npy", cands[stage])
        write_json(path / "meta.json", {
            "num_negatives": num_negatives, "seed": seed, "dataset_fingerprint": fingerprint,
            "users": dataset.n_users, "domains": list(dataset.domains),
            "rule": "uniform over the target's domain, distinct, none from the user's whole history",
        })
        log.info("drew sampled-evaluation candidates: %s", path)
    check_candidates(cands, dataset, split)
    if chimeric:
        for stage_id, stage in enumerate(("valid", "test")):
            file = path / f"{stage}_local.npy"
            if not file.is_file():
                targets = split.valid_target if stage == "valid" else split.test_target
                rng = np.random.default_rng([seed, stage_id, 1])
                save_npy(file, draw_negatives(dataset, dataset.domain_of(targets).astype(np.int64), num_negatives, rng))
            cands[f"{stage}_local"] = load_npy(file)
        check_candidates({"valid": cands["valid_local"], "test": cands["test_local"]}, dataset, split)
    return cands


def check_candidates(cands: dict[str, np.ndarray], dataset: PreparedDataset, split: Split) -> None:
    """Every candidate is of its target's domain, and none is the target or an input item."""
    membership = MembershipIndex(split.train_offsets, split.train_items, dataset.n_items_total)
    for stage, targets in (("valid", split.valid_target), ("test", split.test_target)):
        c = cands[stage]
        if c.shape[0] != dataset.n_users:
            raise CandidateError(f"{stage} candidates cover {c.shape[0]} users, the dataset has {dataset.n_users}")
        users = np.broadcast_to(np.arange(dataset.n_users)[:, None], c.shape)
        same_domain = dataset.domain_of(c) == dataset.domain_of(targets)[:, None]
        clash = (c == targets[:, None]) | membership.contains(users, c)
        if stage == "test":
            clash |= c == split.valid_target[:, None]
        if not same_domain.all() or clash.any():
            raise CandidateError(f"{stage} candidates do not fit this split (a target, a history item or another domain)")
