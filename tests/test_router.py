"""The router (minimodels/router.py) on hand-computed cases: V2 (softmax) and V3 (sigmoid, bias, top-2 groups)."""

import math

import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.router import Gate, affinity_scores, limit_groups, route

NEG = float("-inf")


def test_softmax_and_sigmoid_scores_are_fp32():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    torch.testing.assert_close(affinity_scores(logits, "softmax"), torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(affinity_scores(logits, "sigmoid"), torch.tensor([[0.5, 0.75]]))
    for func in ("softmax", "sigmoid"):  # bf16 logits (autocast) still give fp32 scores
        assert affinity_scores(logits.bfloat16(), func).dtype == torch.float32
    with pytest.raises(ValueError, match="score_func"):
        affinity_scores(logits, "relu")


def test_v2_weights_are_the_chosen_softmax_scores_not_renormalised_times_route_scale():
    scores = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    w, idx = route(scores, None, 2, score_func="softmax", route_scale=16.0)
    assert idx.tolist() == [[1, 3]]
    torch.testing.assert_close(w, torch.tensor([[0.5 * 16, 0.25 * 16]]))  # not (0.5, 0.25) / 0.75


def test_v3_bias_changes_the_choice_but_not_the_weights():
    scores = torch.tensor([[0.9, 0.8, 0.3, 0.2]])
    bias = torch.tensor([0.0, -1.0, 0.0, 0.0])  # expert 1 is pushed out of the choice
    w, idx = route(scores, bias, 2, score_func="sigmoid", route_scale=2.5)
    assert sorted(idx.tolist()[0]) == [0, 2]
    chosen = {i: v for i, v in zip(idx.tolist()[0], w.tolist()[0])}
    assert chosen[0] == pytest.approx(2.5 * 0.9 / 1.2) and chosen[2] == pytest.approx(2.5 * 0.3 / 1.2)
    # a bias on a chosen expert: the weights still come from the unbiased 0.9 and 0.8 (not 1.4 and 0.8)
    w2, idx2 = route(scores, torch.tensor([0.5, 0.0, 0.0, 0.0]), 2, score_func="sigmoid", route_scale=2.5)
    assert sorted(idx2.tolist()[0]) == [0, 1]
    torch.testing.assert_close(w2.sort(descending=True).values, torch.tensor([[2.5 * 0.9 / 1.7, 2.5 * 0.8 / 1.7]]))


def test_sigmoid_weights_sum_to_route_scale():
    torch.manual_seed(0)
    scores = torch.rand(50, 16)
    w, _ = route(scores, torch.randn(16), 4, score_func="sigmoid", route_scale=2.5)
    torch.testing.assert_close(w.sum(-1), torch.full((50,), 2.5))


def test_v2_group_score_is_the_max_and_v3_the_top2_sum():
    # two groups of 3: group 0 has the single best expert, group 1 the best pair
    choice = torch.tensor([[0.875, 0.0, 0.0, 0.5, 0.5, 0.0]])
    v2 = limit_groups(choice, 2, 1, "max")
    v3 = limit_groups(choice, 2, 1, "top2")
    assert v2[0, :3].tolist() == [0.875, 0.0, 0.0] and v2[0, 3:].tolist() == [NEG] * 3
    assert v3[0, :3].tolist() == [NEG] * 3 and v3[0, 3:].tolist() == [0.5, 0.5, 0.0]


def test_groups_are_masked_with_minus_inf_even_when_all_biased_scores_are_negative():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    bias = torch.full((4,), -1.0)  # every biased score is negative: masking with 0 would pick the dropped group
    w, idx = route(scores, bias, 2, n_groups=2, n_limited=1, score_func="sigmoid", route_scale=1.0)
    assert sorted(idx.tolist()[0]) == [2, 3]
    torch.testing.assert_close(w.sum(-1), torch.ones(1))
    masked = limit_groups(scores + bias, 2, 1, "top2")
    assert torch.isinf(masked[0, :2]).all() and (masked[0, :2] < 0).all()


def test_limit_groups_rejects_an_unknown_group_score():
    with pytest.raises(ValueError, match="group_score"):
        limit_groups(torch.zeros(1, 4), 2, 1, "mean")


def test_gate_module_bias_is_a_buffer_and_gradient_reaches_the_router_weight():
    cfg = ModelConfig(dim=8, n_routed_experts=4, n_activated_experts=2, score_func="sigmoid", route_scale=2.5)
    gate = Gate(cfg)
    assert [n for n, _ in gate.named_parameters()] == ["weight"]
    assert "bias" in dict(gate.named_buffers()) and gate.bias.dtype == torch.float32
    x = torch.randn(5, 8)
    w, idx, scores = gate(x)
    assert w.shape == idx.shape == (5, 2) and scores.shape == (5, 4)
    (w * torch.arange(2.0)).sum().backward()
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
