"""Tri-CDR (Ma et al., "Triple Sequence Learning for Cross-domain Recommendation", TOIS 2024) in
this harness.

Reads top-down: the attention unit, the triple cross-domain attention, the per-domain head, the
losses, the model. Our own code, written from the paper and the authors' public code
(github.com/hulkima/Tri-CDR).

What it is:
  - Three SASRec encoders (ours, causal): the mixed sequence (global ID table) and the two domain
    subsequences (a local ID table each).
  - Triple cross-domain attention (TCA), at each step t and for the target's domain d ("target";
    the other domain is "source"): the query is the d encoder's state at the latest d item at or
    before t; it attends, with one DIN-style attention unit (an MLP over [key, query, key * query,
    query - key, mixed summary], PReLU, 80 -> 40 -> 1, as theirs), over three sets of keys: the
    mixed states up to t, the source states up to t and the target states up to t; the mixed
    summary is the mean of the mixed states up to t. The three attended vectors are fused by a
    per-domain MLP (3H -> H, LeakyReLU, H -> H) into the user vector f.
  - Prediction: logit = scale * cos(f, E_d[i]), E_d the target domain's table. Their objective is
    binary cross-entropy of the positive and one sampled negative of its domain per step, never in
    the user's history: `train.loss=bce` here. The harness's other objectives (`ce`, `sampled_ce`)
    apply to these logits like to every model's.
  - Triple contrastive learning (TCL) at each user's last step, for users with both domains: the
    three attended vectors through per-role projection heads (H -> H, ReLU, H -> H); coarse-grained:
    InfoNCE (NT-Xent, in-batch negatives, temperature tau) between each pair (mixed-source,
    mixed-target, source-target), averaged; fine-grained: a triplet loss with the source as anchor,
    the mixed as positive and the target as negative (margin m, L2 distance).
  - loss = rec + cl_weight * InfoNCE + triplet_weight * triplet (their defaults: 1, 1; scale 5,
    tau 0.1, margin 1).
  - Score of item i of domain d: query = scale * f / |f|, table row = E_d[i] / |E_d[i]|.

Defects of their code we do not reproduce:
  - The epoch is selected, and training early-stopped, on the TEST score (their loop evaluates the
    test set every epoch). Here: validation only.
  - Evaluation with 99 negatives redrawn at every pass, unseeded, so every epoch and model ranks
    other candidates. Here: the harness's saved candidates and full ranking.
  - Their evaluation gives the target sequence the validation item but not the mixed sequence. Here
    every sequence is the same history.

Where we differ on purpose (simplifications, each for the one harness):
  - Both domains are targets in one model: the three encoders and the attention unit are shared, and
    each domain has its own fusion and projection heads (their code trains one model per target
    domain, with one attention unit for its three roles).
  - Every user trains (theirs: only users with at least two items in each domain); a step with no
    item of a role yet attends to nothing (a zero vector), and TCL uses the users with both domains.
  - Pre-training is an option: their encoders start from separately trained SASRec checkpoints;
    ours start from the harness's Xavier initialisation unless `model.init_from` names finished
    sasrec_mixed / sasrec_single runs (`warm_start_names`: the mixed encoder and global ID table,
    the domain encoders and tables), after which everything trains jointly.
  - The optimiser is the harness's Adam, constant learning rate (theirs: betas 0.9/0.98 with an
    exponential learning-rate decay of 0.99 per epoch).
  - InfoNCE pairs are weighted equally (their rate_* options, default 1 : 1 : 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llm4cdsr.models.base import (
    LossConfig,
    Recommender,
    domain_of,
    domain_subsequence,
    gather_steps,
    next_item_loss,
    to_local,
    xavier_init_,
)
from llm4cdsr.models.llm4cdsr import DomainBranch
from llm4cdsr.models.sasrec import EncoderConfig, SASRecEncoder

ROLES = ("mixed", "source", "target")


class AttentionUnit(nn.Module):
    """DIN's local activation unit: score(query, key) = MLP([k, q, k * q, q - k, summary]).

    The first layer is applied term by term, so that only the product term is computed per pair:
    W [k, q, k*q, q-k, s] = (W_k - W_d) k + (W_q + W_d) q + W_s s + W_p (k * q). Only the allowed
    pairs go through the MLP (a causal grid allows about half of them).
    """

    def __init__(self, hidden: int, sizes: tuple[int, int] = (80, 40)):
        super().__init__()
        self.hidden = hidden
        self.first = nn.Linear(5 * hidden, sizes[0])
        self.act1 = nn.PReLU()
        self.second = nn.Linear(sizes[0], sizes[1])
        self.act2 = nn.PReLU()
        self.out = nn.Linear(sizes[1], 1)

    def forward(self, query: torch.Tensor, summary: torch.Tensor, keys: torch.Tensor,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        """query, summary (B, Q, H), keys (B, K, H) -> scores (B, Q, K) of the allowed pairs
        (allowed (B, Q, K) bool, default all); the others are the dtype's minimum."""
        batch, n_query, n_key = query.shape[0], query.shape[1], keys.shape[1]
        if allowed is None:
            allowed = torch.ones(batch, n_query, n_key, dtype=torch.bool, device=query.device)
        w_key, w_query, w_prod, w_diff, w_summary = self.first.weight.split(self.hidden, dim=1)  # 5 x (S, H)
        per_key = (keys @ (w_key - w_diff).T).flatten(0, 1)  # (B K, S)
        per_query = (query @ (w_query + w_diff).T + summary @ w_summary.T + self.first.bias).flatten(0, 1)  # (B Q, S)
        b, q, k = allowed.nonzero(as_tuple=True)  # (M,) each, row-major
        at_query, at_key = b * n_query + q, b * n_key + k  # (M,)
        # F.embedding as the gather: its backward adds in a fixed order (indexing's uses atomics).
        pair = F.linear(F.embedding(at_query, query.flatten(0, 1)) * F.embedding(at_key, keys.flatten(0, 1)), w_prod)  # (M, S)
        x = self.act1(pair + F.embedding(at_key, per_key) + F.embedding(at_query, per_query))  # (M, S)
        scores = self.out(self.act2(self.second(x))).squeeze(-1)  # (M,)
        full = scores.new_full(allowed.shape, torch.finfo(scores.dtype).min)  # (B, Q, K)
        return full.masked_scatter(allowed, scores)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the True entries of the last dim; a row without any is all 0 (never NaN)."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


def triple_attention(unit: AttentionUnit, query: torch.Tensor, summary: torch.Tensor, keys: torch.Tensor,
                     masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """One score per (query, key) from the shared unit, one softmax per role.

    query, summary (B, Q, H); keys (B, K, H): mixed and domain states side by side; masks: per role
    (mixed, source, target), (B, Q, K) True where the query may attend. Returns 3 x (B, Q, H).
    """
    scores = unit(query, summary, keys, masks[0] | masks[1] | masks[2])  # (B, Q, K)
    return [masked_softmax(scores, mask) @ keys for mask in masks]  # 3 x (B, Q, H)


class TargetHead(nn.Module):
    """What belongs to one target domain: the fusion of the three attended vectors and the TCL
    projection heads (one per role)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fuse = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden))
        self.project = nn.ModuleList(
            [nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)) for _ in ROLES]
        )

    def forward(self, attended: list[torch.Tensor]) -> torch.Tensor:
        """3 x (..., H) in ROLES order -> (..., H)."""
        return self.fuse(torch.cat(attended, dim=-1))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between matched rows of a and b (N, H), SimCLR's form: each of the 2N vectors has its
    pair as positive and the other 2N - 2 as negatives (cosine similarity / temperature)."""
    z = F.normalize(torch.cat([a, b]), dim=-1)  # (2N, H)
    n = len(a)
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)  # (2N, 2N)
    sim = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))  # (2N, 2N)
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(a.device)  # (2N,)
    return F.cross_entropy(sim, pair)


@dataclass
class TriCDRConfig:
    logit_scale: float = 5.0  # logit = scale * cosine (their `temperature`)
    temperature: float = 0.1  # InfoNCE temperature (their info_NCE_temperature)
    margin: float = 1.0  # triplet margin (their triplet_margin)
    cl_weight: float = 1.0  # weight of the InfoNCE term
    triplet_weight: float = 1.0  # weight of the triplet term


class TriCDR(Recommender):
    # Their recipe starts the three encoders from trained SASRecs (model.init_from): a mixed-sequence
    # SASRec gives the mixed encoder and the global ID table, one per domain the two domain encoders
    # and their item tables.
    warm_start_names = {
        "sasrec_mixed": {"global_encoder.": "encoder.", "global_items.table.": "items."},
        "sasrec_single": {"branches.": "branches."},
    }

    def __init__(self, encoder_cfg: EncoderConfig, n_items: tuple[int, int], cfg: TriCDRConfig | None = None,
                 loss: LossConfig | None = None):
        """`loss`: the next-item objective (default bce, the paper's)."""
        super().__init__()
        self.cfg = cfg or TriCDRConfig()
        self.loss = loss or LossConfig()
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = encoder_cfg.max_len
        hidden = encoder_cfg.hidden
        self.items = nn.Embedding(sum(self.n_items) + 1, hidden)
        self.encoder = SASRecEncoder(encoder_cfg)
        self.branches = nn.ModuleList([DomainBranch(encoder_cfg, n) for n in self.n_items])
        self.attention = AttentionUnit(hidden)
        self.heads = nn.ModuleList([TargetHead(hidden) for _ in self.n_items])
        xavier_init_(self)

    # ----- the three sequences and the attention -------------------------------------------------
    def encode(self, mixed_seq: torch.Tensor):
        """The three encoders, laid out on the mixed steps: the mixed state at each step (B, L, H);
        at each step holding an item, that item's state in its own domain's encoder (B, L, H), so
        the two domains' keys of a row fit in L columns; and per domain, the state at the latest
        item of the domain at or before each step (B, L, H) (0 before the first): the queries."""
        h_mixed = self.encoder(self.items(mixed_seq), mixed_seq > 0)  # (B, L, H)
        is_b = domain_of(mixed_seq, self.n_items[0]).bool()[..., None]  # (B, L, 1)
        latest = []
        for branch, d in zip(self.branches, (0, 1)):
            local_seq, last_col = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W_d), (B, L)
            latest.append(gather_steps(branch(local_seq), last_col))  # (B, L, H)
        # At an item of domain d, the latest d item is the item itself.
        own = torch.where(is_b, latest[1], latest[0]) * (mixed_seq > 0)[..., None]  # (B, L, H)
        return h_mixed, own, latest

    def _attend(self, mixed_seq, h_mixed, own, query, summary, allowed, query_domain) -> list[torch.Tensor]:
        """TCA for queries (B, Q, H) of target domain query_domain (B, Q) that may see the steps
        allowed (B, Q, L): keys = the mixed states and the domain states side by side (B, 2L, H)."""
        item_domain = domain_of(mixed_seq, self.n_items[0])  # (B, L)
        allowed = allowed & (mixed_seq > 0)[:, None, :]  # (B, Q, L)
        same = item_domain[:, None, :] == query_domain[:, :, None]  # (B, Q, L): key in the target domain
        none = torch.zeros_like(allowed)
        masks = [
            torch.cat([allowed, none], dim=-1),  # mixed
            torch.cat([none, allowed & ~same], dim=-1),  # source
            torch.cat([none, allowed & same], dim=-1),  # target
        ]  # 3 x (B, Q, 2L)
        keys = torch.cat([h_mixed, own], dim=1)  # (B, 2L, H)
        return triple_attention(self.attention, query, summary, keys, masks)

    def step_attention(self, mixed_seq: torch.Tensor, step_domain: torch.Tensor) -> list[torch.Tensor]:
        """TCA at every step t with target domain step_domain[:, t] (B, L): 3 x (B, L, H) attended
        vectors in ROLES order, each from steps at or before t only."""
        h_mixed, own, latest = self.encode(mixed_seq)
        steps = torch.arange(mixed_seq.shape[1], device=mixed_seq.device)
        causal = (steps[:, None] >= steps[None, :])[None].expand(mixed_seq.shape[0], -1, -1)  # (B, L, L): key j <= t
        query = torch.where((step_domain == 1)[..., None], latest[1], latest[0])  # (B, L, H)
        counts = (mixed_seq > 0).cumsum(1).clamp(min=1)[..., None].to(h_mixed.dtype)  # (B, L, 1)
        summary = h_mixed.cumsum(1) / counts  # (B, L, H): mean of the mixed states up to t (padding is 0)
        return self._attend(mixed_seq, h_mixed, own, query, summary, causal, step_domain)

    def fuse(self, attended: list[torch.Tensor], step_domain: torch.Tensor) -> torch.Tensor:
        """Each step's user vector (B, L, H) from its target domain's head."""
        fused = [head(attended) for head in self.heads]  # 2 x (B, L, H)
        return torch.where((step_domain == 1)[..., None], fused[1], fused[0])

    # ----- training ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixed_seq, targets = batch["mixed_seq"], batch["targets"]
        has_target = targets > 0  # (B, L)
        step_domain = domain_of(targets, self.n_items[0])  # (B, L)
        attended = self.step_attention(mixed_seq, step_domain)
        user = F.normalize(self.fuse(attended, step_domain)[has_target], dim=-1) * self.cfg.logit_scale  # (P, H)
        pos_local = to_local(targets[has_target], self.n_items[0])  # (P,)
        rec = next_item_loss(self.loss, user, pos_local, step_domain[has_target], batch, has_target, self.n_items[0],
                             self.item_vectors, self.item_table)
        out = {"rec": rec.detach()}
        loss = rec
        parts = self.triple_contrast([a[:, -1] for a in attended], step_domain[:, -1], mixed_seq)
        if parts is not None:  # fewer than two users with both domains per target domain: skip
            cl, triplet = parts
            loss = loss + self.cfg.cl_weight * cl + self.cfg.triplet_weight * triplet
            out["cl"], out["triplet"] = cl.detach(), triplet.detach()
        out["loss"] = loss
        return out

    def triple_contrast(self, attended: list[torch.Tensor], last_domain: torch.Tensor, mixed_seq: torch.Tensor):
        """TCL of the last step's attended vectors 3 x (B, H): (InfoNCE, triplet), each a mean over
        the users with both domains, computed per target domain (each has its projection heads)."""
        is_b = domain_of(mixed_seq, self.n_items[0]).bool() & (mixed_seq > 0)  # (B, L)
        both = (is_b.any(1)) & ((mixed_seq > 0) & ~is_b).any(1)  # (B,)
        cl_sum = triplet_sum = None
        n_used = 0
        for d, head in enumerate(self.heads):
            rows = (both & (last_domain == d)).nonzero().squeeze(1)  # (R,)
            if len(rows) < 2:  # InfoNCE needs another user as negative
                continue
            z_mixed, z_source, z_target = (proj(a[rows]) for proj, a in zip(head.project, attended))  # 3 x (R, H)
            cl = (nt_xent(z_mixed, z_source, self.cfg.temperature) + nt_xent(z_mixed, z_target, self.cfg.temperature)
                  + nt_xent(z_source, z_target, self.cfg.temperature)) / 3
            triplet = F.triplet_margin_loss(z_source, z_mixed, z_target, margin=self.cfg.margin)
            weight = len(rows)
            cl_sum = cl * weight if cl_sum is None else cl_sum + cl * weight
            triplet_sum = triplet * weight if triplet_sum is None else triplet_sum + triplet * weight
            n_used += weight
        if not n_used:
            return None
        return cl_sum / n_used, triplet_sum / n_used

    # ----- scoring -------------------------------------------------------------------------------
    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        """TCA at the last step, once per target domain: (B, 2, H)."""
        h_mixed, own, latest = self.encode(mixed_seq)
        batch, length = mixed_seq.shape
        query = torch.stack([latest[0][:, -1], latest[1][:, -1]], dim=1)  # (B, 2, H): query d = d's last state
        n_real = (mixed_seq > 0).sum(1).clamp(min=1)[:, None].to(h_mixed.dtype)  # (B, 1)
        summary = (h_mixed.sum(1) / n_real)[:, None].expand(-1, 2, -1)  # (B, 2, H)
        every_step = torch.ones(batch, 2, length, dtype=torch.bool, device=mixed_seq.device)  # (B, 2, L)
        query_domain = torch.tensor([0, 1], device=mixed_seq.device).expand(batch, 2)  # (B, 2)
        attended = self._attend(mixed_seq, h_mixed, own, query, summary, every_step, query_domain)  # 3 x (B, 2, H)
        fused = torch.stack([self.heads[d]([a[:, d] for a in attended]) for d in (0, 1)], dim=1)  # (B, 2, H)
        return F.normalize(fused, dim=-1) * self.cfg.logit_scale

    def item_vectors(self, domain: int, local_ids: torch.Tensor) -> torch.Tensor:
        """Unit item vectors of one domain (..., H), as the table holds them."""
        return F.normalize(self.branches[domain].items(local_ids), dim=-1)

    def item_table(self, domain: int) -> torch.Tensor:
        table = F.normalize(self.branches[domain].items.weight[1:], dim=-1)  # (n_d, H)
        return torch.cat([table.new_zeros(1, table.shape[1]), table])  # (n_d + 1, H)
