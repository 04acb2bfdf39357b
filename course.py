#!/usr/bin/env python3
"""MiniSeek's two commands. Needs only Python 3.10+ (standard library); Linux, macOS and Windows.

    python3 course.py lab                  open the course in JupyterLab (lessons/00_orientation.ipynb)
    python3 course.py test                 run every check CI runs (lint, notebook hygiene, tests, notebooks)

The first call creates .venv/ and installs the course into it (`pip install -e ".[course,test,browser]"`);
later calls reinstall only when pyproject.toml has changed. Conda/mamba users who made the environment from
environment.yml add --no-venv (or set MINIMODELS_NO_VENV=1) to use the active Python instead.

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
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / "minimodels-install.sha256"
EXTRAS = "course,test,browser"
FIRST_LESSON = Path("lessons") / "00_orientation.ipynb"
TEST_FOLDERS = ("tests", "lessons", "solutions", "exercises")
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
    """Wait for a child, letting it handle Ctrl-C itself (JupyterLab asks before shutting down)."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


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


def maybe_install_cpu_torch(python):
    """On Linux without an NVIDIA driver, take torch from PyTorch's CPU index.

    PyPI's Linux torch is a multi-GB CUDA build, useless on a laptop without a GPU.
    """
    choice = os.environ.get("MINIMODELS_TORCH_INDEX", "auto")
    if choice == "pypi" or not sys.platform.startswith("linux"):
        return
    if choice == "auto" and shutil.which("nvidia-smi"):
        return
    if python_says(python, "import torch; print(torch.__version__)"):
        return  # already there (CI installs a pinned CPU wheel first)
    index = CPU_TORCH_INDEX if choice == "auto" else choice
    say(f"installing CPU-only torch from {index} (set MINIMODELS_TORCH_INDEX=pypi to skip)")
    if pip(python, "--retries", "1", "--timeout", "30", "torch", "--index-url", index) != 0:
        say("could not reach that index; torch will come from PyPI with the other packages")


def ensure_environment(no_venv):
    """The Python to run everything with: .venv's (created/updated as needed) or, with --no-venv, this one."""
    if no_venv:
        if python_says(sys.executable, "import minimodels, pytest, nbval, jupyterlab; print('ok')") != "ok":
            fail(
                f"--no-venv: {sys.executable} lacks the course packages.\n"
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
    maybe_install_cpu_torch(python)
    if pip(python, "-e", f".[{EXTRAS}]") != 0:
        fail("pip could not install the course packages (see pip's message above)")
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


def cmd_lab(python, extra):
    target = [] if names_paths(extra) else [str(FIRST_LESSON)] if (ROOT / FIRST_LESSON).exists() else []
    if not any(a.startswith(("--ServerApp.root_dir", "--root-dir", "--notebook-dir")) for a in extra):
        # without this, opening a notebook makes its folder the root and hides exercises/ and solutions/
        extra = [f"--ServerApp.root_dir={ROOT}", *extra]
    say(f"starting JupyterLab{' on ' + target[0] if target else ''} (stop it with Ctrl-C)")
    return run([python, "-m", "jupyterlab", *target, *extra], env=child_env(python))


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


def cmd_test(python, opts, pytest_args):
    env = child_env(python, dict(TEST_ENV, MINIMODELS_PROFILE=opts.profile))
    steps = []
    if not opts.fast:
        steps += [
            ("ruff check", [python, "-m", "ruff", "check", "."]),
            ("notebooks clean", [python, "scripts/clean_notebooks.py", "--check"]),
            ("exercises match solutions", [python, "scripts/make_exercises.py", "--check"]),
        ]
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
