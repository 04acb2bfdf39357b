#!/usr/bin/env python3
"""MiniSeek's two commands. Needs only Python 3.10+ (standard library); Linux, macOS and Windows.

    python3 course.py lab                  open the course in JupyterLab (lessons/00_orientation.ipynb)
    python3 course.py test                 run every check CI runs (lint, notebook hygiene, tests, notebooks)

`lab` first copies each exercise notebook that my_work/ lacks from exercises/ into my_work/ (never
overwriting a copy there): solve the exercises in my_work/. exercises/ is generated from solutions/ and
checked by `test`; my_work/ is yours, git-ignored and skipped by every check. As root (a container, a
cloud VM) `lab` adds JupyterLab's --allow-root itself and says so.

The first call creates .venv/ and installs the course into it (`pip install -e ".[course,test,browser]"`);
later calls reinstall only when pyproject.toml has changed. On Linux without an NVIDIA driver torch comes
from PyTorch's CPU index (PyPI's Linux torch is a multi-GB CUDA build), or from PyPI when that index cannot
be reached; MINIMODELS_TORCH_INDEX=pypi|URL overrides that choice, and the install says which build it took
and why. Conda/mamba users who made the environment from environment.yml add --no-venv (or set
MINIMODELS_NO_VENV=1) to use the active Python instead.

`test` options:
    --workers N        pytest-xdist processes for pytest (default 2; 0 = no xdist)
    --fast             skip the lint/hygiene steps (ruff, clean notebooks, exercises in sync)
    --profile NAME     compute profile for the run (default smoke: seconds per notebook)
    -- ARGS            extra pytest arguments; if they name files or folders, only those run, e.g.
                       python3 course.py test -- lessons/01_baseline_gpt.ipynb
                       python3 course.py test -- tests -k rope
Extra arguments to `lab` go to JupyterLab (e.g. python3 course.py lab --port 8899).
"""

import sys

if sys.version_info < (3, 10):  # noqa: UP036  (the point is a clear message on an old Python)
    sys.exit(
        f"MiniSeek needs Python 3.10 or newer, but this is Python {sys.version_info[0]}.{sys.version_info[1]}"
        f" ({sys.executable}).\nInstall a newer Python (python.org, your package manager, or conda with"
        " environment.yml)\nand run this file with it, for example: python3.11 course.py lab"
    )

import argparse  # noqa: E402  (after the version check, so old Pythons get the message above)
import hashlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "minimodels-install.sha256"
EXTRAS = "course,test,browser"
FIRST_LESSON = Path("lessons") / "00_orientation.ipynb"
TEST_FOLDERS = ("tests", "lessons", "solutions", "exercises")
WORK_DIR = Path("my_work")  # the learner's copies of exercises/ (git-ignored; every check skips it)
ROOT_FLAGS = ("--allow-root", "--ServerApp.allow_root", "--NotebookApp.allow_root")
TESTED_PYTHONS = "3.10-3.12"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

# environment of every `test` step; the exercise checkers read the mode, the models read the profile
TEST_ENV = {
    "MINIMODELS_CHECK_MODE": "auto",  # solutions/ must pass, exercises/ must say "not implemented yet"
    "PLOTLY_RENDERER": "plotly_mimetype",
    "OMP_NUM_THREADS": "1",  # one thread per pytest worker: no oversubscription on 2 cores
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",  # checkers print emoji; Windows pipes default to cp1252
}
# pytest's closing line, e.g. "===== 3 failed, 41 passed in 62.10s (0:01:02) ====="
PYTEST_SUMMARY = re.compile(
    r"^=+ .*\b(passed|failed|errors?|skipped|no tests ran|deselected)\b.* in [\d.]+s.*=+$"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def say(message):
    print("[course] " + message, flush=True)


def fail(message, code=1):
    say("error: " + message)
    sys.exit(code)


def wait(process):
    """Wait for a child, letting it handle Ctrl-C itself (JupyterLab asks before shutting down).

    A SIGTERM to course.py (`docker stop`, a process manager) is passed on to the child, so JupyterLab shuts
    its kernels down instead of being left running without its parent.
    """

    def forward(signum, frame):
        process.send_signal(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()  # only there can handlers be set
    previous = signal.signal(signal.SIGTERM, forward) if in_main_thread else None
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def run(cmd, env=None):
    return wait(subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env))


# ------------------------------------------------------------------ environment


def venv_python():
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def wanted_stamp():
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(EXTRAS.encode())
    return digest.hexdigest()


def python_says(python, code):
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip() if result.returncode == 0 else None


def pip(python, *args):
    quiet = ["-q"] if os.environ.get("CI") else []
    return run([python, "-m", "pip", "install", "--disable-pip-version-check", *quiet, *args])


@dataclass
class TorchPlan:
    """Where torch comes from: `index` (PyTorch's CPU index or MINIMODELS_TORCH_INDEX), or None for "with the
    other packages" (PyPI, or whatever the user's pip configuration names); `source` and `reason` say it in words."""

    index: str | None
    source: str
    reason: str


def index_problem(url, timeout=5.0):
    """None if the package index at `url` answers, else why not, in a few words (quietly, within `timeout` s).

    pip would retry an unreachable index for minutes, printing "Retrying ... NewConnectionError" each time;
    this asks once. A certificate error counts as an answer: pip may trust certificates that urllib does not.
    """
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        return None if Path(path).exists() else f"no folder {path}"
    probe = url.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(probe, timeout=timeout):
            return None
    except urllib.error.HTTPError as e:  # the server answered, but has no torch there
        return f"{probe} answered HTTP {e.code}"
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            return None
        return str(e.reason) or type(e.reason).__name__
    except (OSError, ValueError) as e:  # timeouts, resets, a malformed URL
        return str(e) or type(e).__name__


def torch_plan(*, platform, choice, has_nvidia, installed, problem_of):
    """Decide where torch comes from (pure apart from `problem_of`, the index probe, so tests can mock it)."""
    if installed:
        kept = "kept (e.g. CI's pinned wheel; delete .venv/ to choose again)"
        return TorchPlan(None, "already in the environment", kept)
    if choice == "pypi":
        return TorchPlan(None, "from PyPI", "MINIMODELS_TORCH_INDEX=pypi")
    if not platform.startswith("linux"):
        return TorchPlan(None, "from PyPI", "PyPI's torch is the right build on macOS and Windows")
    if choice == "auto" and has_nvidia:
        return TorchPlan(None, "from PyPI", "an NVIDIA driver was found (nvidia-smi): the CUDA build can use the GPU")
    index = CPU_TORCH_INDEX if choice == "auto" else choice
    problem = problem_of(index)
    if problem:
        return TorchPlan(None, "from PyPI", f"{index} could not be reached ({problem})")
    if choice == "auto":
        return TorchPlan(index, "from the PyTorch CPU index", "no NVIDIA driver found (no nvidia-smi on PATH)")
    return TorchPlan(index, f"from {index}", "MINIMODELS_TORCH_INDEX names it")


def install_torch(python):
    """Install torch first where it should not come from PyPI; return the plan actually followed."""
    plan = torch_plan(
        platform=sys.platform,
        choice=os.environ.get("MINIMODELS_TORCH_INDEX", "auto"),
        has_nvidia=bool(shutil.which("nvidia-smi")),
        installed=python_says(python, "import torch; print(torch.__version__)"),
        problem_of=index_problem,
    )
    if plan.index is None:
        if plan.source != "already in the environment":
            say(f"torch will come {plan.source} with the other packages: {plan.reason}")
        return plan
    say(f"installing torch {plan.source}: {plan.reason} (MINIMODELS_TORCH_INDEX=pypi skips this)")
    if pip(python, "--retries", "1", "--timeout", "30", "torch", "--index-url", plan.index) != 0:
        return TorchPlan(None, "from PyPI", f"pip could not install it from {plan.index} (its message is above)")
    return plan


TORCH_BUILD = (
    "import torch; mps = getattr(torch.backends, 'mps', None);"
    "print(torch.__version__, torch.version.cuda or '-', int(bool(mps and mps.is_built())))"
)


def describe_torch_build(version_line):
    """'2.13.0+cpu - 0' (version, CUDA version or '-', MPS built) -> 'torch 2.13.0+cpu (CPU build)'."""
    version, cuda, mps = (version_line.split() + ["-", "0"])[:3]
    if cuda != "-":
        return f"torch {version} (CUDA {cuda} build)"
    if mps == "1":
        return f"torch {version} (CPU + Apple MPS build)"
    return f"torch {version} (CPU build)"


def report_torch(python, plan):
    line = python_says(python, TORCH_BUILD)
    if line is None:
        say(f"warning: torch does not import in {python} (planned {plan.source}: {plan.reason})")
        return
    say(f"{describe_torch_build(line)} {plan.source}: {plan.reason}")


def ensure_environment(no_venv):
    """The Python to run everything with: .venv's (created/updated as needed) or, with --no-venv, this one."""
    if no_venv:
        check = subprocess.run(
            [sys.executable, "-c", "import minimodels, pytest, nbval, jupyterlab"], capture_output=True, text=True,
            cwd=ROOT,
        )
        if check.returncode != 0:
            why = (check.stderr.strip().splitlines() or ["no message"])[-1]
            fail(
                f"--no-venv: {sys.executable} cannot import the course packages ({why}).\n"
                "  conda/mamba: conda env create -f environment.yml && conda activate miniseek\n"
                f'  pip:        python -m pip install -e ".[{EXTRAS}]"'
            )
        return Path(sys.executable)

    python = venv_python()
    if not python.exists():
        if VENV.exists():
            fail(
                f"{VENV} exists but has no {python.relative_to(VENV)}: it is broken or was made elsewhere; "
                "delete the folder and run this command again"
            )
        say(f"creating {VENV.name}/ with Python {sys.version.split()[0]} ({sys.executable})")
        if sys.version_info >= (3, 13):
            say(f"note: the course is tested on Python {TESTED_PYTHONS}; newer ones may lack torch wheels")
        if run([sys.executable, "-m", "venv", VENV]) != 0:
            fail(
                "could not create the virtual environment "
                "(on Debian/Ubuntu: sudo apt install python3-venv; or use conda with environment.yml)"
            )

    want = wanted_stamp()
    if STAMP.exists() and STAMP.read_text(encoding="utf-8").strip() == want:
        return python

    say(f'installing the course into {VENV.name}/ (pip install -e ".[{EXTRAS}]"); first time: minutes')
    pip_version = python_says(python, "import pip; print(pip.__version__)") or "0"
    if tuple(int(p) for p in re.findall(r"\d+", pip_version)[:2]) < (21, 3):
        pip(python, "--upgrade", "pip")  # editable installs from pyproject.toml need pip >= 21.3
    plan = install_torch(python)
    if pip(python, "-e", f".[{EXTRAS}]") != 0:
        fail("pip could not install the course packages (see pip's message above)")
    report_torch(python, plan)
    STAMP.write_text(want + "\n", encoding="utf-8")
    return python


def child_env(python, extra=None):
    env = dict(os.environ)
    if python.parent.parent == VENV:  # behave as if the venv were activated (tools find jupyter, ruff, ...)
        env["VIRTUAL_ENV"] = str(VENV)
        env["PATH"] = str(python.parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


# ------------------------------------------------------------------ commands


def current_euid():
    """The effective user id, or None where there is none (Windows)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def lab_arguments(extra, euid):
    """JupyterLab's arguments for `course.py lab [extra]` as user `euid`, and a note for each one course.py added."""
    args, notes = list(extra), []
    if not any(a.startswith(("--ServerApp.root_dir", "--root-dir", "--notebook-dir")) for a in args):
        # without this, opening a notebook makes its folder the root and hides exercises/, solutions/, my_work/
        args = [f"--ServerApp.root_dir={ROOT}", *args]
    if euid == 0 and not any(a.startswith(ROOT_FLAGS) for a in args):
        args.append("--allow-root")
        notes.append(
            "running as root (user id 0, as in most containers and cloud VMs): JupyterLab refuses to start as "
            "root unless told to, so course.py added --allow-root"
        )
    target = [] if names_paths(extra) else [str(FIRST_LESSON)] if (ROOT / FIRST_LESSON).exists() else []
    return [*target, *args], notes


def copy_exercises():
    """Copy every exercises/*.ipynb that my_work/ lacks into my_work/; never overwrite. Return the names copied.

    exercises/ is generated from solutions/ and checked by `course.py test`; a learner who solved it in place
    would turn the checks red (lint, saved outputs, staleness). my_work/ is the learner's: git-ignored and
    skipped by every check. An exercise notebook added to the course later is copied on the next `lab`.
    """
    source, target = ROOT / "exercises", ROOT / WORK_DIR
    if not source.is_dir():
        return []
    copied = []
    for notebook in sorted(source.glob("*.ipynb")):
        mine = target / notebook.name
        if not mine.exists():
            target.mkdir(exist_ok=True)
            shutil.copyfile(notebook, mine)
            copied.append(notebook.name)
    return copied


def run_keeping_stderr_tail(cmd, env, keep=8000):
    """Run `cmd` with its stderr echoed as it comes and its last `keep` characters kept; return (code, tail).

    JupyterLab logs to stderr; its last lines say why it stopped, which is what `lab_exit_hint` reads. Stdout
    stays the terminal's, so its Ctrl-C question ("Shut down this Jupyter server?") shows as usual.
    """
    process = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    chunks = []
    echo = getattr(sys.stderr, "buffer", None)

    def pump():
        fd = process.stderr.fileno()
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                return
            chunks.append(chunk)
            if echo is not None:
                echo.write(chunk)
                echo.flush()
            else:
                print(chunk.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)

    # a thread, not a read loop: a kernel left behind could hold the pipe open after JupyterLab has exited
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = wait(process)
    reader.join(timeout=2)
    return code, b"".join(chunks)[-keep:].decode("utf-8", "replace")


# (what JupyterLab's last log lines say, what to do), checked in order; the first match is the hint.
# {jupyter} becomes the command that starts this JupyterLab by hand.
LAB_FAILURES = [
    (r"Running as root is not recommended",
     "JupyterLab refuses to run as root without --allow-root: python3 course.py lab --allow-root"),
    (r"no available port|port \d+ is not available|Address already in use",
     "the port is taken: choose another, e.g. python3 course.py lab --port 8899"),
    (r"ModuleNotFoundError|ImportError|No module named",
     f"a package is missing or broken: delete {VENV.name}/ and run python3 course.py lab again (it reinstalls; "
     "conda users: recreate the environment from environment.yml)"),
    (r"PermissionError|Permission denied|Read-only file system",
     "JupyterLab could not write its files: make ~/.jupyter and ~/.local/share/jupyter writable, or point "
     "JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR and JUPYTER_RUNTIME_DIR at folders you can write"),
    (r"unrecognized arguments|Unrecognized flag|expected one argument|error: argument",
     "JupyterLab did not accept an argument (course.py passes extra `lab` arguments on to it): "
     "see {jupyter} --help-all"),
]
LAB_LOG_LINES = 20  # the cause is at the end of the log; earlier lines may hold harmless warnings


def lab_exit_hint(code, log_tail, python="python"):
    """What to do after JupyterLab exited with `code` (None if it was a normal stop), from its last log lines."""
    if code == 0 or code in (-2, -15, 130, 143):  # a normal stop, Ctrl-C or SIGTERM
        return None
    last = log_tail.splitlines()[-LAB_LOG_LINES:]
    jupyter = f"{python} -m jupyterlab"
    for pattern, hint in LAB_FAILURES:
        if any(re.search(pattern, line) for line in last):
            return hint.format(jupyter=jupyter)
    errors = [line.strip() for line in last if re.search(r"\[(C|E) |CRITICAL|ERROR|Error", line)]
    said = f' Its last error line: "{errors[-1]}".' if errors else ""
    return (
        f"JupyterLab stopped with exit code {code}.{said} Its log is above; to try it by hand: "
        f"{jupyter} {FIRST_LESSON}"
    )


def cmd_lab(python, extra):
    copied = copy_exercises()
    if copied:
        say(f"copied {len(copied)} exercise notebooks to {WORK_DIR}/ ({', '.join(copied)})")
    if (ROOT / WORK_DIR).is_dir():
        say(
            f"solve the exercises in {WORK_DIR}/ (your copies: git-ignored, skipped by `course.py test`); "
            "exercises/ is generated from solutions/ and checked, so leave it as it is"
        )
    args, notes = lab_arguments(extra, current_euid())
    for note in notes:
        say(note)
    target = args[0] if args and args[0].endswith(".ipynb") else None
    say(
        f"starting JupyterLab{' on ' + target if target else ''}: if no browser opens, open the "
        "http://127.0.0.1:... address it prints; stop it with Ctrl-C"
    )
    code, tail = run_keeping_stderr_tail([python, "-m", "jupyterlab", *args], env=child_env(python))
    hint = lab_exit_hint(code, tail, python)
    if hint:
        say("hint: " + hint)
    return code


def names_paths(args):
    """True if any pytest argument is an existing file or folder (or a node id in one)."""
    return any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists() for a in args)


def run_pytest(cmd, env):
    """Run pytest, echoing its output, and return (exit code, its closing summary line)."""
    summary = None
    process = subprocess.Popen(
        [str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = getattr(sys.stdout, "buffer", None)
    while True:
        try:
            raw = process.stdout.readline()
        except KeyboardInterrupt:
            continue  # pytest got the Ctrl-C too: keep echoing until it has printed its summary
        if not raw:
            break
        if out is not None:
            out.write(raw)
            out.flush()
        else:
            print(raw.decode("utf-8", "replace"), end="", flush=True)
        line = ANSI.sub("", raw.decode("utf-8", "replace")).strip()
        if PYTEST_SUMMARY.match(line):
            summary = line
    return wait(process), summary


def lint_steps(python):
    """The test command's first steps: lint, notebook hygiene, exercises generated. All skip my_work/:
    ruff by pyproject.toml's exclude, the other two by looking only at lessons/, solutions/ and exercises/."""
    return [
        ("ruff check", [python, "-m", "ruff", "check", "."]),
        ("notebooks clean", [python, "scripts/clean_notebooks.py", "--check"]),
        ("exercises match solutions", [python, "scripts/make_exercises.py", "--check"]),
    ]


LINT_STEP_NAMES = ("ruff check", "notebooks clean", "exercises match solutions")

# prints the exercises/ notebooks that differ from what solutions/ generates, one per line
EDITED_EXERCISES = """
import sys
sys.path.insert(0, "scripts")
import make_exercises, nbtools
for name, text in make_exercises.render_all(nbtools.REPO_ROOT / "solutions").items():
    path = nbtools.REPO_ROOT / "exercises" / name
    if path.exists() and not nbtools.same_text(path, text):
        print(name)
"""


def edited_exercises(python, env=None):
    """Names of the exercises/ notebooks that differ from their generated text (e.g. solved in place)."""
    result = subprocess.run(
        [str(python), "-c", EDITED_EXERCISES], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return result.stdout.split() if result.returncode == 0 else []


def changed_in_git(paths):
    """Which of `paths` git says differ from the last commit (None if git cannot tell: no git, no repository)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--", *map(str, paths)], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return {line[3:].strip().strip('"') for line in result.stdout.splitlines()}


def edited_exercises_hint(python, env=None):
    """Lines that tell a learner who solved exercises/ in place how to keep the work and get the checks green."""
    names = edited_exercises(python, env)
    if not names:
        return []
    paths = [Path("exercises", n).as_posix() for n in names]
    in_git = changed_in_git(paths)
    mine = [p for p in paths if in_git is None or p in in_git]
    if not mine:  # committed that way: solutions/ changed and exercises/ was not regenerated
        return [f"exercises/ is stale ({', '.join(names)}): regenerate it with python scripts/make_exercises.py"]
    move = "move" if os.name == "nt" else "mv"
    lines = [
        f"{', '.join(mine)} differ from what solutions/ generates: your own work? exercises/ is generated "
        f"and checked, so solve the exercises in your copies in {WORK_DIR}/ (`course.py lab` makes them; the "
        "checks skip that folder). To keep this work and turn the checks green:"
    ]
    for path in mine:
        name = Path(path).name
        keep = WORK_DIR / name
        if (ROOT / keep).exists():  # never overwrite the learner's copy: keep both
            keep = WORK_DIR / f"{Path(name).stem}-from-exercises.ipynb"
        lines.append(f"    {move} {Path(path)} {keep}")
    lines.append("    git checkout exercises/      (or: python scripts/make_exercises.py)")
    return lines


def cmd_test(python, opts, pytest_args):
    env = child_env(python, dict(TEST_ENV, MINIMODELS_PROFILE=opts.profile))
    steps = [] if opts.fast else lint_steps(python)
    if (ROOT / "minimodels" / "data.py").exists() or (ROOT / "minimodels" / "data").is_dir():
        steps.append(("data cache", [python, "-m", "minimodels", "data"]))

    targets = [] if names_paths(pytest_args) else [d for d in TEST_FOLDERS if (ROOT / d).exists()]
    pytest_cmd = [
        python,
        "-m",
        "pytest",
        *targets,
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        "nbval_sanitize.cfg",
        "--nbval-cell-timeout",
        "600",
        "-p",
        "no:cacheprovider",
    ]
    if opts.workers > 0:
        pytest_cmd += ["-n", str(opts.workers), "--dist", "loadscope"]  # loadscope: one kernel per notebook
    if sys.stdout.isatty():
        pytest_cmd.append("--color=yes")
    pytest_cmd += pytest_args
    steps.append(("pytest", pytest_cmd))

    say(f"test: {len(steps)} steps; profile {opts.profile}, {opts.workers} workers, python {python}")
    if (ROOT / WORK_DIR).is_dir():
        say(f"{WORK_DIR}/ holds your own copies of the exercises: not checked")
    start = time.perf_counter()
    for number, (name, cmd) in enumerate(steps, start=1):
        shown = " ".join(["python", *map(str, cmd[1:])])
        say(f"({number}/{len(steps)}) {name}: {shown}")
        t0 = time.perf_counter()
        if name == "pytest":
            code, summary = run_pytest(cmd, env)
        else:
            code, summary = run(cmd, env=env), None
        took = time.perf_counter() - t0
        total = time.perf_counter() - start
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        say(f"({number}/{len(steps)}) {name}: {status} in {took:.1f} s (total {total:.1f} s)")
        if summary:
            print(summary, flush=True)  # pytest's closing line last, where CI and people look for it
        if code != 0:
            if name in LINT_STEP_NAMES:
                for line in edited_exercises_hint(python, env):
                    say(line)
            return code
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]

    parser = argparse.ArgumentParser(
        prog="course.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-venv",
        action="store_true",
        default=os.environ.get("MINIMODELS_NO_VENV") == "1",
        help="use this Python instead of .venv (conda users; also MINIMODELS_NO_VENV=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{lab,test}")
    lab = commands.add_parser("lab", help="open the course in JupyterLab")
    lab.add_argument("--no-venv", action="store_true", default=argparse.SUPPRESS)
    test = commands.add_parser("test", help="run every check (what CI runs)")
    test.add_argument("--no-venv", action="store_true", default=argparse.SUPPRESS)
    test.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2; 0 = off)")
    test.add_argument("--fast", action="store_true", help="skip ruff and the notebook hygiene checks")
    test.add_argument("--profile", default="smoke", help="MINIMODELS_PROFILE for the run (default smoke)")

    opts, unknown = parser.parse_known_args(argv)
    if opts.command == "test" and unknown:
        parser.error(f"unknown test options {unknown}; pytest options go after --, e.g. course.py test -- -x")
    python = ensure_environment(opts.no_venv)
    if opts.command == "lab":
        return cmd_lab(python, unknown + passthrough)
    return cmd_test(python, opts, passthrough)


if __name__ == "__main__":
    sys.exit(main())
