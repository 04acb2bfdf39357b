import torch

from minimodels.norms import RMSNorm


def test_rmsnorm_matches_formula_and_keeps_dtype():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8) * 5
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 8))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.bfloat16


def test_rmsnorm_output_has_unit_rms():
    y = RMSNorm(16)(torch.randn(4, 16) * 100)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), rtol=1e-4, atol=1e-4)
