import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minimodels
from minimodels.config import (
    ATTN_KINDS,
    FFN_KINDS,
    MAX_PARAMETERS,
    MAX_ROPE_ROTATIONS,
    TINY,
    ModelConfig,
    baseline_parameters,
    replace,
)
from minimodels.model import ATTENTION, FEED_FORWARD, MiniModel


def test_registries_match_config_names():
    assert tuple(ATTENTION) == ATTN_KINDS
    assert tuple(FEED_FORWARD) == FFN_KINDS


@pytest.mark.parametrize("change, words", [
    (dict(dim=130, n_heads=4), "divisible by n_heads"),
    (dict(dim=0), "must be positive"),
    (dict(n_layers=-1), "must be positive"),
    (dict(attn="gqa_typo"), "attention variant"),
    (dict(ffn="sparse"), "feed-forward variant"),
    (dict(dim=12, n_heads=4), "must be even"),
    (dict(vocab_size=3.5), "must be an int"),
    (dict(norm_eps=float("nan")), "norm_eps=nan must be a finite number"),
    (dict(norm_eps=-1e-6), "norm_eps=-1e-06 must be positive"),
    (dict(norm_eps=1.0), "norm_eps=1.0 must be < 1"),
    (dict(init_std=2.0), "init_std=2.0 must be <= 1"),
    (dict(rope_theta=1.0), "rope_theta=1.0 must be > 1"),
    (dict(rope_theta=0.5), "rope_theta=0.5 must be > 1"),
])
def test_invalid_configs_say_what_to_change(change, words):
    with pytest.raises(ValueError, match=words):
        replace(TINY, **change)


def test_config_is_frozen_and_json_round_trips(tmp_path):
    with pytest.raises(AttributeError):
        TINY.dim = 3
    TINY.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == TINY
    with pytest.raises(ValueError, match="unknown config fields"):
        ModelConfig.from_dict({**json.loads((tmp_path / "c.json").read_text()), "hiden": 3})


FLOAT_FIELDS = [f.name for f in ModelConfig.__dataclass_fields__.values() if f.type == "float"]


def test_every_float_field_is_checked():
    # a new float field needs the cases below
    assert set(FLOAT_FIELDS) == {"rope_theta", "norm_eps", "init_std", "route_scale", "aux_loss_alpha",
                                 "device_loss_alpha", "comm_loss_alpha", "bias_update_speed"}


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused_with_the_field_named(name, value):
    with pytest.raises(ValueError, match=rf"^{name}={value!r} must be a finite number"):
        replace(TINY, **{name: value})


@pytest.mark.parametrize("change, field", [
    (dict(vocab_size=2**31), "vocab_size"),  # 2 · 2**31 · 128 parameters in the embedding and head alone
    (dict(dim=2**16, n_heads=2**10, inter_dim=2**16), "dim"),
    (dict(n_layers=2**20), "n_layers"),
    (dict(inter_dim=2**30), "inter_dim"),
])
def test_models_too_big_for_memory_are_refused_before_allocation(change, field):
    with pytest.raises(ValueError, match=rf"{field}={change[field]}.*over the limit of {MAX_PARAMETERS:,}"):
        replace(TINY, **change)


def test_rope_tables_too_big_for_memory_are_refused():
    too_long = MAX_ROPE_ROTATIONS // (TINY.head_dim // 2) + 1
    with pytest.raises(ValueError, match=rf"max_seq_len={too_long} positions .* over the limit"):
        replace(TINY, max_seq_len=too_long)
    replace(TINY, max_seq_len=too_long - 1)  # the limit itself is allowed: the check is not off by one


def test_size_limits_sit_far_above_every_profile():
    from minimodels.profiles import PROFILES

    for profile in PROFILES.values():
        cfg = profile.model
        assert baseline_parameters(cfg) * 100 < MAX_PARAMETERS
        assert cfg.max_seq_len * cfg.head_dim // 2 * 100 < MAX_ROPE_ROTATIONS
    edge = replace(TINY, vocab_size=1, dim=2, n_heads=1, n_layers=1, inter_dim=1)
    assert baseline_parameters(edge) == 2 * 2 + (4 * 4 + 3 * 2 + 2 * 2) + 2  # 32, counted by hand


def test_to_hf_config_is_gone():
    """Removed: it described a rotate_half Llama that our adjacent-pair RoPE weights do not match."""
    assert not hasattr(minimodels, "to_hf_config") and "to_hf_config" not in minimodels.__all__
    assert not hasattr(minimodels.config, "to_hf_config")


values = st.one_of(st.integers(-4, 48), st.sampled_from([0.5, 1e-6, -1.0, float("nan"), "x", None, True]))
kinds = st.one_of(st.sampled_from(ATTN_KINDS + FFN_KINDS), st.text(max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab_size=values, dim=values, n_layers=st.integers(-1, 3), n_heads=values, inter_dim=values,
       max_seq_len=values, attn=kinds, ffn=kinds, norm_eps=values)
def test_random_configs_build_or_raise_value_error(**kw):
    """Valid configs build a model that runs forward; invalid ones raise ValueError and nothing else."""
    try:
        cfg = ModelConfig(**kw)
    except ValueError:
        return
    model = MiniModel(cfg)
    t = min(3, cfg.max_seq_len)
    logits = model(torch.randint(0, cfg.vocab_size, (2, t)))
    assert logits.shape == (2, t, cfg.vocab_size)
    assert torch.isfinite(logits).all()


@settings(max_examples=40, deadline=None)
@given(n_heads=st.integers(1, 4), half_head=st.integers(1, 8), n_layers=st.integers(1, 3),
       vocab_size=st.integers(1, 50), inter_dim=st.integers(1, 40), max_seq_len=st.integers(1, 12))
def test_valid_configs_always_build_and_run(n_heads, half_head, **kw):
    cfg = ModelConfig(dim=n_heads * 2 * half_head, n_heads=n_heads, **kw)
    t = cfg.max_seq_len
    assert MiniModel(cfg)(torch.zeros(1, t, dtype=torch.long)).shape == (1, t, cfg.vocab_size)


def test_an_int_beyond_float_range_is_not_a_finite_number():
    with pytest.raises(ValueError, match="rope_theta=1000.* must be a finite number"):
        replace(TINY, rope_theta=10**400)  # math.isfinite would raise OverflowError, not ValueError
