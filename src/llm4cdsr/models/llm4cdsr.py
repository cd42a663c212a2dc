"""LLM4CDSR (Liu et al., SIGIR 2025): a global SASRec over the mixed history on LLM item vectors,
plus one SASRec per domain over that domain's items, with two contrastive regularisers.

Reads top-down: config, adapter, global item vectors, domain branch, the model.

Score of local item i of domain d for a user:
    s(i) = <h_global, adapter(e_i)> + <h_d, E_d[i]>
h_global: last state of the global encoder; h_d: last state of domain d's encoder (0 when the user
has no item of d yet). Training is sequence-to-sequence: every step t of the mixed history predicts
the next item; its logit adds the global state at t and domain d's state at the latest d item at
or before t (d = the target's domain). The same module, with switches, is the mixed-sequence SASRec
baseline (ID or LLM item vectors, no domain branches) and every ablation.

Two switches reproduce the authors' code for comparison (defaults: ours):
  first_local_target  keep: a step whose target's domain has no earlier item in the input is
                      trained with h_d = 0 (its logit is the global logit alone) | drop: the step
                      is left out of the loss entirely, global part included, as in the authors'
                      code, whose loss runs over the positions of each domain's subsequence (a
                      subsequence's first item is the target of no position there)
  empty_local_state   zero: h_d = 0 without an item of d | ln_bias: h_d = the bias of domain d's
                      final LayerNorm, which is what the authors' encoder returns for an all-padding
                      input (LN(0) = bias); in scoring and in training queries alike
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llm4cdsr.models.base import (
    LossConfig,
    Recommender,
    cosine_alignment_loss,
    domain_global_ids,
    domain_of,
    domain_subsequence,
    gather_steps,
    next_item_loss,
    soft_contrastive_loss,
    to_local,
    xavier_init_,
)
from llm4cdsr.models.sasrec import EncoderConfig, SASRecEncoder


@dataclass
class LLM4CDSRConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    global_item: str = "llm"  # "llm": adapted frozen LLM vectors; "id": a learned table (ablation)
    local_branches: bool = True  # False: global branch only (the mixed-sequence SASRec baselines)
    local_init: str = "pca"  # "pca": local LLM PCA vectors; "random" (ablation)
    freeze_local: bool = True  # the authors' code freezes PCA-initialised local tables
    alpha: float = 0.1  # weight of the item regularisation
    align: str = "paper"  # paper: soft contrastive on dot products (tau_reg) | cosine: InfoNCE on cosine over cross-domain neighbours
    align_tau: float = 0.1  # temperature of align=cosine
    beta: float = 1.0  # weight of the user-profile guidance
    tau: float = 1.0  # temperature of the user-profile guidance
    tau_reg: float = 1.0  # temperature of the item regularisation
    local_anchor: float = 0.0  # weight of the pull of learned PCA local tables toward their PCA start (0: off)
    first_local_target: str = "keep"  # keep | drop: the authors' drop a step whose target domain has no earlier item
    empty_local_state: str = "zero"  # zero | ln_bias: the authors' state of a domain without items is LN(0) = bias


class Adapter(nn.Module):
    """Linear d -> d/2 -> H with no activation between, as the authors built it.

    Two linear maps in a row are one: the forward pass multiplies by the product W2 W1 (H x d) once,
    which halves the adapter's work per vector. The parameters, and so the training dynamics, stay
    the authors' two layers; autograd carries the gradient through the product exactly.
    """

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.inner = nn.Linear(d_in, d_in // 2)
        self.outer = nn.Linear(d_in // 2, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.outer.weight @ self.inner.weight  # (H, d)
        bias = self.outer.weight @ self.inner.bias + self.outer.bias  # (H,)
        return F.linear(x, weight, bias)


class GlobalItems(nn.Module):
    """Item vectors of the global branch, for inputs and for candidates alike (B, ..., H).

    "llm": frozen LLM vectors (a buffer, saved with the weights so a run is self-contained) through
    the trainable adapter; "id": a learned table.
    """

    def __init__(self, kind: str, n_total: int, hidden: int, vectors: torch.Tensor | None, vector_dim: int | None):
        super().__init__()
        self.kind = kind
        if kind == "llm":
            if vectors is None:
                if vector_dim is None:
                    raise ValueError("global_item 'llm' needs the global LLM item vectors")
                vectors = torch.zeros(n_total + 1, vector_dim)  # filled by load_state_dict
            if vectors.shape[0] != n_total + 1:
                raise ValueError(f"global LLM vectors have {vectors.shape[0]} rows, expected {n_total + 1} (N + 1)")
            self.register_buffer("llm_vectors", vectors.float().clone())
            self.adapter = Adapter(vectors.shape[1], hidden)
            # The authors scale the encoder input by sqrt(width of the LLM table), not sqrt(H).
            self.scale = math.sqrt(vectors.shape[1])
        elif kind == "id":
            self.table = nn.Embedding(n_total + 1, hidden)
            self.scale = math.sqrt(hidden)
        else:
            raise ValueError(f"global_item must be 'llm' or 'id', got {kind!r}")

    def forward(self, global_ids: torch.Tensor) -> torch.Tensor:
        if self.kind == "llm":
            return self.adapter(self.llm_vectors[global_ids])
        return self.table(global_ids)

    def lookup(self, *id_tensors: torch.Tensor) -> list[torch.Tensor]:
        """forward() of several id tensors, passing each distinct id through the adapter once.

        A training step looks up its inputs, their next items (mostly the same ids, shifted) and
        the negatives; the adapter is the widest layer of the model, so this saves about a third
        of its work.
        """
        if self.kind != "llm":
            return [self.table(ids) for ids in id_tensors]
        flat = torch.cat([ids.reshape(-1) for ids in id_tensors])  # (T,)
        unique, inverse = torch.unique(flat, return_inverse=True)  # (V,), (T,)
        # F.embedding, not [inverse]: the backward of indexing with repeated ids adds with
        # atomics on 2+ CPU threads (run-to-run different sums); embedding's backward is ordered.
        vectors = F.embedding(inverse, self.adapter(self.llm_vectors[unique]))  # (T, H)
        pieces = vectors.split([ids.numel() for ids in id_tensors])
        return [v.view(*ids.shape, -1) for v, ids in zip(pieces, id_tensors)]  # each (..., H)


FIRST_LOCAL_TARGETS = ("keep", "drop")
ALIGNMENTS = ("paper", "cosine")
EMPTY_LOCAL_STATES = ("zero", "ln_bias")


class DomainBranch(nn.Module):
    """A SASRec over one domain's subsequence, with its own item table (local ids) and positions.

    `empty_state`: what stands for the state where the user has no item of the domain (yet):
    "zero" or "ln_bias" (the final LayerNorm's bias, the authors' LN(0); see `fill_empty`).
    """

    def __init__(self, cfg: EncoderConfig, n_items: int, init_vectors: torch.Tensor | None = None, freeze: bool = False,
                 empty_state: str = "zero"):
        super().__init__()
        if empty_state not in EMPTY_LOCAL_STATES:
            raise ValueError(f"model.empty_local_state must be one of {EMPTY_LOCAL_STATES}, got {empty_state!r}")
        self.empty_state = empty_state
        self.items = nn.Embedding(n_items + 1, cfg.hidden)
        self.pretrained = init_vectors is not None
        if init_vectors is not None:
            if tuple(init_vectors.shape) != (n_items + 1, cfg.hidden):
                raise ValueError(
                    f"local vectors have shape {tuple(init_vectors.shape)}, expected {(n_items + 1, cfg.hidden)} "
                    "(n_d + 1, model.hidden): the local PCA width must equal model.hidden"
                )
            with torch.no_grad():
                self.items.weight.copy_(init_vectors)
        self.items.weight.requires_grad_(not (self.pretrained and freeze))
        self.encoder = SASRecEncoder(cfg)

    def forward(self, local_seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, W) left-padded local ids -> (B, W, H) states, or the last one (B, H) (`last_only`);
        0 for users without items of the domain.

        Only the rows with items go through the encoder: in a batch of mostly single-domain users,
        one domain's rows are mostly empty.
        """
        has_items = (local_seq > 0).any(1)  # (B,)
        if bool(has_items.all()):
            return self.encoder(self.items(local_seq), local_seq > 0, last_only=last_only)
        rows = has_items.nonzero().squeeze(1)  # (B',)
        seq = local_seq[rows]  # (B', W)
        states = self.encoder(self.items(seq), seq > 0, last_only=last_only)  # (B', W, H) or (B', H)
        out = states.new_zeros(local_seq.shape[0], *states.shape[1:])  # (B, W, H) or (B, H)
        return out.index_copy(0, rows, states)

    def fill_empty(self, states: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
        """states (N, H) with the rows where `empty` (N,) is True set to the empty state: unchanged
        (they are 0) for "zero", the final LayerNorm's bias (with its gradient) for "ln_bias"."""
        if self.empty_state == "zero":
            return states
        return torch.where(empty[:, None], self.encoder.ln_final.bias[None, :], states)


class LLM4CDSR(Recommender):
    def __init__(
        self,
        cfg: LLM4CDSRConfig,
        n_items: tuple[int, int],
        global_vectors: np.ndarray | torch.Tensor | None = None,
        local_vectors: tuple | None = None,
        profile_vectors: np.ndarray | torch.Tensor | None = None,
        placeholder_dims: dict | None = None,
        loss: LossConfig | None = None,
    ):
        """`placeholder_dims` ({"global_dim", "profile_dim"}) builds a shell whose weights will be
        loaded: absent vectors become zero placeholders of those widths instead of an error.
        `loss`: the training objective (default: the paper's BCE with one negative)."""
        super().__init__()
        self.loss = loss or LossConfig()
        loading = placeholder_dims is not None
        dims = placeholder_dims or {}
        self.cfg = cfg
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = cfg.encoder.max_len
        hidden = cfg.encoder.hidden
        n_total = sum(self.n_items)
        self.global_items = GlobalItems(cfg.global_item, n_total, hidden, _tensor(global_vectors), dims.get("global_dim"))
        self.global_encoder = SASRecEncoder(cfg.encoder)

        if cfg.first_local_target not in FIRST_LOCAL_TARGETS:
            raise ValueError(f"model.first_local_target must be one of {FIRST_LOCAL_TARGETS}, got {cfg.first_local_target!r}")
        if cfg.empty_local_state not in EMPTY_LOCAL_STATES:
            raise ValueError(f"model.empty_local_state must be one of {EMPTY_LOCAL_STATES}, got {cfg.empty_local_state!r}")
        if cfg.align not in ALIGNMENTS:
            raise ValueError(f"model.align must be one of {ALIGNMENTS}, got {cfg.align!r}")
        self.local = nn.ModuleList()
        if cfg.local_branches:
            if cfg.local_init not in ("pca", "random"):
                raise ValueError(f"local_init must be 'pca' or 'random', got {cfg.local_init!r}")
            for d in (0, 1):
                init = None
                if cfg.local_init == "pca":
                    if local_vectors is not None:
                        init = _tensor(local_vectors[d])
                    elif loading:
                        init = torch.zeros(self.n_items[d] + 1, hidden)
                    else:
                        raise ValueError("local_init 'pca' needs the local PCA item vectors")
                # A random table is always learned (freeze_local applies to PCA tables only).
                self.local.append(DomainBranch(cfg.encoder, self.n_items[d], init, freeze=cfg.freeze_local,
                                               empty_state=cfg.empty_local_state))
        # The PCA start of each learned PCA table, for local_anchor (training only: not saved, and
        # rebuilt from the workspace's vectors when a run resumes).
        self.anchored = [d for d, b in enumerate(self.local) if cfg.local_anchor > 0 and b.pretrained and b.items.weight.requires_grad]
        for d in self.anchored:
            self.register_buffer(f"local_start_{d}", self.local[d].items.weight.detach().clone(), persistent=False)
        # Scores are <h_global, global item> + <h_d, local item>: the local part starts at column H.
        self.score_split = hidden if len(self.local) else None

        self.uses_profiles = cfg.beta > 0
        if self.uses_profiles:
            profiles = _tensor(profile_vectors)
            profile_dim = profiles.shape[1] if profiles is not None else dims.get("profile_dim")
            if profile_dim is None:
                raise ValueError("beta > 0 needs user profile vectors (or set beta = 0)")
            # Profiles are read in training only, so they are not saved with the weights. A row of
            # NaN is a user without a profile (e.g. the overlap experiment's users cut back to one
            # domain, whose profile read both): that user gets no guidance.
            profiles = profiles.float().clone() if profiles is not None else torch.zeros(0, profile_dim)
            self.register_buffer("has_profile", torch.isfinite(profiles).all(1), persistent=False)
            self.register_buffer("profiles", torch.nan_to_num(profiles), persistent=False)
            self.profile_adapter = Adapter(profile_dim, hidden)

        pretrained = [b.items.weight for b in self.local if b.pretrained]
        xavier_init_(self, skip=pretrained)

    # ----- training ------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        queries, pos, target_domain, h_global, has_target = self.step_queries(batch["mixed_seq"], batch["targets"])
        rec = next_item_loss(self.loss, queries, to_local(pos, self.n_items[0]), target_domain, batch, has_target,
                             self.n_items[0], self.item_vectors, self.item_table, self.score_split)
        if not len(pos):  # first_local_target=drop left no step in this batch: 0, still a graph
            rec = rec + queries.sum()
        # Each weighted term of the loss, with its graph: the trainer may measure their gradients.
        terms = {"rec": rec}
        out = {"rec": rec.detach()}
        if self.cfg.alpha > 0:
            reg = self.item_alignment(batch)
            if reg is not None:  # no cross-domain pair in the batch: skip (the authors get NaN)
                terms["reg"] = self.cfg.alpha * reg
                out["reg"] = reg.detach()
        if self.anchored:
            anchor = self.local_anchor_loss()
            terms["anchor"] = self.cfg.local_anchor * anchor
            out["anchor"] = anchor.detach()
        guided = self.has_profile[batch["user_idx"]] if self.uses_profiles else None  # (B,)
        if guided is not None and int(guided.sum()) >= 2:  # one user alone has nothing to contrast with
            users, last = batch["user_idx"], h_global[:, -1]  # (B,), (B, H)
            if not bool(guided.all()):
                users, last = users[guided], last[guided]  # (B',), (B', H)
            guide = soft_contrastive_loss(self.profile_adapter(self.profiles[users]), last, self.cfg.tau)
            terms["user"] = self.cfg.beta * guide
            out["user"] = guide.detach()
        out["loss"] = sum(terms.values())
        out["terms"] = terms
        return out

    def step_queries(self, mixed_seq: torch.Tensor, targets: torch.Tensor):
        """The query of every step with a target, as scoring would form it for that target's domain.

        Returns queries (P, K), the targets (P,) (global ids), their domain (P,), the global states
        (B, L, H) and the step mask (B, L); P = the steps with targets > 0, in row-major order.
        Step t's query joins the global state at t and the target domain's state at its latest
        item at or before t, so logit = <query, item_table row> as in scoring. Before any item of
        that domain the local state is 0 (`empty_local_state=ln_bias`: the final LayerNorm's
        bias), and the step is kept; `first_local_target=drop` leaves such steps out (of P and of
        the step mask), so that the loss runs over the authors' local positions only.
        """
        has_target = targets > 0  # (B, L)
        pos = targets[has_target]  # (P,)
        seq_vectors = self.global_items.lookup(mixed_seq)[0]  # (B, L, H)
        h_global = self.global_encoder(seq_vectors, mixed_seq > 0, self.global_items.scale)  # (B, L, H)
        queries = h_global[has_target]  # (P, H)
        target_domain = domain_of(pos, self.n_items[0])  # (P,)
        if len(self.local):
            drop = self.cfg.first_local_target == "drop"
            h_local = queries.new_zeros(queries.shape)  # (P, H)
            has_local = torch.ones_like(pos, dtype=torch.bool)  # (P,): the target's domain has an earlier item
            for d, branch in enumerate(self.local):
                local_seq, last_col = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W), (B, L)
                h_d = gather_steps(branch(local_seq), last_col)[has_target]  # (P, H), 0 before any d item
                if drop or branch.empty_state != "zero":
                    seen = last_col[has_target] >= 0  # (P,)
                    h_d = branch.fill_empty(h_d, ~seen)
                    has_local = torch.where(target_domain == d, seen, has_local)
                h_local = torch.where((target_domain == d)[:, None], h_d, h_local)
            queries = torch.cat([queries, h_local], dim=-1)  # (P, 2H)
            if drop:
                queries, pos, target_domain = queries[has_local], pos[has_local], target_domain[has_local]
                kept = torch.zeros_like(has_target)
                kept[has_target] = has_local
                has_target = kept  # (B, L)
        return queries, pos, target_domain, h_global, has_target

    def item_vectors(self, domain: int, local_ids: torch.Tensor) -> torch.Tensor:
        """Rows of item_table(domain) for local ids (...,) -> (..., K), computing only those rows."""
        offset = self.n_items[0] if domain == 1 else 0
        vectors = self.global_items.lookup(local_ids + offset)[0]  # (..., H)
        if len(self.local):
            vectors = torch.cat([vectors, self.local[domain].items(local_ids)], dim=-1)  # (..., 2H)
        return vectors

    def local_anchor_loss(self) -> torch.Tensor:
        """Squared distance of each learned local item vector from its PCA start, summed over the
        vector, averaged over the items of a domain, summed over the domains: an L2 prior centred
        on the LLM's view of the item instead of on 0, so that rarely seen items keep it."""
        total = None
        for d in self.anchored:
            drift = (self.local[d].items.weight[1:] - getattr(self, f"local_start_{d}")[1:]).pow(2).sum(1).mean()
            total = drift if total is None else total + drift
        return total

    def item_alignment(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The cross-domain item term (weight alpha), or None when the batch gives it no pair.

        paper: the soft contrastive loss between one A item and one B item of each user with both
        domains, on dot products of the adapted vectors (the paper's form; inert where those are
        small, see METHOD.md). cosine: InfoNCE on cosine / align_tau over the batch's cross-domain
        neighbours (an A and a B item taken one right after the other), soft targets from the
        frozen LLM vectors' similarity, so that the two domains' related items meet in the
        adapted space.
        """
        if self.cfg.align == "paper":
            return self.item_regularisation(batch["reg_items"])
        pairs = batch["align_pairs"]  # (P, 2) global ids
        if len(pairs) < 2:  # one pair has no negative: nothing to contrast
            return None
        x, y = self.global_items.lookup(pairs[:, 0], pairs[:, 1])  # (P, H) each
        priors = (self.global_items.llm_vectors[pairs[:, 0]], self.global_items.llm_vectors[pairs[:, 1]]) \
            if self.global_items.kind == "llm" else (None, None)
        return cosine_alignment_loss(x, y, self.cfg.align_tau, *priors)

    def item_regularisation(self, reg_items: torch.Tensor) -> torch.Tensor | None:
        """Soft contrastive loss between one A item and one B item of each user with both domains."""
        both = (reg_items[:, 0] > 0) & (reg_items[:, 1] > 0)  # (B,)
        if not bool(both.any()):
            return None
        x = self.global_items(reg_items[both, 0])  # (N, H)
        y = self.global_items(reg_items[both, 1])  # (N, H)
        return soft_contrastive_loss(x, y, self.cfg.tau_reg)

    # ----- scoring -------------------------------------------------------------------------
    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        seq_vectors = self.global_items.lookup(mixed_seq)[0]  # (B, L, H)
        h_global = self.global_encoder(seq_vectors, mixed_seq > 0, self.global_items.scale, last_only=True)  # (B, H)
        if not len(self.local):
            return torch.stack([h_global, h_global], dim=1)  # (B, 2, H)
        queries = []
        for d, branch in enumerate(self.local):
            local_seq, _ = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W)
            h_local = branch(local_seq, last_only=True)  # (B, H), 0 for a user without d items
            h_local = branch.fill_empty(h_local, ~(local_seq > 0).any(1))  # ln_bias: LN(0) for them
            queries.append(torch.cat([h_global, h_local], dim=-1))  # (B, 2H)
        return torch.stack(queries, dim=1)  # (B, 2, 2H)

    def item_table(self, domain: int) -> torch.Tensor:
        ids = domain_global_ids(self.n_items, domain, device=self._device())  # (n_d,)
        table = self.global_items(ids)  # (n_d, H)
        if len(self.local):
            table = torch.cat([table, self.local[domain].items.weight[1:]], dim=-1)  # (n_d, 2H)
        return torch.cat([table.new_zeros(1, table.shape[1]), table])  # (n_d + 1, K)

    def score_vectors(self, states, domain, global_vectors, local_vectors=None):
        """<h_global, adapter(v)> (+ <h_d, local vector> when given: with frozen PCA local tables,
        an unseen item's local PCA projection is exactly what its table row would be)."""
        if self.global_items.kind != "llm":
            raise NotImplementedError("this model's global branch uses ID embeddings; it cannot score new items")
        hidden = self.cfg.encoder.hidden
        query = states[:, domain]  # (B, K)
        scores = query[:, :hidden] @ self.global_items.adapter(global_vectors.float()).T  # (B, C)
        if local_vectors is not None and len(self.local):
            scores = scores + query[:, hidden:] @ local_vectors.float().T
        return scores

    def _device(self) -> torch.device:
        return self.global_encoder.pos_emb.weight.device


def _tensor(x) -> torch.Tensor | None:
    if x is None:
        return None
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
