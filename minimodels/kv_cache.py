"""The KV cache: what a decoder keeps per token so that each new token costs one row of attention.

Every attention variant declares a `cache_spec`: the tensors one token leaves in one layer (MHA: a key and a
value per head; GQA: per KV head; MLA: one latent and one rope key, whatever the number of heads). `KVCache`
allocates exactly those tensors for a batch and a maximum length, and its size in bytes is read from the
tensors themselves. `kv_bytes_per_token` and `kv_cache_report` are the formulas the calculator widget uses;
tests check them against the allocated tensors of every variant.
Taught in lessons/02_kv_cache.ipynb (MHA), 03_gqa.ipynb and 04_mla.ipynb (the other variants).
"""

from __future__ import annotations

import math
from dataclasses import fields

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
    """Preallocated per-layer cache tensors of shape (batch, max_len, *spec[name]).

    A cache serves exactly one model layout (attention variant, layers, per-token tensors), one batch, one dtype
    and one device; `MiniModel.forward` calls `claim` before it writes, so a mismatch raises an error that says
    what to change instead of writing past the end, into another sequence's rows, or after unwritten positions.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int | None = None, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        max_len = cfg.max_seq_len if max_len is None else max_len
        for name, value in (("batch_size", batch_size), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if max_len > cfg.max_seq_len:
            raise ValueError(f"max_len={max_len} exceeds the model's max_seq_len={cfg.max_seq_len}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype={dtype!r}: the cache stores keys and values as the model computes them; "
                             f"use the model's floating dtype (torch.float32, torch.bfloat16, torch.float16)")
        self.cfg, self.batch_size, self.max_len, self.dtype = cfg, batch_size, max_len, dtype
        self.spec = cache_spec(cfg)
        self.layers: list[dict[str, Tensor]] = [
            {name: torch.zeros(batch_size, max_len, *shape, device=device, dtype=dtype)
             for name, shape in self.spec.items()}
            for _ in range(cfg.n_layers)
        ]
        self.length = 0  # positions 0 .. length-1 hold keys; each forward pass through the cache sets it

    def claim(self, cfg: ModelConfig, tokens: Tensor, start_pos: int, dtype: torch.dtype) -> None:
        """Check that a model with `cfg` computing in `dtype` may write `tokens` (B, T) at positions
        start_pos .. start_pos+T-1, then mark them filled (length = start_pos + T: later positions are stale).

        Raises ValueError saying what to change otherwise. start_pos may go back (to redo or branch from a
        prefix) but never beyond `length`: positions never written would be attended to as zeros.
        """
        self._check_layout(cfg)
        b, t = tokens.shape
        if b != self.batch_size:
            raise ValueError(f"the cache holds batch_size={self.batch_size} sequences but the input has {b}: a "
                             f"cache serves exactly its batch (other rows would hold other sequences' keys); "
                             f"allocate KVCache(cfg, batch_size={b}, ...)")
        if dtype != self.dtype:
            raise ValueError(f"the cache holds {self.dtype} but the model computes in {dtype}; allocate "
                             f"KVCache(..., dtype={dtype}) (generate() does this for you)")
        device = self.layers[0][next(iter(self.spec))].device
        if device != tokens.device:
            raise ValueError(f"the cache is on {device} but the tokens are on {tokens.device}; allocate "
                             f"KVCache(..., device=\"{tokens.device}\")")
        if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
            raise ValueError(f"start_pos={start_pos!r} must be an int >= 0: the position of the first new token")
        if start_pos > self.length:
            raise ValueError(f"start_pos={start_pos} would skip positions {self.length}..{start_pos - 1}, which "
                             f"the cache has never been given (attention would read them as zeros); feed the "
                             f"tokens from start_pos={self.length} on, or start again at start_pos=0")
        if start_pos + t > self.max_len:
            raise ValueError(f"positions {start_pos}..{start_pos + t - 1} do not fit in a cache of max_len="
                             f"{self.max_len}; allocate KVCache(cfg, batch_size, max_len={start_pos + t}) or "
                             f"more (up to max_seq_len={self.cfg.max_seq_len})")
        self.length = start_pos + t

    def _check_layout(self, cfg: ModelConfig) -> None:
        """The cache must hold the tensors this model's layers write: same variant, layers and per-token shapes."""
        if (cfg.attn, cfg.n_layers, cache_spec(cfg)) == (self.cfg.attn, len(self.layers), self.spec):
            return
        differ = [f"{f.name} {getattr(self.cfg, f.name)!r} vs {getattr(cfg, f.name)!r}" for f in fields(cfg)
                  if getattr(self.cfg, f.name) != getattr(cfg, f.name)]
        raise ValueError(f"this cache was built for another model: attn={self.cfg.attn!r}, {len(self.layers)} "
                         f"layers, per-token tensors {self.spec} here; attn={cfg.attn!r}, {cfg.n_layers} layers, "
                         f"{cache_spec(cfg)} in the model (config fields that differ, cache vs model: "
                         f"{'; '.join(differ)}); allocate it from the model's config: KVCache(model.cfg, ...)")

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

# MLA models (DeepSeek's inference/configs/*.json, REFERENCE.md §1): layers, latent width d_c, rope width d_h^R
MLA_PRESETS: dict[str, dict[str, int]] = {
    "DeepSeek-V2": {"n_layers": 60, "kv_lora_rank": 512, "qk_rope_head_dim": 64},  # 236B, 128 heads
    "DeepSeek-V2-Lite": {"n_layers": 27, "kv_lora_rank": 512, "qk_rope_head_dim": 64},  # 16B, 16 heads
    "DeepSeek-V3": {"n_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64},  # 671B, 128 heads
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int8": torch.int8,  # 8-bit quantised caches (fp8/int8) store one byte per element
}


def kv_cache_report(n_layers: int, n_kv_heads: int | None = None, head_dim: int | None = None, *, context: int,
                    batch: int = 1, dtype: str = "bfloat16", kv_lora_rank: int | None = None,
                    qk_rope_head_dim: int = 0) -> dict[str, int]:
    """Cache size: bytes per token and for `batch` sequences of `context` tokens.

    MHA/GQA/MQA: give n_kv_heads and head_dim (2 · layers · n_kv_heads · head_dim elements per token).
    MLA: give kv_lora_rank and qk_rope_head_dim instead (layers · (kv_lora_rank + qk_rope_head_dim) elements).
    """
    from .mha import mha_cache_spec
    from .mla import mla_cache_spec

    mla = kv_lora_rank is not None
    if mla == (n_kv_heads is not None or head_dim is not None):
        raise ValueError("give n_kv_heads and head_dim (MHA, GQA, MQA) or kv_lora_rank and qk_rope_head_dim "
                         "(MLA), not both and not neither")
    widths = dict(kv_lora_rank=kv_lora_rank) if mla else dict(n_kv_heads=n_kv_heads, head_dim=head_dim)
    for name, value in dict(n_layers=n_layers, **widths, context=context, batch=batch).items():
        if value is None or value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if qk_rope_head_dim < 0 or (qk_rope_head_dim and not mla):
        raise ValueError(f"qk_rope_head_dim={qk_rope_head_dim}: MLA's decoupled rope width, >= 0, used only "
                         f"with kv_lora_rank")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {sorted(DTYPES)}")
    spec = mla_cache_spec(kv_lora_rank, qk_rope_head_dim) if mla else mha_cache_spec(n_kv_heads, head_dim)
    per_token = kv_bytes_per_token(spec, n_layers, DTYPES[dtype])
    return {"bytes_per_token": per_token, "total_bytes": per_token * context * batch}
