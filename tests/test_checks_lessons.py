"""The contract every lesson's checkers keep (lessons 03 on), run over each lesson's wrong-answers module.

Each tests/wrong_answers_lessonNN.py holds RIGHT (one right answer per checker), RIGHT_VARIANTS (right answers
written other ways) and NAMED (wrong answers with the words their message must contain). Lesson-specific tests
stay in tests/test_checks_lessonNN.py; the engine's generic rules run in tests/test_checks_engine.py.
"""

import pytest
import wrong_answers_lesson03
import wrong_answers_lesson04
import wrong_answers_lesson05
import wrong_answers_lesson06
import wrong_answers_lesson07
import wrong_answers_lesson08

from minimodels import checks
from minimodels.checks import EXERCISES

MODULES = {"03": wrong_answers_lesson03, "04": wrong_answers_lesson04, "05": wrong_answers_lesson05,
           "06": wrong_answers_lesson06, "07": wrong_answers_lesson07, "08": wrong_answers_lesson08}
RIGHT = [(lesson, name, fn) for lesson, wa in MODULES.items() for name, fn in wa.RIGHT.items()]
VARIANTS = [(lesson, *v) for lesson, wa in MODULES.items() for v in wa.RIGHT_VARIANTS]
NAMED = [(lesson, *n) for lesson, wa in MODULES.items() for n in wa.NAMED]


def stub(*args):
    raise NotImplementedError("Exercise N.k: not implemented yet")


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


@pytest.mark.parametrize("lesson, name, fn", RIGHT, ids=[f"{r[0]}-{r[1]}" for r in RIGHT])
def test_right_answer_passes_and_is_registered(lesson, name, fn, capsys):
    assert name in EXERCISES, f"lesson {lesson}: {name} is not in checks.EXERCISES, so the engine tests skip it"
    result = getattr(checks, name)(fn)
    assert result.passed, result.message
    assert capsys.readouterr().out == result.message + "\n"


@pytest.mark.parametrize("lesson, name, fn, label", VARIANTS, ids=[f"{v[0]}-{v[3]}" for v in VARIANTS])
def test_right_answers_written_other_ways_pass(lesson, name, fn, label):
    result = getattr(checks, name)(fn)
    assert result.passed, f"{label}: {result.message}"


@pytest.mark.parametrize("lesson, name, fn, words, label", NAMED, ids=[f"{n[0]}-{n[4]}" for n in NAMED])
def test_wrong_answer_is_caught_and_named(lesson, name, fn, words, label):
    result = getattr(checks, name)(fn)
    assert result.status == "failed" and result.message.startswith("❌"), result.message
    assert words in result.message, result.message


@pytest.mark.parametrize("lesson, name, fn", RIGHT, ids=[f"{r[0]}-{r[1]}" for r in RIGHT])
def test_stub_says_not_implemented_and_a_crash_is_reported(lesson, name, fn):
    assert getattr(checks, name)(stub).status == "not implemented"
    crashed = getattr(checks, name)(lambda *a: 1 / 0)
    assert crashed.status == "failed" and "ZeroDivisionError" in crashed.message
