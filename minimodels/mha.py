"""Causal multi-head attention (Vaswani et al. 2017) with RoPE: the baseline that MQA, GQA and MLA replace.

Each of H heads projects the residual stream to K-wide queries, keys and values; a query at position t
attends to keys at positions <= t. With a KV cache the new keys and values are written at their absolute
positions and the queries attend over everything cached so far, so decoding one token costs one row of
attention instead of a whole forward pass. Taught in lessons/01_baseline_gpt.ipynb (attention) and
lessons/02_kv_cache.ipynb (the cache).
"""

# Shapes: B batch, T query positions, S key positions (T <= S with a cache),
# D = dim, H = n_heads, K = head width

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .rope import apply_rope


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """Additive mask for T new queries that sit at the END of S keys.  -> (T, S), 0 or -inf

    Query i is at absolute position s - t + i and may see keys 0 .. s - t + i. More queries than keys would
    leave the first queries no key at all (a row of -inf, NaN after softmax), so t > s raises.
    """
    if t > s:
        raise ValueError(f"causal_mask({t}, {s}): {t} queries but only {s} keys; each query needs its own key, "
                         f"so the keys must cover every query's position (with a cache: the cached prefix "
                         f"plus the new tokens)")
    q_pos = torch.arange(s - t, s, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(s, device=device)[None, :]  # (1, S)
    return torch.zeros(t, s, device=device).masked_fill(k_pos > q_pos, float("-inf"))


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q kᵀ / sqrt(K) + mask) v, with the T queries aligned to the last T of S keys.

    q (B, T, H, K), k (B, S, H, K), v (B, S, H, V) -> (B, T, H, V)
    """
    scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    scores = scores + causal_mask(q.shape[1], k.shape[1], q.device)
    probs = scores.float().softmax(dim=-1).to(v.dtype)  # softmax in fp32, as DeepSeek does
    return torch.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, V)


def mha_cache_spec(n_kv_heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
    """What one token leaves in the cache of one attention layer: a key and a value per KV head."""
    return {"k": (n_kv_heads, head_dim), "v": (n_kv_heads, head_dim)}


class MultiHeadAttention(nn.Module):
    """Causal MHA with RoPE and an optional KV cache.  (B, T, D) -> (B, T, D)"""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.dim, bias=False)  # W^Q: x -> H query heads
        self.wk = nn.Linear(cfg.dim, cfg.dim, bias=False)  # W^K
        self.wv = nn.Linear(cfg.dim, cfg.dim, bias=False)  # W^V
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)  # W^O: concatenated heads -> residual stream

    @staticmethod
    def cache_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return mha_cache_spec(cfg.n_heads, cfg.head_dim)

    def forward(self, x: Tensor, freqs: Tensor, start_pos: int = 0, cache: dict | None = None) -> Tensor:
        """x holds T new tokens at absolute positions start_pos..start_pos+T-1; freqs (T, K/2) are theirs."""
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)  # (B, T, H, K)
        k = self.wk(x).view(b, t, self.n_heads, self.head_dim)  # (B, T, H, K)
        v = self.wv(x).view(b, t, self.n_heads, self.head_dim)  # (B, T, H, K)
        q, k = apply_rope(q, freqs), apply_rope(k, freqs)
        if cache is not None:
            # write the new keys/values at their positions, then attend over the whole prefix
            cache["k"][:b, start_pos:start_pos + t] = k
            cache["v"][:b, start_pos:start_pos + t] = v
            k, v = cache["k"][:b, :start_pos + t], cache["v"][:b, :start_pos + t]  # (B, S, H, K)
        o = causal_attention(q, k, v)  # (B, T, H, K)
        return self.wo(o.flatten(2))  # (B, T, D)
