"""Tests of the checker engine's rules (minimodels/checks/engine.py), over every exercise of the course.

Cases vary every size and argument; an input changed in place fails; a mistake is named only when it explains
every case; tuple, None, NaN, dtype and shape results get their own words. The learner code is in
tests/wrong_answers.py.
"""

import math

import pytest
import torch
import wrong_answers as wa
from torch import Tensor

from minimodels import checks
from minimodels.checks import DEFAULT, EXERCISES, Case, Exercise, Mistake, run_check, vary


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def check(name, fn):
    return getattr(checks, name)(fn)


# ---------------------------------------------------------------- cases vary every size and argument


@pytest.mark.parametrize("name", EXERCISES)
def test_every_axis_and_argument_takes_two_values(name):
    """A checker whose cases share one head width (or one theta) passes code that hard-codes it."""
    exercise = EXERCISES[name]
    n_args = max(len(c.args) for c in exercise.cases)
    for i, arg_name in enumerate(exercise.arg_names(n_args)):
        values = [c.args[i] for c in exercise.cases if i < len(c.args)]
        if isinstance(values[0], Tensor):
            for axis in range(-1, -min(v.dim() for v in values) - 1, -1):
                sizes = {v.shape[axis] for v in values}
                assert len(sizes) > 1, f"{name}: axis {axis} of {arg_name} is always {sizes}"
        else:
            assert len({repr(v) for v in values}) > 1, f"{name}: {arg_name} is always {values[0]!r}"


@pytest.mark.parametrize("name", EXERCISES)
def test_every_default_is_both_left_out_and_changed(name):
    import inspect

    exercise = EXERCISES[name]
    params = list(inspect.signature(exercise.reference).parameters.values())
    for i, p in enumerate(params):
        if p.default is p.empty:
            continue
        given = [c.args[i] for c in exercise.cases if i < len(c.args) and c.args[i] is not DEFAULT]
        assert any(c.args[i] is DEFAULT for c in exercise.cases), f"{name}: {p.name} is never left at its default"
        assert any(v != p.default for v in given), f"{name}: {p.name} never differs from its default"


def test_a_dot_dot_dot_input_comes_in_several_ranks():
    ranks = {c.args[0].dim() for c in checks.RMS_NORM.cases}
    assert len(ranks) >= 3, ranks


@pytest.mark.parametrize("exercise", [checks.CAUSAL_ATTENTION, checks.CACHED_ATTENTION], ids=lambda e: e.name)
def test_attention_cases_have_values_wider_than_keys(exercise):
    assert any(c.args[2].shape[-1] != c.args[0].shape[-1] for c in exercise.cases)


@pytest.mark.parametrize("name, fn, words", [
    ("check_split_heads", wa.split_heads_fixed_width, "assumes its H=3 or K=4"),
    ("check_rope_at", wa.rope_fixed_width, "assumes its K=8"),
    ("check_causal_attention", lambda q, k, v: wa.attention(q, k, v, scale=1 / math.sqrt(4)), "assumes its K=4"),
    ("check_rms_norm", lambda x, w, eps=1e-6: wa.rms_norm(x, w, 1e-5), "`eps` argument is ignored"),
], ids=["split-heads-K", "rope-K", "attention-K", "rms-eps"])
def test_a_hard_coded_size_fails_and_is_pointed_at(name, fn, words):
    result = check(name, fn)
    assert result.status == "failed" and words in result.message, result.message


def test_a_hard_coded_theta_fails():
    assert check("check_rope_at", wa.rope_fixed_theta).status == "failed"
    assert check("check_rope_at", lambda x, s, theta=10000.0: wa.rope(x, s, 500.0)).status == "failed"


def test_vary_changes_one_size_at_a_time_and_rejects_unknown_names():
    assert vary(dict(B=2, K=4), dict(B=1, K=8), K=[8]) == [dict(B=2, K=4), dict(B=2, K=8), dict(B=1, K=8)]
    with pytest.raises(ValueError, match="Q"):
        vary(dict(B=2), Q=[1])


# ---------------------------------------------------------------- inputs changed in place


@pytest.mark.parametrize("name, fn, arg", [
    ("check_causal_attention", wa.attention_scales_q_in_place, "q"),
    ("check_rms_norm", wa.rms_norm_in_place, "x"),
    ("check_rope_at", wa.rope_in_place, "x"),
    ("check_cache_write", lambda ck, cv, kn, vn, s: (wa.cache_write(ck, cv, kn, vn, s), vn.zero_())[0], "v_new"),
], ids=["attention-q", "rms-x", "rope-x", "cache-v_new"])
def test_an_input_changed_in_place_fails_even_with_right_values(name, fn, arg):
    result = check(name, fn)
    assert result.status == "failed"
    assert f"changed its input `{arg}` in place" in result.message and "values are right" in result.message


def test_the_exercise_may_write_into_what_it_says():
    """The cache write writes into cache_k and cache_v: that is the exercise, not a mistake."""
    assert checks.CACHE_WRITE.writes == ("cache_k", "cache_v")
    assert check("check_cache_write", wa.cache_write).passed


def test_in_place_and_wrong_values_are_both_said():
    def wrong(q, k, v):
        q *= 2.0  # changes q, and the scale is now wrong too
        return wa.attention(q, k, v)

    message = check("check_causal_attention", wrong).message
    assert "Also, your function changed its input `q` in place" in message


# ---------------------------------------------------------------- a mistake is named only if it explains every case


def _outcomes(exercise, fn):
    return [exercise.run(fn, case) for case in exercise.cases]


@pytest.mark.parametrize("name, fn, mistake", [
    ("check_kv_bytes_per_token", wa.kv_bytes_bf16_only, "no factor 2"),  # right for bf16, half for fp32
    ("check_causal_attention", lambda q, k, v: wa.attention(q, k, v, scale=0.25), "scale 1/K"),  # 1/K if K = 4
], ids=["kv-bytes-hard-coded", "attention-scale-0.25"])
def test_a_mistake_matching_one_case_only_gets_the_generic_message(name, fn, mistake):
    exercise = EXERCISES[name]
    known = next(m for m in exercise.mistakes if m.name == mistake)
    got = _outcomes(exercise, fn)
    theirs = _outcomes(exercise, known.fn)
    want = _outcomes(exercise, exercise.reference)
    matched = [exercise.same(g, m) and not exercise.same(g, w) for g, m, w in zip(got, theirs, want)]
    assert any(matched) and not all(exercise.same(g, m) for g, m in zip(got, theirs))  # one case, not every one
    message = check(name, fn).message
    assert known.hint not in message and "wrong on" in message, message


@pytest.mark.parametrize("name", EXERCISES)
def test_every_reference_passes_its_own_check_without_changing_its_inputs(name):
    assert EXERCISES[name].verdict(EXERCISES[name].reference).passed


@pytest.mark.parametrize("name", EXERCISES)
def test_every_mistake_is_wrong_and_tells_itself_apart(name):
    """A mistake equal to the reference, or to an earlier mistake on every case, could never be named."""
    exercise = EXERCISES[name]
    want = _outcomes(exercise, exercise.reference)
    for mistake in exercise.mistakes:
        got = _outcomes(exercise, mistake.fn)
        assert any(g.error is None for g in got), f"{mistake.name} crashes everywhere: it would name any crash"
        assert not all(exercise.same(g, w) for g, w in zip(got, want)), f"{mistake.name} is not a mistake"
        found = exercise.matching_mistake(got)
        assert found is not None and found.hint == mistake.hint, f"{mistake.name} is named {found}"


# ---------------------------------------------------------------- what differs: tuples, None, NaN, dtype, shape


def test_a_tuple_says_which_element_differs():
    message = check("check_cache_write", wa.cache_write_returns_k_twice).message
    assert "the second returned tensor (v_all)" in message and "the first is right" in message


def test_a_tuple_of_the_wrong_length_says_so():
    message = check("check_cache_write", lambda *a: wa.cache_write(*a)[:1]).message
    assert "expected a tuple of 2 (k_all, v_all), got 1 values" in message


def test_what_the_cache_holds_after_the_call_is_compared():
    def writes_zeros_too(ck, cv, kn, vn, s):  # returns the right prefix, but clears the rest of the cache
        out = wa.cache_write(ck, cv, kn, vn, s)
        cv[:, s + kn.shape[1]:] = 1.0
        return out

    message = check("check_cache_write", writes_zeros_too).message
    assert "`cache_v` after your call has wrong values" in message, message


@pytest.mark.parametrize("name, fn", [
    ("check_split_heads", wa.split_heads_no_return),
    ("check_cache_write", lambda *a: None),
    ("check_kv_bytes_per_token", lambda *a: None),
], ids=["tensor", "tuple", "int"])
def test_none_asks_about_return(name, fn):
    assert "did you forget `return`?" in check(name, fn).message


def test_nan_says_what_usually_causes_it():
    def last_query_sees_nothing(q, k, v):
        def hide(t, s):
            mask = wa.hidden_future(t, s)
            mask[-1] = True
            return mask
        return wa.attention(q, k, v, hide=hide)

    message = check("check_causal_attention", last_query_sees_nothing).message
    assert "contains NaN" in message and "entirely -inf" in message and "log or square root of 0" in message


def test_wrong_dtype_and_shape_are_said():
    assert "dtype torch.float64, expected torch.float32" in check("check_rope_at", wa.rope_float64).message
    assert "has shape (2, 5, 12), expected (2, 5, 3, 4)" in check("check_split_heads", lambda x, h: x).message
    assert "a float" in check("check_kv_bytes_per_token", wa.kv_bytes_via_bits).message


def test_a_number_off_by_a_factor_says_the_factor():
    message = check("check_kv_bytes_per_token", lambda n, h, k, b: 3 * n * h * k * b).message
    assert "by a factor" not in message  # 3/2 is not a whole factor
    message = check("check_kv_bytes_per_token", lambda n, h, k, b: 4 * n * h * k * b).message
    assert "too large by a factor of 2" in message, message


# ---------------------------------------------------------------- hidden-style answers the old engine missed


@pytest.mark.parametrize("name, fn, words", [(h[1], h[2], h[4]) for h in wa.HIDDEN], ids=[h[0] for h in wa.HIDDEN])
def test_hidden_style_wrong_answers_are_caught(name, fn, words):
    result = check(name, fn)
    assert result.status == "failed" and words in result.message, result.message


# ---------------------------------------------------------------- the engine as a library for later lessons


def test_run_check_takes_plain_tuples_and_a_dict_of_mistakes():
    cases = [(torch.arange(4.0) + i,) for i in range(3)]
    mistakes = {"halved": (lambda x: x, "you forgot to double")}
    assert run_check("double", lambda x: 2 * x, lambda x: 2 * x, cases).passed
    result = run_check("double", lambda x: x, lambda x: 2 * x, cases, mistakes=mistakes)
    assert result.message == "❌ double: you forgot to double"


def test_an_exercise_rejects_writes_that_are_not_arguments():
    exercise = Exercise("f", lambda x: x, lambda: [Case((torch.ones(2),))], writes=("cache",))
    with pytest.raises(ValueError, match="cache"):
        exercise.check(lambda x: x)


def test_a_mistake_with_its_own_tolerance():
    cases = [Case((torch.ones(3) * i,), dict(i=i)) for i in range(1, 3)]
    exercise = Exercise("f", lambda x: x * 3, lambda: cases,
                        [Mistake("rough", lambda x: x * 3.01, "rounded", atol=0.1)])
    assert exercise.verdict(lambda x: x * 3.02).message == "❌ f: rounded"
