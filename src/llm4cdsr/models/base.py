"""What every recommender in this package shares: the scoring interface and the id helpers.

Every model scores an item as a dot product between a per-domain user query and a per-domain item
table, so one interface serves training, evaluation, recommendation and serving:

    states = model.user_states(mixed_seq, user_idx)     # (B, 2, K): one query per domain
    table = model.item_table(domain)                     # (n_d + 1, K): row = local id, row 0 unused
    scores = model.score(states, domain)                 # (B, n_d + 1), column 0 = -inf
    scores = model.score(states, domain, candidates)     # (B, C) for local ids (B, C)

`mixed_seq` is a batch of histories: global item ids, left-padded with 0, at most `max_len` long,
oldest first (`pad_histories` builds it). Training calls `model(batch)`, which returns a dict with
the scalar "loss" and detached parts for logging. Sequence models share one next-item objective
(`next_item_loss`, chosen by `LossConfig`): each step's logit for an item is the dot product of the
step's query with that item's row of `item_table`, exactly as in scoring.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = float("-inf")


class Recommender(nn.Module):
    """Base class: subclasses define forward (training loss), user_states and item_table."""

    n_items: tuple[int, int]
    max_len: int
    # Domains whose targets this model is evaluated on (a single-domain model may cover one).
    eval_domains: tuple[int, ...] = (0, 1)
    # Per-user profile vectors are read in training only; set when the model uses them.
    uses_profiles: bool = False
    # Two-part models (LLM4CDSR: global + local): the column of K where the local part starts. The
    # authors' "chimeric" sampled scoring (eval.chimeric_negatives) takes each part from another item.
    score_split: int | None = None
    # Warm start (`warm_start`, model.init_from): how the tensor names of a finished run of another
    # model map onto this model's, by that model's name: {its prefix: our prefix}. A model not named
    # here maps by equal names (a run of the same model).
    warm_start_names: dict[str, dict[str, str]] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded global ids -> (B, 2, K) query per domain."""
        raise NotImplementedError

    def item_table(self, domain: int) -> torch.Tensor:
        """(n_d + 1, K) item vectors of one domain by local id; row 0 is padding."""
        raise NotImplementedError

    def score(
        self,
        states: torch.Tensor,
        domain: int,
        candidates: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of local ids `candidates` (B, C), or of every item of `domain` (B, n_d + 1).

        Pass `table` (from `item_table`) to reuse it across batches: evaluation computes it once.
        """
        if table is None:
            table = self.item_table(domain)
        query = states[:, domain]  # (B, K)
        if candidates is None:
            scores = query @ table.T  # (B, n_d + 1)
            scores[:, 0] = NEG_INF
            return scores
        return torch.einsum("bk,bck->bc", query, table[candidates])  # (B, C)

    def score_vectors(
        self,
        states: torch.Tensor,
        domain: int,
        global_vectors: torch.Tensor,
        local_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of items given by their LLM vectors (inductive: items unseen in training).

        Only models whose item side is computed from LLM vectors support it.
        """
        raise NotImplementedError(f"{type(self).__name__} scores items by id only")

    def fit_statistics(self, train_offsets: np.ndarray, train_items: np.ndarray) -> None:
        """Hook for models built from training counts (popularity); others ignore it."""

    def warm_start(self, source_model: str, weights: dict[str, torch.Tensor]) -> list[str]:
        """Copy into this model the tensors of `weights` (the saved weights of a run of `source_model`)
        that `warm_start_names` maps onto a tensor of ours; returns our names it set. A mapped tensor
        of another shape is an error (the two runs differ in width or item count); tensors mapped to
        no name of ours are left out (a SASRec's tensors cover part of a larger model)."""
        renames = self.warm_start_names.get(source_model, {"": ""})
        ours = self.state_dict()
        copied = {}
        for name, tensor in weights.items():
            prefix = next((p for p in renames if name.startswith(p)), None)
            if prefix is None:
                continue
            target = renames[prefix] + name[len(prefix):]
            if target not in ours:
                continue
            if tuple(ours[target].shape) != tuple(tensor.shape):
                raise ValueError(f"{source_model} tensor {name} has shape {tuple(tensor.shape)}, but {target} here has "
                                 f"{tuple(ours[target].shape)}: the runs differ in model width or item counts")
            copied[target] = tensor
        self.load_state_dict(copied, strict=False)
        return sorted(copied)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())


# ----- ids and sequences -------------------------------------------------------------------


def domain_of(global_ids: torch.Tensor, n_items_a: int) -> torch.Tensor:
    """0 for domain A, 1 for domain B (padding maps to 0: mask it yourself)."""
    return (global_ids > n_items_a).long()


def to_local(global_ids: torch.Tensor, n_items_a: int) -> torch.Tensor:
    return torch.where(global_ids > n_items_a, global_ids - n_items_a, global_ids)


def domain_global_ids(n_items: tuple[int, int], domain: int, device=None) -> torch.Tensor:
    """Global ids of one domain's items in local-id order: (n_d,)."""
    offset = n_items[0] if domain == 1 else 0
    return torch.arange(offset + 1, offset + n_items[domain] + 1, device=device)


def domain_subsequence(mixed_seq: torch.Tensor, n_items_a: int, domain: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The items of one domain, kept in order and left-padded, and where each mixed step lands.

    Returns
      local_seq (B, W): local ids of the domain's items in `mixed_seq`, left-padded; W is the
        longest subsequence of the batch (at least 1), or `width` if given (benchmarks pad to max_len).
      last_col (B, L): for each mixed step t, the column in `local_seq` of the latest
        domain item at or before t; -1 where the user has had none of the domain yet.
    """
    in_domain = (mixed_seq > 0) & (domain_of(mixed_seq, n_items_a) == domain)  # (B, L)
    seen = in_domain.long().cumsum(1)  # (B, L): domain items at or before t
    count = seen[:, -1]  # (B,)
    longest = max(int(count.max()), 1) if count.numel() else 1
    width = longest if width is None else max(width, longest)
    pad = width - count  # (B,)
    last_col = torch.where(seen > 0, pad[:, None] + seen - 1, torch.full_like(seen, -1))  # (B, L)
    local_seq = mixed_seq.new_zeros(mixed_seq.shape[0], width)
    rows = torch.arange(mixed_seq.shape[0], device=mixed_seq.device)[:, None].expand_as(mixed_seq)  # (B, L)
    local_seq[rows[in_domain], last_col[in_domain]] = to_local(mixed_seq[in_domain], n_items_a)
    return local_seq, last_col


def gather_steps(states: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """states (B, W, H) at columns cols (B, L), zero where cols < 0 -> (B, L, H)."""
    index = cols.clamp(min=0)[..., None].expand(-1, -1, states.shape[-1])  # (B, L, H)
    picked = states.gather(1, index)  # (B, L, H)
    return picked * (cols >= 0)[..., None]


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Left-pad histories of global ids (oldest first) to one (B, L) tensor, keeping the last max_len."""
    kept = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    width = max((len(h) for h in kept), default=1) or 1
    out = np.zeros((len(kept), width), dtype=np.int64)
    for row, h in enumerate(kept):  # one row per user, not per position
        if len(h):
            out[row, width - len(h):] = h
    return torch.from_numpy(out)


# ----- losses ------------------------------------------------------------------------------

LOSSES = ("bce", "ce", "sampled_ce")
GLOBAL_NEGATIVE_DOMAINS = ("target", "input")


@dataclass
class LossConfig:
    """The next-item objective (the `train` keys loss, num_negatives, logq_correction, chimeric_negatives).

    bce         the paper's: binary cross-entropy of the positive and ONE sampled negative per step
    ce          softmax cross-entropy over every item of the target's domain
    sampled_ce  softmax over the positive and `num_negatives` items of the target's domain, drawn per
                batch and shared by all its steps; `logq_correction` draws them in proportion to
                training popularity and subtracts log q from every logit (Yi et al., RecSys 2019)
    chimeric_negatives (bce only, two-part models): the negative's local part is scored on a second,
    independently drawn item, as the authors' training pairs them (comparison only).
    global_negative_domain (with chimeric_negatives): "target" draws the global part's negative from
    the target's domain, like the local part's; "input" from the domain of the step's INPUT item, as
    the authors' code draws its mixed-sequence negatives (comparison only; the batch then carries it
    as "global_negatives"; one-part models keep the target-domain "negatives").
    """

    kind: str = "bce"
    num_negatives: int = 256
    logq_correction: bool = False
    chimeric_negatives: bool = False
    global_negative_domain: str = "target"

    def __post_init__(self):
        if self.kind not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}, got {self.kind!r}")
        if self.chimeric_negatives and self.kind != "bce":
            raise ValueError("train.chimeric_negatives pairs one negative per step: it needs train.loss=bce")
        if self.global_negative_domain not in GLOBAL_NEGATIVE_DOMAINS:
            raise ValueError(f"train.global_negative_domain must be one of {GLOBAL_NEGATIVE_DOMAINS}, "
                             f"got {self.global_negative_domain!r}")
        if self.global_negative_domain == "input" and not self.chimeric_negatives:
            raise ValueError("train.global_negative_domain=input draws the global part of a chimeric negative apart "
                             "from its local part: it needs train.loss=bce and train.chimeric_negatives=true")

    @property
    def input_domain_negatives(self) -> bool:
        """The global part's negative comes from the input item's domain (batch["global_negatives"])."""
        return self.chimeric_negatives and self.global_negative_domain == "input"

    @classmethod
    def from_section(cls, train: dict) -> LossConfig:
        return cls(train.get("loss", "bce"), int(train.get("num_negatives", 256)),
                   bool(train.get("logq_correction", False)), bool(train.get("chimeric_negatives", False)),
                   str(train.get("global_negative_domain", "target")))


def domain_balanced_bce(pos_logits: torch.Tensor, neg_logits: torch.Tensor, target_domain: torch.Tensor,
                        norm: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of each (positive, negative) pair: mean over A pairs + mean over B pairs
    (with `norm`, (2,): each domain's sum divided by its entry instead; train.loss_norm=epoch).

    A domain without pairs in the batch contributes nothing (a mean over nothing would be NaN).
    """
    pair_loss = F.softplus(-pos_logits) + F.softplus(neg_logits)  # (P,) = BCE(pos, 1) + BCE(neg, 0)
    return _sum_of_domain_means(pair_loss, target_domain, norm)


def _sum_of_domain_means(values: torch.Tensor, target_domain: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
    loss = values.new_zeros(())
    for d in (0, 1):
        in_d = target_domain == d
        if bool(in_d.any()):
            loss = loss + _domain_average(values[in_d], norm, d)
    return loss


def _domain_average(values: torch.Tensor, norm: torch.Tensor | None, d: int) -> torch.Tensor:
    """One domain's per-target losses averaged: over the batch (norm None), or summed and divided by
    the epoch's mean count per batch (train.loss_norm=epoch), which weighs every target alike
    however the batches group users (length-bucketed batches of short histories hold few targets)."""
    return values.mean() if norm is None else values.sum() / norm[d]


def next_item_loss(
    loss: LossConfig,
    queries: torch.Tensor,
    pos_local: torch.Tensor,
    target_domain: torch.Tensor,
    batch: dict[str, torch.Tensor],
    step_mask: torch.Tensor,
    n_items_a: int,
    vectors: Callable[[int, torch.Tensor], torch.Tensor],
    table: Callable[[int], torch.Tensor],
    split: int | None = None,
) -> torch.Tensor:
    """The objective of every sequence model here, one mean per target domain, summed.

    queries (P, K): a model's query at each step with a target; pos_local (P,): the target's local
    id; target_domain (P,); step_mask (B, L): the batch steps the P rows come from (row-major), to
    pick their per-step negatives from `batch` (global ids, like every id of a batch). vectors(d, local ids (...)) -> (..., K) item vectors
    of domain d with gradient; table(d) -> (n_d + 1, K) the whole domain (ce). `split`: the column
    where a two-part model's local part starts (chimeric negatives; with
    global_negative_domain=input the global part's negative is batch["global_negatives"], of the
    step's input domain, scored by its own domain's global vector).
    """
    if loss.kind == "bce":
        neg_local = to_local(batch["negatives"][step_mask], n_items_a)  # (P,)
        pos_logits = queries.new_zeros(len(queries))
        neg_logits = queries.new_zeros(len(queries))
        for d in (0, 1):
            in_d = target_domain == d
            if not bool(in_d.any()):
                continue
            q = queries[in_d]  # (P_d, K)
            pos_logits = pos_logits.masked_scatter(in_d, (q * vectors(d, pos_local[in_d])).sum(-1))
            if loss.input_domain_negatives and split is not None:
                # The global part's negative is of the input item's domain, maybe not d.
                neg_global = _global_part(batch["global_negatives"][step_mask][in_d], n_items_a, vectors, split)  # (P_d, split)
                other = vectors(d, to_local(batch["chimeric_negatives"][step_mask][in_d], n_items_a))  # (P_d, K)
                neg = torch.cat([neg_global, other[:, split:]], dim=-1)
            else:
                neg = vectors(d, neg_local[in_d])  # (P_d, K)
                if loss.chimeric_negatives and split is not None:
                    other = vectors(d, to_local(batch["chimeric_negatives"][step_mask][in_d], n_items_a))  # (P_d, K)
                    neg = torch.cat([neg[:, :split], other[:, split:]], dim=-1)
            neg_logits = neg_logits.masked_scatter(in_d, (q * neg).sum(-1))
        return domain_balanced_bce(pos_logits, neg_logits, target_domain, batch.get("target_norm"))

    norm = batch.get("target_norm")  # train.loss_norm=epoch
    total = queries.new_zeros(())
    for d in (0, 1):
        in_d = target_domain == d
        if not bool(in_d.any()):
            continue
        q, pos = queries[in_d], pos_local[in_d]  # (P_d, K), (P_d,)
        if loss.kind == "ce":
            logits = q @ table(d)[1:].T  # (P_d, n_d): column = local id - 1
            total = total + _softmax_loss(logits, pos - 1, norm, d)
            continue
        shared = to_local(batch["shared_negatives"][d], n_items_a)  # (N,) drawn for this batch
        pos_logit = (q * vectors(d, pos)).sum(-1, keepdim=True)  # (P_d, 1)
        neg_logits = q @ vectors(d, shared).T  # (P_d, N)
        if loss.logq_correction:
            logq = batch["item_logq"]  # (N_total + 1,) log sampling probability by global id
            offset = n_items_a if d == 1 else 0
            pos_logit = pos_logit - logq[pos + offset][:, None]
            neg_logits = neg_logits - logq[shared + offset][None, :]
        # A shared negative that is the step's own target is no negative ("accidental hit").
        neg_logits = neg_logits.masked_fill(shared[None, :] == pos[:, None], NEG_INF)
        logits = torch.cat([pos_logit, neg_logits], dim=1)  # (P_d, 1 + N)
        total = total + _softmax_loss(logits, logits.new_zeros(len(logits), dtype=torch.long), norm, d)
    return total


def _softmax_loss(logits: torch.Tensor, labels: torch.Tensor, norm: torch.Tensor | None, d: int) -> torch.Tensor:
    """One domain's cross-entropy, averaged as `_domain_average` says (the batch mean by torch's own
    reduction, so that runs without train.loss_norm=epoch compute exactly what they always did)."""
    if norm is None:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels, reduction="sum") / norm[d]


def _global_part(global_ids: torch.Tensor, n_items_a: int, vectors: Callable[[int, torch.Tensor], torch.Tensor],
                 split: int) -> torch.Tensor:
    """The global part (first `split` columns) of items of either domain, given by global ids (P,) -> (P, split)."""
    domain, local = domain_of(global_ids, n_items_a), to_local(global_ids, n_items_a)
    out = None
    for d in (0, 1):
        rows = (domain == d).nonzero().squeeze(1)  # (P_d,)
        if not len(rows):
            continue
        part = vectors(d, local[rows])[:, :split]  # (P_d, split)
        out = (part.new_zeros(len(global_ids), split) if out is None else out).index_copy(0, rows, part)
    return out


def soft_contrastive_loss(x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Contrastive loss with soft targets (METHOD.md), between matched rows of x and y (N, H).

    logits = x y^T / tau; targets = softmax(((x x^T + y y^T) / 2) * tau); cross-entropy of the
    rows and of the columns, averaged. Soft targets keep items that are alike close instead of
    pushing every non-matching pair apart.
    """
    logits = x @ y.T / tau  # (N, N)
    targets = torch.softmax((x @ x.T + y @ y.T) / 2 * tau, dim=-1)  # (N, N)
    rows = -(targets * F.log_softmax(logits, dim=-1)).sum(-1)  # (N,)
    cols = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(-1)  # (N,)
    return ((rows + cols) / 2).mean()


def cosine_alignment_loss(x: torch.Tensor, y: torch.Tensor, tau: float,
                          prior_x: torch.Tensor | None = None, prior_y: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE on cosine similarity between matched rows of x and y (N, H).

    logits = cos(x_i, y_j) / tau. The targets are soft where priors are given (frozen vectors of
    the same items, e.g. their LLM embeddings): row i spreads its mass over the pairs j whose two
    items are alike in the prior, softmax(((cos(px_i, px_j) + cos(py_i, py_j)) / 2) / tau), so a
    pair repeated in the batch, or a near-copy, is not pushed away; without priors, the identity.
    Cosine and a small tau give the loss a gradient whatever the vectors' norms: the paper's form
    (`soft_contrastive_loss`, dot products at tau = 1) sits at its floor on small adapted vectors.
    """
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = x @ y.T / tau  # (N, N)
    if prior_x is None:
        targets = torch.eye(len(x), dtype=x.dtype, device=x.device)  # (N, N)
    else:
        with torch.no_grad():
            px, py = F.normalize(prior_x.float(), dim=-1), F.normalize(prior_y.float(), dim=-1)
            targets = torch.softmax((px @ px.T + py @ py.T) / 2 / tau, dim=-1)  # (N, N), symmetric
    rows = -(targets * F.log_softmax(logits, dim=-1)).sum(-1)  # (N,)
    cols = -(targets.T * F.log_softmax(logits.T, dim=-1)).sum(-1)  # (N,)
    return ((rows + cols) / 2).mean()


def xavier_init_(module: nn.Module, skip: Sequence[nn.Parameter] = ()) -> None:
    """Xavier-normal init of every matrix parameter, as SASRec and the authors' code do.

    Vectors (biases, LayerNorm) keep PyTorch's defaults; `skip` holds pretrained tables.
    """
    skip_ids = {id(p) for p in skip}
    for p in module.parameters():
        if p.dim() >= 2 and id(p) not in skip_ids:
            nn.init.xavier_normal_(p)
