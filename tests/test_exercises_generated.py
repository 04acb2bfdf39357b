"""The committed exercises/ is exactly what scripts/make_exercises.py makes from solutions/."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_exercises  # noqa: E402
import nbtools  # noqa: E402

EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def test_exercises_match_a_fresh_generation(tmp_path):
    code = make_exercises.main(["--solutions", str(ROOT / "solutions"), "--exercises", str(tmp_path)])
    assert code == 0, "a solution notebook could not be turned into an exercise (see the message above)"
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.ipynb")}
    committed = {p.name: p.read_text(encoding="utf-8").replace("\r\n", "\n") for p in EXERCISES}
    assert sorted(committed) == sorted(fresh), "exercises/ and solutions/ hold different notebooks"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale exercises {stale}: run python scripts/make_exercises.py"


@pytest.mark.parametrize("path", EXERCISES, ids=[p.name for p in EXERCISES])
def test_no_solution_text_in_exercises(path):
    nb = nbtools.load(path)
    for number, cell in enumerate(nb["cells"], start=1):
        text = nbtools.source(cell)
        for marker in make_exercises.MARKER_WORDS:
            assert marker not in text, f"{path.name}, cell {number}: {marker!r} in a learner notebook"
        assert make_exercises.SOLUTION_ONLY_TAG not in nbtools.tags(cell), f"{path.name}, cell {number}"


def test_no_two_notebooks_share_a_file_name():
    """JupyterLab names a tab by the file name: a lesson, its exercises and its solutions must differ."""
    names = [p.name for folder in ("lessons", "exercises", "solutions") for p in (ROOT / folder).glob("*.ipynb")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_exercise_names_follow_their_solution():
    assert make_exercises.exercise_name("03_gqa_solutions") == "03_gqa_exercises"
    assert make_exercises.exercise_name("01_relu") == "01_relu"  # no suffix: kept (small test courses)
