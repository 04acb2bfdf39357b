import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minimodels import cli
from minimodels.checkpoint import load_checkpoint

SMOKE_ENV = {**os.environ, "MINIMODELS_PROFILE": "smoke"}


@pytest.fixture(autouse=True)
def smoke(monkeypatch):
    monkeypatch.setenv("MINIMODELS_PROFILE", "smoke")


def args(out, *more):
    return ["--out", str(out), "--no-progress", *more]


def test_main_exits_0_and_run_returns_the_history(tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert cli.main(args(out, "--steps", "4", "--checkpoint-every", "2")) == 0
    printed = capsys.readouterr()
    assert "validation loss" in printed.out and printed.err == ""  # no history dict on stderr
    assert load_checkpoint(out)["step"] == 4
    history = cli.run(args(tmp_path / "run.pt", "--steps", "4"))
    assert history["step"] == list(range(4))


def test_resume_with_other_options_names_them(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli.pt"
    assert cli.main(args(out, "--steps", "4")) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "load_data", lambda *a, **kw: pytest.fail("settings are checked before the data loads"))
    assert cli.main(args(out, "--steps", "6", "--seed", "3", "--resume")) == 1
    err = capsys.readouterr().err
    assert "steps: 4 -> 6" in err and "seed: 0 -> 3" in err and "start a fresh run" in err
    assert "Traceback" not in err and err.startswith("minimodels-train: error:")


def test_resume_without_a_checkpoint_fails_before_the_data_loads(tmp_path, capsys, monkeypatch):
    def no_data(*a, **kw):
        raise AssertionError("the corpus was loaded before the --resume check")

    monkeypatch.setattr(cli, "load_data", no_data)
    assert cli.main(args(tmp_path / "none.pt", "--steps", "2", "--resume")) == 1
    assert "train one first" in capsys.readouterr().err


def test_interrupt_saves_and_the_printed_command_resumes_the_same_run(tmp_path, capsys, monkeypatch):
    straight = cli.run(args(tmp_path / "straight.pt", "--steps", "6"))
    real_train = cli.train

    def interrupted_train(model, data, cfg, **kw):
        def stop(step, history):
            if step == 2:
                raise KeyboardInterrupt

        return real_train(model, data, cfg, callback=stop, **kw)

    monkeypatch.setattr(cli, "train", interrupted_train)
    out = tmp_path / "cli.pt"
    assert cli.main(args(out, "--steps", "6")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{out} holds the first 3 steps" in err
    command = shlex.split(err.split("Resume the same run with: ")[1])
    assert command[0] == "minimodels-train" and command[-1] == "--resume"
    monkeypatch.setattr(cli, "train", real_train)
    resumed = cli.run(command[1:])
    assert resumed["loss"] == straight["loss"] and resumed["val_loss"] == straight["val_loss"]


def test_unwritable_out_is_found_before_the_data_loads(tmp_path, capsys, monkeypatch):
    def no_data(*a, **kw):
        raise AssertionError("the corpus was loaded before the --out check")

    monkeypatch.setattr(cli, "load_data", no_data)
    (tmp_path / "file").write_text("")
    assert cli.main(args(tmp_path / "file" / "run.pt")) == 1
    err = capsys.readouterr().err
    assert f"cannot write a checkpoint to {tmp_path / 'file' / 'run.pt'}" in err and "--out" in err


def test_bad_options_exit_2_naming_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(args(tmp_path / "x.pt", "--steps", "0"))
    assert exit_.value.code == 2 and "steps=0" in capsys.readouterr().err


def test_console_script_and_python_dash_m_exit_codes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minimodels"], capture_output=True, text=True)
    assert out.returncode != 0 and "usage: python -m minimodels" in out.stderr
    script = Path(sys.executable).with_name("minimodels-train")  # what `pip install` made of [project.scripts]
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "minimodels", "train"]
    run = subprocess.run([*command, "--steps", "2", "--no-progress", "--out", str(tmp_path / "m.pt")],
                         capture_output=True, text=True, env=SMOKE_ENV)
    assert run.returncode == 0, run.stderr  # it used to exit 1 and print the history dict
    assert "RuntimeWarning" not in run.stderr and "{" not in run.stderr and (tmp_path / "m.pt").is_file()
    fail = subprocess.run([sys.executable, "-m", "minimodels", "train", "--resume", "--out", str(tmp_path / "n.pt")],
                          capture_output=True, text=True, env=SMOKE_ENV)
    assert fail.returncode == 1 and "train one first" in fail.stderr and "Traceback" not in fail.stderr


def test_ctrl_c_in_a_shell_exits_130_with_a_saved_checkpoint(tmp_path):
    out = tmp_path / "run.pt"
    proc = subprocess.Popen([sys.executable, "-m", "minimodels", "train", "--steps", "100000", "--no-progress",
                             "--checkpoint-every", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SMOKE_ENV,
                            # the usual Ctrl-C even if this test runs in the background (`cmd &` ignores SIGINT)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not out.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first checkpoint: the loop is running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Resume the same run with: minimodels-train" in err
    steps = load_checkpoint(out)["step"]
    assert 0 < steps < 100000 and f"holds the first {steps} steps" in err
