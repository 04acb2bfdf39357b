import torch
import torch.nn.functional as F

from minimodels.ffn import FeedForward


def test_swiglu_formula():
    torch.manual_seed(0)
    ffn = FeedForward(8, 20)
    x = torch.randn(2, 3, 8)
    expected = (F.silu(x @ ffn.w1.weight.T) * (x @ ffn.w3.weight.T)) @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), expected)
    assert sum(p.numel() for p in ffn.parameters()) == 3 * 8 * 20
