"""Model FLOPs per token in closed form, and this machine's matmul peak: the two halves of MFU.

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, App. B) = model FLOPs per token × tokens/s ÷ peak
FLOP/s. "Model FLOPs" are what the architecture needs, counted the way PaLM counts them:
- only matrix multiplications count, at 2 FLOPs per multiply-add: every linear layer including the output head,
  plus attention's two products (q·kᵀ scores, probs·v). Norms, softmax, RoPE, SiLU, the loss and the optimizer
  are left out: per token they cost O(D) or O(T) against the matmuls' O(D²) and O(D·T).
- the embedding lookup is a gather, not a matmul: 0 FLOPs, and its weights are not in N below.
- backward = 2 × forward (one matmul for the input's gradient, one for the weight's), so training = 3 × forward;
  for the baseline that is PaLM's 6·N + 12·L·H·K·T per token (N matmul weights, L layers, H heads, K head width).
- causal attention is counted in full: every query against all T keys, not T/2 on average. That is PaLM's count
  (Chinchilla's App. F counts it in full too, and adds the input embedding as a one-hot matmul and the softmax,
  which we leave out), and it is what our attention computes (it masks with -inf after the product). A kernel
  that skips the masked half does less work for the same model FLOPs.
A test checks every count against torch.utils.flop_counter.FlopCounterMode running the real model.
The attention and FFN variants register their counts in ATTENTION_COUNTS / FFN_COUNTS, keyed like model.py's
ATTENTION / FEED_FORWARD; `params` vs `active_params` keeps total and activated weights apart for MoE.
Used by benchmarks/bench_baseline.py (MFU); lesson 00 introduces FLOPs per token.
"""

# Shapes: D = dim, H = n_heads, G = n_kv_heads, K = qk head width (MLA: qk_nope_head_dim), V = v_head_dim,
# C = kv_lora_rank, R = qk_rope_head_dim, F = inter_dim, E = n_routed_experts, L = n_layers,
# T = keys each query attends to ("context"), n = side of a square matmul

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig

FLOPS_CONVENTION = ("matmul FLOPs only, 2 per multiply-add; linear layers incl. the output head plus attention "
                    "scores and values; embedding lookup 0; causal attention counted in full (each query x all T "
                    "keys, as PaLM); backward = 2 x forward, so training = 3 x forward")


@dataclass(frozen=True)
class PartCount:
    """What one token costs in one part (attention or FFN) of one layer."""

    params: int  # weights of the part's linear layers (every expert, for MoE)
    active_params: int  # of those, the weights one token multiplies (fewer only with routed experts)
    flops_per_key: int = 0  # forward FLOPs of the score and value products per attended key (attention)


def mha_count(cfg: ModelConfig) -> PartCount:
    """Multi-head attention: wq, wk, wv (D -> H·K), wo (H·K -> D); per key, q·k and probs·v over K in each head."""
    hk = cfg.n_heads * cfg.head_dim
    weights = 3 * cfg.dim * hk + hk * cfg.dim
    return PartCount(weights, weights, flops_per_key=2 * cfg.n_heads * (cfg.head_dim + cfg.head_dim))


def gqa_count(cfg: ModelConfig) -> PartCount:
    """Grouped-query attention: wq (D -> H·K), wk and wv (D -> G·K), wo; per key the same products as MHA."""
    hk, gk = cfg.n_heads * cfg.head_dim, (cfg.n_kv_heads or cfg.n_heads) * cfg.head_dim  # n_kv_heads 0 = H
    weights = cfg.dim * hk + 2 * cfg.dim * gk + hk * cfg.dim
    return PartCount(weights, weights, flops_per_key=2 * cfg.n_heads * (cfg.head_dim + cfg.head_dim))


def mla_count(cfg: ModelConfig, *, decoupled_rope: bool = True) -> PartCount:
    """MLA on its naive path (training, prefill): every token's latent is up-projected once by wkv_b.

    Weights: wq (or wq_a, wq_b), wkv_a (D -> C + R), wkv_b (C -> H·(K + V)), wo (H·V -> D). Per key, q·k over the
    K + R query/key channels and probs·v over V, in each head. Decoding does other work: the absorbed path
    multiplies per key over C + R and C, and the naive path over a cache re-expands every cached latent.
    """
    h, c, v = cfg.n_heads, cfg.kv_lora_rank, cfg.v_head_dim
    r = cfg.qk_rope_head_dim if decoupled_rope else 0
    qk = cfg.qk_nope_head_dim + r
    wq = cfg.dim * h * qk if cfg.q_lora_rank == 0 else cfg.dim * cfg.q_lora_rank + cfg.q_lora_rank * h * qk
    weights = wq + cfg.dim * (c + r) + c * h * (cfg.qk_nope_head_dim + v) + h * v * cfg.dim
    return PartCount(weights, weights, flops_per_key=2 * h * (qk + v))


def dense_ffn_count(cfg: ModelConfig, layer_id: int) -> PartCount:
    """Dense SwiGLU: w1, w3 (D -> F) and w2 (F -> D), all used by every token."""
    weights = 3 * cfg.dim * cfg.inter_dim
    return PartCount(weights, weights)


def moe_count(cfg: ModelConfig, layer_id: int) -> PartCount:
    """DeepSeekMoE: the first n_dense_layers keep the dense FFN; later layers have a router (D -> E scores),
    n_shared_experts always on and n_activated_experts of n_routed_experts routed ones, each a SwiGLU of width
    moe_inter_dim. Total weights count every expert; active ones the experts a token actually runs."""
    if layer_id < cfg.n_dense_layers:
        return dense_ffn_count(cfg, layer_id)
    expert = 3 * cfg.dim * cfg.moe_inter_dim
    always = cfg.dim * cfg.n_routed_experts + cfg.n_shared_experts * expert  # router + shared experts
    return PartCount(always + cfg.n_routed_experts * expert, always + cfg.n_activated_experts * expert)


# variant name -> count, for every key of model.py's ATTENTION / FEED_FORWARD (a test checks it);
# attention counts take the config, FFN counts also the layer index (MoE keeps dense FFNs in its first layers)
ATTENTION_COUNTS: dict[str, Callable[[ModelConfig], PartCount]] = {
    "mha": mha_count, "gqa": gqa_count, "mla": mla_count,
    "mla_lowrank": lambda cfg: mla_count(cfg, decoupled_rope=False),  # lesson 04's start: no rope channels
}
FFN_COUNTS: dict[str, Callable[[ModelConfig, int], PartCount]] = {"dense": dense_ffn_count, "moe": moe_count}


@dataclass(frozen=True)
class FlopsCount:
    """Model FLOPs per token at one context length, with the matmul weights behind them."""

    context: int  # keys each query attends to: the training sequence length, or the cache length when decoding
    params: int  # matmul weights: every linear layer incl. the head (no embedding, no norm gains)
    active_params: int  # of those, the ones one token multiplies (== params without routed experts)
    forward: int  # forward FLOPs per token
    training: int  # forward + backward FLOPs per token (3 × forward)
    by_part: dict[str, int] = field(default_factory=dict)  # forward FLOPs per token of each part


def _registered(registry: dict, kind: str, what: str, name: str) -> Callable:
    if kind not in registry:
        raise ValueError(f"no FLOPs count registered for {what}={kind!r}; add one to {name} in minimodels/flops.py "
                         f"(known: {sorted(registry)})")
    return registry[kind]


def count_flops(cfg: ModelConfig, context: int) -> FlopsCount:
    """Closed-form model FLOPs per token of `cfg` when each query attends to `context` keys."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context={context!r} must be a positive int: the number of keys each query attends to")
    attn = _registered(ATTENTION_COUNTS, cfg.attn, "attn", "ATTENTION_COUNTS")(cfg)
    ffns = [_registered(FFN_COUNTS, cfg.ffn, "ffn", "FFN_COUNTS")(cfg, i) for i in range(cfg.n_layers)]
    head = cfg.dim * cfg.vocab_size  # the output head D -> vocab_size; the input embedding is a lookup
    by_part = {
        "attention_linear": 2 * cfg.n_layers * attn.active_params,
        "attention_scores_values": cfg.n_layers * attn.flops_per_key * context,
        "ffn": 2 * sum(f.active_params for f in ffns),
        "head": 2 * head,
    }
    forward = sum(by_part.values())
    return FlopsCount(
        context=context,
        params=cfg.n_layers * attn.params + sum(f.params for f in ffns) + head,
        active_params=cfg.n_layers * attn.active_params + sum(f.active_params for f in ffns) + head,
        forward=forward, training=3 * forward, by_part=by_part)


def forward_flops_per_token(cfg: ModelConfig, context: int) -> int:
    """Forward FLOPs per token, each query attending to `context` keys."""
    return count_flops(cfg, context).forward


def training_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Forward + backward FLOPs per token when training on sequences of `seq_len` tokens."""
    return count_flops(cfg, seq_len).training


def counted_flops(model: nn.Module, tokens: Tensor, *, backward: bool = False, **forward_kwargs) -> int:
    """FLOPs torch's FlopCounterMode counts for one forward (and backward) pass of the real model.

    The backward pass takes gradients of every trainable parameter with torch.autograd.grad, so nothing is
    left in `.grad`; its scalar is the logits' sum (the loss adds no matmuls).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens, **forward_kwargs)  # (B, T, V)
        if backward:
            torch.autograd.grad(logits.float().sum(), params, allow_unused=True)  # e.g. experts no token chose
    return counter.get_total_flops()


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak FLOP/s (a fraction, 1.0 = the peak)."""
    if not peak_flops_per_s > 0 or not math.isfinite(peak_flops_per_s):
        raise ValueError(f"peak_flops_per_s={peak_flops_per_s!r} must be a positive finite number")
    return flops_per_token * tokens_per_s / peak_flops_per_s


# --- the machine's peak -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatmulPeak:
    """The best rate of square matmuls on this machine, with how it was measured."""

    flops_per_s: float  # the best size's median rate
    size: int  # the side n of that size's n×n @ n×n matmul
    dtype: str
    device: str
    threads: int  # torch.get_num_threads() during the measurement
    rows: list[dict]  # per size: n, matmuls per repeat, median and all repeats' FLOP/s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_matmuls(a: Tensor, b: Tensor, out: Tensor, count: int) -> float:
    _sync(a.device)
    t0 = perf_counter()
    for _ in range(count):
        torch.mm(a, b, out=out)
    _sync(a.device)
    return perf_counter() - t0


def _matmul_rate(n: int, *, repeats: int, min_time_s: float, dtype: torch.dtype, device: torch.device) -> dict:
    """Median FLOP/s of n×n @ n×n matmuls; each repeat runs enough of them to last about min_time_s."""
    gen = torch.Generator().manual_seed(n)  # a local generator: the caller's random stream is left alone
    a, b = (torch.randn(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    one = _time_matmuls(a, b, out, 1)  # warm-up (allocations, thread pool), then calibrate the count
    one = min(one, _time_matmuls(a, b, out, 1))
    count = max(1, math.ceil(min_time_s / max(one, 1e-9)))
    _time_matmuls(a, b, out, count)  # warm-up at the timed length
    flops = 2 * n**3 * count  # n³ multiply-adds per matmul
    rates = [flops / _time_matmuls(a, b, out, count) for _ in range(repeats)]
    return {"n": n, "matmuls_per_repeat": count, "median_flops_per_s": statistics.median(rates),
            "repeats_flops_per_s": rates}


def measure_matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024, 2048), *, repeats: int = 5,
                        min_time_s: float = 0.1, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> MatmulPeak:
    """This machine's matmul peak with the current torch thread count: the best size's median rate.

    Every size is warmed up, then timed `repeats` times; each repeat lasts at least about `min_time_s`.
    """
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes={sizes!r} must be a non-empty tuple of positive ints (matmul sides)")
    if repeats < 1 or not min_time_s >= 0:
        raise ValueError(f"need repeats >= 1 and min_time_s >= 0, got repeats={repeats}, min_time_s={min_time_s}")
    device = torch.device(device)
    rows = [_matmul_rate(n, repeats=repeats, min_time_s=min_time_s, dtype=dtype, device=device) for n in sizes]
    best = max(rows, key=lambda row: row["median_flops_per_s"])
    return MatmulPeak(flops_per_s=best["median_flops_per_s"], size=best["n"],
                      dtype=str(dtype).removeprefix("torch."), device=str(device),
                      threads=torch.get_num_threads(), rows=rows)


__all__ = ["ATTENTION_COUNTS", "count_flops", "counted_flops", "dense_ffn_count", "FFN_COUNTS",
           "FLOPS_CONVENTION", "FlopsCount", "forward_flops_per_token", "gqa_count", "MatmulPeak",
           "measure_matmul_peak", "mfu", "mha_count", "mla_count", "moe_count", "PartCount",
           "training_flops_per_token"]
