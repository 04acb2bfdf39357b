"""Rotary position embedding (RoPE, Su et al. 2021) in DeepSeek's convention.

Channels are rotated in ADJACENT pairs (x0, x1), (x2, x3), ...: pair i at position t turns by the angle
t·θ_i with θ_i = base^(-2i/d). This is DeepSeek's `apply_rotary_emb` layout (complex multiply on
`view(..., -1, 2)`), not the "rotate_half" layout of LLaMA in Hugging Face (REFERENCE.md §2.5).
The rotations are complex64 numbers of modulus 1 and stay so in a model of any dtype: `RopeTable` moves with
`.to(device)` but never takes a cast, because a complex table cast to a real dtype keeps only cos(t·θ_i) and
scales q and k instead of rotating them. Taught in lessons/01_baseline_gpt.ipynb; the decoupled variant in lesson 05.
"""

# Shapes: B batch, T positions, H heads, K head width (K/2 channel pairs)

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def rope_frequencies(head_dim: int, max_len: int, theta: float = 10000.0) -> Tensor:
    """Complex rotations e^{i·t·θ_j} for every position t < max_len and pair j.  -> (max_len, head_dim // 2)"""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even width, got {head_dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))  # (K/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (max_len, K/2)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate adjacent channel pairs of x by freqs.  x (B, T, H, K), freqs (T, K/2) -> (B, T, H, K)

    The product is taken in fp32 (complex64) whatever x's dtype, as DeepSeek does, and cast back to x's dtype.
    """
    _check_rope_inputs(x, freqs)
    xf = x.float().contiguous()
    if xf.storage_offset() % 2:  # a slice such as MLA's rope channels may start at an odd offset: complex views
        xf = xf.clone()  # need pairs aligned in memory, so copy it
    pairs = torch.view_as_complex(xf.reshape(*x.shape[:-1], -1, 2))  # (B, T, H, K/2)
    rotated = pairs * freqs[None, :, None, :]  # broadcast over batch and heads
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)  # (B, T, H, K)


def _check_rope_inputs(x: Tensor, freqs: Tensor) -> None:
    """Errors for a real (cast) table and for a table of other positions, which would otherwise broadcast."""
    if not freqs.is_complex():
        raise TypeError(f"freqs must be the complex table of rope_frequencies (one rotation per position and "
                        f"pair), got dtype {freqs.dtype}: a real table scales q and k instead of rotating them")
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"apply_rope rotates x of shape (batch, time, heads, even width), got {tuple(x.shape)}")
    if tuple(freqs.shape) != (x.shape[1], x.shape[-1] // 2):
        raise ValueError(f"freqs has shape {tuple(freqs.shape)} but x {tuple(x.shape)} needs one row per position "
                         f"and one column per channel pair: {(x.shape[1], x.shape[-1] // 2)}; slice the table "
                         f"at the tokens' positions, freqs[start_pos:start_pos + T]")


class RopeTable(nn.Module):
    """The RoPE rotations of a model, held as a buffer that devices move but dtype casts never reach.

    Index it like the tensor it holds: `table[start_pos:start_pos + T]` -> (T, K/2) complex64.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        # not a parameter and not saved: rebuilt from the config whenever a model is built
        self.register_buffer("table", rope_frequencies(head_dim, max_len, theta), persistent=False)

    def __getitem__(self, index) -> Tensor:
        return self.table[index]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> RopeTable:
        # .to()/.cuda()/.half()/.to_empty() all run through here with one function per tensor: ask it where a
        # float tensor would go, and move the complex table there without letting it change the dtype
        device = fn(torch.empty(0, device=self.table.device)).device
        self.table = self.table.to(device)
        return self

    def extra_repr(self) -> str:
        return f"positions={self.table.shape[0]}, pairs={self.table.shape[1]}, dtype={self.table.dtype}"
