import math

import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.generate import generate
from minimodels.model import MiniModel
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


# --- the model's table stays a rotation whatever dtype the model is cast to (issue 6) ---

CFG = ModelConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, inter_dim=96, max_seq_len=64)
CASTS = {
    "to(bfloat16)": lambda m: m.to(torch.bfloat16),
    "bfloat16()": lambda m: m.bfloat16(),
    "half()": lambda m: m.half(),
    "to(float16)": lambda m: m.to(torch.float16),
    "double()": lambda m: m.double(),
    "to(float64)": lambda m: m.to(dtype=torch.float64),
    "to(cpu, bfloat16)": lambda m: m.to("cpu", torch.bfloat16),
    "float()": lambda m: m.float(),
}


def distance_error(freqs, q: torch.Tensor, k: torch.Tensor, distance: int = 2) -> float:
    """Largest change of the score q_i·k_j over all i - j = distance, relative to |q||k|."""
    def score(i, j):
        return (apply_rope(q, freqs[i:i + 1]).double() * apply_rope(k, freqs[j:j + 1]).double()).sum().item()

    ref = score(distance, 0)
    worst = max(abs(score(i, i - distance) - ref) for i in range(distance, CFG.max_seq_len))
    return worst / (q.double().norm() * k.double().norm()).item()


@pytest.mark.parametrize("cast", CASTS)
def test_cast_model_keeps_a_unit_rotation_table_and_distance_only_scores(cast):
    torch.manual_seed(0)
    model = CASTS[cast](MiniModel(CFG))
    dtype = model.head.weight.dtype
    table = model.freqs[:]
    assert table.dtype == torch.complex64  # never cast: a real table would scale instead of rotate
    torch.testing.assert_close(table.abs(), torch.ones(table.shape), atol=1e-6, rtol=0)
    torch.testing.assert_close(table, rope_frequencies(CFG.head_dim, CFG.max_seq_len), atol=0, rtol=0)
    q, k = (torch.randn(1, 1, 1, CFG.head_dim, generator=torch.Generator().manual_seed(s)).to(dtype) for s in (1, 2))
    tol = 2 * max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps)  # rotations are taken in fp32
    assert distance_error(model.freqs, q, k) <= tol
    # the check can fail: the table a real cast used to leave (cos only) breaks distance-only scores
    assert distance_error(torch.complex(table.real, torch.zeros_like(table.real)), q, k) > 10 * tol


def test_a_real_table_is_refused_not_used_as_a_scale():
    x = torch.randn(1, 3, 2, 8)
    freqs = rope_frequencies(8, 3)
    with pytest.raises(TypeError, match="complex table of rope_frequencies"):
        apply_rope(x, freqs.real)
    with pytest.raises(ValueError, match=r"freqs\[start_pos:start_pos \+ T\]"):
        apply_rope(x, freqs[:1])  # one position for the whole chunk would broadcast silently
    with pytest.raises(ValueError, match="batch, time, heads, even width"):
        apply_rope(x[0], freqs)


def test_autocast_keeps_rotations_and_distance_only_scores():
    torch.manual_seed(0)
    model = MiniModel(CFG)
    attn, x = model.layers[0].attn, torch.randn(1, 1, CFG.dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = attn.wq(x).view(1, 1, CFG.n_heads, CFG.head_dim)
        k = attn.wk(x.flip(-1)).view(1, 1, CFG.n_heads, CFG.head_dim)
        assert q.dtype == torch.bfloat16 and model.freqs[:].dtype == torch.complex64
        assert distance_error(model.freqs, q, k) <= 2 * torch.finfo(torch.bfloat16).eps
        logits = model(torch.randint(0, 64, (2, 8)))
    assert torch.isfinite(logits).all()


def test_shifted_positions_give_the_same_logits_after_double():
    """RoPE is relative: the same tokens placed at positions 37.. instead of 0.. give the same logits."""
    torch.manual_seed(0)
    model = MiniModel(CFG).double()
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, start_pos=37), model(tokens), atol=1e-6, rtol=1e-6)


def test_round_trip_through_bfloat16_keeps_cached_equal_to_uncached_in_fp32():
    torch.manual_seed(0)
    model = MiniModel(CFG)
    with torch.no_grad():
        model.head.weight.mul_(20)  # sharpen the random model so greedy choices are not near-ties
    reference = MiniModel(CFG)
    reference.load_state_dict(model.state_dict())
    model.to(torch.bfloat16).to(torch.float32)  # weights lose precision, the rotations lose nothing
    assert torch.equal(model.freqs[:], reference.freqs[:])
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(generate(model, prompt, 30), generate(model, prompt, 30, use_cache=False))


def test_device_moves_reach_the_table():
    model = MiniModel(CFG).to("meta")  # the one other device every machine has
    assert model.freqs[:].device.type == "meta" and model.freqs[:].dtype == torch.complex64


@pytest.mark.parametrize("shape", [(1, 1, 1, 7), (2, 3, 4, 7)])
def test_slices_at_odd_offsets_are_rotated_like_copies(shape):
    """MLA rotates the last R channels of [nope | rope]; with an odd nope width the slice starts at an odd offset."""
    x = torch.randn(*shape)
    rope_part = x[..., 3:]  # 4 channels starting at offset 3
    freqs = rope_frequencies(4, shape[1])
    torch.testing.assert_close(apply_rope(rope_part, freqs), apply_rope(rope_part.clone(), freqs), atol=0, rtol=0)
