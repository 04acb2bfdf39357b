"""minimodels: the package of the MiniSeek course (DeepSeek's MLA and DeepSeekMoE, built step by step).

Lessons import only the public names below. See README.md for the map of which lesson teaches which file.
"""

from .balance import (
    balance_loss,
    bias_step,
    device_balance_loss,
    expert_balance_loss,
    max_violation,
    routing_stats,
    update_router_bias,
)
from .checkpoint import CheckpointError, load_checkpoint, load_model, save_atomic
from .config import TINY, ModelConfig
from .corpus import DOMAINS
from .data import TokenData, get_batch, iter_eval_batches, load_data
from .ffn import FeedForward
from .flops import (
    FLOPS_CONVENTION,
    count_flops,
    forward_flops_per_token,
    measure_matmul_peak,
    mfu,
    training_flops_per_token,
)
from .generate import generate, sample_next
from .gqa import GroupedQueryAttention, grouped_causal_attention
from .kv_cache import KV_PRESETS, MLA_PRESETS, KVCache, cache_spec, kv_bytes_per_token, kv_cache_report
from .mha import MultiHeadAttention, causal_attention, causal_mask
from .mla import (
    LowRankAttention,
    MultiHeadLatentAttention,
    mla_absorbed_attention,
    mla_naive_attention,
    set_attn_impl,
    split_wkv_b,
)
from .model import Block, MiniModel, check_tokens, count_parameters
from .moe import Experts, MoE, fine_grained_config, set_dispatch, trace_routing
from .nb import check_shape, compare, seed_everything, setup, show_source
from .norms import RMSNorm
from .profiles import PROFILES, Profile, get_profile, pick_device
from .rope import RopeTable, apply_rope, rope_frequencies
from .router import Gate, limit_groups, route
from .stopping import TrainingDivergedError, TrainingInterrupted
from .tokenizer import BPETokenizer
from .train import TrainConfig, baseline_model, baseline_path, evaluate, lr_at, train

__version__ = "0.2.0"  # 0.2: to_hf_config removed; viz and checks became packages

__all__ = [
    "CheckpointError", "count_flops", "DOMAINS", "FLOPS_CONVENTION", "forward_flops_per_token",
    "measure_matmul_peak", "mfu", "RopeTable", "training_flops_per_token", "TrainingDivergedError",
    "TrainingInterrupted",
    "apply_rope", "baseline_model", "baseline_path", "Block", "BPETokenizer", "cache_spec",
    "causal_attention", "causal_mask", "check_shape", "check_tokens", "compare", "count_parameters",
    "evaluate", "FeedForward", "generate", "get_batch", "get_profile", "GroupedQueryAttention",
    "grouped_causal_attention", "iter_eval_batches", "kv_bytes_per_token", "kv_cache_report", "KV_PRESETS",
    "KVCache", "load_checkpoint", "load_data", "load_model", "LowRankAttention", "lr_at", "MiniModel",
    "MLA_PRESETS", "mla_absorbed_attention", "mla_naive_attention", "ModelConfig", "MultiHeadAttention",
    "MultiHeadLatentAttention", "pick_device", "Profile", "PROFILES", "RMSNorm", "rope_frequencies", "sample_next",
    "save_atomic", "seed_everything", "set_attn_impl", "setup", "show_source", "split_wkv_b", "TINY", "TokenData",
    "train", "TrainConfig",
    # DeepSeekMoE (lessons 06-08)
    "balance_loss", "bias_step", "device_balance_loss", "expert_balance_loss", "Experts", "fine_grained_config",
    "Gate", "limit_groups", "max_violation", "MoE", "route", "routing_stats", "set_dispatch", "trace_routing",
    "update_router_bias",
]
