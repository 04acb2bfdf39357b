"""Training: AdamW, linear warmup then cosine decay, gradient clipping, validation loss, checkpoints.

`train(model, data, cfg)` is the one loop of the course. It records the loss of every step, evaluates on the
validation split, saves checkpoints atomically, and resumes an interrupted run exactly where it stopped
(same batches, same optimizer state, so the same loss curve). The command line lives in cli.py.
For a model with MoE layers it also adds their balance losses, applies the aux-loss-free bias update and
records the routing statistics (balance.py; lesson 08).
Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .balance import balance_loss, record_routing, update_router_bias
from .checkpoint import (
    CheckpointError,
    check_model_config,
    check_resume,
    ensure_writable,
    load_checkpoint,
    resume_differences,
    save_atomic,
)
from .data import get_batch, iter_eval_batches
from .profiles import autocast_dtype
from .stopping import DeferInterrupt, TrainingDivergedError, diverged_message, interrupted

_INT_LIMITS = {  # field: (smallest, largest) accepted; the largest are far past any run the course needs
    "steps": (1, 10**9), "batch_size": (1, 2**16), "seq_len": (1, 2**20), "eval_batches": (1, 10**6),
    "warmup_steps": (0, 10**9), "eval_every": (0, 10**9), "checkpoint_every": (0, 10**9),
    "seed": (-(2**63), 2**64 - 1),  # what torch.Generator.manual_seed accepts
}
_FLOAT_FIELDS = ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip")


@dataclass(frozen=True)
class TrainConfig:
    """A run's budget, optimizer and saving settings. Checked when created (whole numbers, finite values, sane
    ranges; the message names the field), so a typo fails here instead of training to nan."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1  # on matrices and embeddings only, as DeepSeek-V3 (0.1)
    beta1: float = 0.9
    beta2: float = 0.95  # DeepSeek-V2/V3 use (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_every: int = 50  # 0 evaluates only at the end
    eval_batches: int = 8
    seed: int = 0  # seeds the batch sampler
    checkpoint_path: str | None = None
    checkpoint_every: int = 0  # 0 saves only at the end (and on interrupt)
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_LIMITS.items():
            self._set(name, _whole_number(name, getattr(self, name), low, high))
        for name in _FLOAT_FIELDS:
            self._set(name, _finite_number(name, getattr(self, name)))
        if not 0 < self.lr <= 1:
            raise ValueError(f"lr={self.lr} must be in (0, 1]: AdamW moves each weight by about lr per step "
                             f"(the course uses 1e-3 to 3e-3)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]: the cosine's floor, as a "
                             f"fraction of lr")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1): it is a moving-average factor "
                                 f"(DeepSeek uses beta1=0.9, beta2=0.95)")
        for name in ("grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 switches it off)")
        if self.lr * self.weight_decay >= 1:
            raise ValueError(f"weight_decay={self.weight_decay} with lr={self.lr}: each step multiplies the weights by "
                             f"1 - lr * weight_decay <= 0; use a weight_decay below {1 / self.lr:g} (DeepSeek: 0.1)")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress={self.progress!r} must be True or False")
        self._set("checkpoint_path", _checkpoint_path(self.checkpoint_path))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # normalize in place (frozen): checkpoints must hold plain values

    @classmethod
    def from_profile(cls, profile, **overrides) -> TrainConfig:
        """The training budget of a compute profile (profiles.py), with optional overrides."""
        base = dict(steps=profile.steps, batch_size=profile.batch_size, seq_len=profile.seq_len, lr=profile.lr,
                    warmup_steps=profile.warmup_steps, eval_every=profile.eval_every,
                    eval_batches=profile.eval_batches)
        return cls(**{**base, **overrides})


def _whole_number(name: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        raise ValueError(f"{name}={value!r} must be an int: write {name}={int(value)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} must be a whole number (an int)")
    if not low <= value <= high:
        raise ValueError(f"{name}={value} must be between {low} and {high:,}")
    return int(value)


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} must be a finite number (nan and inf train to nan)")
    return float(value)


def _checkpoint_path(path) -> str | None:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"checkpoint_path={path!r} must be a file path (str or Path) or None")
    return os.path.expanduser(os.fspath(path))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matrices, embeddings) and none on norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy.  x, y (B, T) -> scalar"""
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


@torch.no_grad()
def evaluate(model: nn.Module, ids: Tensor, batch_size: int, seq_len: int, n_batches: int) -> float:
    """Mean loss over fixed, evenly spaced validation windows (no randomness)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = [lm_loss(model, x.to(device), y.to(device)).item()
              for x, y in iter_eval_batches(ids, batch_size, seq_len, n_batches)]
    model.train(was_training)
    return sum(losses) / len(losses)


def _new_history() -> dict:
    return {"step": [], "loss": [], "lr": [], "val_step": [], "val_loss": [], "train_time_s": 0.0,
            "tokens": 0}


def _save(path: str, model: nn.Module, opt: torch.optim.Optimizer, step: int, history: dict,
          gen: torch.Generator, cfg: TrainConfig, saved_step: int | None) -> None:
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never replace a good checkpoint with broken weights
        what = f"after step {step - 1} the weights {bad[:3]} hold nan or inf"
        raise TrainingDivergedError(diverged_message(what, cfg, saved_step), history=history)
    save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "config": model.cfg.to_dict(),
                 "train_config": asdict(cfg), "step": step, "history": history,
                 "sampler_state": gen.get_state()}, path)


def _diverged(step: int, loss: float, norm: float | None, cfg: TrainConfig, saved_step: int | None,
              history: dict) -> None:
    norm_text = "was not measured (grad_clip=0)" if norm is None else norm
    what = f"at step {step} the loss is {loss} and the gradient norm {norm_text}"
    raise TrainingDivergedError(diverged_message(what, cfg, saved_step), history=history)


def _resume(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, cfg: TrainConfig,
            device: torch.device) -> tuple[dict, int]:
    """Load cfg.checkpoint_path into model, optimizer and sampler, after checking it is this run's."""
    ckpt = check_resume(cfg, map_location=device)
    check_model_config(ckpt, model, cfg.checkpoint_path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    gen.set_state(ckpt["sampler_state"].cpu())
    return ckpt["history"], ckpt["step"]


def train(model: nn.Module, data, cfg: TrainConfig, *, resume: bool = False, plot: bool = False,
          callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train `model` on `data.train`, evaluating on `data.val`; return the history dict.

    resume=True continues from cfg.checkpoint_path, with the same settings (it checks them). plot=True shows a
    live plotly loss curve in a notebook. `callback(step, history)` runs after every step.
    Ctrl-C (or the notebook's stop button) lets the step in flight finish, saves it to cfg.checkpoint_path if
    set, and raises TrainingInterrupted (a KeyboardInterrupt: Run All stops instead of running the next cells
    with a half-trained model); resume=True then continues the same loss curve. A nan or inf loss or gradient
    norm raises TrainingDivergedError, and no broken weights are saved.
    """
    device = next(model.parameters()).device
    amp = autocast_dtype(device)
    if cfg.checkpoint_path:
        ensure_writable(cfg.checkpoint_path)  # now, not after the whole run
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)  # the only randomness in the loop: batch offsets
    if resume and not cfg.checkpoint_path:
        raise ValueError("resume=True needs TrainConfig(checkpoint_path=...)")
    history, start = _resume(model, opt, gen, cfg, device) if resume else (_new_history(), 0)
    live = bar = None
    if plot:
        from .viz import LiveLossPlot

        live = LiveLossPlot(history)
    if cfg.progress:
        from tqdm import tqdm  # a text bar: unlike tqdm's notebook widget, it still reads after a reload

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step")
    model.train()
    steps_done, saved_step = start, (start if resume else None)  # steps_done: None while a step is in flight
    try:
        with DeferInterrupt("saving" if cfg.checkpoint_path else "stopping") as stop:
            for step in range(start, cfg.steps):
                steps_done = None
                t0 = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, cfg)
                x, y = get_batch(data.train, cfg.batch_size, cfg.seq_len, generator=gen, device=device)
                with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                    loss = lm_loss(model, x, y)
                    balance = balance_loss(model)  # MoE balance losses of this forward; None for other models
                opt.zero_grad(set_to_none=True)
                (loss if balance is None else loss + balance).backward()
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
                opt.step()
                update_router_bias(model)  # V3's aux-loss-free bias, from this batch's loads (MoE with γ > 0)
                # one transfer, which also waits for the device, so the timing below is honest
                loss_value, norm_value = (loss.item(), 0.0) if norm is None else \
                    torch.stack((loss.detach(), norm.float())).tolist()
                history["train_time_s"] += time.perf_counter() - t0
                if not (math.isfinite(loss_value) and math.isfinite(norm_value)):  # free: plain floats
                    _diverged(step, loss_value, norm_value if norm is not None else None, cfg, saved_step, history)
                history["tokens"] += x.numel()
                history["step"].append(step)
                history["loss"].append(loss_value)
                history["lr"].append(opt.param_groups[0]["lr"])
                record_routing(model, history, balance)  # MoE only: balance loss, loads, MaxVio, dead experts
                last = step == cfg.steps - 1
                if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
                    with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                        val = evaluate(model, data.val, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
                    history["val_step"].append(step)
                    history["val_loss"].append(val)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}",
                                    val=f"{history['val_loss'][-1]:.3f}" if history["val_loss"] else "-")
                if live is not None:
                    live.update(history)
                if cfg.checkpoint_path and (last or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)):
                    _save(cfg.checkpoint_path, model, opt, step + 1, history, gen, cfg, saved_step)
                    saved_step = step + 1
                steps_done = step + 1  # a consistent state: weights, optimizer, sampler and history agree
                if callback is not None:
                    callback(step, history)
                if stop.requested:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if cfg.checkpoint_path and steps_done is not None and saved_step != steps_done:
            _save(cfg.checkpoint_path, model, opt, steps_done, history, gen, cfg, saved_step)
            saved_step = steps_done
        raise interrupted(cfg, steps_done, saved_step, history) from None
    finally:
        if bar is not None:
            bar.close()
        if live is not None and hasattr(live, "finish"):
            live.finish(history)  # a static figure of the run replaces the live chart
    history["tokens_per_s"] = history["tokens"] / max(history["train_time_s"], 1e-9)
    return history


def baseline_path(profile, data) -> Path:
    """Where the course keeps the trained baseline of a profile (in the data cache, keyed by data and config)."""
    import hashlib

    from .data import cache_dir

    key = hashlib.sha256(f"{profile!r}|{data.manifest['tokenizer']['sha256']}".encode()).hexdigest()[:10]
    return cache_dir() / "checkpoints" / f"baseline-{profile.name}-{key}.pt"


def baseline_model(profile=None, *, data=None, device=None, retrain: bool = False, plot: bool = False,
                   progress: bool = True) -> tuple[nn.Module, dict]:
    """The profile's trained baseline GPT and its history: loaded if lesson 01 (or an earlier call) saved it,
    else trained now with the profile's budget (seed 0) and saved for the next lesson. A corrupt or unusable
    saved baseline is reported and trained again; an interrupted one is resumed."""
    from dataclasses import replace

    from .data import load_data
    from .model import MiniModel
    from .profiles import get_profile, pick_device

    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    data = data if data is not None else load_data(profile.model.vocab_size)
    device = pick_device(device) if device is None or isinstance(device, str) else device
    path = baseline_path(profile, data)
    torch.manual_seed(0)
    model = MiniModel(replace(profile.model, vocab_size=data.tokenizer.vocab_size)).to(device)
    cfg = TrainConfig.from_profile(profile, checkpoint_path=str(path), progress=progress)
    ckpt = None if retrain or not path.is_file() else _usable_baseline(path, model, device)
    if ckpt is not None and ckpt["step"] >= cfg.steps:
        model.load_state_dict(ckpt["model"])
        return model.eval(), ckpt["history"]
    resume = ckpt is not None and not resume_differences(ckpt, cfg)
    if resume:
        print(f"resuming the interrupted baseline at step {ckpt['step']} of {cfg.steps} ({path})", file=sys.stderr)
    history = train(model, data, cfg, plot=plot, resume=resume)
    return model.eval(), history


def _usable_baseline(path: Path, model: nn.Module, device: torch.device) -> dict | None:
    """The saved baseline's checkpoint, or None (said on stderr) if it is corrupt or of another model."""
    try:
        ckpt = load_checkpoint(path, map_location=device)
        check_model_config(ckpt, model, path)
        return ckpt
    except CheckpointError as err:
        print(f"the saved baseline cannot be used, so it is trained again now: {err}", file=sys.stderr)
        return None
