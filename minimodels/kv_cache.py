"""The KV cache: what a decoder keeps per token so that each new token costs one row of attention.

Every attention variant declares a `cache_spec`: the tensors one token leaves in one layer (MHA: a key and a
value per head; MLA later: a latent and a rope key). `KVCache` allocates exactly those tensors for a batch
and a maximum length, and its size in bytes is read from the tensors themselves. `kv_bytes_per_token` is the
formula the calculator widget uses; a test checks it against the allocated tensors.
Taught in lessons/02_kv_cache.ipynb.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import ModelConfig


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(spec: dict[str, tuple[int, ...]], n_layers: int, dtype: torch.dtype) -> int:
    """Bytes one token occupies in the cache of the whole model: layers × Σ(spec tensor sizes) × bytes/element."""
    return n_layers * sum(math.prod(shape) for shape in spec.values()) * _element_size(dtype)


def cache_spec(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The per-token, per-layer cache layout of the attention variant `cfg.attn`."""
    from .model import ATTENTION  # late import: model.py imports the attention modules

    return ATTENTION[cfg.attn].cache_spec(cfg)


class KVCache:
    """Preallocated per-layer cache tensors of shape (batch, max_len, *spec[name])."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int | None = None, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        max_len = cfg.max_seq_len if max_len is None else max_len
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size={batch_size} and max_len={max_len} must be positive")
        if max_len > cfg.max_seq_len:
            raise ValueError(f"max_len={max_len} exceeds the model's max_seq_len={cfg.max_seq_len}")
        self.cfg, self.batch_size, self.max_len, self.dtype = cfg, batch_size, max_len, dtype
        self.spec = cache_spec(cfg)
        self.layers: list[dict[str, Tensor]] = [
            {name: torch.zeros(batch_size, max_len, *shape, device=device, dtype=dtype)
             for name, shape in self.spec.items()}
            for _ in range(cfg.n_layers)
        ]
        self.length = 0  # positions filled so far; generate() advances it

    @property
    def nbytes(self) -> int:
        """Allocated bytes, summed over the cache tensors themselves."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.values())

    @property
    def bytes_per_token(self) -> int:
        """Allocated bytes per cached position of one sequence (measured, not computed from the config)."""
        return self.nbytes // (self.batch_size * self.max_len)

    @property
    def used_bytes(self) -> int:
        """Bytes holding the `length` positions written so far, over the whole batch."""
        return self.bytes_per_token * self.batch_size * self.length

    def __repr__(self) -> str:
        return (f"KVCache({self.cfg.attn}, layers={len(self.layers)}, batch={self.batch_size}, "
                f"max_len={self.max_len}, length={self.length}, {self.nbytes:,} bytes allocated)")


# published shapes of real models (their config.json files): layers, KV heads, head width
KV_PRESETS: dict[str, dict[str, int]] = {
    "Llama-2-7B": {"n_layers": 32, "n_kv_heads": 32, "head_dim": 128},  # MHA: 32 heads of 128
    "Llama-2-70B": {"n_layers": 80, "n_kv_heads": 8, "head_dim": 128},  # GQA: 64 query heads share 8 KV heads
    "Llama-3-8B": {"n_layers": 32, "n_kv_heads": 8, "head_dim": 128},  # GQA: 32 query heads, 8 KV heads
    "Mistral-7B": {"n_layers": 32, "n_kv_heads": 8, "head_dim": 128},  # GQA: 32 query heads, 8 KV heads
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int8": torch.int8,  # 8-bit quantised caches (fp8/int8) store one byte per element
}


def kv_cache_report(n_layers: int, n_kv_heads: int, head_dim: int, *, context: int, batch: int = 1,
                    dtype: str = "bfloat16") -> dict[str, int]:
    """Cache size of an MHA/GQA model: bytes per token and for `batch` sequences of `context` tokens."""
    from .mha import mha_cache_spec

    for name, value in dict(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, context=context,
                            batch=batch).items():
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {sorted(DTYPES)}")
    per_token = kv_bytes_per_token(mha_cache_spec(n_kv_heads, head_dim), n_layers, DTYPES[dtype])
    return {"bytes_per_token": per_token, "total_bytes": per_token * context * batch}
