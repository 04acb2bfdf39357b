"""Tests of minimodels/checks/lesson05.py: decoupled RoPE and absorbed scores pass right answers written several
ways, name the classic mistakes of REFERENCE.md §6, and report stubs. The learner code is in
tests/wrong_answers_lesson05.py; the engine's own rules run over these exercises in tests/test_checks_engine.py.
"""

from dataclasses import replace

import pytest
import torch

from minimodels import MultiHeadLatentAttention, checks
from minimodels.config import TINY
from minimodels.rope import rope_frequencies


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def test_the_reference_is_what_the_package_module_computes():
    """The checker's reference equals MultiHeadLatentAttention's own queries and latent, so the exercise teaches
    the package's layout (per head [nope; rope], [c_kv; k_pe], adjacent pairs, absolute positions)."""
    torch.manual_seed(0)
    cfg = replace(TINY, attn="mla", dim=16, n_heads=2, kv_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=4,
                  v_head_dim=4)
    mla = MultiHeadLatentAttention(cfg)
    with torch.no_grad():
        mla.kv_norm.weight.uniform_(0.5, 1.5)
    x, start = torch.randn(2, 3, 16), 5
    freqs = rope_frequencies(4, 16)[start:start + 3]
    want_q, want_kv = mla.queries(x, freqs), mla.latent(x, freqs)
    got = checks.DECOUPLED_ROPE.reference(x, mla.wq.weight, mla.wkv_a.weight, mla.kv_norm.weight, 2, start)
    for g, w in zip(got, (*want_q, *want_kv)):
        assert torch.allclose(g, w, atol=1e-6)
    scores = checks.ABSORBED_SCORES.reference(*got, mla.wkv_b.weight)
    assert scores.shape == (2, 2, 3, 3)
