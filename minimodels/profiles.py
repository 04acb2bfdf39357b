"""Compute profiles: one switch that sizes every model and training run in the course.

`smoke` runs each lesson in seconds (CI and tests), `cpu` in a few minutes on a laptop, `gpu` is sized for a
16 GB GPU (its times are not measured yet). The profile is picked from the hardware and overridden by the
environment variable MINIMODELS_PROFILE. Lessons read sizes and budgets from here and never hard-code them.
Taught in lessons/00_orientation.ipynb.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import ModelConfig

PROFILE_ENV = "MINIMODELS_PROFILE"
DEVICE_ENV = "MINIMODELS_DEVICE"


@dataclass(frozen=True)
class Profile:
    name: str
    model: ModelConfig  # the baseline GPT of this profile
    steps: int  # optimizer steps of a lesson's training run
    batch_size: int
    seq_len: int  # training context length
    eval_every: int
    eval_batches: int
    lr: float
    warmup_steps: int
    decode_tokens: int  # how many tokens a generation demo writes


PROFILES = {
    "smoke": Profile(
        name="smoke",
        model=ModelConfig(vocab_size=1024, dim=64, n_layers=2, n_heads=4, inter_dim=172, max_seq_len=128),
        steps=30, batch_size=8, seq_len=64, eval_every=10, eval_batches=2, lr=3e-3, warmup_steps=5,
        decode_tokens=16,
    ),
    "cpu": Profile(
        name="cpu",
        model=ModelConfig(vocab_size=1024, dim=128, n_layers=4, n_heads=4, inter_dim=344, max_seq_len=1024),
        steps=600, batch_size=16, seq_len=128, eval_every=100, eval_batches=8, lr=3e-3, warmup_steps=40,
        decode_tokens=60,
    ),
    # not yet measured on a GPU: its 9.8M training tokens are about 2.2 passes over the 4.38M-token training
    # split of Python 3.11's stdlib (prose + code; Pythons 3.10 to 3.13 hold 10.3M to 11.1M training characters,
    # so 2.2 to 2.4 passes): overfitting should be mild, but watch the validation curve of each domain
    # (data.val_by_domain)
    "gpu": Profile(
        name="gpu",
        model=ModelConfig(vocab_size=1024, dim=384, n_layers=6, n_heads=6, inter_dim=1024, max_seq_len=1024),
        steps=1200, batch_size=32, seq_len=256, eval_every=100, eval_batches=20, lr=1.5e-3, warmup_steps=100,
        decode_tokens=120,
    ),
}


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; MINIMODELS_DEVICE (or `prefer`) overrides."""
    choice = prefer or os.environ.get(DEVICE_ENV)
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_profile(name: str | None = None) -> Profile:
    """The profile named by `name`, else by MINIMODELS_PROFILE, else chosen from the hardware."""
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if pick_device().type == "cuda" else "cpu")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: set {PROFILE_ENV} to one of {sorted(PROFILES)}")
    return PROFILES[name]


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware supports it (CUDA with bf16), else None (plain fp32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
