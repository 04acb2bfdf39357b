import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimodels.config import ATTN_KINDS, FFN_KINDS, TINY, ModelConfig, replace, to_hf_config
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
    (dict(norm_eps=float("nan")), "must be positive"),
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


def test_hf_names():
    hf = to_hf_config(TINY)
    assert hf["hidden_size"] == TINY.dim and hf["num_attention_heads"] == TINY.n_heads
    assert hf["intermediate_size"] == TINY.inter_dim


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
