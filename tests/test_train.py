import math
import os
import random
import shutil
import signal
from dataclasses import asdict, fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import minimodels.viz
from minimodels.checkpoint import RESUME_MAY_DIFFER, CheckpointError, content_sha256, load_checkpoint, save_atomic
from minimodels.config import ModelConfig
from minimodels.model import MiniModel
from minimodels.profiles import PROFILES, Profile
from minimodels.stopping import TrainingDivergedError, TrainingInterrupted
from minimodels.train import (
    TrainConfig,
    baseline_model,
    baseline_path,
    lr_at,
    make_optimizer,
    train,
)

CFG = ModelConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=32)
SMALL = dict(steps=24, batch_size=4, seq_len=16, eval_every=8, eval_batches=2, progress=False)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    # a learnable stream: a repeating pattern with a little noise
    ids = (torch.arange(4000) * 7 % 40).long()
    noise = torch.rand(4000, generator=g) < 0.05
    ids[noise] = torch.randint(0, 40, (int(noise.sum()),), generator=g)
    return SimpleNamespace(train=ids[:3500], val=ids[3500:])


@pytest.fixture(scope="module")
def straight(data):
    """The uninterrupted run every resumed run must reproduce bit for bit; (history, final weights)."""
    model = fresh_model()
    history = train(model, data, TrainConfig(**SMALL))
    return history, model.state_dict()


def fresh_model():
    torch.manual_seed(0)
    return MiniModel(CFG)


def assert_same_run(history, model, straight):
    want_history, want_weights = straight
    assert history["step"] == list(range(SMALL["steps"]))
    assert history["loss"] == want_history["loss"]  # bit for bit on CPU
    assert history["val_loss"] == want_history["val_loss"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, want_weights[name]), name


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


def test_checkpoint_loads_with_weights_only(data, tmp_path):
    path = tmp_path / "c.pt"
    train(fresh_model(), data, TrainConfig(steps=3, batch_size=2, seq_len=8, checkpoint_path=str(path),
                                           progress=False))
    ckpt = torch.load(path, weights_only=True)  # still a plain torch file, readable without minimodels
    assert ckpt["step"] == 3 and ckpt["config"] == CFG.to_dict()
    assert ckpt.pop("sha256") == content_sha256(ckpt)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


# --- TrainConfig: non-finite and absurd values are refused, with the field named ----------------------------

BAD_VALUES = {  # field: values that must be refused
    "steps": [0, -5, 1.5, True, "10", 10**10, math.inf],
    "batch_size": [0, 2**20, 3.0, None],
    "seq_len": [0, 2**30, math.nan],
    "eval_batches": [0, 10**7],
    "warmup_steps": [-1, 2.5],
    "eval_every": [-1],
    "checkpoint_every": [-1, 0.5],
    "seed": [2**70, -(2**64), 1.0],
    "lr": [math.nan, math.inf, -math.inf, 0, -1e-3, 2.0, "3e-3", True],
    "min_lr_ratio": [math.nan, -0.1, 1.5, math.inf],
    "weight_decay": [math.nan, math.inf, -0.1, 400.0],  # 400 with lr=3e-3: 1 - lr * wd < 0
    "beta1": [math.nan, 1.0, -0.1, 1.5],
    "beta2": [math.nan, 1.0, math.inf],
    "grad_clip": [math.nan, math.inf, -1.0],
    "checkpoint_path": ["", 5],
    "progress": ["yes", 1],
}


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in BAD_VALUES.items() for v in vs])
def test_bad_train_config_values_name_the_field(name, value):
    with pytest.raises(ValueError, match=name) as err:
        TrainConfig(**{name: value})
    assert len(str(err.value)) > len(name) + 10  # says what is wrong, not just the name


def test_property_random_configs_accept_the_good_and_name_the_bad():
    rng = random.Random(0)
    good = {"steps": lambda: rng.randint(1, 10**6), "batch_size": lambda: rng.randint(1, 512),
            "seq_len": lambda: rng.randint(1, 4096), "lr": lambda: 10 ** rng.uniform(-6, 0),
            "min_lr_ratio": lambda: rng.random(), "warmup_steps": lambda: rng.randint(0, 2000),
            "weight_decay": lambda: rng.choice([0.0, 0.1, rng.random()]), "beta1": lambda: rng.random() * 0.999,
            "beta2": lambda: rng.random() * 0.999, "grad_clip": lambda: rng.choice([0.0, 10 ** rng.uniform(-3, 3)]),
            "eval_every": lambda: rng.randint(0, 1000), "eval_batches": lambda: rng.randint(1, 64),
            "seed": lambda: rng.randint(0, 2**63), "checkpoint_every": lambda: rng.randint(0, 1000),
            "progress": lambda: rng.random() < 0.5,
            "checkpoint_path": lambda: rng.choice([None, "run.pt", Path("a/b.pt")])}
    assert set(good) == {f.name for f in fields(TrainConfig)}
    for _ in range(300):
        values = {name: draw() for name, draw in good.items()}
        cfg = TrainConfig(**values)
        content_sha256(asdict(cfg))  # only plain values: a checkpoint can hold it
        assert TrainConfig(**asdict(cfg)) == cfg
        name = rng.choice(sorted(BAD_VALUES))
        bad = rng.choice(BAD_VALUES[name]) if name != "weight_decay" else rng.choice([math.nan, -0.1, 2 / cfg.lr])
        with pytest.raises(ValueError, match=name):
            TrainConfig(**{**values, name: bad})


def test_train_config_normalizes_numpy_numbers_and_paths():
    cfg = TrainConfig(steps=np.int64(5), lr=np.float32(0.5), checkpoint_path=Path("~") / "run.pt")
    assert type(cfg.steps) is int and type(cfg.lr) is float
    assert cfg.checkpoint_path == os.path.expanduser("~/run.pt")
    assert replace(cfg, steps=7).steps == 7


def test_resume_needs_a_checkpoint_path():
    with pytest.raises(ValueError, match="checkpoint_path"):
        train(fresh_model(), SimpleNamespace(train=None, val=None), TrainConfig(), resume=True)


# --- a non-finite loss or gradient stops training, and the last good checkpoint stays ---------------------


def nan_hook(model, at_call: int):
    """Make the gradient of the first weight matrix inf in the `at_call`-th backward pass (1-based)."""
    calls = {"n": 0}
    weight = next(p for p in model.parameters() if p.dim() == 2)

    def hook(grad):
        calls["n"] += 1
        return grad * math.inf if calls["n"] == at_call else grad

    weight.register_hook(hook)


def assert_last_good_checkpoint(path, step):
    ckpt = load_checkpoint(path)  # verifies the checksum too
    assert ckpt["step"] == step
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_nan_loss_stops_with_the_step_and_a_hint(data, tmp_path):
    path = tmp_path / "run.pt"
    cfg = TrainConfig(**SMALL, checkpoint_path=str(path), checkpoint_every=1)

    def poison(step, history):
        if step == 5:  # after the state of 6 steps is saved
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)

    model = fresh_model()
    with pytest.raises(TrainingDivergedError, match=r"at step 6 the loss is nan") as err:
        train(model, data, cfg, callback=poison)
    assert "lower lr" in str(err.value) and "check the data" in str(err.value)
    assert str(path) in str(err.value) and "after 6 steps" in str(err.value)
    assert len(err.value.history["loss"]) == 6  # the curve up to the bad step
    assert_last_good_checkpoint(path, 6)


def test_inf_gradient_norm_stops_before_it_reaches_a_checkpoint(data, tmp_path):
    path = tmp_path / "run.pt"
    model = fresh_model()
    nan_hook(model, at_call=4)  # step 3
    with pytest.raises(TrainingDivergedError, match=r"at step 3 the loss is [0-9.]+ and the gradient norm (inf|nan)"):
        train(model, data, TrainConfig(**SMALL, checkpoint_path=str(path), checkpoint_every=1))
    assert_last_good_checkpoint(path, 3)


def test_without_clipping_broken_weights_are_never_saved(data, tmp_path):
    path = tmp_path / "run.pt"
    model = fresh_model()
    nan_hook(model, at_call=3)  # step 2: the loss is still finite, the update is not
    with pytest.raises(TrainingDivergedError, match=r"after step 2 the weights .* nan or inf") as err:
        train(model, data, TrainConfig(**SMALL, grad_clip=0.0, checkpoint_path=str(path), checkpoint_every=1))
    assert "grad_clip=1.0; it is off now" in str(err.value)
    assert_last_good_checkpoint(path, 2)


# --- Ctrl-C: save at the step boundary, resume bit for bit --------------------------------------------------


def interrupt_at(k):
    def callback(step, history):
        if step == k:
            raise KeyboardInterrupt  # as if the learner pressed "interrupt kernel" right after step k

    return callback


@pytest.mark.parametrize("every", [0, 5])
def test_interrupted_run_saves_and_resumes_on_the_same_loss_curve(data, tmp_path, straight, every):
    cfg = TrainConfig(**SMALL, checkpoint_path=str(tmp_path / "run.pt"), checkpoint_every=every)
    with pytest.raises(TrainingInterrupted) as err:
        train(fresh_model(), data, cfg, callback=interrupt_at(12))
    stop = err.value
    assert isinstance(stop, KeyboardInterrupt) and stop.saved_step == 13 and len(stop.history["loss"]) == 13
    assert "after 13 of 24 steps" in str(stop)
    assert "train(model, data, cfg, resume=True)" in str(stop)  # fits a notebook
    assert f"minimodels-train --resume --out {cfg.checkpoint_path}" in str(stop)  # and a shell
    assert load_checkpoint(cfg.checkpoint_path)["step"] == 13
    model = MiniModel(CFG)  # a new process would start from a new model
    assert_same_run(train(model, data, cfg, resume=True), model, straight)


@pytest.fixture
def usual_ctrl_c():
    """Python's own Ctrl-C handler for the test: a shell that starts a command in the background (`cmd &`)
    starts it with SIGINT ignored, and train() rightly keeps ignoring it then."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_real_ctrl_c_mid_step_finishes_the_step_then_saves(data, tmp_path, straight, capsys, usual_ctrl_c):
    cfg = TrainConfig(**SMALL, checkpoint_path=str(tmp_path / "run.pt"))
    model, calls = fresh_model(), {"n": 0}

    def press_ctrl_c(module, inputs):
        calls["n"] += 1
        if calls["n"] == 8:  # inside the forward pass of step 7
            os.kill(os.getpid(), signal.SIGINT)

    model.register_forward_pre_hook(press_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        train(model, data, cfg)
    assert signal.getsignal(signal.SIGINT) is handler  # train() put the usual Ctrl-C back
    assert "interrupt: finishing this step, then saving" in capsys.readouterr().err
    assert err.value.saved_step == 8 and err.value.history["step"] == list(range(8))  # step 7 was finished
    resumed = MiniModel(CFG)
    assert_same_run(train(resumed, data, cfg, resume=True), resumed, straight)


def test_an_interrupt_that_cannot_wait_keeps_the_last_checkpoint(data, tmp_path, straight):
    cfg = TrainConfig(**SMALL, checkpoint_path=str(tmp_path / "run.pt"), checkpoint_every=5)
    model, calls = fresh_model(), {"n": 0}

    def stop_now(module, inputs):
        calls["n"] += 1
        if calls["n"] == 13:  # inside step 12; e.g. a second Ctrl-C
            raise KeyboardInterrupt

    model.register_forward_pre_hook(stop_now)
    with pytest.raises(TrainingInterrupted, match="in the middle of a step") as err:
        train(model, data, cfg)
    assert err.value.saved_step == 10 and load_checkpoint(cfg.checkpoint_path)["step"] == 10
    resumed = MiniModel(CFG)
    assert_same_run(train(resumed, data, cfg, resume=True), resumed, straight)


def test_interrupt_without_a_checkpoint_path_says_so(data):
    with pytest.raises(TrainingInterrupted, match=r"nothing was saved \(set TrainConfig\(checkpoint_path") as err:
        train(fresh_model(), data, TrainConfig(**SMALL), callback=interrupt_at(3))
    assert err.value.saved_step is None and len(err.value.history["loss"]) == 4


# --- resume only the same run ------------------------------------------------------------------------------

CHANGES = {"steps": 30, "lr": 1e-3, "batch_size": 8, "seq_len": 8, "warmup_steps": 3, "seed": 1,
           "weight_decay": 0.0, "grad_clip": 0.5, "min_lr_ratio": 0.5, "beta1": 0.8, "beta2": 0.99,
           "eval_batches": 3}


@pytest.fixture
def half_run(data, tmp_path):
    cfg = TrainConfig(**SMALL, checkpoint_path=str(tmp_path / "run.pt"))
    with pytest.raises(TrainingInterrupted):
        train(fresh_model(), data, cfg, callback=interrupt_at(9))
    return cfg


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_resume_with_other_settings_names_what_differs(data, half_run, name):
    assert name not in RESUME_MAY_DIFFER
    changed = replace(half_run, **{name: CHANGES[name]})
    with pytest.raises(CheckpointError, match="cannot resume") as err:
        train(MiniModel(CFG), data, changed, resume=True)
    text = str(err.value)
    assert f"{name}: {getattr(half_run, name)!r} -> {CHANGES[name]!r}" in text
    assert "start a fresh run" in text and half_run.checkpoint_path in text


def test_resume_names_every_difference(data, half_run):
    with pytest.raises(CheckpointError) as err:
        train(MiniModel(CFG), data, replace(half_run, steps=30, lr=1e-3, seed=4), resume=True)
    assert all(f"{name}: " in str(err.value) for name in ("steps", "lr", "seed"))


def test_resume_allows_display_and_saving_settings_to_change(data, half_run, straight, tmp_path):
    moved = tmp_path / "moved" / "copy.pt"
    moved.parent.mkdir()
    shutil.copy(half_run.checkpoint_path, moved)
    cfg = replace(half_run, checkpoint_path=str(moved), checkpoint_every=3, progress=False)
    model = MiniModel(CFG)
    assert_same_run(train(model, data, cfg, resume=True), model, straight)
    longer_evals = replace(half_run, eval_every=4)
    history = train(MiniModel(CFG), data, longer_evals, resume=True)
    assert history["loss"] == straight[0]["loss"]  # evaluating more often does not touch training


def test_resume_into_another_model_config_is_refused(data, half_run):
    with pytest.raises(CheckpointError, match=r"another config .* dim: 32 -> 48"):
        train(MiniModel(replace(CFG, dim=48)), data, half_run, resume=True)


def test_resume_from_a_checkpoint_train_did_not_write(data, tmp_path):
    path = tmp_path / "bare.pt"
    save_atomic({"model": fresh_model().state_dict(), "config": CFG.to_dict()}, path)
    with pytest.raises(CheckpointError, match="train_config: not saved"):
        train(MiniModel(CFG), data, TrainConfig(**SMALL, checkpoint_path=str(path)), resume=True)


# --- an unwritable checkpoint path is found before the first step --------------------------------------------


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_unwritable_checkpoint_path_fails_before_training(data, tmp_path, where):
    (tmp_path / "file.txt").write_text("not a folder")
    path = tmp_path / "file.txt" / "run.pt" if where == "under_a_file" else tmp_path
    steps = []
    with pytest.raises(CheckpointError, match="checkpoint") as err:
        train(fresh_model(), data, TrainConfig(**SMALL, checkpoint_path=str(path)),
              callback=lambda step, history: steps.append(step))
    assert steps == [] and str(path) in str(err.value)
    assert "--out" in str(err.value) or "file path" in str(err.value)  # says what to change


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_fails_before_training(data, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="cannot write a checkpoint"):
            train(fresh_model(), data, TrainConfig(**SMALL, checkpoint_path=str(folder / "run.pt")))
    finally:
        folder.chmod(0o700)


# --- plot=True leaves a finished figure ---------------------------------------------------------------------


def test_live_plot_is_finished_with_the_final_history(data, monkeypatch):
    seen = {}

    class FakeLive:
        def __init__(self, history):
            seen["updates"] = 0

        def update(self, history):
            seen["updates"] += 1

        def finish(self, history):
            seen["finished"] = list(history["loss"])

    monkeypatch.setattr(minimodels.viz, "LiveLossPlot", FakeLive)
    history = train(fresh_model(), data, TrainConfig(**{**SMALL, "steps": 4}), plot=True)
    assert seen == {"updates": 4, "finished": history["loss"]}

    class OldLive(FakeLive):
        finish = None  # a plot object without finish() still works

    del OldLive.finish
    monkeypatch.setattr(minimodels.viz, "LiveLossPlot", OldLive)
    train(fresh_model(), data, TrainConfig(**{**SMALL, "steps": 2}), plot=True)


# --- baseline_model: a corrupt saved baseline is noticed and trained again -----------------------------------


@pytest.fixture
def tiny_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(tmp_path / "cache"))
    smoke = PROFILES["smoke"]
    return Profile(name="tiny", model=CFG, steps=6, batch_size=4, seq_len=16, eval_every=3, eval_batches=2,
                   lr=3e-3, warmup_steps=2, decode_tokens=smoke.decode_tokens)


def test_baseline_model_retrains_a_corrupt_checkpoint(data, tiny_profile, capsys):
    fake = SimpleNamespace(train=data.train, val=data.val, tokenizer=SimpleNamespace(vocab_size=40),
                           manifest={"tokenizer": {"sha256": "test"}})
    _, first = baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    path = baseline_path(tiny_profile, fake)
    _, loaded = baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    assert loaded["loss"] == first["loss"] and "cannot be used" not in capsys.readouterr().err

    raw = bytearray(path.read_bytes())
    weight = load_checkpoint(path)["model"]["head.weight"]
    at = bytes(raw).find(weight.numpy().tobytes()[:64])
    assert at > 0
    raw[at + 5] ^= 0x10  # one flipped bit inside the output head's weights
    path.write_bytes(bytes(raw))
    model, again = baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "cannot be used" in err and "corrupt" in err and str(path) in err
    assert again["loss"] == first["loss"]  # trained again, same seed, same curve
    load_checkpoint(path)  # and saved again, intact

    path.write_text("")  # an empty file: also trained again
    baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    assert "is empty" in capsys.readouterr().err


def test_baseline_model_resumes_an_interrupted_baseline(data, tiny_profile, capsys):
    fake = SimpleNamespace(train=data.train, val=data.val, tokenizer=SimpleNamespace(vocab_size=40),
                           manifest={"tokenizer": {"sha256": "test"}})
    _, first = baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    path = baseline_path(tiny_profile, fake)
    cfg = TrainConfig.from_profile(tiny_profile, checkpoint_path=str(path), progress=False)
    with pytest.raises(TrainingInterrupted):
        train(fresh_model(), fake, cfg, callback=interrupt_at(2))
    _, resumed = baseline_model(tiny_profile, data=fake, device="cpu", progress=False)
    assert "resuming the interrupted baseline at step 3" in capsys.readouterr().err
    assert resumed["loss"] == first["loss"]


# --- MoE models: balance losses, the router bias and routing statistics (minimodels/balance.py) ---

MOE_CFG = replace(CFG, n_layers=3, ffn="moe", n_dense_layers=1, n_routed_experts=8, n_activated_experts=2,
                  moe_inter_dim=16, score_func="sigmoid", route_scale=2.5)
MOE_RUN = dict(steps=6, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, progress=False)


def moe_model(**fields):
    torch.manual_seed(0)
    return MiniModel(replace(MOE_CFG, **fields))


def test_moe_training_records_balance_loss_and_routing_per_layer(data):
    model = moe_model(aux_loss_alpha=0.01, bias_update_speed=0.001)
    history = train(model, data, TrainConfig(**MOE_RUN))
    steps, tokens = MOE_RUN["steps"], MOE_RUN["batch_size"] * MOE_RUN["seq_len"]
    assert history["moe_layers"] == [1, 2]
    assert len(history["balance_loss"]) == steps and all(b > 0 for b in history["balance_loss"])
    loads = np.array(history["expert_load"])  # (steps, MoE layers, experts)
    assert loads.shape == (steps, 2, 8) and (loads.sum(-1) == tokens * 2).all()  # every token's k = 2 choices
    want_vio = loads.max(-1) / loads.mean(-1) - 1
    np.testing.assert_allclose(history["max_vio"], want_vio, rtol=1e-6)
    assert history["dead_experts"] == (loads == 0).sum(-1).tolist()
    assert np.array(history["router_entropy"]).shape == (steps, 2)
    assert all(0 <= h <= math.log(8) + 1e-6 for row in history["load_entropy"] for h in row)
    # the bias moved, outside autograd, and the history holds its last value
    bias = [model.layers[i].ffn.gate.bias.tolist() for i in (1, 2)]
    assert history["router_bias"][-1] == bias and any(b != 0 for row in bias for b in row)


def test_moe_loss_history_is_the_lm_loss_and_the_balance_loss_changes_training(data):
    with_aux = train(moe_model(aux_loss_alpha=0.1), data, TrainConfig(**MOE_RUN))
    without = train(moe_model(), data, TrainConfig(**MOE_RUN))
    assert with_aux["loss"][0] == without["loss"][0]  # same weights and batch: "loss" holds no balance loss
    assert with_aux["loss"][1:] != without["loss"][1:]  # its gradient did change the weights
    assert without["balance_loss"] == [0.0] * MOE_RUN["steps"] and "router_bias" not in without


def test_dense_training_history_has_no_routing_keys(straight):
    history, _ = straight
    assert not {"balance_loss", "expert_load", "max_vio", "moe_layers"} & set(history)


def test_interrupted_moe_run_resumes_with_its_router_bias(data, tmp_path):
    fields = dict(aux_loss_alpha=0.01, bias_update_speed=0.01)
    want = moe_model(**fields)
    want_history = train(want, data, TrainConfig(**MOE_RUN))
    cfg = TrainConfig(**MOE_RUN, checkpoint_path=str(tmp_path / "moe.pt"))
    with pytest.raises(TrainingInterrupted):
        train(moe_model(**fields), data, cfg, callback=interrupt_at(2))
    model = MiniModel(replace(MOE_CFG, **fields))
    history = train(model, data, cfg, resume=True)
    assert history["loss"] == want_history["loss"] and history["expert_load"] == want_history["expert_load"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, want.state_dict()[name]), name
