"""Checkers of exercises/04_mla_exercises.ipynb: the MLA latent path, MLA cache bytes per token, query compression.

Same pattern as lesson01.py and lesson02.py: the package as the reference (split_wkv_b, RMSNorm's formula,
cache_spec + kv_bytes_per_token), cases that change every size and argument, and the classic mistakes of
REFERENCE.md §6 that fit these exercises: a global instead of per-head split of wkv_b (or wq_b), forgetting kv_norm
(or its gain), normalising the rope key together with the latent, ignoring eps, and caching expanded keys and
values instead of the latent (2·H·K numbers per token and layer instead of C + R).
"""

# Shapes: B batch, T tokens, D = dim, H = n_heads, K = qk_nope_head_dim, V = v_head_dim,
# C = kv_lora_rank (the cached latent), R = qk_rope_head_dim (the rope key), L = q_lora_rank (query latent)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import TINY, ModelConfig
from ..kv_cache import cache_spec, kv_bytes_per_token
from ..mla import split_wkv_b
from .engine import DEFAULT, CheckResult, Exercise, Mistake, build_cases, vary

# ---------------------------------------------------------------- 4.1 the latent path

NORM_EPS = 1e-6  # the exercise's default, DeepSeek's RMSNorm eps


# both RMSNorms of this lesson (kv_norm, q_norm) take `eps`; a fixed value passes only the default case
_EPS_IGNORED = ("the `eps` argument is ignored (the check also passes other values): use it inside the square "
                "root, x / sqrt(mean(x²) + eps)")

def _rms(x: Tensor, eps: float) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _latent_ref(x: Tensor, wkv_a: Tensor, kv_norm_weight: Tensor, wkv_b: Tensor, n_heads: int,
                qk_nope_head_dim: int, eps: float = NORM_EPS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, T, D) -> c_kv (B, T, C) normalised, k_pe (B, T, R) (not rotated yet), k_nope (B, T, H, K),
    v (B, T, H, V)."""
    c = kv_norm_weight.shape[0]
    c_kv, k_pe = F.linear(x, wkv_a).split([c, wkv_a.shape[0] - c], dim=-1)  # (B, T, C), (B, T, R)
    c_kv = _rms(c_kv, eps) * kv_norm_weight  # kv_norm on the C latent channels only
    w_uk, w_uv = split_wkv_b(wkv_b, n_heads, qk_nope_head_dim)  # (H, K, C), (H, V, C): per head
    k_nope = torch.einsum("btc,hkc->bthk", c_kv, w_uk)
    v = torch.einsum("btc,hvc->bthv", c_kv, w_uv)
    return c_kv, k_pe, k_nope, v


def _latent_cases() -> list:
    sizes = vary(dict(B=2, T=3, D=16, C=8, R=4, H=2, K=4, V=6, eps=DEFAULT),
                 dict(H=4, K=2, V=2), dict(C=12, R=6, eps=0.5),
                 B=[1], T=[1, 5], D=[24], C=[6], R=[2, 8], H=[1, 3], K=[8], V=[4], eps=[0.3, 1e-5])

    def build(g, B, T, D, C, R, H, K, V, eps):
        x = torch.randn(B, T, D, generator=g)
        wkv_a = torch.randn(C + R, D, generator=g) / D**0.5  # latent entries of size about 1
        kv_norm_weight = 1 + 0.5 * torch.randn(C, generator=g)  # a trained gain, not all ones
        wkv_b = torch.randn(H * (K + V), C, generator=g) / C**0.5
        return x, wkv_a, kv_norm_weight, wkv_b, H, K, eps

    return build_cases(sizes, build, seed=400)


def _latent_variant(*, split: str = "per head", norm: str = "latent", gain: bool = True,
                    fixed_eps: float | None = None) -> Callable:
    """The latent path with one deliberate mistake: how wkv_b is split, what is normalised, which eps."""
    def wrong(x, wkv_a, kv_norm_weight, wkv_b, n_heads, qk_nope_head_dim, eps=NORM_EPS):
        eps = eps if fixed_eps is None else fixed_eps
        c, (b, t, _) = kv_norm_weight.shape[0], x.shape
        kv = F.linear(x, wkv_a)  # (B, T, C+R)
        c_kv, k_pe = kv.split([c, kv.shape[-1] - c], dim=-1)
        if norm == "latent":
            c_kv = _rms(c_kv, eps)
        elif norm == "latent and rope key together":  # one RMS over all C+R channels, then split
            c_kv, k_pe = _rms(kv, eps).split([c, kv.shape[-1] - c], dim=-1)
        elif norm == "rope key too":  # c_kv right, and the rope key normalised on its own
            c_kv, k_pe = _rms(c_kv, eps), _rms(k_pe, eps)
        c_kv = c_kv * kv_norm_weight if gain and norm != "none" else c_kv
        up = F.linear(c_kv, wkv_b)  # (B, T, H·(K+V))
        k = qk_nope_head_dim
        if split == "global":  # [all heads' keys; all heads' values]
            k_nope, v = up[..., :n_heads * k], up[..., n_heads * k:]
        else:
            per_head = up.view(b, t, n_heads, -1)  # (B, T, H, K+V)
            if split == "values first":
                v_width = per_head.shape[-1] - k
                return c_kv, k_pe, per_head[..., v_width:], per_head[..., :v_width]
            return c_kv, k_pe, per_head[..., :k], per_head[..., k:]
        return c_kv, k_pe, k_nope.reshape(b, t, n_heads, k), v.reshape(b, t, n_heads, -1)
    return wrong


LATENT = Exercise("mla_latent", _latent_ref, _latent_cases, returns=("c_kv", "k_pe", "k_nope", "v"), mistakes=[
    Mistake("global split", _latent_variant(split="global"),
            "the rows of wkv_b are split globally ([all keys; all values]): DeepSeek packs them PER HEAD, "
            "[W^UK_1; W^UV_1; W^UK_2; W^UV_2; ...], so view the up-projection as (B, T, H, K+V) first and split "
            "the last axis into K and V"),
    Mistake("values first", _latent_variant(split="values first"),
            "keys and values are swapped inside each head's block: head i's rows are [W^UK_i (K rows); "
            "W^UV_i (V rows)], keys first"),
    Mistake("no kv_norm", _latent_variant(norm="none"),
            "the latent is not normalised: DeepSeek applies kv_norm (an RMSNorm with the given weight) to c_kv "
            "before it is cached and up-projected"),
    Mistake("no gain", _latent_variant(gain=False),
            "c_kv is RMS-normalised but not multiplied by kv_norm_weight (RMSNorm's learned gain)"),
    Mistake("rope key normalised with the latent", _latent_variant(norm="latent and rope key together"),
            "the rope key was normalised together with the latent (one RMS over all C+R channels): kv_norm "
            "covers the C latent channels only; split wkv_a's output first, then normalise c_kv"),
    Mistake("rope key normalised", _latent_variant(norm="rope key too"),
            "k_pe was normalised too: kv_norm applies to c_kv only, the R rope channels pass through untouched"),
    Mistake("eps ignored", _latent_variant(fixed_eps=NORM_EPS),
            _EPS_IGNORED),
])


def check_mla_latent(fn: Callable) -> CheckResult:
    """Exercise 4.1: x -> normalised c_kv, k_pe, and the per-head k_nope and v up-projected from c_kv."""
    return LATENT.check(fn)


# ---------------------------------------------------------------- 4.2 cache bytes per token

_DTYPE_OF = {8: torch.float64, 4: torch.float32, 2: torch.bfloat16, 1: torch.int8}


def _mla_bytes_ref(cfg: ModelConfig, bytes_per_element: int) -> int:
    return kv_bytes_per_token(cache_spec(cfg), cfg.n_layers, _DTYPE_OF[bytes_per_element])


_MLA_BASE = dict(n_layers=4, n_heads=4, kv_lora_rank=32, qk_rope_head_dim=16, qk_nope_head_dim=32,
                 v_head_dim=24, bytes_per_element=2, attn="mla")


def _mla_bytes_cases() -> list:
    sizes = vary(_MLA_BASE,
                 dict(n_layers=60, n_heads=128, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                      v_head_dim=128),  # DeepSeek-V2's attention
                 dict(attn="mla_lowrank", n_heads=16, kv_lora_rank=64, bytes_per_element=4),
                 n_layers=[1, 27], n_heads=[2, 16], kv_lora_rank=[8, 64], qk_rope_head_dim=[8, 32],
                 qk_nope_head_dim=[16], v_head_dim=[40], bytes_per_element=[1, 4], attn=["mla_lowrank"])

    def build(g, n_layers, n_heads, kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim,
              bytes_per_element, attn):
        cfg = replace(TINY, attn=attn, n_layers=n_layers, n_heads=n_heads, dim=2 * n_heads,
                      kv_lora_rank=kv_lora_rank, qk_rope_head_dim=qk_rope_head_dim,
                      qk_nope_head_dim=qk_nope_head_dim, v_head_dim=v_head_dim, vocab_size=64, inter_dim=16,
                      max_seq_len=16)
        return cfg, bytes_per_element

    return build_cases(sizes, build, seed=500)


def _rope(cfg: ModelConfig) -> int:
    return cfg.qk_rope_head_dim if cfg.attn == "mla" else 0


MLA_BYTES = Exercise("mla_cache_bytes_per_token", _mla_bytes_ref, _mla_bytes_cases, atol=0, rtol=0, mistakes=[
    Mistake("expanded K/V", lambda c, b: c.n_layers * c.n_heads * (c.qk_nope_head_dim + _rope(c) + c.v_head_dim) * b,
            "that is the cache of up-projected keys and values, H·(K+R) + H·V numbers per token and layer: "
            "MLA caches the latent c_kv and the rope key instead, C + R numbers whatever the number of heads"),
    Mistake("MHA formula", lambda c, b: 2 * c.n_layers * c.n_heads * c.qk_nope_head_dim * b,
            "that is MHA's 2·H·K per token and layer (a key and a value per head): MLA caches C + R numbers, "
            "the latent and the one rope key"),
    Mistake("no rope key", lambda c, b: c.n_layers * c.kv_lora_rank * b,
            "the rope key is missing: attn='mla' caches k_pe (qk_rope_head_dim numbers) beside the latent"),
    Mistake("rope key for low-rank", lambda c, b: c.n_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * b,
            "attn='mla_lowrank' has no RoPE and caches only the latent (kv_lora_rank numbers): qk_rope_head_dim "
            "counts only when cfg.attn == 'mla'"),
    Mistake("rope key per head", lambda c, b: c.n_layers * (c.kv_lora_rank + c.n_heads * _rope(c)) * b,
            "the rope key counted once per head: it is ONE R-wide key per token, shared by all heads"),
    Mistake("factor 2", lambda c, b: 2 * c.n_layers * (c.kv_lora_rank + _rope(c)) * b,
            "a factor 2 too many: the one latent c_kv serves keys AND values, it is not cached twice"),
    Mistake("no layers", lambda c, b: (c.kv_lora_rank + _rope(c)) * b,
            "missing the layer count: every layer caches its own latent and rope key"),
    Mistake("bits", lambda c, b: 8 * c.n_layers * (c.kv_lora_rank + _rope(c)) * b,
            "that is bits: the answer is in bytes (bytes_per_element is already bytes)"),
])


def check_mla_cache_bytes(fn: Callable) -> CheckResult:
    """Exercise 4.2: fn(cfg, bytes_per_element) -> bytes one token adds to the MLA cache of the whole model."""
    return MLA_BYTES.check(fn)


# ---------------------------------------------------------------- 4.3 query compression


def _queries_ref(x: Tensor, wq_a: Tensor, q_norm_weight: Tensor, wq_b: Tensor, n_heads: int,
                 qk_nope_head_dim: int, eps: float = NORM_EPS) -> tuple[Tensor, Tensor]:
    """x (B, T, D) -> q_nope (B, T, H, K), q_pe (B, T, H, R) (not rotated yet), through the L-wide query latent."""
    b, t, _ = x.shape
    c_q = _rms(F.linear(x, wq_a), eps) * q_norm_weight  # (B, T, L): wq_a, then q_norm
    q = F.linear(c_q, wq_b).view(b, t, n_heads, -1)  # (B, T, H, K+R): per head [nope; rope]
    return q[..., :qk_nope_head_dim], q[..., qk_nope_head_dim:]


def _queries_cases() -> list:
    sizes = vary(dict(B=2, T=3, D=16, L=8, H=2, K=4, R=6, eps=DEFAULT),
                 dict(H=4, K=2, R=2), dict(L=12, eps=0.5),
                 B=[1], T=[1, 5], D=[24], L=[6], H=[1, 3], K=[8], R=[2], eps=[0.3, 1e-5])

    def build(g, B, T, D, L, H, K, R, eps):
        x = torch.randn(B, T, D, generator=g)
        wq_a = torch.randn(L, D, generator=g) / D**0.5
        q_norm_weight = 1 + 0.5 * torch.randn(L, generator=g)
        wq_b = torch.randn(H * (K + R), L, generator=g) / L**0.5
        return x, wq_a, q_norm_weight, wq_b, H, K, eps

    return build_cases(sizes, build, seed=600)


def _queries_variant(*, split: str = "per head", norm: bool = True, gain: bool = True,
                     fixed_eps: float | None = None) -> Callable:
    """The query path with one deliberate mistake: how wq_b is split, the norm, which eps."""
    def wrong(x, wq_a, q_norm_weight, wq_b, n_heads, qk_nope_head_dim, eps=NORM_EPS):
        eps = eps if fixed_eps is None else fixed_eps
        (b, t, _), k = x.shape, qk_nope_head_dim
        c_q = F.linear(x, wq_a)
        c_q = (_rms(c_q, eps) if norm else c_q) * (q_norm_weight if gain and norm else 1)
        q = F.linear(c_q, wq_b)  # (B, T, H·(K+R))
        if split == "global":  # [all heads' nope parts; all heads' rope parts]
            return q[..., :n_heads * k].reshape(b, t, n_heads, k), q[..., n_heads * k:].reshape(b, t, n_heads, -1)
        q = q.view(b, t, n_heads, -1)
        if split == "rope first":
            r = q.shape[-1] - k
            return q[..., r:], q[..., :r]
        return q[..., :k], q[..., k:]
    return wrong


QUERIES = Exercise("mla_queries", _queries_ref, _queries_cases, returns=("q_nope", "q_pe"), mistakes=[
    Mistake("global split", _queries_variant(split="global"),
            "the rows of wq_b are split globally ([all nope parts; all rope parts]): they are packed PER HEAD, "
            "[W^UQ_1; W^QR_1; W^UQ_2; W^QR_2; ...], so view the output as (B, T, H, K+R) first, then split"),
    Mistake("rope first", _queries_variant(split="rope first"),
            "the rope part comes first in your split: head i's rows are [W^UQ_i (K rows, no RoPE); W^QR_i (R "
            "rows, rope)], nope first"),
    Mistake("no q_norm", _queries_variant(norm=False),
            "the query latent is not normalised: q_norm (an RMSNorm with q_norm_weight) goes between wq_a and wq_b"),
    Mistake("no gain", _queries_variant(gain=False),
            "c_q is RMS-normalised but not multiplied by q_norm_weight (RMSNorm's learned gain)"),
    Mistake("eps ignored", _queries_variant(fixed_eps=NORM_EPS),
            _EPS_IGNORED),
])


def check_mla_queries(fn: Callable) -> CheckResult:
    """Exercise 4.3: x -> q_nope, q_pe through the compressed query path wq_a, q_norm, wq_b."""
    return QUERIES.check(fn)
