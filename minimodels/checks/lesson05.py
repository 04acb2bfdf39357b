"""Checkers of exercises/05_rope_absorption_exercises.ipynb: decoupled RoPE, and absorbed attention scores.

Same pattern as lesson01.py and lesson02.py: the package as the reference (minimodels/mla.py and rope.py), cases
that change every size and argument, and the classic wrong variants of REFERENCE.md §6 as named mistakes: RoPE on
all channels or on the nope part, a per-head rope key, a normalised or unrotated rope key, positions from 0
instead of start_pos, the rotate_half layout, the wrong softmax scale (1/sqrt(K), 1/sqrt(C+R), ...), and a global
instead of per-head split of wkv_b.
"""

# Shapes: B batch, T new tokens, S keys (cached + new), D = dim, H = n_heads, K = qk_nope_head_dim,
# R = qk_rope_head_dim, V = v_head_dim, C = kv_lora_rank

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..mla import split_wkv_b
from ..rope import apply_rope, rope_frequencies
from .engine import CheckResult, Exercise, Mistake, build_cases, vary
from .lesson02 import ROPE_THETA, rope_variant

NORM_EPS = 1e-6  # kv_norm's epsilon, as in ModelConfig.norm_eps


# ---------------------------------------------------------------- 5.1 decoupled RoPE


def _rms(x: Tensor, weight: Tensor | None = None) -> Tensor:
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS)
    return y if weight is None else y * weight


def _rope_at(x: Tensor, start_pos: int) -> Tensor:
    """The package's RoPE (adjacent pairs) at absolute positions start_pos ..  x (B, T, H, W) -> (B, T, H, W)"""
    t = x.shape[1]
    return apply_rope(x, rope_frequencies(x.shape[-1], start_pos + t, ROPE_THETA)[start_pos:])


def _widths(wq: Tensor, wkv_a: Tensor, kv_norm_weight: Tensor, n_heads: int) -> tuple[int, int, int]:
    c = kv_norm_weight.shape[0]
    r = wkv_a.shape[0] - c
    return wq.shape[0] // n_heads - r, r, c  # K, R, C


def _decoupled_ref(x: Tensor, wq: Tensor, wkv_a: Tensor, kv_norm_weight: Tensor, n_heads: int, start_pos: int
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    (b, t, _), (k, r, c) = x.shape, _widths(wq, wkv_a, kv_norm_weight, n_heads)
    q = F.linear(x, wq).view(b, t, n_heads, k + r)  # per head [nope; rope]
    q_nope, q_pe = q.split([k, r], dim=-1)
    c_kv, k_pe = F.linear(x, wkv_a).split([c, r], dim=-1)  # [W^DKV x; W^KR x]
    return q_nope, _rope_at(q_pe, start_pos), _rms(c_kv, kv_norm_weight), _rope_at(k_pe[:, :, None], start_pos)[:, :, 0]


def _decoupled_cases() -> list:
    sizes = vary(dict(B=2, T=3, D=16, H=2, K=4, R=4, C=6, start=3),
                 dict(T=1, start=11),  # one decoded token deep into the sequence
                 B=[1], T=[5], D=[12], H=[1, 3], K=[2, 6], R=[2, 8], C=[4, 10], start=[0, 7])

    def build(g, B, T, D, H, K, R, C, start):
        x = torch.randn(B, T, D, generator=g)
        wq = torch.randn(H * (K + R), D, generator=g) / D**0.5
        wkv_a = torch.randn(C + R, D, generator=g) / D**0.5
        return x, wq, wkv_a, 1 + 0.5 * torch.randn(C, generator=g), H, start

    return build_cases(sizes, build, seed=500)


def _decoupled_mistake(*, rope_all: bool = False, rope_first: bool = False, per_head_key: bool = False,
                       norm_key: str = "", from_zero: bool = False, half: bool = False, rotate_key: bool = True,
                       norm_latent: bool = True) -> Callable:
    """The reference with one switch flipped: which channels turn, where, how, and what is normalised."""
    def rotate(a: Tensor, start: int) -> Tensor:
        positions = torch.arange(a.shape[1]) + (0 if from_zero else start)
        if half:
            return rope_variant(a, positions, ROPE_THETA, half=True)
        return _rope_at(a, 0 if from_zero else start)

    def wrong(x, wq, wkv_a, w, n_heads, start):
        (b, t, _), (k, r, c) = x.shape, _widths(wq, wkv_a, w, n_heads)
        q = F.linear(x, wq).view(b, t, n_heads, k + r)
        kv = F.linear(x, wkv_a)  # (B, T, C+R)
        if rope_all:  # the whole head, and the whole [c_kv; k_pe], turned by RoPE of width K+R / C+R
            q, kv = rotate(q, start), rotate(kv[:, :, None], start)[:, :, 0]
        if norm_key == "together":  # one RMSNorm over [c_kv; k_pe], the weight padded with ones
            kv = _rms(kv, torch.cat([w, torch.ones(r)]))
        q_pe, q_nope = q.split([r, k], dim=-1) if rope_first else q.split([k, r], dim=-1)[::-1]
        k_pe, c_kv = (kv[..., :r], kv[..., r:]) if rope_first else (kv[..., c:], kv[..., :c])
        if norm_latent and norm_key != "together":
            c_kv = _rms(c_kv, w)
        if norm_key == "alone":
            k_pe = _rms(k_pe)
        if not rope_all:
            q_pe = rotate(q_pe, start)
            k_pe = rotate(k_pe[:, :, None], start)[:, :, 0] if rotate_key else k_pe
        if per_head_key:
            k_pe = k_pe[:, :, None].expand(-1, -1, n_heads, -1)  # (B, T, H, R)
        return q_nope, q_pe, c_kv, k_pe
    return wrong


_NORMED_KEY = ("the rope key is normalised: kv_norm applies to the C latent channels only (as in DeepSeek's "
               "official code), k_pe goes from wkv_a's last R outputs straight to RoPE")

DECOUPLED_ROPE = Exercise(
    "decoupled_rope", _decoupled_ref, _decoupled_cases, returns=("q_nope", "q_pe", "c_kv", "k_pe"), mistakes=[
        Mistake("rope on all channels", _decoupled_mistake(rope_all=True),
                "RoPE turned every channel: only the R decoupled channels rotate (the last R of each query head "
                "and of wkv_a's output); q_nope and c_kv stay as they are, or W^UK could not be absorbed"),
        Mistake("rope on the nope part", _decoupled_mistake(rope_first=True),
                "the split is the wrong way round: each head is packed [nope (K); rope (R)] and wkv_a's output "
                "[c_kv (C); k_pe (R)], so the rope channels are the LAST R, not the first"),
        Mistake("per-head rope key", _decoupled_mistake(per_head_key=True),
                "k_pe has a head axis: the rope key is ONE (B, T, R) vector per token shared by all heads "
                "(cached once); only the rope queries are per head"),
        Mistake("rope key normalised", _decoupled_mistake(norm_key="alone"), _NORMED_KEY),
        Mistake("latent and rope key normalised together", _decoupled_mistake(norm_key="together"), _NORMED_KEY),
        Mistake("rope key not rotated", _decoupled_mistake(rotate_key=False),
                "k_pe is not rotated: rotate the rope key at its positions BEFORE it is cached, as the queries"),
        Mistake("positions from 0", _decoupled_mistake(from_zero=True),
                "positions start at 0: the T new tokens sit at start_pos .. start_pos+T-1, so rotate by "
                "freqs[start_pos:start_pos + T]"),
        Mistake("rotate_half", _decoupled_mistake(half=True),
                "that is the rotate_half layout (pairs i and i + R/2): DeepSeek rotates ADJACENT pairs (2i, 2i + 1)"),
        Mistake("no kv_norm", _decoupled_mistake(norm_latent=False),
                "c_kv is not normalised: apply RMSNorm with kv_norm_weight to the C latent channels"),
    ])


def check_decoupled_rope(fn: Callable) -> CheckResult:
    """Exercise 5.1: fn(x, wq, wkv_a, kv_norm_weight, n_heads, start_pos) -> (q_nope, q_pe, c_kv, k_pe)."""
    return DECOUPLED_ROPE.check(fn)


# ---------------------------------------------------------------- 5.2 absorbed scores


def _absorbed_ref(q_nope: Tensor, q_pe: Tensor, c_kv: Tensor, k_pe: Tensor, wkv_b: Tensor) -> Tensor:
    h, k, r = q_nope.shape[2], q_nope.shape[3], q_pe.shape[3]
    w_uk, _ = split_wkv_b(wkv_b, h, k)  # (H, K, C), per head
    q_lat = torch.einsum("bthk,hkc->bthc", q_nope, w_uk)  # (B, T, H, C)
    scores = torch.einsum("bthc,bsc->bhts", q_lat, c_kv) + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)
    return scores / math.sqrt(k + r)  # (B, H, T, S)


def _absorbed_cases() -> list:
    sizes = vary(dict(B=2, T=2, S=5, H=2, K=4, R=2, V=6, C=8),
                 dict(T=1, S=9),  # a decoding step
                 B=[1], T=[3], S=[7], H=[1, 3], K=[6], R=[4], V=[4, 2], C=[5, 12])

    def build(g, B, T, S, H, K, R, V, C):
        return (torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, R, generator=g),
                torch.randn(B, S, C, generator=g), torch.randn(B, S, R, generator=g),
                torch.randn(H * (K + V), C, generator=g) / C**0.5)

    return build_cases(sizes, build, seed=600)


def _absorbed_mistake(*, scale: str = "K+R", split: str = "per head", rope: bool = True) -> Callable:
    def wrong(q_nope, q_pe, c_kv, k_pe, wkv_b):
        h, k, r, c = q_nope.shape[2], q_nope.shape[3], q_pe.shape[3], c_kv.shape[-1]
        if split == "global":  # [all keys; all values] instead of per head [K_i; V_i]
            w_uk = wkv_b[:h * k].view(h, k, c)
        elif split == "values":  # W^UV's rows used as keys
            w_uk = wkv_b.view(h, -1, c)[:, -k:]
        else:
            w_uk = wkv_b.view(h, -1, c)[:, :k]
        scores = torch.einsum("bthk,hkc,bsc->bhts", q_nope, w_uk, c_kv)
        if rope:
            scores = scores + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)
        width = {"K+R": k + r, "K": k, "C+R": c + r, "C": c}.get(scale)
        return scores if width is None else scores / math.sqrt(width)
    return wrong


ABSORBED_SCORES = Exercise("absorbed_scores", _absorbed_ref, _absorbed_cases, mistakes=[
    Mistake("scale 1/sqrt(K)", _absorbed_mistake(scale="K"),
            "wrong scale 1/sqrt(K): a head's key is [k_nope; k_pe], K + R wide, so divide by sqrt(K + R)"),
    Mistake("scale 1/sqrt(C+R)", _absorbed_mistake(scale="C+R"),
            "wrong scale 1/sqrt(C + R): absorption changes how the scores are computed, not what they are; keep "
            "the naive path's 1/sqrt(K + R)"),
    Mistake("scale 1/sqrt(C)", _absorbed_mistake(scale="C"),
            "wrong scale 1/sqrt(C): keep the naive path's 1/sqrt(K + R), the width of a head's query"),
    Mistake("no scale", _absorbed_mistake(scale="none"), "missing scale: divide the scores by sqrt(K + R)"),
    Mistake("global split", _absorbed_mistake(split="global"),
            "wkv_b is split globally ([all keys; all values]): its rows are packed PER HEAD [W^UK_i; W^UV_i], "
            "so view it as (H, K + V, C) first, then take [:, :K]"),
    Mistake("values as keys", _absorbed_mistake(split="values"),
            "those are W^UV's rows: per head, the first K rows of wkv_b are W^UK, the last V rows W^UV"),
    Mistake("rope part missing", _absorbed_mistake(rope=False),
            "the rope part is missing: add q_pe · k_pe (one shared rope key for every head) to the latent scores"),
])


def check_absorbed_scores(fn: Callable) -> CheckResult:
    """Exercise 5.2: fn(q_nope, q_pe, c_kv, k_pe, wkv_b) -> scaled scores (B, H, T, S) over the latent cache."""
    return ABSORBED_SCORES.check(fn)
