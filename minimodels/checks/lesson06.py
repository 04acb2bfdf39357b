"""Checkers of exercises/06_dense_to_moe_exercises.ipynb: top-k gating (V2 softmax / V3 sigmoid) and the V3 gate.

Both references are the package's router (affinity_scores + route, router.py) on the flattened tokens, so a
learner's function is compared with the gate the course's MoE layers use. The cases change every size and
argument (leading dims, E, k, groups, limited groups, route_scale, score_func, bias), and the named mistakes are
those of REFERENCE.md §6 items 7-9: the bias leaking into the weights, normalising before selection (the sigmoid
scores over all experts) or renormalising where V2 does not, forgetting route_scale (or applying it where the
renormalisation cancels it), masking the dropped groups with 0 instead of -inf, the wrong group score (max vs
the sum of the top 2, biased vs unbiased), and the wrong score function. In-place edits of the inputs (e.g.
`logits.sigmoid_()`) are caught by the engine.
"""

# Shapes: N tokens (all leading dims flattened), E = routed experts, k = experts per token, G = expert groups,
# M = groups a token may use (n_limited)

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..router import affinity_scores, route
from .engine import CheckResult, Exercise, Mistake, build_cases, vary

_NEG = float("-inf")

# ---------------------------------------------------------------- shared pieces of the wrong variants


def _flat(logits: Tensor) -> Tensor:
    return logits.reshape(-1, logits.shape[-1])  # (..., E) -> (N, E)


def _back(logits: Tensor, weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    lead = logits.shape[:-1]
    return weights.reshape(*lead, -1), indices.reshape(*lead, -1)  # (N, k) -> (..., k)


def _scores(logits: Tensor, score_func: str) -> Tensor:
    return affinity_scores(_flat(logits), score_func)  # (N, E) fp32


def _dropped(ranked: Tensor, n_groups: int, n_limited: int, group_score: str) -> Tensor:
    """Which experts lie in a group the token does not keep, with a switchable group score: "top2" (V3, right),
    "max" (V2's) or "sum" (every expert of the group).  (N, E) -> (N, E) bool"""
    n, n_experts = ranked.shape
    if n_groups == 1:
        return torch.zeros(n, n_experts, dtype=torch.bool)
    grouped = ranked.view(n, n_groups, -1)  # (N, G, E/G)
    scores = {"max": lambda: grouped.amax(-1), "top2": lambda: grouped.topk(2, dim=-1).values.sum(-1),
              "sum": lambda: grouped.sum(-1)}[group_score]()  # (N, G)
    keep = scores.topk(n_limited, dim=-1).indices  # (N, M)
    dropped = torch.ones_like(scores, dtype=torch.bool).scatter(1, keep, False)  # (N, G)
    return dropped.repeat_interleave(n_experts // n_groups, dim=1)  # (N, E)


# ---------------------------------------------------------------- 6.1 top-k gating


def _top_k_ref(logits: Tensor, k: int, score_func: str, route_scale: float) -> tuple[Tensor, Tensor]:
    scores = _scores(logits, score_func)  # (N, E)
    weights, indices = route(scores, None, k, score_func=score_func, route_scale=route_scale)  # (N, k) each
    return _back(logits, weights, indices)


def _top_k_cases() -> list:
    sizes = vary(dict(lead=(6,), E=8, k=2, score_func="softmax", route_scale=1.0),
                 dict(score_func="sigmoid", route_scale=2.5), dict(score_func="sigmoid", lead=(2, 3), E=6, k=3),
                 dict(score_func="sigmoid", route_scale=16.0, k=4), dict(score_func="softmax", route_scale=16.0, k=6),
                 dict(score_func="sigmoid", lead=(), E=5, k=1),
                 lead=[(2, 5), (2, 2, 3), (7,)], E=[4, 16], k=[1, 3], score_func=["sigmoid"], route_scale=[2.5])

    def build(g, lead, E, k, score_func, route_scale):
        return torch.randn(*lead, E, generator=g) * 1.5, k, score_func, route_scale

    return build_cases(sizes, build, seed=600)


def _gating(*, norm: str = "chosen_if_sigmoid", scale_at: str = "end", swap: bool = False,
            raw_logits: bool = False, softmax_dim: int = -1) -> Callable:
    """Top-k gating with switchable mistakes.

    norm: "chosen_if_sigmoid" (right), "chosen" (always renormalise the k chosen), "none" (never), "all_if_sigmoid"
    (sigmoid scores divided by their sum over ALL experts before selection); scale_at: "end" (right), "none",
    "before_norm" (route_scale multiplies the scores before the renormalisation); swap: softmax <-> sigmoid;
    raw_logits: the weights are the chosen logits themselves; softmax_dim: the softmax's axis.
    """
    def wrong(logits, k, score_func, route_scale):
        func = {"softmax": "sigmoid", "sigmoid": "softmax"}[score_func] if swap else score_func
        flat = _flat(logits).float()
        scores = flat.softmax(dim=softmax_dim) if func == "softmax" else flat.sigmoid()  # (N, E)
        if norm == "all_if_sigmoid" and func == "sigmoid":
            scores = scores / scores.sum(-1, keepdim=True)  # normalised before the choice
        if scale_at == "before_norm":
            scores = scores * route_scale
        indices = scores.topk(k, dim=-1).indices  # (N, k)
        weights = (flat if raw_logits else scores).gather(1, indices)
        if norm == "chosen" or (norm == "chosen_if_sigmoid" and func == "sigmoid"):
            weights = weights / weights.sum(-1, keepdim=True)
        if scale_at == "end":
            weights = weights * route_scale
        return _back(logits, weights, indices)
    return wrong


_V2_NO_RENORM = ("V2 (softmax) keeps the chosen scores as they are, softmax over ALL experts then select; only V3 "
                 "(sigmoid) renormalises over the k chosen (DeepSeek-V2 Eq. 21 vs DeepSeek-V3 Eq. 13)")

TOP_K_GATE = Exercise("top_k_gate", _top_k_ref, _top_k_cases, returns=("weights", "indices"), mistakes=[
    Mistake("softmax renormalised", _gating(norm="chosen"),
            "the softmax weights are renormalised over the k chosen experts (or the softmax was taken over the k "
            "chosen logits only, which is the same): " + _V2_NO_RENORM),
    Mistake("sigmoid not renormalised", _gating(norm="none"),
            "the sigmoid weights are not renormalised: V3 divides the k chosen scores by their sum (then multiplies "
            "by route_scale), so each token's weights sum to route_scale"),
    Mistake("sigmoid normalised over all experts", _gating(norm="all_if_sigmoid"),
            "normalising before selection: the sigmoid scores were divided by their sum over ALL experts; V3 "
            "selects first, then divides the k chosen scores by THEIR sum"),
    Mistake("no route_scale", _gating(scale_at="none"),
            "forgot route_scale: multiply the final weights by it (V2 16, V3 2.5), so they sum to route_scale "
            "for sigmoid"),
    Mistake("route_scale before the renormalisation", _gating(scale_at="before_norm"),
            "route_scale is applied before the sigmoid renormalisation, where it cancels: multiply the weights "
            "by route_scale last, after dividing by their sum"),
    Mistake("score functions swapped", _gating(swap=True),
            "softmax and sigmoid are swapped: score_func 'softmax' (V2) is a softmax over the experts, 'sigmoid' "
            "(V3) an elementwise sigmoid"),
    Mistake("weights are logits", _gating(raw_logits=True),
            "the weights are the raw logits of the chosen experts: take them from the affinity scores "
            "(softmax or sigmoid of the logits)"),
    Mistake("softmax over the tokens", _gating(softmax_dim=0),
            "the softmax runs over the wrong axis: normalise over the experts (the last axis), per token"),
])


def check_top_k_gate(fn: Callable) -> CheckResult:
    """Exercise 6.1: fn(logits (..., E), k, score_func, route_scale) -> weights (..., k) fp32, indices (..., k)."""
    return TOP_K_GATE.check(fn)


# ---------------------------------------------------------------- 6.2 the V3 gate


def _v3_ref(logits: Tensor, bias: Tensor, k: int, n_groups: int, n_limited: int,
            route_scale: float) -> tuple[Tensor, Tensor]:
    scores = _scores(logits, "sigmoid")  # (N, E)
    weights, indices = route(scores, bias, k, n_groups=n_groups, n_limited=n_limited, score_func="sigmoid",
                             route_scale=route_scale)
    return _back(logits, weights, indices)


def _v3_cases() -> list:
    sizes = vary(dict(lead=(8,), E=8, k=2, G=4, M=2, route_scale=2.5, bias_std=0.6, bias_shift=0.0),
                 dict(E=16, G=4, M=2, k=4), dict(E=12, G=3, M=1, k=3),  # 4 and 4 experts per group: sum != top-2
                 dict(E=32, G=8, M=4, k=8, lead=(2, 6)),  # V3's shape in miniature: 8 groups, 4 kept, top-8
                 dict(E=16, G=2, M=1, k=2, bias_std=1.2), dict(G=1, M=1, k=3),  # no groups
                 dict(E=12, G=4, M=4, k=3),  # every group kept
                 dict(E=16, G=4, M=2, k=5, bias_shift=-1.0),  # biased scores below 0: a 0 mask picks wrong
                 dict(bias_shift=-0.8, bias_std=0.3),
                 lead=[(3, 4), (2, 2, 3)], E=[16], k=[3], G=[2], M=[1, 3], route_scale=[1.0, 16.0],
                 bias_std=[0.0, 1.5])

    def build(g, lead, E, k, G, M, route_scale, bias_std, bias_shift):
        logits = torch.randn(*lead, E, generator=g) * 1.5
        return logits, torch.randn(E, generator=g) * bias_std + bias_shift, k, G, M, route_scale

    return build_cases(sizes, build, seed=700)


def _v3(*, bias_in_weights: bool = False, bias_in_choice: bool = True, group_score: str = "top2",
        group_from_biased: bool = True, fill: float = _NEG, groups: bool = True, norm: str = "chosen",
        scale: bool = True, score_func: str = "sigmoid") -> Callable:
    """The V3 gate with switchable mistakes (see the Mistake list below)."""
    def wrong(logits, bias, k, n_groups, n_limited, route_scale):
        flat = _flat(logits).float()
        scores = flat.softmax(-1) if score_func == "softmax" else flat.sigmoid()  # (N, E)
        if norm == "all":
            scores = scores / scores.sum(-1, keepdim=True)  # normalised before the choice
        choice = scores + bias if bias_in_choice else scores
        if groups:
            dropped = _dropped(choice if group_from_biased else scores, n_groups, n_limited, group_score)
            choice = choice.masked_fill(dropped, fill)  # (N, E)
        indices = choice.topk(k, dim=-1).indices  # (N, k)
        weights = (scores + bias if bias_in_weights else scores).gather(1, indices)
        if norm == "chosen":
            weights = weights / weights.sum(-1, keepdim=True)
        return _back(logits, weights * route_scale if scale else weights, indices)
    return wrong


V3_GATE = Exercise("v3_gate", _v3_ref, _v3_cases, returns=("weights", "indices"), mistakes=[
    Mistake("bias in the weights", _v3(bias_in_weights=True),
            "the bias leaked into the weights: it steers the choice only; gather the UNBIASED sigmoid scores of "
            "the chosen experts (DeepSeek-V3 §2.1.2: the gating value is still derived from s_{i,t})"),
    Mistake("bias ignored", _v3(bias_in_choice=False),
            "the bias is not used: add it to the scores before choosing the groups and the top-k experts (and "
            "only there)"),
    Mistake("groups masked with 0", _v3(fill=0.0),  # the old code's `scores * mask`
            "the dropped groups are masked with 0 instead of -inf: biased scores can be below 0, so a masked "
            "expert (0) beats a kept one (the official V3 code had this bug until Feb 2025); use "
            "masked_fill(..., float('-inf'))"),
    Mistake("group score max", _v3(group_score="max"),
            "the group score is the group's best expert (V2's max): V3 ranks the groups by the sum of their top-2 "
            "biased scores"),
    Mistake("group score sum", _v3(group_score="sum"),
            "the group score sums every expert of the group: V3 sums only the top 2 biased scores per group"),
    Mistake("group score unbiased", _v3(group_from_biased=False),
            "the groups are ranked by the unbiased scores: V3's group score is the sum of the top-2 BIASED scores "
            "(s + b), like the top-k choice"),
    Mistake("no group limit", _v3(groups=False),
            "no group-limited routing: first keep each token's n_limited groups with the largest top-2 sums, "
            "then pick the top-k among their experts"),
    Mistake("not renormalised", _v3(norm="none"),
            "the weights are not renormalised: V3 divides the k chosen unbiased scores by their sum"),
    Mistake("normalised over all experts", _v3(norm="all"),
            "normalising before selection: the sigmoid scores were divided by their sum over ALL experts; select "
            "first, then divide the k chosen scores by their sum"),
    Mistake("no route_scale", _v3(scale=False),
            "forgot route_scale (or applied it before the renormalisation, where it cancels): multiply the "
            "normalised weights by route_scale last, so they sum to route_scale (2.5 in V3)"),
    Mistake("softmax", _v3(score_func="softmax"),
            "softmax scores: V3's affinities are an elementwise sigmoid of the logits"),
])


def check_v3_gate(fn: Callable) -> CheckResult:
    """Exercise 6.2: fn(logits (..., E), bias (E,), k, n_groups, n_limited, route_scale) -> weights, indices."""
    return V3_GATE.check(fn)
