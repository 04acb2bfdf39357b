"""Grouped-query attention: head sharing, MHA and MQA as its two ends, its cache, its config checks."""

import pytest
import torch

from minimodels.config import ModelConfig, replace
from minimodels.gqa import GroupedQueryAttention, grouped_causal_attention, kv_heads
from minimodels.kv_cache import KVCache
from minimodels.mha import MultiHeadAttention, causal_attention
from minimodels.model import MiniModel
from minimodels.rope import rope_frequencies

CFG = ModelConfig(vocab_size=50, dim=48, n_layers=2, n_heads=6, inter_dim=64, max_seq_len=24, attn="gqa",
                  n_kv_heads=2)


@pytest.mark.parametrize("g", [1, 2, 3, 6])
def test_grouped_attention_equals_mha_on_repeated_kv_heads(g):
    """Query head h reads KV head h // (H // G): the same as copying each KV head H // G times."""
    torch.manual_seed(g)
    q, k, v = torch.randn(2, 5, 6, 8), torch.randn(2, 7, g, 8), torch.randn(2, 7, g, 8)
    expanded = [t.repeat_interleave(6 // g, dim=2) for t in (k, v)]  # (B, S, H, K)
    torch.testing.assert_close(grouped_causal_attention(q, k, v), causal_attention(q, *expanded))


def test_a_wrong_grouping_is_detected():
    """Repeating KV heads in the other order (tile instead of interleave) gives different outputs."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8)
    tiled = [t.repeat(1, 1, 3, 1) for t in (k, v)]
    assert (grouped_causal_attention(q, k, v) - causal_attention(q, *tiled)).abs().max() > 1e-3


def test_with_as_many_kv_heads_as_heads_it_is_mha():
    mha_cfg = replace(CFG, attn="mha", n_kv_heads=0)
    torch.manual_seed(0)
    mha = MiniModel(mha_cfg)
    for n in (0, CFG.n_heads):
        gqa = MiniModel(replace(CFG, n_kv_heads=n))
        gqa.load_state_dict(mha.state_dict())  # same names and shapes: wq, wk, wv, wo
        tokens = torch.randint(0, 50, (2, 10))
        torch.testing.assert_close(gqa(tokens), mha(tokens), atol=1e-6, rtol=1e-6)
    x, freqs = torch.randn(2, 5, 48), rope_frequencies(8, 5)
    a, b = MultiHeadAttention(mha_cfg), GroupedQueryAttention(mha_cfg)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x, freqs), a(x, freqs), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("g", [1, 2, 3, 6])
def test_projection_and_cache_widths(g):
    cfg = replace(CFG, n_kv_heads=g)
    attn = GroupedQueryAttention(cfg)
    assert attn.wq.weight.shape == (48, 48) and attn.wk.weight.shape == attn.wv.weight.shape == (g * 8, 48)
    cache = KVCache(cfg, batch_size=2, max_len=10)
    assert cache.layers[0]["k"].shape == (2, 10, g, 8)
    assert cache.bytes_per_token == 2 * g * 8 * cfg.n_layers * 4  # 2 · n_kv_heads · head_dim · layers · fp32


def test_mqa_gives_every_query_head_the_same_keys():
    """With one KV head, two query heads with equal queries get equal outputs, whatever the head."""
    cfg = replace(CFG, n_kv_heads=1)
    assert kv_heads(cfg) == 1 and kv_heads(replace(CFG, n_kv_heads=0)) == 6
    torch.manual_seed(1)
    q = torch.randn(1, 4, 1, 8).expand(1, 4, 6, 8)
    o = grouped_causal_attention(q, torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8))
    for h in range(1, 6):
        torch.testing.assert_close(o[:, :, h], o[:, :, 0])


@pytest.mark.parametrize("change, words", [
    (dict(n_kv_heads=4), "divisible by n_kv_heads"),
    (dict(n_kv_heads=12), "at most n_heads"),
    (dict(n_kv_heads=-1), "n_kv_heads"),
    (dict(attn="mha", n_kv_heads=2), "attn='gqa'"),
    (dict(dim=30), "must be even"),  # head width 30 // 6 = 5: RoPE rotates pairs
])
def test_invalid_gqa_configs_say_what_to_change(change, words):
    with pytest.raises(ValueError, match=words):
        replace(CFG, **change)
