"""C2DSR (Cao et al., "Contrastive Cross-Domain Sequential Recommendation", CIKM 2022) in this harness.

Reads top-down: the transition graph of the training sequences, the graph encoder, the config, the
model. Our own code, written from the paper and the authors' public code (github.com/cjx96/C2DSR).

What it is:
  - Item vectors = an ID table plus its graph-propagated version: a graph encoder runs over the
    item-item transition graph of the TRAINING sequences (edge i -> j weighted by how often j directly
    follows i, rows normalised; no self-loops added), a few layers of parameter-free propagation
    (A x + a bias per layer, dropout before each), averaged with the input (LightGCN-style), as
    their GCNLayer computes it (its weight matrices are created but never used, so we leave them out).
    Three graphs: the mixed sequences (global ids) and each domain's subsequences (local ids).
  - Three SASRec encoders (ours, causal): the mixed sequence and the two domain subsequences, each on
    its own table + graph ((graph(E)[i] + E[i]) * sqrt(H)).
  - Prediction per domain, softmax cross-entropy over every item of the target's domain with an
    untied output layer (W_d, b_d) per domain: a "specific" loss on W_d (h_mixed + h_d) + b_d and a
    "shared" loss on W_d h_mixed + b_d, h_d the domain encoder's state at the latest d item.
  - Contrastive infomax: per user with both domains, a bilinear discriminator D_d scores the
    single-domain representation of d (mean of the d encoder's states) against the mixed encoder's
    states pooled at the OTHER domain's steps (label 1), and against the same pooling of a corrupted
    mixed sequence in which every d item is replaced by a random item of d (label 0); BCE.
  - loss = lambda * (shared_A + shared_B + specific_A + specific_B) + (1 - lambda) * (mi_A + mi_B).
  - Score of item i of domain d: W_d[i] . (h_mixed + h_d) + b_d[i], the specific head at the last
    step, so the query is [h_mixed + h_d, 1] (K = H + 1) and the table row [W_d[i], b_d[i]].

Defects of their code we do not reproduce:
  - Evaluation with 999 sampled negatives drawn by each run's loader (from the run's seed, so every
    model and seed ranks other candidates), with replacement and excluding only the target (history
    items can be negatives), and the epoch chosen per domain separately. Here: the harness's saved
    candidates (100 by default) and full ranking, one epoch chosen on the validation score.
  - Only users with items in both domains are trained (others are skipped by the loader); here
    every user trains, and the infomax term uses the users with both domains.
  - Their attention has no key-padding mask (padding steps are attended to as keys). Ours masks them.

Where we differ on purpose (simplifications, each for the one harness):
  - The specific loss: their loader trains it at the steps of domain d (input item in d) on the
    next d item, whose mixed state may predate other-domain items in between, while the test scores
    the last mixed step. We train every step whose TARGET is in d with the same function that scores
    (mixed state at that step + domain state at the latest d item), so training matches scoring.
  - Domain sequences are compacted (left-padded, positions counted in the domain) instead of kept at
    mixed length with other-domain steps padded; with masked padding keys the outputs are the same.
  - No extra "padding class" in each domain's softmax (their lin_PAD: a logit no target ever has).
  - Losses are means over the steps of each term (theirs: masked sums divided by all B x 10 cells).
  - The optimiser is the harness's Adam (betas 0.9/0.999; theirs 0.9/0.98); weight decay is
    `train.weight_decay` (default 0, as theirs effectively is: their code declares an L2 of 5e-4 but
    never passes it to the optimiser). On Food x Kitchen that declared L2 (Adam, 5e-4) was the best
    point of a small validation grid and lifts C2DSR above SASRec, as much as it lifts SASRec (docs/results.md).
  - `steps` (their `used = 10`): the prediction losses use each history's newest `steps` steps (the
    softmax over a large domain is the memory of a training step); the infomax uses every step.
  - Xavier-normal initialisation of every matrix, as the harness's other models (theirs: PyTorch's
    defaults). The objective is the paper's own, softmax over the whole domain (`train.loss=ce` of the
    other models), whatever `train.loss` says; `objective="train"` (model.c2dsr_objective) takes
    `train.loss` instead, e.g. sampled_ce: on Food x Kitchen's 27,637 kitchen items the two full
    softmaxes make a step about 15x a SASRec step on CPU.
The graph is built by `fit_statistics` from the training split only (no validation or test target
is an edge) and saved with the weights as buffers, so `model_shell` + `load_state_dict` restores it.
Training positions still see edges to their own training targets (a transition graph of the training
data contains them); that is the method, and no evaluation target is among them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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
from llm4cdsr.models.sasrec import Dropout, EncoderConfig, SASRecEncoder


# ----- the transition graph ----------------------------------------------------------------


def transition_edges(user_of: np.ndarray, nodes: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-normalised transition counts of consecutive nodes of the same user.

    user_of, nodes (T,): one row per interaction, each user's rows together and in time order.
    Returns edges (2, E) int64 (source row, target column), sorted row-major (coalesced order), and
    weights (E,) float32: count(i -> j) / count(i -> anything).
    """
    user_of = np.asarray(user_of, dtype=np.int64)
    nodes = np.asarray(nodes, dtype=np.int64)
    same_user = user_of[:-1] == user_of[1:]  # (T - 1,)
    key = nodes[:-1][same_user] * n_nodes + nodes[1:][same_user]  # (T',) one key per transition
    unique, counts = np.unique(key, return_counts=True)  # sorted, so rows then columns ascend
    rows, cols = unique // n_nodes, unique % n_nodes
    out_degree = np.bincount(rows, weights=counts, minlength=n_nodes)  # (n_nodes,)
    weights = (counts / out_degree[rows]).astype(np.float32) if len(rows) else np.zeros(0, np.float32)
    return np.stack([rows, cols]).astype(np.int64).reshape(2, -1), weights


class TransitionGraph(nn.Module):
    """A fixed sparse adjacency (n x n) kept as buffers, so it is saved with the weights.

    Its size depends on the data: loading a state dict resizes the buffers first, so a shell built
    before the graph exists (`model_shell`) takes the saved graph.
    """

    def __init__(self, n_nodes: int):
        super().__init__()
        self.n_nodes = n_nodes
        self.register_buffer("edges", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("weights", torch.zeros(0))

    def set(self, edges: np.ndarray, weights: np.ndarray) -> None:
        device = self.weights.device
        self.edges = torch.as_tensor(edges, dtype=torch.long, device=device)
        self.weights = torch.as_tensor(weights, dtype=torch.float32, device=device)

    def matrix(self) -> torch.Tensor:
        return torch.sparse_coo_tensor(self.edges, self.weights, (self.n_nodes, self.n_nodes),
                                       is_coalesced=True, check_invariants=False)

    def dense(self) -> torch.Tensor:
        """(n, n): for tests and inspection (small graphs only)."""
        return self.matrix().to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, H) -> A x (n, H)."""
        return torch.sparse.mm(self.matrix(), x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("edges", "weights"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype, device=self.weights.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GraphEncoder(nn.Module):
    """mean(x, h_1, ..., h_n) with h_l = A dropout(h_{l-1}) + b_l, h_0 = x (their GCNLayer)."""

    def __init__(self, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(hidden)) for _ in range(layers)])
        for bias in self.biases:
            nn.init.uniform_(bias, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def forward(self, x: torch.Tensor, graph: TransitionGraph) -> torch.Tensor:
        total, h = x, x
        for bias in self.biases:
            h = graph(self.dropout(h)) + bias  # (n, H)
            total = total + h
        return total / (len(self.biases) + 1)


def encode_rows(encoder: SASRecEncoder, vectors: torch.Tensor, real: torch.Tensor, last_only: bool = False) -> torch.Tensor:
    """The encoder over the rows that have a real step only; the others are 0.

    vectors (B, W, H), real (B, W) -> (B, W, H), or (B, H) with `last_only`. In a batch of mostly
    single-domain users, a domain sequence is empty for most rows.
    """
    rows = real.any(1).nonzero().squeeze(1)  # (B',)
    if len(rows) == len(real):
        return encoder(vectors, real, last_only=last_only)
    states = encoder(vectors[rows], real[rows], last_only=last_only)  # (B', W, H) or (B', H)
    out = states.new_zeros(real.shape[0], *states.shape[1:])  # (B, W, H) or (B, H)
    return out.index_copy(0, rows, states)


# ----- the model ---------------------------------------------------------------------------


@dataclass
class C2DSRConfig:
    lambda_: float = 0.7  # weight of the prediction losses; 1 - lambda weighs the infomax (paper: 0.7)
    gnn_layers: int = 1  # propagation layers of the graph encoder (their default: 1)
    steps: int = 10  # the prediction losses use each history's newest `steps` steps; 0 = all (their `used`)
    objective: str = "ce"  # "ce": the paper's softmax over the whole domain; "train": train.loss, as other models


class C2DSR(Recommender):
    def __init__(self, encoder_cfg: EncoderConfig, n_items: tuple[int, int], cfg: C2DSRConfig | None = None,
                 loss: LossConfig | None = None):
        """`loss`: the harness's objective (train.loss), used with cfg.objective "train" only."""
        super().__init__()
        self.cfg = cfg or C2DSRConfig()
        if not 0.0 <= self.cfg.lambda_ <= 1.0:
            raise ValueError(f"model.c2dsr_lambda must be in [0, 1], got {self.cfg.lambda_}")
        if self.cfg.objective not in ("ce", "train"):
            raise ValueError(f"model.c2dsr_objective must be 'ce' or 'train', got {self.cfg.objective!r}")
        self.objective = LossConfig("ce") if self.cfg.objective == "ce" else (loss or LossConfig())
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = encoder_cfg.max_len
        hidden = encoder_cfg.hidden
        n_total = sum(self.n_items)
        # Mixed sequence: global ids; domain d: local ids. Row 0 is padding everywhere.
        self.items = nn.Embedding(n_total + 1, hidden)
        self.graph = TransitionGraph(n_total + 1)
        self.gnn = GraphEncoder(hidden, self.cfg.gnn_layers, encoder_cfg.dropout)
        self.encoder = SASRecEncoder(encoder_cfg)
        self.domain_items = nn.ModuleList([nn.Embedding(n + 1, hidden) for n in self.n_items])
        self.domain_graphs = nn.ModuleList([TransitionGraph(n + 1) for n in self.n_items])
        self.domain_gnns = nn.ModuleList([GraphEncoder(hidden, self.cfg.gnn_layers, encoder_cfg.dropout) for _ in self.n_items])
        self.domain_encoders = nn.ModuleList([SASRecEncoder(encoder_cfg) for _ in self.n_items])
        # Output layers, untied from the input tables (their lin_X, lin_Y).
        self.heads = nn.ModuleList([nn.Linear(hidden, n) for n in self.n_items])
        # Discriminator of domain d: (mixed states pooled at the other domain's steps, d's own state).
        self.discriminators = nn.ModuleList([nn.Bilinear(hidden, hidden, 1) for _ in self.n_items])
        xavier_init_(self)
        for disc in self.discriminators:
            nn.init.zeros_(disc.bias)

    # ----- statistics --------------------------------------------------------------------------
    def fit_statistics(self, train_offsets: np.ndarray, train_items: np.ndarray) -> None:
        """Build the three transition graphs from the training histories (CSR: offsets, global ids)."""
        offsets = np.asarray(train_offsets, dtype=np.int64)
        items = np.asarray(train_items, dtype=np.int64)
        user_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # (T,)
        self.graph.set(*transition_edges(user_of, items, sum(self.n_items) + 1))
        in_b = items > self.n_items[0]  # (T,)
        for d, keep in enumerate((~in_b, in_b)):
            local = items[keep] - (self.n_items[0] if d == 1 else 0)  # (T_d,) the domain subsequences
            self.domain_graphs[d].set(*transition_edges(user_of[keep], local, self.n_items[d] + 1))

    # ----- encoders ----------------------------------------------------------------------------
    def tables(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Input item vectors: ID table + its graph encoding; mixed (N + 1, H), per domain (n_d + 1, H)."""
        mixed = self.items.weight + self.gnn(self.items.weight, self.graph)
        domains = [emb.weight + gnn(emb.weight, graph) for emb, gnn, graph in zip(self.domain_items, self.domain_gnns, self.domain_graphs)]
        return mixed, domains

    def encode_mixed(self, mixed_seq: torch.Tensor, table: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L) global ids -> (B, L, H) states, or (B, H) with `last_only`."""
        # F.embedding, not table[ids]: its backward adds repeated ids in a fixed order (indexing's
        # uses atomics on 2+ CPU threads, so runs would differ).
        return self.encoder(F.embedding(mixed_seq, table), mixed_seq > 0, last_only=last_only)

    def encode_domain(self, d: int, local_seq: torch.Tensor, table: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, W) local ids of domain d -> (B, W, H) states, or (B, H); 0 for users without d items."""
        return encode_rows(self.domain_encoders[d], F.embedding(local_seq, table), local_seq > 0, last_only)

    def step_states(self, mixed_seq: torch.Tensor):
        """Per step t: the mixed state (B, L, H) and, per domain, the domain state at the latest item
        of the domain at or before t (B, L, H) (0 before the first); plus the domain encoders'
        states (B, W_d, H) and local sequences (B, W_d), which the infomax pools."""
        mixed_table, domain_tables = self.tables()
        h_mixed = self.encode_mixed(mixed_seq, mixed_table)  # (B, L, H)
        at_step, states, local = [], [], []
        for d in (0, 1):
            local_seq, last_col = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W), (B, L)
            h_d = self.encode_domain(d, local_seq, domain_tables[d])  # (B, W, H)
            at_step.append(gather_steps(h_d, last_col))  # (B, L, H)
            states.append(h_d)
            local.append(local_seq)
        return h_mixed, at_step, states, local, mixed_table

    # ----- training ----------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixed_seq, targets = batch["mixed_seq"], batch["targets"]
        h_mixed, at_step, states, local, mixed_table = self.step_states(mixed_seq)
        train_steps = targets > 0  # (B, L)
        if self.cfg.steps > 0:
            newest = torch.arange(targets.shape[1], device=targets.device) >= targets.shape[1] - self.cfg.steps  # (L,)
            train_steps = train_steps & newest[None, :]
        pos = targets[train_steps]  # (P,)
        target_domain = domain_of(pos, self.n_items[0])  # (P,)
        shared = h_mixed[train_steps]  # (P, H)
        own = torch.where((target_domain == 1)[:, None], at_step[1][train_steps], at_step[0][train_steps])  # (P, H)
        ones = shared.new_ones(len(shared), 1)
        rec = shared.new_zeros(())
        # The shared head (mixed state alone) and the specific head (mixed + the target domain's state).
        for query in (torch.cat([shared, ones], dim=-1), torch.cat([shared + own, ones], dim=-1)):  # (P, H + 1)
            rec = rec + next_item_loss(self.objective, query, to_local(pos, self.n_items[0]), target_domain, batch,
                                       train_steps, self.n_items[0], self.item_vectors, self.item_table)
        out = {"rec": rec.detach()}
        loss = self.cfg.lambda_ * rec
        mi = self.infomax(mixed_seq, h_mixed, states, local, mixed_table)
        if mi is not None:  # no user of the batch has both domains: nothing to contrast
            loss = loss + (1.0 - self.cfg.lambda_) * mi
            out["mi"] = mi.detach()
        out["loss"] = loss
        return out

    def infomax(self, mixed_seq, h_mixed, states, local, mixed_table) -> torch.Tensor | None:
        """mi_A + mi_B over the users with both domains (None if there are none)."""
        real = mixed_seq > 0  # (B, L)
        step_domain = domain_of(mixed_seq, self.n_items[0])  # (B, L)
        in_domain = [real & (step_domain == d) for d in (0, 1)]  # 2 x (B, L)
        rows = (in_domain[0].any(1) & in_domain[1].any(1)).nonzero().squeeze(1)  # (R,)
        if not len(rows):
            return None
        seq = mixed_seq[rows]  # (R, L)
        total = h_mixed.new_zeros(())
        for d in (0, 1):
            other = 1 - d
            single = _masked_mean(states[d][rows], local[d][rows] > 0)  # (R, H): d's own representation
            cross = _masked_mean(h_mixed[rows], in_domain[other][rows])  # (R, H): mixed, at the other domain's steps
            # Corrupt: every d item becomes a uniformly random item of d; the other domain's stay.
            offset = self.n_items[0] if d == 1 else 0
            random_items = torch.randint(1, self.n_items[d] + 1, seq.shape, device=seq.device) + offset  # (R, L)
            corrupted = torch.where(in_domain[d][rows], random_items, seq)  # (R, L)
            fake = _masked_mean(self.encode_mixed(corrupted, mixed_table), in_domain[other][rows])  # (R, H)
            disc = self.discriminators[d]
            real_logit, fake_logit = disc(cross, single).squeeze(-1), disc(fake, single).squeeze(-1)  # (R,), (R,)
            total = total + F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()  # BCE(real, 1) + BCE(fake, 0)
        return total

    # ----- scoring -----------------------------------------------------------------------------
    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        mixed_table, domain_tables = self.tables()
        h_mixed = self.encode_mixed(mixed_seq, mixed_table, last_only=True)  # (B, H)
        ones = h_mixed.new_ones(h_mixed.shape[0], 1)
        queries = []
        for d in (0, 1):
            local_seq, _ = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W)
            h_d = self.encode_domain(d, local_seq, domain_tables[d], last_only=True)  # (B, H)
            queries.append(torch.cat([h_mixed + h_d, ones], dim=-1))  # (B, H + 1)
        return torch.stack(queries, dim=1)  # (B, 2, H + 1)

    def item_vectors(self, domain: int, local_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the item table (..., H + 1): [W_d[i], b_d[i]] (local ids from 1)."""
        head = self.heads[domain]
        return torch.cat([F.embedding(local_ids - 1, head.weight), F.embedding(local_ids - 1, head.bias[:, None])], dim=-1)

    def item_table(self, domain: int) -> torch.Tensor:
        head = self.heads[domain]
        table = torch.cat([head.weight, head.bias[:, None]], dim=-1)  # (n_d, H + 1)
        return torch.cat([table.new_zeros(1, table.shape[1]), table])  # (n_d + 1, H + 1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, L, H) averaged over the steps where mask (B, L) is True -> (B, H) (0 where none)."""
    weights = mask.to(x.dtype)  # (B, L)
    return (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
