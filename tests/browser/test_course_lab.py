"""`python3 course.py lab` really starts JupyterLab, as root too (CI and most containers run as root), copies
the exercises to my_work/, and stops cleanly, without a hint, when course.py gets SIGTERM (`docker stop`).
No browser needed: the server must answer.

Runs on a copy of the course (so my_work/ and JupyterLab's files land in a temporary folder) with --no-venv,
i.e. with the Python running this test, which has the course installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.name == "nt", reason="stops the server with a POSIX process-group signal"),
]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_course_py_lab_starts_jupyterlab_and_stops_cleanly(tmp_path):
    for name in ("course.py", "pyproject.toml", "lessons", "exercises"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        else:
            shutil.copy(source, tmp_path / name)
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime"), "JUPYTER_DATA_DIR": str(tmp_path / ".data")}
    log = tmp_path / "course.log"
    cmd = [sys.executable, str(tmp_path / "course.py"), "--no-venv", "lab", "--no-browser", "--port", str(port),
           "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
           "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "w") as out:
        started = time.monotonic()
        process = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as answer:
                        assert answer.status == 200
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                        pytest.fail(f"course.py lab did not start JupyterLab; its output:\n{log.read_text()[-4000:]}")
                    time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/my_work", timeout=10) as answer:
                assert b"01_baseline_gpt_exercises.ipynb" in answer.read()  # the copies are in the file browser
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # to course.py alone: it must pass it on to JupyterLab
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"course.py lab did not stop within 30 s of SIGTERM:\n{log.read_text()[-3000:]}")
    said = log.read_text()
    assert sorted(p.name for p in (tmp_path / "my_work").iterdir()) == sorted(
        p.name for p in (ROOT / "exercises").glob("*.ipynb"))
    assert f"copied {len(list((ROOT / 'exercises').glob('*.ipynb')))} exercise notebooks to my_work/" in said
    if os.geteuid() == 0:
        assert "course.py added --allow-root" in said, said[-3000:]
    assert "Running as root is not recommended" not in said
    assert code == 0, f"exit {code}:\n{said[-3000:]}"
    assert "hint:" not in said, said[-3000:]
