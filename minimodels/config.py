"""Model configuration: one frozen dataclass that every lesson builds on.

Field names follow DeepSeek's `ModelArgs` (deepseek-ai/DeepSeek-V3, inference/model.py) so that a learner can
put our code beside theirs. The config checks itself: an impossible combination, a NaN or infinite number, or a
model too big for memory raises ValueError that names the field and says what to change. Later lessons switch
the attention (`attn`) and feed-forward (`ffn`) variants here.
Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

# the variants a config may name; each later lesson adds its module to these tuples and to model.py's registry
ATTN_KINDS = ("mha",)
FFN_KINDS = ("dense",)

# Size limits. The course's largest model (the gpu profile) has 11.4 M parameters and 1,024 × 32 RoPE
# rotations; these limits sit far above that but refuse a typo before it allocates more than a machine holds:
# 2**32 fp32 parameters are 16 GiB of weights, more than the whole 16 GB GPU the gpu profile is sized for, and
# training adds three times as much again (gradients and AdamW's two moments). RoPE rotations are complex64
# (8 bytes), built through float64 and complex128 temporaries (about 40 bytes each at the peak): 2**24 of them
# peak near 640 MiB.
MAX_PARAMETERS = 2**32
MAX_ROPE_ROTATIONS = 2**24


@dataclass(frozen=True)
class ModelConfig:
    # --- sizes of the baseline GPT (lesson 01) ---
    vocab_size: int = 1024
    dim: int = 128  # model width d ("d_model", HF hidden_size)
    n_layers: int = 4
    n_heads: int = 4  # attention heads n_h; head width d_h = dim // n_heads
    inter_dim: int = 344  # hidden width of the dense SwiGLU FFN (HF intermediate_size)
    max_seq_len: int = 256  # longest context RoPE tables and KV caches are sized for
    # --- variants chosen by later lessons ---
    attn: Literal["mha"] = "mha"
    ffn: Literal["dense"] = "dense"
    # --- numerics ---
    rope_theta: float = 10000.0  # RoPE base θ, as in DeepSeek
    norm_eps: float = 1e-6  # RMSNorm epsilon (DeepSeek uses 1e-6)
    init_std: float = 0.02  # normal init std; DeepSeek's papers use 0.006 at 7168 width, 0.02 suits small widths

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            want = float if f.type == "float" else int if f.type == "int" else str
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}={value!r} must be an int")
            if want is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name}={value!r} must be a number")
            if want is float and not _finite(value):
                raise ValueError(f"{f.name}={value!r} must be a finite number (NaN and inf train to NaN)")
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "inter_dim", "max_seq_len", "rope_theta",
                    "norm_eps", "init_std")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        self._check_numerics()
        if self.attn not in ATTN_KINDS:
            raise ValueError(f"attn={self.attn!r} is not a known attention variant; choose one of {ATTN_KINDS}")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn={self.ffn!r} is not a known feed-forward variant; choose one of {FFN_KINDS}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads} "
                             f"(each head gets dim // n_heads channels)")
        if self.head_dim % 2:
            raise ValueError(f"head width dim // n_heads = {self.head_dim} must be even: RoPE rotates pairs "
                             f"of channels; change dim or n_heads")
        self._check_sizes()

    def _check_numerics(self) -> None:
        """Ranges outside which the float fields stop meaning what they say (or overflow to inf and NaN)."""
        if self.rope_theta <= 1:
            raise ValueError(f"rope_theta={self.rope_theta!r} must be > 1: pair i turns by rope_theta^(-2i/K) "
                             f"per position, which must fall with i (DeepSeek uses 10000)")
        if self.norm_eps >= 1:
            raise ValueError(f"norm_eps={self.norm_eps!r} must be < 1: it only keeps RMSNorm from dividing by 0, "
                             f"and at 1 or more it swamps mean(x²) so the norm stops normalising (try 1e-6)")
        if self.init_std > 1:
            raise ValueError(f"init_std={self.init_std!r} must be <= 1: larger initial weights saturate the "
                             f"softmax and can overflow in fp16 (0.02 suits the course's widths)")

    def _check_sizes(self) -> None:
        """Sizes that would not fit in memory: refuse them here, before a model allocates anything."""
        n_params = baseline_parameters(self)
        if n_params > MAX_PARAMETERS:
            raise ValueError(f"vocab_size={self.vocab_size}, dim={self.dim}, n_layers={self.n_layers} and "
                             f"inter_dim={self.inter_dim} make a model of {n_params:,} parameters "
                             f"({4 * n_params / 2**30:,.0f} GiB in fp32), over the limit of {MAX_PARAMETERS:,}; "
                             f"make them smaller")
        rotations = self.max_seq_len * (self.head_dim // 2)
        if rotations > MAX_ROPE_ROTATIONS:
            raise ValueError(f"max_seq_len={self.max_seq_len} positions × {self.head_dim // 2} channel pairs = "
                             f"{rotations:,} RoPE rotations, over the limit of {MAX_ROPE_ROTATIONS:,}; use a "
                             f"smaller max_seq_len (or narrower heads)")

    @property
    def head_dim(self) -> int:
        """Per-head width d_h of queries, keys and values."""
        return self.dim // self.n_heads

    # --- serialisation, as DeepSeek loads configs/*.json ---
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range: 10**400 is no rope_theta either
        return False


def baseline_parameters(cfg: ModelConfig) -> int:
    """Parameters of the baseline layout (MHA + dense SwiGLU) with cfg's sizes, in closed form.

    Embedding and head V·D each; per layer W^Q, W^K, W^V, W^O (4·D²), w1, w2, w3 (3·D·F) and two RMSNorm gains
    (2·D); the final norm D. The size limit uses it for every variant: they change these sizes by small factors.
    """
    d, v, f, n = cfg.dim, cfg.vocab_size, cfg.inter_dim, cfg.n_layers
    return 2 * v * d + n * (4 * d * d + 3 * d * f + 2 * d) + d


# presets: plain module constants; profiles.py picks one per compute budget
TINY = ModelConfig()

__all__ = ["ATTN_KINDS", "FFN_KINDS", "MAX_PARAMETERS", "MAX_ROPE_ROTATIONS", "ModelConfig", "TINY",
           "baseline_parameters", "replace"]
