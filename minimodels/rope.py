"""Rotary position embedding (RoPE, Su et al. 2021) in DeepSeek's convention.

Channels are rotated in ADJACENT pairs (x0, x1), (x2, x3), ...: pair i at position t turns by the angle
t·θ_i with θ_i = base^(-2i/d). This is DeepSeek's `apply_rotary_emb` layout (complex multiply on
`view(..., -1, 2)`), not the "rotate_half" layout of LLaMA in Hugging Face (REFERENCE.md §2.5).
Taught in lessons/01_baseline_gpt.ipynb; the decoupled variant in lesson 05.
"""

import torch
from torch import Tensor


def rope_frequencies(head_dim: int, max_len: int, theta: float = 10000.0) -> Tensor:
    """Complex rotations e^{i·t·θ_j} for every position t < max_len and pair j.  -> (max_len, head_dim // 2)"""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even width, got {head_dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))  # (K/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (max_len, K/2)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate adjacent channel pairs of x by freqs.  x (B, T, H, K), freqs (T, K/2) -> (B, T, H, K)"""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, H, K/2)
    rotated = pairs * freqs[None, :, None, :]  # broadcast over batch and heads
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)  # (B, T, H, K)
