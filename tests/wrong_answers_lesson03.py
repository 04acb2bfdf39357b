"""Learner code for the lesson 03 checkers (GQA head sharing, GQA cache bytes): right answers written several
ways, and the classic wrong ones (interleaved pairing h % G, `.repeat` instead of `.repeat_interleave`, only
the keys or only the values grouped, the scale, the mask when T < S).

Every function here is plain torch written from scratch (never the package function a checker compares with),
the way a learner would write it in the exercise notebook.
"""

import math

import torch
import torch.nn.functional as F


def attention(q, k, v, *, scale="sqrt", mask="end"):
    """Plain causal attention over per-head q (B, T, H, K), k (B, S, H, K), v (B, S, H, V)."""
    t, s, width = q.shape[1], k.shape[1], q.shape[-1]
    factor = {"sqrt": 1 / math.sqrt(width), "none": 1.0, "K": 1 / width,
              "HK": 1 / math.sqrt(q.shape[2] * width)}[scale]
    scores = torch.einsum("bthk,bshk->bhts", q, k) * factor  # (B, H, T, S)
    if mask == "end":  # queries at positions S-T .. S-1
        hide = torch.arange(s)[None, :] > torch.arange(s - t, s)[:, None]
    elif mask == "start":  # as if there were no cache: query i sees keys 0 .. i
        hide = torch.ones(t, s, dtype=torch.bool).triu(1)
    else:
        hide = torch.zeros(t, s, dtype=torch.bool)
    scores = scores.masked_fill(hide, float("-inf"))
    return torch.einsum("bhts,bshv->bthv", scores.softmax(-1), v)  # (B, T, H, V)


def grouped_attention(q, k, v, **kwargs):
    """Right: repeat_interleave the G KV heads so head h reads KV head h // (H/G)."""
    r = q.shape[2] // k.shape[2]
    return attention(q, k.repeat_interleave(r, dim=2), v.repeat_interleave(r, dim=2), **kwargs)


def grouped_attention_reshape(q, k, v):
    """Right, without copies: q viewed as (B, T, G, R, K), one einsum per group."""
    b, t, h, width = q.shape
    s, g = k.shape[1], k.shape[2]
    qg = q.reshape(b, t, g, h // g, width)
    scores = torch.einsum("btgrk,bsgk->bgrts", qg, k) / math.sqrt(width)  # (B, G, R, T, S)
    hide = torch.arange(s)[None, :] > torch.arange(s - t, s)[:, None]
    probs = scores.masked_fill(hide, float("-inf")).softmax(-1)
    return torch.einsum("bgrts,bsgv->btgrv", probs, v).reshape(b, t, h, v.shape[-1])  # (B, T, H, V)


def grouped_attention_sdpa(q, k, v):
    """Right: PyTorch's fused attention on expanded heads with an explicit end-aligned mask."""
    r = q.shape[2] // k.shape[2]
    t, s = q.shape[1], k.shape[1]
    allowed = torch.arange(s)[None, :] <= torch.arange(s - t, s)[:, None]  # (T, S)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(r, 2).transpose(1, 2),
                                       v.repeat_interleave(r, 2).transpose(1, 2), attn_mask=allowed)
    return o.transpose(1, 2)


def grouped_attention_index(q, k, v):
    """Right: an explicit index list, kv_head[h] = h // (H // G)."""
    h, g = q.shape[2], k.shape[2]
    index = torch.arange(h) // (h // g)
    return attention(q, k[:, :, index], v[:, :, index])


def interleaved(q, k, v):  # .repeat tiles the KV heads: head h reads KV head h % G
    r = q.shape[2] // k.shape[2]
    return attention(q, k.repeat(1, 1, r, 1), v.repeat(1, 1, r, 1))


def modulo_index(q, k, v):  # the same mistake written with an index list
    index = torch.arange(q.shape[2]) % k.shape[2]
    return attention(q, k[:, :, index], v[:, :, index])


def values_tiled(q, k, v):  # keys grouped right, values tiled
    r = q.shape[2] // k.shape[2]
    return attention(q, k.repeat_interleave(r, 2), v.repeat(1, 1, r, 1))


def keys_tiled(q, k, v):
    r = q.shape[2] // k.shape[2]
    return attention(q, k.repeat(1, 1, r, 1), v.repeat_interleave(r, 2))


def first_kv_head(q, k, v):  # MQA by accident
    h = q.shape[2]
    return attention(q, k[:, :, :1].expand(-1, -1, h, -1), v[:, :, :1].expand(-1, -1, h, -1))


def scale_from_kv_width(q, k, v):  # divides by sqrt of the whole KV projection width G·K
    r = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(r, 2), v.repeat_interleave(r, 2)
    scores = torch.einsum("bthk,bshk->bhts", q, kk) / math.sqrt(k.shape[2] * k.shape[3])
    t, s = q.shape[1], k.shape[1]
    hide = torch.arange(s)[None, :] > torch.arange(s - t, s)[:, None]
    return torch.einsum("bhts,bshv->bthv", scores.masked_fill(hide, float("-inf")).softmax(-1), vv)


def gqa_bytes(n_layers, n_heads, n_kv_heads, head_dim, bytes_per_element):
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_element


def gqa_bytes_as_mha_over_groups(n_layers, n_heads, n_kv_heads, head_dim, bytes_per_element):
    """Right, another way: MHA's cache divided by the group size H/G (exact: G divides H)."""
    mha = 2 * n_layers * n_heads * head_dim * bytes_per_element
    return mha // (n_heads // n_kv_heads)


def not_implemented(*args):
    raise NotImplementedError("Exercise 03: not implemented yet")


RIGHT = {"check_grouped_attention": grouped_attention, "check_gqa_cache_bytes": gqa_bytes}

# (checker, right answer written another way, test id)
RIGHT_VARIANTS = [
    ("check_grouped_attention", grouped_attention_reshape, "gqa-reshape-no-copies"),
    ("check_grouped_attention", grouped_attention_sdpa, "gqa-sdpa"),
    ("check_grouped_attention", grouped_attention_index, "gqa-index-list"),
    ("check_gqa_cache_bytes", gqa_bytes_as_mha_over_groups, "gqa-bytes-mha-over-groups"),
]

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_grouped_attention", interleaved, "KV head h % G (interleaved", "gqa-repeat-instead-of-interleave"),
    ("check_grouped_attention", modulo_index, "KV head h % G (interleaved", "gqa-modulo-pairing"),
    ("check_grouped_attention", values_tiled, "the values are not", "gqa-only-keys-grouped"),
    ("check_grouped_attention", keys_tiled, "the keys are not", "gqa-only-values-grouped"),
    ("check_grouped_attention", first_kv_head, "every query head reads KV head 0", "gqa-first-head-only"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, k, v, scale="none"), "missing scale",
     "gqa-no-scale"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, k, v, scale="K"), "not by K", "gqa-scale-1/K"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, k, v, scale="HK"), "not by sqrt(H * K)",
     "gqa-scale-d_model"),
    ("check_grouped_attention", scale_from_kv_width, "not by sqrt(G * K)", "gqa-scale-kv-width"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, k, v, mask="start"), "aligned to position 0",
     "gqa-mask-from-start"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, k, v, mask="none"), "missing causal mask",
     "gqa-no-mask"),
    ("check_grouped_attention", lambda q, k, v: grouped_attention(q, v, k), "keys and values are swapped",
     "gqa-k-v-swapped"),
    ("check_gqa_cache_bytes", lambda n, h, g, k, b: 2 * n * h * k * b, "that is MHA's cache", "gqa-bytes-query-heads"),
    ("check_gqa_cache_bytes", lambda n, h, g, k, b: 2 * n * (h // g) * k * b, "group size", "gqa-bytes-group-size"),
    ("check_gqa_cache_bytes", lambda n, h, g, k, b: n * g * k * b, "missing factor 2", "gqa-bytes-no-factor-2"),
    ("check_gqa_cache_bytes", lambda n, h, g, k, b: 2 * g * k * b, "missing the layer count", "gqa-bytes-no-layers"),
    ("check_gqa_cache_bytes", lambda n, h, g, k, b: gqa_bytes(n, h, g, k, b) * 8, "that is bits", "gqa-bytes-bits"),
]
