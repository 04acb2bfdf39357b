"""The DeepSeekMoE feed-forward layer (DeepSeekMoE arXiv:2401.06066 §3, DeepSeek-V2 §2.2, DeepSeek-V3 §2.1.2).

h = u + Σ_{i≤N_s} FFN^(s)_i(u) + Σ_{i≤N_r} g_{i,t} FFN^(r)_i(u): shared experts that every token runs
(unweighted, fused into one SwiGLU of width N_s·moe_inter_dim as DeepSeek does), plus the K_r routed experts the
router (router.py) picks, weighted by its gate values g. Fine-grained segmentation (many small experts, more of
them active) is a config: `fine_grained_config(cfg, m)`.

Dispatch, the expensive part on a CPU: a Python loop over experts runs dozens of tiny matmuls and the autograd
bookkeeping of each. Here every expert's weights sit in one stacked tensor, tokens are sorted by expert into a
padded (E, C, D) buffer (C = the busiest expert's load), three batched matmuls run every expert at once, and the
results are gathered back. The two gathers are custom autograd functions whose backward is again a gather (or a
plain copy), not an atomic scatter-add. Padding costs the FLOPs of (E·C − N·k) empty rows; a balanced router
keeps that small. `dispatch="loop"` runs the same maths expert by expert, without padding (lesson 06 builds it by
hand; FLOP counters see exactly the model FLOPs).
Taught in lessons/06_moe.ipynb (dispatch), lessons/07_deepseekmoe.ipynb (segmentation, shared experts) and
lessons/08_load_balancing.ipynb (the losses and the bias, balance.py).
"""

# Shapes: B batch, T positions, N = B·T tokens, D = dim, E = n_routed_experts (N_r), k = n_activated_experts (K_r),
# H = moe_inter_dim (one expert's hidden width), C = capacity (the busiest expert's rows in the padded buffer)

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .balance import balance_losses
from .ffn import FeedForward
from .router import Gate

DISPATCHES = ("padded", "loop")


class Experts(nn.Module):
    """E routed SwiGLU experts with stacked weights: expert i is w2[i](silu(w1[i] x) ⊙ w3[i] x), no biases.
    Layouts match nn.Linear's weight, so `experts.w1[i]` is DeepSeek's `experts[i].w1.weight`."""

    def __init__(self, n_experts: int, dim: int, inter_dim: int, init_std: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, inter_dim, dim))  # gate projections (E, H, D)
        self.w2 = nn.Parameter(torch.empty(n_experts, dim, inter_dim))  # down projections (E, D, H)
        self.w3 = nn.Parameter(torch.empty(n_experts, inter_dim, dim))  # up projections (E, H, D)
        for w in (self.w1, self.w2, self.w3):
            nn.init.normal_(w, std=init_std)

    def expert(self, i: int, x: Tensor) -> Tensor:
        """Run expert i alone.  (..., D) -> (..., D)"""
        return F.linear(F.silu(F.linear(x, self.w1[i])) * F.linear(x, self.w3[i]), self.w2[i])

    def run_all(self, buf: Tensor) -> Tensor:
        """Expert e on row block buf[e], all experts in three batched matmuls.  (E, C, D) -> (E, C, D)"""
        hidden = F.silu(torch.bmm(buf, self.w1.transpose(1, 2))) * torch.bmm(buf, self.w3.transpose(1, 2))  # (E, C, H)
        return torch.bmm(hidden, self.w2.transpose(1, 2))  # (E, C, D)


class _ToSlots(torch.autograd.Function):
    """Tokens into the padded expert buffer: slot s reads token tok_of_slot[s].  (N, D) -> (E·C, D)
    Backward: each token's gradient is the sum over its k slots (a gather, then a sum over k)."""

    @staticmethod
    def forward(ctx, x: Tensor, tok_of_slot: Tensor, slot: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(slot)
        ctx.k = k
        return x.index_select(0, tok_of_slot)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (slot,) = ctx.saved_tensors
        return grad.index_select(0, slot).view(-1, ctx.k, grad.shape[-1]).sum(1), None, None, None


class _FromSlots(torch.autograd.Function):
    """Expert outputs back to (token, choice) order: row a reads slot[a].  (E·C, D) -> (N·k, D)
    Backward: copy each gradient into its slot; padding slots get 0, so they add nothing to the weights' grads."""

    @staticmethod
    def forward(ctx, y: Tensor, slot: Tensor) -> Tensor:
        ctx.save_for_backward(slot)
        ctx.rows = y.shape[0]
        return y.index_select(0, slot)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (slot,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[-1]).index_copy_(0, slot, grad), None


@torch.no_grad()
def plan_slots(indices: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, int]:
    """Where each (token, choice) goes in the padded buffer: expert e's rows are e·C .. e·C + counts[e] - 1.

    indices (N, k) long, counts (E,) -> slot (N·k,), tok_of_slot (E·C,), C. Padding slots read token 0: their
    outputs are never read back and their gradients are 0.
    """
    flat = indices.flatten()  # (N·k,) expert of each assignment, token-major
    capacity = int(counts.max())  # one device sync per layer
    order = flat.argsort(stable=True)  # assignments grouped by expert, tokens in order inside each
    starts = counts.cumsum(0) - counts  # (E,) first sorted position of each expert
    rank = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]  # row inside its expert
    slot_sorted = flat[order] * capacity + rank
    slot = torch.empty_like(flat).scatter_(0, order, slot_sorted)  # (N·k,)
    tok_of_slot = flat.new_zeros(counts.numel() * capacity).index_copy_(0, slot_sorted, order // indices.shape[1])
    return slot, tok_of_slot, capacity


def dispatch_padded(experts: Experts, x: Tensor, weights: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
    """Σ_j weights[:, j] · expert_{indices[:, j]}(x), every expert at once.  (N, D) -> (N, D)"""
    n_experts, k = counts.numel(), indices.shape[1]
    slot, tok_of_slot, capacity = plan_slots(indices, counts)
    buf = _ToSlots.apply(x, tok_of_slot, slot, k).view(n_experts, capacity, -1)  # (E, C, D)
    out = experts.run_all(buf).view(n_experts * capacity, -1)  # (E·C, D)
    y = _FromSlots.apply(out, slot).view(-1, k, x.shape[-1])  # (N, k, D)
    return (y * weights.unsqueeze(-1)).sum(1)  # (N, D)


def dispatch_loop(experts: Experts, x: Tensor, weights: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
    """The same sum, expert by expert over the tokens that chose it (DeepSeek's MoE.forward).  (N, D) -> (N, D)"""
    y = torch.zeros_like(x)
    for i in torch.nonzero(counts).flatten().tolist():
        tok, choice = torch.where(indices == i)  # tokens that chose expert i, and in which of their k slots
        y = y.index_add(0, tok, experts.expert(i, x[tok]) * weights[tok, choice, None])
    return y


@torch.no_grad()
def plan_blocks(indices: Tensor, counts: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor]:
    flat = indices.flatten()
    order = flat.argsort(stable=True)
    padded = (counts + block - 1) // block * block
    n_rows = int(padded.sum())
    starts = padded.cumsum(0) - padded
    e_sorted = flat[order]
    rank = torch.arange(flat.numel(), device=flat.device) - (counts.cumsum(0) - counts)[e_sorted]
    slot_sorted = starts[e_sorted] + rank
    slot = torch.empty_like(flat).scatter_(0, order, slot_sorted)
    tok_of_slot = flat.new_zeros(n_rows).index_copy_(0, slot_sorted, order // indices.shape[1])
    block_expert = torch.repeat_interleave(torch.arange(counts.numel(), device=flat.device), padded // block,
                                           output_size=n_rows // block)
    return slot, tok_of_slot, block_expert


def dispatch_blocks(experts, x, weights, indices, counts, block=64):
    k = indices.shape[1]
    slot, tok_of_slot, block_expert = plan_blocks(indices, counts, block)
    buf = _ToSlots.apply(x, tok_of_slot, slot, k).view(-1, block, x.shape[-1])
    w1, w2, w3 = (w.index_select(0, block_expert) for w in (experts.w1, experts.w2, experts.w3))
    hidden = F.silu(torch.bmm(buf, w1.transpose(1, 2))) * torch.bmm(buf, w3.transpose(1, 2))
    out = torch.bmm(hidden, w2.transpose(1, 2)).view(-1, x.shape[-1])
    y = _FromSlots.apply(out, slot).view(-1, k, x.shape[-1])
    return (y * weights.unsqueeze(-1)).sum(1)


def dispatch_sorted(experts, x, weights, indices, counts):
    n, k = indices.shape
    order = indices.flatten().argsort(stable=True)
    slot = torch.empty_like(order).scatter_(0, order, torch.arange(n * k, device=x.device))
    xs = _ToSlots.apply(x, order // k, slot, k)
    sizes = counts.tolist()
    w1s, w2s, w3s = experts.w1.unbind(0), experts.w2.unbind(0), experts.w3.unbind(0)
    outs = [F.linear(F.silu(F.linear(chunk, w1s[i])) * F.linear(chunk, w3s[i]), w2s[i])
            for i, chunk in enumerate(xs.split(sizes)) if sizes[i]]
    y = _FromSlots.apply(torch.cat(outs), slot).view(n, k, x.shape[-1])
    return (y * weights.unsqueeze(-1)).sum(1)


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ys, slot, tok_sorted, k):
        ctx.save_for_backward(tok_sorted)
        return ys.index_select(0, slot).view(-1, k, ys.shape[-1]).sum(1)

    @staticmethod
    def backward(ctx, grad):
        (tok_sorted,) = ctx.saved_tensors
        return grad.index_select(0, tok_sorted), None, None, None


def dispatch_sorted2(experts, x, weights, indices, counts, fused=False):
    n, k = indices.shape
    order = indices.flatten().argsort(stable=True)
    slot = torch.empty_like(order).scatter_(0, order, torch.arange(n * k, device=x.device))
    tok_sorted = order // k
    xs = _ToSlots.apply(x, tok_sorted, slot, k)
    ws = weights.flatten().index_select(0, order).unsqueeze(-1)  # (N·k, 1)
    sizes = counts.tolist()
    w2s = experts.w2.unbind(0)
    outs = []
    if fused:
        w13s = torch.cat([experts.w1, experts.w3], 1).unbind(0)
        for i, (chunk, wc) in enumerate(zip(xs.split(sizes), ws.split(sizes))):
            if sizes[i]:
                g, u = F.linear(chunk, w13s[i]).chunk(2, -1)
                outs.append(F.linear(F.silu(g) * u * wc, w2s[i]))
    else:
        w1s, w3s = experts.w1.unbind(0), experts.w3.unbind(0)
        for i, (chunk, wc) in enumerate(zip(xs.split(sizes), ws.split(sizes))):
            if sizes[i]:
                outs.append(F.linear(F.silu(F.linear(chunk, w1s[i])) * F.linear(chunk, w3s[i]) * wc, w2s[i]))
    return _Combine.apply(torch.cat(outs), slot, tok_sorted, k)


def dispatch_loop2(experts, x, weights, indices, counts):
    y = torch.zeros_like(x)
    w1s, w2s, w3s = experts.w1.unbind(0), experts.w2.unbind(0), experts.w3.unbind(0)
    for i in torch.nonzero(counts).flatten().tolist():
        tok, choice = torch.where(indices == i)
        h = x[tok]
        y = y.index_add(0, tok, F.linear(F.silu(F.linear(h, w1s[i])) * F.linear(h, w3s[i]), w2s[i]) * weights[tok, choice, None])
    return y


DISPATCH = {"padded": dispatch_padded, "loop": dispatch_loop, "sorted": dispatch_sorted, "sorted2": dispatch_sorted2, "sorted2f": lambda *a: dispatch_sorted2(*a, fused=True), "loop2": dispatch_loop2,
            "b32": lambda *a: dispatch_blocks(*a, block=32), "b64": lambda *a: dispatch_blocks(*a, block=64),
            "b128": lambda *a: dispatch_blocks(*a, block=128), "b256": lambda *a: dispatch_blocks(*a, block=256)}


class MoE(nn.Module):
    """DeepSeekMoE FFN: router, routed experts, shared experts.  (B, T, D) -> (B, T, D)

    In training mode each forward keeps what balancing needs: `aux_loss` (the balance losses the config asks
    for, a scalar with gradient, or None) and `counts` (tokens per expert in this batch, for the bias update
    and the routing statistics of balance.py)."""

    def __init__(self, cfg, layer_id: int = 0, *, dispatch: str = "padded"):
        super().__init__()
        self.layer_id, self.cfg = layer_id, cfg
        self.gate = Gate(cfg)
        self.experts = Experts(cfg.n_routed_experts, cfg.dim, cfg.moe_inter_dim, cfg.init_std)
        shared = cfg.n_shared_experts * cfg.moe_inter_dim  # N_s experts = one SwiGLU of width N_s·H
        self.shared_experts = FeedForward(cfg.dim, shared) if shared else None
        self.dispatch = dispatch
        self.aux_loss: Tensor | None = None
        self.counts: Tensor | None = None
        self.scores: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.dispatch not in DISPATCH:
            raise ValueError(f"dispatch={self.dispatch!r} is not known; choose one of {DISPATCHES}")
        b, t, d = x.shape
        flat = x.reshape(b * t, d)  # (N, D)
        weights, indices, scores = self.gate(flat)  # (N, k), (N, k), (N, E)
        counts = torch.bincount(indices.flatten(), minlength=self.cfg.n_routed_experts)  # (E,)
        y = DISPATCH[self.dispatch](self.experts, flat, weights, indices, counts)  # (N, D)
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)  # always on, weight 1
        if self.training:
            self.counts, self.scores = counts.detach(), scores.detach()
            self.aux_loss = balance_losses(scores.view(b, t, -1), indices.view(b, t, -1), self.cfg)
        return y.view(b, t, d)


def moe_ffn(cfg, layer_id: int) -> nn.Module:
    """The FFN of layer `layer_id` in an ffn="moe" model: the first n_dense_layers keep the dense SwiGLU of
    width inter_dim (DeepSeek: load balance converges slowly there), later layers are DeepSeekMoE."""
    if layer_id < cfg.n_dense_layers:
        return FeedForward(cfg.dim, cfg.inter_dim)
    return MoE(cfg, layer_id)


def fine_grained_config(cfg, m: int, *, isolate_shared: int = 0):
    """DeepSeekMoE's two steps on a config: split every expert m ways (width moe_inter_dim / m, m× as many,
    m× as many active: same parameters and FLOPs), then make `isolate_shared` of the pieces shared experts
    (always on, taken from the routed ones so the activated width stays the same)."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m={m!r} must be an int >= 1: how many pieces each expert is split into")
    if cfg.moe_inter_dim % m:
        raise ValueError(f"moe_inter_dim={cfg.moe_inter_dim} is not divisible by m={m}: pick an m that divides "
                         f"it, or a moe_inter_dim that is a multiple of m")
    if isinstance(isolate_shared, bool) or not isinstance(isolate_shared, int) or isolate_shared < 0:
        raise ValueError(f"isolate_shared={isolate_shared!r} must be an int >= 0")
    activated = m * cfg.n_activated_experts - isolate_shared
    if activated < 1:
        raise ValueError(f"isolate_shared={isolate_shared} leaves no routed expert active (m·k = "
                         f"{m * cfg.n_activated_experts}); isolate fewer than m·k shared experts")
    return replace(cfg, moe_inter_dim=cfg.moe_inter_dim // m,
                   n_routed_experts=m * cfg.n_routed_experts - isolate_shared,
                   n_shared_experts=m * cfg.n_shared_experts + isolate_shared, n_activated_experts=activated)


def set_dispatch(model: nn.Module, dispatch: str) -> nn.Module:
    """Switch every MoE layer of `model` to `dispatch` ("padded" or "loop"); returns the model."""
    if dispatch not in DISPATCH:
        raise ValueError(f"dispatch={dispatch!r} is not known; choose one of {DISPATCHES}")
    for module in model.modules():
        if isinstance(module, MoE):
            module.dispatch = dispatch
    return model


__all__ = ["dispatch_loop", "dispatch_padded", "DISPATCHES", "Experts", "fine_grained_config", "MoE",
           "moe_ffn", "plan_slots", "set_dispatch"]
