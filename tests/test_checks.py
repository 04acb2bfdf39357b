"""Tests of minimodels/checks.py: checkers pass right answers, name wrong ones, and obey the check mode.

Every implementation here is written from scratch in plain torch (never the package function a checker
compares with), so a test fails if a checker's reference or its list of known mistakes drifts.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from minimodels import checks
from minimodels.checks import (
    check_cache_write,
    check_cached_attention,
    check_causal_attention,
    check_kv_bytes_per_token,
    check_rms_norm,
    check_split_heads,
)


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    """Every test starts in the default mode, whatever the shell running pytest has set."""
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


# ---------------------------------------------------------------- lesson 01: right and wrong answers


def split_heads(x, n_heads):
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, d // n_heads)


def split_heads_transposed(x, n_heads):  # head h gets every H-th channel instead of a contiguous block
    b, t, d = x.shape
    return x.reshape(b, t, d // n_heads, n_heads).transpose(-1, -2)


def split_heads_heads_first(x, n_heads):  # (B, H, T, K), the layout of many other codebases
    return split_heads(x, n_heads).permute(0, 2, 1, 3)


def hidden_future(t, s, shift=0):
    """(T, S) bool, True where key j is hidden from query i, which sits at position s - t + i + shift."""
    q_pos = torch.arange(s - t, s)[:, None] + shift
    return torch.arange(s)[None, :] > q_pos


def hidden_past(t, s):  # the mask flipped: hides the keys BEFORE each query
    q_pos = torch.arange(s - t, s)[:, None]
    return torch.arange(s)[None, :] < q_pos


def hidden_top_left(t, s):  # a fresh sequence's mask: query i sees keys 0 .. i, ignoring the cache
    return torch.ones(t, s, dtype=torch.bool).triu(1)


def attention(q, k, v, *, scale="sqrt", hide=hidden_future, dim=-1):
    """softmax(q kᵀ · scale, with hidden keys at -inf) v; the keyword arguments build the wrong variants."""
    width = q.shape[-1]
    factor = {"sqrt": 1 / math.sqrt(width), "K": 1 / width, "none": 1.0}[scale]
    scores = torch.einsum("bthk,bshk->bhts", q, k) * factor  # (B, H, T, S)
    if hide is not None:
        scores = scores.masked_fill(hide(q.shape[1], k.shape[1]), float("-inf"))
    return torch.einsum("bhts,bshv->bthv", scores.softmax(dim=dim), v)  # (B, T, H, V)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# ---------------------------------------------------------------- lesson 02: right and wrong answers


def kv_bytes(n_layers, n_kv_heads, head_dim, bytes_per_element):
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_element


def cache_write(cache_k, cache_v, k_new, v_new, start_pos, *, offset=0, extra=0, write=True, whole=False):
    """Write at start_pos + offset, return the first start_pos + T + extra positions (or the whole cache)."""
    t = k_new.shape[1]
    if write:
        cache_k[:, start_pos + offset:start_pos + offset + t] = k_new
        cache_v[:, start_pos + offset:start_pos + offset + t] = v_new
    if whole:
        return cache_k, cache_v
    return cache_k[:, :start_pos + t + extra], cache_v[:, :start_pos + t + extra]


def cache_concat(cache_k, cache_v, k_new, v_new, start_pos):
    """Right values, but the cache is never written: the next decoding step would not find these keys."""
    return torch.cat([cache_k[:, :start_pos], k_new], 1), torch.cat([cache_v[:, :start_pos], v_new], 1)


def not_implemented(*args):
    raise NotImplementedError("Exercise 01.1 (f): not implemented yet")


def crashing(*args):
    raise ValueError("shapes do not match")


CORRECT = {
    "split_heads": (check_split_heads, split_heads),
    "causal_attention": (check_causal_attention, attention),
    "rms_norm": (check_rms_norm, rms_norm),
    "kv_bytes_per_token": (check_kv_bytes_per_token, kv_bytes),
    "cache_write": (check_cache_write, cache_write),
    "cached_attention": (check_cached_attention, attention),
}

CHECKERS = [checker for checker, _ in CORRECT.values()]
CHECKER_IDS = list(CORRECT)


WRONG = [
    # (checker, wrong implementation, words the message must contain)
    pytest.param(check_split_heads, split_heads_transposed, "transposed heads", id="split-transposed-heads"),
    pytest.param(check_split_heads, split_heads_heads_first, "heads before time",
                 id="split-heads-before-time"),
    pytest.param(check_causal_attention, lambda q, k, v: attention(q, k, v, hide=None), "missing causal mask",
                 id="attn-missing-mask"),
    pytest.param(check_causal_attention, lambda q, k, v: attention(q, k, v, scale="K"), "not by K",
                 id="attn-scale-1/K"),
    pytest.param(check_causal_attention, lambda q, k, v: attention(q, k, v, scale="none"), "missing scale",
                 id="attn-no-scale"),
    pytest.param(check_causal_attention, lambda q, k, v: attention(q, k, v, hide=hidden_past),
                 "mask is flipped", id="attn-mask-flipped"),
    pytest.param(check_causal_attention, lambda q, k, v: attention(q, k, v, dim=-2), "wrong axis",
                 id="attn-softmax-over-queries"),
    pytest.param(check_rms_norm, lambda x, w, eps: F.layer_norm(x, x.shape[-1:], w, None, eps), "LayerNorm",
                 id="rms-layer-norm"),
    pytest.param(check_rms_norm, lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
                 "eps belongs inside the square root", id="rms-eps-outside-sqrt"),
    pytest.param(check_rms_norm, lambda x, w, eps: rms_norm(x, torch.ones_like(w), eps),
                 "multiply by `weight`", id="rms-missing-weight"),
    pytest.param(check_rms_norm, lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w,
                 "missing square root", id="rms-no-sqrt"),
    pytest.param(check_kv_bytes_per_token, lambda n, h, k, b: n * h * k * b, "missing factor 2",
                 id="kv-no-factor-2"),
    pytest.param(check_kv_bytes_per_token, lambda n, h, k, b: 2 * h * k * b, "missing the layer count",
                 id="kv-no-layers"),
    pytest.param(check_kv_bytes_per_token, lambda n, h, k, b: kv_bytes(n, h, k, b) * 8, "that is bits",
                 id="kv-bits"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, offset=1), "not one later",
                 id="cache-written-late"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, offset=1, extra=1), "not one later",
                 id="cache-written-late-prefix-too"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, extra=-1), "start_pos + T positions",
                 id="cache-prefix-short"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, whole=True), "whole preallocated cache",
                 id="cache-whole"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, write=False, whole=True),
                 "nothing was written", id="cache-nothing-written"),
    pytest.param(check_cache_write, lambda *a: cache_write(*a, write=False), "nothing was written",
                 id="cache-nothing-written-prefix-returned"),
    pytest.param(check_cached_attention, lambda q, k, v: attention(q, k, v, hide=None), "missing mask",
                 id="cached-no-mask"),
    pytest.param(check_cached_attention, lambda q, k, v: attention(q, k, v, hide=hidden_top_left),
                 "aligned to position 0", id="cached-mask-from-start"),
    pytest.param(check_cached_attention,
                 lambda q, k, v: attention(q, k, v, hide=lambda t, s: hidden_future(t, s, shift=1)),
                 "one key too many", id="cached-one-too-many"),
    pytest.param(check_cached_attention,
                 lambda q, k, v: attention(q, k, v, hide=lambda t, s: hidden_future(t, s, shift=-1)),
                 "must also see its own key", id="cached-one-too-few"),
]


@pytest.mark.parametrize("checker, fn", CORRECT.values(), ids=CHECKER_IDS)
def test_correct_implementation_passes(checker, fn, capsys):
    result = checker(fn)
    assert result.passed, result.message
    assert result.message.startswith("✅")
    assert capsys.readouterr().out == result.message + "\n"  # the check prints its one-line verdict


@pytest.mark.parametrize("checker, fn, words", WRONG)
def test_wrong_implementation_is_caught_and_named(checker, fn, words, capsys):
    result = checker(fn)  # student mode: prints, never raises
    assert result.status == "failed"
    assert result.message.startswith("❌")
    assert words in result.message
    assert capsys.readouterr().out == result.message + "\n"


def test_cache_write_that_never_writes_the_cache_is_caught():
    result = check_cache_write(cache_concat)
    assert not result.passed


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_not_implemented_stub_says_so(checker):
    result = checker(not_implemented)
    assert result.status == "not implemented"
    assert result.message.startswith("⏳") and "not implemented yet" in result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_crash_is_reported_not_raised(checker):
    result = checker(crashing)
    assert result.status == "failed"
    assert result.message.startswith("❌")
    assert "raised ValueError: shapes do not match" in result.message


def test_a_real_crash_names_the_torch_error():
    result = check_split_heads(lambda x, h: x.view(x.shape[0], x.shape[1], h))  # forgot the head width
    assert result.status == "failed" and "raised RuntimeError" in result.message


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("checker, fn", CORRECT.values(), ids=CHECKER_IDS)
def test_solution_mode_passes_a_correct_answer(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    assert checker(fn).passed


@pytest.mark.parametrize("checker, fn", [p.values[:2] for p in WRONG if not p.marks],
                         ids=[p.id for p in WRONG if not p.marks])
def test_solution_mode_raises_on_a_wrong_answer(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    with pytest.raises(AssertionError, match="solution check failed"):
        checker(fn)


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_solution_mode_raises_on_a_stub(checker, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    with pytest.raises(AssertionError, match="not implemented yet"):
        checker(not_implemented)


@pytest.mark.parametrize("checker, fn", CORRECT.values(), ids=CHECKER_IDS)
def test_exercise_mode_accepts_stubs_and_rejects_leaked_solutions(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "exercise")
    assert checker(not_implemented).status == "not implemented"  # silently: no exception
    with pytest.raises(AssertionError, match="leaked"):
        checker(fn)
    with pytest.raises(AssertionError, match="leaked"):
        checker(crashing)  # anything but an unimplemented stub is suspicious in exercises/


@pytest.mark.parametrize("folder, expected", [("solutions", "solution"), ("exercises", "exercise"),
                                              ("lessons", "student")])
def test_auto_mode_follows_the_folder(folder, expected, tmp_path, monkeypatch):
    (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / folder)
    monkeypatch.setenv(checks.MODE_ENV, "auto")
    assert checks.check_mode() == expected
    wrong = lambda q, k, v: attention(q, k, v, hide=None)  # noqa: E731
    if expected == "solution":
        with pytest.raises(AssertionError, match="solution check failed"):
            check_causal_attention(wrong)
        assert check_causal_attention(attention).passed
    elif expected == "exercise":
        assert check_causal_attention(not_implemented).status == "not implemented"
        with pytest.raises(AssertionError, match="leaked"):
            check_causal_attention(attention)
    else:
        assert check_causal_attention(wrong).status == "failed"  # printed, not raised
        assert check_causal_attention(not_implemented).status == "not implemented"


def test_auto_mode_in_a_subfolder_of_solutions(tmp_path, monkeypatch):
    (tmp_path / "solutions" / "extra").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "solutions" / "extra")
    monkeypatch.setenv(checks.MODE_ENV, "auto")
    assert checks.check_mode() == "solution"


def test_default_mode_is_student():
    assert checks.check_mode() == "student"


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_unknown_mode_is_an_error(checker, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "teacher")
    with pytest.raises(ValueError, match="teacher"):
        checker(not_implemented)


# ---------------------------------------------------------------- Exercise 2.4: RoPE at start_pos
def _rope_learner(x, start_pos, theta=10000.0, *, offset=0, half=False, sign=1.0, exponent=2.0, from_zero=False):
    """An independent plain-torch RoPE with switchable mistakes (not the package's complex-number version)."""
    t, width = x.shape[1], x.shape[-1]
    first = 0 if from_zero else start_pos + offset
    pos = torch.arange(first, first + t, dtype=torch.float64)
    inv = theta ** (-exponent * torch.arange(width // 2, dtype=torch.float64) / width)
    ang = pos[:, None] * inv[None, :]
    cos, sin = ang.cos().float()[None, :, None, :], sign * ang.sin().float()[None, :, None, :]
    if half:
        a, b = x[..., : width // 2], x[..., width // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


@pytest.mark.parametrize("kwargs, words", [
    (dict(from_zero=True), "positions start at 0"),
    (dict(offset=1), "not start_pos + 1"),
    (dict(half=True), "rotate_half"),
    (dict(sign=-1.0), "wrong way"),
    (dict(exponent=1.0), "wrong frequencies"),
], ids=["position-0", "one-late", "rotate-half", "direction", "exponent"])
def test_rope_at_mistakes_are_named(kwargs, words, monkeypatch):
    from minimodels.checks import check_rope_at

    monkeypatch.setenv("MINIMODELS_CHECK_MODE", "student")
    assert check_rope_at(_rope_learner).passed
    result = check_rope_at(lambda x, s, theta=10000.0: _rope_learner(x, s, theta, **kwargs))
    assert result.status == "failed" and words in result.message, result.message
