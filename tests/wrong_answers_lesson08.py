"""Learner code for the lesson 08 checkers (expert-level balance loss, aux-loss-free bias update): right answers
written several ways, and the classic wrong ones of REFERENCE.md §6 (the f_i normalisation, gradient through f_i,
P_i from the top-k only, s' forgotten, the update's sign, the load instead of its sign, ties, in place).

Every function here is plain torch written from scratch (never the package function a checker compares with),
the way a learner would write it in the exercise notebook.
"""

import torch
import torch.nn.functional as F


def balance_loss(scores, indices, alpha, *, f_norm="right", p_from="all", renorm=True, detach_f=True):
    """α Σ_i f_i P_i for one sequence: scores (T, E), indices (T, K')."""
    t, e = scores.shape
    k = indices.shape[1]
    chosen = F.one_hot(indices, e).sum(1).float()  # (T, E) 1 where token t chose expert i
    if not detach_f:  # the straight-through trick: same value, but a gradient through the count
        chosen = chosen + scores - scores.detach()
    counts = chosen.sum(0)  # (E,)
    f = {"right": counts * e / (k * t), "T": counts / t, "KT": counts / (k * t), "none": counts}[f_norm]
    s = scores / scores.sum(-1, keepdim=True) if renorm else scores
    if p_from == "topk":
        s = s * chosen.detach()
    return alpha * (f * s.mean(0)).sum()


def balance_loss_loop(scores, indices, alpha):
    """Right, with explicit loops over experts (slow, but the formula letter by letter)."""
    t, e = scores.shape
    k = indices.shape[1]
    s_norm = scores / scores.sum(dim=1, keepdim=True)
    loss = scores.new_zeros(())
    for i in range(e):
        f_i = (indices == i).sum().item() * e / (k * t)  # a Python number: no gradient
        loss = loss + f_i * s_norm[:, i].mean()
    return alpha * loss


def balance_loss_bincount(scores, indices, alpha):
    """Right: counts with bincount, P with einsum."""
    t, e = scores.shape
    f = torch.bincount(indices.reshape(-1), minlength=e) * (e / (indices.shape[1] * t))
    p = torch.einsum("te->e", scores / scores.sum(-1, keepdim=True)) / t
    return alpha * torch.dot(f.to(p.dtype), p)


def bias_update(bias, counts, gamma):
    """Right: a new tensor b + γ·sign(mean load − load)."""
    load = counts.to(torch.float32)
    return bias + gamma * torch.sign(load.mean() - load)


def bias_update_where(bias, counts, gamma):
    """Right, written with two masks: overloaded down, underloaded up, at the mean unchanged."""
    load = counts.double()
    mean = load.mean()
    step = torch.zeros_like(bias)
    step[load > mean] = -gamma
    step[load < mean] = gamma
    return bias + step


def bias_update_in_place(bias, counts, gamma):  # right values, but the caller's bias is overwritten
    load = counts.float()
    bias += gamma * torch.sign(load.mean() - load)
    return bias


def bias_update_ties_up(bias, counts, gamma):  # an expert exactly at the mean moves up
    load = counts.float()
    return bias + torch.where(load > load.mean(), -gamma, gamma)


def not_implemented(*args):
    raise NotImplementedError("Exercise 08: not implemented yet")


RIGHT = {"check_expert_balance_loss": balance_loss, "check_bias_update": bias_update}

# (checker, right answer written another way, test id)
RIGHT_VARIANTS = [
    ("check_expert_balance_loss", balance_loss_loop, "balance-loss-loop"),
    ("check_expert_balance_loss", balance_loss_bincount, "balance-loss-bincount"),
    ("check_bias_update", bias_update_where, "bias-two-masks"),
]

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, f_norm="T"), "divided the counts by T only",
     "balance-f-over-T"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, f_norm="KT"), "forgot the factor N'",
     "balance-f-over-KT"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, f_norm="none"), "must be normalised",
     "balance-f-raw-counts"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, detach_f=False),
     "gradient also flows through f_i", "balance-gradient-through-f"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s.detach(), i, a), "no gradient reaches the scores",
     "balance-no-gradient"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, p_from="topk"), "not only where expert i",
     "balance-p-from-topk"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, a, renorm=False), "s' = s / Σ_j s_j",
     "balance-no-renormalisation"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, s.topk(i.shape[1], -1).indices, a),
     "not a top-k you recompute", "balance-topk-recomputed"),
    ("check_expert_balance_loss", lambda s, i, a: balance_loss(s, i, 1.0), "multiply by alpha", "balance-no-alpha"),
    ("check_bias_update", lambda b, c, g: bias_update(b, c, -g), "wrong sign", "bias-wrong-sign"),
    ("check_bias_update", lambda b, c, g: b + g * (c.float().mean() - c.float()), "not the error itself",
     "bias-load-not-sign"),
    ("check_bias_update", lambda b, c, g: b + g * (c.float().mean() - c.float()) / c.float().mean(),
     "relative to the mean load", "bias-relative-error"),
    ("check_bias_update", bias_update_ties_up, "must keep its bias (sign(0) = 0)", "bias-ties-move"),
    ("check_bias_update", bias_update_in_place, "changed its input `bias` in place", "bias-in-place"),
    ("check_bias_update", lambda b, c, g: g * torch.sign(c.float().mean() - c.float()), "returned the change only",
     "bias-delta-only"),
]
