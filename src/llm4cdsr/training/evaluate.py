"""Evaluation: the rank of each user's target, in two modes, then metrics overall, per domain and by group.

Inputs never hold the target: validation reads the training history and predicts the validation
target; test reads the training history plus the validation target and predicts the test target.

- sampled (the paper's): rank among the target and the saved negatives (training/candidates.py).
  Each candidate is ONE item in every part of a model's score. `local_negatives` switches to the
  authors' chimeric ruler (comparison only): negative j of a two-part model (LLM4CDSR) is scored
  global part of negatives[j] + local part of local_negatives[j], while the target is one item in
  both, which inflates sampled metrics (METHOD.md).
- full: rank among every item of the target's domain, except the user's other history items
  (the standard "filtered" protocol: an item already bought is not a recommendation). The target
  itself always stays, even if it also occurs earlier in the history.
Ties count half (training/metrics.py). Users are batched by history length; each batch is one
matrix product against the domain's item table, computed once per evaluation.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from llm4cdsr.data.dataset import PreparedDataset, Split
from llm4cdsr.models.base import NEG_INF, Recommender
from llm4cdsr.training.batching import left_pad
from llm4cdsr.training.metrics import metrics_from_ranks, target_rank

MODES = ("sampled", "full")


@dataclass
class EvalInputs:
    offsets: np.ndarray  # int64 (U + 1,): input histories, CSR
    items: np.ndarray  # int64 global ids
    targets: np.ndarray  # int64 (U,)


def eval_inputs(split: Split, stage: str) -> EvalInputs:
    """Validation: training history -> valid target. Test: training history + valid target -> test target."""
    if stage == "valid":
        return EvalInputs(split.train_offsets.astype(np.int64), split.train_items.astype(np.int64), split.valid_target.astype(np.int64))
    if stage != "test":
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    n_users = len(split.valid_target)
    items = np.insert(split.train_items.astype(np.int64), split.train_offsets[1:], split.valid_target.astype(np.int64))
    offsets = split.train_offsets.astype(np.int64) + np.arange(n_users + 1)
    return EvalInputs(offsets, items, split.test_target.astype(np.int64))


@torch.no_grad()
def rank_targets(
    model: Recommender,
    inputs: EvalInputs,
    n_items: tuple[int, int],
    negatives: np.ndarray | None,
    modes: Iterable[str] = MODES,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    users: np.ndarray | None = None,
    local_negatives: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """{mode: (U,) float ranks}; NaN for users not evaluated (a domain outside model.eval_domains,
    or not in `users`). negatives: (U, n) global ids for the sampled mode; local_negatives (U, n):
    the chimeric ruler's second set (ignored by a model whose score has one part)."""
    modes = tuple(modes)
    n_users = len(inputs.targets)
    out = {mode: np.full(n_users, np.nan, dtype=np.float32) for mode in modes}
    target_domain = (inputs.targets > n_items[0]).astype(np.int64)
    keep = np.isin(target_domain, model.eval_domains)
    if users is not None:
        keep &= np.isin(np.arange(n_users), users)
    todo = np.flatnonzero(keep)
    lengths = np.minimum(np.diff(inputs.offsets), model.max_len)
    todo = todo[np.argsort(lengths[todo], kind="stable")]  # similar lengths share a batch: less padding

    was_training = model.training
    model.eval()
    tables = {d: model.item_table(d) for d in model.eval_domains}
    offset = np.array([0, n_items[0]])
    for start in range(0, len(todo), batch_size):
        batch_users = todo[start : start + batch_size]
        seq = torch.from_numpy(left_pad(inputs.offsets, inputs.items, batch_users, model.max_len)).to(device)
        states = model.user_states(seq, torch.from_numpy(batch_users).to(device))  # (B, 2, K)
        for d in model.eval_domains:
            rows = np.flatnonzero(target_domain[batch_users] == d)
            if not len(rows):
                continue
            users_d = batch_users[rows]
            states_d = states[torch.from_numpy(rows).to(device)]  # (B_d, 2, K)
            target_local = torch.from_numpy(inputs.targets[users_d] - offset[d]).to(device)  # (B_d,)
            if "sampled" in modes:
                cands = np.concatenate([inputs.targets[users_d, None], negatives[users_d]], axis=1) - offset[d]  # (B_d, 1 + n)
                scores = model.score(states_d, d, torch.from_numpy(cands.astype(np.int64)).to(device), table=tables[d])  # (B_d, 1 + n)
                if local_negatives is not None and model.score_split is not None:
                    local = np.concatenate([inputs.targets[users_d, None], local_negatives[users_d]], axis=1) - offset[d]
                    scores = chimeric_scores(states_d[:, d], tables[d], torch.from_numpy(cands.astype(np.int64)).to(device),
                                             torch.from_numpy(local.astype(np.int64)).to(device), model.score_split)
                out["sampled"][users_d] = target_rank(scores[:, 1:], scores[:, 0]).cpu().numpy()
            if "full" in modes:
                scores = model.score(states_d, d, table=tables[d])  # (B_d, n_d + 1)
                row_index = torch.arange(len(rows), device=device)
                target_scores = scores[row_index, target_local].clone()
                hist_rows, hist_cols = _history_of_domain(inputs, users_d, d, n_items)
                scores[torch.from_numpy(hist_rows).to(device), torch.from_numpy(hist_cols).to(device)] = NEG_INF
                scores[row_index, target_local] = NEG_INF  # the target is compared with the others only
                out["full"][users_d] = target_rank(scores, target_scores).cpu().numpy()
    model.train(was_training)
    return out


def chimeric_scores(query: torch.Tensor, table: torch.Tensor, global_ids: torch.Tensor, local_ids: torch.Tensor,
                    split: int) -> torch.Tensor:
    """The authors' sampled scoring: query (B, K) . [table[global_ids, :split] | table[local_ids, split:]]
    -> (B, C). Column c takes its global part from item global_ids[:, c] and its local part from
    item local_ids[:, c] (local ids of one domain's table)."""
    global_part = torch.einsum("bk,bck->bc", query[:, :split], table[global_ids, :split])  # (B, C)
    local_part = torch.einsum("bk,bck->bc", query[:, split:], table[local_ids, split:])  # (B, C)
    return global_part + local_part


def _history_of_domain(inputs: EvalInputs, users: np.ndarray, domain: int, n_items: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, local id) of every item of `domain` in the WHOLE input history of each user (not only
    the newest max_len), row = the user's position in `users`."""
    starts, ends = inputs.offsets[users], inputs.offsets[users + 1]
    lengths = ends - starts
    rows = np.repeat(np.arange(len(users)), lengths)
    index = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    items = inputs.items[index]
    in_domain = (items > n_items[0]) == bool(domain)
    return rows[in_domain], (items[in_domain] - (n_items[0] if domain else 0))


# ----- per-user table and summaries --------------------------------------------------------


def user_frame(
    dataset: PreparedDataset, split: Split, targets: np.ndarray, ranks: dict[str, np.ndarray], train_counts: np.ndarray
) -> pd.DataFrame:
    """One row per evaluated user: ranks and the attributes the groups are made of."""
    train_domain = dataset.domain_of(split.train_items)
    user_of = np.repeat(np.arange(dataset.n_users), split.train_lengths)
    has = np.zeros((dataset.n_users, 2), dtype=bool)
    has[user_of, train_domain] = True
    frame = pd.DataFrame({
        "user_idx": np.arange(dataset.n_users, dtype=np.int64),
        "target": targets.astype(np.int64),
        "domain": np.asarray(dataset.domains, dtype=object)[dataset.domain_of(targets)],
        "train_length": split.train_lengths.astype(np.int64),
        "both_domains": has.all(1),
        "target_train_count": train_counts[targets].astype(np.int64),
    })
    for mode, r in ranks.items():
        frame[f"rank_{mode}"] = r
    return frame[~np.isnan(frame[[f"rank_{m}" for m in ranks]].to_numpy()).all(1)].reset_index(drop=True)


def _bucket_labels(values: np.ndarray, edges: list[int], prefix: str) -> np.ndarray:
    """Upper-inclusive buckets: edges [5, 10] -> "len<=5", "len6-10", "len>10"."""
    edges = sorted(int(e) for e in edges)
    names, low = [], None
    for e in edges:
        names.append(f"{prefix}<={e}" if low is None else (f"{prefix}{low}" if low == e else f"{prefix}{low}-{e}"))
        low = e + 1
    names.append(f"{prefix}>{edges[-1]}" if edges else f"{prefix}all")
    return np.asarray(names, dtype=object)[np.searchsorted(np.asarray(edges), values, side="left")]


def summarize(
    frame: pd.DataFrame,
    mode: str,
    domains: tuple[str, str],
    ks: Iterable[int],
    length_buckets: list[int],
    popularity_buckets: list[int],
) -> dict:
    """Metrics overall, per domain (by name) and by group, each with its user count."""
    ks = list(ks)
    ranks = frame[f"rank_{mode}"].to_numpy(dtype=np.float64)

    def block(mask: np.ndarray) -> dict:
        return {**metrics_from_ranks(ranks[mask], ks), "users": int((mask & ~np.isnan(ranks)).sum())}

    everyone = np.ones(len(frame), dtype=bool)
    out: dict = {"overall": block(everyone)}
    for name in domains:
        mask = (frame["domain"] == name).to_numpy()
        if mask.any():
            out[name] = block(mask)
    groups: dict[str, dict] = {"domains_in_history": {}, "history_length": {}, "target_popularity": {}}
    both = frame["both_domains"].to_numpy()
    for label, mask in (("both", both), ("one", ~both)):
        if mask.any():
            groups["domains_in_history"][label] = block(mask)
    for key, column, edges, prefix in (
        ("history_length", "train_length", length_buckets, "len"),
        ("target_popularity", "target_train_count", popularity_buckets, "pop"),
    ):
        labels = _bucket_labels(frame[column].to_numpy(), edges, prefix)
        for label in dict.fromkeys(_bucket_labels(np.asarray(sorted(set(frame[column]))), edges, prefix)):
            groups[key][label] = block(labels == label)
    out["groups"] = groups
    return out
