"""Tests of minimodels/checks/lesson08.py: the expert-level balance loss (value AND gradient compared) and the bias
update (a new tensor, ties and all-equal loads). Right and wrong learner code is in tests/wrong_answers_lesson08.py
(run by tests/test_checks_lessons.py); here: what the cases cover, that the references are the package's, and
how the gradient check and the in-place rule behave.
"""

import pytest
import torch
import wrong_answers_lesson08 as wa

from minimodels import checks
from minimodels.balance import bias_step, expert_balance_loss
from minimodels.checks.lesson08 import with_gradient


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def test_loss_cases_cover_softmax_sigmoid_uniform_and_biased_choices():
    cases = checks.BALANCE_LOSS.cases
    kinds = {c.sizes["kind"] for c in cases}
    assert kinds == {"softmax", "sigmoid", "uniform"}
    ks = {(c.args[1].shape[1], c.args[0].shape[1]) for c in cases}
    assert any(k == 1 for k, _ in ks) and any(k == e for k, e in ks)  # K' = 1 and K' = E
    assert any(c.args[0].shape[0] == 1 for c in cases)  # one token
    biased = [c for c in cases if c.sizes["kind"] == "sigmoid"]
    assert any(not torch.equal(c.args[1].sort(-1).values,
                               c.args[0].topk(c.args[1].shape[1], -1).indices.sort(-1).values) for c in biased)
    assert len({c.args[2] for c in cases}) >= 3  # several alphas


def test_uniform_routing_gives_alpha():
    for case in checks.BALANCE_LOSS.cases:
        if case.sizes["kind"] == "uniform":
            loss, _ = checks.BALANCE_LOSS.reference(*case.fresh_args())
            assert loss.item() == pytest.approx(case.args[2], rel=1e-6)


def test_the_reference_is_the_package_loss_and_its_gradient():
    for case in checks.BALANCE_LOSS.cases:
        scores, indices, alpha = case.fresh_args()
        leaf = scores.clone().requires_grad_(True)
        want = expert_balance_loss(leaf[None], indices[None], alpha)
        (grad,) = torch.autograd.grad(want, leaf)
        loss, got_grad = checks.BALANCE_LOSS.reference(scores, indices, alpha)
        torch.testing.assert_close(loss, want.detach())
        torch.testing.assert_close(got_grad, grad)
        assert got_grad.abs().sum() > 0 or case.sizes["kind"] == "uniform"


def test_a_loss_without_gradient_or_returned_as_a_float_fails():
    assert not checks.check_expert_balance_loss(lambda s, i, a: wa.balance_loss(s, i, a).item()).passed
    detached = checks.check_expert_balance_loss(lambda s, i, a: wa.balance_loss(s, i, a).detach())
    assert detached.status == "failed" and "no gradient reaches the scores" in detached.message


def test_with_gradient_reports_none_and_in_place_edits():
    scores, indices = torch.rand(4, 3), torch.tensor([[0], [1], [2], [0]])
    assert with_gradient(lambda s, i, a: None)(scores, indices, 0.1) is None
    result = checks.check_expert_balance_loss(lambda s, i, a: (i.zero_(), wa.balance_loss(s, i, a))[1])
    assert result.status == "failed" and "changed its input `indices` in place" in result.message


def test_bias_cases_have_ties_equal_loads_and_both_count_dtypes():
    cases = checks.BIAS_UPDATE.cases
    counts = [c.args[1] for c in cases]
    assert any(not c.dtype.is_floating_point for c in counts) and any(c.dtype.is_floating_point for c in counts)
    assert any(bool((c == c.float().mean()).all()) for c in counts)  # all equal: nothing moves
    assert any(bool((c == c.float().mean()).any()) and not bool((c == c.float().mean()).all()) for c in counts)
    assert len({c.args[2] for c in cases}) >= 3


def test_the_bias_reference_is_the_package_update_and_leaves_its_input():
    for case in checks.BIAS_UPDATE.cases:
        bias, counts, gamma = case.fresh_args()
        before = bias.clone()
        got = checks.BIAS_UPDATE.reference(bias, counts, gamma)
        assert torch.equal(bias, before)
        torch.testing.assert_close(got, bias_step(before.clone(), counts, gamma))


def test_the_package_update_in_place_is_named_as_an_in_place_edit():
    """bias_step changes the router's buffer in place: right values, but the exercise asks for a new tensor."""
    result = checks.check_bias_update(bias_step)
    assert result.status == "failed" and "values are right" in result.message and "`bias`" in result.message
