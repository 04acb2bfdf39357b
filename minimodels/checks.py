"""Checkers for the exercise notebooks: compare a learner's function with the package on random inputs.

A check prints ✅, ❌ with the likely mistake (each wrong answer is also compared with known wrong
implementations, so the message can say "you forgot the causal mask"), or ⏳ "not implemented yet".
MINIMODELS_CHECK_MODE decides what a failure does:
  student (default)  print only, never raise, so "Run All" reaches the end of an unsolved notebook;
  solution           raise AssertionError unless the check passes (CI runs solutions/ this way);
  exercise           raise AssertionError unless the function is still an unimplemented stub
                     (CI runs exercises/ this way, so a leaked solution fails the run);
  auto               solution inside a solutions/ folder, exercise inside exercises/, else student.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .mha import causal_attention, causal_mask
from .norms import RMSNorm

MODE_ENV = "MINIMODELS_CHECK_MODE"


def check_mode() -> str:
    mode = os.environ.get(MODE_ENV, "student")
    if mode == "auto":
        parts = Path.cwd().parts
        mode = "solution" if "solutions" in parts else "exercise" if "exercises" in parts else "student"
    if mode not in ("student", "solution", "exercise"):
        raise ValueError(f"{MODE_ENV}={mode!r}: use student, solution, exercise or auto")
    return mode


@dataclass
class CheckResult:
    name: str
    status: str  # "passed", "failed" or "not implemented"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _same(a, b, atol: float) -> bool:
    return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
            and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4))


def _first_mismatch(fn: Callable, reference: Callable, cases: Sequence[tuple], atol: float):
    """Run fn on every case; return (case, got, expected) for the first wrong answer, or None."""
    def fresh(args):  # each call gets its own copy: a function may write into its inputs (a cache)
        return [a.clone() if isinstance(a, Tensor) else a for a in args]

    for args in cases:
        expected = reference(*fresh(args))
        got = fn(*fresh(args))
        if isinstance(expected, tuple):
            if not isinstance(got, tuple) or len(got) != len(expected):
                return args, got, expected
            if not all(_same(g, e, atol) for g, e in zip(got, expected)):
                return args, got, expected
        elif not _same(got, expected, atol):
            return args, got, expected
    return None


def _describe(args, got, expected, mistakes: dict[str, tuple[Callable, str]], atol: float) -> str:
    for wrong, hint in mistakes.values():
        try:
            if _first_mismatch(lambda *a, g=got: g, wrong, [args], atol) is None:
                return hint
        except Exception:  # a wrong variant that can't even run on this input explains nothing
            continue
    first = got[0] if isinstance(got, tuple) else got
    want = expected[0] if isinstance(expected, tuple) else expected
    if not isinstance(first, Tensor):
        return f"expected a tensor (or tuple of tensors), got {type(got).__name__}"
    if first.shape != want.shape:
        return f"wrong shape: got {tuple(first.shape)}, expected {tuple(want.shape)}"
    diff = (first.float() - want.float()).abs().max().item()
    return f"wrong values (max difference {diff:.3g}); compare your steps with the lesson"


def run_check(name: str, fn: Callable, reference: Callable, cases: Sequence[tuple], *,
              mistakes: dict[str, tuple[Callable, str]] | None = None, atol: float = 1e-5) -> CheckResult:
    """Check fn against reference on every case; name the likely mistake; act on the check mode."""
    mistakes = mistakes or {}
    try:
        bad = _first_mismatch(fn, reference, cases, atol)
    except NotImplementedError:
        result = CheckResult(name, "not implemented", f"⏳ {name}: not implemented yet")
    except Exception as e:  # the learner's code crashed: say how, don't crash the notebook
        result = CheckResult(name, "failed", f"❌ {name}: your function raised {type(e).__name__}: {e}")
    else:
        if bad is None:
            result = CheckResult(name, "passed", f"✅ {name}: all {len(cases)} checks passed")
        else:
            result = CheckResult(name, "failed", f"❌ {name}: {_describe(*bad, mistakes, atol)}")
    print(result.message)
    mode = check_mode()
    if mode == "solution" and not result.passed:
        raise AssertionError(f"solution check failed: {result.message}")
    if mode == "exercise" and result.status != "not implemented":
        raise AssertionError(f"exercise stub of {name} did not raise NotImplementedError ({result.message}): "
                             f"a solution leaked into exercises/?")
    return result


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- lesson 01
def _split_heads_ref(x: Tensor, n_heads: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads)  # (B, T, H, K)


def check_split_heads(fn: Callable) -> CheckResult:
    """Exercise 1.1: (B, T, D) -> (B, T, H, K), head h owning channels h*K .. (h+1)*K - 1."""
    cases = [(torch.randn(2, 5, 12, generator=_gen(s)), h) for s, h in ((0, 3), (1, 4), (2, 2))]
    mistakes = {
        "transposed heads": (lambda x, h: x.view(*x.shape[:2], x.shape[-1] // h, h).transpose(-1, -2),
                             "transposed heads: head h must own the CONTIGUOUS channels h*K..(h+1)*K-1; "
                             "use x.view(B, T, H, K), not view(B, T, K, H).transpose"),
        "heads before time": (lambda x, h: _split_heads_ref(x, h).transpose(1, 2),
                              "heads before time: this lesson keeps the layout (B, T, H, K); "
                              "don't transpose to (B, H, T, K)"),
    }
    return run_check("split_heads", fn, _split_heads_ref, cases, mistakes=mistakes)


def _attention_cases() -> list[tuple]:
    shapes = [(1, 4, 1, 8), (2, 6, 3, 8), (2, 7, 2, 16)]
    return [tuple(torch.randn(*s, generator=_gen(10 * i + j)) for j in range(3)) for i, s in enumerate(shapes)]


def _attend(q, k, v, scale: float, mask: Tensor | None, dim: int = -1) -> Tensor:
    scores = torch.einsum("bthk,bshk->bhts", q, k) * scale
    if mask is not None:
        scores = scores + mask
    return torch.einsum("bhts,bshv->bthv", scores.softmax(dim=dim), v)


def check_causal_attention(fn: Callable) -> CheckResult:
    """Exercise 1.2: softmax(q kᵀ/√K + causal mask) v on (B, T, H, K) tensors."""
    def sqrt_k(q):
        return 1 / math.sqrt(q.shape[-1])

    def future(t):  # the transpose of the causal mask: sees the future, hides the past
        return causal_mask(t, t).T

    mistakes = {
        "missing mask": (lambda q, k, v: _attend(q, k, v, sqrt_k(q), None),
                         "missing causal mask: position t must not attend to positions after t "
                         "(add -inf above the diagonal before the softmax)"),
        "scale 1/K": (lambda q, k, v: _attend(q, k, v, 1 / q.shape[-1], causal_mask(q.shape[1], q.shape[1])),
                      "wrong scale: divide the scores by sqrt(K) (the head width), not by K"),
        "no scale": (lambda q, k, v: _attend(q, k, v, 1.0, causal_mask(q.shape[1], q.shape[1])),
                     "missing scale: divide the scores by sqrt(K) before the softmax"),
        "mask flipped": (lambda q, k, v: _attend(q, k, v, sqrt_k(q), future(q.shape[1])),
                         "the mask is flipped: it must hide keys AFTER the query (upper triangle), "
                         "not before it"),
        "softmax over queries": (lambda q, k, v: _attend(q, k, v, sqrt_k(q), causal_mask(q.shape[1], q.shape[1]),
                                                         dim=-2),
                                 "softmax over the wrong axis: normalise over the keys (last axis of "
                                 "the (B, H, T, S) scores)"),
    }
    return run_check("causal_attention", fn, causal_attention, _attention_cases(), mistakes=mistakes)


def check_rms_norm(fn: Callable) -> CheckResult:
    """Exercise 1.3: x / sqrt(mean(x²) + eps) * weight over the last axis."""
    def reference(x, w, eps):
        norm = RMSNorm(x.shape[-1], eps)
        with torch.no_grad():
            norm.weight.copy_(w)
            return norm(x)

    cases = [(torch.randn(2, 3, 8, generator=_gen(s)) * 3 + 1, torch.rand(8, generator=_gen(s + 1)) + 0.5, eps)
             for s, eps in ((0, 1e-6), (5, 0.5))]
    mistakes = {
        "layer norm": (lambda x, w, eps: (x - x.mean(-1, keepdim=True))
                       * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w,
                       "that is LayerNorm: RMSNorm does not subtract the mean"),
        "no sqrt": (lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w,
                    "missing square root: divide by sqrt(mean(x²) + eps)"),
        "no weight": (lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps),
                      "missing gain: multiply by `weight` at the end"),
        "eps outside": (lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
                        "eps belongs inside the square root: sqrt(mean(x²) + eps)"),
    }
    return run_check("rms_norm", fn, reference, cases, mistakes=mistakes)


# ---------------------------------------------------------------- lesson 02
def check_kv_bytes_per_token(fn: Callable) -> CheckResult:
    """Exercise 2.1: fn(n_layers, n_kv_heads, head_dim, bytes_per_element) -> bytes per cached token."""
    from .kv_cache import kv_bytes_per_token
    from .mha import mha_cache_spec

    dtype_of = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}

    def reference(n_layers, n_kv_heads, head_dim, nbytes):
        return torch.tensor(kv_bytes_per_token(mha_cache_spec(n_kv_heads, head_dim), n_layers, dtype_of[nbytes]))

    def as_tensor(f):
        return lambda *a: torch.tensor(f(*a))

    cases = [(32, 32, 128, 2), (80, 8, 128, 2), (4, 4, 32, 4), (2, 1, 64, 1)]
    mistakes = {
        "no factor 2": (lambda layers, h, k, b: torch.tensor(layers * h * k * b),
                        "missing factor 2: every token caches a key AND a value"),
        "no layers": (lambda layers, h, k, b: torch.tensor(2 * h * k * b),
                      "missing the layer count: every layer keeps its own keys and values"),
        "bits": (lambda layers, h, k, b: torch.tensor(2 * layers * h * k * b * 8),
                 "that is bits: the answer is in bytes (bytes_per_element is already bytes)"),
    }
    return run_check("kv_bytes_per_token", as_tensor(fn), reference, cases, mistakes=mistakes, atol=0)


def _cache_write_ref(cache_k: Tensor, cache_v: Tensor, k_new: Tensor, v_new: Tensor, start_pos: int):
    t = k_new.shape[1]
    cache_k[:, start_pos:start_pos + t] = k_new
    cache_v[:, start_pos:start_pos + t] = v_new
    return cache_k[:, :start_pos + t], cache_v[:, :start_pos + t]


def _cache_cases() -> list[tuple]:
    cases = []
    for i, (start, t) in enumerate(((0, 3), (3, 1), (5, 2), (7, 1))):
        g = _gen(100 + i)
        ck, cv = torch.randn(2, 10, 2, 4, generator=g), torch.randn(2, 10, 2, 4, generator=g)
        ck[:, start:], cv[:, start:] = 0, 0  # positions not written yet are empty
        cases.append((ck, cv, torch.randn(2, t, 2, 4, generator=g), torch.randn(2, t, 2, 4, generator=g), start))
    return cases


def check_cache_write(fn: Callable) -> CheckResult:
    """Exercise 2.2: write T new keys/values at start_pos..start_pos+T-1; return the filled prefix."""
    def shifted(offset: int, extra: int = 0):
        def wrong(ck, cv, kn, vn, start):
            t = kn.shape[1]
            ck[:, start + offset:start + offset + t] = kn
            cv[:, start + offset:start + offset + t] = vn
            return ck[:, :start + t + extra], cv[:, :start + t + extra]
        return wrong

    whole = ("you returned the whole preallocated cache: slice it to the start_pos + T filled positions, "
             "or attention will see empty (zero) keys")
    unwritten = ("nothing was written: put k_new/v_new into the cache at start_pos, then return the filled "
                 "prefix")

    def concatenated(ck, cv, kn, vn, start):  # right answer, but the cache itself never changes
        return torch.cat([ck[:, :start], kn], 1), torch.cat([cv[:, :start], vn], 1)

    mistakes = {
        "written one late": (shifted(1), "off by one: the new tokens go at positions start_pos .. "
                                         "start_pos+T-1, not one later"),
        "written one late, prefix too": (shifted(1, 1), "off by one: the new tokens go at positions "
                                                        "start_pos .. start_pos+T-1, not one later"),
        "prefix one short": (shifted(0, -1), "off by one: return the first start_pos + T positions (the "
                                             "new tokens included)"),
        "whole cache": (lambda ck, cv, kn, vn, start: (_cache_write_ref(ck, cv, kn, vn, start), (ck, cv))[1],
                        whole),
        "nothing written": (lambda ck, cv, kn, vn, start: (ck, cv), unwritten),
        "nothing written, prefix": (lambda ck, cv, kn, vn, start: (ck[:, :start + kn.shape[1]],
                                                                  cv[:, :start + kn.shape[1]]), unwritten),
        "cache not updated": (concatenated, "the returned tensors are right, but the cache itself was not "
                                            "written: the next decoding step would not see these tokens "
                                            "(assign into cache_k[:, start_pos:start_pos + T])"),
    }

    def with_cache(f: Callable) -> Callable:  # also compare what ends up IN the cache, not just the return
        def run(ck, cv, kn, vn, start):
            out = f(ck, cv, kn, vn, start)
            return (*out, ck, cv) if isinstance(out, tuple) else out
        return run

    mistakes = {name: (with_cache(wrong), hint) for name, (wrong, hint) in mistakes.items()}
    return run_check("cache_write", with_cache(fn), with_cache(_cache_write_ref), _cache_cases(),
                     mistakes=mistakes)



def check_cached_attention(fn: Callable) -> CheckResult:
    """Exercise 2.3: T new queries at the END of S cached keys: query i may see keys 0 .. S-T+i."""
    cases = []
    for i, (t, s) in enumerate(((1, 5), (3, 7), (4, 4), (2, 9))):
        g = _gen(200 + i)
        cases.append((torch.randn(2, t, 2, 8, generator=g), torch.randn(2, s, 2, 8, generator=g),
                      torch.randn(2, s, 2, 8, generator=g)))

    def top_left(q, k, v):  # the (T, S) mask of a fresh sequence: aligned to position 0, not to the end
        t, s = q.shape[1], k.shape[1]
        mask = torch.full((t, s), float("-inf")).triu(1)
        return _attend(q, k, v, 1 / math.sqrt(q.shape[-1]), mask)

    def shifted_mask(shift: int):
        def wrong(q, k, v):  # query i sees keys 0 .. S-T+i+shift
            t, s = q.shape[1], k.shape[1]
            hide = torch.arange(s)[None, :] > torch.arange(s - t, s)[:, None] + shift  # (T, S)
            mask = torch.zeros(t, s).masked_fill(hide, float("-inf"))
            return _attend(q, k, v, 1 / math.sqrt(q.shape[-1]), mask)
        return wrong

    mistakes = {
        "no mask": (lambda q, k, v: _attend(q, k, v, 1 / math.sqrt(q.shape[-1]), None),
                    "missing mask: with T > 1 new queries, query i must not see the new keys after it"),
        "mask from the start": (top_left, "the mask is aligned to position 0: the T queries sit at the END "
                                          "of the S keys (positions S-T .. S-1)"),
        "one too many": (shifted_mask(1), "off by one: query i sees one key too many (it must stop at its own "
                                           "position S-T+i)"),
        "one too few": (shifted_mask(-1), "off by one: query i must also see its own key at position S-T+i"),
    }
    return run_check("cached_attention", fn, causal_attention, cases, mistakes=mistakes)


def _rope_ref(x: Tensor, start_pos: int, theta: float = 10000.0) -> Tensor:
    from .rope import apply_rope, rope_frequencies

    t = x.shape[1]
    return apply_rope(x, rope_frequencies(x.shape[-1], start_pos + t, theta)[start_pos:])


def _rope_variant(x: Tensor, positions: Tensor, theta: float, *, half: bool = False, sign: float = 1.0,
                  exponent: float = 2.0) -> Tensor:
    """RoPE with a deliberate mistake: rotate_half layout, the opposite direction, or the wrong exponent."""
    k = x.shape[-1]
    inv_freq = theta ** (-exponent * torch.arange(k // 2, dtype=torch.float64) / k)  # (K/2,)
    angles = (positions.double()[:, None] * inv_freq[None, :]).float()  # (T, K/2)
    cos, sin = angles.cos()[None, :, None, :], sign * angles.sin()[None, :, None, :]
    if half:  # pairs (i, i + K/2): the LLaMA / HF rotate_half layout
        a, b = x[..., : k // 2], x[..., k // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # adjacent pairs (2i, 2i + 1)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def check_rope_at(fn: Callable) -> CheckResult:
    """Exercise 2.4: rotate T new tokens' q or k at their ABSOLUTE positions start_pos .. start_pos+T-1."""
    cases = [(torch.randn(2, t, 2, 8, generator=_gen(300 + i)), start)
             for i, (t, start) in enumerate(((3, 0), (1, 5), (2, 7), (1, 30)))]

    def positions(x, start):
        return torch.arange(start, start + x.shape[1])

    mistakes = {
        "position 0": (lambda x, start: _rope_variant(x, torch.arange(x.shape[1]), 10000.0),
                       "positions start at 0: a new token sits at start_pos (+ its index), not at 0, or its "
                       "score with every cached key uses the wrong distance"),
        "one late": (lambda x, start: _rope_variant(x, positions(x, start) + 1, 10000.0),
                     "off by one: the first new token's position is start_pos, not start_pos + 1"),
        "rotate_half": (lambda x, start: _rope_variant(x, positions(x, start), 10000.0, half=True),
                        "that is the rotate_half layout (pairs i and i + K/2): DeepSeek rotates ADJACENT "
                        "pairs (2i, 2i + 1)"),
        "direction": (lambda x, start: _rope_variant(x, positions(x, start), 10000.0, sign=-1.0),
                      "the rotation goes the wrong way: (x0, x1) -> (x0·cos − x1·sin, x0·sin + x1·cos)"),
        "exponent": (lambda x, start: _rope_variant(x, positions(x, start), 10000.0, exponent=1.0),
                     "wrong frequencies: pair i turns by theta ** (-2i / K) per position"),
    }
    return run_check("rope_at", fn, _rope_ref, cases, mistakes=mistakes)
