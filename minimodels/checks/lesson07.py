"""Checkers of exercises/07_deepseekmoe_exercises.ipynb: the DeepSeekMoE layer with shared experts, and the
arithmetic of fine-grained segmentation with shared-expert isolation.

Same pattern as lesson03.py: a reference built from the package (moe.dispatch_sorted for the routed experts, one
FeedForward of width N_s·H for the shared ones, as moe.MoE does; moe.fine_grained_config for the counts), cases
that change every size (including no shared expert, k = 1 and k = E, where some wrong answers happen to be
right) and both gate recipes (V2's unnormalised softmax weights, V3's renormalised sigmoid weights × 2.5), and
the mistakes of REFERENCE.md §6 item 13 and around it: shared experts forgotten, weighted by a gate value or
averaged, routed outputs unweighted, every expert summed instead of the chosen ones, the residual added inside
the layer (this package's Block adds it), and for the counts: shared experts not taken from the routed ones,
the width not divided, combinations counted with order or over all experts.
"""

# Shapes: N tokens, D = dim, E = routed experts, k = routed experts per token, H = one expert's hidden width,
# S = shared experts (N_s, may be 0)

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..ffn import FeedForward
from ..moe import Experts, dispatch_sorted, fine_grained_config
from ..router import route
from .engine import CheckResult, Exercise, Mistake, build_cases, vary

# ---------------------------------------------------------------- 7.1 the DeepSeekMoE layer


def _experts(w1: Tensor, w2: Tensor, w3: Tensor) -> Experts:
    """The package's stacked experts holding the given weights (E, H, D), (E, D, H), (E, H, D)."""
    n, h, d = w1.shape
    experts = Experts(n, d, h, init_std=0.02)
    with torch.no_grad():
        for mine, given in zip((experts.w1, experts.w2, experts.w3), (w1, w2, w3)):
            mine.copy_(given)
    return experts


def fused_shared(shared_w1: Tensor, shared_w2: Tensor, shared_w3: Tensor) -> FeedForward | None:
    """The S shared experts as ONE SwiGLU of width S·H (what moe.MoE builds), or None when S = 0.
    (S, H, D), (S, D, H), (S, H, D) -> FeedForward(D, S·H)"""
    s, h, d = shared_w1.shape
    if s == 0:
        return None
    ffn = FeedForward(d, s * h)
    with torch.no_grad():
        ffn.w1.weight.copy_(shared_w1.reshape(s * h, d))  # the S gate projections stacked: (S·H, D)
        ffn.w3.weight.copy_(shared_w3.reshape(s * h, d))
        ffn.w2.weight.copy_(shared_w2.permute(1, 0, 2).reshape(d, s * h))  # (D, S·H): the S down projections
    return ffn


@torch.no_grad()
def _layer_ref(x: Tensor, weights: Tensor, indices: Tensor, w1: Tensor, w2: Tensor, w3: Tensor,
               shared_w1: Tensor, shared_w2: Tensor, shared_w3: Tensor) -> Tensor:
    counts = torch.bincount(indices.flatten(), minlength=w1.shape[0])  # (E,)
    y = dispatch_sorted(_experts(w1, w2, w3), x, weights, indices, counts)  # (N, D) routed, weighted
    shared = fused_shared(shared_w1, shared_w2, shared_w3)
    return y if shared is None else y + shared(x)  # shared experts: always on, weight 1


def swiglu(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    """One expert: w2 (silu(w1 x) ⊙ w3 x).  x (..., D), w1 (H, D), w2 (D, H), w3 (H, D) -> (..., D)"""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def _all_outputs(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor, ffn: Callable = swiglu) -> Tensor:
    """Every expert on every token.  (N, D) -> (N, E, D)"""
    if w1.shape[0] == 0:  # no shared experts
        return x.new_zeros(x.shape[0], 0, x.shape[-1])
    return torch.stack([ffn(x, w1[e], w2[e], w3[e]) for e in range(w1.shape[0])], dim=1)


def _layer(*, shared: str = "sum", routed: str = "weighted", residual: bool = False, renormalise: bool = False,
           first_only: bool = False, ffn: Callable = swiglu) -> Callable:
    """The layer with switchable mistakes: how the shared experts enter, how the routed ones are summed."""
    def wrong(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3):
        outs = _all_outputs(x, w1, w2, w3, ffn)  # (N, E, D)
        w, idx = (weights[:, :1], indices[:, :1]) if first_only else (weights, indices)
        if renormalise:
            w = w / w.sum(-1, keepdim=True)
        chosen = outs.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # (N, k, D)
        y = {"weighted": (chosen * w[..., None]).sum(1), "unweighted": chosen.sum(1),
             "all": outs.sum(1)}[routed]
        per_shared = _all_outputs(x, shared_w1, shared_w2, shared_w3, ffn)  # (N, S, D)
        if shared == "sum":
            y = y + per_shared.sum(1)
        elif shared == "top gate":
            y = y + per_shared.sum(1) * weights[:, :1]
        elif shared == "gate sum":
            y = y + per_shared.sum(1) * weights.sum(-1, keepdim=True)
        elif shared == "mean" and per_shared.shape[1]:
            y = y + per_shared.mean(1)
        elif shared == "first" and per_shared.shape[1]:
            y = y + per_shared[:, 0]
        return y + x if residual else y
    return wrong


def _swapped_gate(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    return swiglu(x, w3, w2, w1)  # silu on the up projection, the gate projection linear


def _layer_cases() -> list:
    sizes = vary(dict(N=7, D=8, E=6, k=2, H=4, S=1, gates="softmax"),
                 dict(E=16, k=6, H=3, S=2),  # fine-grained: many small experts, several active, 2 shared
                 dict(E=4, k=4, S=0),  # every expert chosen, no shared expert
                 N=[1, 12], D=[6], E=[9], k=[1, 3], H=[5], S=[0, 2], gates=["sigmoid"])

    def build(g, N, D, E, k, H, S, gates):
        scores = torch.randn(N, E, generator=g) * 2  # router logits of N tokens
        probs = scores.softmax(-1) if gates == "softmax" else scores.sigmoid()
        weights, indices = route(probs, None, k, score_func=gates, route_scale=1.0 if gates == "softmax" else 2.5)
        return (torch.randn(N, D, generator=g), weights, indices,
                torch.randn(E, H, D, generator=g) * 0.5, torch.randn(E, D, H, generator=g) * 0.5,
                torch.randn(E, H, D, generator=g) * 0.5,
                torch.randn(S, H, D, generator=g) * 0.5, torch.randn(S, D, H, generator=g) * 0.5,
                torch.randn(S, H, D, generator=g) * 0.5)

    return build_cases(sizes, build, seed=700)


_NO_GATE = ("the shared experts are not routed, so they have no gate value: every token runs each of them and "
            "adds its output with weight 1")

MOE_LAYER = Exercise("deepseek_moe", _layer_ref, _layer_cases, mistakes=[
    Mistake("shared experts forgotten", _layer(shared="none"),
            "the shared experts are missing: every token also runs the S shared experts (always on, weight 1) "
            "and adds their outputs to the routed sum"),
    Mistake("shared weighted by the top gate", _layer(shared="top gate"),
            "the shared experts are multiplied by the first gate value: " + _NO_GATE),
    Mistake("shared weighted by the gate sum", _layer(shared="gate sum"),
            "the shared experts are multiplied by the sum of the gate values: " + _NO_GATE),
    Mistake("shared experts averaged", _layer(shared="mean"),
            "the shared experts are averaged: SUM their outputs (S shared experts = one SwiGLU S times as wide)"),
    Mistake("first shared expert only", _layer(shared="first"),
            "only the first shared expert is used: sum over all S of them (shared_w1 holds S experts)"),
    Mistake("routed outputs unweighted", _layer(routed="unweighted"),
            "the routed outputs are not weighted: multiply each chosen expert's output by its gate value "
            "weights[:, j] before summing"),
    Mistake("every expert summed", _layer(routed="all"),
            "every routed expert's output is summed: only the k experts in indices[t] count for token t, each "
            "times its weight (that is what makes the layer sparse)"),
    Mistake("first choice only", _layer(first_only=True),
            "only the first chosen expert is used: sum over all k columns of indices and weights"),
    Mistake("weights renormalised", _layer(renormalise=True),
            "the gate values are renormalised to sum to 1: use the weights as given (the gate already applied "
            "any normalisation and route_scale; V2's softmax weights are not renormalised)"),
    Mistake("residual added", _layer(residual=True),
            "the residual x is added: this layer returns only the experts' sum; the block adds the residual "
            "(x + ffn(norm(x)) in Block.forward, as in DeepSeek's code)"),
    Mistake("silu on w3", _layer(ffn=_swapped_gate),
            "silu is applied to the up projection: each expert is w2 (silu(w1 x) * (w3 x)), silu on w1 (the gate)"),
])


def check_deepseek_moe(fn: Callable) -> CheckResult:
    """Exercise 7.1: fn(x, weights, indices, w1, w2, w3, shared_w1, shared_w2, shared_w3) -> the layer's output
    Σ_s FFN_s(x) + Σ_j weights[:, j] FFN_{indices[:, j]}(x), without the residual."""
    return MOE_LAYER.check(fn)


# ---------------------------------------------------------------- 7.2 fine-grained segmentation arithmetic


def _segment_ref(n_experts: int, top_k: int, expert_width: int, m: int, n_shared: int) -> tuple[int, int, int, int]:
    """Via the package: N experts of width H, top-K, no shared; split m ways; isolate n_shared pieces."""
    cfg = ModelConfig(dim=8, n_heads=2, n_layers=2, ffn="moe", n_routed_experts=n_experts, n_shared_experts=0,
                      n_activated_experts=top_k, moe_inter_dim=expert_width)
    fine = fine_grained_config(cfg, m, isolate_shared=n_shared)
    return (fine.n_routed_experts, fine.n_activated_experts, fine.moe_inter_dim,
            math.comb(fine.n_routed_experts, fine.n_activated_experts))


def _segment_cases() -> list:
    sizes = vary(dict(n_experts=16, top_k=2, expert_width=256, m=4, n_shared=1),
                 dict(n_experts=8, top_k=2, expert_width=96, m=2, n_shared=0),
                 dict(n_experts=32, top_k=4, expert_width=128, m=8, n_shared=4),  # DeepSeekMoE 145B's 4 shared
                 n_experts=[8], top_k=[1, 3], expert_width=[512], m=[1, 2], n_shared=[0, 2])
    return build_cases(sizes, lambda g, **s: tuple(s.values()), seed=710)


def _segment(*, routed: Callable = lambda n, m, s: m * n - s, active: Callable = lambda k, m, s: m * k - s,
             width: Callable = lambda h, m: h // m, combos: Callable = math.comb) -> Callable:
    def wrong(n_experts, top_k, expert_width, m, n_shared):
        r, a = routed(n_experts, m, n_shared), active(top_k, m, n_shared)
        return r, a, width(expert_width, m), combos(r, a)
    return wrong


SEGMENT = Exercise("fine_grained_segmentation", _segment_ref, _segment_cases, atol=0, rtol=0,
                   returns=("n_routed", "n_activated_routed", "expert_width", "n_combinations"), mistakes=[
    Mistake("shared kept among the routed", _segment(routed=lambda n, m, s: m * n),
            "the shared experts are still counted as routed: isolating K_s pieces takes them OUT of the m·N "
            "routed ones (m·N − K_s routed experts remain)"),
    Mistake("activated not reduced", _segment(active=lambda k, m, s: m * k),
            "the shared experts are always active, so the router picks only m·K − K_s routed experts "
            "(the activated width stays that of the K original experts)"),
    Mistake("shared not isolated", _segment(routed=lambda n, m, s: m * n, active=lambda k, m, s: m * k),
            "the shared experts are ignored: they are K_s of the m·N pieces, always active, so m·N − K_s are "
            "routed and m·K − K_s of them are chosen per token"),
    Mistake("activated not multiplied by m", _segment(active=lambda k, m, s: k - s),
            "each of the K original experts became m pieces, so m·K pieces are active (m·K − K_s routed): same "
            "FLOPs as before the split"),
    Mistake("width not divided", _segment(width=lambda h, m: h),
            "each piece is 1/m of an expert: its hidden width is expert_width // m"),
    Mistake("width multiplied", _segment(width=lambda h, m: h * m),
            "the pieces are smaller, not larger: the hidden width of one piece is expert_width // m"),
    Mistake("combinations with order", _segment(combos=math.perm),
            "that counts ordered choices (math.perm): a token's set of experts has no order, use math.comb"),
    Mistake("combinations over all experts",
            lambda n, k, h, m, s: (m * n - s, m * k - s, h // m, math.comb(m * n, m * k)),
            "the combinations count the shared experts too: they are always on, so only the choice of "
            "m·K − K_s among the m·N − K_s routed experts varies: comb(m·N − K_s, m·K − K_s)"),
])


def check_fine_grained_segmentation(fn: Callable) -> CheckResult:
    """Exercise 7.2: fn(n_experts, top_k, expert_width, m, n_shared) -> (routed experts, activated routed
    experts, width of one expert, number of distinct routed-expert sets a token can use)."""
    return SEGMENT.check(fn)
