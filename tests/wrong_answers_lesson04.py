"""Right and wrong answers to lesson 04's exercises (latent path, cache bytes, query path), as learners write them.

Plain torch from scratch, never the package function the checker compares with (as tests/wrong_answers.py). The
keyword arguments of `latent` switch one mistake on at a time; NAMED pairs each classic mistake of REFERENCE.md
§6 with the words its hint must contain; RIGHT_VARIANTS are correct answers written other ways.
"""

from __future__ import annotations

import torch


def rms(x, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def latent(x, wkv_a, kv_norm_weight, wkv_b, n_heads, qk_nope_head_dim, eps=1e-6, *, split="per head",
           norm=True, gain=True, rope_norm=None, fixed_eps=None, eps_outside=False):
    """The MLA latent path; keyword arguments build the wrong variants."""
    eps = eps if fixed_eps is None else fixed_eps
    c = kv_norm_weight.numel()
    kv = x @ wkv_a.T  # (B, T, C+R)
    c_kv, k_pe = kv[..., :c], kv[..., c:]
    if rope_norm == "together":
        normed = rms(kv, eps)
        c_kv, k_pe = normed[..., :c], normed[..., c:]
    elif norm and eps_outside:
        c_kv = c_kv / ((c_kv * c_kv).mean(-1, keepdim=True).sqrt() + eps)
    elif norm:
        c_kv = rms(c_kv, eps)
    if rope_norm == "separately":
        k_pe = rms(k_pe, eps)
    if gain and (norm or rope_norm == "together"):
        c_kv = c_kv * kv_norm_weight
    b, t, _ = x.shape
    up = c_kv @ wkv_b.T  # (B, T, H·(K+V))
    k = qk_nope_head_dim
    if split == "global":
        hk = n_heads * k
        return c_kv, k_pe, up[..., :hk].reshape(b, t, n_heads, k), up[..., hk:].reshape(b, t, n_heads, -1)
    heads = up.reshape(b, t, n_heads, -1)
    if split == "values first":
        v_width = heads.shape[-1] - k
        return c_kv, k_pe, heads[..., v_width:], heads[..., :v_width]
    if split == "heads last":  # reshaped as (K+V, H): head h gets every H-th row
        heads = up.reshape(b, t, -1, n_heads).transpose(-1, -2)
    return c_kv, k_pe, heads[..., :k], heads[..., k:]


def latent_per_head_weights(x, wkv_a, kv_norm_weight, wkv_b, n_heads, qk_nope_head_dim, eps=1e-6):
    """Right, written the absorbed way: split the WEIGHT per head, then one einsum each for k and v."""
    c = kv_norm_weight.numel()
    c_kv = rms(x @ wkv_a[:c].T, eps) * kv_norm_weight
    w = wkv_b.view(n_heads, -1, c)  # (H, K+V, C)
    k_nope = torch.einsum("btc,hkc->bthk", c_kv, w[:, :qk_nope_head_dim])
    v = torch.einsum("btc,hvc->bthv", c_kv, w[:, qk_nope_head_dim:])
    return c_kv, x @ wkv_a[c:].T, k_nope, v


def latent_with_rmsnorm_module(x, wkv_a, kv_norm_weight, wkv_b, n_heads, qk_nope_head_dim, eps=1e-6):
    """Right, using torch's own functional rms_norm."""
    c = kv_norm_weight.numel()
    c_kv, k_pe = torch.nn.functional.linear(x, wkv_a).split([c, wkv_a.shape[0] - c], -1)
    c_kv = torch.nn.functional.rms_norm(c_kv, (c,), kv_norm_weight, eps)
    kv = torch.nn.functional.linear(c_kv, wkv_b).unflatten(-1, (n_heads, -1))
    return c_kv, k_pe, kv[..., :qk_nope_head_dim], kv[..., qk_nope_head_dim:]


def mla_bytes(cfg, bytes_per_element):
    rope = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    return cfg.n_layers * (cfg.kv_lora_rank + rope) * bytes_per_element


def mla_bytes_from_tensors(cfg, bytes_per_element):
    """Right, another way: allocate one token's cache and count its elements."""
    from minimodels import KVCache

    cache = KVCache(cfg, batch_size=1, max_len=1)
    return cache.nbytes // 4 * bytes_per_element  # the cache is fp32: 4 bytes per element


def mla_bytes_expanded(cfg, bytes_per_element):  # caches the up-projected keys (with the rope part) and values
    rope = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    return cfg.n_layers * cfg.n_heads * (cfg.qk_nope_head_dim + rope + cfg.v_head_dim) * bytes_per_element


def mla_bytes_mha(cfg, bytes_per_element):  # MHA's formula with the nope width
    return 2 * cfg.n_layers * cfg.n_heads * cfg.qk_nope_head_dim * bytes_per_element


def mla_bytes_always_rope(cfg, bytes_per_element):  # ignores attn: counts a rope key for mla_lowrank too
    return cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * bytes_per_element


def mla_bytes_rope_per_head(cfg, bytes_per_element):
    rope = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    return cfg.n_layers * (cfg.kv_lora_rank + cfg.n_heads * rope) * bytes_per_element


def mla_bytes_twice(cfg, bytes_per_element):  # "a latent for K and one for V"
    return 2 * mla_bytes(cfg, bytes_per_element)


def mla_bytes_float(cfg, bytes_per_element):  # right number, but a float
    return mla_bytes(cfg, bytes_per_element) / 1


def queries(x, wq_a, q_norm_weight, wq_b, n_heads, qk_nope_head_dim, eps=1e-6, *, split="per head", norm=True,
            fixed_eps=None):
    """The compressed query path wq_a -> q_norm -> wq_b; keyword arguments build the wrong variants."""
    eps = eps if fixed_eps is None else fixed_eps
    c_q = x @ wq_a.T  # (B, T, L)
    if norm:
        c_q = rms(c_q, eps) * q_norm_weight
    q = c_q @ wq_b.T  # (B, T, H·(K+R))
    b, t, _ = x.shape
    k = qk_nope_head_dim
    if split == "global":
        return q[..., :n_heads * k].reshape(b, t, n_heads, k), q[..., n_heads * k:].reshape(b, t, n_heads, -1)
    q = q.reshape(b, t, n_heads, -1)
    return q[..., :k], q[..., k:]


def queries_split_the_weight(x, wq_a, q_norm_weight, wq_b, n_heads, qk_nope_head_dim, eps=1e-6):
    """Right, another way: split wq_b's rows per head first, then two einsums."""
    c_q = torch.nn.functional.rms_norm(x @ wq_a.T, (wq_a.shape[0],), q_norm_weight, eps)
    w = wq_b.view(n_heads, -1, wq_b.shape[-1])  # (H, K+R, L)
    return (torch.einsum("btl,hkl->bthk", c_q, w[:, :qk_nope_head_dim]),
            torch.einsum("btl,hrl->bthr", c_q, w[:, qk_nope_head_dim:]))


def queries_norm_after(x, wq_a, q_norm_weight, wq_b, n_heads, qk_nope_head_dim, eps=1e-6):
    """q_norm (without its gain, which is L wide) applied to the up-projected query instead of the latent."""
    b, t, _ = x.shape
    q = rms(x @ wq_a.T @ wq_b.T, eps).reshape(b, t, n_heads, -1)
    return q[..., :qk_nope_head_dim], q[..., qk_nope_head_dim:]


RIGHT = {"check_mla_latent": latent, "check_mla_cache_bytes": mla_bytes, "check_mla_queries": queries}

RIGHT_VARIANTS = [
    ("check_mla_latent", latent_per_head_weights, "latent-split-the-weight"),
    ("check_mla_latent", latent_with_rmsnorm_module, "latent-functional-rms-norm"),
    ("check_mla_cache_bytes", mla_bytes_from_tensors, "bytes-from-kvcache"),
    ("check_mla_queries", queries_split_the_weight, "queries-split-the-weight"),
]

# (check name, learner function, words the message must contain, test id)
NAMED = [
    ("check_mla_latent", lambda *a: latent(*a, split="global"), "split globally", "latent-global-split"),
    ("check_mla_latent", lambda *a: latent(*a, split="values first"), "keys first", "latent-values-first"),
    ("check_mla_latent", lambda *a: latent(*a, norm=False), "not normalised", "latent-no-kv-norm"),
    ("check_mla_latent", lambda *a: latent(*a, gain=False), "not multiplied by kv_norm_weight",
     "latent-no-gain"),
    ("check_mla_latent", lambda *a: latent(*a, rope_norm="together"), "normalised together with the latent",
     "latent-rope-key-normalised-together"),
    ("check_mla_latent", lambda *a: latent(*a, rope_norm="separately"), "k_pe was normalised too",
     "latent-rope-key-normalised"),
    ("check_mla_latent", lambda x, a, w, b, h, k, eps=1e-6: latent(x, a, w, b, h, k, 1e-5),
     "`eps` argument is ignored", "latent-eps-1e-5"),
    ("check_mla_latent", lambda *a: latent(*a, fixed_eps=1e-6), "`eps` argument is ignored", "latent-eps-fixed"),
    ("check_mla_cache_bytes", mla_bytes_expanded, "up-projected keys and values", "bytes-expanded-kv"),
    ("check_mla_cache_bytes", mla_bytes_mha, "MHA's 2·H·K", "bytes-mha-formula"),
    ("check_mla_cache_bytes", lambda c, b: c.n_layers * c.kv_lora_rank * b, "rope key is missing",
     "bytes-no-rope-key"),
    ("check_mla_cache_bytes", mla_bytes_always_rope, "caches only the latent", "bytes-lowrank-rope"),
    ("check_mla_cache_bytes", mla_bytes_rope_per_head, "ONE R-wide key", "bytes-rope-per-head"),
    ("check_mla_cache_bytes", mla_bytes_twice, "not cached twice", "bytes-twice"),
    ("check_mla_queries", lambda *a: queries(*a, split="global"), "split globally", "queries-global-split"),
    ("check_mla_queries", lambda *a: queries(*a, norm=False), "not normalised", "queries-no-q-norm"),
    ("check_mla_queries", lambda *a: queries(*a, fixed_eps=1e-5), "`eps` argument is ignored", "queries-eps-fixed"),
]

# wrong answers no named mistake explains: the generic message must still say what differs
UNNAMED = [
    ("check_mla_latent", lambda *a: latent(*a, split="heads last"), "wrong values", "latent-heads-last"),
    ("check_mla_latent", lambda *a: latent(*a, eps_outside=True), "wrong on", "latent-eps-outside-sqrt"),
    ("check_mla_cache_bytes", mla_bytes_float, "a float", "bytes-float"),
    ("check_mla_queries", queries_norm_after, "wrong values", "queries-norm-after-up-projection"),
]
