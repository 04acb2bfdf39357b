"""minimodels: the package of the MiniSeek course (DeepSeek's MLA and DeepSeekMoE, built step by step).

Lessons import only the public names below. See README.md for the map of which lesson teaches which file.
"""

from .checkpoint import load_checkpoint, load_model, save_atomic
from .config import TINY, ModelConfig, to_hf_config
from .data import TokenData, get_batch, iter_eval_batches, load_data
from .ffn import FeedForward
from .generate import generate, sample_next
from .kv_cache import KV_PRESETS, KVCache, cache_spec, kv_bytes_per_token, kv_cache_report
from .mha import MultiHeadAttention, causal_attention, causal_mask
from .model import Block, MiniModel, count_parameters
from .nb import check_shape, compare, seed_everything, setup, show_source
from .norms import RMSNorm
from .profiles import PROFILES, Profile, get_profile, pick_device
from .rope import apply_rope, rope_frequencies
from .tokenizer import BPETokenizer
from .train import TrainConfig, baseline_model, baseline_path, evaluate, lr_at, train

__version__ = "0.1.0"

__all__ = [
    "BPETokenizer", "Block", "FeedForward", "KVCache", "KV_PRESETS", "MiniModel", "ModelConfig",
    "MultiHeadAttention", "PROFILES", "Profile", "RMSNorm", "TINY", "TokenData", "TrainConfig", "apply_rope",
    "baseline_model", "baseline_path", "cache_spec", "causal_attention", "causal_mask", "check_shape", "compare",
    "count_parameters", "evaluate", "generate", "get_batch", "get_profile", "iter_eval_batches",
    "kv_bytes_per_token", "kv_cache_report", "load_checkpoint", "load_data", "load_model", "lr_at",
    "pick_device", "rope_frequencies", "sample_next", "save_atomic", "seed_everything", "setup", "show_source",
    "to_hf_config", "train",
]
