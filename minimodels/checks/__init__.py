"""Checkers for the exercise notebooks: compare a learner's function with the package on varied inputs.

    from minimodels.checks import check_split_heads
    check_split_heads(split_heads)   # prints ✅, ❌ with the likely mistake, or ⏳ "not implemented yet"

engine.py runs the checks (cases, named mistakes, check modes: see its docstring); messages.py words the
verdicts; one module per lesson declares that lesson's exercises (lesson01.py, lesson02.py, ...). A new lesson
adds a module with `Exercise(...)` objects and `check_*` functions, and lists them below.
"""

from .engine import (
    DEFAULT,
    MODE_ENV,
    Case,
    CheckResult,
    Exercise,
    Mistake,
    build_cases,
    check_mode,
    run_check,
    vary,
)
from .lesson01 import CAUSAL_ATTENTION, RMS_NORM, SPLIT_HEADS, check_causal_attention, check_rms_norm, check_split_heads
from .lesson02 import (
    CACHE_WRITE,
    CACHED_ATTENTION,
    KV_BYTES,
    ROPE_AT,
    check_cache_write,
    check_cached_attention,
    check_kv_bytes_per_token,
    check_rope_at,
)
from .lesson03 import GQA_BYTES, GROUPED_ATTENTION, check_gqa_cache_bytes, check_grouped_attention
from .lesson04 import LATENT, MLA_BYTES, QUERIES, check_mla_cache_bytes, check_mla_latent, check_mla_queries
from .lesson05 import ABSORBED_SCORES, DECOUPLED_ROPE, check_absorbed_scores, check_decoupled_rope
from .lesson06 import TOP_K_GATE, V3_GATE, check_top_k_gate, check_v3_gate
from .lesson07 import MOE_LAYER, SEGMENT, check_deepseek_moe, check_fine_grained_segmentation
from .lesson08 import BALANCE_LOSS, BIAS_UPDATE, check_bias_update, check_expert_balance_loss

# every exercise of the course, by its check function's name (tests run the engine's rules over all of them)
EXERCISES: dict[str, Exercise] = {
    "check_split_heads": SPLIT_HEADS,
    "check_causal_attention": CAUSAL_ATTENTION,
    "check_rms_norm": RMS_NORM,
    "check_kv_bytes_per_token": KV_BYTES,
    "check_cache_write": CACHE_WRITE,
    "check_cached_attention": CACHED_ATTENTION,
    "check_rope_at": ROPE_AT,
    "check_grouped_attention": GROUPED_ATTENTION,
    "check_gqa_cache_bytes": GQA_BYTES,
    "check_mla_latent": LATENT,
    "check_mla_cache_bytes": MLA_BYTES,
    "check_mla_queries": QUERIES,
    "check_decoupled_rope": DECOUPLED_ROPE,
    "check_absorbed_scores": ABSORBED_SCORES,
    "check_top_k_gate": TOP_K_GATE,
    "check_v3_gate": V3_GATE,
    "check_deepseek_moe": MOE_LAYER,
    "check_fine_grained_segmentation": SEGMENT,
    "check_expert_balance_loss": BALANCE_LOSS,
    "check_bias_update": BIAS_UPDATE,
}

__all__ = [
    "CACHED_ATTENTION", "CACHE_WRITE", "CAUSAL_ATTENTION", "DEFAULT", "EXERCISES", "KV_BYTES", "MODE_ENV",
    "RMS_NORM", "ROPE_AT", "SPLIT_HEADS", "Case", "CheckResult", "Exercise", "Mistake", "build_cases",
    "check_cache_write", "check_cached_attention", "check_causal_attention", "check_kv_bytes_per_token",
    "check_mode", "check_rms_norm", "check_rope_at", "check_split_heads", "run_check", "vary",
    "GQA_BYTES", "GROUPED_ATTENTION", "check_gqa_cache_bytes", "check_grouped_attention",  # lesson 03
    "LATENT", "MLA_BYTES", "QUERIES", "check_mla_cache_bytes", "check_mla_latent", "check_mla_queries",  # lesson 04
    "ABSORBED_SCORES", "DECOUPLED_ROPE", "check_absorbed_scores", "check_decoupled_rope",  # lesson 05
    "TOP_K_GATE", "V3_GATE", "check_top_k_gate", "check_v3_gate",  # lesson 06
    "MOE_LAYER", "SEGMENT", "check_deepseek_moe", "check_fine_grained_segmentation",  # lesson 07
    "BALANCE_LOSS", "BIAS_UPDATE", "check_bias_update", "check_expert_balance_loss",  # lesson 08
]
