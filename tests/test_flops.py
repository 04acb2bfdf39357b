import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from minimodels import flops
from minimodels.config import ATTN_KINDS, FFN_KINDS, ModelConfig
from minimodels.flops import (
    count_flops,
    counted_flops,
    forward_flops_per_token,
    measure_matmul_peak,
    mfu,
    training_flops_per_token,
)
from minimodels.kv_cache import KVCache
from minimodels.model import ATTENTION, FEED_FORWARD, MiniModel
from minimodels.profiles import PROFILES

SMALL = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=24)
CONFIGS = {
    "small": SMALL,
    "deep-narrow-heads": ModelConfig(vocab_size=37, dim=24, n_layers=3, n_heads=6, inter_dim=40, max_seq_len=24),
    "smoke-profile": PROFILES["smoke"].model,
}


def model_of(cfg: ModelConfig) -> MiniModel:
    torch.manual_seed(0)
    return MiniModel(cfg)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seq_len", [2, 7, 16])
def test_closed_form_equals_flop_counter(name, seq_len):
    # not seq_len 1: with a single key, einsum does probs·v as an elementwise mul that FlopCounterMode skips
    cfg = CONFIGS[name]
    model = model_of(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (3, seq_len))
    n_tokens = tokens.numel()
    assert counted_flops(model, tokens) == forward_flops_per_token(cfg, seq_len) * n_tokens
    assert counted_flops(model, tokens, backward=True) == training_flops_per_token(cfg, seq_len) * n_tokens
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients behind


def test_forward_with_kv_cache_counts_the_cached_keys():
    cfg, model = SMALL, model_of(SMALL)
    cache = KVCache(cfg, batch_size=2, max_len=20)
    prompt = torch.randint(0, cfg.vocab_size, (2, 9))
    # a prefill of 9 tokens, then one token at position 9 that attends to 10 keys
    assert counted_flops(model, prompt, start_pos=0, cache=cache) == 2 * 9 * forward_flops_per_token(cfg, 9)
    step = torch.randint(0, cfg.vocab_size, (2, 1))
    assert counted_flops(model, step, start_pos=9, cache=cache) == 2 * forward_flops_per_token(cfg, 10)


def test_baseline_is_palm_6n_plus_12_lhkt():
    cfg = PROFILES["cpu"].model  # 128 wide, 4 layers, 4 heads of 32, FFN 344, vocab 1024
    n = 4 * (4 * 128 * 128 + 3 * 128 * 344) + 128 * 1024  # attention + FFN matmuls, output head; no embedding
    assert n == 921_600
    assert training_flops_per_token(cfg, 128) == 6 * n + 12 * 4 * 4 * 32 * 128 == 6_316_032
    c = count_flops(cfg, 128)
    assert c.training == 3 * c.forward and c.forward == sum(c.by_part.values())
    assert c.by_part["attention_scores_values"] == 4 * 4 * 4 * 32 * 128  # 2 products × 2 FLOPs × L·H·K·T
    assert c.params == c.active_params == n  # dense: every weight is used by every token


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_params_are_the_models_linear_weights(name):
    model = model_of(CONFIGS[name])
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert count_flops(CONFIGS[name], 5).params == linear


def test_the_counter_rejects_other_conventions():
    """Counting the embedding as a matmul, or halving causal attention, would not match the real model."""
    cfg, model = SMALL, model_of(SMALL)
    t = 16
    counted = counted_flops(model, torch.randint(0, cfg.vocab_size, (1, t))) // t
    c = count_flops(cfg, t)
    assert counted == c.forward
    assert counted != c.forward + 2 * cfg.vocab_size * cfg.dim  # embedding as a one-hot matmul
    assert counted != c.forward - c.by_part["attention_scores_values"] // 2  # causal half
    assert counted != forward_flops_per_token(cfg, t - 1)  # context off by one


def test_registries_cover_every_variant():
    assert set(ATTN_KINDS) <= set(flops.ATTENTION_COUNTS) and set(ATTENTION) <= set(flops.ATTENTION_COUNTS)
    assert set(FFN_KINDS) <= set(flops.FFN_COUNTS) and set(FEED_FORWARD) <= set(flops.FFN_COUNTS)


# the attention track's variants, with the config fields of DeepSeek's names; each runs once config.py knows it
VARIANTS = {
    "gqa": dict(attn="gqa", n_kv_heads=2),
    "mqa": dict(attn="gqa", n_kv_heads=1),
    "mla": dict(attn="mla", kv_lora_rank=20, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=10, q_lora_rank=0),
    "mla q_lora": dict(attn="mla", kv_lora_rank=20, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=10,
                       q_lora_rank=12),
    "mla_lowrank": dict(attn="mla_lowrank", kv_lora_rank=20, qk_nope_head_dim=6, v_head_dim=10, q_lora_rank=0),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_attention_variants_closed_form_equals_flop_counter(name):
    fields = VARIANTS[name]
    if fields["attn"] not in ATTN_KINDS:
        pytest.skip(f"attn={fields['attn']!r} is not in config.ATTN_KINDS yet")
    cfg = ModelConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, inter_dim=64, max_seq_len=24, **fields)
    model = model_of(cfg)  # MLA's default path is the naive one, which training uses
    tokens = torch.randint(0, cfg.vocab_size, (2, 11))
    assert count_flops(cfg, 11).params == sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert counted_flops(model, tokens) == 22 * forward_flops_per_token(cfg, 11)
    assert counted_flops(model, tokens, backward=True) == 22 * training_flops_per_token(cfg, 11)


def test_missing_registration_and_bad_context_say_what_to_change(monkeypatch):
    monkeypatch.setattr(flops, "ATTENTION_COUNTS", {})
    with pytest.raises(ValueError, match="ATTENTION_COUNTS"):
        count_flops(SMALL, 8)
    monkeypatch.undo()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="context"):
            count_flops(SMALL, bad)


def test_moe_total_and_active_params_match_deepseekmoe_16b():
    """DeepSeekMoE 16B (arXiv:2401.06066 §5): 16.4B total, 2.8B activated parameters (embeddings included)."""
    cfg = SimpleNamespace(attn="mha", ffn="moe", vocab_size=102400, dim=2048, n_layers=28, n_heads=16, head_dim=128,
                          inter_dim=10944, n_dense_layers=1, n_routed_experts=64, n_shared_experts=2,
                          n_activated_experts=6, moe_inter_dim=1408)
    c, embedding = count_flops(cfg, 4096), cfg.vocab_size * cfg.dim
    assert round((c.params + embedding) / 1e9, 1) == 16.4
    assert round((c.active_params + embedding) / 1e9, 1) == 2.8
    assert c.forward == 2 * c.active_params + 28 * 4 * 2048 * 4096  # FLOPs follow the activated weights
    expert = 3 * 2048 * 1408
    assert c.params - c.active_params == 27 * (64 - 6) * expert  # only the routed experts a token skips


MOE = dict(ffn="moe", n_dense_layers=1, n_routed_experts=8, n_shared_experts=1, n_activated_experts=2, moe_inter_dim=16)


@pytest.mark.parametrize("seq_len", [5, 12])
def test_moe_closed_form_equals_flop_counter(seq_len):
    if "moe" not in FFN_KINDS:
        pytest.skip("ffn='moe' is not in config.FFN_KINDS yet")
    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=3, n_heads=4, inter_dim=64, max_seq_len=24, **MOE)
    model = model_of(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, seq_len))
    assert counted_flops(model, tokens) == 2 * seq_len * forward_flops_per_token(cfg, seq_len)
    assert counted_flops(model, tokens, backward=True) == 2 * seq_len * training_flops_per_token(cfg, seq_len)


def test_matmul_peak_returns_a_positive_rate_and_its_details():
    peak = measure_matmul_peak((16, 48), repeats=3, min_time_s=0.001)
    assert math.isfinite(peak.flops_per_s) and peak.flops_per_s > 0
    assert [row["n"] for row in peak.rows] == [16, 48]
    assert all(len(row["repeats_flops_per_s"]) == 3 and row["matmuls_per_repeat"] >= 1 for row in peak.rows)
    best = max(peak.rows, key=lambda row: row["median_flops_per_s"])
    assert (peak.size, peak.flops_per_s) == (best["n"], best["median_flops_per_s"])
    assert peak.threads == torch.get_num_threads() and peak.dtype == "float32" and peak.device == "cpu"


@pytest.mark.parametrize("kwargs", [{"sizes": ()}, {"sizes": (0,)}, {"sizes": (8,), "repeats": 0},
                                    {"sizes": (8,), "min_time_s": -1.0}])
def test_matmul_peak_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="sizes|repeats"):
        measure_matmul_peak(**kwargs)


def test_mfu():
    assert mfu(6e6, 1e4, 1e11) == pytest.approx(0.6)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="peak"):
            mfu(6e6, 1e4, bad)
