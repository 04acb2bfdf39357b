import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from minimodels.cli import main
from minimodels.config import ModelConfig
from minimodels.model import MiniModel
from minimodels.train import TrainConfig, lr_at, make_optimizer, train

CFG = ModelConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=32)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    # a learnable stream: a repeating pattern with a little noise
    ids = (torch.arange(4000) * 7 % 40).long()
    noise = torch.rand(4000, generator=g) < 0.05
    ids[noise] = torch.randint(0, 40, (int(noise.sum()),), generator=g)
    return SimpleNamespace(train=ids[:3500], val=ids[3500:])


def fresh_model():
    torch.manual_seed(0)
    return MiniModel(CFG)


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_weight_decay_skips_norm_gains():
    opt = make_optimizer(fresh_model(), TrainConfig())
    decay, no_decay = opt.param_groups
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0


def test_training_lowers_the_validation_loss(data):
    history = train(fresh_model(), data, TrainConfig(steps=60, batch_size=8, seq_len=16, eval_every=20,
                                                     eval_batches=2, progress=False))
    assert history["val_loss"][-1] < history["val_loss"][0] < math.log(40) + 0.5
    assert history["val_loss"][-1] < 1.5
    assert len(history["loss"]) == 60 and history["tokens"] == 60 * 8 * 16
    assert history["tokens_per_s"] > 0


def test_interrupted_run_resumes_on_the_same_loss_curve(data, tmp_path):
    kw = dict(steps=24, batch_size=4, seq_len=16, eval_every=8, eval_batches=2, progress=False)
    straight = train(fresh_model(), data, TrainConfig(**kw))

    ckpt = tmp_path / "run.pt"
    cfg = TrainConfig(**kw, checkpoint_path=str(ckpt), checkpoint_every=5)

    def interrupt(step, history):
        if step == 12:
            raise KeyboardInterrupt  # as if the learner pressed "interrupt kernel"

    with pytest.raises(KeyboardInterrupt):
        train(fresh_model(), data, cfg, callback=interrupt)
    resumed = train(MiniModel(CFG), data, cfg, resume=True)  # a new process would start from a new model
    assert resumed["step"] == list(range(24))
    assert resumed["loss"] == straight["loss"]  # bit for bit on CPU
    assert resumed["val_loss"] == straight["val_loss"]


def test_checkpoint_loads_with_weights_only(data, tmp_path):
    path = tmp_path / "c.pt"
    train(fresh_model(), data, TrainConfig(steps=3, batch_size=2, seq_len=8, checkpoint_path=str(path),
                                           progress=False))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 3 and ckpt["config"] == CFG.to_dict()
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_bad_train_configs():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=2)
    with pytest.raises(ValueError, match="checkpoint_path"):
        train(fresh_model(), SimpleNamespace(train=None, val=None), TrainConfig(), resume=True)


def test_command_line_trains_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIMODELS_PROFILE", "smoke")
    out = tmp_path / "cli.pt"
    history = main(["--steps", "4", "--out", str(out), "--no-progress", "--checkpoint-every", "2"])
    assert out.is_file() and len(history["loss"]) == 4
    history = main(["--steps", "6", "--out", str(out), "--no-progress", "--resume"])
    assert history["step"] == list(range(6))
    assert "validation loss" in capsys.readouterr().out


def test_python_dash_m_minimodels_dispatches(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minimodels"], capture_output=True, text=True)
    assert out.returncode != 0 and "usage: python -m minimodels" in out.stderr
    env = {**os.environ, "MINIMODELS_PROFILE": "smoke"}
    run = subprocess.run([sys.executable, "-m", "minimodels", "train", "--steps", "2", "--no-progress",
                          "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "RuntimeWarning" not in run.stderr and (tmp_path / "m.pt").is_file()
