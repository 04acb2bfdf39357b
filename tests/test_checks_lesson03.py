"""Tests of minimodels/checks/lesson03.py: GQA head sharing and GQA cache bytes pass right answers written several
ways, name the classic mistakes (h % G pairing, `.repeat`, only keys or only values grouped, the scale, the mask
when T < S), and report stubs. The learner code is in tests/wrong_answers_lesson03.py; the engine's own rules
run over these exercises in tests/test_checks_engine.py.
"""

import pytest
import torch

from minimodels import KVCache, checks, grouped_causal_attention
from minimodels.checks.lesson03 import grouped, interleaved
from minimodels.config import TINY


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(checks.MODE_ENV, raising=False)


def test_cases_include_mqa_mha_and_a_cache():
    """G = 1 and G = H (where h % G pairing is right by accident), 1 < G < H (where it is not), and T < S."""
    pairs = {(c.args[0].shape[2], c.args[1].shape[2]) for c in checks.GROUPED_ATTENTION.cases}
    assert any(g == 1 for _, g in pairs) and any(h == g for h, g in pairs) and any(1 < g < h for h, g in pairs)
    assert any(c.args[0].shape[1] < c.args[1].shape[1] for c in checks.GROUPED_ATTENTION.cases)
    assert any(c.args[2].shape[-1] != c.args[0].shape[-1] for c in checks.GROUPED_ATTENTION.cases)


def test_the_reference_is_the_package_grouped_attention():
    """Where the package function applies (V = K), the checker's reference equals grouped_causal_attention."""
    checked = 0
    for case in checks.GROUPED_ATTENTION.cases:
        q, k, v = case.args
        if v.shape[-1] == q.shape[-1]:
            torch.testing.assert_close(checks.GROUPED_ATTENTION.reference(q, k, v), grouped_causal_attention(q, k, v))
            checked += 1
    assert checked >= 5


def test_grouped_pairs_consecutive_heads_and_interleaved_does_not():
    x = torch.arange(2.0).view(1, 1, 2, 1)  # KV heads 0 and 1
    assert grouped(x, 4).flatten().tolist() == [0, 0, 1, 1]
    assert interleaved(x, 4).flatten().tolist() == [0, 1, 0, 1]


def test_cache_bytes_equal_the_cache_tensors():
    from dataclasses import replace

    for g in (1, 2, TINY.n_heads):
        cfg = replace(TINY, attn="gqa", n_kv_heads=g)
        measured = KVCache(cfg, batch_size=1, max_len=3).bytes_per_token
        assert checks.GQA_BYTES.reference(cfg.n_layers, cfg.n_heads, g, cfg.head_dim, 4) == measured
