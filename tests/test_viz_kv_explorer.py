"""Tests for minimodels/viz/kv_explorer.py: the KV-cache explorer's numbers, controls, and fallbacks."""

import random

import plotly.graph_objects as go
import pytest
import torch

from minimodels.config import TINY
from minimodels.kv_cache import DTYPES, KV_PRESETS, MLA_PRESETS, KVCache, kv_cache_report
from minimodels.profiles import PROFILES
from minimodels.viz import CUSTOM, HIGHLIGHT, common, kv_cache_explorer
from minimodels.viz import kv_explorer as kvx


def fake_display(log):
    def display(obj, **kwargs):
        log.append((obj, kwargs))
    return display


def test_presets_hold_every_published_model_and_variant():
    w = kv_cache_explorer()
    assert set(KV_PRESETS) | set(MLA_PRESETS) | {"DeepSeek-67B"} == set(w.presets)
    assert {kvx.variant_name(s) for s in w.presets.values()} == {"MHA", "GQA (8 KV heads)", "MLA"}
    assert "kv-explorer" in w._dom_classes
    assert "kvx-readout" in w.readout._dom_classes and "kvx-chart" in w.chart._dom_classes
    assert all("kvx-control" in c._dom_classes for c in w.controls.values())
    assert "kvx-preset" in w.controls["preset"]._dom_classes and "kvx-context" in w.controls["context"]._dom_classes


def test_default_is_llama2_7b_with_its_formula_and_fit():
    w = kv_cache_explorer()
    assert w.report["bytes_per_token"] == 524_288 and w.report["total_bytes"] == 2 * 2**30
    assert "2 × 32 × 32 × 128 × 2 = 524,288 bytes" in w.readout.value
    assert w.report["fits"] == 80 * 10**9 // (2 * 2**30) == 37
    assert "<b>37 sequences</b> of 4,096 tokens fit in 80 GB" in w.readout.value
    assert "100.0% of an MHA cache" in w.readout.value


@pytest.mark.parametrize("name, layers", [("DeepSeek-V2", 60), ("DeepSeek-V2-Lite", 27), ("DeepSeek-V3", 61)])
def test_mla_presets_cache_576_numbers_per_layer(name, layers):
    """V2 paper §2.1.3: c_kv (512) and k^R (64) per token and layer; bf16: 2 bytes each."""
    w = kv_cache_explorer()
    w.controls["preset"].value = name
    assert w.controls["family"].value == "mla" and w.controls["n_kv_heads"].disabled
    assert w.report["elements"] == 576 and w.report["bytes_per_token"] == layers * 576 * 2
    assert f"{layers} × (512 + 64) × 2" in w.readout.value
    heads = kvx.QUERY_HEADS[name]  # MLA's cache does not depend on the heads; the MHA comparison does
    assert w.report["mha_bytes_per_token"] == 2 * layers * heads * 128 * 2


def test_v2_is_2_25_gqa_groups_and_the_mha_share_of_the_paper():
    """V2 paper Table 1: MLA's 576 = 4.5 d_h, 'GQA with only 2.25 groups'; 576/(2·128·128) = 1.76 %."""
    w = kv_cache_explorer()
    w.controls["preset"].value = "DeepSeek-V2"
    assert w.report["elements"] == 2 * 2.25 * 128
    assert "1.8% of an MHA cache with the same 128 heads of 128" in w.readout.value


def test_shape_edits_make_it_custom_and_the_numbers_come_from_kv_cache_report():
    w = kv_cache_explorer()
    rng = random.Random(0)
    for _ in range(12):
        family = rng.choice(["kv", "mla"])
        heads = rng.choice([4, 8, 32])
        shape = dict(family=family, n_layers=rng.randint(1, 96), n_heads=heads,
                     n_kv_heads=heads if family == "mla" else rng.choice([1, 2, heads]),
                     head_dim=rng.choice([64, 128]), kv_lora_rank=rng.choice([128, 512]) if family == "mla" else 0,
                     qk_rope_head_dim=rng.choice([0, 64]) if family == "mla" else 0)
        run = dict(context=rng.randint(1, 2**17), batch=rng.randint(1, 64), dtype=rng.choice(list(DTYPES)),
                   memory_gb=rng.choice([16.0, 80.0]))
        for name, value in {**shape, **run}.items():
            w.controls[name].value = value
        if family == "mla":
            want = kv_cache_report(shape["n_layers"], kv_lora_rank=shape["kv_lora_rank"],
                                   qk_rope_head_dim=shape["qk_rope_head_dim"], **{k: run[k] for k in run
                                                                                  if k != "memory_gb"})
        else:
            want = kv_cache_report(shape["n_layers"], shape["n_kv_heads"], shape["head_dim"],
                                   **{k: run[k] for k in run if k != "memory_gb"})
        got = {k: w.report[k] for k in want}
        assert got == want, (shape, run)
        assert w.report["fits"] == int(run["memory_gb"] * 10**9 // (want["bytes_per_token"] * run["context"]))
        if w.presets.get(w.controls["preset"].value) != shape:
            assert w.controls["preset"].value == CUSTOM and CUSTOM in w.rows
    bar = w.figure.data[0]
    assert list(bar.y) == list(w.rows) and list(bar.x) == [r["bytes_per_token"] / 2**10 for r in w.rows.values()]
    assert bar.marker.color[list(bar.y).index(w.controls["preset"].value)] == HIGHLIGHT


def test_table_shows_every_preset_side_by_side_and_changes_with_the_context():
    w = kv_cache_explorer()
    for name in w.presets:
        assert f">{name}</td>" in w.table.value
    w.controls["context"].value = 32_768
    assert "1 × 32,768 tokens" in w.table.value and "16.00 GiB" in w.table.value  # Llama-2-7B at 32k
    assert w.rows["Llama-2-7B"]["fits"] == 80 * 10**9 // (16 * 2**30)


def test_gqa_needs_kv_heads_that_divide_the_query_heads():
    w = kv_cache_explorer()
    w.controls["n_kv_heads"].value = 5  # 32 query heads
    assert "cannot share 5 KV heads evenly" in w.readout.value and w.report == {}
    w.controls["n_kv_heads"].value = 1
    assert "<b>MQA</b>" in w.readout.value and w.report["bytes_per_token"] == 2 * 32 * 128 * 2


def test_mla_without_a_latent_is_said_not_sized():
    w = kv_cache_explorer()
    w.controls["family"].value = "mla"  # from Llama-2-7B: kv_lora_rank is still 0
    assert "kv_lora_rank &gt;= 1" in w.readout.value
    w.controls["kv_lora_rank"].value = 512
    assert w.report["bytes_per_token"] == 32 * 512 * 2


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_course_models_equal_their_measured_cache_tensors_for_every_variant(profile, dtype):
    """The explorer's formula == the bytes of allocated KVCache tensors, for every attention variant."""
    cfg = PROFILES[profile].model
    variants = kvx.course_variants(cfg)
    assert {c.attn for c in variants.values()} == {"mha", "gqa", "mla", "mla_lowrank"}
    w = kv_cache_explorer(cfg, measured_dtype=dtype)
    for name, vcfg in variants.items():
        w.controls["preset"].value = name
        w.controls["dtype"].value = dtype
        w.controls["context"].value = 7
        cache = KVCache(vcfg, batch_size=2, max_len=7, dtype=DTYPES[dtype])
        assert w.report["bytes_per_token"] == cache.bytes_per_token, name
        w.controls["batch"].value = 2
        assert w.report["total_bytes"] == cache.nbytes, name
        assert "✓ equals" in w.readout.value and "✗" not in w.readout.value
        w.controls["batch"].value = 1


def test_a_wrong_measurement_is_flagged():
    w = kvx.KVCacheExplorer(kvx.published_presets(), measured={"Llama-2-7B": (123, "bfloat16")})
    assert "✗ differs from the formula's 524,288" in w.readout.value


def test_course_gqa_variant_caches_half_and_mqa_one_head():
    variants = kvx.course_variants(TINY)
    sizes = {name: KVCache(c, 1, 1).bytes_per_token for name, c in variants.items()}
    mha, mqa = sizes["course MHA"], sizes["course MQA"]
    assert mqa * TINY.n_heads == mha
    gqa = [n for n in sizes if n.startswith("course GQA")]
    assert len(gqa) == 1 and sizes[gqa[0]] * 2 == mha


def test_without_anywidget_it_falls_back_to_a_static_figure(monkeypatch):
    monkeypatch.setattr(common, "_figure_widget", lambda fig: None)
    w = kv_cache_explorer()
    assert type(w.figure) is go.Figure
    w.controls["dtype"].value = "float32"
    assert w.figure.data[0].x[0] == 1024.0  # Llama-2-7B: 1 MiB per token in fp32


def test_displays_a_run_this_cell_note_that_the_live_widget_hides(monkeypatch):
    log = []
    monkeypatch.setattr(kvx.common, "display", fake_display(log))
    w = kv_cache_explorer()
    w._ipython_display_()
    note, bundle = log[0][0], log[1][0]
    assert "KV-cache explorer" in note.data and "run this cell" in note.data
    assert f"mm-kernel-hint-{w._hint_key}" in note.data
    assert "application/vnd.jupyter.widget-view+json" in bundle and log[1][1] == {"raw": True}
    assert f".mm-kernel-hint-{w._hint_key} " in w.children[0].value


def test_measured_bytes_read_the_tensors():
    assert kvx.measured_bytes_per_token(TINY, "bfloat16") == KVCache(TINY, 1, 1, dtype=torch.bfloat16).bytes_per_token


def test_cache_loss_figure_puts_each_variant_at_its_cache_and_loss():
    points = {"MHA": {"cache_bytes_per_token": 4096, "val_loss": 4.0},
              "MQA": {"cache_bytes_per_token": 1024, "val_loss": 4.2, "val_loss_std": 0.01}}
    fig = kvx.cache_loss_figure(points)
    (trace,) = fig.data
    assert list(trace.x) == [4096, 1024] and list(trace.y) == [4.0, 4.2] and list(trace.text) == ["MHA", "MQA"]
    assert list(trace.error_y.array) == [0.0, 0.01] and trace.error_y.visible
    assert "bytes" in fig.layout.xaxis.title.text and "validation loss" in fig.layout.yaxis.title.text
    assert not kvx.cache_loss_figure({"MHA": points["MHA"]}).data[0].error_y.visible
    with pytest.raises(ValueError, match="val_loss"):
        kvx.cache_loss_figure({"MHA": {"cache_bytes_per_token": 1}})
    with pytest.raises(ValueError, match="at least one"):
        kvx.cache_loss_figure({})
