"""Learner code for the lesson 06 checkers (top-k gating, the V3 gate): right answers written several ways, and
the classic wrong ones of REFERENCE.md §6 (bias in the weights, normalising before selection, renormalising V2's
softmax, forgetting route_scale, groups masked with 0, the wrong group score, an in-place sigmoid).

Every function here is plain torch written from scratch (never the package function a checker compares with),
the way a learner would write it in the exercise notebook.
"""

import torch


def top_k_gate(logits, k, score_func, route_scale, *, renorm="sigmoid", scale=True, before_select=False):
    """Top-k gating. renorm: "sigmoid" (right), "always", "never"; before_select: normalise the sigmoid scores
    over all experts instead of over the chosen ones."""
    x = logits.float()
    scores = x.softmax(dim=-1) if score_func == "softmax" else torch.sigmoid(x)  # (..., E)
    if before_select and score_func == "sigmoid":
        scores = scores / scores.sum(dim=-1, keepdim=True)
        renorm = "never"
    weights, indices = torch.topk(scores, k, dim=-1)  # (..., k) each, best first
    if renorm == "always" or (renorm == "sigmoid" and score_func == "sigmoid"):
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return (weights * route_scale if scale else weights), indices


def top_k_gate_flat(logits, k, score_func, route_scale):
    """Right, another way: flatten the leading dims, sort descending, reshape back."""
    lead, n_experts = logits.shape[:-1], logits.shape[-1]
    x = logits.reshape(-1, n_experts).float()
    scores = torch.softmax(x, -1) if score_func == "softmax" else 1 / (1 + torch.exp(-x))
    indices = scores.argsort(dim=-1, descending=True)[:, :k]
    weights = torch.gather(scores, 1, indices)
    if score_func == "sigmoid":
        weights = weights / weights.sum(1, keepdim=True)
    return (route_scale * weights).reshape(*lead, k), indices.reshape(*lead, k)


def top_k_gate_mask(logits, k, score_func, route_scale):
    """Right: keep the k chosen scores in a full (..., E) tensor first, then gather them."""
    x = logits.float()
    scores = x.softmax(-1) if score_func == "softmax" else x.sigmoid()
    indices = scores.topk(k, dim=-1).indices
    kept = torch.zeros_like(scores).scatter(-1, indices, scores.gather(-1, indices))  # 0 for the others
    if score_func == "sigmoid":
        kept = kept / kept.sum(-1, keepdim=True)
    return (kept * route_scale).gather(-1, indices), indices


def softmax_of_chosen_logits(logits, k, score_func, route_scale):
    """Softmax over only the k largest logits (for score_func "softmax"): the same as renormalising."""
    if score_func == "sigmoid":
        return top_k_gate(logits, k, score_func, route_scale)
    top, indices = logits.float().topk(k, dim=-1)
    return top.softmax(-1) * route_scale, indices


def sigmoid_in_place(logits, k, score_func, route_scale):
    """Right values, but `logits.sigmoid_()` overwrites the caller's tensor."""
    if score_func == "sigmoid":
        scores = logits.sigmoid_()
        weights, indices = scores.topk(k, dim=-1)
        return weights / weights.sum(-1, keepdim=True) * route_scale, indices
    return top_k_gate(logits, k, score_func, route_scale)


def v3_gate(logits, bias, k, n_groups, n_limited, route_scale, *, bias_in_weights=False, fill=float("-inf"),
            group="top2", groups_from="biased", renorm=True, scale=True, score="sigmoid"):
    """The V3 gate with switches for the classic mistakes (renorm: True, False or "all": over every expert)."""
    lead, n_experts = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, n_experts).float()
    scores = flat.sigmoid() if score == "sigmoid" else flat.softmax(-1)  # (N, E)
    if renorm == "all":
        scores = scores / scores.sum(-1, keepdim=True)
    biased = scores + bias  # for the choice only
    if n_groups > 1:
        ranked = (biased if groups_from == "biased" else scores).reshape(-1, n_groups, n_experts // n_groups)
        if group == "top2":
            group_scores = ranked.topk(2, dim=-1).values.sum(-1)
        elif group == "sum":
            group_scores = ranked.sum(-1)
        else:
            group_scores = ranked.max(dim=-1).values
        keep = group_scores.topk(n_limited, dim=-1).indices  # (N, M)
        mask = torch.zeros_like(group_scores).scatter(1, keep, 1.0)  # (N, G) 1 = kept
        mask = mask.repeat_interleave(n_experts // n_groups, dim=1)  # (N, E)
        if fill == 0.0:
            biased = biased * mask  # the old DeepSeek-V3 code's `scores * mask`
        else:
            biased = biased.masked_fill(mask == 0, fill)
    indices = biased.topk(k, dim=-1).indices
    weights = (scores + bias if bias_in_weights else scores).gather(1, indices)
    if renorm is True:
        weights = weights / weights.sum(-1, keepdim=True)
    if scale:
        weights = weights * route_scale
    return weights.reshape(*lead, k), indices.reshape(*lead, k)


def v3_gate_loop_over_groups(logits, bias, k, n_groups, n_limited, route_scale):
    """Right, another way: group scores from a Python loop over the groups, -inf via torch.where."""
    n_experts = logits.shape[-1]
    size = n_experts // n_groups
    scores = torch.sigmoid(logits.float())  # (..., E)
    biased = scores + bias
    if n_groups > 1:
        group_scores = torch.stack([biased[..., g * size:(g + 1) * size].topk(2, dim=-1).values.sum(-1)
                                    for g in range(n_groups)], dim=-1)  # (..., G)
        kept = torch.zeros_like(group_scores, dtype=torch.bool).scatter(
            -1, group_scores.topk(n_limited, dim=-1).indices, True)
        kept = kept.repeat_interleave(size, dim=-1)  # (..., E)
        biased = torch.where(kept, biased, torch.full_like(biased, float("-inf")))
    indices = biased.topk(k, dim=-1).indices
    chosen = scores.gather(-1, indices)
    return chosen / chosen.sum(-1, keepdim=True) * route_scale, indices


def bias_added_in_place(logits, bias, k, n_groups, n_limited, route_scale):
    """Right values, but `bias` is changed in place (then undone too late: the caller sees it changed)."""
    weights, indices = v3_gate(logits, bias, k, n_groups, n_limited, route_scale)
    bias.mul_(0.5)
    return weights, indices


def not_implemented(*args):
    raise NotImplementedError("Exercise 06: not implemented yet")


RIGHT = {"check_top_k_gate": top_k_gate, "check_v3_gate": v3_gate}

# (checker, right answer written another way, test id)
RIGHT_VARIANTS = [
    ("check_top_k_gate", top_k_gate_flat, "gate-flatten-argsort"),
    ("check_top_k_gate", top_k_gate_mask, "gate-full-mask"),
    ("check_v3_gate", v3_gate_loop_over_groups, "v3-loop-over-groups"),
]

# (checker, wrong implementation, words the message must contain, test id)
NAMED = [
    ("check_top_k_gate", lambda *a: top_k_gate(*a, renorm="always"), "softmax weights are renormalised",
     "gate-softmax-renormalised"),
    ("check_top_k_gate", softmax_of_chosen_logits, "softmax was taken over the k chosen logits",
     "gate-softmax-over-top-k-logits"),
    ("check_top_k_gate", lambda *a: top_k_gate(*a, renorm="never"), "sigmoid weights are not renormalised",
     "gate-sigmoid-not-renormalised"),
    ("check_top_k_gate", lambda *a: top_k_gate(*a, before_select=True), "normalising before selection",
     "gate-normalised-before-selection"),
    ("check_top_k_gate", lambda *a: top_k_gate(*a, scale=False), "forgot route_scale", "gate-no-route-scale"),
    ("check_top_k_gate", lambda lg, k, f, rs: top_k_gate(lg, k, f, 1.0) if f == "sigmoid" else
     top_k_gate(lg, k, f, rs), "before the sigmoid renormalisation", "gate-scale-cancelled"),
    ("check_top_k_gate", lambda lg, k, f, rs: top_k_gate(lg, k, "sigmoid" if f == "softmax" else "softmax", rs),
     "softmax and sigmoid are swapped", "gate-score-funcs-swapped"),
    ("check_v3_gate", lambda *a: v3_gate(*a, bias_in_weights=True), "bias leaked into the weights",
     "v3-bias-in-weights"),
    ("check_v3_gate", lambda *a: v3_gate(*a, fill=0.0), "masked with 0 instead of -inf", "v3-groups-masked-with-0"),
    ("check_v3_gate", lambda *a: v3_gate(*a, group="max"), "V2's max", "v3-group-score-max"),
    ("check_v3_gate", lambda *a: v3_gate(*a, groups_from="unbiased"), "ranked by the unbiased scores",
     "v3-group-score-unbiased"),
    ("check_v3_gate", lambda *a: v3_gate(*a, renorm=False), "not renormalised", "v3-not-renormalised"),
    ("check_v3_gate", lambda *a: v3_gate(*a, renorm="all"), "normalising before selection",
     "v3-normalised-over-all-experts"),
    ("check_v3_gate", lambda *a: v3_gate(*a, group="sum"), "sums every expert of the group", "v3-group-score-sum"),
    ("check_v3_gate", lambda *a: v3_gate(*a, score="softmax"), "elementwise sigmoid", "v3-softmax-scores"),
    ("check_v3_gate", lambda *a: v3_gate(*a, scale=False), "forgot route_scale", "v3-no-route-scale"),
    ("check_v3_gate", lambda lg, b, k, g, m, rs: v3_gate(lg, torch.zeros_like(b), k, g, m, rs), "bias is not used",
     "v3-bias-ignored"),
    ("check_v3_gate", lambda lg, b, k, g, m, rs: v3_gate(lg, b, k, 1, 1, rs), "no group-limited routing",
     "v3-no-group-limit"),
    ("check_v3_gate", bias_added_in_place, "changed its input `bias` in place", "v3-bias-changed-in-place"),
    ("check_top_k_gate", sigmoid_in_place, "changed its input `logits` in place", "gate-sigmoid-in-place"),
]
