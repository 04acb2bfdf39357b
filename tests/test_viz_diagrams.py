"""Tests for minimodels/viz/diagrams.py: the attention diagram follows the config it is drawn from.

The figure is inspected as a Python object (shapes named after the boxes, annotation texts), without a browser.
"""

import math
from dataclasses import replace

import pytest
import torch

from minimodels.config import TINY
from minimodels.kv_cache import KVCache, cache_spec
from minimodels.viz import HIGHLIGHT, attention_diagram, cache_caption, diagram_boxes, variant_configs
from minimodels.viz.diagrams import CACHE_PREFIX, COLORS


def cached_shapes(fig):
    return [s for s in fig.layout.shapes if s.name.startswith(CACHE_PREFIX)]


def texts(fig, name):
    return [a.text for a in fig.layout.annotations if a.name == name]


@pytest.mark.parametrize("cfg", [
    TINY,
    replace(TINY, attn="gqa", n_kv_heads=2),
    replace(TINY, attn="gqa", n_kv_heads=1),
    replace(TINY, attn="mla"),
    replace(TINY, attn="mla", q_lora_rank=24, kv_lora_rank=64, qk_rope_head_dim=8),
    replace(TINY, attn="mla_lowrank"),
], ids=["mha", "gqa2", "mqa", "mla", "mla-q-latent", "mla-lowrank"])
def test_the_red_boxes_are_the_cache_spec_with_its_sizes(cfg):
    fig = attention_diagram(cfg)
    spec = cache_spec(cfg)
    cached = cached_shapes(fig)
    assert sorted(s.name.removeprefix(CACHE_PREFIX) for s in cached) == sorted(spec)
    assert all(s.fillcolor == HIGHLIGHT for s in cached)
    assert not [s for s in fig.layout.shapes if s.fillcolor == HIGHLIGHT and s not in cached]
    for name, shape in spec.items():
        (label,) = texts(fig, CACHE_PREFIX + name)
        assert "×".join(map(str, shape)) in label, label
    per_layer = sum(math.prod(s) for s in spec.values())
    (caption,) = texts(fig, "caption")
    assert f"{per_layer} numbers" in caption


def test_the_caption_bytes_equal_the_allocated_cache():
    for cfg in variant_configs(TINY).values():
        measured = KVCache(cfg, batch_size=1, max_len=1).bytes_per_token  # fp32, read from the tensors
        assert f"= <b>{measured} B</b>" in cache_caption(cfg) or f"{measured / 1024:.1f} KiB" in cache_caption(cfg)
    assert "2 B (bfloat16)" in cache_caption(TINY, torch.bfloat16)


def test_projection_widths_follow_the_config():
    cfg = replace(TINY, attn="mla", kv_lora_rank=40, qk_rope_head_dim=12, qk_nope_head_dim=24, v_head_dim=20)
    fig = attention_diagram(cfg)
    assert "128→C+R = 40+12" in texts(fig, "wkv_a")[0]
    assert "40→4·(24+20)" in texts(fig, "wkv_b")[0]
    assert "/ √36" in texts(fig, "attn")[0] and "RoPE(q_pe)" in texts(fig, "attn")[0]  # scale 1/sqrt(K + R)
    gqa = attention_diagram(replace(TINY, attn="gqa", n_kv_heads=2))
    assert "128→64" in texts(gqa, "wk")[0] and "×2" in texts(gqa, "repeat")[0]
    assert not texts(attention_diagram(TINY), "repeat")  # MHA repeats nothing


def test_query_compression_adds_its_boxes_and_leaves_the_cache_alone():
    plain, compressed = replace(TINY, attn="mla"), replace(TINY, attn="mla", q_lora_rank=24)
    names = {s.name for s in attention_diagram(compressed).layout.shapes}
    assert {"wq_a", "q_norm", "wq_b"} <= names and "wq" not in names
    assert {"wq"} <= {s.name for s in attention_diagram(plain).layout.shapes}
    assert cache_caption(plain) == cache_caption(compressed)


def test_every_arrow_joins_two_boxes_and_points_up():
    for cfg in [*variant_configs(TINY).values(), replace(TINY, attn="mla_lowrank", q_lora_rank=16)]:
        boxes, edges = diagram_boxes(cfg)
        rows = {b.key: b.row for b in boxes}
        assert all(rows[a] < rows[b] for a, b in edges), cfg.attn
        fig = attention_diagram(cfg)
        arrows = [a for a in fig.layout.annotations if a.showarrow]
        assert len(arrows) == len(edges) and all(a.ay < a.y for a in arrows)
        assert {b.kind for b in boxes} <= set(COLORS)


def test_side_by_side_columns_and_errors():
    trio = variant_configs(TINY, n_kv_heads=1)
    fig = attention_diagram(trio)
    assert texts(fig, "title") == [f"<b>{name}</b>" for name in trio]
    assert len(texts(fig, "caption")) == 3 and len(cached_shapes(fig)) == 2 + 2 + 2
    assert list(trio) == ["MHA", "MQA (1 KV head)", "MLA"]
    with pytest.raises(ValueError, match="at least one"):
        attention_diagram({})
