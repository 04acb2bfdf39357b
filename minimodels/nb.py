"""Notebook helpers: seeding and set-up, shape checks, showing package source, comparing tensors.

Every lesson starts with `setup()` and uses `check_shape` after each implementation (d2l style) and
`show_source` to show the tested package code it builds up to.
"""

from __future__ import annotations

import inspect
import os
import random
from types import SimpleNamespace

import torch
from torch import Tensor

from .profiles import get_profile, pick_device


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy (if present) and torch, so every notebook run prints the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def setup(seed: int = 0, *, profile: str | None = None, quiet: bool = False) -> SimpleNamespace:
    """Seed everything, pick the compute profile and device; print one line saying which."""
    seed_everything(seed)
    prof = get_profile(profile)
    device = pick_device()
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if not quiet:
        print(f"profile: {prof.name} | device: {device.type} | torch {torch.__version__} | seed {seed}")
    return SimpleNamespace(profile=prof, device=device, seed=seed)


def check_shape(t: Tensor, shape: tuple[int, ...], name: str = "tensor") -> None:
    """Raise AssertionError naming the tensor when its shape isn't `shape`."""
    if tuple(t.shape) != tuple(shape):
        raise AssertionError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def show_source(obj, lines: tuple[int, int] | None = None):
    """Display the package source of `obj` (optionally a 1-based line range of it) with highlighting."""
    from IPython.display import Code

    src = inspect.getsource(obj)
    if lines is not None:
        src = "\n".join(src.splitlines()[lines[0] - 1:lines[1]])
    return Code(src, language="python")


def compare(name: str, got: Tensor, expected: Tensor, atol: float = 1e-6) -> bool:
    """Print whether two tensors are exactly equal, close, or how far apart (like makemore's `cmp`)."""
    exact = torch.equal(got, expected)
    close = got.shape == expected.shape and torch.allclose(got.float(), expected.float(), atol=atol)
    diff = (got.float() - expected.float()).abs().max().item() if got.shape == expected.shape else float("nan")
    print(f"{name:<24} exact: {str(exact):<5} | close: {str(close):<5} | max diff: {diff:.2e}")
    return close
