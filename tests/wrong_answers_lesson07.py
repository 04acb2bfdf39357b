"""Learner code for the lesson 07 checkers (the DeepSeekMoE layer with shared experts, fine-grained segmentation
arithmetic): right answers written several ways, and the classic wrong ones (shared experts forgotten, weighted
by a gate value or averaged, routed outputs unweighted, every expert summed, the residual added, the shared
experts left among the routed ones, the width not divided, ordered combinations).

Every function here is plain torch written from scratch (never the package function a checker compares with),
the way a learner would write it in the exercise notebook.
"""

import math

import torch
import torch.nn.functional as F


def ffn(x, w1, w2, w3):
    """One SwiGLU expert: x (N, D), w1 (H, D), w2 (D, H), w3 (H, D) -> (N, D)."""
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def deepseek_moe(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3, *, shared="sum",
                 routed="weighted", residual=False):
    """Right by default: a loop over tokens and their k choices, then the shared experts, weight 1."""
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(indices.shape[1]):
            e = int(indices[t, j])
            gate = weights[t, j] if routed == "weighted" else 1.0
            y[t] = y[t] + gate * ffn(x[t:t + 1], w1[e], w2[e], w3[e])[0]
    for s in range(shared_w1.shape[0]):
        out = ffn(x, shared_w1[s], shared_w2[s], shared_w3[s])
        if shared == "sum":
            y = y + out
        elif shared == "top gate":
            y = y + out * weights[:, :1]
    return y + x if residual else y


def deepseek_moe_loop_over_experts(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    """Right, DeepSeek's way: a loop over experts, each on the tokens that chose it, index_add back."""
    y = torch.zeros_like(x)
    for e in range(w1.shape[0]):
        tok, slot = torch.where(indices == e)
        if tok.numel():
            y = y.index_add(0, tok, ffn(x[tok], w1[e], w2[e], w3[e]) * weights[tok, slot, None])
    return y + sum((ffn(x, a, b, c) for a, b, c in zip(shared_w1, shared_w2, shared_w3)), torch.zeros_like(x))


def deepseek_moe_dense_mask(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    """Right, the dense reference: run every expert, scatter the gates into an (N, E) matrix, zero elsewhere."""
    gates = torch.zeros(x.shape[0], w1.shape[0]).scatter(1, indices, weights)  # (N, E)
    hidden = F.silu(torch.einsum("nd,ehd->neh", x, w1)) * torch.einsum("nd,ehd->neh", x, w3)  # (N, E, H)
    y = torch.einsum("neh,edh,ne->nd", hidden, w2, gates)
    if shared_w1.shape[0]:  # the S shared experts fused into one SwiGLU of width S·H
        s, h, d = shared_w1.shape
        y = y + ffn(x, shared_w1.reshape(s * h, d), shared_w2.permute(1, 0, 2).reshape(d, s * h),
                    shared_w3.reshape(s * h, d))
    return y


def deepseek_moe_in_place(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    """Right values, but it multiplies the gate values into `weights` in place, changing the caller's tensor."""
    y = deepseek_moe(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3)
    weights.mul_(2.0)  # e.g. a leftover of trying a route_scale by hand
    return y


def shared_averaged(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    y = deepseek_moe(x, weights, indices, w1, w2, w3, shared_w1[:0], shared_w2[:0], shared_w3[:0])
    if shared_w1.shape[0]:
        y = y + torch.stack([ffn(x, a, b, c) for a, b, c in zip(shared_w1, shared_w2, shared_w3)]).mean(0)
    return y


def every_expert(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    """Sums all E experts' outputs (no routing at all), plus the shared ones."""
    y = sum(ffn(x, w1[e], w2[e], w3[e]) for e in range(w1.shape[0]))
    return y + sum((ffn(x, a, b, c) for a, b, c in zip(shared_w1, shared_w2, shared_w3)), torch.zeros_like(x))


def silu_on_up(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
    return deepseek_moe(x, weights, indices, w3, w2, w1, shared_w3, shared_w2, shared_w1)


def segmentation(n_experts, top_k, expert_width, m, n_shared):
    routed = m * n_experts - n_shared
    active = m * top_k - n_shared
    return routed, active, expert_width // m, math.comb(routed, active)


def segmentation_by_factorials(n_experts, top_k, expert_width, m, n_shared):
    """Right, another way: n! / (k! (n - k)!) in integers."""
    n, k = m * n_experts - n_shared, m * top_k - n_shared
    combos = math.factorial(n) // (math.factorial(k) * math.factorial(n - k))
    return n, k, int(expert_width / m), combos


def not_implemented(*args):
    raise NotImplementedError("Exercise 07: not implemented yet")


RIGHT = {"check_deepseek_moe": deepseek_moe, "check_fine_grained_segmentation": segmentation}

# (checker, right answer written another way, test id)
RIGHT_VARIANTS = [
    ("check_deepseek_moe", deepseek_moe_loop_over_experts, "moe-loop-over-experts"),
    ("check_deepseek_moe", deepseek_moe_dense_mask, "moe-dense-mask-fused-shared"),
    ("check_fine_grained_segmentation", segmentation_by_factorials, "segmentation-factorials"),
]

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_deepseek_moe", lambda *a: deepseek_moe(*a, shared="none"), "the shared experts are missing",
     "moe-no-shared"),
    ("check_deepseek_moe", lambda *a: deepseek_moe(*a, shared="top gate"), "multiplied by the first gate value",
     "moe-shared-gated"),
    ("check_deepseek_moe", shared_averaged, "the shared experts are averaged", "moe-shared-averaged"),
    ("check_deepseek_moe", lambda *a: deepseek_moe(*a, routed="unweighted"), "the routed outputs are not weighted",
     "moe-unweighted"),
    ("check_deepseek_moe", every_expert, "every routed expert's output is summed", "moe-every-expert"),
    ("check_deepseek_moe", lambda *a: deepseek_moe(*a, residual=True), "the residual x is added",
     "moe-residual-added"),
    ("check_deepseek_moe", silu_on_up, "silu is applied to the up projection", "moe-silu-on-w3"),
    ("check_fine_grained_segmentation", lambda n, k, h, m, s: (m * n, m * k - s, h // m, math.comb(m * n, m * k - s)),
     "still counted as routed", "segment-shared-still-routed"),
    ("check_fine_grained_segmentation", lambda n, k, h, m, s: (m * n, m * k, h // m, math.comb(m * n, m * k)),
     "the shared experts are ignored", "segment-no-isolation"),
    ("check_fine_grained_segmentation", lambda n, k, h, m, s: (*segmentation(n, k, h, m, s)[:2], h,
                                                               segmentation(n, k, h, m, s)[3]),
     "expert_width // m", "segment-width-not-divided"),
    ("check_fine_grained_segmentation", lambda n, k, h, m, s: (*segmentation(n, k, h, m, s)[:3],
                                                               math.perm(m * n - s, m * k - s)),
     "ordered choices", "segment-perm"),
]
