import pytest
import torch

from minimodels.config import ModelConfig, replace
from minimodels.kv_cache import (
    KV_PRESETS,
    MLA_PRESETS,
    KVCache,
    cache_spec,
    kv_bytes_per_token,
    kv_cache_report,
)
from minimodels.model import MiniModel

CFG = ModelConfig(vocab_size=50, dim=32, n_layers=3, n_heads=4, inter_dim=64, max_seq_len=24)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_formula_equals_measured_tensor_bytes(dtype):
    cache = KVCache(CFG, batch_size=3, max_len=20, dtype=dtype)
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in layer.values())
    assert cache.nbytes == measured
    assert cache.bytes_per_token == kv_bytes_per_token(cache_spec(CFG), CFG.n_layers, dtype)
    report = kv_cache_report(CFG.n_layers, CFG.n_heads, CFG.head_dim, context=20, batch=3,
                             dtype={torch.float32: "float32", torch.bfloat16: "bfloat16",
                                    torch.float16: "float16"}[dtype])
    assert report["bytes_per_token"] == cache.bytes_per_token
    assert report["total_bytes"] == cache.nbytes


def test_mha_bytes_per_token_is_2_layers_heads_width_bytes():
    assert KVCache(CFG, 1).bytes_per_token == 2 * 3 * 4 * 8 * 4


def test_real_model_presets():
    llama7 = KV_PRESETS["Llama-2-7B"]
    assert kv_cache_report(**llama7, context=4096, dtype="float16")["bytes_per_token"] == 512 * 1024
    assert kv_cache_report(**KV_PRESETS["Llama-2-70B"], context=1, dtype="bfloat16")["bytes_per_token"] == 327680
    assert kv_cache_report(**KV_PRESETS["Llama-3-8B"], context=1)["bytes_per_token"] == 131072


def test_mla_presets_match_deepseek_v2_table_1():
    """(d_c + d_h^R) · layers elements per token: 576 · 60 = 34,560 for V2 (67.5 KiB in bf16), REFERENCE.md §2.6."""
    v2 = kv_cache_report(**MLA_PRESETS["DeepSeek-V2"], context=1)
    assert v2["bytes_per_token"] == 34_560 * 2 == int(67.5 * 1024)
    assert kv_cache_report(**MLA_PRESETS["DeepSeek-V3"], context=1, dtype="float32")["bytes_per_token"] == 35_136 * 4
    assert kv_cache_report(**MLA_PRESETS["DeepSeek-V2-Lite"], context=10, batch=2)["total_bytes"] == 15_552 * 2 * 20


@pytest.mark.parametrize("cfg", [replace(CFG, attn="gqa", n_kv_heads=2), replace(CFG, attn="mla"),
                                 replace(CFG, attn="mla_lowrank")], ids=["gqa", "mla", "mla_lowrank"])
def test_report_equals_measured_tensor_bytes_for_every_variant(cfg):
    cache = KVCache(cfg, batch_size=2, max_len=7)
    if cfg.attn == "gqa":
        shape = dict(n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim)
    else:
        shape = dict(kv_lora_rank=cfg.kv_lora_rank, qk_rope_head_dim=cfg.qk_rope_head_dim * (cfg.attn == "mla"))
    report = kv_cache_report(cfg.n_layers, **shape, context=7, batch=2, dtype="float32")
    assert report == {"bytes_per_token": cache.bytes_per_token, "total_bytes": cache.nbytes}


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_kv_heads=1, head_dim=8, kv_lora_rank=32), "not both"),
    (dict(), "not neither"),
    (dict(kv_lora_rank=0), "kv_lora_rank=0 must be >= 1"),
    (dict(n_kv_heads=1), "head_dim=None must be >= 1"),
    (dict(n_kv_heads=1, head_dim=8, qk_rope_head_dim=16), "used only with kv_lora_rank"),
])
def test_report_asks_for_one_layout(kwargs, words):
    with pytest.raises(ValueError, match=words):
        kv_cache_report(4, **kwargs, context=1)


def test_cache_fills_as_the_model_writes():
    model = MiniModel(CFG)
    cache = KVCache(CFG, 1, 10)
    model(torch.randint(0, 50, (1, 4)), cache=cache)
    for layer in cache.layers:
        assert layer["k"][:, :4].abs().sum() > 0 and layer["k"][:, 4:].abs().sum() == 0


def test_bad_sizes():
    with pytest.raises(ValueError, match="max_seq_len"):
        KVCache(CFG, 1, 25)
    with pytest.raises(ValueError, match="batch_size=0 must be a positive int"):
        KVCache(CFG, 0)
    with pytest.raises(ValueError, match="dtype"):
        kv_cache_report(1, 1, 1, context=1, dtype="fp4")


# --- bounds: every mismatch raises an error that says what to change (issue 6) ---

def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(seed))


def test_the_model_keeps_the_cache_length():
    model, cache = MiniModel(CFG), KVCache(CFG, 2, 10)
    model(tokens(2, 4), cache=cache)
    assert cache.length == 4
    model(tokens(2, 1), start_pos=4, cache=cache)
    assert cache.length == 5
    model(tokens(2, 2), start_pos=2, cache=cache)  # going back rewrites from there: later positions are stale
    assert cache.length == 4


def test_going_back_branches_from_the_cached_prefix():
    torch.manual_seed(0)
    model, cache = MiniModel(CFG), KVCache(CFG, 2, 10)
    first, branch = tokens(2, 6, seed=1), tokens(2, 3, seed=2)
    with torch.no_grad():
        model(first, cache=cache)
        out = model(branch, start_pos=3, cache=cache)
        full = model(torch.cat([first[:, :3], branch], 1))[:, 3:]
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_writes_past_the_end_raise_instead_of_dropping_keys():
    model, cache = MiniModel(CFG), KVCache(CFG, 1, 6)
    model(tokens(1, 6), cache=cache)
    with pytest.raises(ValueError, match=r"positions 6..6 do not fit in a cache of max_len=6; allocate "
                                         r"KVCache\(cfg, batch_size, max_len=7\)"):
        model(tokens(1, 1), start_pos=6, cache=cache)  # used to write nothing and attend without its own key
    with pytest.raises(ValueError, match="max_len=8"):
        model(tokens(1, 8), cache=KVCache(CFG, 1, 6))


def test_negative_or_skipping_start_pos_raises():
    model, cache = MiniModel(CFG), KVCache(CFG, 1, 10)
    with pytest.raises(ValueError, match=r"start_pos=-2 must be an int >= 0"):
        model(tokens(1, 2), start_pos=-2, cache=cache)  # used to write at the END of the cache
    with pytest.raises(ValueError, match=r"start_pos=-2 must be an int >= 0"):
        cache.claim(CFG, tokens(1, 2), -2, torch.float32)
    model(tokens(1, 3), cache=cache)
    with pytest.raises(ValueError, match=r"skip positions 3..4.*from start_pos=3 on"):
        model(tokens(1, 1), start_pos=5, cache=cache)  # positions 3, 4 would be read as zeros
    with pytest.raises(ValueError, match="must be an int"):
        model(tokens(1, 1), start_pos=2.0, cache=cache)


@pytest.mark.parametrize("cache_batch", [1, 3])
def test_a_cache_of_another_batch_size_raises(cache_batch):
    """A cache serves exactly its batch: a bigger one used to be sliced silently, a smaller one to fail deep inside."""
    with pytest.raises(ValueError, match=rf"batch_size={cache_batch} sequences but the input has 2.*"
                                         rf"KVCache\(cfg, batch_size=2"):
        MiniModel(CFG)(tokens(2, 3), cache=KVCache(CFG, cache_batch, 10))


def test_a_cache_of_another_dtype_raises():
    model = MiniModel(CFG)
    with pytest.raises(ValueError, match=r"holds torch.bfloat16 but the model computes in torch.float32.*"
                                         r"dtype=torch.float32"):
        model(tokens(1, 3), cache=KVCache(CFG, 1, 10, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"holds torch.float32 but the model computes in torch.bfloat16"):
        model.to(torch.bfloat16)(tokens(1, 3), cache=KVCache(CFG, 1, 10))
    model(tokens(1, 3), cache=KVCache(CFG, 1, 10, dtype=torch.bfloat16))  # matched, it runs


def test_a_cache_on_another_device_raises():
    with pytest.raises(ValueError, match=r"the cache is on meta but the tokens are on cpu.*device=\"cpu\""):
        MiniModel(CFG)(tokens(1, 3), cache=KVCache(CFG, 1, 10, device="meta"))


@pytest.mark.parametrize("other, named", [
    (dict(n_layers=2), "n_layers 2 vs 3"),
    (dict(n_heads=2), "n_heads 2 vs 4"),  # same width, other head count
    (dict(dim=64, n_heads=4), "dim 64 vs 32"),  # same heads, other head width
])
def test_a_cache_of_another_model_layout_raises(other, named):
    cache = KVCache(replace(CFG, **other), 1, 10)
    with pytest.raises(ValueError, match=rf"built for another model.*{named}.*KVCache\(model.cfg"):
        MiniModel(CFG)(tokens(1, 3), cache=cache)


def test_a_cache_of_another_attention_variant_raises():
    cache = KVCache(replace(CFG, attn="mla"), 1, 10)
    with pytest.raises(ValueError, match=r"attn='mla'.*attn='mha'"):
        MiniModel(CFG)(tokens(1, 3), cache=cache)


def test_a_cache_whose_layout_matches_is_accepted_from_another_config():
    """Fields the cache does not depend on (vocabulary, FFN width, RoPE base) may differ."""
    cache = KVCache(replace(CFG, vocab_size=60, inter_dim=16, rope_theta=500.0), 1, 10)
    MiniModel(CFG)(tokens(1, 3), cache=cache)
    assert cache.length == 3


@pytest.mark.parametrize("kw, words", [
    (dict(batch_size=1.5), "batch_size=1.5 must be a positive int"),
    (dict(batch_size=True), "batch_size=True must be a positive int"),
    (dict(batch_size=1, max_len=0), "max_len=0 must be a positive int"),
    (dict(batch_size=1, dtype=torch.int8), "floating dtype"),
    (dict(batch_size=1, dtype="float32"), "floating dtype"),
])
def test_bad_cache_arguments(kw, words):
    with pytest.raises(ValueError, match=words):
        KVCache(CFG, **kw)
