"""The SASRec encoder (Kang & McAuley, ICDM 2018), the sequence encoder of every LLM4CDSR branch.

Reads top-down, small parts first: config, self-attention, feed-forward, block, encoder.

Input is a batch of item vectors (B, L, H) and a mask of real steps, LEFT-padded (the newest item
is always the last column). Two choices keep results independent of how much padding a batch has,
so that a batch padded to its own longest history and one padded to max_len give the same output:
  - positions count from the first real item (0, 1, 2, ...), not from the left edge of the array,
    as the authors' code does (their arrays hold 1..n, padding 0); `positions: last` numbers them
    back from the newest item, max_len - 1, as an array padded to max_len and numbered by slot would
    (SASRec.pytorch): independent of the batch's padding as well;
  - a query attends to real keys only (plus itself, so that a padding row is never fully masked
    and never produces NaN; padding outputs are zeroed anyway).
`causal: false` drops the causal mask, reproducing the authors' code, in which every training step
sees the items after it (its own target included). Comparison only.

The authors' encoder differs in two more ways, each a switch: its block layout (`block: authors`,
see Block) and its padding: every sequence padded to max_len with no key-padding mask, so each
query also attends to max_len - length identical padding keys. `null_key: true` gives exactly that
attention as ONE extra key per row (score + log(max_len - length)), at dynamic-padding cost; in
training, dropout keeps each of the padding keys it stands for on its own (a binomial share).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = float("-inf")


@dataclass
class EncoderConfig:
    hidden: int = 128  # H
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    causal: bool = True
    block: str = "prenorm"  # prenorm | authors (see Block)
    null_key: bool = False  # attend to max_len - length padding keys, as the authors' unmasked padding does
    positions: str = "first"  # first: 0 at the oldest item (the authors') | last: max_len - 1 at the newest (by slot)


class Dropout(nn.Module):
    """Inverted dropout. On CPU the mask comes from torch.rand: nn.Dropout's bernoulli_ took a fifth
    of a CPU training step, this is about 3x cheaper with the same distribution. GPUs keep the
    fused kernel."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.is_cuda:
            return F.dropout(x, self.p, True)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


def attention_mask(real: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, L) real-step mask -> (B, 1, L, L) boolean mask, True where query i may attend to key j."""
    length = real.shape[1]
    allowed = real[:, None, :].expand(-1, length, -1)  # (B, L, L): real keys only
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=real.device).tril()
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=real.device)  # never an empty row
    return allowed[:, None]  # (B, 1, L, L)


class SelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig, resid_dropout: bool = True):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.resid_dropout = Dropout(cfg.dropout if resid_dropout else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False, kv: torch.Tensor | None = None,
                null_input: torch.Tensor | None = None, null_count: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H): the queries' inputs -> (B, L, H), or (B, 1, H) for the last query only (`last_only`).

        kv: the keys' and values' inputs (default x). null_input (H,) and null_count (B,): one extra
        key and value made from `null_input`, standing for `null_count` identical padding keys: a key
        repeated n times weighs as one key with log(n) added to its score, so this is exactly
        attention to n padding keys (the authors' unmasked padding to max_len) without computing them.
        Dropout on the attention weights drops each of those n keys on its own, as it would the
        explicit keys (see `_attend_dropping_padding_keys`).
        """
        batch, length, hidden = x.shape
        w_q, w_kv = self.qkv.weight.split([hidden, 2 * hidden])
        b_q, b_kv = self.qkv.bias.split([hidden, 2 * hidden])
        if last_only:
            q = F.linear(x[:, -1:], w_q, b_q)  # (B, 1, H)
            k, v = F.linear(x if kv is None else kv, w_kv, b_kv).split(hidden, dim=2)  # 2 x (B, L, H)
            mask = mask[:, :, -1:]  # (B, 1, 1, L)
        elif kv is None:
            q, k, v = self.qkv(x).split(hidden, dim=2)  # 3 x (B, L, H)
        else:
            q = F.linear(x, w_q, b_q)  # (B, L, H)
            k, v = F.linear(kv, w_kv, b_kv).split(hidden, dim=2)  # 2 x (B, L, H)
        if null_input is not None:
            k_null, v_null = F.linear(null_input, w_kv, b_kv).split(hidden)  # (H,), (H,)
            k = torch.cat([k_null.expand(batch, 1, hidden), k], dim=1)  # (B, 1 + L, H)
            v = torch.cat([v_null.expand(batch, 1, hidden), v], dim=1)  # (B, 1 + L, H)
            additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, NEG_INF)  # (B, 1, Lq, L)
            null_bias = torch.where(null_count > 0, null_count.clamp(min=1).log(), NEG_INF).to(q.dtype)  # (B,)
            null_col = null_bias[:, None, None, None].expand(-1, 1, mask.shape[2], 1)  # (B, 1, Lq, 1)
            mask = torch.cat([null_col, additive], dim=-1)  # (B, 1, Lq, 1 + L)
        n_keys = k.shape[1]
        q = q.view(batch, q.shape[1], self.heads, hidden // self.heads).transpose(1, 2)  # (B, nh, Lq, hd)
        k = k.view(batch, n_keys, self.heads, hidden // self.heads).transpose(1, 2)  # (B, nh, Lk, hd)
        v = v.view(batch, n_keys, self.heads, hidden // self.heads).transpose(1, 2)  # (B, nh, Lk, hd)
        if null_input is not None and self.training and self.dropout > 0:
            y = _attend_dropping_padding_keys(q, k, v, mask, null_count, self.dropout)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, Lq, hd)
        y = y.transpose(1, 2).reshape(batch, q.shape[2], hidden)  # (B, Lq, H)
        return self.resid_dropout(self.proj(y))


def _attend_dropping_padding_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                                  null_count: torch.Tensor, p: float) -> torch.Tensor:
    """Attention with dropout p on its weights, where key 0 is the null key standing for
    `null_count` (B,) identical padding keys -> (B, nh, Lq, hd).

    Dropping the null key whole (as the fused kernel would) is not what dropout does to n explicit
    padding keys: each is kept on its own, so the kept share of their weight is Binomial(n, 1 - p) / n,
    not 0 or 1. With dropout 0.5 and ~40 padding keys holding much of a query's attention, the
    whole-key drop zeroes that share in half the steps; the authors' training never does. All the
    padding keys carry the same value, so the output depends on the kept count only: drawing it
    from the binomial gives exactly the distribution of the explicit keys under dropout.
    """
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask, dim=-1)  # (B, nh, Lq, 1 + L)
    keep_real = torch.rand_like(weights[..., 1:]).ge_(p)  # each real key on its own, as F.dropout
    count = null_count.to(weights.dtype)[:, None, None, None].expand(-1, *weights.shape[1:3], 1).contiguous()
    kept = torch.binomial(count, torch.full_like(count, 1.0 - p))  # (B, nh, Lq, 1) padding keys kept
    null_share = kept / count.clamp(min=1)
    weights = torch.cat([weights[..., :1] * null_share, weights[..., 1:] * keep_real], dim=-1) / (1.0 - p)
    return weights @ v


class FeedForward(nn.Module):
    """SASRec's point-wise feed-forward: two H x H layers applied to each step alone."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.hidden, cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.dropout(F.relu(self.fc(x)))))


BLOCKS = ("prenorm", "authors")


class Block(nn.Module):
    """A transformer block; eps 1e-8 as SASRec. Two layouts (`EncoderConfig.block`):

    prenorm  x = x + Attn(LN(x)); x = x + FFN(LN(x))                       (nanoGPT)
    authors  q = LN(x); x = q + Attn(q, keys and values from x); x = LN(x); x = x + FFN(x)
             (SASRec.pytorch, the authors' code; no dropout on the attention output, as
             nn.MultiheadAttention has none)
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.block not in BLOCKS:
            raise ValueError(f"model.block must be one of {BLOCKS}, got {cfg.block!r}")
        self.layout = cfg.block
        self.ln_attn = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.attn = SelfAttention(cfg, resid_dropout=cfg.block == "prenorm")
        self.ln_ffn = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False,
                null_count: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) -> (B, L, H), or the last step alone (B, 1, H) (`last_only`). `null_count` (B,):
        the padding keys each row would attend to when padded to max_len (None: none)."""
        h = self.ln_attn(x)
        null_input = None
        if null_count is not None:
            # What a padding step (zeroed input) gives as the attention's key/value input.
            zero = x.new_zeros(x.shape[-1])
            null_input = self.ln_attn(zero) if self.layout == "prenorm" else zero
        if self.layout == "prenorm":
            y = self.attn(h, mask, last_only, null_input=null_input, null_count=null_count)
            x = (x[:, -1:] if last_only else x) + y
            return x + self.ffn(self.ln_ffn(x))
        y = self.attn(h, mask, last_only, kv=x, null_input=null_input, null_count=null_count)
        x = self.ln_ffn((h[:, -1:] if last_only else h) + y)
        return x + self.ffn(x)


class SASRecEncoder(nn.Module):
    """Item vectors of a left-padded sequence -> one state per step (B, L, H); padding steps are 0."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.emb_dropout = Dropout(cfg.dropout)
        if cfg.positions not in ("first", "last"):
            raise ValueError(f"model.positions must be 'first' or 'last', got {cfg.positions!r}")
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.blocks)])
        self.ln_final = nn.LayerNorm(cfg.hidden, eps=1e-8)

    def forward(self, item_vectors: torch.Tensor, real: torch.Tensor, scale: float | None = None,
                last_only: bool = False) -> torch.Tensor:
        """item_vectors (B, L, H), real (B, L) bool -> (B, L, H); the last state alone (B, H) with
        `last_only` (scoring: the last block then computes one query per user instead of L).
        `scale` multiplies the item vectors (default sqrt(H)); the authors scale by the width of the
        table the vectors come from."""
        length, hidden = item_vectors.shape[1:]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence of {length} steps exceeds max_len {self.cfg.max_len}; truncate it first")
        if self.cfg.positions == "last":
            # Numbered by slot of an array padded to max_len: the newest item is always
            # max_len - 1, whatever the history's length.
            positions = (torch.arange(length, device=real.device) + self.cfg.max_len - length)[None, :].expand(real.shape[0], -1)  # (B, L)
        else:
            first_real = length - real.sum(1)  # (B,): left padding
            positions = (torch.arange(length, device=real.device)[None, :] - first_real[:, None]).clamp(min=0)  # (B, L)
        keep = real[..., None].to(item_vectors.dtype)  # (B, L, 1)
        x = item_vectors * (math.sqrt(hidden) if scale is None else scale) + self.pos_emb(positions)
        x = self.emb_dropout(x) * keep
        mask = attention_mask(real, self.cfg.causal)
        null_count = (self.cfg.max_len - real.sum(1)).to(x.dtype) if self.cfg.null_key else None  # (B,)
        for i, block in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            x = block(x, mask, last, null_count) * (keep[:, -1:] if last else keep)
        if last_only:
            if not len(self.blocks):
                x = x[:, -1:]
            return (self.ln_final(x) * keep[:, -1:])[:, 0]  # (B, H)
        return self.ln_final(x) * keep
