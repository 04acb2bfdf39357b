"""Right and wrong answers to the exercises, written the way a learner might: the material of the checker tests.

Every function here is plain torch written from scratch (never the package function a checker compares with),
so a test fails if a checker's reference or its list of known mistakes drifts. The keyword arguments of the
right answers switch one mistake on at a time. NAMED pairs each classic mistake with the words its hint must
contain; HIDDEN lists learner code that the single-module engine before minimodels/checks/ let through or
mis-named (hard-coded sizes, inputs changed in place, a float byte count, ...); RIGHT_VARIANTS are correct
answers written other ways, which stricter checks must keep accepting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- lesson 01


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


def attention(q, k, v, *, scale="sqrt", hide=hidden_future, fill=float("-inf"), dim=-1, half=None, swap=False):
    """softmax(q kᵀ · scale, with hidden keys at `fill`) v; the keyword arguments build the wrong variants."""
    if swap:
        k, v = v, k
    width = q.shape[-1]
    factor = scale if isinstance(scale, float) else {"sqrt": 1 / math.sqrt(width), "K": 1 / width, "none": 1.0,
              "d_model": 1 / math.sqrt(q.shape[2] * width), "v": 1 / math.sqrt(v.shape[-1])}[scale]
    scores = q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) * factor  # (B, H, T, S)
    if hide is not None:
        scores = scores.masked_fill(hide(q.shape[1], k.shape[1]), fill)
    probs = scores.softmax(dim=dim) if half is None else scores.to(half).softmax(dim=dim).float()
    return (probs @ v.transpose(1, 2)).transpose(1, 2)  # (B, T, H, V)


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# ---------------------------------------------------------------- lesson 02


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


def cache_write_new_only(cache_k, cache_v, k_new, v_new, start_pos):
    """Writes right, but returns only the new positions: attention would miss every earlier token."""
    cache_write(cache_k, cache_v, k_new, v_new, start_pos)
    end = start_pos + k_new.shape[1]
    return cache_k[:, start_pos:end], cache_v[:, start_pos:end]


def rope(x, start_pos, theta=10000.0, *, offset=0, half=False, sign=1.0, exponent=2.0, from_zero=False,
         same_position=False, swap_cos_sin=False, fixed_theta=None, fixed_width=None):
    """An independent plain-torch RoPE with switchable mistakes (not the package's complex-number version)."""
    t, width = x.shape[1], x.shape[-1]
    theta = theta if fixed_theta is None else fixed_theta
    first = 0 if from_zero else start_pos + offset
    pos = torch.full((t,), float(first), dtype=torch.float64) if same_position else \
        torch.arange(first, first + t, dtype=torch.float64)
    k = width if fixed_width is None else fixed_width
    inv = theta ** (-exponent * torch.arange(width // 2, dtype=torch.float64) / k)
    ang = pos[:, None] * inv[None, :]
    cos, sin = ang.cos().float()[None, :, None, :], sign * ang.sin().float()[None, :, None, :]
    if swap_cos_sin:
        cos, sin = sin, cos
    if half:
        a, b = x[..., : width // 2], x[..., width // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


def not_implemented(*args):
    raise NotImplementedError("Exercise 01.1 (f): not implemented yet")


def crashing(*args):
    raise ValueError("shapes do not match")


RIGHT = {
    "check_split_heads": split_heads,
    "check_causal_attention": attention,
    "check_rms_norm": rms_norm,
    "check_kv_bytes_per_token": kv_bytes,
    "check_cache_write": cache_write,
    "check_cached_attention": attention,
    "check_rope_at": rope,
}

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_split_heads", split_heads_transposed, "transposed heads", "split-transposed-heads"),
    ("check_split_heads", split_heads_heads_first, "heads before time", "split-heads-before-time"),
    ("check_split_heads", lambda x, h: x.reshape(*x.shape[:2], -1, h), "the last two axes are (K, H)",
     "split-width-before-heads"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, hide=None), "missing causal mask",
     "attn-missing-mask"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, scale="K"), "not by K", "attn-scale-1/K"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, scale="none"), "missing scale", "attn-no-scale"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, hide=hidden_past), "mask is flipped",
     "attn-mask-flipped"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, dim=-2), "wrong axis",
     "attn-softmax-over-queries"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, fill=0.0), "not -inf", "attn-mask-filled-0"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, scale="d_model"), "not by sqrt(H * K)",
     "attn-scale-d_model"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, scale="v"), "not of v's", "attn-scale-v-width"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, swap=True), "keys and values are swapped",
     "attn-k-v-swapped"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, half=torch.float16), "half precision",
     "attn-fp16-softmax"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, half=torch.bfloat16), "half precision",
     "attn-bf16-softmax"),
    ("check_causal_attention", lambda q, k, v: attention(q, k, v, hide=lambda t, s: hidden_future(t, s, -1)),
     "hides the diagonal", "attn-diagonal-hidden"),
    ("check_rms_norm", lambda x, w, eps=1e-6: F.layer_norm(x, x.shape[-1:], w, None, eps), "LayerNorm",
     "rms-layer-norm"),
    ("check_rms_norm", lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
     "eps belongs inside the square root", "rms-eps-outside-sqrt"),
    ("check_rms_norm", lambda x, w, eps=1e-6: rms_norm(x, torch.ones_like(w), eps), "multiply by `weight`",
     "rms-missing-weight"),
    ("check_rms_norm", lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w,
     "missing square root", "rms-no-sqrt"),
    ("check_rms_norm", lambda x, w, eps=1e-6: rms_norm(x, w), "`eps` argument is ignored", "rms-eps-ignored"),
    ("check_rms_norm", lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean() + eps) * w, "whole tensor",
     "rms-mean-over-everything"),
    ("check_rms_norm", lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1) + eps) * w, "keepdim",
     "rms-no-keepdim"),
    ("check_kv_bytes_per_token", lambda n, h, k, b: n * h * k * b, "missing factor 2", "kv-no-factor-2"),
    ("check_kv_bytes_per_token", lambda n, h, k, b: 2 * h * k * b, "missing the layer count", "kv-no-layers"),
    ("check_kv_bytes_per_token", lambda n, h, k, b: kv_bytes(n, h, k, b) * 8, "that is bits", "kv-bits"),
    ("check_kv_bytes_per_token", lambda n, h, k, b: 2 * n * k * b, "missing the KV heads", "kv-no-heads"),
    ("check_cache_write", lambda *a: cache_write(*a, offset=1), "not one later", "cache-written-late"),
    ("check_cache_write", lambda *a: cache_write(*a, offset=1, extra=1), "not one later",
     "cache-written-late-prefix-too"),
    ("check_cache_write", lambda *a: cache_write(*a, extra=-1), "start_pos + T positions", "cache-prefix-short"),
    ("check_cache_write", lambda *a: cache_write(*a, whole=True), "whole preallocated cache", "cache-whole"),
    ("check_cache_write", lambda *a: cache_write(*a, write=False, whole=True), "nothing was written",
     "cache-nothing-written"),
    ("check_cache_write", lambda *a: cache_write(*a, write=False), "nothing was written",
     "cache-nothing-written-prefix-returned"),
    ("check_cache_write", cache_concat, "cache itself was not written", "cache-concatenated"),
    ("check_cache_write", lambda ck, cv, kn, vn, s: cache_write(ck, cv, vn, kn, s), "keys and values are swapped",
     "cache-k-v-swapped"),
    ("check_cache_write", lambda ck, cv, kn, vn, s: cache_write(ck, cv, kn[:, :1], vn[:, :1], s, extra=kn.shape[1] - 1),
     "only the first of the T new tokens", "cache-first-token-only"),
    ("check_cache_write", cache_write_new_only, "only the T new positions", "cache-only-new-returned"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, hide=None), "missing mask", "cached-no-mask"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, hide=hidden_top_left), "aligned to position 0",
     "cached-mask-from-start"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, hide=lambda t, s: hidden_future(t, s, 1)),
     "one key too many", "cached-one-too-many"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, hide=lambda t, s: hidden_future(t, s, -1)),
     "must also see its own key", "cached-one-too-few"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, swap=True), "keys and values are swapped",
     "cached-k-v-swapped"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, fill=0.0), "not -inf", "cached-mask-filled-0"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, scale="d_model"), "not by sqrt(H * K)",
     "cached-scale-d_model"),
    ("check_cached_attention", lambda q, k, v: attention(q, k, v, half=torch.bfloat16), "half precision",
     "cached-bf16-softmax"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, from_zero=True), "positions start at 0",
     "rope-position-0"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, offset=1), "not start_pos + 1", "rope-one-late"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, half=True), "rotate_half", "rope-rotate-half"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, sign=-1.0), "wrong way", "rope-direction"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, exponent=1.0), "wrong frequencies",
     "rope-exponent"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, swap_cos_sin=True), "cos and sin are swapped",
     "rope-cos-sin-swapped"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, theta, same_position=True), "same position",
     "rope-one-position-for-the-chunk"),
    ("check_rope_at", lambda x, s, theta=10000.0: rope(x, s, fixed_theta=10000.0), "`theta` argument is ignored",
     "rope-theta-ignored"),
]


# ---------------------------------------------------------------- hidden-style: learner code the old engine missed


def split_heads_fixed_batch(x, n_heads):  # B and T copied from the exercise's example instead of x.shape
    return x.view(2, 5, n_heads, -1)


def split_heads_fixed_width(x, n_heads):  # D copied from an example
    return x.view(x.shape[0], x.shape[1], n_heads, 12 // n_heads)


def split_heads_no_return(x, n_heads):
    b, t, d = x.shape
    x = x.view(b, t, n_heads, d // n_heads)  # noqa: F841  (the learner forgot `return`)


def attention_scales_q_in_place(q, k, v):  # right values, but the caller's q is divided by sqrt(K)
    q /= math.sqrt(q.shape[-1])
    return attention(q, k, v, scale="none")


def attention_multiplicative_mask(q, k, v):  # tril as a 0/1 mask multiplied in: hidden scores become 0
    t = q.shape[1]
    scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1]) * torch.ones(t, t).tril()
    return torch.einsum("bhts,bshk->bthk", scores.softmax(-1), v)


def attention_hides_diagonal(q, k, v):  # triu(0): the first query sees nothing -> NaN
    t = q.shape[1]
    scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(0), float("-inf"))
    return torch.einsum("bhts,bshk->bthk", scores.softmax(-1), v)


def attention_fp16_softmax(q, k, v):  # "saves memory": softmax in fp16
    scores = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(q.shape[-1])
    t = q.shape[1]
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhts,bshk->bthk", scores.half().softmax(-1).float(), v)


def rms_norm_in_place(x, weight, eps=1e-6):  # right values, but the caller's x is normalised too
    x.mul_(torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    return x * weight


def rms_norm_axis_2(x, weight, eps=1e-6):  # the mean over axis 2: right only for (B, T, D) inputs
    return x * torch.rsqrt(x.pow(2).mean(2, keepdim=True) + eps) * weight


def kv_bytes_bf16_only(n_layers, n_kv_heads, head_dim, bytes_per_element):  # 2 bytes hard-coded
    return 2 * n_layers * n_kv_heads * head_dim * 2


def kv_bytes_via_bits(n_layers, n_kv_heads, head_dim, bytes_per_element):  # `/ 8` makes a float
    return 2 * n_layers * n_kv_heads * head_dim * (bytes_per_element * 8) / 8


def cache_write_returns_k_twice(cache_k, cache_v, k_new, v_new, start_pos):  # a copy-paste slip
    end = start_pos + k_new.shape[1]
    cache_k[:, start_pos:end], cache_v[:, start_pos:end] = k_new, v_new
    return cache_k[:, :end], cache_k[:, :end]


def cache_write_first_token(cache_k, cache_v, k_new, v_new, start_pos):  # thinks one token per step
    cache_k[:, start_pos], cache_v[:, start_pos] = k_new[:, 0], v_new[:, 0]
    end = start_pos + k_new.shape[1]
    return cache_k[:, :end], cache_v[:, :end]


def cache_write_swapped(cache_k, cache_v, k_new, v_new, start_pos):
    end = start_pos + k_new.shape[1]
    cache_k[:, start_pos:end], cache_v[:, start_pos:end] = v_new, k_new
    return cache_k[:, :end], cache_v[:, :end]


def cached_attention_scale_v(q, k, v):  # the scale read from v: right while V == K
    return attention(q, k, v, scale="v")


def rope_fixed_theta(x, start_pos, theta=10000.0):  # the argument is accepted, then ignored
    return rope(x, start_pos, 10000.0)


def rope_fixed_width(x, start_pos, theta=10000.0):  # K = 8 copied from an example
    return rope(x, start_pos, theta, fixed_width=8)


def rope_float64(x, start_pos, theta=10000.0):  # angles in float64, and the result stays float64
    t, width = x.shape[1], x.shape[-1]
    pos = torch.arange(start_pos, start_pos + t, dtype=torch.float64)
    ang = pos[:, None] * theta ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)


def rope_in_place(x, start_pos, theta=10000.0):  # writes the rotated pairs back into x
    rotated = rope(x, start_pos, theta)
    x[...] = rotated
    return x


def rope_one_position(x, start_pos, theta=10000.0):  # every token of the chunk at start_pos
    return rope(x, start_pos, theta, same_position=True)


def rope_cos_sin_swapped(x, start_pos, theta=10000.0):
    return rope(x, start_pos, theta, swap_cos_sin=True)


# (id, checker, learner code, what it does wrong, words the new verdict must contain)
HIDDEN = [
    ("split-fixed-B-T", "check_split_heads", split_heads_fixed_batch, "B, T hard-coded (2, 5)", "assumes its B=2"),
    ("split-fixed-D", "check_split_heads", split_heads_fixed_width, "D hard-coded (12)", "raised RuntimeError"),
    ("split-no-return", "check_split_heads", split_heads_no_return, "forgot `return`", "did you forget `return`"),
    ("attn-q-in-place", "check_causal_attention", attention_scales_q_in_place, "`q /= sqrt(K)`: q changed",
     "changed its input `q` in place"),
    ("attn-mult-mask", "check_causal_attention", attention_multiplicative_mask, "0/1 mask multiplied in",
     "not -inf"),
    ("attn-diag-hidden", "check_causal_attention", attention_hides_diagonal, "triu(0): NaN in row 0",
     "hides the diagonal"),
    ("attn-fp16-softmax", "check_causal_attention", attention_fp16_softmax, "softmax in fp16", "half precision"),
    ("rms-in-place", "check_rms_norm", rms_norm_in_place, "`x.mul_(...)`: x changed", "changed its input `x`"),
    ("rms-axis-2", "check_rms_norm", rms_norm_axis_2, "mean over axis 2 (rank 3 only)", "lead=(2, 3)"),
    ("kv-bf16-only", "check_kv_bytes_per_token", kv_bytes_bf16_only, "bytes_per_element ignored (2)",
     "assumes its bytes_per_element=2"),
    ("kv-float", "check_kv_bytes_per_token", kv_bytes_via_bits, "returns a float (bits / 8)", "a float"),
    ("cache-k-twice", "check_cache_write", cache_write_returns_k_twice, "returns k_all twice",
     "second returned tensor (v_all)"),
    ("cache-first-token", "check_cache_write", cache_write_first_token, "writes only k_new[:, 0]",
     "only the first of the T new tokens"),
    ("cache-swapped", "check_cache_write", cache_write_swapped, "keys and values swapped",
     "keys and values are swapped"),
    ("cached-scale-v", "check_cached_attention", cached_attention_scale_v, "scale 1/sqrt(v width)", "not of v's"),
    ("rope-fixed-theta", "check_rope_at", rope_fixed_theta, "theta ignored", "`theta` argument is ignored"),
    ("rope-fixed-K", "check_rope_at", rope_fixed_width, "K = 8 in the frequencies", "assumes its K=8"),
    ("rope-float64", "check_rope_at", rope_float64, "returns float64", "dtype torch.float64"),
    ("rope-in-place", "check_rope_at", rope_in_place, "writes the result into x", "changed its input `x`"),
    ("rope-one-position", "check_rope_at", rope_one_position, "one position for the chunk", "same position"),
    ("rope-cos-sin", "check_rope_at", rope_cos_sin_swapped, "cos and sin swapped", "cos and sin are swapped"),
]


# ---------------------------------------------------------------- right answers written other ways (never rejected)


def attention_sdpa(q, k, v):  # PyTorch's fused attention with a boolean (T, S) mask aligned to the end
    t, s = q.shape[1], k.shape[1]
    keep = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep)
    return out.transpose(1, 2)


def attention_matmul_large_negative(q, k, v):  # -1e9 instead of -inf, matmuls instead of einsum
    t, s = q.shape[1], k.shape[1]
    qh, kh, vh = (a.permute(0, 2, 1, 3) for a in (q, k, v))
    scores = qh @ kh.transpose(-2, -1) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(torch.tril(torch.ones(t, s), diagonal=s - t) == 0, -1e9)
    return (scores.softmax(-1) @ vh).permute(0, 2, 1, 3)


def rope_complex_float32(x, start_pos, theta=10000.0):  # complex numbers, angles in float32
    t, width = x.shape[1], x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, width, 2).float() / width))
    ang = torch.outer(torch.arange(start_pos, start_pos + t).float(), inv)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(ang), ang)[None, :, None, :]).flatten(-2)


def cache_write_index_copy(cache_k, cache_v, k_new, v_new, start_pos):
    where = torch.arange(start_pos, start_pos + k_new.shape[1])
    cache_k.index_copy_(1, where, k_new)
    cache_v.index_copy_(1, where, v_new)
    return cache_k.narrow(1, 0, where[-1] + 1), cache_v.narrow(1, 0, where[-1] + 1)


RIGHT_VARIANTS = [
    ("check_split_heads", lambda x, h: x.unflatten(-1, (h, -1)), "split-unflatten"),
    ("check_causal_attention", attention_sdpa, "attn-sdpa"),
    ("check_causal_attention", attention_matmul_large_negative, "attn-matmul--1e9"),
    ("check_cached_attention", attention_sdpa, "cached-sdpa"),
    ("check_cached_attention", attention_matmul_large_negative, "cached-matmul--1e9"),
    ("check_rms_norm", lambda x, w, eps=1e-6: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w, "rms-sqrt"),
    ("check_kv_bytes_per_token", lambda n, h, k, b: math.prod((2, n, h, k, b)), "kv-prod"),
    ("check_cache_write", cache_write_index_copy, "cache-index-copy"),
    ("check_rope_at", rope_complex_float32, "rope-complex-float32"),
]
