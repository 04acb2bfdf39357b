"""Training: AdamW, linear warmup then cosine decay, gradient clipping, validation loss, checkpoints.

`train(model, data, cfg)` is the one loop of the course. It records the loss of every step, evaluates on the
validation split, saves checkpoints atomically, and resumes an interrupted run exactly where it stopped
(same batches, same optimizer state, so the same loss curve). The command line lives in cli.py.
Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_atomic
from .data import get_batch, iter_eval_batches
from .profiles import autocast_dtype


@dataclass(frozen=True)
class TrainConfig:
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
        for name in ("steps", "batch_size", "seq_len", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got lr={self.lr}, "
                             f"min_lr_ratio={self.min_lr_ratio}")

    @classmethod
    def from_profile(cls, profile, **overrides) -> TrainConfig:
        """The training budget of a compute profile (profiles.py), with optional overrides."""
        base = dict(steps=profile.steps, batch_size=profile.batch_size, seq_len=profile.seq_len, lr=profile.lr,
                    warmup_steps=profile.warmup_steps, eval_every=profile.eval_every,
                    eval_batches=profile.eval_batches)
        return cls(**{**base, **overrides})


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
          gen: torch.Generator, cfg: TrainConfig) -> None:
    save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "config": model.cfg.to_dict(),
                 "train_config": asdict(cfg), "step": step, "history": history,
                 "sampler_state": gen.get_state()}, path)


def train(model: nn.Module, data, cfg: TrainConfig, *, resume: bool = False, plot: bool = False,
          callback: Callable[[int, dict], None] | None = None) -> dict:
    """Train `model` on `data.train`, evaluating on `data.val`; return the history dict.

    resume=True continues from cfg.checkpoint_path. plot=True shows a live plotly loss curve in a notebook.
    `callback(step, history)` runs after every step. Set cfg.checkpoint_every to be able to resume an
    interrupted run from its last checkpoint.
    """
    device = next(model.parameters()).device
    amp = autocast_dtype(device)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)  # the only randomness in the loop: batch offsets
    history, start = _new_history(), 0
    if resume:
        if not cfg.checkpoint_path:
            raise ValueError("resume=True needs TrainConfig(checkpoint_path=...)")
        ckpt = load_checkpoint(cfg.checkpoint_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["sampler_state"].cpu())
        history, start = ckpt["history"], ckpt["step"]
    live = None
    if plot:
        from .viz import LiveLossPlot

        live = LiveLossPlot(history)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step")
    model.train()
    step = start
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            x, y = get_batch(data.train, cfg.batch_size, cfg.seq_len, generator=gen, device=device)
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                loss = lm_loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            loss_value = loss.item()  # also waits for the device, so the timing below is honest
            history["train_time_s"] += time.perf_counter() - t0
            history["tokens"] += x.numel()
            history["step"].append(step)
            history["loss"].append(loss_value)
            history["lr"].append(opt.param_groups[0]["lr"])
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
                _save(cfg.checkpoint_path, model, opt, step + 1, history, gen, cfg)
            if callback is not None:
                callback(step, history)
    except KeyboardInterrupt:
        # an interrupt can land mid-step, so only the last periodic checkpoint is a consistent state
        if cfg.checkpoint_path and Path(cfg.checkpoint_path).is_file():
            print(f"interrupted at step {step}: resume from the checkpoint in {cfg.checkpoint_path} with "
                  f"train(..., resume=True); it continues the same loss curve")
        raise
    finally:
        if bar is not None:
            bar.close()
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
    else trained now with the profile's budget (seed 0) and saved for the next lesson."""
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
    if path.is_file() and not retrain:
        ckpt = load_checkpoint(path, map_location=device)
        if ckpt["step"] >= cfg.steps:
            model.load_state_dict(ckpt["model"])
            return model.eval(), ckpt["history"]
    history = train(model, data, cfg, plot=plot)
    return model.eval(), history

