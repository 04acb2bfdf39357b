"""Tests of minimodels/checks/lesson06.py: top-k gating and the V3 gate are compared with the package's router,
their cases reach the situations each named mistake needs (sigmoid and softmax, groups of more than 2 experts,
biased scores below 0), and they pass right answers and name the wrong ones (tests/test_checks_lessons.py runs
tests/wrong_answers_lesson06.py; the engine's rules run in tests/test_checks_engine.py).
"""

from dataclasses import replace

import pytest
import torch

from minimodels import Gate, checks
from minimodels.config import TINY


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def test_top_k_cases_cover_ranks_score_funcs_and_scales():
    cases = checks.TOP_K_GATE.cases
    assert {c.args[0].dim() for c in cases} >= {1, 2, 3, 4}
    assert {c.args[2] for c in cases} == {"softmax", "sigmoid"}
    scales = {(c.args[2], c.args[3]) for c in cases}
    assert any(f == "sigmoid" and s != 1.0 for f, s in scales) and any(f == "softmax" and s != 1.0 for f, s in scales)
    assert any(c.args[1] == 1 for c in cases)


def test_v3_cases_reach_every_routing_situation():
    cases = checks.V3_GATE.cases
    per_group = {c.args[0].shape[-1] // c.args[3] for c in cases if c.args[3] > 1}
    assert any(p > 2 for p in per_group)  # a sum over the group differs from the top-2 sum
    assert any(c.args[3] == 1 for c in cases) and any(c.args[3] == c.args[4] > 1 for c in cases)
    assert any(not c.args[1].any() for c in cases)  # a zero bias: the choice is the plain top-k
    assert any((c.args[1] < -1).any() for c in cases)  # biased scores below 0, where a 0 mask picks wrong


def test_masking_with_zero_picks_an_expert_of_a_dropped_group():
    """On the cases with negative biased scores, the 0-masked gate chooses experts -inf masking never would."""
    zero = next(m for m in checks.V3_GATE.mistakes if m.name == "groups masked with 0")
    differs = 0
    for case in checks.V3_GATE.cases:
        want = checks.V3_GATE.reference(*case.args)[1]
        got = zero.fn(*case.args)[1]
        differs += not torch.equal(got, want)
    assert differs >= 2


def _package_gate(score_func, groups, scale):
    """The package's Gate with random router rows (and a random V3 bias); returns it and its logits function."""
    cfg = replace(TINY, ffn="moe", n_routed_experts=8, n_activated_experts=2, n_expert_groups=groups[0],
                  n_limited_groups=groups[1], score_func=score_func, route_scale=scale)
    torch.manual_seed(0)
    gate = Gate(cfg)
    with torch.no_grad():
        gate.weight.normal_()
        if score_func == "sigmoid":
            gate.bias.normal_(std=0.5)
    return gate, cfg


@pytest.mark.parametrize("score_func, scale", [("softmax", 1.0), ("softmax", 16.0), ("sigmoid", 2.5)])
def test_the_top_k_reference_is_the_package_gate(score_func, scale):
    gate, cfg = _package_gate(score_func, (1, 1), scale)
    gate.bias.zero_()  # top-k gating has no bias
    x = torch.randn(2, 5, cfg.dim)
    with torch.no_grad():
        weights, indices, _ = gate(x.view(-1, cfg.dim))
        got = checks.TOP_K_GATE.reference(x @ gate.weight.T, 2, score_func, scale)
    torch.testing.assert_close(got[0], weights.view(2, 5, 2))
    assert torch.equal(got[1], indices.view(2, 5, 2))


@pytest.mark.parametrize("groups, scale", [((1, 1), 1.0), ((4, 2), 2.5), ((2, 1), 16.0)])
def test_the_v3_reference_is_the_package_gate(groups, scale):
    gate, cfg = _package_gate("sigmoid", groups, scale)
    x = torch.randn(2, 5, cfg.dim)
    with torch.no_grad():
        weights, indices, _ = gate(x.view(-1, cfg.dim))
        got = checks.V3_GATE.reference(x @ gate.weight.T, gate.bias, 2, groups[0], groups[1], scale)
    torch.testing.assert_close(got[0], weights.view(2, 5, 2))
    assert torch.equal(got[1], indices.view(2, 5, 2))


def test_the_top_k_reference_sums_to_route_scale_for_sigmoid_only():
    logits = torch.randn(4, 6)
    w, _ = checks.TOP_K_GATE.reference(logits, 3, "sigmoid", 2.5)
    torch.testing.assert_close(w.sum(-1), torch.full((4,), 2.5))
    w, _ = checks.TOP_K_GATE.reference(logits, 3, "softmax", 1.0)
    assert (w.sum(-1) < 1).all()  # V2: the chosen softmax scores, not renormalised
