"""Tests of minimodels/checks: every checker passes right answers, names wrong ones, and obeys the check mode.

The right and wrong answers live in tests/wrong_answers.py (plain torch, written from scratch, never the package
function a checker compares with). The engine's own rules are tested in tests/test_checks_engine.py.
"""

import pytest
import wrong_answers as wa

from minimodels import checks
from minimodels.checks import check_causal_attention, check_split_heads


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    """Every test starts in the default mode, whatever the shell running pytest has set."""
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


CHECKER_IDS = list(wa.RIGHT)
CORRECT = [(getattr(checks, name), fn) for name, fn in wa.RIGHT.items()]
CHECKERS = [checker for checker, _ in CORRECT]
WRONG = [pytest.param(getattr(checks, name), fn, words, id=id_) for name, fn, words, id_ in wa.NAMED]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=CHECKER_IDS)
def test_correct_implementation_passes(checker, fn, capsys):
    result = checker(fn)
    assert result.passed, result.message
    assert result.message.startswith("✅")
    assert capsys.readouterr().out == result.message + "\n"  # the check prints its one-line verdict


@pytest.mark.parametrize("name, fn", [v[:2] for v in wa.RIGHT_VARIANTS], ids=[v[2] for v in wa.RIGHT_VARIANTS])
def test_right_answers_written_other_ways_pass(name, fn):
    """More cases and stricter rules must not reject correct code: fused attention, -1e9, complex RoPE, ..."""
    result = getattr(checks, name)(fn)
    assert result.passed, result.message


@pytest.mark.parametrize("checker, fn, words", WRONG)
def test_wrong_implementation_is_caught_and_named(checker, fn, words, capsys):
    result = checker(fn)  # student mode: prints, never raises
    assert result.status == "failed"
    assert result.message.startswith("❌")
    assert words in result.message, result.message
    assert capsys.readouterr().out == result.message + "\n"


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_not_implemented_stub_says_so(checker):
    result = checker(wa.not_implemented)
    assert result.status == "not implemented"
    assert result.message.startswith("⏳") and "not implemented yet" in result.message


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_crash_is_reported_not_raised(checker):
    result = checker(wa.crashing)
    assert result.status == "failed"
    assert result.message.startswith("❌")
    assert "raised ValueError: shapes do not match" in result.message


def test_a_real_crash_names_the_torch_error():
    result = check_split_heads(lambda x, h: x.view(x.shape[0], x.shape[1], h))  # forgot the head width
    assert result.status == "failed" and "raised RuntimeError" in result.message


def test_a_changed_signature_is_pointed_at():
    result = checks.check_rms_norm(lambda x, weight, eps: wa.rms_norm(x, weight, eps))  # no default eps
    assert "raised TypeError" in result.message and "rms_norm(x, weight, eps=1e-06)" in result.message


# ---------------------------------------------------------------- modes (unchanged by the package split)


@pytest.mark.parametrize("checker, fn", CORRECT, ids=CHECKER_IDS)
def test_solution_mode_passes_a_correct_answer(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    assert checker(fn).passed


@pytest.mark.parametrize("checker, fn", [p.values[:2] for p in WRONG], ids=[p.id for p in WRONG])
def test_solution_mode_raises_on_a_wrong_answer(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    with pytest.raises(AssertionError, match="solution check failed"):
        checker(fn)


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_solution_mode_raises_on_a_stub(checker, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    with pytest.raises(AssertionError, match="not implemented yet"):
        checker(wa.not_implemented)


@pytest.mark.parametrize("checker, fn", CORRECT, ids=CHECKER_IDS)
def test_exercise_mode_accepts_stubs_and_rejects_leaked_solutions(checker, fn, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "exercise")
    assert checker(wa.not_implemented).status == "not implemented"  # silently: no exception
    with pytest.raises(AssertionError, match="leaked"):
        checker(fn)
    with pytest.raises(AssertionError, match="leaked"):
        checker(wa.crashing)  # anything but an unimplemented stub is suspicious in exercises/


@pytest.mark.parametrize("folder, expected", [("solutions", "solution"), ("exercises", "exercise"),
                                              ("lessons", "student")])
def test_auto_mode_follows_the_folder(folder, expected, tmp_path, monkeypatch):
    (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / folder)
    monkeypatch.setenv(checks.MODE_ENV, "auto")
    assert checks.check_mode() == expected
    wrong = lambda q, k, v: wa.attention(q, k, v, hide=None)  # noqa: E731
    if expected == "solution":
        with pytest.raises(AssertionError, match="solution check failed"):
            check_causal_attention(wrong)
        assert check_causal_attention(wa.attention).passed
    elif expected == "exercise":
        assert check_causal_attention(wa.not_implemented).status == "not implemented"
        with pytest.raises(AssertionError, match="leaked"):
            check_causal_attention(wa.attention)
    else:
        assert check_causal_attention(wrong).status == "failed"  # printed, not raised
        assert check_causal_attention(wa.not_implemented).status == "not implemented"


def test_auto_mode_in_a_subfolder_of_solutions(tmp_path, monkeypatch):
    (tmp_path / "solutions" / "extra").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "solutions" / "extra")
    monkeypatch.setenv(checks.MODE_ENV, "auto")
    assert checks.check_mode() == "solution"


def test_default_mode_is_student():
    assert checks.check_mode() == "student"


@pytest.mark.parametrize("checker", CHECKERS, ids=CHECKER_IDS)
def test_unknown_mode_is_an_error(checker, monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "teacher")
    with pytest.raises(ValueError, match="teacher"):
        checker(wa.not_implemented)


def test_the_old_module_names_still_import():
    """Notebooks and older code import these names from minimodels.checks."""
    from minimodels.checks import (  # noqa: F401
        CheckResult,
        check_cache_write,
        check_cached_attention,
        check_kv_bytes_per_token,
        check_mode,
        check_rms_norm,
        check_rope_at,
        run_check,
    )
