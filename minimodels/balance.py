"""Load balancing for DeepSeekMoE: the auxiliary losses, the aux-loss-free bias, and routing statistics.

Losses, all of the form α Σ f·P with f a count (no gradient: it is not differentiable) and P a mean of router
scores (the gradient reaches the router weight through P only):
- expert-level (DeepSeekMoE §3.3, V2 Eq. 23-25): f_i = N_r/(K_r T) · #tokens choosing i, P_i = mean_t s'_{i,t};
  uniform routing gives f_i = 1 and the loss α1.
- device-level (V2 Eq. 26-28), experts grouped into D devices (our expert groups): f'_d = MEAN of f over the
  device's experts, P'_d = SUM of its P_i.
- communication (V2 Eq. 29-31): f''_d = D/(M T) · #tokens sent to device d (M = n_limited_groups), P''_d = P'_d.
- V3's sequence-wise loss (V3 Eq. 17-20) is the expert-level loss with sigmoid scores renormalised over all
  experts, s' = s / Σ_j s_j (softmax scores already sum to 1, so s' = s there). f counts the experts actually
  chosen (with V3's bias, if any); the paper's indicator names the unbiased top-k, a detail it leaves open.
T is the tokens of one sequence and the loss is averaged over sequences (`aux_loss_scope="sequence"`, as the
papers); `"batch"` treats the whole batch as one sequence (the batch-wise variant of V3 §4.5.3).
The aux-loss-free bias (V3 §2.1.2, Wang et al. 2024): after each optimizer step, b_i ← b_i + γ·sign(c̄ − c_i)
from the whole batch's counts c, outside autograd: an overloaded expert's bias falls.
Routing statistics: load per expert, MaxVio = max load / mean load − 1 (V3 §4.5.3), dead experts (no token),
the entropy of the load distribution and the mean entropy of each token's router distribution.
Taught in lessons/08_load_balancing.ipynb (and used by train.py for any model with MoE layers).
"""

# Shapes: S sequences (B, or 1 for the batch scope), T tokens per sequence, E = n_routed_experts (N_r),
# k = n_activated_experts (K_r), G = n_expert_groups (devices D), M = n_limited_groups

from __future__ import annotations

import torch
from torch import Tensor, nn

AUX_LOSS_SCOPES = ("sequence", "batch")


def choice_counts(indices: Tensor, n_experts: int) -> Tensor:
    """How many tokens of each sequence chose each expert.  (S, T, k) -> (S, E) float, no gradient"""
    s = indices.shape[0]
    ones = torch.ones(indices[..., 0].numel() * indices.shape[-1], device=indices.device).view(s, -1)
    return torch.zeros(s, n_experts, device=indices.device).scatter_add_(1, indices.reshape(s, -1), ones)


def expert_fraction(indices: Tensor, n_experts: int) -> Tensor:
    """f_i = N_r / (K_r T) · #tokens choosing expert i, per sequence: 1 everywhere under uniform routing.
    (S, T, k) -> (S, E)"""
    t, k = indices.shape[1], indices.shape[2]
    return choice_counts(indices, n_experts) * n_experts / (k * t)


def mean_probs(scores: Tensor) -> Tensor:
    """P_i = mean over the sequence of s'_{i,t}, the scores renormalised over ALL experts (V3's s').
    (S, T, E) -> (S, E)"""
    return (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=1)


def expert_balance_loss(scores: Tensor, indices: Tensor, alpha: float) -> Tensor:
    """α1 Σ_i f_i P_i, averaged over sequences.  scores (S, T, E), indices (S, T, k) -> scalar"""
    f = expert_fraction(indices, scores.shape[-1])  # (S, E), no gradient
    return alpha * (f * mean_probs(scores)).sum(dim=-1).mean()


def device_balance_loss(scores: Tensor, indices: Tensor, n_groups: int, alpha: float) -> Tensor:
    """α2 Σ_d f'_d P'_d with f'_d the mean of f over device d's experts and P'_d the sum of their P.
    scores (S, T, E), indices (S, T, k) -> scalar"""
    s, e = scores.shape[0], scores.shape[-1]
    f = expert_fraction(indices, e).view(s, n_groups, -1).mean(dim=-1)  # (S, G)
    p = mean_probs(scores).view(s, n_groups, -1).sum(dim=-1)  # (S, G)
    return alpha * (f * p).sum(dim=-1).mean()


def comm_balance_loss(scores: Tensor, indices: Tensor, n_groups: int, n_limited: int, alpha: float) -> Tensor:
    """α3 Σ_d f''_d P''_d with f''_d = D/(M T) · #tokens sent to device d (a token is sent to a device once,
    however many of its experts live there) and P''_d the sum of the device's P.
    scores (S, T, E), indices (S, T, k) -> scalar"""
    s, t, e = scores.shape
    device = indices // (e // n_groups)  # (S, T, k) the device of each chosen expert
    sent = torch.zeros(s, t, n_groups, device=indices.device).scatter_(2, device, 1.0)  # (S, T, G) 0/1
    f = sent.sum(dim=1) * n_groups / (n_limited * t)  # (S, G)
    p = mean_probs(scores).view(s, n_groups, -1).sum(dim=-1)  # (S, G)
    return alpha * (f * p).sum(dim=-1).mean()


def balance_losses(scores: Tensor, indices: Tensor, cfg) -> Tensor | None:
    """The sum of the balance losses `cfg` switches on (alphas > 0), or None if none is.
    scores (B, T, E), indices (B, T, k) -> scalar or None"""
    alphas = (cfg.aux_loss_alpha, cfg.device_loss_alpha, cfg.comm_loss_alpha)
    if not any(alphas):
        return None
    if cfg.aux_loss_scope == "batch":  # the whole batch as one sequence
        scores, indices = scores.reshape(1, -1, scores.shape[-1]), indices.reshape(1, -1, indices.shape[-1])
    loss = scores.new_zeros(())
    if cfg.aux_loss_alpha:
        loss = loss + expert_balance_loss(scores, indices, cfg.aux_loss_alpha)
    if cfg.device_loss_alpha:
        loss = loss + device_balance_loss(scores, indices, cfg.n_expert_groups, cfg.device_loss_alpha)
    if cfg.comm_loss_alpha:
        loss = loss + comm_balance_loss(scores, indices, cfg.n_expert_groups, cfg.n_limited_groups,
                                        cfg.comm_loss_alpha)
    return loss


@torch.no_grad()
def bias_step(bias: Tensor, counts: Tensor, gamma: float) -> Tensor:
    """b_i ← b_i + γ·sign(c̄ − c_i) in place: overloaded experts (c_i > c̄) become less likely to be chosen.
    bias (E,), counts (E,) -> bias"""
    counts = counts.float()
    return bias.add_(gamma * torch.sign(counts.mean() - counts))


# --- model-level helpers for train() and the lessons -------------------------------------------------------


def moe_layers(model: nn.Module) -> list[nn.Module]:
    """The MoE feed-forward layers of `model`, in layer order (empty for a dense model)."""
    from .moe import MoE  # moe.py imports this module

    return [m for m in model.modules() if isinstance(m, MoE)]


def balance_loss(model: nn.Module) -> Tensor | None:
    """The sum over layers of the balance losses of the last training forward, or None (dense model, or no
    loss switched on). train() adds it to the language-model loss."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    return torch.stack(losses).sum() if losses else None


def update_router_bias(model: nn.Module) -> bool:
    """Apply the aux-loss-free bias update to every MoE layer with bias_update_speed γ > 0, from the counts of
    the last training forward (the whole batch). Call once per step, after the optimizer step. True if any
    layer was updated."""
    updated = False
    for m in moe_layers(model):
        if m.cfg.bias_update_speed > 0 and m.counts is not None:
            bias_step(m.gate.bias, m.counts, m.cfg.bias_update_speed)
            updated = True
    return updated


def max_violation(counts: Tensor) -> Tensor:
    """MaxVio = max_i load_i / mean load − 1 (0 when perfectly balanced).  (..., E) -> (...)"""
    counts = counts.float()
    return counts.amax(dim=-1) / counts.mean(dim=-1) - 1


def load_entropy(counts: Tensor) -> Tensor:
    """Entropy (nats) of the share of tokens each expert got: ln E when balanced, 0 when one expert takes all.
    (..., E) -> (...)"""
    p = counts.float() / counts.float().sum(dim=-1, keepdim=True)
    return -(p * p.clamp_min(1e-30).log()).sum(dim=-1)


def router_entropy(scores: Tensor) -> Tensor:
    """Mean over tokens of the entropy (nats) of each token's renormalised router scores: how sure the router is.
    (N, E) -> scalar"""
    p = scores / scores.sum(dim=-1, keepdim=True)
    return -(p * p.clamp_min(1e-30).log()).sum(dim=-1).mean()


@torch.no_grad()
def routing_stats(model: nn.Module) -> dict | None:
    """Per MoE layer, from the last training forward: load per expert, MaxVio, dead experts, load and router
    entropies, and the router bias. None for a model without MoE layers (or before its first training step).
    One device-to-host transfer for all layers."""
    layers = [m for m in moe_layers(model) if m.counts is not None]
    if not layers:
        return None
    counts = torch.stack([m.counts.float() for m in layers])  # (L, E)
    per_layer = torch.stack([max_violation(counts), (counts == 0).float().sum(-1), load_entropy(counts),
                             torch.stack([router_entropy(m.scores) for m in layers])], dim=1)  # (L, 4)
    counts, per_layer = counts.tolist(), per_layer.tolist()
    stats = {"layers": [m.layer_id for m in layers], "load": [[int(c) for c in row] for row in counts],
             "max_vio": [r[0] for r in per_layer], "dead_experts": [int(r[1]) for r in per_layer],
             "load_entropy": [r[2] for r in per_layer], "router_entropy": [r[3] for r in per_layer]}
    if any(m.cfg.bias_update_speed > 0 for m in layers):  # the bias only moves under aux-loss-free balancing
        stats["bias"] = torch.stack([m.gate.bias for m in layers]).tolist()  # (L, E)
    return stats


ROUTING_KEYS = ("expert_load", "max_vio", "dead_experts", "load_entropy", "router_entropy", "router_bias")


def record_routing(model: nn.Module, history: dict, balance: Tensor | None = None) -> None:
    """Append this step's balance loss and routing statistics to a train() history (nothing for a dense model).

    history["balance_loss"][i]: the step's balance loss (0.0 when none is switched on); history["moe_layers"]:
    the MoE layers' ids; per step, one entry per MoE layer: "expert_load" (tokens per expert), "max_vio",
    "dead_experts", "load_entropy", "router_entropy", and "router_bias" (per expert, only when
    bias_update_speed > 0). history["loss"] stays the language-model loss alone.
    """
    stats = routing_stats(model)
    if stats is None:
        return
    history.setdefault("balance_loss", []).append(0.0 if balance is None else float(balance.detach()))
    history["moe_layers"] = stats["layers"]
    for key, name in zip(ROUTING_KEYS, ("load", "max_vio", "dead_experts", "load_entropy", "router_entropy",
                                        "bias")):
        if name in stats:
            history.setdefault(key, []).append(stats[name])


__all__ = ["AUX_LOSS_SCOPES", "balance_loss", "balance_losses", "bias_step", "choice_counts",
           "comm_balance_loss", "device_balance_loss", "expert_balance_loss", "expert_fraction", "load_entropy",
           "max_violation", "mean_probs", "moe_layers", "record_routing", "router_entropy", "routing_stats",
           "ROUTING_KEYS", "update_router_bias"]
