"""Checkers of exercises/01_baseline_gpt_exercises.ipynb: split heads, causal attention, RMSNorm.

Each exercise is an `Exercise` (see engine.py): the package function as the reference, cases that change every
size and argument one at a time, and the classic wrong variants with the hint each one deserves. `attend` and
the masks below build the attention mistakes that lesson 02 (and later lessons) reuse.
"""

# Shapes: B batch, T query positions, S key positions (T <= S with a cache),
# D = dim, H = n_heads, K = qk head width, V = value head width

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..mha import causal_attention
from ..norms import RMSNorm
from .engine import DEFAULT, CheckResult, Exercise, Mistake, build_cases, vary

# ---------------------------------------------------------------- 1.1 split heads


def _split_heads_ref(x: Tensor, n_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads)  # (B, T, H, K)


def _split_heads_cases() -> list:
    sizes = vary(dict(B=2, T=5, H=3, K=4), B=[1, 3], T=[1, 6], H=[1, 4], K=[2, 8])

    def build(g, B, T, H, K):
        return torch.randn(B, T, H * K, generator=g), H

    return build_cases(sizes, build, seed=0)


SPLIT_HEADS = Exercise("split_heads", _split_heads_ref, _split_heads_cases, mistakes=[
    Mistake("transposed heads",
            lambda x, h: x.view(*x.shape[:2], x.shape[-1] // h, h).transpose(-1, -2),
            "transposed heads: head h must own the CONTIGUOUS channels h*K..(h+1)*K-1; "
            "use x.view(B, T, H, K), not view(B, T, K, H).transpose"),
    Mistake("heads before time", lambda x, h: _split_heads_ref(x, h).transpose(1, 2),
            "heads before time: this lesson keeps the layout (B, T, H, K); don't transpose to (B, H, T, K)"),
    Mistake("width before heads", lambda x, h: x.view(*x.shape[:2], x.shape[-1] // h, h),
            "the last two axes are (K, H): the result is (B, T, H, K), heads first, so x.view(B, T, H, D // H)"),
])


def check_split_heads(fn: Callable) -> CheckResult:
    """Exercise 1.1: (B, T, D) -> (B, T, H, K), head h owning channels h*K .. (h+1)*K - 1."""
    return SPLIT_HEADS.check(fn)


# ---------------------------------------------------------------- attention and its classic mistakes


def hide_future(t: int, s: int, shift: int = 0) -> Tensor:
    """(T, S) bool, True where key j is hidden from query i, which sits at position s - t + i (+ shift)."""
    q_pos = torch.arange(s - t, s)[:, None] + shift  # (T, 1)
    return torch.arange(s)[None, :] > q_pos


def hide_past(t: int, s: int) -> Tensor:
    """The mask flipped: hides the keys BEFORE each query."""
    return torch.arange(s)[None, :] < torch.arange(s - t, s)[:, None]


def hide_from_start(t: int, s: int) -> Tensor:
    """A fresh sequence's mask: query i sees keys 0 .. i, as if the cache were not there."""
    return torch.ones(t, s, dtype=torch.bool).triu(1)


def attend(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None,
           hide: Callable[[int, int], Tensor] | None = hide_future, fill: float = float("-inf"), dim: int = -1,
           softmax_dtype: torch.dtype | None = None) -> Tensor:
    """softmax(q kᵀ · scale, hidden scores set to `fill`) v; the keyword arguments build the wrong variants.

    q (B, T, H, K), k (B, S, H, K), v (B, S, H, V) -> (B, T, H, V)
    """
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bthk,bshk->bhts", q, k) * scale  # (B, H, T, S)
    if hide is not None:
        scores = scores.masked_fill(hide(q.shape[1], k.shape[1]), fill)
    if softmax_dtype is None:
        probs = scores.softmax(dim=dim)
    else:  # the softmax in half precision, everything else in the inputs' dtype
        probs = scores.to(softmax_dtype).softmax(dim=dim).to(scores.dtype)
    return torch.einsum("bhts,bshv->bthv", probs, v)  # (B, T, H, V)


def attention_mistakes(mask_hints: dict[str, str]) -> list[Mistake]:
    """The mistakes every causal attention can make; mask_hints words the mask ones for the exercise at hand."""
    def scaled(width: Callable[[Tensor, Tensor], int]) -> Callable:
        return lambda q, k, v: attend(q, k, v, scale=1 / math.sqrt(width(q, v)))

    half = ("the softmax runs in half precision ({}): exp() of scores in 16 bits loses digits; "
            "keep the scores and the softmax in float32, as DeepSeek does")
    return [
        Mistake("missing mask", lambda q, k, v: attend(q, k, v, hide=None), mask_hints["missing mask"]),
        Mistake("mask filled with 0", lambda q, k, v: attend(q, k, v, fill=0.0),
                "the mask sets hidden scores to 0, not -inf: a score of 0 still gets weight exp(0) = 1 after "
                "the softmax; use scores.masked_fill(hide, float('-inf'))"),
        Mistake("mask flipped", lambda q, k, v: attend(q, k, v, hide=hide_past), mask_hints["mask flipped"]),
        Mistake("one key too many", lambda q, k, v: attend(q, k, v, hide=lambda t, s: hide_future(t, s, 1)),
                mask_hints["one key too many"]),
        Mistake("own key hidden", lambda q, k, v: attend(q, k, v, hide=lambda t, s: hide_future(t, s, -1)),
                mask_hints["own key hidden"]),
        Mistake("scale 1/K", lambda q, k, v: attend(q, k, v, scale=1 / q.shape[-1]),
                "wrong scale: divide the scores by sqrt(K) (the head width), not by K"),
        Mistake("no scale", lambda q, k, v: attend(q, k, v, scale=1.0),
                "missing scale: divide the scores by sqrt(K) before the softmax"),
        Mistake("scale 1/sqrt(d_model)", scaled(lambda q, v: q.shape[-2] * q.shape[-1]),
                "wrong scale: divide by sqrt(K), the width of ONE head (q.shape[-1]), not by sqrt(H * K), "
                "the model width"),
        Mistake("scale from v", scaled(lambda q, v: v.shape[-1]),
                "wrong scale: the scores are dot products of q and k, so divide by sqrt of THEIR width "
                "(q.shape[-1]), not of v's"),
        Mistake("softmax over queries", lambda q, k, v: attend(q, k, v, dim=-2),
                "softmax over the wrong axis: normalise over the keys (last axis of the (B, H, T, S) scores)"),
        Mistake("keys and values swapped", lambda q, k, v: attend(q, v, k),
                "keys and values are swapped: the scores are q·k, and the weights then average v"),
        Mistake("fp16 softmax", lambda q, k, v: attend(q, k, v, softmax_dtype=torch.float16),
                half.format("float16"), atol=2e-3),
        Mistake("bf16 softmax", lambda q, k, v: attend(q, k, v, softmax_dtype=torch.bfloat16),
                half.format("bfloat16"), atol=2e-2),
    ]


# ---------------------------------------------------------------- 1.2 causal attention


def attention_cases(base: dict, *joint: dict, seed: int, **alternatives) -> list:
    """q (B, T, H, K), k (B, S, H, K), v (B, S, H, V) for every size set of vary(base, ...)."""
    def build(g, B, T, S, H, K, V):
        return (torch.randn(B, T, H, K, generator=g), torch.randn(B, S, H, K, generator=g),
                torch.randn(B, S, H, V, generator=g))

    return build_cases(vary(base, *joint, **alternatives), build, seed=seed)


def _causal_attention_cases() -> list:
    # one sequence: T = S, so T and S change together
    return attention_cases(dict(B=2, T=5, S=5, H=3, K=4, V=4), dict(T=1, S=1), dict(T=8, S=8), seed=10,
                           B=[1], H=[1, 4], K=[8, 16], V=[6])


CAUSAL_ATTENTION = Exercise("causal_attention", causal_attention, _causal_attention_cases, attention_mistakes({
    "missing mask": "missing causal mask: position t must not attend to positions after t "
                    "(add -inf above the diagonal before the softmax)",
    "mask flipped": "the mask is flipped: it must hide keys AFTER the query (upper triangle), not before it",
    "one key too many": "off by one: the mask hides from two past the diagonal on (triu(2)); query t may "
                        "see keys 0 .. t, so hide from t + 1 on (triu(1))",
    "own key hidden": "the mask hides the diagonal too (triu(0) instead of triu(1)): query t must see its own "
                      "key; the first query then sees no key at all and its softmax is NaN",
}))


def check_causal_attention(fn: Callable) -> CheckResult:
    """Exercise 1.2: softmax(q kᵀ/√K + causal mask) v on (B, T, H, K) queries and keys, (B, T, H, V) values."""
    return CAUSAL_ATTENTION.check(fn)


# ---------------------------------------------------------------- 1.3 RMSNorm


def _rms_norm_ref(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    norm = RMSNorm(x.shape[-1], eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _rms_norm_cases() -> list:
    # x is (..., D): leading shapes of rank 0 to 3; eps left at its default, then given
    sizes = vary(dict(lead=(2, 3), D=8, eps=DEFAULT), lead=[(), (5,), (2, 3, 2)], D=[4, 16], eps=[0.5, 1e-3])

    def build(g, lead, D, eps):
        return torch.randn(*lead, D, generator=g) * 3 + 1, torch.rand(D, generator=g) + 0.5, eps

    return build_cases(sizes, build, seed=20)


def _rms(x: Tensor, eps: float, *, square: bool = True, keepdim: bool = True, dim: int | None = -1) -> Tensor:
    x2 = x.pow(2) if square else x
    mean = x2.mean() if dim is None else x2.mean(dim, keepdim=keepdim)
    return torch.rsqrt(mean + eps)


RMS_NORM = Exercise("rms_norm", _rms_norm_ref, _rms_norm_cases, mistakes=[
    Mistake("layer norm", lambda x, w, eps=1e-6: (x - x.mean(-1, keepdim=True))
            * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w,
            "that is LayerNorm: RMSNorm does not subtract the mean"),
    Mistake("no sqrt", lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w,
            "missing square root: divide by sqrt(mean(x²) + eps)"),
    Mistake("no square", lambda x, w, eps=1e-6: x * _rms(x, eps, square=False) * w,
            "the mean is of x, not of x²: RMS is the root of the mean SQUARE"),
    Mistake("no weight", lambda x, w, eps=1e-6: x * _rms(x, eps),
            "missing gain: multiply by `weight` at the end"),
    Mistake("eps outside", lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
            "eps belongs inside the square root: sqrt(mean(x²) + eps)"),
    Mistake("eps ignored", lambda x, w, eps=1e-6: x * _rms(x, 1e-6) * w,
            "the `eps` argument is ignored (a fixed value is used): the check also passes eps=0.5, use `eps`"),
    Mistake("mean over everything", lambda x, w, eps=1e-6: x * _rms(x, eps, dim=None) * w,
            "the mean runs over the whole tensor: each vector is normalised on its own, so take the mean over "
            "the last axis only (dim=-1, keepdim=True)"),
    Mistake("no keepdim", lambda x, w, eps=1e-6: x * _rms(x, eps, keepdim=False) * w,
            "missing keepdim=True: mean(dim=-1) drops the axis, so the (...,) mean-square does not line up "
            "with the (..., D) input; keep it as (..., 1)"),
])


def check_rms_norm(fn: Callable) -> CheckResult:
    """Exercise 1.3: x / sqrt(mean(x²) + eps) * weight over the last axis of x (..., D)."""
    return RMS_NORM.check(fn)
