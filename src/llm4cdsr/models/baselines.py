"""Baselines in the same harness as LLM4CDSR: the same batches, loss and scoring interface.

- SASRecSingle: one SASRec per domain over that domain's items only, with its own ID table. The
  two domains share no parameter, so one run trains both exactly as two runs would (except that
  one epoch is selected for both); `domains` restricts it to one domain.
- GRU4Rec (Hidasi et al., 2016) over the mixed sequence, ID embeddings shared by input and output.
- Popularity: training interaction counts.
(SASRec over the mixed sequence, with ID or adapted LLM vectors, is LLM4CDSR without its domain
branches: see `build_model`.)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from llm4cdsr.models.base import (
    LossConfig,
    Recommender,
    domain_global_ids,
    domain_of,
    domain_subsequence,
    gather_steps,
    next_item_loss,
    to_local,
    xavier_init_,
)
from llm4cdsr.models.llm4cdsr import DomainBranch
from llm4cdsr.models.sasrec import Dropout, EncoderConfig


class SASRecSingle(Recommender):
    def __init__(self, cfg: EncoderConfig, n_items: tuple[int, int], domains: tuple[int, ...] = (0, 1),
                 loss: LossConfig | None = None):
        super().__init__()
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = cfg.max_len
        self.eval_domains = tuple(domains)
        self.loss = loss or LossConfig()
        self.branches = nn.ModuleList([DomainBranch(cfg, self.n_items[d]) for d in (0, 1)])
        xavier_init_(self)
        for d in (0, 1):
            if d not in self.eval_domains:
                self.branches[d].requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mixed_seq, targets = batch["mixed_seq"], batch["targets"]
        pos = targets[targets > 0]  # (P,)
        target_domain = domain_of(pos, self.n_items[0])  # (P,)
        queries = None
        # A first item of the domain has no in-domain history: nothing to learn from.
        use = torch.zeros_like(pos, dtype=torch.bool)  # (P,)
        for d in self.eval_domains:
            branch = self.branches[d]
            local_seq, last_col = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W), (B, L)
            h = gather_steps(branch(local_seq), last_col)[targets > 0]  # (P, H)
            in_d = (target_domain == d) & (last_col[targets > 0] >= 0)  # (P,)
            queries = h if queries is None else torch.where(in_d[:, None], h, queries)
            use |= in_d
        steps = targets > 0
        steps[steps.clone()] = use  # (B, L): the steps the kept rows come from
        loss = next_item_loss(self.loss, queries[use], to_local(pos[use], self.n_items[0]), target_domain[use], batch, steps,
                              self.n_items[0], lambda d, ids: self.branches[d].items(ids), self.item_table)
        return {"loss": loss, "rec": loss.detach()}

    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        queries = []
        for d, branch in enumerate(self.branches):
            local_seq, _ = domain_subsequence(mixed_seq, self.n_items[0], d)  # (B, W)
            queries.append(branch(local_seq, last_only=True))  # (B, H)
        return torch.stack(queries, dim=1)  # (B, 2, H)

    def item_table(self, domain: int) -> torch.Tensor:
        table = self.branches[domain].items.weight  # (n_d + 1, H)
        return torch.cat([table.new_zeros(1, table.shape[1]), table[1:]])


class GRU4Rec(Recommender):
    def __init__(self, n_items: tuple[int, int], hidden: int = 128, layers: int = 1, dropout: float = 0.5, max_len: int = 50,
                 loss: LossConfig | None = None):
        super().__init__()
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = max_len
        self.loss = loss or LossConfig()
        self.items = nn.Embedding(sum(self.n_items) + 1, hidden)
        self.dropout = Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        xavier_init_(self)

    def encode(self, mixed_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded -> (B, L, H) states; padding steps are 0 and never feed the GRU."""
        length = mixed_seq.shape[1]
        real = mixed_seq > 0  # (B, L)
        n_real = real.sum(1).clamp(min=1)  # (B,)
        steps = torch.arange(length, device=mixed_seq.device)[None, :]  # (1, L)
        # Left padding would run the GRU through padding first: pack the real steps instead.
        to_right = (steps + (length - n_real)[:, None]).clamp(max=length - 1)  # (B, L)
        x = self.dropout(self.items(mixed_seq.gather(1, to_right)))  # (B, L, H), right-padded
        packed = nn.utils.rnn.pack_padded_sequence(x, n_real.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)  # (B, L, H)
        to_left = (steps - (length - n_real)[:, None]).clamp(min=0)  # (B, L)
        out = out.gather(1, to_left[..., None].expand(-1, -1, out.shape[-1]))  # (B, L, H), left-padded
        return self.dropout(out) * real[..., None]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch["targets"]
        has_target = targets > 0  # (B, L)
        h = self.encode(batch["mixed_seq"])[has_target]  # (P, H)
        pos = targets[has_target]  # (P,)
        loss = next_item_loss(self.loss, h, to_local(pos, self.n_items[0]), domain_of(pos, self.n_items[0]), batch, has_target,
                              self.n_items[0], self._item_vectors, self.item_table)
        return {"loss": loss, "rec": loss.detach()}

    def _item_vectors(self, domain: int, local_ids: torch.Tensor) -> torch.Tensor:
        return self.items(local_ids + (self.n_items[0] if domain == 1 else 0))

    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encode(mixed_seq)[:, -1]  # (B, H)
        return torch.stack([h, h], dim=1)  # (B, 2, H)

    def item_table(self, domain: int) -> torch.Tensor:
        table = self.items(domain_global_ids(self.n_items, domain, device=self.items.weight.device))  # (n_d, H)
        return torch.cat([table.new_zeros(1, table.shape[1]), table])


class Popularity(Recommender):
    """Scores an item by its number of training interactions; nothing to train."""

    def __init__(self, n_items: tuple[int, int], max_len: int = 50):
        super().__init__()
        self.n_items = (int(n_items[0]), int(n_items[1]))
        self.max_len = max_len
        self.register_buffer("counts", torch.zeros(sum(self.n_items) + 1))

    def fit_statistics(self, train_offsets: np.ndarray, train_items: np.ndarray) -> None:
        counts = np.bincount(np.asarray(train_items, dtype=np.int64), minlength=sum(self.n_items) + 1)
        self.counts.copy_(torch.from_numpy(counts.astype(np.float32)))

    def forward(self, batch):
        raise RuntimeError("popularity has nothing to train; call fit_statistics")

    def user_states(self, mixed_seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.counts.new_ones(mixed_seq.shape[0], 2, 1)  # (B, 2, 1)

    def item_table(self, domain: int) -> torch.Tensor:
        counts = self.counts[domain_global_ids(self.n_items, domain, device=self.counts.device)]  # (n_d,)
        return torch.cat([counts.new_zeros(1), counts])[:, None]  # (n_d + 1, 1)
