"""Learner code for the lesson 05 checkers (decoupled RoPE, absorbed scores): right answers written several ways,
and the classic wrong ones of REFERENCE.md §6.

Every function here is plain torch written from scratch (never the package function a checker compares with),
the way a learner would write it in the exercise notebook.
"""

import math

import torch


def rotate(x, start_pos, *, half=False, from_zero=False):
    """RoPE of x (B, T, H, W) at positions start_pos.. with cos/sin, adjacent pairs (or rotate_half)."""
    w = x.shape[-1]
    pos = torch.arange(x.shape[1]) + (0 if from_zero else start_pos)
    inv = 10000.0 ** (-torch.arange(0, w, 2, dtype=torch.float64) / w)
    ang = (pos[:, None].double() * inv[None]).float()  # (T, W/2)
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    if half:
        a, b = x[..., : w // 2], x[..., w // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def rms(x, weight=None, eps=1e-6):
    y = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def decoupled_rope(x, wq, wkv_a, kv_norm_weight, n_heads, start_pos, *, rope_all=False, rope_first=False,
                   per_head_key=False, norm_key=False, rotate_key=True, from_zero=False, half=False,
                   norm_latent=True):
    b, t, _ = x.shape
    c = kv_norm_weight.shape[0]
    r = wkv_a.shape[0] - c
    k = wq.shape[0] // n_heads - r
    q = (x @ wq.T).view(b, t, n_heads, k + r)
    kv = x @ wkv_a.T
    if rope_all:
        q = rotate(q, start_pos)
        kv = rotate(kv[:, :, None], start_pos)[:, :, 0]
    if rope_first:
        q_pe, q_nope, k_pe, c_kv = q[..., :r], q[..., r:], kv[..., :r], kv[..., r:]
    else:
        q_nope, q_pe, c_kv, k_pe = q[..., :k], q[..., k:], kv[..., :c], kv[..., c:]
    if norm_latent:
        c_kv = rms(c_kv, kv_norm_weight)
    if norm_key:
        k_pe = rms(k_pe)
    if not rope_all:
        q_pe = rotate(q_pe, start_pos, half=half, from_zero=from_zero)
        if rotate_key:
            k_pe = rotate(k_pe[:, :, None], start_pos, half=half, from_zero=from_zero)[:, :, 0]
    if per_head_key:
        k_pe = k_pe[:, :, None].repeat(1, 1, n_heads, 1)
    return q_nope, q_pe, c_kv, k_pe


def decoupled_rope_complex(x, wq, wkv_a, kv_norm_weight, n_heads, start_pos):  # complex multiply, per head loop
    b, t, _ = x.shape
    c = kv_norm_weight.shape[0]
    r = wkv_a.shape[0] - c
    k = wq.shape[0] // n_heads - r
    ang = torch.outer(torch.arange(start_pos, start_pos + t).float(),
                      1.0 / 10000.0 ** (torch.arange(0, r, 2).float() / r))
    turn = torch.polar(torch.ones_like(ang), ang)  # (T, R/2)

    def rot(a):  # (B, T, R)
        return torch.view_as_real(torch.view_as_complex(a.reshape(b, t, -1, 2).contiguous()) * turn).flatten(-2)

    heads = [(x @ wq[i * (k + r):(i + 1) * (k + r)].T) for i in range(n_heads)]  # H × (B, T, K+R)
    q_nope = torch.stack([hd[..., :k] for hd in heads], dim=2)
    q_pe = torch.stack([rot(hd[..., k:]) for hd in heads], dim=2)
    kv = x @ wkv_a.T
    return q_nope, q_pe, rms(kv[..., :c], kv_norm_weight), rot(kv[..., c:])


def absorbed_scores(q_nope, q_pe, c_kv, k_pe, wkv_b, *, scale="K+R", split="per head", rope=True):
    h, k, r, c = q_nope.shape[2], q_nope.shape[3], q_pe.shape[3], c_kv.shape[-1]
    if split == "global":
        w_uk = wkv_b[: h * k].reshape(h, k, c)
    else:
        w_uk = wkv_b.reshape(h, -1, c)[:, :k]
    q_lat = torch.einsum("bthk,hkc->bhtc", q_nope, w_uk)  # (B, H, T, C)
    scores = q_lat @ c_kv[:, None].transpose(-1, -2)  # (B, H, T, S)
    if rope:
        scores = scores + q_pe.transpose(1, 2) @ k_pe[:, None].transpose(-1, -2)
    width = {"K+R": k + r, "K": k, "C+R": c + r, "C": c}.get(scale)
    return scores if width is None else scores / math.sqrt(width)


def absorbed_scores_naive(q_nope, q_pe, c_kv, k_pe, wkv_b):  # materialise per-head keys: same scores
    h, k = q_nope.shape[2], q_nope.shape[3]
    b, s, _ = c_kv.shape
    k_nope = (c_kv @ wkv_b.T).view(b, s, h, -1)[..., :k]  # (B, S, H, K)
    keys = torch.cat([k_nope, k_pe[:, :, None].expand(-1, -1, h, -1)], dim=-1)
    q = torch.cat([q_nope, q_pe], dim=-1)
    return torch.einsum("bthd,bshd->bhts", q, keys) / math.sqrt(q.shape[-1])


def absorbed_scores_fixed_scale(q_nope, q_pe, c_kv, k_pe, wkv_b):  # 1/sqrt(6) copied from the example
    return absorbed_scores(q_nope, q_pe, c_kv, k_pe, wkv_b, scale=None) / math.sqrt(6)


def not_implemented(*args):
    raise NotImplementedError("Exercise 05.1 (f): not implemented yet")


RIGHT = {
    "check_decoupled_rope": decoupled_rope,
    "check_absorbed_scores": absorbed_scores,
}

RIGHT_VARIANTS = [
    ("check_decoupled_rope", decoupled_rope_complex, "decoupled-complex-per-head"),
    ("check_absorbed_scores", absorbed_scores_naive, "absorbed-via-naive-keys"),
]

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, rope_all=True), "RoPE turned every channel",
     "rope-on-all-dims"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, rope_first=True), "the rope channels are the LAST R",
     "rope-on-nope-part"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, per_head_key=True), "ONE (B, T, R) vector",
     "per-head-rope-key"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, norm_key=True), "the rope key is normalised",
     "rope-key-normalised"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, rotate_key=False), "k_pe is not rotated",
     "rope-key-not-rotated"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, from_zero=True), "positions start at 0",
     "positions-from-0"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, half=True), "rotate_half", "rotate-half"),
    ("check_decoupled_rope", lambda *a: decoupled_rope(*a, norm_latent=False), "c_kv is not normalised",
     "no-kv-norm"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, scale="K"), "wrong scale 1/sqrt(K)", "scale-K"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, scale="C+R"), "wrong scale 1/sqrt(C + R)",
     "scale-C+R"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, scale="C"), "wrong scale 1/sqrt(C)", "scale-C"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, scale=None), "missing scale", "no-scale"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, split="global"), "split globally", "global-split"),
    ("check_absorbed_scores", lambda *a: absorbed_scores(*a, rope=False), "rope part is missing", "no-rope-part"),
    ("check_absorbed_scores", absorbed_scores_fixed_scale, "wrong on", "scale-hard-coded"),
]
