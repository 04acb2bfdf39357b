"""Model configuration: one frozen dataclass that every lesson builds on.

Field names follow DeepSeek's `ModelArgs` (deepseek-ai/DeepSeek-V3, inference/model.py) so that a learner can
put our code beside theirs. The config checks itself: an impossible combination raises ValueError that says
what to change. Later lessons switch the attention (`attn`) and feed-forward (`ffn`) variants here.
Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

# the variants a config may name; each later lesson adds its module to these tuples and to model.py's registry
ATTN_KINDS = ("mha",)
FFN_KINDS = ("dense",)


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
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "inter_dim", "max_seq_len", "rope_theta",
                    "norm_eps", "init_std")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
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


def to_hf_config(cfg: ModelConfig) -> dict:
    """Map our field names to Hugging Face `transformers` config names (REFERENCE.md §1)."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads,
        "intermediate_size": cfg.inter_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": False,
    }


# presets: plain module constants; profiles.py picks one per compute budget
TINY = ModelConfig()

__all__ = ["ATTN_KINDS", "FFN_KINDS", "ModelConfig", "TINY", "replace", "to_hf_config"]
