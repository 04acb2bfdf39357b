"""What every attention variant must do the same way: the cache, generation, bf16 RoPE, training.

The variants differ only in their module (model.py's ATTENTION registry) and `cache_spec`; MiniModel, KVCache,
generate() and train() are shared, so these tests run over all of them.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimodels.config import ATTN_KINDS, ModelConfig, attention_parameters, model_parameters, replace
from minimodels.generate import generate
from minimodels.kv_cache import KVCache, kv_bytes_per_token
from minimodels.mla import set_attn_impl
from minimodels.model import ATTENTION, MiniModel, count_parameters

BASE = ModelConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, inter_dim=64, max_seq_len=40, kv_lora_rank=20,
                   qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=10, q_lora_rank=12)
VARIANTS = {
    "mha": replace(BASE, attn="mha"),
    "gqa": replace(BASE, attn="gqa", n_kv_heads=2),
    "mqa": replace(BASE, attn="gqa", n_kv_heads=1),
    "mla": replace(BASE, attn="mla"),
    "mla_lowrank": replace(BASE, attn="mla_lowrank"),
}
# elements per token and layer, from the formulas of DeepSeek-V2 Table 1
FORMULA = {"mha": 2 * 6 * 8, "gqa": 2 * 2 * 8, "mqa": 2 * 1 * 8, "mla": 20 + 4, "mla_lowrank": 20}


def test_every_registered_variant_is_covered():
    assert set(ATTN_KINDS) == set(ATTENTION) == {cfg.attn for cfg in VARIANTS.values()}


def model(cfg, seed=0):
    torch.manual_seed(seed)
    m = MiniModel(cfg)
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.head.weight.mul_(20)
    return m


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_equal_the_formula(name, dtype):
    cfg = VARIANTS[name]
    cache = KVCache(cfg, batch_size=3, max_len=16, dtype=dtype)
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in layer.values())
    per_token = FORMULA[name] * cfg.n_layers * dtype.itemsize
    assert measured == cache.nbytes == per_token * 3 * 16
    assert cache.bytes_per_token == per_token == kv_bytes_per_token(cache.spec, cfg.n_layers, dtype)


@pytest.mark.parametrize("name", VARIANTS)
def test_cached_equals_uncached_with_a_batch_and_a_chunked_prefill(name):
    cfg = VARIANTS[name]
    m = model(cfg)
    tokens = torch.randint(0, 64, (3, 15), generator=torch.Generator().manual_seed(1))
    full = m(tokens)
    impls = ("naive", "absorb") if cfg.attn.startswith("mla") else (None,)
    for impl in impls:
        if impl:
            set_attn_impl(m, impl)
        cache = KVCache(cfg, 3, 15)
        chunks = [(0, 4), (4, 7), (7, 8), (8, 12), (12, 13), (13, 14), (14, 15)]  # prefill in pieces, then steps
        out = torch.cat([m(tokens[:, a:b], a, cache) for a, b in chunks], 1)
        torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_generation_with_cache_equals_without(name):
    m = model(VARIANTS[name])
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(2))
    assert torch.equal(generate(m, prompt, 20), generate(m, prompt, 20, use_cache=False))


@pytest.mark.parametrize("name", VARIANTS)
def test_bfloat16_keeps_rope_a_rotation(name):
    """After model.to(bfloat16) the logits still depend only on distances: shifting every position by the same
    amount changes them no more than bf16 rounding does (a RoPE table cast to a real dtype would not)."""
    torch.manual_seed(0)
    m = MiniModel(VARIANTS[name])
    with torch.no_grad():  # weights large enough that attention, not the embedding, dominates the logits
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(std=0.3)
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(3))
    ref = m(tokens).float()
    m = m.to(torch.bfloat16)
    for impl in ("naive", "absorb") if name.startswith("mla") else (None,):
        if impl:
            set_attn_impl(m, impl)
        for start in (0, 13, 31):  # measured: bf16 rounding moves them by about 3% of the largest logit
            shifted = m(tokens, start_pos=start).float()
            assert (shifted - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("name, pairs", [("mha", 4), ("gqa", 4), ("mqa", 4), ("mla", 2), ("mla_lowrank", 0)])
def test_the_rope_table_is_as_wide_as_the_rotated_channels(name, pairs):
    """MHA/GQA rotate whole 8-wide heads; MLA only its 4 decoupled channels; mla_lowrank nothing."""
    cfg = VARIANTS[name]
    assert cfg.rope_head_dim == 2 * pairs
    assert MiniModel(cfg).freqs[:].shape == (cfg.max_seq_len, pairs)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_training_step_reaches_every_parameter(name):
    m = MiniModel(VARIANTS[name])
    tokens = torch.randint(0, 64, (2, 9))
    loss = torch.nn.functional.cross_entropy(m(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("name", VARIANTS)
def test_closed_form_parameter_count(name):
    cfg = VARIANTS[name]
    m = MiniModel(cfg)
    assert count_parameters(m) == model_parameters(cfg)
    assert sum(p.numel() for p in m.layers[0].attn.parameters()) == attention_parameters(cfg)


@st.composite
def variant_configs(draw) -> ModelConfig:
    """Small GQA and MLA configs anywhere in their valid range, edges included (test_properties.py does MHA)."""
    n_heads = draw(st.integers(1, 4))
    attn = draw(st.sampled_from(["gqa", "mla", "mla_lowrank"]))
    n_kv_heads = draw(st.sampled_from([g for g in range(n_heads + 1) if g == 0 or n_heads % g == 0]))
    return ModelConfig(
        vocab_size=draw(st.integers(1, 32)), dim=n_heads * 2 * draw(st.integers(1, 4)),
        n_layers=draw(st.integers(1, 2)), n_heads=n_heads, inter_dim=draw(st.integers(1, 16)),
        max_seq_len=draw(st.integers(1, 12)), attn=attn, n_kv_heads=n_kv_heads if attn == "gqa" else 0,
        q_lora_rank=draw(st.integers(0, 6)), kv_lora_rank=draw(st.integers(1, 12)),
        qk_nope_head_dim=draw(st.integers(1, 6)), qk_rope_head_dim=2 * draw(st.integers(1, 3)),
        v_head_dim=draw(st.integers(1, 6)), init_std=0.3,
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=variant_configs(), data=st.data())
def test_random_variant_configs_count_cache_and_absorb_correctly(cfg, data):
    torch.manual_seed(0)
    m = MiniModel(cfg)
    assert count_parameters(m) == model_parameters(cfg)
    b, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, cfg.max_seq_len))
    tokens = torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(t))
    with torch.no_grad():
        full = m(tokens)
        cuts = sorted(set(data.draw(st.lists(st.integers(1, t), max_size=4))) | {t})
        for impl in ("naive", "absorb") if cfg.attn != "gqa" else (None,):
            if impl:
                set_attn_impl(m, impl)
            cache, start, steps = KVCache(cfg, b, t), 0, []
            for end in cuts:
                steps.append(m(tokens[:, start:end], start_pos=start, cache=cache))
                start = end
            scale = 1e-5 * (1 + full.abs().max().item())
            torch.testing.assert_close(torch.cat(steps, 1), full, atol=scale, rtol=1e-4)
