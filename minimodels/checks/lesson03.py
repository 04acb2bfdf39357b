"""Checkers of exercises/03_gqa_exercises.ipynb: grouped-query attention (head sharing) and its cache bytes.

Same pattern as lesson01.py/lesson02.py: a reference built from the package, cases that change every size
(including G = 1, MQA, and G = H, MHA, where some wrong pairings happen to be right), and the classic mistakes
of sharing K/V heads: pairing query head h with KV head h % G (what `.repeat` gives) instead of h // (H/G)
(what `.repeat_interleave` gives), grouping only the keys or only the values, the scale, and the causal mask
when the T new queries sit at the end of S > T keys.
"""

# Shapes: B batch, T query positions, S key positions (T <= S with a cache),
# H = query heads, G = KV heads, R = H // G query heads per KV head, K = qk head width, V = value head width

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..kv_cache import kv_bytes_per_token
from ..mha import causal_attention, mha_cache_spec
from .engine import CheckResult, Exercise, Mistake, build_cases, vary
from .lesson01 import attend, hide_from_start, hide_future
from .lesson02 import _DTYPE_OF

# ---------------------------------------------------------------- 3.1 GQA head sharing


def grouped(x: Tensor, n_heads: int) -> Tensor:
    """KV heads (B, S, G, ·) -> one per query head (B, S, H, ·): head h gets KV head h // (H / G)."""
    return x.repeat_interleave(n_heads // x.shape[2], dim=2)


def interleaved(x: Tensor, n_heads: int) -> Tensor:
    """The classic mistake: head h gets KV head h % G (`.repeat` tiles the G heads H/G times)."""
    return x.repeat(1, 1, n_heads // x.shape[2], 1)


def _grouped_ref(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    h = q.shape[2]
    return causal_attention(q, grouped(k, h), grouped(v, h))  # (B, T, H, V)


def _grouped_cases() -> list:
    sizes = vary(dict(B=2, T=3, S=7, H=4, G=2, K=4, V=4),
                 dict(T=5, S=5),  # a prompt without a cache
                 dict(H=6, G=3), dict(H=6, G=2, T=2, S=6), dict(H=8, G=2, V=6),
                 B=[1], T=[1, 2], S=[9], G=[1, 4], K=[8], V=[6])  # G = 1 is MQA, G = H is MHA

    def build(g, B, T, S, H, G, K, V):
        return (torch.randn(B, T, H, K, generator=g), torch.randn(B, S, G, K, generator=g),
                torch.randn(B, S, G, V, generator=g))

    return build_cases(sizes, build, seed=400)


def _shared(pair_k: Callable = grouped, pair_v: Callable = grouped, **attend_kwargs) -> Callable:
    """Grouped attention with switchable mistakes: how keys and values reach the query heads, and `attend`'s."""
    def wrong(q, k, v):
        h = q.shape[2]
        return attend(q, pair_k(k, h), pair_v(v, h), **attend_kwargs)
    return wrong


def _first_head(x: Tensor, n_heads: int) -> Tensor:
    return x[:, :, :1].expand(-1, -1, n_heads, -1)  # every query head reads KV head 0


def _scale(width: Callable[[Tensor, Tensor, Tensor], float]) -> Callable:
    """Grouped attention whose scores are divided by sqrt(width(q, k, v)) instead of sqrt(K)."""
    return lambda q, k, v: attend(q, grouped(k, q.shape[2]), grouped(v, q.shape[2]),
                                  scale=1 / math.sqrt(width(q, k, v)))


_PAIRING = ("query head h must read KV head h // (H/G): consecutive query heads share a KV head "
            "(repeat_interleave, or a reshape of q to (B, T, G, H/G, K))")

GROUPED_ATTENTION = Exercise("grouped_attention", _grouped_ref, _grouped_cases, mistakes=[
    Mistake("interleaved groups", _shared(interleaved, interleaved),
            "query head h reads KV head h % G (interleaved, what `.repeat` / `tile` gives): " + _PAIRING),
    Mistake("values interleaved", _shared(grouped, interleaved),
            "the keys are grouped right, but the values are not: value head h % G is used (`.repeat`); "
            "group the values exactly like the keys"),
    Mistake("keys interleaved", _shared(interleaved, grouped),
            "the values are grouped right, but the keys are not: key head h % G is used (`.repeat`); "
            "group the keys exactly like the values"),
    Mistake("only KV head 0", _shared(_first_head, _first_head),
            "every query head reads KV head 0: that is MQA; with G KV heads, " + _PAIRING),
    Mistake("keys and values swapped", lambda q, k, v: _shared()(q, v, k),
            "keys and values are swapped: the scores are q·k, and the weights then average v"),
    Mistake("missing mask", _shared(hide=None),
            "missing causal mask: query i (at position S-T+i) must not see the keys after it"),
    Mistake("mask from the start", _shared(hide=hide_from_start),
            "the mask is aligned to position 0: the T queries sit at the END of the S keys (positions "
            "S-T .. S-1), so query i sees keys 0 .. S-T+i"),
    Mistake("one key too many", _shared(hide=lambda t, s: hide_future(t, s, 1)),
            "off by one: query i sees one key too many (it must stop at its own position S-T+i)"),
    Mistake("own key hidden", _shared(hide=lambda t, s: hide_future(t, s, -1)),
            "off by one: query i must also see its own key at position S-T+i"),
    Mistake("mask filled with 0", _shared(fill=0.0),
            "the mask sets hidden scores to 0, not -inf: a score of 0 still gets weight exp(0) = 1"),
    Mistake("no scale", _shared(scale=1.0), "missing scale: divide the scores by sqrt(K) before the softmax"),
    Mistake("scale 1/K", _scale(lambda q, k, v: q.shape[-1] ** 2),
            "wrong scale: divide the scores by sqrt(K) (the head width), not by K"),
    Mistake("scale 1/sqrt(H*K)", _scale(lambda q, k, v: q.shape[-2] * q.shape[-1]),
            "wrong scale: divide by sqrt(K), the width of ONE head, not by sqrt(H * K)"),
    Mistake("scale 1/sqrt(G*K)", _scale(lambda q, k, v: k.shape[-2] * k.shape[-1]),
            "wrong scale: divide by sqrt(K), the width of ONE head, not by sqrt(G * K), the width of all KV heads"),
    Mistake("scale from v", _scale(lambda q, k, v: v.shape[-1]),
            "wrong scale: the scores are dot products of q and k, so divide by sqrt of THEIR width, not of v's"),
    Mistake("softmax over queries", _shared(dim=-2),
            "softmax over the wrong axis: normalise over the keys (the last axis of the (B, H, T, S) scores)"),
])


def check_grouped_attention(fn: Callable) -> CheckResult:
    """Exercise 3.1: causal attention where query head h reads KV head h // (H/G); queries at the end of S keys."""
    return GROUPED_ATTENTION.check(fn)


# ---------------------------------------------------------------- 3.2 GQA cache bytes per token


def _gqa_bytes_ref(n_layers: int, n_heads: int, n_kv_heads: int, head_dim: int, bytes_per_element: int) -> int:
    return kv_bytes_per_token(mha_cache_spec(n_kv_heads, head_dim), n_layers, _DTYPE_OF[bytes_per_element])


def _gqa_bytes_cases() -> list:
    sizes = vary(dict(n_layers=4, n_heads=8, n_kv_heads=2, head_dim=16, bytes_per_element=2),
                 dict(n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128),  # Llama-2-70B
                 dict(n_layers=95, n_heads=64, n_kv_heads=8, head_dim=128),  # DeepSeek 67B
                 n_layers=[1, 32], n_heads=[4, 32], n_kv_heads=[1, 8], head_dim=[64], bytes_per_element=[1, 4])
    return build_cases(sizes, lambda g, **s: tuple(s.values()), seed=500)


GQA_BYTES = Exercise("gqa_cache_bytes", _gqa_bytes_ref, _gqa_bytes_cases, atol=0, rtol=0, mistakes=[
    Mistake("query heads", lambda layers, h, g, k, b: 2 * layers * h * k * b,
            "that is MHA's cache: only the n_kv_heads KV heads are cached; the query heads are never stored"),
    Mistake("group size", lambda layers, h, g, k, b: 2 * layers * (h // g) * k * b,
            "you used the group size n_heads // n_kv_heads: the cache holds n_kv_heads keys and values per layer"),
    Mistake("no factor 2", lambda layers, h, g, k, b: layers * g * k * b,
            "missing factor 2: every KV head caches a key AND a value"),
    Mistake("no layers", lambda layers, h, g, k, b: 2 * g * k * b,
            "missing the layer count: every layer keeps its own keys and values"),
    Mistake("bits", lambda layers, h, g, k, b: 2 * layers * g * k * b * 8,
            "that is bits: the answer is in bytes (bytes_per_element is already bytes)"),
])


def check_gqa_cache_bytes(fn: Callable) -> CheckResult:
    """Exercise 3.2: fn(n_layers, n_heads, n_kv_heads, head_dim, bytes_per_element) -> bytes per cached token."""
    return GQA_BYTES.check(fn)
