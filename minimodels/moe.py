"""The DeepSeekMoE feed-forward layer (DeepSeekMoE arXiv:2401.06066 §3, DeepSeek-V2 §2.2, DeepSeek-V3 §2.1.2).

h = u + Σ_{i≤N_s} FFN^(s)_i(u) + Σ_{i≤N_r} g_{i,t} FFN^(r)_i(u): shared experts that every token runs
(unweighted, fused into one SwiGLU of width N_s·moe_inter_dim as DeepSeek does), plus the K_r routed experts the
router (router.py) picks, weighted by its gate values g. Fine-grained segmentation (many small experts, more of
them active) is a config: `fine_grained_config(cfg, m)`. The first n_dense_layers keep the dense FFN (`moe_ffn`).

Dispatch (sending each token to its experts) decides the speed on a CPU, where many small experts pay per-op
overhead and memory traffic that a FLOP count does not see. Three interchangeable implementations, equal up to
float rounding (tests/test_moe.py checks each against running every expert and masking):
- "sorted" (default): sort the N·k (token, expert) pairs by expert, gather the tokens once, run each expert's
  two matmuls (w1 and w3 fused, then w2) on its contiguous rows, apply the gate weights in the hidden layer, and
  sum each token's k rows back. The gathers are custom autograd functions whose backward is again a gather, not
  an atomic scatter-add. It does exactly the model's FLOPs. On a CPU whose torch has a grouped GEMM
  (`F.grouped_mm`: torch 2.13 has one for fp32 on CPU; older versions may not), every expert's matmul on its
  rows is one call instead of a Python loop over the experts: the same products, with less per-call overhead
  (benchmarks/bench_moe.py measures it).
- "padded": the same sorted rows in an (E, C, D) buffer padded to the busiest expert's load C, and three batched
  matmuls (fewer, larger kernels; it also multiplies the padding, which grows when the router is unbalanced).
- "loop": DeepSeek's MoE.forward, expert by expert with index_add, no sorting.
Taught in lessons/06_dense_to_moe.ipynb (dispatch: lesson 06 builds "sorted" by hand, with a loop over the experts),
lessons/07_deepseekmoe.ipynb (segmentation, shared experts) and
lessons/08_load_balancing.ipynb (the losses and the bias, balance.py).
"""

# Shapes: B batch, T positions, N = B·T tokens, D = dim, E = n_routed_experts (N_r), k = n_activated_experts (K_r),
# H = moe_inter_dim (one expert's hidden width), C = capacity (rows per expert in the padded buffer)

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .balance import balance_losses
from .ffn import FeedForward
from .router import Gate

DISPATCHES = ("sorted", "padded", "loop")


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


def _sum_choices(rows: Tensor, row_of: Tensor, k: int) -> Tensor:
    """out[n] = Σ_j rows[row_of[n·k + j]], gathered choice-major (all first choices, then all second ones, ...),
    so the sum over k adds whole contiguous (N, D) blocks (about 3x faster on a CPU than summing a strided k).
    rows (R, D), row_of (N·k,) -> (N, D)"""
    by_choice = row_of.view(-1, k).t().reshape(-1)  # (k·N,) row of choice j of token n at j·N + n
    return rows.index_select(0, by_choice).view(k, -1, rows.shape[-1]).sum(0)


class _GatherTokens(torch.autograd.Function):
    """rows[r] = x[tok_of_row[r]].  (N, D) -> (R, D)
    Backward: token n's gradient is the sum of the gradients of its k rows row_of[n, 0..k-1] (a gather and a sum
    over k, since each (token, choice) owns exactly one row)."""

    @staticmethod
    def forward(ctx, x: Tensor, tok_of_row: Tensor, row_of: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(row_of)
        ctx.k = k
        return x.index_select(0, tok_of_row)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (row_of,) = ctx.saved_tensors
        return _sum_choices(grad, row_of, ctx.k), None, None, None


class _SumRows(torch.autograd.Function):
    """out[n] = Σ_j rows[row_of[n, j]], the transpose of _GatherTokens.  (R, D) -> (N, D)
    Backward: row r gets the gradient of its token tok_of_row[r] (a gather)."""

    @staticmethod
    def forward(ctx, rows: Tensor, row_of: Tensor, tok_of_row: Tensor, k: int) -> Tensor:
        ctx.save_for_backward(tok_of_row)
        return _sum_choices(rows, row_of, k)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (tok_of_row,) = ctx.saved_tensors
        return grad.index_select(0, tok_of_row), None, None, None


class _PickRows(torch.autograd.Function):
    """out[a] = rows[row_of[a]] for the padded buffer.  (E·C, D) -> (N·k, D)
    Backward: copy each gradient into its row; padding rows get 0, so they add nothing to the weights' grads."""

    @staticmethod
    def forward(ctx, rows: Tensor, row_of: Tensor) -> Tensor:
        ctx.save_for_backward(row_of)
        ctx.n_rows = rows.shape[0]
        return rows.index_select(0, row_of)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (row_of,) = ctx.saved_tensors
        return grad.new_zeros(ctx.n_rows, grad.shape[-1]).index_copy_(0, row_of, grad), None


class _GroupedLinear(torch.autograd.Function):
    """Each expert's linear layer on its own contiguous rows, all experts in one grouped GEMM call:
    out[rows of e] = rows_e · w[e]ᵀ, expert e's rows ending at offs[e].  (R, I), (E, O, I) -> (R, O)
    Backward: the rows' gradient is again grouped (grad_e · w[e]); each weight's is grad_eᵀ · rows_e."""

    @staticmethod
    def forward(ctx, rows: Tensor, w: Tensor, offs: Tensor) -> Tensor:
        ctx.save_for_backward(rows, w, offs)
        return F.grouped_mm(rows, w.transpose(1, 2), offs=offs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, w, offs = ctx.saved_tensors
        grad = grad.contiguous()
        grad_rows = F.grouped_mm(grad, w, offs=offs) if ctx.needs_input_grad[0] else None
        grad_w = F.grouped_mm(grad.t(), rows, offs=offs) if ctx.needs_input_grad[1] else None  # (E, O, I)
        return grad_rows, grad_w, None


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one grouped GEMM, for torch's FlopCounterMode (flops.py's check): each row is multiplied by one
    expert's weights, so the count is that of one plain matmul. (R, K) x (E, K, N): 2·R·K·N; the weight
    gradient (O, R) x (R, I) -> (E, O, I): 2·O·R·I."""
    inner_out = b_shape[2] if len(b_shape) == 3 else b_shape[1]
    return 2 * a_shape[0] * a_shape[1] * inner_out


if hasattr(torch.ops.aten, "_grouped_mm"):  # torch 2.13's FlopCounterMode has no count for it
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    if torch.ops.aten._grouped_mm not in flop_registry:
        register_flop_formula(torch.ops.aten._grouped_mm)(_grouped_mm_flops)


def _probe_grouped_mm() -> bool:
    if not hasattr(F, "grouped_mm"):
        return False
    try:
        out = F.grouped_mm(torch.ones(3, 4), torch.ones(2, 4, 8), offs=torch.tensor([1, 3], dtype=torch.int32))
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return out.shape == (3, 8) and bool((out == 4).all())


_GROUPED_MM_ON_CPU = _probe_grouped_mm()  # once, at import: never inside a caller's FlopCounterMode or profiler


def grouped_mm_on_cpu() -> bool:
    """Whether this torch runs F.grouped_mm on CPU fp32 tensors (tried once, at import)."""
    return _GROUPED_MM_ON_CPU


def _use_grouped(x: Tensor, experts: Experts) -> bool:
    """The grouped GEMM path: CPU fp32 with a torch that has it, and widths whose rows are whole 16-byte
    multiples (the kernel's stride rule: D and H divisible by 4); else the loop over experts."""
    _, hidden, dim = experts.w1.shape
    return (x.device.type == "cpu" and x.dtype == experts.w1.dtype == torch.float32 and dim % 4 == 0
            and hidden % 4 == 0 and grouped_mm_on_cpu())


@torch.no_grad()
def sort_by_expert(indices: Tensor) -> tuple[Tensor, Tensor]:
    """order: the (token, choice) pairs grouped by expert (tokens in order inside each expert); row_of: the
    inverse, the sorted row of pair a = n·k + j.  (N, k) -> (N·k,), (N·k,)"""
    order = indices.flatten().argsort(stable=True)
    row_of = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return order, row_of


def dispatch_sorted(experts: Experts, x: Tensor, weights: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
    """Σ_j weights[:, j] · expert_{indices[:, j]}(x), one matmul per expert on contiguous rows.  (N, D) -> (N, D)"""
    k = indices.shape[1]
    order, row_of = sort_by_expert(indices)
    tok_of_row = order // k  # (N·k,) the token of each sorted row
    xs = _GatherTokens.apply(x, tok_of_row, row_of, k)  # (N·k, D) grouped by expert
    ws = weights.flatten().index_select(0, order).unsqueeze(-1)  # (N·k, 1) gate value of each row
    w13 = torch.cat([experts.w1, experts.w3], dim=1)  # (E, 2H, D): one matmul for w1 and w3
    if _use_grouped(x, experts):  # every expert on its rows in one call: the same products as the loop below
        offs = counts.cumsum(0).to(torch.int32)  # (E,) where each expert's rows end
        gate, up = _GroupedLinear.apply(xs, w13, offs).chunk(2, dim=-1)  # (N·k, H) each
        out = _GroupedLinear.apply(F.silu(gate) * up * ws, experts.w2, offs)  # weight the hidden (H < D)
        return _SumRows.apply(out, row_of, tok_of_row, k)  # (N, D)
    sizes = counts.tolist()  # rows per expert (one device sync per layer)
    w13, w2 = w13.unbind(0), experts.w2.unbind(0)  # unbind, not w2[i]: its backward stacks E grads once
    outs = []
    for i, (rows, w) in enumerate(zip(xs.split(sizes), ws.split(sizes))):
        if sizes[i]:
            gate, up = F.linear(rows, w13[i]).chunk(2, dim=-1)  # (n_i, H) each
            outs.append(F.linear(F.silu(gate) * up * w, w2[i]))  # weight the hidden (H < D: less traffic)
    return _SumRows.apply(torch.cat(outs), row_of, tok_of_row, k)  # (N, D)


def dispatch_padded(experts: Experts, x: Tensor, weights: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
    """The same sum with every expert at once: an (E, C, D) buffer and three batched matmuls.  (N, D) -> (N, D)"""
    (n_experts, dim), k = (counts.numel(), x.shape[-1]), indices.shape[1]
    capacity = int(counts.max())  # C: the busiest expert's rows
    order, _ = sort_by_expert(indices)
    expert_sorted = indices.flatten()[order]
    rank = torch.arange(order.numel(), device=x.device) - (counts.cumsum(0) - counts)[expert_sorted]
    row_sorted = expert_sorted * capacity + rank  # expert e's rows are e·C .. e·C + counts[e] - 1
    row_of = torch.empty_like(order).scatter_(0, order, row_sorted)  # (N·k,)
    tok_of_row = order.new_zeros(n_experts * capacity).index_copy_(0, row_sorted, order // k)  # padding: token 0
    buf = _GatherTokens.apply(x, tok_of_row, row_of, k).view(n_experts, capacity, dim)  # (E, C, D)
    hidden = F.silu(torch.bmm(buf, experts.w1.transpose(1, 2))) * torch.bmm(buf, experts.w3.transpose(1, 2))
    out = torch.bmm(hidden, experts.w2.transpose(1, 2)).view(n_experts * capacity, dim)  # (E·C, D)
    y = _PickRows.apply(out, row_of).view(-1, k, dim)  # (N, k, D); padding rows are never read
    return (y * weights.unsqueeze(-1)).sum(1)  # (N, D)


def dispatch_loop(experts: Experts, x: Tensor, weights: Tensor, indices: Tensor, counts: Tensor) -> Tensor:
    """The same sum, expert by expert over the tokens that chose it (DeepSeek's MoE.forward).  (N, D) -> (N, D)"""
    y = torch.zeros_like(x)
    for i in torch.nonzero(counts).flatten().tolist():
        tok, choice = torch.where(indices == i)  # tokens that chose expert i, and in which of their k slots
        y = y.index_add(0, tok, experts.expert(i, x[tok]) * weights[tok, choice, None])
    return y


DISPATCH = {"sorted": dispatch_sorted, "padded": dispatch_padded, "loop": dispatch_loop}


class MoE(nn.Module):
    """DeepSeekMoE FFN: router, routed experts, shared experts.  (B, T, D) -> (B, T, D)

    In training mode each forward keeps what balancing needs: `aux_loss` (the balance losses the config asks
    for, a scalar with gradient, or None), `counts` (E,) (tokens per expert in this batch, for the bias update)
    and `scores` (N, E) (detached, for the routing statistics of balance.py)."""

    def __init__(self, cfg, layer_id: int = 0, *, dispatch: str = "sorted"):
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


@torch.no_grad()
def trace_routing(model: nn.Module, tokens: Tensor) -> dict[int, dict[str, Tensor]]:
    """Which experts each token uses in every MoE layer, from one eval-mode forward of `tokens` (B, T).

    Returns {layer_id: {"weights": (B, T, k), "indices": (B, T, k), "scores": (B, T, E)}}: the gate values,
    the chosen experts (best first) and every expert's affinity. For the token -> expert views of lesson 07.
    """
    records, hooks = {}, []
    for module in model.modules():
        if isinstance(module, MoE):
            def keep(gate, inputs, outputs, layer=module.layer_id):
                records[layer] = outputs
            hooks.append(module.gate.register_forward_hook(keep))
    was_training = model.training
    model.eval()
    try:
        model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    b, t = tokens.shape
    return {layer: {"weights": w.view(b, t, -1), "indices": i.view(b, t, -1), "scores": s.view(b, t, -1)}
            for layer, (w, i, s) in sorted(records.items())}


def set_dispatch(model: nn.Module, dispatch: str) -> nn.Module:
    """Switch every MoE layer of `model` to `dispatch` (one of DISPATCHES); returns the model."""
    if dispatch not in DISPATCH:
        raise ValueError(f"dispatch={dispatch!r} is not known; choose one of {DISPATCHES}")
    for module in model.modules():
        if isinstance(module, MoE):
            module.dispatch = dispatch
    return model


__all__ = ["dispatch_loop", "dispatch_padded", "dispatch_sorted", "DISPATCHES", "Experts", "fine_grained_config",
           "MoE", "moe_ffn", "set_dispatch", "sort_by_expert", "trace_routing"]
