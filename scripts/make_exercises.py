#!/usr/bin/env python3
"""Generate exercises/NN_topic_exercises.ipynb from solutions/NN_topic_solutions.ipynb (never edit exercises/).

The two names differ (and differ from the lesson's NN_topic.ipynb) so that JupyterLab tabs never read the same.

    python scripts/make_exercises.py            # (re)write exercises/, remove exercises without a solution
    python scripts/make_exercises.py --check    # exit 1 if exercises/ is stale, missing or has extra files

Authoring rules for solutions/*.ipynb (nbgrader's marker syntax, so nbgrader can be adopted later):

- In a code cell, the lines between `### BEGIN SOLUTION` and `### END SOLUTION` are the solution.
  The generator replaces the region by `# TODO: your code here` and
  `raise NotImplementedError("Exercise NN.k (function): not implemented yet")`, at the marker's indentation.
  A region must sit inside a function body: a top-level `raise` would stop "Run All" at that cell,
  whereas inside a function the exercise checker catches it and says "not implemented yet".
- A cell tagged `solution-only` is left out of the exercise notebook entirely.
- Outputs, execution counts and widget state are dropped; the result is written by the same
  canonical writer as scripts/clean_notebooks.py, so `--check` compares bytes.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbtools  # noqa: E402  (needs the path above when run as a script)

SOLUTION_ONLY_TAG = "solution-only"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#+[ \t]*BEGIN SOLUTION[ \t]*$")
END = re.compile(r"^[ \t]*#+[ \t]*END SOLUTION[ \t]*$")
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION")
TODO_LINE = "# TODO: your code here"
_MAGIC = re.compile(r"^(?P<indent>[ \t]*)[%!]")


class ExerciseError(nbtools.NotebookError):
    """A solution notebook whose regions cannot be turned into an exercise."""


SOLUTION_SUFFIX, EXERCISE_SUFFIX = "_solutions", "_exercises"


def exercise_name(solution_stem: str) -> str:
    """'01_baseline_gpt_solutions' -> '01_baseline_gpt_exercises' (a stem without the suffix is kept)."""
    if solution_stem.endswith(SOLUTION_SUFFIX):
        return solution_stem[: -len(SOLUTION_SUFFIX)] + EXERCISE_SUFFIX
    return solution_stem


def exercise_prefix(name: str) -> str:
    """'01_baseline_gpt' -> '1' (exercise ids read 'Exercise 1.2', as the headings do); no digits: kept."""
    match = re.match(r"\d+", name)
    return str(int(match.group(0))) if match else name


def _parse(code: str) -> ast.Module | None:
    """Parse cell code, with IPython magics/shell lines neutralised; None if it is not Python."""
    lines = [_MAGIC.sub(lambda m: m.group("indent") + "pass  # ", line) for line in code.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _enclosing_functions(tree: ast.Module) -> dict[int, str | None]:
    """Map the line of every `raise` statement to the name of its innermost enclosing def (or None)."""
    found: dict[int, str | None] = {}

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
            elif isinstance(child, ast.Lambda | ast.ClassDef):
                visit(child, None)  # a class body runs at definition time, like top-level code
            else:
                if isinstance(child, ast.Raise):
                    found[child.lineno] = func
                visit(child, func)

    visit(tree, None)
    return found


def stub_code(code: str, *, where: str, prefix: str, first_number: int) -> tuple[str, int]:
    """Replace the solution regions of one code cell's source by stubs.

    `where` names the notebook and cell for error messages; exercise ids are `prefix.k` with k
    counting from `first_number`. Returns the new source and the number of regions replaced.
    """
    out: list[str] = []
    stubs: list[tuple[int, str]] = []  # (index in `out` of the raise line, its indentation)
    begin_line = 0
    indent: str | None = None
    for lineno, line in enumerate(code.split("\n"), start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if indent is not None:
                raise ExerciseError(
                    f"{where}, line {lineno}: BEGIN SOLUTION inside the region opened on line {begin_line} "
                    "(regions cannot nest)"
                )
            indent, begin_line = begin.group("indent"), lineno
            if not indent:
                raise ExerciseError(
                    f"{where}, line {lineno}: solution region at top level; put it inside a function body "
                    "(a top-level raise would stop Run All), or tag the whole cell 'solution-only'"
                )
        elif end:
            if indent is None:
                raise ExerciseError(f"{where}, line {lineno}: END SOLUTION without a BEGIN SOLUTION")
            out.append(indent + TODO_LINE)
            stubs.append((len(out), indent))
            out.append("")  # filled in below, once the enclosing function is known
            indent = None
        elif any(word in line for word in MARKER_WORDS):
            raise ExerciseError(
                f"{where}, line {lineno}: malformed solution marker {line.strip()!r} "
                "(expected a comment line '### BEGIN SOLUTION' or '### END SOLUTION')"
            )
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ExerciseError(
            f"{where}, line {begin_line}: BEGIN SOLUTION without END SOLUTION in the same cell"
        )
    if not stubs:
        return code, 0

    # Placeholder raises first, to find each stub's enclosing function and to check the result parses.
    for index, ind in stubs:
        out[index] = ind + "raise NotImplementedError()"
    tree = _parse("\n".join(out))
    if tree is None:
        if _parse(code) is not None:
            raise ExerciseError(
                f"{where}: the exercise version of this cell is not valid Python "
                "(does a solution region cut a block in half?)"
            )
        functions: dict[int, str | None] = {}  # cell magic or other non-Python: trust the indentation
    else:
        functions = _enclosing_functions(tree)
    for k, (index, ind) in enumerate(stubs):
        func = functions.get(index + 1)
        if tree is not None and func is None:
            raise ExerciseError(
                f"{where}: a solution region is not inside a function body "
                "(a class body or an if-block runs at once and the raise would stop Run All)"
            )
        label = f"{prefix}.{first_number + k}" + (f" ({func})" if func else "")
        out[index] = f'{ind}raise NotImplementedError("Exercise {label}: not implemented yet")'
    return "\n".join(out), len(stubs)


def make_exercise(solution: dict, name: str) -> dict:
    """The exercise notebook (clean, as a dict) for solution notebook `solution` named `name`."""
    prefix = exercise_prefix(name)
    cells = []
    regions = 0
    for number, cell in enumerate(solution["cells"], start=1):
        if SOLUTION_ONLY_TAG in nbtools.tags(cell):
            continue
        cell = dict(cell, outputs=[], execution_count=None) if cell.get("cell_type") == "code" else dict(cell)
        text = nbtools.source(cell)
        where = f"{name}.ipynb, cell {number}"
        if cell.get("cell_type") == "code":
            text, count = stub_code(text, where=where, prefix=prefix, first_number=regions + 1)
            regions += count
            cell["source"] = text
        elif any(word in text for word in MARKER_WORDS):
            raise ExerciseError(
                f"{where}: solution markers outside a code cell; tag the cell '{SOLUTION_ONLY_TAG}' instead"
            )
        else:
            # links to the notebook itself (the Colab badge) and to sibling solution notebooks must name
            # the exercise notebooks: solutions/NN_x_solutions.ipynb -> exercises/NN_x_exercises.ipynb
            text = text.replace(f"/solutions/{name}.ipynb", f"/exercises/{exercise_name(name)}.ipynb")
            cell["source"] = text.replace(f"{SOLUTION_SUFFIX}.ipynb", f"{EXERCISE_SUFFIX}.ipynb")
        cells.append(cell)
    return nbtools.clean(dict(solution, cells=cells))


def render_all(solutions_dir: Path) -> dict[str, str]:
    """{file name: canonical exercise text} for every solutions_dir/*.ipynb."""
    rendered = {}
    for path in sorted(solutions_dir.glob("*.ipynb")):
        exercise = make_exercise(nbtools.load(path), path.stem)
        rendered[exercise_name(path.stem) + ".ipynb"] = nbtools.dumps(exercise)
    return rendered


def compare(rendered: dict[str, str], exercises_dir: Path) -> list[str]:
    """Differences between the generated texts and exercises_dir, one line each."""
    existing = {p.name for p in exercises_dir.glob("*.ipynb")} if exercises_dir.is_dir() else set()
    lines = []
    for name, text in rendered.items():
        if name not in existing:
            lines.append(f"missing: {exercises_dir.name}/{name}")
        elif not nbtools.same_text(exercises_dir / name, text):
            lines.append(f"stale (differs from its solution): {exercises_dir.name}/{name}")
    for name in sorted(existing - set(rendered)):
        lines.append(f"extra (no solution notebook makes it): {exercises_dir.name}/{name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, write nothing")
    parser.add_argument("--solutions", type=Path, default=nbtools.REPO_ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=nbtools.REPO_ROOT / "exercises")
    args = parser.parse_args(argv)

    try:
        rendered = render_all(args.solutions) if args.solutions.is_dir() else {}
    except (nbtools.NotebookError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    differences = compare(rendered, args.exercises)

    if args.check:
        for line in differences:
            print(line)
        if differences:
            print(
                f"exercises/ is out of date ({len(differences)} differences); regenerate with: "
                "python scripts/make_exercises.py"
            )
            return 1
        print(f"{len(rendered)} exercise notebooks up to date")
        return 0

    for name, text in rendered.items():
        target = args.exercises / name
        if not nbtools.same_text(target, text):
            nbtools.write_text(target, text)
            print(f"wrote {args.exercises.name}/{name}")
    for name in sorted({p.name for p in args.exercises.glob("*.ipynb")} - set(rendered)):
        (args.exercises / name).unlink()
        print(f"removed {args.exercises.name}/{name} (its solution notebook is gone)")
    print(f"{len(rendered)} exercise notebooks up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
