import pytest
import torch

from minimodels.profiles import PROFILES, get_profile, pick_device


def test_env_var_overrides_the_profile(monkeypatch):
    monkeypatch.setenv("MINIMODELS_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    assert get_profile("gpu").name == "gpu"
    monkeypatch.setenv("MINIMODELS_PROFILE", "laptop")
    with pytest.raises(ValueError, match="smoke"):
        get_profile()


def test_default_profile_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("MINIMODELS_PROFILE", raising=False)
    monkeypatch.delenv("MINIMODELS_DEVICE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert get_profile().name == expected


def test_device_order_and_override(monkeypatch):
    monkeypatch.delenv("MINIMODELS_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device().type == "cpu"
    monkeypatch.setenv("MINIMODELS_DEVICE", "meta")
    assert pick_device().type == "meta"


def test_profiles_grow_and_fit_their_context():
    smoke, cpu, gpu = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    assert smoke.model.dim < cpu.model.dim < gpu.model.dim
    assert smoke.steps < cpu.steps < gpu.steps
    for p in PROFILES.values():
        assert p.seq_len <= p.model.max_seq_len
        assert p.warmup_steps < p.steps
