"""Training batches built straight from the CSR history arrays, vectorised (no loop over positions).

Each batch is padded to its own longest history, not to max_len. With bucket_pool > 1 users are
also bucketed by length (shuffle, cut into pools of `bucket_pool` batches, sort each pool by
length, cut into batches, shuffle the batches), which pads far less but scored lower on Food x
Kitchen for every model tried (docs/results.md, "Batch order"): a batch of short histories holds few
targets, and the per-batch mean weighs each of them more (train.loss_norm=epoch undoes that part).
The default, 1, keeps batches in random order.

A batch (dict of tensors) for users u_1..u_B, their training history truncated to the newest
max_len + 1 items, left-padded to width L:
    mixed_seq  (B, L)  input items (global ids); step t predicts targets[:, t]
    targets    (B, L)  the next item (0 where there is none)
    negatives  (B, L)  one item of the target's domain the user never had in training (0 where no target)
    reg_items  (B, 2)  one A item and one B item of the user's window (0 where the user lacks that domain)
    align_pairs (P, 2) (A item, B item) of every switch of domain between neighbouring items of a window
    user_idx   (B,)    user indices (for profiles)
and, by objective (`LossConfig`; ce needs no negatives, so bce's are drawn for bce only):
    chimeric_negatives (B, L)  bce with chimeric negatives: a second, independent negative per step
    global_negatives   (B, L)  chimeric with global_negative_domain=input: the global part's negative, of
                               the domain of the step's INPUT item (mixed_seq), as the authors draw it
    shared_negatives   (2, N)  sampled_ce: N items per domain (global ids), shared by the batch's steps
    item_logq          (N_total + 1,)  sampled_ce with logq_correction: log sampling probability by global id
Every random choice of epoch e, batch b comes from a generator seeded by (seed, e, b): a resumed
run draws exactly what an uninterrupted run would.
"""
from __future__ import annotations

import numpy as np
import torch

from llm4cdsr.models.base import LossConfig


def left_pad(offsets: np.ndarray, items: np.ndarray, users: np.ndarray, max_len: int, width: int | None = None) -> np.ndarray:
    """The newest max_len items of each user's history, left-padded: (B, W) int64.

    W = the longest kept history in the batch (at least 1) unless `width` is given.
    """
    starts, ends = offsets[users], offsets[users + 1]
    kept = np.minimum(ends - starts, max_len)  # (B,)
    if width is None:
        width = max(int(kept.max()) if len(kept) else 0, 1)
    col = np.arange(width)[None, :]  # (1, W)
    index = ends[:, None] - width + col  # (B, W): position in `items` of each column
    real = col >= width - kept[:, None]  # (B, W)
    return np.where(real, items[np.clip(index, 0, max(len(items) - 1, 0))], 0).astype(np.int64)


class MembershipIndex:
    """Is item i in user u's history? Sorted (u, i) keys, looked up with searchsorted."""

    def __init__(self, offsets: np.ndarray, items: np.ndarray, n_total_items: int):
        self.stride = np.int64(n_total_items + 1)
        users = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
        self.keys = np.sort(users * self.stride + items.astype(np.int64))

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        query = users.astype(np.int64) * self.stride + items.astype(np.int64)
        pos = np.searchsorted(self.keys, query)
        return self.keys[np.minimum(pos, len(self.keys) - 1)] == query if len(self.keys) else np.zeros(query.shape, bool)


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    domains: np.ndarray,
    n_items: tuple[int, int],
    exclude: MembershipIndex,
    max_rounds: int = 100,
) -> np.ndarray:
    """One global id per entry, uniform over local ids 1..n_d INCLUSIVE of its domain, never in the
    user's history. Vectorised rejection sampling: only rejected entries are redrawn."""
    n_dom = np.where(domains == 1, n_items[1], n_items[0])
    offset = np.where(domains == 1, n_items[0], 0)
    out = offset + rng.integers(1, n_dom + 1)
    todo = np.flatnonzero(exclude.contains(users, out))
    for _ in range(max_rounds):
        if not len(todo):
            break
        out[todo] = offset[todo] + rng.integers(1, n_dom[todo] + 1)
        todo = todo[exclude.contains(users[todo], out[todo])]
    # A user who had (nearly) every item of a domain keeps a few history items as negatives.
    return out


# At most this many cross-domain pairs per batch: the alignment's logits are P x P.
MAX_ALIGN_PAIRS = 1024


def cross_domain_pairs(window: np.ndarray, n_a: int, limit: int = MAX_ALIGN_PAIRS) -> np.ndarray:
    """(P, 2) global ids (A item, B item) of every switch of domain between two neighbouring items
    of a window (B, W) of training histories: items a user took one right after the other across
    the two domains, the pairs `model.align=cosine` pulls together. Deterministic (no draw), so
    that adding it leaves every random stream of the batch as it was; the first `limit` in
    row-major order when there are more."""
    left, right = window[:, :-1], window[:, 1:]  # (B, W - 1)
    both = (left > 0) & (right > 0)
    switch = both & ((left > n_a) != (right > n_a))
    a = np.where(left > n_a, right, left)[switch]  # the A item of each switch
    b = np.where(left > n_a, left, right)[switch]
    return np.stack([a, b], axis=1)[:limit].astype(np.int64)  # (P, 2)


class TrainBatches:
    """Epoch plans and batch tensors for sequence-to-sequence training."""

    def __init__(
        self,
        offsets: np.ndarray,
        items: np.ndarray,
        n_items: tuple[int, int],
        max_len: int,
        batch_size: int,
        seed: int,
        bucket_pool: int = 1,
        dynamic_padding: bool = True,
        loss: LossConfig | None = None,
        loss_norm: str = "batch",
    ):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.items = np.asarray(items, dtype=np.int64)
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = max_len
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_pool = max(int(bucket_pool), 1)
        self.dynamic_padding = dynamic_padding
        lengths = np.diff(self.offsets)
        # A history of one item has no (input, next item) pair.
        self.users = np.flatnonzero(lengths >= 2)
        self.lengths = np.minimum(lengths, max_len + 1)
        self.membership = MembershipIndex(self.offsets, self.items, sum(self.n_items))
        self.loss = loss or LossConfig()
        if self.loss.kind == "sampled_ce":
            self.sampling = self._sampling_distributions()
        # loss_norm=epoch: per domain, the mean number of next-item targets of a batch over the epoch,
        # the divisor of that domain's summed loss in every batch (batch["target_norm"]).
        self.target_norm = self._targets_per_batch() if loss_norm == "epoch" else None

    def _targets_per_batch(self) -> torch.Tensor:
        """(2,) float: the epoch's next-item targets of each domain, divided by the batches of an
        epoch (a target: every item of a training window but its first, as `build` makes them)."""
        take = self.lengths[self.users] - 1  # targets per user: the newest `take` items of its history
        starts = self.offsets[self.users + 1] - take
        first = np.cumsum(take) - take  # where each user's targets start in the concatenation
        idx = np.repeat(starts - first, take) + np.arange(int(take.sum()))
        targets = self.items[idx]
        in_b = float((targets > self.n_items[0]).sum())
        counts = np.array([len(targets) - in_b, in_b])
        return torch.tensor(np.maximum(counts / len(self), 1.0), dtype=torch.float32)

    def _sampling_distributions(self) -> list[np.ndarray]:
        """Per domain, the cumulative sampling probability of local ids 1..n_d (uniform, or with
        logq_correction in proportion to training counts + 1, so that no item is never drawn), and
        log q by global id."""
        counts = np.bincount(self.items, minlength=sum(self.n_items) + 1).astype(np.float64) + 1.0
        cdfs, logq = [], np.zeros(sum(self.n_items) + 1, dtype=np.float32)
        for d in (0, 1):
            lo = 1 + (self.n_items[0] if d == 1 else 0)
            weights = counts[lo : lo + self.n_items[d]] if self.loss.logq_correction else np.ones(self.n_items[d])
            q = weights / weights.sum()
            logq[lo : lo + self.n_items[d]] = np.log(q)
            cdfs.append(np.cumsum(q))
        self.item_logq = torch.from_numpy(logq)
        return cdfs

    def __len__(self) -> int:
        return int(-(-len(self.users) // self.batch_size))

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of user indices) of one epoch, bucketed by length, in shuffled order."""
        rng = np.random.default_rng([self.seed, epoch, 0])
        users = rng.permutation(self.users)
        pool = self.batch_size * self.bucket_pool
        batches: list[np.ndarray] = []
        for start in range(0, len(users), pool):
            chunk = users[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def build(self, users: np.ndarray, epoch: int, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, 1, index])
        width = None if self.dynamic_padding else self.max_len + 1
        window = left_pad(self.offsets, self.items, users, self.max_len + 1, width)  # (B, L + 1)
        mixed_seq, targets = window[:, :-1], window[:, 1:]  # (B, L), (B, L)
        has_target = (targets > 0) & (mixed_seq > 0)  # (B, L)
        targets = np.where(has_target, targets, 0)
        mixed_seq = np.ascontiguousarray(mixed_seq)

        rows, cols = np.nonzero(has_target)
        target_domain = (targets[rows, cols] > self.n_items[0]).astype(np.int64)
        extra: dict[str, torch.Tensor] = {}
        negatives = np.zeros_like(targets)
        if self.loss.kind == "bce":
            negatives[rows, cols] = sample_negatives(rng, users[rows], target_domain, self.n_items, self.membership)
            if self.loss.chimeric_negatives:
                chimeric = np.zeros_like(targets)
                chimeric[rows, cols] = sample_negatives(rng, users[rows], target_domain, self.n_items, self.membership)
                extra["chimeric_negatives"] = torch.from_numpy(chimeric)
            if self.loss.input_domain_negatives:
                input_domain = (mixed_seq[rows, cols] > self.n_items[0]).astype(np.int64)
                global_negatives = np.zeros_like(targets)
                global_negatives[rows, cols] = sample_negatives(rng, users[rows], input_domain, self.n_items, self.membership)
                extra["global_negatives"] = torch.from_numpy(global_negatives)
        elif self.loss.kind == "sampled_ce":
            shared = np.stack([
                1 + (self.n_items[0] if d == 1 else 0)
                + np.minimum(np.searchsorted(cdf, rng.random(self.loss.num_negatives) * cdf[-1], side="right"), len(cdf) - 1)
                for d, cdf in enumerate(self.sampling)
            ])  # (2, N) global ids
            extra["shared_negatives"] = torch.from_numpy(shared.astype(np.int64))
            if self.loss.logq_correction:
                extra["item_logq"] = self.item_logq

        # One random A item and one random B item of the window per user (argmax of random keys).
        keys = rng.random(window.shape)  # (B, L + 1)
        is_b = window > self.n_items[0]  # (B, L + 1)
        reg_items = np.zeros((len(users), 2), dtype=np.int64)
        for d, in_d in enumerate(((window > 0) & ~is_b, is_b)):
            pick = np.where(in_d, keys, -1.0).argmax(1)  # (B,)
            reg_items[:, d] = np.where(in_d.any(1), window[np.arange(len(users)), pick], 0)

        return {
            "mixed_seq": torch.from_numpy(mixed_seq),
            "targets": torch.from_numpy(targets),
            "negatives": torch.from_numpy(negatives),
            "reg_items": torch.from_numpy(reg_items),
            "align_pairs": torch.from_numpy(cross_domain_pairs(window, self.n_items[0])),
            "user_idx": torch.from_numpy(users.astype(np.int64)),
            **({"target_norm": self.target_norm} if self.target_norm is not None else {}),
            **extra,
        }
