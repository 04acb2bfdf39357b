import math

import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.mha import MultiHeadAttention, causal_attention, causal_mask
from minimodels.rope import rope_frequencies


def test_causal_mask_aligns_queries_to_the_end():
    m = causal_mask(2, 4)
    assert torch.isinf(m).tolist() == [[False, False, False, True], [False, False, False, False]]
    assert torch.equal(causal_mask(3, 3), torch.full((3, 3), float("-inf")).triu(1))


def test_causal_attention_matches_loop_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    out = causal_attention(q, k, v)
    for b in range(2):
        for h in range(3):
            for t in range(5):
                w = torch.softmax(torch.stack([q[b, t, h] @ k[b, s, h] for s in range(t + 1)]) / 2.0, 0)
                torch.testing.assert_close(out[b, t, h], sum(w[s] * v[b, s, h] for s in range(t + 1)))


def test_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_heads=4, max_seq_len=16)
    attn = MultiHeadAttention(cfg)
    x = torch.randn(1, 6, 32)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 32)
    freqs = rope_frequencies(cfg.head_dim, 6)
    torch.testing.assert_close(attn(x, freqs)[:, :4], attn(y, freqs)[:, :4])


def test_matches_torch_sdpa():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8), torch.randn(2, 7, 2, 8)
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=True, scale=1 / math.sqrt(8))
    torch.testing.assert_close(causal_attention(q, k, v), ref.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_more_queries_than_keys_raise_instead_of_nan_rows():
    with pytest.raises(ValueError, match=r"causal_mask\(3, 2\): 3 queries but only 2 keys"):
        causal_mask(3, 2)
    q = torch.randn(1, 3, 2, 4)
    with pytest.raises(ValueError, match="each query needs its own key"):
        causal_attention(q, q[:, :2], q[:, :2])  # the first query would see no key: softmax of all -inf is NaN
    assert torch.isfinite(causal_attention(q, q, q)).all() and causal_mask(0, 2).shape == (0, 2)
