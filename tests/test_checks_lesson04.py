"""Tests of minimodels/checks/lesson04.py: the MLA latent path and MLA cache bytes per token.

Right and wrong answers live in tests/wrong_answers_lesson04.py (plain torch, written from scratch). The engine's
own rules (every size varies, every mistake can be named) run over these exercises in tests/test_checks_engine.py.
"""

import pytest
import torch
import wrong_answers_lesson04 as wa4

from minimodels import checks
from minimodels.checks import EXERCISES, LATENT, MLA_BYTES, QUERIES
from minimodels.config import TINY, replace
from minimodels.mla import MultiHeadLatentAttention
from minimodels.rope import apply_rope, rope_frequencies


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


@pytest.mark.parametrize("name, fn, words", [n[:3] for n in wa4.UNNAMED], ids=[n[3] for n in wa4.UNNAMED])
def test_other_wrong_answers_fail_with_what_differs(name, fn, words):
    result = getattr(checks, name)(fn)
    assert result.status == "failed" and words in result.message, result.message


def test_every_exercise_is_registered_for_the_engine_tests():
    assert EXERCISES["check_mla_latent"] is LATENT and EXERCISES["check_mla_cache_bytes"] is MLA_BYTES
    assert EXERCISES["check_mla_queries"] is QUERIES


def test_the_references_agree_with_the_package_module():
    """The latent and query references compute what MultiHeadLatentAttention computes (before rotating)."""
    cfg = replace(TINY, attn="mla", q_lora_rank=24, v_head_dim=20)
    torch.manual_seed(0)
    layer = MultiHeadLatentAttention(cfg)
    with torch.no_grad():
        layer.kv_norm.weight.uniform_(0.5, 1.5)
        layer.q_norm.weight.uniform_(0.5, 1.5)
        x, freqs = torch.randn(2, 5, cfg.dim), rope_frequencies(cfg.qk_rope_head_dim, 5)
        c_kv, k_pe, k_nope, v = LATENT.reference(x, layer.wkv_a.weight, layer.kv_norm.weight, layer.wkv_b.weight,
                                                 cfg.n_heads, cfg.qk_nope_head_dim, cfg.norm_eps)
        want_c, want_pe = layer.latent(x, freqs)
        assert torch.allclose(c_kv, want_c, atol=1e-6)
        assert torch.allclose(apply_rope(k_pe[:, :, None], freqs)[:, :, 0], want_pe, atol=1e-6)
        kv = layer.wkv_b(want_c).view(2, 5, cfg.n_heads, -1)
        assert torch.allclose(torch.cat([k_nope, v], -1), kv, atol=1e-6) and v.shape[-1] == 20
        q_nope, q_pe = QUERIES.reference(x, layer.wq_a.weight, layer.q_norm.weight, layer.wq_b.weight, cfg.n_heads,
                                         cfg.qk_nope_head_dim, cfg.norm_eps)
        want_nope, want_q_pe = layer.queries(x, freqs)
        assert torch.allclose(q_nope, want_nope, atol=1e-6)
        assert torch.allclose(apply_rope(q_pe, freqs), want_q_pe, atol=1e-6)


def test_the_latent_cases_can_tell_the_mistakes_apart():
    """Several heads with K != V (global split, keys first), a trained gain, large eps (eps ignored), R > 0."""
    cases = LATENT.cases
    assert any(c.args[4] > 1 and c.args[5] != c.args[3].shape[0] // c.args[4] - c.args[5] for c in cases)
    assert any(not torch.allclose(c.args[2], torch.ones_like(c.args[2])) for c in cases)
    assert any(isinstance(c.args[-1], float) and c.args[-1] > 0.1 for c in cases if len(c.args) == 7)
    assert all(c.args[1].shape[0] > c.args[2].shape[0] for c in cases)  # every case has a rope part


def test_the_byte_cases_include_deepseek_v2_and_the_low_rank_variant():
    cfgs = [c.args[0] for c in MLA_BYTES.cases]
    assert any(c.n_layers == 60 and c.kv_lora_rank == 512 and c.qk_rope_head_dim == 64 for c in cfgs)
    assert {c.attn for c in cfgs} == {"mla", "mla_lowrank"}
    v2 = next(c for c in MLA_BYTES.cases if c.args[0].n_layers == 60)
    assert MLA_BYTES.reference(*v2.args) == 60 * 576 * 2  # REFERENCE.md §2.6: 34,560 elements, bf16


def test_solution_and_exercise_modes(monkeypatch):
    monkeypatch.setenv(checks.MODE_ENV, "solution")
    assert checks.check_mla_latent(wa4.latent).passed
    with pytest.raises(AssertionError, match="solution check failed"):
        checks.check_mla_cache_bytes(wa4.mla_bytes_expanded)
    monkeypatch.setenv(checks.MODE_ENV, "exercise")
    with pytest.raises(AssertionError, match="leaked"):
        checks.check_mla_cache_bytes(wa4.mla_bytes)
