"""Grouped-query attention (GQA, Ainslie et al. 2023) and multi-query attention (MQA, Shazeer 2019).

The H query heads are split into G groups and each group shares ONE key head and ONE value head, so a token
leaves 2·G·K numbers per layer in the KV cache instead of MHA's 2·H·K. G = H is MHA, G = 1 is MQA (every
query head reads the same keys and values). DeepSeek-V2 measures both against MHA and MLA (V2 Table 1 and
App. D.1; REFERENCE.md §2.6). The config field is `n_kv_heads` (0 means n_heads).
Taught in lessons/03_gqa.ipynb.
"""

# Shapes: B batch, T query positions, S key positions (T <= S with a cache),
# D = dim, H = n_heads, G = n_kv_heads (KV groups), R = H // G query heads per group, K = head width

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .mha import causal_mask, mha_cache_spec
from .rope import apply_rope


def kv_heads(cfg: ModelConfig) -> int:
    """The number G of key/value heads a config asks for: `n_kv_heads`, where 0 means one per query head."""
    return cfg.n_kv_heads or cfg.n_heads


def grouped_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention where query head h reads KV head h // (H // G), without copying K/V per head.

    q (B, T, H, K), k (B, S, G, K), v (B, S, G, K) -> (B, T, H, K); the T queries are the last T of S positions.
    """
    b, t, h, d = q.shape
    s, g = k.shape[1], k.shape[2]
    if h % g:
        raise ValueError(f"{h} query heads cannot be split evenly over {g} KV heads")
    q = q.reshape(b, t, g, h // g, d)  # (B, T, G, R, K): consecutive query heads form a group
    scores = torch.einsum("btgrk,bsgk->bgrts", q, k) / math.sqrt(d)  # (B, G, R, T, S)
    scores = scores + causal_mask(t, s, q.device)
    probs = scores.float().softmax(dim=-1).to(v.dtype)  # softmax in fp32, as DeepSeek does
    o = torch.einsum("bgrts,bsgk->btgrk", probs, v)  # (B, T, G, R, K)
    return o.reshape(b, t, h, d)  # (B, T, H, K)


class GroupedQueryAttention(nn.Module):
    """Causal attention with H query heads sharing G key/value heads, RoPE and a KV cache.  (B, T, D) -> (B, T, D)"""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, kv_heads(cfg), cfg.head_dim
        kv_width = self.n_kv_heads * self.head_dim  # G·K: the only K/V widths that reach the cache
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)  # W^Q: x -> H query heads
        self.wk = nn.Linear(cfg.dim, kv_width, bias=False)  # W^K: x -> G key heads
        self.wv = nn.Linear(cfg.dim, kv_width, bias=False)  # W^V: x -> G value heads
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)  # W^O: heads -> residual stream

    @staticmethod
    def cache_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Per token and layer: one key and one value per KV head, 2·G·K numbers."""
        return mha_cache_spec(kv_heads(cfg), cfg.head_dim)

    def forward(self, x: Tensor, freqs: Tensor, start_pos: int = 0, cache: dict | None = None) -> Tensor:
        """x holds T new tokens at absolute positions start_pos..start_pos+T-1; freqs (T, K/2) are theirs."""
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)  # (B, T, H, K)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim)  # (B, T, G, K)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)  # (B, T, G, K)
        q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        if cache is not None:
            # the cache holds G heads, not H: this is the whole saving
            cache["k"][:b, start_pos:start_pos + t] = k
            cache["v"][:b, start_pos:start_pos + t] = v
            k, v = cache["k"][:b, :start_pos + t], cache["v"][:b, :start_pos + t]  # (B, S, G, K)
        o = grouped_causal_attention(q, k, v)  # (B, T, H, K)
        return self.wo(o.flatten(2))  # (B, T, D)
