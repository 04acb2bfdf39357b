"""course.py: `lab` as root, the learner's my_work/ copies, a solved fork that stays green, and where torch comes from.

The two commands are the first thing a learner runs; each test here stands for a way the first hour went wrong
(issue 7): JupyterLab refusing root, the test command going red after solving exercises/ in place, and a dozen
"Retrying ... NewConnectionError" lines when PyTorch's CPU index could not be reached.
"""

from __future__ import annotations

import argparse
import http.server
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the lint, hygiene and staleness steps read (ruff also lints scripts/ and course.py)
CHECKED_COPY = ("pyproject.toml", "course.py", "scripts", "lessons", "exercises", "solutions")
SOLVED = "01_baseline_gpt_exercises.ipynb"


@pytest.fixture()
def course(monkeypatch):
    spec = importlib.util.spec_from_file_location("course_cli_for_tests", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- lab: root, arguments, exit hints


def test_lab_as_root_adds_allow_root_and_says_why(course):
    args, notes = course.lab_arguments(["--no-browser"], euid=0)
    assert args[0] == str(course.FIRST_LESSON)
    assert f"--ServerApp.root_dir={course.ROOT}" in args and "--no-browser" in args
    assert args.count("--allow-root") == 1
    assert len(notes) == 1 and "root" in notes[0] and "--allow-root" in notes[0]


@pytest.mark.parametrize("given", ["--allow-root", "--ServerApp.allow_root=True", "--ServerApp.allow_root=False"])
def test_lab_as_root_keeps_the_learners_own_root_setting(course, given):
    args, notes = course.lab_arguments([given], euid=0)
    assert args.count(given) == 1 and "--allow-root" not in [a for a in args if a != given]
    assert notes == []


@pytest.mark.parametrize("euid", [1000, None])  # None: Windows has no user ids
def test_lab_as_a_user_adds_nothing(course, euid):
    args, notes = course.lab_arguments(["--port", "8899"], euid=euid)
    assert "--allow-root" not in args and notes == []
    assert args[-2:] == ["--port", "8899"]


def test_lab_keeps_a_given_root_dir_and_notebook(course):
    args, _ = course.lab_arguments(["--ServerApp.root_dir=/elsewhere", "lessons/02_kv_cache.ipynb"], euid=1000)
    assert [a for a in args if "root_dir" in a] == ["--ServerApp.root_dir=/elsewhere"]
    assert str(course.FIRST_LESSON) not in args  # the learner named a notebook: open that one


@pytest.mark.parametrize(
    "log, words",
    [
        ("[C 2026-12-02 ServerApp] Running as root is not recommended. Use --allow-root to bypass.", "--allow-root"),
        ("[C ServerApp] ERROR: the Jupyter server could not be started because port 8888 is not available.",
         "--port"),
        ("ModuleNotFoundError: No module named 'jupyterlab'", "delete .venv"),
        ("PermissionError: [Errno 13] Permission denied: '/root/.local/share/jupyter/runtime'", "JUPYTER_RUNTIME_DIR"),
        ("__main__.py: error: argument --frobnicate: expected one argument", "-m jupyterlab --help-all"),
    ],
)
def test_lab_exit_hint_names_the_cause(course, log, words):
    hint = course.lab_exit_hint(1, "[I ServerApp] starting\n" + log + "\n")
    assert words in hint


def test_lab_exit_hint_reads_the_end_of_the_log_only(course):
    early = "[W LabApp] ImportError: an optional extension failed to load\n" + "[I ServerApp] fine\n" * 30
    hint = course.lab_exit_hint(1, early + "[C ServerApp] Running as root is not recommended.\n")
    assert "--allow-root" in hint
    assert "delete .venv" not in course.lab_exit_hint(1, early + "[C ServerApp] something else\n")


def test_lab_exit_hint_quotes_an_unknown_error_and_is_silent_on_a_normal_stop(course):
    hint = course.lab_exit_hint(3, "[I LabApp] fine\n[E 12:00 ServerApp] something odd happened\n[I x] bye\n")
    assert "exit code 3" in hint and "something odd happened" in hint
    for normal in (0, -2, -15):  # a clean exit, Ctrl-C, SIGTERM
        assert course.lab_exit_hint(normal, "Running as root is not recommended") is None


def test_stderr_is_echoed_and_its_tail_kept(course, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(course, "ROOT", tmp_path)
    code, tail = course.run_keeping_stderr_tail(
        [sys.executable, "-c", "import sys; sys.stderr.write('x' * 20000 + 'LAST LINE'); sys.exit(3)"],
        env=None, keep=100,
    )
    assert code == 3 and tail.endswith("LAST LINE") and len(tail) == 100
    assert "LAST LINE" in capfd.readouterr().err  # the learner still sees JupyterLab's log


# ---------------------------------------------------------------- my_work/: the learner's copies


def test_exercises_are_copied_once_and_never_overwritten(course, tmp_path, monkeypatch):
    monkeypatch.setattr(course, "ROOT", tmp_path)
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "01_a_exercises.ipynb").write_text("generated 1")
    (tmp_path / "exercises" / "02_b_exercises.ipynb").write_text("generated 2")
    assert course.copy_exercises() == ["01_a_exercises.ipynb", "02_b_exercises.ipynb"]
    mine = tmp_path / "my_work" / "01_a_exercises.ipynb"
    mine.write_text("solved by the learner")

    (tmp_path / "exercises" / "01_a_exercises.ipynb").write_text("generated 1, newer")
    (tmp_path / "exercises" / "03_c_exercises.ipynb").write_text("a new lesson's exercises")
    assert course.copy_exercises() == ["03_c_exercises.ipynb"]  # only what my_work/ lacks
    assert mine.read_text() == "solved by the learner"
    assert course.copy_exercises() == []


def test_no_exercises_folder_copies_nothing(course, tmp_path, monkeypatch):
    monkeypatch.setattr(course, "ROOT", tmp_path)
    assert course.copy_exercises() == [] and not (tmp_path / "my_work").exists()


def test_the_work_folder_is_ignored_by_git_ruff_and_pytest(course):
    assert "my_work/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "my_work" not in course.TEST_FOLDERS
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'extend-exclude = \[[^\]]*"my_work"', pyproject)
    assert re.search(r'norecursedirs = \[[^\]]*"my_work"', pyproject)


def solve(exercise: dict, solution: dict) -> dict:
    """What a learner saves after solving: solutions in, an unused import and name, outputs, counts, widget state."""
    solved_cells = {c["id"]: c for c in solution["cells"]}
    count = 0
    for cell in exercise["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        text = "".join(cell["source"])
        if "NotImplementedError" in text:
            answer = "".join(solved_cells[cell["id"]]["source"])
            text = "\n".join(line for line in answer.split("\n") if "SOLUTION" not in line)
            text = "import os  # tried something, left it\n" + text.replace('"""\n', '"""\n    scratch = 1\n', 1)
        cell["source"] = text
        cell["execution_count"] = count
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "✅ passed\n"}]
        cell["metadata"] = {"scrolled": True, "ExecuteTime": {"end_time": "2026-12-02T07:00:00"}}
    exercise["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return exercise


@pytest.fixture()
def fork(course, tmp_path, monkeypatch):
    """A copy of what the checks read, as a workshop student's fork has it, with course.py pointed at it."""
    for name in CHECKED_COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else:
            shutil.copy(source, tmp_path / name)
    monkeypatch.setattr(course, "ROOT", tmp_path)
    return tmp_path


def run_lint_steps(course, root: Path) -> dict[str, subprocess.CompletedProcess]:
    """The test command's lint, hygiene and staleness steps, run in `root` as course.py runs them."""
    return {
        name: subprocess.run([str(c) for c in cmd], cwd=root, capture_output=True, text=True)
        for name, cmd in course.lint_steps(sys.executable)
    }


def solved_notebook(root: Path) -> str:
    exercise = json.loads((root / "my_work" / SOLVED).read_text(encoding="utf-8"))
    solution = json.loads((root / "solutions" / SOLVED.replace("_exercises", "_solutions")).read_text("utf-8"))
    return json.dumps(solve(exercise, solution), indent=2)


def test_a_solved_fork_stays_green(course, fork):
    assert SOLVED in course.copy_exercises()
    (fork / "my_work" / SOLVED).write_text(solved_notebook(fork), encoding="utf-8")
    results = run_lint_steps(course, fork)
    assert set(results) == set(course.LINT_STEP_NAMES)
    failed = {name: r.stdout + r.stderr for name, r in results.items() if r.returncode != 0}
    if failed:  # say whether my_work/ is the cause or the repository fails these steps by itself
        shutil.rmtree(fork / "my_work")
        alone = [name for name, r in run_lint_steps(course, fork).items() if r.returncode != 0]
        pytest.fail(f"{sorted(failed)} failed on a fork solved in my_work/; without my_work/ {alone or 'none'} "
                    f"fail:\n" + "\n".join(failed.values()))


def test_solving_exercises_in_place_fails_with_a_way_out(course, fork, monkeypatch, capfd):
    course.copy_exercises()
    (fork / "exercises" / SOLVED).write_text(solved_notebook(fork), encoding="utf-8")
    results = run_lint_steps(course, fork)
    assert "F841" in results["ruff check"].stdout  # the learner's unused `scratch`
    assert "outputs in cells" in results["notebooks clean"].stdout
    assert "stale" in results["exercises match solutions"].stdout
    assert all(r.returncode != 0 for r in results.values())

    # the test command stops at its first failing step (ruff) and says how to keep the work and get green
    monkeypatch.setattr(course, "changed_in_git", lambda paths: None)  # a fork without git: assume it is theirs
    opts = argparse.Namespace(fast=False, profile="smoke", workers=0)
    assert course.cmd_test(Path(sys.executable), opts, []) != 0
    said = capfd.readouterr().out
    assert "ruff check: FAILED" in said
    assert f"exercises/{SOLVED} differ from what solutions/ generates" in said and "git checkout exercises/" in said
    # my_work/ already holds a copy: the move must not overwrite it
    kept = Path("my_work", SOLVED.replace(".ipynb", "-from-exercises.ipynb"))
    assert f"mv {Path('exercises', SOLVED)} {kept}" in said

    monkeypatch.setattr(course, "changed_in_git", lambda paths: set())  # committed so: solutions/ was edited
    assert course.edited_exercises_hint(sys.executable) == [
        f"exercises/ is stale ({SOLVED}): regenerate it with python scripts/make_exercises.py"
    ]


def test_pytest_never_collects_the_work_folder(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for folder, name in [("tests", "test_ok.py"), ("my_work", "test_scratch.py")]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(f"def {name[:-3]}():\n    pass\n")
    (tmp_path / "exercises").mkdir()
    for folder in ("exercises", "my_work"):
        shutil.copy(ROOT / "exercises" / SOLVED, tmp_path / folder / SOLVED)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--nbval-lax", "."],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/test_ok.py::test_ok" in result.stdout and f"exercises/{SOLVED}::" in result.stdout
    assert "my_work" not in result.stdout


# ---------------------------------------------------------------- where torch comes from


def plan(course, **overrides):
    def unreachable_if_asked(url):
        raise AssertionError(f"the index {url} should not have been probed")

    settings = dict(platform="linux", choice="auto", has_nvidia=False, installed=None, problem_of=unreachable_if_asked)
    settings.update(overrides)
    return course.torch_plan(**settings)


def test_torch_plan_linux_without_gpu_takes_the_cpu_index(course):
    chosen = plan(course, problem_of=lambda url: None)
    assert chosen.index == course.CPU_TORCH_INDEX
    assert chosen.source == "from the PyTorch CPU index" and "no NVIDIA driver" in chosen.reason


def test_torch_plan_falls_back_to_pypi_quietly_when_the_index_is_unreachable(course):
    probed = []
    chosen = plan(course, problem_of=lambda url: probed.append(url) or "Name or service not known")
    assert probed == [course.CPU_TORCH_INDEX]  # asked once, not retried
    assert chosen.index is None and chosen.source == "from PyPI"
    assert "could not be reached (Name or service not known)" in chosen.reason


@pytest.mark.parametrize(
    "overrides, source, words",
    [
        (dict(installed="2.13.0"), "already in the environment", "CI's pinned wheel"),  # .ci/run's case
        (dict(choice="pypi"), "from PyPI", "MINIMODELS_TORCH_INDEX=pypi"),
        (dict(platform="darwin"), "from PyPI", "macOS"),
        (dict(platform="win32"), "from PyPI", "Windows"),
        (dict(has_nvidia=True), "from PyPI", "NVIDIA driver was found"),
    ],
)
def test_torch_plan_without_the_cpu_index_never_probes_it(course, overrides, source, words):
    chosen = plan(course, **overrides)
    assert chosen.index is None and chosen.source == source and words in chosen.reason


def test_torch_plan_follows_a_named_index_even_with_a_gpu(course):
    mirror = "https://mirror.example/torch-cpu"
    chosen = plan(course, choice=mirror, has_nvidia=True, problem_of=lambda url: None)
    assert chosen.index == mirror and "MINIMODELS_TORCH_INDEX" in chosen.reason


def test_torch_build_is_described_in_words(course):
    assert course.describe_torch_build("2.13.0+cpu - 0") == "torch 2.13.0+cpu (CPU build)"
    assert course.describe_torch_build("2.13.0+cu128 12.8 0") == "torch 2.13.0+cu128 (CUDA 12.8 build)"
    assert course.describe_torch_build("2.13.0 - 1") == "torch 2.13.0 (CPU + Apple MPS build)"


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (the name http.server calls)
        self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_index_probe_answers_quickly_for_a_live_a_wrong_and_a_dead_index(course, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert course.index_problem(f"{base}/whl/cpu") is None
        assert "HTTP 404" in course.index_problem(f"{base}/nothing/here")
    finally:
        server.shutdown()
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    assert course.index_problem(f"http://127.0.0.1:{dead}/whl/cpu", timeout=2)  # refused: a reason, no retries
    assert course.index_problem(tmp_path.as_uri()) is None
    assert "no folder" in course.index_problem((tmp_path / "missing").as_uri())
