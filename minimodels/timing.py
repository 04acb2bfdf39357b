"""Timing before a long cell: how long will this training run take on *this* machine, right now?

A busy or slow machine can make a lesson's training cell many times slower than the measured times in the
course's map, with no warning. `announce_training_time` times a few real training steps (on a copy of the
model, so the run itself is untouched), prints the expected time of the whole run, and says how to switch
to the smoke profile. `measure_memory_bandwidth` times large copies: the memory half of lesson 02's
roofline (the matmul half is flops.measure_matmul_peak). Used in lessons/01_baseline_gpt.ipynb §1.6 and
lessons/02_kv_cache.ipynb §2.1.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .data import get_batch
from .profiles import autocast_dtype
from .train import TrainConfig, evaluate, lm_loss, make_optimizer

SMOKE_ADVICE = ('Too slow? Switch to the smoke profile (seconds per lesson): in the setup cell at the top write '
                '`env = setup(seed=0, profile="smoke")`, then Kernel > Restart Kernel and Run All Cells. '
                "Or start Jupyter with the environment variable set: "
                "`MINIMODELS_PROFILE=smoke python3 course.py lab`.")


@dataclass(frozen=True)
class TrainingEstimate:
    """Expected wall time of a `train()` run, extrapolated from a few timed steps."""

    seconds_per_step: float  # median of the timed steps (forward, backward, clip, optimizer)
    seconds_per_eval_batch: float  # one validation forward pass
    steps: int
    evaluations: int  # validation points train() will compute
    eval_batches: int

    @property
    def total_s(self) -> float:
        return self.steps * self.seconds_per_step + self.evaluations * self.eval_batches * self.seconds_per_eval_batch


def format_duration(seconds: float) -> str:
    """12.3 -> '12 s', 95 -> '1 min 35 s', 4000 -> '1 h 7 min'."""
    if seconds < 0:
        raise ValueError(f"seconds={seconds} must be >= 0")
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def count_evaluations(cfg: TrainConfig) -> int:
    """How many validation points train() computes: every eval_every steps, and always at the last step."""
    every = {s for s in range(cfg.steps) if cfg.eval_every and (s + 1) % cfg.eval_every == 0}
    return len(every | {cfg.steps - 1})


def estimate_training_time(model: nn.Module, data, cfg: TrainConfig, *, measure_steps: int = 3) -> TrainingEstimate:
    """Time `measure_steps` training steps (after one warm-up step) and one validation batch, on a copy.

    The copy, its own optimizer and its own batch generator leave `model`, the global random state and
    the real run untouched.
    """
    if measure_steps < 1:
        raise ValueError(f"measure_steps={measure_steps} must be >= 1")
    twin = copy.deepcopy(model).train()
    device = next(twin.parameters()).device
    amp = autocast_dtype(device)
    opt = make_optimizer(twin, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()

    def one_step() -> float:
        t0 = time.perf_counter()
        x, y = get_batch(data.train, cfg.batch_size, cfg.seq_len, generator=gen, device=device)
        with autocast():
            loss = lm_loss(twin, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(twin.parameters(), cfg.grad_clip)
        opt.step()
        loss.item()  # waits for the device
        return time.perf_counter() - t0

    one_step()  # warm-up: allocations, thread pools, kernel selection
    step_s = statistics.median(one_step() for _ in range(measure_steps))
    t0 = time.perf_counter()
    with autocast():
        evaluate(twin, data.val, cfg.batch_size, cfg.seq_len, 1)
    eval_s = time.perf_counter() - t0
    return TrainingEstimate(seconds_per_step=step_s, seconds_per_eval_batch=eval_s, steps=cfg.steps,
                            evaluations=count_evaluations(cfg), eval_batches=cfg.eval_batches)


def training_time_message(estimate: TrainingEstimate, profile_name: str, *, long_s: float = 60.0) -> str:
    """What to print before the run: the expected time, and the way to the smoke profile when it is long."""
    lines = [f"expected training time: about {format_duration(estimate.total_s)} "
             f"({estimate.steps} steps × {estimate.seconds_per_step * 1e3:,.0f} ms measured just now, "
             f"plus {estimate.evaluations} validations) in the {profile_name} profile"]
    if estimate.total_s > long_s and profile_name != "smoke":
        lines.append(SMOKE_ADVICE)
    return "\n".join(lines)


def announce_training_time(model: nn.Module, data, cfg: TrainConfig, profile_name: str, *,
                           measure_steps: int = 3, long_s: float = 60.0) -> TrainingEstimate:
    """Estimate the run (estimate_training_time), print training_time_message, return the estimate."""
    estimate = estimate_training_time(model, data, cfg, measure_steps=measure_steps)
    print(training_time_message(estimate, profile_name, long_s=long_s))
    return estimate


def measure_memory_bandwidth(n_bytes: int = 64 * 2**20, *, repeats: int = 5,
                             device: torch.device | str = "cpu") -> float:
    """Bytes per second a large copy moves on `device` (each copy reads and writes n_bytes): the fastest of
    `repeats` timed copies after a warm-up, since other programs can only make a copy slower."""
    if n_bytes < 2**20 or repeats < 1:
        raise ValueError(f"need n_bytes >= 1 MiB (got {n_bytes}) and repeats >= 1 (got {repeats})")
    device = torch.device(device)
    src = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    timed()  # warm-up: first touch of the pages
    best = min(timed() for _ in range(repeats))
    return 2 * src.numel() * 4 / best
