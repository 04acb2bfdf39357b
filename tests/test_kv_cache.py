import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.kv_cache import KV_PRESETS, KVCache, cache_spec, kv_bytes_per_token, kv_cache_report
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


def test_cache_fills_as_the_model_writes():
    model = MiniModel(CFG)
    cache = KVCache(CFG, 1, 10)
    model(torch.randint(0, 50, (1, 4)), cache=cache)
    for layer in cache.layers:
        assert layer["k"][:, :4].abs().sum() > 0 and layer["k"][:, 4:].abs().sum() == 0


def test_bad_sizes():
    with pytest.raises(ValueError, match="max_seq_len"):
        KVCache(CFG, 1, 25)
    with pytest.raises(ValueError, match="positive"):
        KVCache(CFG, 0)
    with pytest.raises(ValueError, match="dtype"):
        kv_cache_report(1, 1, 1, context=1, dtype="fp4")
