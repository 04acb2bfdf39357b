"""Unit tests of scripts/make_exercises.py on small in-memory notebooks."""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import make_exercises  # noqa: E402
import nbtools  # noqa: E402

RELU_SOLUTION = """\
import torch


def relu(x):
    \"\"\"max(x, 0), elementwise.\"\"\"
    ### BEGIN SOLUTION
    return x.clamp_min(0)
    ### END SOLUTION


check = 1"""


def notebook(*cells) -> dict:
    """A notebook as the scripts see it: a plain dict, as read from JSON."""
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "miniseek", "display_name": "MiniSeek (conda)", "language": "python"}
    return json.loads(nbformat.writes(nb))


def exercise_sources(nb: dict, name: str = "01_relu") -> list[str]:
    return [nbtools.source(c) for c in make_exercises.make_exercise(nb, name)["cells"]]


def test_region_is_replaced_at_its_indentation():
    [code] = exercise_sources(notebook(new_code_cell(RELU_SOLUTION)))
    assert code.split("\n") == [
        "import torch",
        "",
        "",
        "def relu(x):",
        '    """max(x, 0), elementwise."""',
        "    # TODO: your code here",
        '    raise NotImplementedError("Exercise 1.1 (relu): not implemented yet")',
        "",
        "",
        "check = 1",
    ]


def test_stub_raises_not_implemented_when_called():
    [code] = exercise_sources(notebook(new_code_cell(RELU_SOLUTION.replace("import torch", ""))))
    namespace: dict = {}
    exec(code, namespace)  # defining the function must not raise (Run All goes on)
    with pytest.raises(NotImplementedError, match=r"Exercise 1\.1 \(relu\): not implemented yet"):
        namespace["relu"](1)


def test_nested_regions_get_numbered_ids_and_the_method_name():
    solution = notebook(
        new_code_cell("def a():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        new_code_cell(
            "class Model:\n"
            "    def forward(self, x):\n"
            "        if x:\n"
            "            ### BEGIN SOLUTION\n"
            "            return x\n"
            "            ### END SOLUTION\n"
            "        return 0\n"
        ),
    )
    first, second = exercise_sources(solution, "07_moe")
    assert 'raise NotImplementedError("Exercise 7.1 (a): not implemented yet")' in first
    assert (
        '            # TODO: your code here\n            raise NotImplementedError("Exercise 7.2 (forward): '
        'not implemented yet")\n        return 0\n'
    ) in second


def test_solution_only_cells_are_dropped_and_the_rest_kept_in_order():
    solution = notebook(
        new_markdown_cell("# Intro"),
        new_code_cell("answer = 42", metadata={"tags": ["solution-only"]}),
        new_code_cell("x = 1", metadata={"tags": ["nbval-skip"]}),
    )
    exercise = make_exercises.make_exercise(solution, "02_cache")
    assert [nbtools.source(c) for c in exercise["cells"]] == ["# Intro", "x = 1"]
    assert exercise["cells"][1]["metadata"] == {"tags": ["nbval-skip"]}
    ids = [c["id"] for c in exercise["cells"]]
    assert ids == [solution["cells"][0]["id"], solution["cells"][2]["id"]]  # ids come from the solution


def test_exercise_is_clean_even_when_the_solution_is_not():
    cell = new_code_cell("print(1)", execution_count=7, metadata={"collapsed": True, "tags": ["a"]})
    cell.outputs = [new_output("stream", name="stdout", text="1\n")]
    checked = new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2)", execution_count=8)
    checked.outputs = [new_output("stream", name="stdout", text="2\n")]
    solution = notebook(cell, checked)
    solution["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    solution["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    exercise = make_exercises.make_exercise(solution, "03_gqa")
    assert nbtools.problems(exercise) == []
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in exercise["cells"])
    assert exercise["metadata"] == {"kernelspec": nbtools.KERNELSPEC, "language_info": {"name": "python"}}
    assert exercise["cells"][0]["metadata"] == {"tags": ["a"]}


@pytest.mark.parametrize(
    "code, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "top level"),
        ("if True:\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION", "not inside a function"),
        ("class A:\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION", "not inside a function"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1", "without END SOLUTION"),
        ("def f():\n    return 1\n    ### END SOLUTION", "END SOLUTION without a BEGIN"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
            "cannot nest",
        ),
        ("def f():\n    # BEGIN SOLUTION here\n    return 1\n    ### END SOLUTION", "malformed"),
        (
            "def f(xs):\n    ### BEGIN SOLUTION\n    for x in xs:\n    ### END SOLUTION\n        print(x)",
            "not valid Python",
        ),
    ],
    ids=["top-level", "if-block", "class-body", "no-end", "no-begin", "nested", "malformed", "cut-block"],
)
def test_bad_regions_are_rejected_with_file_and_cell(code, message):
    solution = notebook(new_markdown_cell("intro"), new_code_cell(code))
    with pytest.raises(make_exercises.ExerciseError, match=message) as error:
        make_exercises.make_exercise(solution, "04_mla")
    assert "04_mla.ipynb, cell 2" in str(error.value)


def test_markers_in_markdown_are_rejected():
    solution = notebook(new_markdown_cell("### BEGIN SOLUTION\nthe answer\n### END SOLUTION"))
    with pytest.raises(make_exercises.ExerciseError, match="outside a code cell"):
        make_exercises.make_exercise(solution, "05_rope")


def test_cells_with_magics_are_handled():
    code = "%%time\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n!echo hi"
    [out] = exercise_sources(notebook(new_code_cell(code)), "06_x")
    assert out.startswith("%%time\ndef f():\n    # TODO: your code here\n")
    assert out.endswith('"Exercise 6.1 (f): not implemented yet")\n!echo hi')


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=3),
    body=st.lists(st.sampled_from(["y = x + 1", "z = [x] * 2", "return x", "pass"]), min_size=1, max_size=4),
    before=st.lists(st.sampled_from(["a = 1", "b = 2"]), max_size=2),
    after=st.lists(st.sampled_from(["c = 3", "d = 4"]), max_size=2),
)
def test_only_the_region_changes(depth, body, before, after):
    # nested defs `depth` deep; the region sits in the innermost one, between `before` and `after` lines
    pad = "    " * depth
    head = [("    " * d) + f"def f{d}(x):" for d in range(depth)]
    lines = head + [pad + s for s in before] + [pad + "### BEGIN SOLUTION"]
    lines += (
        [pad + s for s in body] + [pad + "### END SOLUTION"] + [pad + s for s in after] + [pad + "return x"]
    )
    [out] = exercise_sources(notebook(new_code_cell("\n".join(lines))), "09_x")
    expected = head + [pad + s for s in before]
    expected += [pad + "# TODO: your code here"]
    expected += [pad + f'raise NotImplementedError("Exercise 9.1 (f{depth - 1}): not implemented yet")']
    expected += [pad + s for s in after] + [pad + "return x"]
    assert out.split("\n") == expected


# ---------------------------------------------------------------- the command line


def write_solution(folder: Path, name: str, *cells) -> None:
    nbtools.write_text(folder / name, nbtools.dumps(notebook(*cells)))


@pytest.fixture
def course(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    write_solution(solutions, "01_relu.ipynb", new_markdown_cell("# ReLU"), new_code_cell(RELU_SOLUTION))
    write_solution(
        solutions,
        "02_two.ipynb",
        new_code_cell("def g():\n    ### BEGIN SOLUTION\n    ...\n    ### END SOLUTION"),
    )
    return ["--solutions", str(solutions), "--exercises", str(exercises)], exercises


def test_generate_then_check_passes_and_is_deterministic(course, capsys):
    args, exercises = course
    assert make_exercises.main(["--check", *args]) == 1  # nothing generated yet
    assert "missing: exercises/01_relu.ipynb" in capsys.readouterr().out
    assert make_exercises.main(args) == 0
    first = {p.name: p.read_bytes() for p in exercises.iterdir()}
    assert sorted(first) == ["01_relu.ipynb", "02_two.ipynb"]
    assert make_exercises.main(args) == 0
    assert {p.name: p.read_bytes() for p in exercises.iterdir()} == first
    assert make_exercises.main(["--check", *args]) == 0
    text = first["01_relu.ipynb"].decode()
    assert "clamp_min" not in text and "BEGIN SOLUTION" not in text
    assert nbtools.check_text(text) == []  # generated exercises pass the clean check


def test_check_detects_a_hand_edited_exercise_without_writing(course, capsys):
    args, exercises = course
    make_exercises.main(args)
    target = exercises / "01_relu.ipynb"
    edited = target.read_text().replace("# TODO: your code here", "return x.clamp_min(0)")
    target.write_text(edited)
    capsys.readouterr()
    assert make_exercises.main(["--check", *args]) == 1
    assert "stale (differs from its solution): exercises/01_relu.ipynb" in capsys.readouterr().out
    assert target.read_text() == edited  # --check wrote nothing
    assert make_exercises.main(args) == 0
    assert make_exercises.main(["--check", *args]) == 0


def test_check_detects_extra_exercises_and_generation_removes_them(course, capsys):
    args, exercises = course
    make_exercises.main(args)
    (exercises / "99_orphan.ipynb").write_text((exercises / "02_two.ipynb").read_text())
    capsys.readouterr()
    assert make_exercises.main(["--check", *args]) == 1
    assert "extra (no solution notebook makes it): exercises/99_orphan.ipynb" in capsys.readouterr().out
    assert make_exercises.main(args) == 0
    assert not (exercises / "99_orphan.ipynb").exists()


def test_a_bad_solution_fails_the_command(tmp_path, capsys):
    write_solution(
        tmp_path / "s", "01_bad.ipynb", new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    )
    assert make_exercises.main(["--solutions", str(tmp_path / "s"), "--exercises", str(tmp_path / "e")]) == 2
    assert "01_bad.ipynb, cell 1" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
