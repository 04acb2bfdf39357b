"""Properties over random configs (hypothesis): every valid config builds a model that behaves, every invalid one
is refused with a ValueError that names the field to change (issue 6, "Nothing wrong in silence")."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimodels.config import ATTN_KINDS, FFN_KINDS, MAX_PARAMETERS, TINY, ModelConfig, baseline_parameters, replace
from minimodels.generate import generate
from minimodels.kv_cache import KVCache
from minimodels.model import MiniModel, count_parameters

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def valid_configs(draw) -> ModelConfig:
    """Small baseline configs (MHA, dense FFN) anywhere in the valid range of every field, including its edges.
    Each later variant adds its own strategy and closed-form count beside these."""
    n_heads = draw(st.integers(1, 4))
    return ModelConfig(
        vocab_size=draw(st.integers(1, 64)),
        dim=n_heads * 2 * draw(st.integers(1, 8)),  # an even head width of 2..16
        n_layers=draw(st.integers(1, 3)),
        n_heads=n_heads,
        inter_dim=draw(st.integers(1, 48)),
        max_seq_len=draw(st.integers(1, 16)),
        attn="mha",
        ffn="dense",
        rope_theta=draw(st.floats(1.01, 1e6)),
        norm_eps=draw(st.floats(1e-8, 0.5)),
        init_std=draw(st.floats(1e-3, 1.0)),
    )


def closed_form_parameters(cfg: ModelConfig) -> int:
    """Counted by hand for the baseline (MHA + dense SwiGLU): embedding and untied head V·D each; per layer four
    D×D attention projections, three SwiGLU matrices between D and F, two RMSNorm gains; the final RMSNorm."""
    d, v, f = cfg.dim, cfg.vocab_size, cfg.inter_dim
    return v * d + d * v + cfg.n_layers * (4 * d * d + 3 * d * f + 2 * d) + d


@SETTINGS
@given(cfg=valid_configs(), data=st.data())
def test_valid_configs_build_models_that_behave(cfg, data):
    torch.manual_seed(0)
    model = MiniModel(cfg)
    assert count_parameters(model) == closed_form_parameters(cfg) == baseline_parameters(cfg)
    b, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, cfg.max_seq_len))
    tokens = torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(t))
    with torch.no_grad():
        full = model(tokens)
        assert full.shape == (b, t, cfg.vocab_size) and torch.isfinite(full).all()
        # cached == uncached: the same positions fed through a cache in random chunks give the same logits
        cuts = sorted(set(data.draw(st.lists(st.integers(1, t), max_size=4))) | {t})
        cache, start, steps = KVCache(cfg, b, t), 0, []
        for end in cuts:
            steps.append(model(tokens[:, start:end], start_pos=start, cache=cache))
            start = end
    scale = 1e-5 * (1 + full.abs().max().item())
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=scale, rtol=1e-4)


@SETTINGS
@given(cfg=valid_configs(), data=st.data())
def test_cached_generation_picks_what_the_uncached_model_would(cfg, data):
    """Greedy decoding with the cache: each new token is (within rounding) the argmax of a full forward pass.
    Checked this way, not by equality with uncached generate(), so that near-ties of a random model cannot flake."""
    torch.manual_seed(1)
    model = MiniModel(cfg)
    t0 = data.draw(st.integers(1, cfg.max_seq_len))
    n_new = data.draw(st.integers(0, cfg.max_seq_len - t0))
    prompt = torch.randint(0, cfg.vocab_size, (2, t0), generator=torch.Generator().manual_seed(t0))
    out = generate(model, prompt, n_new)
    assert out.shape == (2, t0 + n_new) and torch.equal(out[:, :t0], prompt)
    if n_new == 0:
        return
    with torch.no_grad():
        logits = model(out)[:, t0 - 1:-1]  # (2, n_new, V): the logits each new token was chosen from
    chosen = logits.gather(-1, out[:, t0:, None])[..., 0]  # (2, n_new)
    assert (logits.max(-1).values - chosen).max() <= 1e-4 * (1 + logits.abs().max())


# --- invalid configs: one field made wrong at a time -------------------------------------------------------

INT_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "inter_dim", "max_seq_len")
FLOAT_FIELDS = ("rope_theta", "norm_eps", "init_std")
WRONG_TYPE = st.sampled_from(["8", None, True, [8]])

BAD_VALUES = {
    **{name: st.one_of(st.integers(-10**6, 0), st.floats(0.5, 64.0), WRONG_TYPE) for name in INT_FIELDS},
    **{name: st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x)),
                       st.integers(10**309, 10**400), st.floats(-1e9, 0.0), WRONG_TYPE) for name in FLOAT_FIELDS},
    "attn": st.text(max_size=6).filter(lambda s: s not in ATTN_KINDS),
    "ffn": st.text(max_size=6).filter(lambda s: s not in FFN_KINDS),
}
OUT_OF_RANGE = {  # right type, wrong size: each named limit of config.py
    "rope_theta": st.floats(0.0, 1.0, exclude_min=True),
    "norm_eps": st.floats(1.0, 1e30),
    "init_std": st.floats(1.0, 1e30, exclude_min=True),
    "vocab_size": st.integers(MAX_PARAMETERS // (2 * TINY.dim) + 1, 10**30),
    "inter_dim": st.integers(MAX_PARAMETERS // (3 * TINY.dim * TINY.n_layers) + 1, 10**30),
    "n_layers": st.integers(MAX_PARAMETERS // (4 * TINY.dim**2) + 1, 10**30),
    "max_seq_len": st.integers(2**24 // (TINY.head_dim // 2) + 1, 10**30),
}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_one_wrong_field_is_refused_with_its_name(data):
    table = data.draw(st.sampled_from([BAD_VALUES, OUT_OF_RANGE]))
    name = data.draw(st.sampled_from(sorted(table)))
    value = data.draw(table[name])
    with pytest.raises(ValueError, match=rf"\b{name}="):
        replace(TINY, **{name: value})


@SETTINGS
@given(n_heads=st.integers(1, 12), dim=st.integers(1, 96))
def test_head_splits_that_do_not_work_name_dim_and_n_heads(n_heads, dim):
    """dim must split into n_heads heads of an even width; otherwise the error names both fields."""
    if dim % n_heads == 0 and (dim // n_heads) % 2 == 0:
        assert replace(TINY, dim=dim, n_heads=n_heads).head_dim == dim // n_heads
        return
    with pytest.raises(ValueError, match=r"dim.*n_heads"):
        replace(TINY, dim=dim, n_heads=n_heads)
