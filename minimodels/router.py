"""The DeepSeekMoE router (DeepSeek's `Gate`): which experts each token uses, and with what weights.

Two recipes, chosen by `cfg.score_func`, step by step as DeepSeek-V2 §2.2 and DeepSeek-V3 §2.1.2 describe them:
- V2 ("softmax"): s = softmax(u·e_i) over the N_r routed experts; group-limited routing keeps the M groups
  ("devices") whose best expert scores highest; top-K_r; the weights are the chosen s, NOT renormalised.
- V3 ("sigmoid"): s = sigmoid(u·e_i); a per-expert bias b_i (aux-loss-free balancing) is added for the choice
  only; the M groups ("nodes") with the largest sum of their top-2 biased scores are kept; top-K_r; the weights
  are the chosen UNBIASED s, renormalised to sum to 1.
Both multiply the weights by `route_scale` (V2 16, V2-Lite 1, V3 2.5). Groups that are not kept are masked with
-inf, never 0: biased scores can be negative, and a 0 would then beat them. Scores are computed in fp32.
Taught in lessons/06_dense_to_moe.ipynb (top-k routing, V2 vs V3, groups, the bias for selection only);
how the bias is updated is lesson 08 (lessons/08_load_balancing.ipynb, balance.py).
"""

# Shapes: N tokens (batch × time, flattened), D = dim, E = n_routed_experts (N_r), k = n_activated_experts (K_r),
# G = n_expert_groups, M = n_limited_groups

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORE_FUNCS = ("softmax", "sigmoid")  # DeepSeek-V2 / DeepSeek-V3


def affinity_scores(logits: Tensor, score_func: str) -> Tensor:
    """Token-to-expert affinities s_{i,t} in fp32: softmax over the experts (V2) or an elementwise sigmoid (V3).
    (N, E) -> (N, E)"""
    if score_func == "softmax":
        return logits.float().softmax(dim=-1)
    if score_func == "sigmoid":
        return logits.float().sigmoid()
    raise ValueError(f"score_func={score_func!r} is not known; choose one of {SCORE_FUNCS}")


def limit_groups(choice: Tensor, n_groups: int, n_limited: int, group_score: str) -> Tensor:
    """Keep each token's `n_limited` best expert groups, mask the other groups' experts with -inf.

    group_score "max": a group scores its best expert (V2's device-limited routing);
    "top2": the sum of its two best experts (V3's node-limited routing, K_r / M = 8 / 4 = 2).
    (N, E) -> (N, E)
    """
    if n_groups == 1:
        return choice
    n = choice.shape[0]
    grouped = choice.view(n, n_groups, -1)  # (N, G, E/G)
    if group_score == "max":
        scores = grouped.amax(dim=-1)  # (N, G)
    elif group_score == "top2":
        scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
    else:
        raise ValueError(f"group_score={group_score!r} must be 'max' (V2) or 'top2' (V3)")
    keep = scores.topk(n_limited, dim=-1).indices  # (N, M)
    dropped = torch.ones_like(scores, dtype=torch.bool).scatter_(1, keep, False)  # (N, G)
    return grouped.masked_fill(dropped.unsqueeze(-1), float("-inf")).flatten(1)  # -inf, never 0


def route(scores: Tensor, bias: Tensor | None, k: int, *, n_groups: int = 1, n_limited: int = 1,
          score_func: str = "softmax", route_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """From affinities to (weights, indices) of the k chosen experts, DeepSeek's Gate steps 2-7.

    The bias (if any) steers the choice only; the weights come from the unbiased scores, are renormalised for
    sigmoid (V3) and not for softmax (V2), then multiplied by route_scale.
    (N, E) -> (N, k) fp32 weights, (N, k) long indices
    """
    choice = scores if bias is None else scores + bias  # (N, E): used to choose, never as a weight
    group_score = "max" if score_func == "softmax" else "top2"
    choice = limit_groups(choice, n_groups, n_limited, group_score)
    indices = choice.topk(k, dim=-1).indices  # (N, k)
    weights = scores.gather(1, indices)  # (N, k) unbiased s_{i,t}
    if score_func == "sigmoid":
        weights = weights / weights.sum(dim=-1, keepdim=True)  # V3: normalise among the chosen
    return weights * route_scale, indices


class Gate(nn.Module):
    """DeepSeek's Gate: the router weight (one centroid e_i per routed expert) and the V3 bias.
    (N, D) -> weights (N, k), indices (N, k), scores (N, E)"""

    def __init__(self, cfg):
        super().__init__()
        self.n_activated_experts, self.score_func, self.route_scale = (
            cfg.n_activated_experts, cfg.score_func, cfg.route_scale)
        self.n_expert_groups, self.n_limited_groups = cfg.n_expert_groups, cfg.n_limited_groups
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim))  # rows e_i: (E, D)
        nn.init.normal_(self.weight, std=cfg.init_std)
        # b_i of aux-loss-free balancing: a buffer (saved in checkpoints, moved by .to(), never seen by the
        # optimizer), changed only by balance.update_router_bias; all zeros leave the choice unchanged
        self.register_buffer("bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(x.device.type, enabled=False):  # router logits in fp32, even under bf16 autocast
            logits = F.linear(x.float(), self.weight.float())  # (N, E)
        scores = affinity_scores(logits, self.score_func)  # (N, E)
        weights, indices = route(scores, self.bias, self.n_activated_experts, n_groups=self.n_expert_groups,
                                 n_limited=self.n_limited_groups, score_func=self.score_func,
                                 route_scale=self.route_scale)
        return weights.to(x.dtype), indices, scores


__all__ = ["affinity_scores", "Gate", "limit_groups", "route", "SCORE_FUNCS"]
