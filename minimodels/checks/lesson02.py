"""Checkers of exercises/02_kv_cache_exercises.ipynb: bytes per token, cache write, cached attention, RoPE at start_pos.

Same pattern as lesson01.py: the package as the reference, cases that change every size and argument, and the
classic wrong variants. The cache write is the one exercise that writes into its inputs (`cache_k`, `cache_v`):
the engine compares what the caches hold after the call instead of calling that a mistake.
"""

# Shapes: B batch, T new tokens, S keys (cached + new), S_max preallocated cache length,
# H = heads, K = qk head width, V = value head width

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..kv_cache import kv_bytes_per_token
from ..mha import causal_attention, mha_cache_spec
from ..rope import apply_rope, rope_frequencies
from .engine import DEFAULT, CheckResult, Exercise, Mistake, build_cases, vary
from .lesson01 import attend, attention_cases, attention_mistakes, hide_from_start

# ---------------------------------------------------------------- 2.1 bytes per token

_DTYPE_OF = {8: torch.float64, 4: torch.float32, 2: torch.bfloat16, 1: torch.int8}


def _kv_bytes_ref(n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_element: int) -> int:
    return kv_bytes_per_token(mha_cache_spec(n_kv_heads, head_dim), n_layers, _DTYPE_OF[bytes_per_element])


def _kv_bytes_cases() -> list:
    sizes = vary(dict(n_layers=4, n_kv_heads=2, head_dim=16, bytes_per_element=2),
                 dict(n_layers=80, n_kv_heads=8, head_dim=128),  # Llama-2-70B
                 n_layers=[1, 32], n_kv_heads=[1, 8], head_dim=[64], bytes_per_element=[1, 4, 8])
    return build_cases(sizes, lambda g, **s: tuple(s.values()), seed=0)


KV_BYTES = Exercise("kv_bytes_per_token", _kv_bytes_ref, _kv_bytes_cases, atol=0, rtol=0, mistakes=[
    Mistake("no factor 2", lambda layers, h, k, b: layers * h * k * b,
            "missing factor 2: every token caches a key AND a value"),
    Mistake("no layers", lambda layers, h, k, b: 2 * h * k * b,
            "missing the layer count: every layer keeps its own keys and values"),
    Mistake("no heads", lambda layers, h, k, b: 2 * layers * k * b,
            "missing the KV heads: each of the n_kv_heads heads caches its own key and value"),
    Mistake("bits", lambda layers, h, k, b: 2 * layers * h * k * b * 8,
            "that is bits: the answer is in bytes (bytes_per_element is already bytes)"),
])


def check_kv_bytes_per_token(fn: Callable) -> CheckResult:
    """Exercise 2.1: fn(n_layers, n_kv_heads, head_dim, bytes_per_element) -> bytes per cached token (an int)."""
    return KV_BYTES.check(fn)


# ---------------------------------------------------------------- 2.2 cache write


def _cache_write_ref(cache_k: Tensor, cache_v: Tensor, k_new: Tensor, v_new: Tensor, start_pos: int):
    t = k_new.shape[1]
    cache_k[:, start_pos:start_pos + t] = k_new
    cache_v[:, start_pos:start_pos + t] = v_new
    return cache_k[:, :start_pos + t], cache_v[:, :start_pos + t]  # (B, start_pos + T, H, K), (..., V)


def _cache_cases() -> list:
    sizes = vary(dict(B=2, S_max=10, H=2, K=4, V=4, T=3, start=2),
                 dict(T=1, start=9),  # the last free position
                 dict(T=3, start=7),  # fills the cache to its end
                 B=[1], H=[1, 3], K=[8], V=[6], T=[1, 4], start=[0, 5], S_max=[12])

    def build(g, B, S_max, H, K, V, T, start):
        cache_k, cache_v = torch.randn(B, S_max, H, K, generator=g), torch.randn(B, S_max, H, V, generator=g)
        cache_k[:, start:], cache_v[:, start:] = 0, 0  # positions not written yet are empty
        return cache_k, cache_v, torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, V, generator=g), start

    return build_cases(sizes, build, seed=100)


def _write_at(offset: int = 0, extra: int = 0, *, tokens: slice | None = None, swap: bool = False,
              write: bool = True, returned: str = "prefix") -> Callable:
    """A cache write with switchable mistakes: where it writes, which tokens, and what it returns."""
    def wrong(ck, cv, kn, vn, start):
        t = kn.shape[1]
        kn, vn = (vn, kn) if swap else (kn, vn)
        if write and tokens is not None:  # only some of the T tokens, at start_pos
            n = len(range(t)[tokens])
            ck[:, start:start + n], cv[:, start:start + n] = kn[:, tokens], vn[:, tokens]
        elif write:
            ck[:, start + offset:start + offset + t], cv[:, start + offset:start + offset + t] = kn, vn
        if returned == "whole":
            return ck, cv
        if returned == "new":
            return ck[:, start:start + t], cv[:, start:start + t]
        return ck[:, :start + t + extra], cv[:, :start + t + extra]
    return wrong


def _concatenated(ck, cv, kn, vn, start):  # right answer, but the cache itself never changes
    return torch.cat([ck[:, :start], kn], 1), torch.cat([cv[:, :start], vn], 1)


_OFF_BY_ONE = "off by one: the new tokens go at positions start_pos .. start_pos+T-1, not one later"
_UNWRITTEN = "nothing was written: put k_new/v_new into the cache at start_pos, then return the filled prefix"

CACHE_WRITE = Exercise(
    "cache_write", _cache_write_ref, _cache_cases, writes=("cache_k", "cache_v"), returns=("k_all", "v_all"),
    mistakes=[
        Mistake("written one late", _write_at(1), _OFF_BY_ONE),
        Mistake("written one late, prefix too", _write_at(1, 1), _OFF_BY_ONE),
        Mistake("prefix one short", _write_at(0, -1),
                "off by one: return the first start_pos + T positions (the new tokens included)"),
        Mistake("whole cache", _write_at(returned="whole"),
                "you returned the whole preallocated cache: slice it to the start_pos + T filled positions, "
                "or attention will see empty (zero) keys"),
        Mistake("only the new tokens", _write_at(returned="new"),
                "you returned only the T new positions: return the whole filled prefix 0 .. start_pos+T-1, "
                "attention needs the earlier keys and values too"),
        Mistake("nothing written", _write_at(write=False, returned="whole"), _UNWRITTEN),
        Mistake("nothing written, prefix", _write_at(write=False), _UNWRITTEN),
        Mistake("cache not updated", _concatenated,
                "the returned tensors are right, but the cache itself was not written: the next decoding step "
                "would not see these tokens (assign into cache_k[:, start_pos:start_pos + T])"),
        Mistake("keys and values swapped", _write_at(swap=True),
                "keys and values are swapped: k_new goes into cache_k, v_new into cache_v"),
        Mistake("first token only", _write_at(tokens=slice(0, 1)),
                "only the first of the T new tokens was written: write all of them, "
                "cache_k[:, start_pos:start_pos + T] = k_new"),
        Mistake("last token only", _write_at(tokens=slice(-1, None)),
                "only the last of the T new tokens was written (at start_pos): write all of them, "
                "cache_k[:, start_pos:start_pos + T] = k_new"),
    ])


def check_cache_write(fn: Callable) -> CheckResult:
    """Exercise 2.2: write T new keys/values at start_pos..start_pos+T-1 in place; return the filled prefixes."""
    return CACHE_WRITE.check(fn)


# ---------------------------------------------------------------- 2.3 attention over the cache


def _cached_attention_cases() -> list:
    return attention_cases(dict(B=2, T=3, S=7, H=2, K=4, V=4), dict(T=5, S=5), dict(T=1, S=12), seed=200,
                           B=[1], T=[1, 2], S=[9], H=[1, 3], K=[8], V=[6])


_cached_mistakes = attention_mistakes({
    "missing mask": "missing mask: with T > 1 new queries, query i must not see the new keys after it",
    "mask flipped": "the mask is flipped: it must hide keys AFTER each query's position S-T+i, not before it",
    "one key too many": "off by one: query i sees one key too many (it must stop at its own position S-T+i)",
    "own key hidden": "off by one: query i must also see its own key at position S-T+i (when T = S, the first "
                      "query then sees no key at all and its softmax is NaN)",
})
_cached_mistakes.insert(1, Mistake(
    "mask from the start", lambda q, k, v: attend(q, k, v, hide=hide_from_start),
    "the mask is aligned to position 0: the T queries sit at the END of the S keys (positions S-T .. S-1)"))

CACHED_ATTENTION = Exercise("cached_attention", causal_attention, _cached_attention_cases, _cached_mistakes)


def check_cached_attention(fn: Callable) -> CheckResult:
    """Exercise 2.3: T new queries at the END of S cached keys: query i may see keys 0 .. S-T+i."""
    return CACHED_ATTENTION.check(fn)


# ---------------------------------------------------------------- 2.4 RoPE at start_pos

ROPE_THETA = 10000.0  # the exercise's default, as in rope_frequencies


def _rope_ref(x: Tensor, start_pos: int, theta: float = ROPE_THETA) -> Tensor:
    t = x.shape[1]
    return apply_rope(x, rope_frequencies(x.shape[-1], start_pos + t, theta)[start_pos:])


def _rope_cases() -> list:
    sizes = vary(dict(B=2, T=3, H=2, K=8, start=5, theta=DEFAULT),
                 B=[1], T=[1, 6], H=[1, 3], K=[4, 16], start=[0, 30], theta=[500.0, 1e6])

    def build(g, B, T, H, K, start, theta):
        return torch.randn(B, T, H, K, generator=g), start, theta

    return build_cases(sizes, build, seed=300)


def rope_variant(x: Tensor, positions: Tensor, theta: float, *, half: bool = False, sign: float = 1.0,
                 exponent: float = 2.0, swap_cos_sin: bool = False) -> Tensor:
    """RoPE with a deliberate mistake: rotate_half layout, direction, exponent, or cos and sin swapped."""
    k = x.shape[-1]
    inv_freq = theta ** (-exponent * torch.arange(k // 2, dtype=torch.float64) / k)  # (K/2,)
    angles = (positions.double()[:, None] * inv_freq[None, :]).float()  # (T, K/2)
    cos, sin = angles.cos()[None, :, None, :], sign * angles.sin()[None, :, None, :]
    if swap_cos_sin:
        cos, sin = sin, cos
    if half:  # pairs (i, i + K/2): the LLaMA / HF rotate_half layout
        a, b = x[..., : k // 2], x[..., k // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # adjacent pairs (2i, 2i + 1)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def _positions(x: Tensor, start: int) -> Tensor:
    return torch.arange(start, start + x.shape[1])  # (T,)


def _rope_mistake(name: str, hint: str, *, positions: Callable = _positions, fixed_theta: bool = False,
                  **variant) -> Mistake:
    def wrong(x, start, theta=ROPE_THETA):
        return rope_variant(x, positions(x, start), ROPE_THETA if fixed_theta else theta, **variant)
    return Mistake(name, wrong, hint)


ROPE_AT = Exercise("rope_at", _rope_ref, _rope_cases, mistakes=[
    _rope_mistake("position 0", "positions start at 0: a new token sits at start_pos (+ its index), not at 0, "
                                "or its score with every cached key uses the wrong distance",
                  positions=lambda x, start: torch.arange(x.shape[1])),
    _rope_mistake("one late", "off by one: the first new token's position is start_pos, not start_pos + 1",
                  positions=lambda x, start: _positions(x, start) + 1),
    _rope_mistake("one position", "every new token is rotated by the same position start_pos: token i of the "
                                  "chunk sits at start_pos + i (use torch.arange(start_pos, start_pos + T))",
                  positions=lambda x, start: torch.full((x.shape[1],), start)),
    _rope_mistake("rotate_half", "that is the rotate_half layout (pairs i and i + K/2): DeepSeek rotates "
                                 "ADJACENT pairs (2i, 2i + 1)", half=True),
    _rope_mistake("direction", "the rotation goes the wrong way: (x0, x1) -> (x0·cos − x1·sin, x0·sin + x1·cos)",
                  sign=-1.0),
    _rope_mistake("cos and sin swapped", "cos and sin are swapped: the pair (x0, x1) becomes "
                                         "(x0·cos − x1·sin, x0·sin + x1·cos), cos first", swap_cos_sin=True),
    _rope_mistake("exponent", "wrong frequencies: pair i turns by theta ** (-2i / K) per position",
                  exponent=1.0),
    _rope_mistake("theta ignored", "the `theta` argument is ignored (10000 is used whatever it is): the check "
                                   "passes other bases, build the frequencies from `theta`", fixed_theta=True),
])


def check_rope_at(fn: Callable) -> CheckResult:
    """Exercise 2.4: rotate T new tokens' q or k at their ABSOLUTE positions start_pos .. start_pos+T-1."""
    return ROPE_AT.check(fn)

