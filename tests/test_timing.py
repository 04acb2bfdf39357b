"""Tests for minimodels/timing.py: the training-time estimate leaves the real run alone and says how to speed up."""

from types import SimpleNamespace

import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.model import MiniModel
from minimodels.timing import (
    SMOKE_ADVICE,
    TrainingEstimate,
    announce_training_time,
    count_evaluations,
    estimate_training_time,
    format_duration,
    measure_memory_bandwidth,
    training_time_message,
)
from minimodels.train import TrainConfig

CFG = ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, inter_dim=64, max_seq_len=32)


def tiny_data() -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(train=torch.randint(0, 64, (2000,), generator=g),
                           val=torch.randint(0, 64, (500,), generator=g))


def test_format_duration():
    assert format_duration(4.25) == "4.2 s" and format_duration(42) == "42 s"
    assert format_duration(95) == "1 min 35 s" and format_duration(4000) == "1 h 6 min"
    with pytest.raises(ValueError):
        format_duration(-1)


def test_count_evaluations_matches_train_schedule():
    assert count_evaluations(TrainConfig(steps=600, eval_every=100)) == 6  # the last step is one of them
    assert count_evaluations(TrainConfig(steps=30, eval_every=7)) == 5  # steps 6, 13, 20, 27 and 29
    assert count_evaluations(TrainConfig(steps=30, eval_every=0)) == 1


def test_estimate_leaves_model_and_random_state_untouched():
    torch.manual_seed(0)
    model = MiniModel(CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cfg = TrainConfig(steps=100, batch_size=2, seq_len=16, eval_every=50, eval_batches=3, progress=False)
    est = estimate_training_time(model, tiny_data(), cfg, measure_steps=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert est.seconds_per_step > 0 and est.seconds_per_eval_batch > 0
    assert est.total_s == pytest.approx(100 * est.seconds_per_step + 2 * 3 * est.seconds_per_eval_batch)
    with pytest.raises(ValueError, match="measure_steps"):
        estimate_training_time(model, tiny_data(), cfg, measure_steps=0)


def test_message_says_how_to_switch_to_smoke_only_when_long(capsys):
    slow = TrainingEstimate(seconds_per_step=2.0, seconds_per_eval_batch=0.5, steps=600, evaluations=6,
                            eval_batches=8)
    text = training_time_message(slow, "cpu")
    assert "about 20 min 24 s" in text and "cpu profile" in text and SMOKE_ADVICE in text
    assert 'setup(seed=0, profile="smoke")' in text and "MINIMODELS_PROFILE=smoke" in text
    fast = TrainingEstimate(seconds_per_step=0.01, seconds_per_eval_batch=0.01, steps=30, evaluations=3,
                            eval_batches=2)
    assert SMOKE_ADVICE not in training_time_message(fast, "cpu")
    assert SMOKE_ADVICE not in training_time_message(slow, "smoke")  # already the smallest profile
    cfg = TrainConfig(steps=5, batch_size=2, seq_len=16, eval_every=0, eval_batches=1, progress=False)
    est = announce_training_time(MiniModel(CFG), tiny_data(), cfg, "smoke", measure_steps=1)
    assert "expected training time" in capsys.readouterr().out and est.steps == 5


def test_memory_bandwidth_is_measured():
    bw = measure_memory_bandwidth(4 * 2**20, repeats=2)
    assert 1e8 < bw < 1e13  # bytes per second: between a very slow and an impossibly fast machine
    with pytest.raises(ValueError, match="1 MiB"):
        measure_memory_bandwidth(1000)
