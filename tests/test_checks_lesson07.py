"""Tests of minimodels/checks/lesson07.py: the DeepSeekMoE layer checker compares with the package's MoE layer
(routed dispatch + fused shared experts), its cases cover no shared expert, several, k = 1 and both gate
recipes, and an input changed in place fails; the segmentation checker agrees with fine_grained_config and the
DeepSeekMoE paper's counts. The contract over right and named wrong answers (tests/wrong_answers_lesson07.py)
runs in tests/test_checks_lessons.py.
"""

import math
from dataclasses import replace

import pytest
import torch
import wrong_answers_lesson07 as wa

from minimodels import MoE, checks
from minimodels.checks.lesson07 import fused_shared
from minimodels.config import TINY


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def test_cases_cover_no_shared_several_shared_top1_and_both_gates():
    cases = checks.MOE_LAYER.cases
    shared = {c.args[6].shape[0] for c in cases}
    assert {0, 1, 2} <= shared
    assert {1}.issubset({c.args[2].shape[1] for c in cases})  # k = 1: "first choice only" is right there
    sums = [c.args[1].sum(-1) for c in cases]
    assert any(torch.allclose(s, torch.full_like(s, 2.5)) for s in sums)  # V3: renormalised × route_scale 2.5
    assert any((s < 1 - 1e-3).all() for s in sums)  # V2: top-k of a softmax, not renormalised


def test_the_reference_is_the_package_moe_layer():
    """A package MoE layer, its weights passed to the checker's reference, gives the same output."""
    for n_shared in (0, 1, 3):
        cfg = replace(TINY, ffn="moe", dim=16, n_routed_experts=6, n_activated_experts=2, moe_inter_dim=8,
                      n_shared_experts=n_shared)
        torch.manual_seed(n_shared)
        layer = MoE(cfg).eval()
        x = torch.randn(2, 5, cfg.dim)
        with torch.no_grad():
            want = layer(x).view(10, cfg.dim)
            weights, indices, _ = layer.gate(x.view(10, cfg.dim))
        h, d = cfg.moe_inter_dim, cfg.dim
        if n_shared:  # cut the fused shared SwiGLU (width S·H) back into S experts
            sw = layer.shared_experts
            shared = (sw.w1.weight.view(n_shared, h, d), sw.w2.weight.view(d, n_shared, h).permute(1, 0, 2),
                      sw.w3.weight.view(n_shared, h, d))
        else:
            shared = (torch.zeros(0, h, d), torch.zeros(0, d, h), torch.zeros(0, h, d))
        e = layer.experts
        got = checks.MOE_LAYER.reference(x.view(10, d), weights, indices, e.w1.data, e.w2.data, e.w3.data, *shared)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        assert checks.check_deepseek_moe(wa.deepseek_moe).passed


def test_fused_shared_equals_the_sum_of_the_shared_experts():
    g = torch.Generator().manual_seed(0)
    s, h, d = 3, 4, 6
    w1, w2, w3 = torch.randn(s, h, d, generator=g), torch.randn(s, d, h, generator=g), torch.randn(s, h, d, generator=g)
    x = torch.randn(5, d, generator=g)
    with torch.no_grad():
        fused = fused_shared(w1, w2, w3)(x)
    torch.testing.assert_close(fused, sum(wa.ffn(x, w1[i], w2[i], w3[i]) for i in range(s)), atol=1e-5, rtol=1e-5)
    assert fused_shared(w1[:0], w2[:0], w3[:0]) is None


def test_changing_the_weights_in_place_fails_with_right_values():
    result = checks.check_deepseek_moe(wa.deepseek_moe_in_place)
    assert result.status == "failed"
    assert "changed its input `weights` in place" in result.message and "values are right" in result.message


def test_segmentation_gives_the_papers_counts():
    """DeepSeekMoE §3.1: 16 experts top-2 -> 120 sets; m = 4 -> C(64, 8) = 4,426,165,368; with 1 shared
    expert (the 2B model): 63 routed, 7 active."""
    ref = checks.SEGMENT.reference
    assert ref(16, 2, 256, 1, 0) == (16, 2, 256, 120)
    assert ref(16, 2, 256, 4, 0) == (64, 8, 64, 4_426_165_368)
    assert ref(16, 2, 256, 4, 1) == (63, 7, 64, math.comb(63, 7))


def test_segmentation_cases_vary_shared_and_m():
    cases = checks.SEGMENT.cases
    assert {0, 1, 2} <= {c.args[4] for c in cases} and {1, 2, 4} <= {c.args[3] for c in cases}
