import math

import pytest
import torch

from minimodels.rope import apply_rope, rope_frequencies


def test_adjacent_pairs_rotate_by_position_times_theta():
    """Pair i of channels (2i, 2i+1) at position t turns by t * base^(-2i/d): DeepSeek's layout."""
    d, t = 8, 5
    x = torch.zeros(1, t, 1, d)
    x[..., 0::2] = 1.0  # every pair starts as (1, 0)
    y = apply_rope(x, rope_frequencies(d, t, theta=10000.0))
    for pos in range(t):
        for i in range(d // 2):
            angle = pos * 10000.0 ** (-2 * i / d)
            assert y[0, pos, 0, 2 * i].item() == pytest.approx(math.cos(angle), abs=1e-6)
            assert y[0, pos, 0, 2 * i + 1].item() == pytest.approx(math.sin(angle), abs=1e-6)


def test_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    d = 16
    freqs = rope_frequencies(d, 64)
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(i, j):
        return (apply_rope(q, freqs[i:i + 1]) * apply_rope(k, freqs[j:j + 1])).sum()

    torch.testing.assert_close(score(10, 7), score(40, 37))
    torch.testing.assert_close(score(3, 3), (q * k).sum())


def test_rope_preserves_norm_and_rejects_odd_width():
    x = torch.randn(2, 4, 3, 8)
    torch.testing.assert_close(apply_rope(x, rope_frequencies(8, 4)).norm(dim=-1), x.norm(dim=-1))
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7, 4)
