"""Benchmark of the FFN track (issue 9): dense, GShard top-2, fine-grained and DeepSeekMoE at matched parameters.

Four parts, each of which can be run on its own (`--skip-*`), merged across invocations into
benchmarks/results/moe_<profile>.json and .md (the schema: .briefs/moe_bench_schema.md, README "MoE" section):
1. training: every variant x seed (default 0,1,2) for the profile's full budget (`--steps` overrides): validation
   loss (all, and per domain: prose, code), parameters (total and activated), training FLOPs per token
   (activated: shared + routed top-k + router), routing statistics (MaxVio, dead experts, entropies) and curves.
   Losses do not depend on the machine's load, so this part may run on a busy machine.
2. ablation: lesson 08's balancing ablation on the DeepSeekMoE layout with the V3 (sigmoid) router: none,
   expert-level loss, sequence-wise loss, aux-loss-free bias; validation loss and MaxVio (`--ablation-seeds`).
3. timing: every variant back to back for a short run (warm-up excluded, rounds alternated, median), training
   tokens/s, MFU on activated FLOPs against the fp32 matmul peak measured before and after in the same
   invocation, and tokens/s over dense's. Run it on a QUIET machine.
4. dispatch: one FFN layer's forward + backward, per MoE dispatch implementation, against a dense FFN.
The markdown gives both views: per token (loss after the same tokens) and per second (the loss each variant had
reached when dense finished, from its validation curve and the timing part's tokens/s). Targets are reported as
met or not, never asserted. See benchmarks/README.md for the commands and how long each part takes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_moe.py --profile smoke          # every part, ~2 min
    .venv/bin/python benchmarks/bench_moe.py --skip-ablation --skip-timing --skip-dispatch   # cpu: losses
    .venv/bin/python benchmarks/bench_moe.py --skip-training --skip-ablation                 # cpu: timing (quiet)
"""

# Shapes: N tokens (batch x time), D = dim, A = activated FFN width (4 x dim), E = n_routed_experts

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from time import perf_counter

import torch
from bench_attention import add_common_options, mean_std, merge_runs, parse_ints, parse_names, run_parts
from bench_baseline import bench_peak, machine_info, peak_rss_mib, train_round, usable_cores, write_atomic

from minimodels import (
    DOMAINS,
    FeedForward,
    MiniModel,
    ModelConfig,
    MoE,
    TrainConfig,
    count_parameters,
    evaluate,
    fine_grained_config,
    get_profile,
    load_data,
    pick_device,
    train,
)
from minimodels import moe as moe_module
from minimodels.flops import FLOPS_CONVENTION, count_flops, mfu, training_flops_per_token
from minimodels.moe import DISPATCHES
from minimodels.profiles import autocast_dtype

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("training", "ablation", "timing", "dispatch")

# --- the variants ---------------------------------------------------------------------------------------

VARIANTS = ("dense", "gshard", "fine", "deepseekmoe")
ACTIVATED_WIDTH_PER_DIM = 4  # A = 4 x dim: the issue's pilot (128 wide, 512 activated); 8 | A for the splits
GSHARD_EXPERTS, GSHARD_TOP_K = 8, 2  # GShard: 8 experts of A/2, top-2 (the pilot's 8 x 256 at 128 wide)
SEGMENTS = 4  # fine-grained: each GShard expert split 4 ways (32 x A/8, top-8), as DeepSeekMoE 2B's m = 4
AUX_ALPHA = 0.01  # expert-level balance loss of every MoE variant: DeepSeekMoE 2B's alpha_1 (REFERENCE.md §3.1)

# lesson 08's ablation, on the deepseekmoe layout with the sigmoid (V3) router: {arm: config fields}
ARMS = {
    "none": {},
    "expert_loss": {"aux_loss_alpha": 0.01},  # DeepSeekMoE 2B's alpha_1, per sequence
    "seq_loss": {"aux_loss_alpha": 1e-4},  # V3's sequence-wise loss, its "extremely small" alpha (V3 §4.2)
    "bias": {"bias_update_speed": 1e-3},  # V3's aux-loss-free bias, gamma = 0.001 (V3 §4.2)
    "bias_seq_loss": {"bias_update_speed": 1e-3, "aux_loss_alpha": 1e-4},  # V3's full recipe (not by default)
}
DEFAULT_ARMS = ("none", "expert_loss", "seq_loss", "bias")
ABLATION_VARIANT = "deepseekmoe"
ABLATION_SCORE_FUNC = "sigmoid"

# targets of issue 9 (reported, never asserted)
SPEED_TARGET = 0.7  # DeepSeekMoE training tokens/s over dense's
GSHARD_GAP_TARGET = 0.04  # nats per token DeepSeekMoE must beat GShard by, on every seed
MIN_SEEDS = 3
PAPER_TABLE1 = {"deepseekmoe": 1.808, "gshard": 1.867, "dense": 2.060}  # DeepSeekMoE paper, Table 1 (2B, Pile)


def variant_configs(base: ModelConfig) -> dict[str, ModelConfig]:
    """The four variants at base's width, with equal activated FFN width A = 4 x dim in every layer.

    Every FFN layer is MoE (n_dense_layers=0), as in the DeepSeekMoE paper's 2B validation models (REFERENCE.md
    §3.1), which are the ones its Table 1 compares. inter_dim = A everywhere, so a dense first layer (should
    n_dense_layers be raised) would stay matched too.
    """
    a = ACTIVATED_WIDTH_PER_DIM * base.dim
    if a % (GSHARD_TOP_K * SEGMENTS):
        raise ValueError(f"dim={base.dim}: the activated width {a} must be divisible by "
                         f"{GSHARD_TOP_K * SEGMENTS} to split it into experts")
    gshard = replace(base, ffn="moe", inter_dim=a, n_dense_layers=0, n_routed_experts=GSHARD_EXPERTS,
                     n_activated_experts=GSHARD_TOP_K, moe_inter_dim=a // GSHARD_TOP_K, n_shared_experts=0,
                     score_func="softmax", route_scale=1.0, aux_loss_alpha=AUX_ALPHA, aux_loss_scope="sequence")
    return {"dense": replace(base, ffn="dense", inter_dim=a), "gshard": gshard,
            "fine": fine_grained_config(gshard, SEGMENTS),
            "deepseekmoe": fine_grained_config(gshard, SEGMENTS, isolate_shared=1)}


def arm_configs(base: ModelConfig, arms: tuple[str, ...] = tuple(ARMS)) -> dict[str, ModelConfig]:
    """The ablation arms: the deepseekmoe layout, sigmoid router, balancing switched by each arm alone."""
    off = replace(variant_configs(base)[ABLATION_VARIANT], score_func=ABLATION_SCORE_FUNC, aux_loss_alpha=0.0,
                  bias_update_speed=0.0)
    return {arm: replace(off, **ARMS[arm]) for arm in arms}


def parameter_counts(cfg: ModelConfig, seq_len: int) -> dict:
    """Total and activated parameters of MiniModel(cfg), counted on the model (activated: what one token
    multiplies or looks up: everything but the routed experts it does not choose)."""
    model = MiniModel(cfg)
    moe = [m for m in model.modules() if isinstance(m, MoE)]
    expert_total = sum(p.numel() for m in moe for p in m.experts.parameters())
    shared = sum(p.numel() for m in moe if m.shared_experts is not None for p in m.shared_experts.parameters())
    per_expert = 3 * cfg.dim * cfg.moe_inter_dim
    idle = sum((m.cfg.n_routed_experts - m.cfg.n_activated_experts) * per_expert for m in moe)
    ffn_dense = sum(p.numel() for b in model.layers if isinstance(b.ffn, FeedForward) for p in b.ffn.parameters())
    total, no_embed = count_parameters(model), count_parameters(model, exclude_embedding=True)
    return {"total": total, "without_embedding": no_embed, "activated": total - idle,
            "activated_without_embedding": no_embed - idle,
            "ffn_weights_total": expert_total + shared + ffn_dense,  # experts + shared + dense FFNs, no router
            "ffn_weights_activated": expert_total + shared + ffn_dense - idle,
            "router_params": sum(m.gate.weight.numel() for m in moe), "n_moe_layers": len(moe),
            "training_flops_per_token": training_flops_per_token(cfg, seq_len),
            "flops_active_params": count_flops(cfg, seq_len).active_params}


def matching_problems(counts: dict[str, dict]) -> list[str]:
    """What breaks the matched budget, from parameter_counts of each variant: the MoE variants must have equal
    total FFN weights, and every variant equal activated FFN weights (routers aside). Empty when matched."""
    problems = []
    moe = {n: c["ffn_weights_total"] for n, c in counts.items() if c["n_moe_layers"]}
    if len(set(moe.values())) > 1:
        problems.append(f"total FFN weights differ between the MoE variants: {moe}")
    active = {n: c["ffn_weights_activated"] for n, c in counts.items()}
    if len(set(active.values())) > 1:
        problems.append(f"activated FFN weights differ: {active}")
    return problems


def describe(cfg: ModelConfig) -> str:
    """One line: the FFN of a variant."""
    if cfg.ffn == "dense":
        return f"dense SwiGLU {cfg.inter_dim}"
    shared = f"{cfg.n_shared_experts} shared + " if cfg.n_shared_experts else ""
    return (f"{shared}{cfg.n_routed_experts} routed x {cfg.moe_inter_dim}, top-{cfg.n_activated_experts}, "
            f"{cfg.score_func}")


# --- plans ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much each part measures."""

    seeds: tuple[int, ...]  # part 1
    variants: tuple[str, ...]  # part 1
    ablation_seeds: tuple[int, ...]  # part 2
    arms: tuple[str, ...]  # part 2
    val_points: int  # validation evaluations per training run (the curve behind the per-second view)
    peak_sizes: tuple[int, ...]  # sides n of the n x n matmuls that measure the machine's peak
    timing_steps: int  # part 3: timed steps per variant and round
    timing_warmup: int  # part 3: untimed steps before them
    timing_rounds: int  # part 3: rounds, variant order reversed every other round; median
    dispatch_repeats: int  # part 4: timed rounds (median)


PLANS = {
    "smoke": Plan(seeds=(0, 1, 2), variants=VARIANTS, ablation_seeds=(0,), arms=DEFAULT_ARMS, val_points=10,
                  peak_sizes=(128, 256, 512), timing_steps=15, timing_warmup=3, timing_rounds=2,
                  dispatch_repeats=3),
    "cpu": Plan(seeds=(0, 1, 2), variants=VARIANTS, ablation_seeds=(0,), arms=DEFAULT_ARMS, val_points=24,
                peak_sizes=(256, 512, 1024, 2048), timing_steps=60, timing_warmup=5, timing_rounds=3,
                dispatch_repeats=5),
    "gpu": Plan(seeds=(0, 1, 2), variants=VARIANTS, ablation_seeds=(0,), arms=DEFAULT_ARMS, val_points=24,
                peak_sizes=(1024, 2048, 4096, 8192), timing_steps=50, timing_warmup=5, timing_rounds=3,
                dispatch_repeats=5),
}
QUICK = {"seeds": (0,), "val_points": 4, "timing_steps": 4, "timing_warmup": 2, "timing_rounds": 1,
         "dispatch_repeats": 1, "peak_sizes": (64, 128)}


# --- small helpers (pure; tested in tests/test_bench_moe.py) --------------------------------------------


def last_part(n_steps: int) -> int:
    """How many final steps the 'final' routing statistics average: the last 10% (a single step is noisy)."""
    return max(1, n_steps // 10)


def windows(values: list, every: int) -> list[tuple[int, list]]:
    """[(step after the window, the window's values)] for consecutive windows of `every` steps."""
    return [(i + every, values[i:i + every]) for i in range(0, len(values) - every + 1, every)]


def column_means(rows: list[list[float]]) -> list[float]:
    """Per-column mean of equal-length rows (per-layer means over steps)."""
    return [statistics.fmean(col) for col in zip(*rows)]


def routing_summary(history: dict, curve_points: int = 60) -> dict:
    """The routing statistics of a train() history of an MoE model: final values (the last 10% of steps),
    over-training means and down-sampled curves. Empty for a dense model."""
    if "max_vio" not in history:
        return {}
    n = len(history["max_vio"])
    tail = slice(n - last_part(n), n)
    load = [[sum(col) for col in zip(*layer)] for layer in zip(*history["expert_load"][tail])]  # (L, E)
    every = max(1, n // curve_points)
    out = {
        "moe_layers": history["moe_layers"],
        "max_vio": [round(v, 4) for v in column_means(history["max_vio"][tail])],
        "max_vio_last_step": [round(v, 4) for v in history["max_vio"][-1]],
        "max_vio_over_training": round(statistics.fmean(v for row in history["max_vio"] for v in row), 4),
        "dead_experts": [sum(c == 0 for c in layer) for layer in load],
        "load_entropy": [round(v, 4) for v in column_means(history["load_entropy"][tail])],
        "router_entropy": [round(v, 4) for v in column_means(history["router_entropy"][tail])],
        "final_load": load,
        "balance_loss_final": round(statistics.fmean(history["balance_loss"][tail]), 6),
        "routing_curve": {
            "step": [s for s, _ in windows(history["max_vio"], every)],
            "max_vio": [[round(v, 4) for v in column_means(w)] for _, w in windows(history["max_vio"], every)],
            "dead_experts": [[sum(c == 0 for c in (sum(col) for col in zip(*layer))) for layer in zip(*w)]
                             for _, w in windows(history["expert_load"], every)]},
    }
    out["max_vio_mean"] = round(statistics.fmean(out["max_vio"]), 4)
    if "router_bias" in history:
        bias_every = max(1, n // 20)
        steps = list(range(bias_every - 1, n, bias_every))
        out["bias_curve"] = {"step": [s + 1 for s in steps],
                             "bias": [[[round(b, 5) for b in layer] for layer in history["router_bias"][s]]
                                      for s in steps]}
    return out


def interpolate(curve: list[list[float]], step: float) -> tuple[float, bool]:
    """Linear interpolation of a [[step, loss], ...] curve at `step` -> (loss, exact). Before the first point:
    the first loss; past the last: the last loss with exact=False (the run did not get that far)."""
    if not curve:
        raise ValueError("an empty curve cannot be interpolated")
    if step >= curve[-1][0]:
        return curve[-1][1], step <= curve[-1][0]
    if step <= curve[0][0]:
        return curve[0][1], True
    for (s0, v0), (s1, v1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0), True
    raise AssertionError("unreachable: the curve's steps must increase")


def mean_curve(curves: list[list[list[float]]]) -> list[list[float]]:
    """Pointwise mean of curves that share their steps (runs of one variant with equal budgets)."""
    common = set.intersection(*({s for s, _ in c} for c in curves))
    by_step = [{s: v for s, v in c} for c in curves]
    return [[s, round(statistics.fmean(c[s] for c in by_step), 4)] for s in sorted(common)]


def summarize(runs: list[dict], key: str, order: tuple[str, ...]) -> list[dict]:
    """One row per (runs[key], steps): means over seeds, per domain, routing; for variants the gaps to dense and
    GShard trained with the same steps (this - that: negative = better) and the seed-paired differences."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run[key], run["steps"]), []).append(run)
    rows = []
    for (name, steps), group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        loss, std = mean_std([r["final_val_loss"] for r in group])
        moe = [r for r in group if r.get("max_vio")]
        row = {key: name, "steps": steps, "seeds": [r["seed"] for r in group], "n_seeds": len(group),
               "val_loss_mean": round(loss, 4), "val_loss_std": round(std, 4),
               "val_loss_sem": round(std / len(group) ** 0.5, 4),
               "val_loss_by_seed": {str(r["seed"]): r["final_val_loss"] for r in group},
               "val_loss_by_domain_mean": {d: round(statistics.fmean(r["val_loss_by_domain"][d] for r in group), 4)
                                           for d in group[0].get("val_loss_by_domain", {})},
               "max_vio_mean": round(statistics.fmean(r["max_vio_mean"] for r in moe), 4) if moe else None,
               "max_vio_over_training": (round(statistics.fmean(r["max_vio_over_training"] for r in moe), 4)
                                         if moe else None),
               "dead_experts_mean": round(statistics.fmean(sum(r["dead_experts"]) for r in moe), 2) if moe else None,
               "router_entropy_mean": (round(statistics.fmean(statistics.fmean(r["router_entropy"]) for r in moe), 4)
                                       if moe else None),
               "parameters": group[0]["parameters"], "activated_parameters": group[0]["activated_parameters"],
               "training_flops_per_token": group[0]["training_flops_per_token"],
               "val_curve_mean": mean_curve([r["val_curve"] for r in group])}
        if moe:
            curves = [r["routing_curve"] for r in moe]
            n_points = min(len(c["step"]) for c in curves)
            row["max_vio_curve_mean"] = [
                [curves[0]["step"][i], round(statistics.fmean(statistics.fmean(c["max_vio"][i]) for c in curves), 4)]
                for i in range(n_points)]
        rows.append(row)
    if key == "variant":
        for row in rows:
            for ref in ("dense", "gshard"):
                other = next((r for r in rows if r["variant"] == ref and r["steps"] == row["steps"]), None)
                row[f"gap_to_{ref}"] = round(row["val_loss_mean"] - other["val_loss_mean"], 4) if other else None
                if ref == "gshard":
                    row["paired_diff_to_gshard"] = {
                        seed: round(loss - other["val_loss_by_seed"][seed], 4)
                        for seed, loss in row["val_loss_by_seed"].items()
                        if other and seed in other["val_loss_by_seed"]}
    rank = {name: i for i, name in enumerate(order)}
    return sorted(rows, key=lambda r: (r["steps"], rank.get(r[key], len(rank)), r[key]))


def main_steps(summary: list[dict], default: int) -> int | None:
    """The budget the headline numbers use: the profile's steps if trained, else the most common in summary."""
    steps = [r["steps"] for r in summary]
    if not steps:
        return None
    return default if default in steps else statistics.mode(steps)


def per_second(summary: list[dict], timing: dict, steps: int, tokens_per_step: int) -> dict | None:
    """The equal wall-clock view: the loss each variant had reached when dense finished its `steps`.

    dense's time = steps x tokens_per_step / its tokens/s (timing part); in that time a variant at r tokens/s
    does time x r / tokens_per_step steps; its loss there is its seed-mean validation curve, interpolated.
    """
    rates = {r["variant"]: r["tokens_per_s"] for r in timing.get("rows", [])}
    rows = {r["variant"]: r for r in summary if r["steps"] == steps}
    if "dense" not in rates or "dense" not in rows:
        return None
    seconds = steps * tokens_per_step / rates["dense"]
    out = []
    for name, row in rows.items():
        if name not in rates:
            continue
        at = seconds * rates[name] / tokens_per_step
        loss, exact = interpolate(row["val_curve_mean"], at)
        out.append({"variant": name, "tokens_per_s": rates[name], "steps_in_that_time": round(at, 1),
                    "val_loss_at_that_time": round(loss, 4), "loss_per_token": row["val_loss_mean"],
                    "exact": exact})
    return {"reference": "dense", "seconds": round(seconds, 1), "steps": steps, "rows": out}


def targets(results: dict) -> list[dict]:
    """The issue's targets and the paper's ordering, each with its value and whether it was met."""
    rows = []

    def add(name: str, value, wanted: str, met: bool) -> None:
        rows.append({"name": name, "value": value, "target": wanted, "met": bool(met)})

    timing = {r["variant"]: r for r in results.get("timing", {}).get("rows", [])}
    if "deepseekmoe" in timing and "dense" in timing:
        ratio = round(timing["deepseekmoe"]["tokens_per_s"] / timing["dense"]["tokens_per_s"], 3)
        add("DeepSeekMoE / dense training tokens/s (equal activated parameters)", ratio, f">= {SPEED_TARGET}",
            ratio >= SPEED_TARGET)
    steps = main_steps(results.get("summary", []), results["settings"]["plan"].get("steps") or 0)
    rows_at = {r["variant"]: r for r in results.get("summary", []) if r["steps"] == steps}
    if "deepseekmoe" in rows_at and "gshard" in rows_at:
        diffs = rows_at["deepseekmoe"]["paired_diff_to_gshard"]
        worst = max(diffs.values()) if diffs else None  # the least negative: DeepSeekMoE's smallest advantage
        add(f"DeepSeekMoE better than GShard per token at {steps} steps: smallest advantage over the "
            f"{len(diffs)} seeds (nats)", None if worst is None else round(-worst, 4),
            f">= {GSHARD_GAP_TARGET} on every seed, >= {MIN_SEEDS} seeds",
            worst is not None and len(diffs) >= MIN_SEEDS and -worst >= GSHARD_GAP_TARGET)
    if all(n in rows_at for n in ("deepseekmoe", "gshard", "dense")):
        losses = [rows_at[n]["val_loss_mean"] for n in ("deepseekmoe", "gshard", "dense")]
        add("hypothesis, the DeepSeekMoE paper's ordering DeepSeekMoE < GShard < dense (Table 1 at 2B: "
            "1.808 < 1.867 < 2.060)", " < ".join(f"{v:.4f}" for v in losses), "holds",
            losses[0] < losses[1] < losses[2])
    return rows


def targets_text(rows: list[dict]) -> list[str]:
    out = ["", "## Targets (issue 9)", "", "| target | value | wanted | met |", "|---|---|---|---|"]
    return out + [f"| {t['name']} | {t['value']} | {t['target']} | {'yes' if t['met'] else 'NO'} |" for t in rows]


# --- 1-2. training runs -------------------------------------------------------------------------------------


def domain_losses(model, data, tcfg: TrainConfig) -> dict[str, float]:
    """Validation loss on each domain's documents alone (same windows every call; autocast as train()'s)."""
    device = next(model.parameters()).device
    amp = autocast_dtype(device)
    with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
        return {d: round(evaluate(model, ids, tcfg.batch_size, tcfg.seq_len, tcfg.eval_batches), 4)
                for d, ids in data.val_by_domain.items() if d in DOMAINS and ids.numel() > tcfg.seq_len + 1}


def train_run(name: str, cfg: ModelConfig, profile, data, device: torch.device, seed: int, steps: int | None,
              plan: Plan) -> dict:
    """Train one config with one seed (the seed fixes the init and the batches) and summarise the run."""
    torch.manual_seed(seed)
    model = MiniModel(cfg).to(device)
    n_steps = steps or profile.steps
    tcfg = TrainConfig.from_profile(profile, seed=seed, progress=False, steps=n_steps,
                                    eval_every=max(1, n_steps // plan.val_points))
    t0 = perf_counter()
    history = train(model, data, tcfg)
    every = max(1, n_steps // 60)
    counts = parameter_counts(cfg, tcfg.seq_len)
    return {
        "variant": name, "seed": seed, "steps": n_steps, "tokens": history["tokens"],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
        "final_val_loss": round(history["val_loss"][-1], 4), "final_train_loss": round(history["loss"][-1], 4),
        "val_loss_by_domain": domain_losses(model, data, tcfg),
        "val_curve": [[s + 1, round(v, 4)] for s, v in zip(history["val_step"], history["val_loss"])],
        "train_curve": [[s, round(statistics.fmean(w), 4)] for s, w in windows(history["loss"], every)],
        "parameters": counts["total"], "activated_parameters": counts["activated"],
        "training_flops_per_token": counts["training_flops_per_token"],
        "tokens_per_s_busy": round(history["tokens_per_s"], 1),  # this run's own clock: not the timing part's
        "wall_s": round(perf_counter() - t0, 1),
        **(routing_summary(history) or {"max_vio": None, "max_vio_mean": None, "dead_experts": None}),
    }


def bench_training(configs: dict[str, ModelConfig], profile, data, device, plan: Plan, steps: int | None,
                   seeds: tuple[int, ...], label: str) -> list[dict]:
    """Every config x seed, in seed-major order (a partial run still holds whole seeds)."""
    runs = []
    for seed in seeds:
        for name, cfg in configs.items():
            run = train_run(name, cfg, profile, data, device, seed, steps, plan)
            if label == "arm":  # the same record, named by its arm
                run = {"arm": run.pop("variant"), **run}
            vio = f", MaxVio {run['max_vio_mean']:.3f}" if run.get("max_vio_mean") is not None else ""
            print(f"  {name:>12} seed {seed}: val loss {run['final_val_loss']:.4f}{vio}, {run['wall_s']:.0f} s",
                  flush=True)
            runs.append(run)
    return runs


# --- 3. timing ----------------------------------------------------------------------------------------------


def bench_timing(configs: dict[str, ModelConfig], profile, data, device, plan: Plan) -> dict:
    """Training tokens/s of every variant, back to back, rounds alternated; MFU on activated FLOPs."""
    tcfg = TrainConfig.from_profile(profile, steps=plan.timing_warmup + plan.timing_steps, eval_every=0,
                                    eval_batches=1, progress=False, seed=0)
    load_before = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    peaks = [bench_peak(device, plan)]
    rates = {name: [] for name in configs}
    for r in range(plan.timing_rounds):
        for name in (list(configs) if r % 2 == 0 else list(reversed(configs))):
            torch.manual_seed(0)
            model = MiniModel(configs[name]).to(device)
            out = train_round(model, data, tcfg, plan.timing_warmup)
            rates[name].append(out["tokens"] / out["timed_s"])
            print(f"  round {r}: {name:>12} {rates[name][-1]:,.0f} tokens/s", flush=True)
    peaks.append(bench_peak(device, plan))
    peak = max(p["flops_per_s"] for p in peaks)
    dense = statistics.median(rates["dense"]) if "dense" in rates else None
    rows = []
    for name, values in rates.items():
        rate, flops = statistics.median(values), training_flops_per_token(configs[name], tcfg.seq_len)
        rows.append({"variant": name, "tokens_per_s": round(rate, 1),
                     "tokens_per_s_rounds": [round(v, 1) for v in values], "training_flops_per_token": flops,
                     "mfu": round(mfu(flops, rate, peak), 4), "vs_dense": round(rate / dense, 3) if dense else None})
    return {"steps": plan.timing_steps, "warmup_steps": plan.timing_warmup, "rounds": plan.timing_rounds,
            "threads": torch.get_num_threads(), "batch_size": tcfg.batch_size, "seq_len": tcfg.seq_len,
            "peaks": peaks, "peak_flops_per_s": peak, "load_avg_before": load_before,
            "load_avg_after": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "rows": rows}


# --- 4. dispatch --------------------------------------------------------------------------------------------


def layer_step(layer: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward + backward of `layer` on x (B, T, D), with its balance loss if it has one."""
    t0 = perf_counter()
    xx = x.detach().requires_grad_(True)
    y = layer(xx)
    loss = y.float().square().mean()
    aux = getattr(layer, "aux_loss", None)
    (loss if aux is None else loss + aux).backward()
    return perf_counter() - t0


@contextlib.contextmanager
def expert_loop():
    """Inside: dispatch "sorted" loops over the experts in Python even where torch has a CPU grouped GEMM."""
    saved = moe_module._use_grouped
    moe_module._use_grouped = lambda x, experts: False
    try:
        yield
    finally:
        moe_module._use_grouped = saved


LOOPED = " (expert loop)"  # suffix of the layer that runs "sorted" without the grouped GEMM


def bench_dispatch(configs: dict[str, ModelConfig], profile, device, plan: Plan) -> dict:
    """One FFN layer, forward + backward on a training batch: dense SwiGLU of width A, GShard, and the
    DeepSeekMoE layer on each dispatch ("sorted" with and without the grouped GEMM where torch has one).
    Random router (as at the start of training), rounds alternated, median."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(profile.batch_size, profile.seq_len, profile.model.dim, generator=gen).to(device)
    layers = {"dense FFN": FeedForward(profile.model.dim, configs["dense"].inter_dim)}
    for name in ("gshard", "deepseekmoe"):
        for dispatch in DISPATCHES:
            if name == "gshard" and dispatch != "sorted":
                continue
            torch.manual_seed(0)
            layers[f"{name} / {dispatch}"] = MoE(configs[name], 0, dispatch=dispatch)
    if moe_module._use_grouped(x.flatten(0, 1), layers["deepseekmoe / sorted"].experts):
        layers["deepseekmoe / sorted" + LOOPED] = layers["deepseekmoe / sorted"]
    layers = {k: v.to(device).train() for k, v in layers.items()}
    times = {k: [] for k in layers}
    for r in range(plan.dispatch_repeats + 1):  # round 0 warms up
        for name in (list(layers) if r % 2 == 0 else list(reversed(layers))):
            with expert_loop() if name.endswith(LOOPED) else contextlib.nullcontext():
                seconds = statistics.fmean(layer_step(layers[name], x) for _ in range(3))
            if r:
                times[name].append(seconds)
    dense = statistics.median(times["dense FFN"])
    rows = [{"name": k, "ms": round(statistics.median(v) * 1e3, 2), "vs_dense": round(dense / statistics.median(v), 3)}
            for k, v in times.items()]
    return {"tokens": x.shape[0] * x.shape[1], "dim": x.shape[2], "threads": torch.get_num_threads(),
            "repeats": plan.dispatch_repeats, "rows": rows}


# --- results ----------------------------------------------------------------------------------------------


def merge_part_runs(results: dict, old: dict, part: str, key: str, configs_key: str) -> None:
    """Runs of this invocation and of the previous file, by (key, seed, steps); stale configs dropped."""
    new_runs = results.get(part, {}).get("runs", [])
    old_runs = old.get(part, {}).get("runs", [])
    if not new_runs and not old_runs:
        return
    new_cfg, old_cfg = results[configs_key], old.get(configs_key, {})
    renamed = [{**r, "variant": r[key]} for r in old_runs], [{**r, "variant": r[key]} for r in new_runs]
    merged = merge_runs(*renamed, old_cfg, new_cfg)
    if key != "variant":
        for run in merged:
            del run["variant"]
    results.setdefault(part, {})["runs"] = merged


def merge_previous(results: dict, path: Path) -> None:
    """Merge this invocation into the previous result file: training and ablation runs by (name, seed, steps);
    timing and dispatch kept from it when not measured now (marked with the run they came from)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    if "ablation" in old:
        old["ablation_configs"] = old["ablation"].get("configs", {})
    merge_part_runs(results, old, "training", "variant", "configs")
    merge_part_runs(results, old, "ablation", "arm", "ablation_configs")
    for part in ("timing", "dispatch"):
        if part not in results and part in old:
            results[part] = {**old[part], "from_run": old[part].get("from_run", old["date"])}


def finish(results: dict, plan_steps: int, tokens_per_step: int) -> None:
    """Summaries, the per-second view and the targets, from whatever the results hold now."""
    if results.get("training", {}).get("runs"):
        results["summary"] = summarize(results["training"]["runs"], "variant", VARIANTS)
    if results.get("ablation", {}).get("runs"):
        results["ablation"]["summary"] = summarize(results["ablation"]["runs"], "arm", tuple(ARMS))
    steps = main_steps(results.get("summary", []), plan_steps)
    view = per_second(results["summary"], results["timing"], steps, tokens_per_step) \
        if "timing" in results and results.get("summary") else None
    if view:
        results["per_second"] = view
    results["targets"] = targets(results)


def load_results(profile: str = "cpu", folder: Path = RESULTS) -> dict | None:
    """The saved results of `profile` (a dict, schema in benchmarks/README.md), or None if not run yet."""
    path = Path(folder) / f"moe_{profile}.json"
    return json.loads(path.read_text()) if path.is_file() else None


# --- markdown -----------------------------------------------------------------------------------------------


def _f(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def markdown_variants(results: dict) -> list[str]:
    out = ["", f"## Variants (activated FFN width {results['activated_ffn_width']} in every layer, all layers MoE)",
           "", "| variant | FFN | params | activated | FFN weights (total / activated) | router | "
           "training FLOPs/token |", "|---|---|---|---|---|---|---|"]
    for name, cfg in results["configs"].items():
        p = results["parameters"][name]
        out.append(f"| {name} | {describe(ModelConfig.from_dict(cfg))} | {p['total']:,} | {p['activated']:,} | "
                   f"{p['ffn_weights_total']:,} / {p['ffn_weights_activated']:,} | {p['router_params']:,} | "
                   f"{p['training_flops_per_token']:,} |")
    out += [f"\n**Not matched**: {problem}" for problem in results.get("matching_problems", [])]
    out.append("\nParams count embeddings and norms (`count_parameters`); activated = what one token multiplies or "
               "looks up (all but the routed experts it does not choose); FLOPs count activated matmuls: shared + "
               "top-k routed experts + router (minimodels/flops.py). The only mismatch is the router's D x E "
               f"weights per layer. MoE variants: expert-level balance loss alpha = {AUX_ALPHA} per sequence.")
    return out


def markdown_training(results: dict) -> list[str]:
    out = ["", "## 1. Per token: validation loss after the same training tokens (mean ± std over seeds)", "",
           "| variant | steps | seeds | val loss | prose | code | gap to dense | gap to GShard | per seed vs GShard | "
           "MaxVio (final) | dead experts (all layers) |", "|" + "---|" * 11]
    for r in results["summary"]:
        dom = r["val_loss_by_domain_mean"]
        paired = ", ".join(f"{v:+.3f}" for v in r.get("paired_diff_to_gshard", {}).values())
        out.append(f"| {r['variant']} | {r['steps']} | {r['n_seeds']} | {r['val_loss_mean']:.4f} ± "
                   f"{r['val_loss_std']:.4f} | {_f(dom.get('prose'), '.4f')} | {_f(dom.get('code'), '.4f')} | "
                   f"{_f(r['gap_to_dense'], '+.4f')} | {_f(r['gap_to_gshard'], '+.4f')} | {paired or '-'} | "
                   f"{_f(r['max_vio_mean'], '.3f')} | {_f(r['dead_experts_mean'], '.1f')} |")
    out.append("\nGaps are this minus that (negative = better). 'Per seed vs GShard': the same seed gives the same "
               "batches, so each seed's difference is a paired comparison. MaxVio = max load / mean load - 1, mean "
               "over the last 10% of steps and over layers (0 = balanced); dead experts: no token in the last 10% "
               "of steps, summed over layers, mean over seeds.")
    return out


def markdown_per_second(view: dict) -> list[str]:
    out = ["", f"## 2. Per second: validation loss when dense finishes its {view['steps']} steps "
           f"({view['seconds']:,.1f} s at its measured tokens/s)", "",
           "| variant | tokens/s | steps in that time | val loss then | val loss per token (full budget) |",
           "|---|---|---|---|---|"]
    for r in view["rows"]:
        note = "" if r["exact"] else " (ran out of curve: its final loss)"
        out.append(f"| {r['variant']} | {r['tokens_per_s']:,.0f} | {r['steps_in_that_time']:,.0f} | "
                   f"{r['val_loss_at_that_time']:.4f}{note} | {r['loss_per_token']:.4f} |")
    out.append("\nMethod: dense's time = its steps x tokens per step / its tokens/s (part 3); a variant at r tokens/s "
               "does time x r / tokens per step steps in that time, and its loss there is read off its seed-mean "
               "validation curve (linear interpolation between evaluations). That point is mid-schedule for a slower "
               "variant (its learning rate had not decayed yet), so the view slightly favours the faster model; the "
               "exact alternative trains the slower variant for that many steps (`--variants NAME --steps N`).")
    return out


def markdown_ablation(ab: dict) -> list[str]:
    out = ["", f"## 3. Balancing ablation ({ABLATION_VARIANT} layout, {ABLATION_SCORE_FUNC} router)", "",
           "| arm | settings | steps | seeds | val loss | MaxVio final | MaxVio over training | "
           "dead experts (all layers) | router entropy |", "|" + "---|" * 9]
    for r in ab["summary"]:
        settings = ", ".join(f"{k}={v}" for k, v in ARMS.get(r["arm"], {}).items()) or "none"
        out.append(f"| {r['arm']} | {settings} | {r['steps']} | {r['n_seeds']} | {r['val_loss_mean']:.4f} ± "
                   f"{r['val_loss_std']:.4f} | {_f(r['max_vio_mean'], '.3f')} | "
                   f"{_f(r['max_vio_over_training'], '.3f')} | {_f(r['dead_experts_mean'], '.1f')} | "
                   f"{_f(r['router_entropy_mean'], '.3f')} |")
    out.append("\nOne sigmoid router for every arm, so only the balancing differs (the bias is V3's method, made for "
               "sigmoid scores). With the scores renormalised over all experts, the expert-level and sequence-wise "
               "losses are one formula: the arms differ in strength, as DeepSeekMoE (0.01) and V3 (1e-4) do.")
    return out


def markdown_timing(t: dict) -> list[str]:
    out = ["", f"## 4. Training speed ({t['threads']} thread(s), {t['steps']} timed steps after {t['warmup_steps']}, "
           f"median of {t['rounds']} rounds, fp32 peak {t['peak_flops_per_s'] / 1e9:,.1f} GFLOP/s, load "
           f"{t['load_avg_before']} -> {t['load_avg_after']})", "",
           "| variant | tokens/s | x dense | training FLOPs/token (activated) | MFU |", "|---|---|---|---|---|"]
    for r in t["rows"]:
        out.append(f"| {r['variant']} | {r['tokens_per_s']:,.0f} | {_f(r['vs_dense'], '.2f')} | "
                   f"{r['training_flops_per_token']:,} | {r['mfu']:.1%} |")
    return out


def markdown_dispatch(d: dict) -> list[str]:
    out = ["", f"## 5. One FFN layer, forward + backward ({d['tokens']} tokens x {d['dim']}, {d['threads']} "
           f"thread(s), median of {d['repeats']})", "", "| layer / dispatch | ms | x dense |", "|---|---|---|"]
    return out + [f"| {r['name']} | {r['ms']:.1f} | {r['vs_dense']:.2f} |" for r in d["rows"]]


def markdown(results: dict) -> str:
    m = results["machine"]
    out = [f"# MoE benchmark (issue 9), profile `{results['profile']}`", "",
           f"{results['date']} | {m['cpu']} | {m['cores']} cores ({m['usable_cores']} usable) | torch {m['torch']}, "
           f"{m['torch_threads']} threads | device {m['device']} | load at start {m.get('load_avg_at_start')}"]
    out += markdown_variants(results)
    if results.get("summary"):
        out += markdown_training(results)
    if results.get("per_second"):
        out += markdown_per_second(results["per_second"])
    if results.get("ablation", {}).get("summary"):
        out += markdown_ablation(results["ablation"])
    for part, writer in (("timing", markdown_timing), ("dispatch", markdown_dispatch)):
        if part in results:
            out += writer(results[part])
            if "from_run" in results[part]:
                out.append(f"\n(Carried over from the run of {results[part]['from_run']}.)")
    if results["targets"]:
        out += targets_text(results["targets"])
    out += ["", "Part wall times of this invocation (s): "
            + (", ".join(f"{k} {v:.0f}" for k, v in results["part_wall_s"].items()) or "none") + ".",
            f"FLOPs convention (minimodels/flops.py): {FLOPS_CONVENTION}."]
    return "\n".join(out) + "\n"


# --- command line -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="smoke, cpu or gpu (default cpu)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or usable_cores()),
                   help="torch threads (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("--quick", action="store_true", help="one seed, short timing (every part runs)")
    p.add_argument("--seeds", help="comma-separated seeds of part 1 (default 0,1,2)")
    p.add_argument("--variants", help=f"comma-separated variants of part 1, or 'all' (default {','.join(VARIANTS)})")
    p.add_argument("--steps", type=int, help="training steps per run in parts 1-2 (default: the profile's budget)")
    p.add_argument("--ablation-seeds", help="comma-separated seeds of part 2 (default 0)")
    p.add_argument("--arms", help=f"comma-separated ablation arms (default {','.join(DEFAULT_ARMS)}; "
                                  f"known: {','.join(ARMS)})")
    p.add_argument("--timing-steps", type=int, help="timed steps per variant and round in part 3")
    p.add_argument("--timing-rounds", type=int, help="rounds of part 3 (median)")
    add_common_options(p, PARTS, RESULTS, "print the variants' parameters and FLOPs and exit")
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace, profile_name: str) -> Plan:
    """The profile's plan, shrunk by --quick, then the explicit options."""
    plan = PLANS[profile_name]
    if args.quick:
        plan = replace(plan, **QUICK)

    overrides = {"seeds": args.seeds and parse_ints(args.seeds),
                 "ablation_seeds": args.ablation_seeds and parse_ints(args.ablation_seeds),
                 "variants": args.variants and parse_names(args.variants, VARIANTS, "variants"),
                 "arms": args.arms and parse_names(args.arms, tuple(ARMS), "arms"),
                 "timing_steps": args.timing_steps, "timing_rounds": args.timing_rounds}
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    if (min(plan.timing_steps, plan.timing_rounds) < 1 or not plan.seeds or not plan.ablation_seeds
            or (args.steps is not None and args.steps < 2)):
        raise SystemExit("need --timing-steps, --timing-rounds >= 1, --steps >= 2 and at least one seed")
    return plan


def list_variants(configs: dict[str, ModelConfig], seq_len: int) -> None:
    print(f"{'variant':>12} {'FFN':>44} {'params':>10} {'activated':>10} {'FLOPs/token':>12}")
    for name, cfg in configs.items():
        p = parameter_counts(cfg, seq_len)
        print(f"{name:>12} {describe(cfg):>44} {p['total']:>10,} {p['activated']:>10,} "
              f"{p['training_flops_per_token']:>12,}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    profile = get_profile(args.profile)
    plan = make_plan(args, profile.name)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = load_data(profile.model.vocab_size)
    base = replace(profile.model, vocab_size=data.tokenizer.vocab_size)
    configs = variant_configs(base)
    if args.list:
        list_variants(configs, profile.seq_len)
        return {}
    started = perf_counter()
    results = {"profile": profile.name, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(device, torch.get_num_threads()),
               "settings": {"plan": {**plan.__dict__, "steps": args.steps or profile.steps,
                                     "batch_size": profile.batch_size, "seq_len": profile.seq_len},
                            "quick": args.quick},
               "part_wall_s": {}, "activated_ffn_width": ACTIVATED_WIDTH_PER_DIM * base.dim,
               "configs": {n: c.to_dict() for n, c in configs.items()},
               "parameters": {n: parameter_counts(c, profile.seq_len) for n, c in configs.items()},
               "ablation_configs": {n: c.to_dict() for n, c in arm_configs(base).items()}}
    results["matching_problems"] = matching_problems(results["parameters"])
    for problem in results["matching_problems"]:
        print(f"WARNING: the variants are not matched: {problem}", flush=True)
    print(f"MoE benchmark: profile {profile.name} on {device}, {torch.get_num_threads()} threads", flush=True)
    chosen = {n: configs[n] for n in plan.variants}
    parts = {
        "training": lambda: {"runs": bench_training(chosen, profile, data, device, plan, args.steps, plan.seeds,
                                                    "variant")},
        "ablation": lambda: {"runs": bench_training(arm_configs(base, plan.arms), profile, data, device, plan,
                                                    args.steps, plan.ablation_seeds, "arm")},
        "timing": lambda: bench_timing(configs, profile, data, device, plan),
        "dispatch": lambda: bench_dispatch(configs, profile, device, plan),
    }
    run_parts(parts, args, results)

    json_path = args.out / f"moe_{profile.name}.json"
    if not args.fresh:
        merge_previous(results, json_path)
    if "ablation" in results:
        results["ablation"]["configs"] = results["ablation_configs"]
    del results["ablation_configs"]
    finish(results, args.steps or profile.steps, profile.batch_size * profile.seq_len)
    results["peak_rss_mib"] = peak_rss_mib("self")
    results["benchmark_wall_s"] = round(perf_counter() - started, 1)
    text = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, json.dumps(results, indent=1) + "\n")
    write_atomic(json_path.with_suffix(".md"), text)
    print("\n" + text + f"\nbenchmark took {results['benchmark_wall_s']:.0f} s; wrote {json_path} (.md)")
    return results


if __name__ == "__main__":
    main()
