"""Multi-head Latent Attention (MLA; DeepSeek-V2 §2.1.2-2.1.3, arXiv:2405.04434; DeepSeek-V3 §2.1.1).

MHA caches 2·H·K numbers per token and layer. MLA caches one C-wide latent c_kv (keys and values compressed
jointly by W^DKV, then RMS-normalised) and one R-wide rotated rope key k_pe shared by every head: C + R
numbers. Per-head keys and values are recovered from the latent by up-projections W^UK and W^UV, packed
per head in `wkv_b`. RoPE lives only on R decoupled channels (per-head rope queries, one shared rope key),
because a rotation between W^UQ and W^UK would stop W^UK from being folded into the query. Two paths run on
the same weights, chosen by the module's `attn_impl`:
- "naive": up-project the latent into per-head K and V, then ordinary attention (training, prefill);
- "absorb": fold W^UK into the query, attend over the latent cache itself, apply W^UV afterwards (decoding);
- "auto": naive for several new tokens, absorb for one (what a server does).
`LowRankAttention` is the same module without decoupled RoPE, where lesson 04 starts.
Taught in lessons/04_mla.ipynb (latent and cache) and lessons/05_rope_absorption.ipynb (decoupled RoPE,
absorption). Every detail follows REFERENCE.md §2 (matrix packing §2.3, shapes §2.4, RoPE §2.5).
"""

# Shapes: B batch, T query positions, S key positions (T <= S with a cache), D = dim, H = n_heads,
# K = qk_nope_head_dim, R = qk_rope_head_dim, V = v_head_dim, C = kv_lora_rank (the cached latent),
# L = q_lora_rank (the query latent)

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .mha import causal_mask
from .norms import RMSNorm
from .rope import apply_rope

ATTN_IMPLS = ("naive", "absorb", "auto")


def mla_cache_spec(kv_lora_rank: int, qk_rope_head_dim: int) -> dict[str, tuple[int, ...]]:
    """What one token leaves in the cache of one MLA layer: the normalised latent and the rotated rope key."""
    spec = {"kv": (kv_lora_rank,)}  # c_kv, shared by all heads
    if qk_rope_head_dim:
        spec["pe"] = (qk_rope_head_dim,)  # k_pe, ONE per token, shared by all heads
    return spec


def split_wkv_b(wkv_b: Tensor, n_heads: int, qk_nope_head_dim: int) -> tuple[Tensor, Tensor]:
    """wkv_b (H·(K+V), C) -> W^UK (H, K, C), W^UV (H, V, C).

    Rows are packed per head, [W^UK_1; W^UV_1; W^UK_2; W^UV_2; ...], so the split is per head, never a
    global [all keys; all values] cut.
    """
    w = wkv_b.view(n_heads, -1, wkv_b.shape[-1])  # (H, K+V, C)
    return w[:, :qk_nope_head_dim], w[:, qk_nope_head_dim:]


def causal_softmax(scores: Tensor, scale: float) -> Tensor:
    """scores (B, H, T, S) -> probs (B, H, T, S): scaled, causal (queries are the last T of S), softmax in fp32."""
    t, s = scores.shape[-2:]
    dtype = scores.dtype
    scores = scores.float() * scale + causal_mask(t, s, scores.device)
    return scores.softmax(dim=-1).to(dtype)


def mla_naive_attention(q_nope: Tensor, q_pe: Tensor | None, c_kv: Tensor, k_pe: Tensor | None,
                        wkv_b: Tensor, scale: float) -> Tensor:
    """Up-project the latent to per-head keys and values, then ordinary attention.

    q_nope (B, T, H, K), q_pe (B, T, H, R), c_kv (B, S, C), k_pe (B, S, R), wkv_b (H·(K+V), C) -> (B, T, H, V)
    """
    (b, s, _), h, k_dim = c_kv.shape, q_nope.shape[2], q_nope.shape[3]
    kv = F.linear(c_kv, wkv_b).view(b, s, h, -1)  # (B, S, H, K+V): per head [k_nope_i; v_i]
    k_nope, v = kv[..., :k_dim], kv[..., k_dim:]  # (B, S, H, K), (B, S, H, V)
    q, k = q_nope, k_nope
    if q_pe is not None:  # head i's key is [k_nope_i; k_pe]: the one rope key is repeated for every head
        q = torch.cat([q_nope, q_pe], dim=-1)  # (B, T, H, K+R)
        k = torch.cat([k_nope, k_pe[:, :, None].expand(-1, -1, h, -1)], dim=-1)  # (B, S, H, K+R)
    probs = causal_softmax(torch.einsum("bthk,bshk->bhts", q, k), scale)  # (B, H, T, S)
    return torch.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, V)


def mla_absorbed_attention(q_nope: Tensor, q_pe: Tensor | None, c_kv: Tensor, k_pe: Tensor | None,
                           wkv_b: Tensor, scale: float) -> Tensor:
    """Attend over the latent directly: W^UK folded into the query, W^UV applied after attention.

    Same inputs and output as `mla_naive_attention`; per-head K and V are never built.
    """
    w_uk, w_uv = split_wkv_b(wkv_b, q_nope.shape[2], q_nope.shape[3])  # (H, K, C), (H, V, C)
    q_lat = torch.einsum("bthk,hkc->bthc", q_nope, w_uk)  # (B, T, H, C): q_nope_i^T W^UK_i
    scores = torch.einsum("bthc,bsc->bhts", q_lat, c_kv)  # (B, H, T, S): one C-wide "key" for all heads
    if q_pe is not None:
        scores = scores + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)  # the shared rope key
    probs = causal_softmax(scores, scale)  # same scale as naive: 1/sqrt(K + R), not 1/sqrt(C + R)
    o_lat = torch.einsum("bhts,bsc->bthc", probs, c_kv)  # (B, T, H, C): a weighted sum of latents
    return torch.einsum("bthc,hvc->bthv", o_lat, w_uv)  # (B, T, H, V)


class MultiHeadLatentAttention(nn.Module):
    """MLA with decoupled RoPE and a latent KV cache.  (B, T, D) -> (B, T, D)

    attn_impl: "naive", "absorb" or "auto" (an attribute you may change at any time; same weights, same result).
    """

    decoupled_rope = True  # LowRankAttention turns it off

    def __init__(self, cfg: ModelConfig, *, attn_impl: str = "naive"):
        super().__init__()
        self.n_heads, self.q_lora_rank, self.kv_lora_rank = cfg.n_heads, cfg.q_lora_rank, cfg.kv_lora_rank
        self.qk_nope_head_dim, self.v_head_dim = cfg.qk_nope_head_dim, cfg.v_head_dim
        self.qk_rope_head_dim = cfg.qk_rope_head_dim if self.decoupled_rope else 0
        qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.softmax_scale = qk_head_dim ** -0.5  # 1/sqrt(d_h + d_h^R), in both paths
        self.attn_impl = attn_impl
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(cfg.dim, cfg.n_heads * qk_head_dim, bias=False)  # [W^UQ_i; W^QR_i] on x
        else:
            self.wq_a = nn.Linear(cfg.dim, self.q_lora_rank, bias=False)  # W^DQ: x -> c_q (L)
            self.q_norm = RMSNorm(self.q_lora_rank, cfg.norm_eps)
            self.wq_b = nn.Linear(self.q_lora_rank, cfg.n_heads * qk_head_dim, bias=False)  # [W^UQ_i; W^QR_i]
        self.wkv_a = nn.Linear(cfg.dim, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)  # [W^DKV; W^KR]
        self.kv_norm = RMSNorm(self.kv_lora_rank, cfg.norm_eps)  # on c_kv only, never on the rope key
        self.wkv_b = nn.Linear(self.kv_lora_rank, cfg.n_heads * (self.qk_nope_head_dim + self.v_head_dim),
                               bias=False)  # per head [W^UK_i; W^UV_i]
        self.wo = nn.Linear(cfg.n_heads * self.v_head_dim, cfg.dim, bias=False)  # W^O

    @property
    def attn_impl(self) -> str:
        return self._attn_impl

    @attn_impl.setter
    def attn_impl(self, value: str) -> None:
        if value not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={value!r}: choose one of {ATTN_IMPLS}")
        self._attn_impl = value

    @staticmethod
    def cache_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Per token and layer: C + R numbers, whatever the number of heads."""
        return mla_cache_spec(cfg.kv_lora_rank, cfg.qk_rope_head_dim)

    def queries(self, x: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D) -> q_nope (B, T, H, K), q_pe (B, T, H, R) rotated (None without decoupled RoPE)."""
        b, t, _ = x.shape
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))  # (B, T, H·(K+R))
        q = q.view(b, t, self.n_heads, -1)  # (B, T, H, K+R): per head [nope; rope]
        if not self.qk_rope_head_dim:
            return q, None
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return q_nope, apply_rope(q_pe, freqs)  # RoPE on the R decoupled channels only

    def latent(self, x: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D) -> c_kv (B, T, C) normalised, k_pe (B, T, R) rotated: exactly what the cache holds."""
        c_kv, k_pe = self.wkv_a(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_norm(c_kv)  # (B, T, C)
        if not self.qk_rope_head_dim:
            return c_kv, None
        return c_kv, apply_rope(k_pe[:, :, None], freqs)[:, :, 0]  # (B, T, R): from x, rotated before caching

    def forward(self, x: Tensor, freqs: Tensor, start_pos: int = 0, cache: dict | None = None) -> Tensor:
        """x holds T new tokens at absolute positions start_pos..start_pos+T-1; freqs (T, R/2) are theirs."""
        t = x.shape[1]
        q_nope, q_pe = self.queries(x, freqs)  # (B, T, H, K), (B, T, H, R)
        c_kv, k_pe = self.latent(x, freqs)  # (B, T, C), (B, T, R)
        if cache is not None:  # both paths write (and read back) the same latent cache
            c_kv, k_pe = write_latent_cache(cache, c_kv, k_pe, start_pos)  # (B, S, C), (B, S, R)
        absorb = self.attn_impl == "absorb" or (self.attn_impl == "auto" and t == 1)
        attend = mla_absorbed_attention if absorb else mla_naive_attention
        o = attend(q_nope, q_pe, c_kv, k_pe, self.wkv_b.weight, self.softmax_scale)  # (B, T, H, V)
        return self.wo(o.flatten(2))  # (B, T, D)


class LowRankAttention(MultiHeadLatentAttention):
    """Joint low-rank KV compression with per-head up-projections and NO RoPE.  (B, T, D) -> (B, T, D)

    Lesson 04's starting point: the scores carry no position information at all (only the causal mask tells
    tokens apart by order), which is why DeepSeek adds the decoupled rope channels. Caches C numbers per token.
    qk_rope_head_dim is not used; the scale is 1/sqrt(qk_nope_head_dim).
    """

    decoupled_rope = False

    @staticmethod
    def cache_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
        return mla_cache_spec(cfg.kv_lora_rank, 0)


def write_latent_cache(cache: dict, c_kv: Tensor, k_pe: Tensor | None, start_pos: int
                       ) -> tuple[Tensor, Tensor | None]:
    """Write the new latents (and rope keys) at their positions; return everything cached up to them.

    c_kv (B, T, C), k_pe (B, T, R) -> (B, S, C), (B, S, R) with S = start_pos + T
    """
    b, end = c_kv.shape[0], start_pos + c_kv.shape[1]
    cache["kv"][:b, start_pos:end] = c_kv
    if k_pe is None:
        return cache["kv"][:b, :end], None
    cache["pe"][:b, start_pos:end] = k_pe
    return cache["kv"][:b, :end], cache["pe"][:b, :end]


def set_attn_impl(model: nn.Module, attn_impl: str) -> nn.Module:
    """Switch every MLA module in `model` to "naive", "absorb" or "auto"; returns the model."""
    found = [m for m in model.modules() if isinstance(m, MultiHeadLatentAttention)]
    if not found:
        raise ValueError("the model has no MLA layers (attn='mla' or 'mla_lowrank'); nothing to switch")
    for module in found:
        module.attn_impl = attn_impl
    return model
