"""Checkers of exercises/08_load_balancing_exercises.ipynb: the expert-level balance loss and V3's bias update.

8.1 `expert_balance_loss(scores, indices, alpha)` for one sequence: scores (T, E) with every expert's affinity,
indices (T, K') the chosen experts, alpha -> the scalar α Σ_i f_i P_i. The check runs the learner's function on
scores that require grad and compares the loss AND its gradient with respect to the scores with the package's
(balance.expert_balance_loss), so a loss whose value is right but whose gradient also flows through the count
f_i, or never reaches the scores through P_i, is caught. Cases: softmax scores (V2), sigmoid scores chosen with a
bias (V3: the indices are not the top-k of the scores, and s' = s / Σ_j s_j matters), uniform routing (loss = α),
K' = 1 and K' = E, one token.
8.2 `bias_update(bias, counts, gamma)` -> a NEW bias tensor b + γ·sign(mean(c) − c); the input bias must be left
as it is (the package's balance.bias_step works in place on the router's buffer; the exercise returns a new
tensor so the caller decides). Cases: integer and float counts, ties with the mean, all-equal loads.
The mistakes named are REFERENCE.md §6 items 9, 10 and 12.
"""

# Shapes: T tokens of one sequence, E = N' routed experts, K' = experts chosen per token

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from ..balance import bias_step, expert_balance_loss
from .engine import CheckResult, Exercise, Mistake, build_cases, vary

# ---------------------------------------------------------------- 8.1 the expert-level balance loss

GRADIENT = "the gradient of your loss with respect to scores (the check computes it)"


def with_gradient(fn: Callable) -> Callable:
    """fn(scores, indices, alpha) -> loss, turned into a call that returns (loss, d loss / d scores).

    The scores are handed over as a leaf that requires grad, as the router's scores are during training. A loss
    with no gradient gives a zero gradient; None, and errors, pass through for the engine to report.
    """
    @functools.wraps(fn)
    def run(scores: Tensor, indices: Tensor, alpha: float):
        leaf = scores.detach().clone().requires_grad_(True)
        loss = fn(leaf, indices, alpha)
        if not torch.equal(leaf.detach(), scores):  # an in-place edit: let the engine see it on `scores`
            scores.copy_(leaf.detach())
        if loss is None:
            return None
        if isinstance(loss, Tensor) and loss.requires_grad and loss.numel() == 1:
            (grad,) = torch.autograd.grad(loss.sum(), leaf, allow_unused=True)
            grad = torch.zeros_like(leaf) if grad is None else grad
        else:
            grad = torch.zeros_like(leaf)
        return (loss.detach() if isinstance(loss, Tensor) else loss), grad
    return run


def _loss_ref(scores: Tensor, indices: Tensor, alpha: float) -> Tensor:
    return expert_balance_loss(scores[None], indices[None], alpha)  # the package's, one sequence


def _uniform(g: torch.Generator, T: int, E: int, K: int) -> tuple[Tensor, Tensor]:
    """Every expert chosen equally often (T·K a multiple of E) and equal scores 1/E: the loss is exactly α."""
    slots = torch.arange(T * K) % E
    return torch.full((T, E), 1.0 / E), slots.view(T, K)


def _loss_cases() -> list:
    sizes = vary(dict(T=12, E=8, K=2, alpha=0.01, kind="softmax"),
                 dict(kind="sigmoid", E=16, K=4, T=20, alpha=1e-4),  # V3: sigmoid, bias-chosen, α = 1e-4
                 dict(kind="uniform", T=6, E=4, K=2, alpha=0.003),  # uniform routing: the loss is α
                 dict(kind="uniform", T=8, E=8, K=3, alpha=1.0),
                 dict(K=8),  # every expert chosen by every token: f_i = 1 for all i
                 T=[1, 5, 33], E=[4, 16], K=[1, 3], alpha=[1e-4, 0.003, 1.0], kind=["sigmoid"])

    def build(g, T, E, K, alpha, kind):
        if kind == "uniform":
            scores, indices = _uniform(g, T, E, K)
            return scores, indices, alpha
        logits = torch.randn(T, E, generator=g) * 1.5
        if kind == "softmax":
            scores = logits.softmax(-1)
            return scores, scores.topk(K, dim=-1).indices, alpha
        scores = logits.sigmoid()
        bias = torch.randn(E, generator=g) * 0.3  # V3's bias steers the choice: not the top-k of the scores
        return scores, (scores + bias).topk(K, dim=-1).indices, alpha

    return build_cases(sizes, build, seed=800)


def _counts(indices: Tensor, n_experts: int) -> Tensor:
    return torch.bincount(indices.flatten(), minlength=n_experts).float()  # (E,) no gradient


def _loss(f_of: Callable | None = None, p_of: Callable | None = None, combine: Callable | None = None) -> Callable:
    """The loss with one piece switched: f_of(scores, indices) -> (E,), p_of(scores, indices) -> (E,),
    combine(f, p, alpha) -> scalar."""
    def f_right(scores, indices):
        t, k = indices.shape
        return _counts(indices, scores.shape[-1]) * scores.shape[-1] / (k * t)

    def p_right(scores, indices):
        return (scores / scores.sum(-1, keepdim=True)).mean(0)

    def wrong(scores, indices, alpha):
        f = (f_of or f_right)(scores, indices)
        p = (p_of or p_right)(scores, indices)
        return combine(f, p, alpha) if combine else alpha * (f * p).sum()
    return wrong


def _chosen(scores: Tensor, indices: Tensor) -> Tensor:
    return torch.zeros_like(scores).scatter(1, indices, 1.0)  # (T, E) 1 where chosen


def _straight_through(scores: Tensor, indices: Tensor) -> Tensor:
    """f with a gradient: the chosen mask made differentiable (mask + s − s.detach() has the mask's value)."""
    t, k = indices.shape
    mask = _chosen(scores, indices) + scores - scores.detach()
    return mask.sum(0) * scores.shape[-1] / (k * t)


def _topk_again(scores: Tensor, indices: Tensor) -> Tensor:
    t, k = indices.shape
    return _counts(scores.topk(k, dim=-1).indices, scores.shape[-1]) * scores.shape[-1] / (k * t)


def _p_topk(scores: Tensor, indices: Tensor) -> Tensor:
    return (scores / scores.sum(-1, keepdim=True) * _chosen(scores, indices)).mean(0)


def _p_gate(scores: Tensor, indices: Tensor) -> Tensor:
    """P from the gate values: the chosen scores renormalised among themselves, zero elsewhere."""
    picked = scores.gather(1, indices)
    gates = torch.zeros_like(scores).scatter(1, indices, picked / picked.sum(-1, keepdim=True))
    return gates.mean(0)


_F_RULE = "f_i = N'/(K'·T) · (tokens choosing expert i), so that uniform routing gives f_i = 1 and the loss α"

BALANCE_LOSS = Exercise("expert_balance_loss", with_gradient(_loss_ref), _loss_cases,
                        returns=("loss", GRADIENT), atol=1e-9, rtol=1e-4, mistakes=[
    Mistake("f = count / T", with_gradient(_loss(f_of=lambda s, i: _counts(i, s.shape[-1]) / i.shape[0])),
            "wrong f_i normalisation: you divided the counts by T only (the N'/K' factor is missing); "
            + _F_RULE),
    Mistake("f = count / (K'T)", with_gradient(_loss(
        f_of=lambda s, i: _counts(i, s.shape[-1]) / (i.shape[0] * i.shape[1]))),
            "wrong f_i normalisation: you divided by K'·T (the fraction of all choices) but forgot the factor N' "
            "(or you averaged f_i·P_i over the experts: sum it); " + _F_RULE),
    Mistake("f = N' count / T", with_gradient(_loss(
        f_of=lambda s, i: _counts(i, s.shape[-1]) * s.shape[-1] / i.shape[0])),
            "wrong f_i normalisation: the division by K' is missing (each token makes K' choices); " + _F_RULE),
    Mistake("f = count", with_gradient(_loss(f_of=lambda s, i: _counts(i, s.shape[-1]))),
            "f_i must be normalised: the raw counts grow with T and K'; " + _F_RULE),
    Mistake("f recomputed", with_gradient(_loss(f_of=_topk_again)),
            "f_i must count the experts in `indices` (the ones actually chosen, e.g. with V3's bias), not a "
            "top-k you recompute from the scores"),
    Mistake("gradient through f", with_gradient(_loss(f_of=_straight_through)),
            "the value is right but the gradient also flows through f_i: f_i is a count and must carry no "
            "gradient (build it from `indices`, or .detach() it); only P_i passes gradient to the router"),
    Mistake("P detached", with_gradient(_loss(p_of=lambda s, i: (s / s.sum(-1, keepdim=True)).mean(0).detach())),
            "the value is right but no gradient reaches the scores: P_i must keep its gradient (do not detach "
            "the scores or call .item()): it is how the loss pushes the router"),
    Mistake("P from top-k", with_gradient(_loss(p_of=_p_topk)),
            "P_i must average the scores of ALL tokens for expert i, not only where expert i was chosen (the "
            "top-k scores)"),
    Mistake("P from gate values", with_gradient(_loss(p_of=_p_gate)),
            "P_i must average every expert's (renormalised) score s'_{i,t}, not the top-k gate values"),
    Mistake("no s'", with_gradient(_loss(p_of=lambda s, i: s.mean(0))),
            "P_i must use s' = s / Σ_j s_j (scores renormalised over all experts): sigmoid scores (V3) do not sum "
            "to 1 (softmax scores do, which is why the softmax cases pass)"),
    Mistake("P summed", with_gradient(_loss(p_of=lambda s, i: (s / s.sum(-1, keepdim=True)).sum(0))),
            "P_i is the MEAN of the scores over the T tokens, not their sum"),
    Mistake("no alpha", with_gradient(_loss(combine=lambda f, p, alpha: (f * p).sum())),
            "multiply by alpha: the loss is α Σ f_i P_i"),
])


def check_expert_balance_loss(fn: Callable) -> CheckResult:
    """Exercise 8.1: fn(scores (T, E), indices (T, K'), alpha) -> α Σ f_i P_i; the value and its gradient."""
    return BALANCE_LOSS.check(with_gradient(fn))


# ---------------------------------------------------------------- 8.2 the aux-loss-free bias update


def _bias_ref(bias: Tensor, counts: Tensor, gamma: float) -> Tensor:
    return bias_step(bias.clone(), counts, gamma)  # the package's update, on a copy: the input stays as it is


def _bias_cases() -> list:
    sizes = vary(dict(E=8, gamma=1e-3, kind="random"),
                 dict(E=4, gamma=0.1, kind="equal"), dict(E=16, gamma=0.01, kind="ties"),
                 E=[4, 16, 64], gamma=[0.01, 0.1], kind=["ties", "equal", "float"])

    def build(g, E, gamma, kind):
        bias = torch.randn(E, generator=g) * 0.05
        counts = torch.randint(0, 50, (E,), generator=g)
        if kind == "equal":  # a perfectly balanced step: no bias moves
            counts = torch.full((E,), 7)
        elif kind == "ties":  # half the experts exactly at the mean load
            half = E // 2
            counts = torch.cat([torch.full((half,), 10), 10 + torch.arange(E - half) - (E - half - 1) / 2])
            counts = counts.round().long()
            counts[-1] += 10 * E - int(counts.sum())  # the mean is exactly 10
        elif kind == "float":
            counts = counts.float()
        return bias, counts, gamma

    return build_cases(sizes, build, seed=820)


def _mean_error(bias: Tensor, counts: Tensor) -> Tensor:
    counts = counts.float()
    return counts.mean() - counts


BIAS_UPDATE = Exercise("bias_update", _bias_ref, _bias_cases, atol=1e-7, rtol=1e-5, mistakes=[
    Mistake("wrong sign", lambda b, c, gamma: b - gamma * torch.sign(_mean_error(b, c)),
            "wrong sign: an overloaded expert (load above the mean) must get a LOWER bias, so it is chosen less: "
            "b_i + γ·sign(mean load − load_i)"),
    Mistake("load, not sign", lambda b, c, gamma: b + gamma * _mean_error(b, c),
            "use the sign of the error, not the error itself: every bias moves by exactly ±γ (or 0), whatever "
            "the size of the imbalance"),
    Mistake("relative error", lambda b, c, gamma: b + gamma * _mean_error(b, c) / c.float().mean(),
            "use sign(mean load − load_i), not the error relative to the mean load: every bias moves by exactly "
            "±γ (or 0)"),
    Mistake("ties move", lambda b, c, gamma: b + torch.where(_mean_error(b, c) < 0, -gamma, gamma),
            "an expert exactly at the mean load must keep its bias (sign(0) = 0); yours moves it (so all-equal "
            "loads change every bias)"),
    Mistake("no gamma", lambda b, c, gamma: b + torch.sign(_mean_error(b, c)),
            "multiply the sign by gamma: the step is γ (V3: 0.001), not 1"),
    Mistake("delta only", lambda b, c, gamma: gamma * torch.sign(_mean_error(b, c)),
            "you returned the change only: return the new bias, b + γ·sign(mean load − load)"),
])


def check_bias_update(fn: Callable) -> CheckResult:
    """Exercise 8.2: fn(bias (E,), counts (E,), gamma) -> a new bias (E,); the input bias is left unchanged."""
    return BIAS_UPDATE.check(fn)
