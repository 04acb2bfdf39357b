"""Checkpoints: saved atomically, loaded with `weights_only=True`, with clear errors.

A checkpoint holds only tensors and plain Python values (config as a dict, optimizer state, the data
sampler's RNG state, the loss history), so loading it never runs pickled code. Taught in
lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `train` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (train(..., TrainConfig("
                                f"checkpoint_path=...)) or `minimodels-train --out {path}`)")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not a minimodels checkpoint (expected keys 'model' and 'config')")
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights."""
    from .model import MiniModel

    ckpt = load_checkpoint(path, map_location)
    model = MiniModel(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location)
