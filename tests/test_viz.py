"""Tests for minimodels/viz.py: figures and widgets are inspected as Python objects, without a browser."""

import random

import plotly.graph_objects as go
import pytest
import torch

from minimodels import viz
from minimodels.config import TINY
from minimodels.kv_cache import DTYPES, KV_PRESETS, KVCache, kv_cache_report
from minimodels.viz import (
    COURSE_MODEL,
    CUSTOM,
    HIGHLIGHT,
    LiveLossPlot,
    attention_heatmap,
    kv_bytes_chart,
    kv_cache_calculator,
    loss_curve_figure,
)


def fake_history(steps: int = 100, eval_every: int = 25) -> dict:
    history = {"step": [], "loss": [], "lr": [], "val_step": [], "val_loss": [], "train_time_s": 0.0,
               "tokens": 0}
    for step in range(steps):
        history["step"].append(step)
        history["loss"].append(5.0 / (1 + step))
        if (step + 1) % eval_every == 0 or step == steps - 1:
            history["val_step"].append(step)
            history["val_loss"].append(5.5 / (1 + step))
    return history


# --- loss curves ---

def test_loss_curve_one_history():
    h = fake_history()
    fig = loss_curve_figure(h, title="baseline")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["train", "validation"]
    assert fig.data[0].mode == "lines" and "markers" in fig.data[1].mode
    assert list(fig.data[0].y) == h["loss"] and list(fig.data[1].x) == h["val_step"]
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.yaxis.title.text == "cross-entropy loss (nats)"
    assert fig.layout.title.text == "baseline"


def test_loss_curve_several_histories():
    fig = loss_curve_figure({"mha": fake_history(), "mla": fake_history(50)})
    assert [t.name for t in fig.data] == ["mha train", "mha validation", "mla train", "mla validation"]
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color  # one colour per run
    assert len(fig.data[2].x) == 50


# --- live loss plot ---

def test_live_loss_plot_outside_kernel_is_a_silent_no_op():
    h = fake_history(10)
    live = LiveLossPlot(h)
    assert live.widget is None  # no kernel under pytest
    for _ in range(5):
        live.update(h)
    live.update(h, final=True)


def test_live_loss_plot_is_throttled_and_draws_the_last_step(monkeypatch):
    now = [0.0]
    full = fake_history(1000, eval_every=100)
    history = {k: ([] if isinstance(v, list) else v) for k, v in full.items()}
    live = LiveLossPlot(history, widget=True, min_interval_s=0.5, clock=lambda: now[0])
    assert isinstance(live.widget, go.FigureWidget)
    drawn = []
    original = live._redraw
    monkeypatch.setattr(live, "_redraw", lambda h: (drawn.append(len(h["step"])), original(h)))
    for step in range(1000):  # replay train(): 10 ms per step, a validation point every 100 steps
        now[0] += 0.01
        history["step"].append(step)
        history["loss"].append(full["loss"][step])
        if step in full["val_step"]:
            history["val_step"].append(step)
            history["val_loss"].append(full["val_loss"][full["val_step"].index(step)])
        live.update(history)
    # 10 s of training: ~20 timed redraws + 10 validation points, not 1000
    assert live.redraws == len(drawn) <= 35
    assert drawn[-1] == 1000  # the last step always evaluates, so the final curve is drawn
    assert list(live.widget.data[0].y) == full["loss"]
    assert list(live.widget.data[1].x) == full["val_step"]


def test_live_loss_plot_survives_a_broken_widget():
    h = fake_history(10)
    live = LiveLossPlot(h, widget=True)
    live.widget = object()  # anything that fails on redraw
    live.update(h, final=True)
    assert live.widget is None


# --- attention ---

def test_attention_heatmap_one_head():
    probs = torch.softmax(torch.randn(4, 6), dim=-1)
    tokens = ["a", "b", "a", "c", "d", "e"]  # a repeated token must not merge columns
    fig = attention_heatmap(probs, tokens)
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    assert fig.data[0].z.shape == (4, 6)
    assert list(fig.layout.xaxis.ticktext) == tokens
    assert list(fig.layout.yaxis.ticktext) == tokens[2:]  # queries are the last T keys
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "key" and fig.layout.yaxis.title.text == "query"
    assert not fig.layout.sliders


def test_attention_heatmap_heads_get_a_slider():
    probs = torch.softmax(torch.randn(3, 5, 5), dim=-1)
    fig = attention_heatmap(probs)
    assert len(fig.data) == 3
    assert [t.visible for t in fig.data] == [True, False, False]
    steps = fig.layout.sliders[0].steps
    assert len(steps) == 3 and steps[2].args[0]["visible"] == [False, False, True]
    torch.testing.assert_close(torch.tensor(fig.data[1].z), probs[1])


@pytest.mark.parametrize("shape", [(5,), (2, 2, 3, 3)])
def test_attention_heatmap_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\(T, S\)"):
        attention_heatmap(torch.rand(shape))


def test_attention_heatmap_rejects_wrong_token_count_and_t_gt_s():
    with pytest.raises(ValueError, match="tokens"):
        attention_heatmap(torch.rand(3, 3), ["a", "b"])
    with pytest.raises(ValueError, match="queries"):
        attention_heatmap(torch.rand(4, 3))


# --- KV cache ---

def test_kv_bytes_chart():
    fig = kv_bytes_chart({"MHA": 4096, "MLA": 1152}, title="measured")
    assert list(fig.data[0].x) == ["MHA", "MLA"] and list(fig.data[0].y) == [4096, 1152]
    assert fig.data[0].text == ("4.0 KiB", "1.1 KiB")
    assert fig.layout.yaxis.title.text == "bytes per token"


def test_calculator_default_is_llama2_7b_bf16_at_4096():
    w = kv_cache_calculator()
    assert w.controls["preset"].value == "Llama-2-7B" and w.controls["dtype"].value == "bfloat16"
    assert w.report == {"bytes_per_token": 524_288, "total_bytes": 2 * 2**30}
    assert "512.0 KiB per token" in w.readout.value and "524,288 bytes" in w.readout.value
    assert "2.00 GiB</b> for 1 × 4,096 tokens" in w.readout.value
    assert list(w.figure.data[0].x) == list(KV_PRESETS)
    assert w.figure.data[0].y[0] == 2.0 and w.figure.data[0].marker.color[0] == HIGHLIGHT
    assert "kv-calculator" in w._dom_classes
    assert "kv-readout" in w.readout._dom_classes and "kv-chart" in w.chart._dom_classes
    assert all("kv-control" in c._dom_classes for c in w.controls.values())
    assert all(c.description for c in w.controls.values())


def test_calculator_context_changes_readout_and_bars():
    w = kv_cache_calculator()
    before = list(w.figure.data[0].y)
    w.controls["context"].value = 8192
    assert "4.00 GiB</b> for 1 × 8,192 tokens" in w.readout.value
    assert list(w.figure.data[0].y) == [2 * y for y in before]
    w.controls["batch"].value = 4
    assert "16.00 GiB</b> for 4 × 8,192 tokens" in w.readout.value


def test_calculator_preset_fills_shape_and_edits_make_it_custom():
    w = kv_cache_calculator()
    w.controls["preset"].value = "Llama-2-70B"
    assert (w.controls["n_layers"].value, w.controls["n_kv_heads"].value, w.controls["head_dim"].value) == (
        80, 8, 128)
    assert w.report["bytes_per_token"] == 327_680
    colors = w.figure.data[0].marker.color
    assert colors[list(w.figure.data[0].x).index("Llama-2-70B")] == HIGHLIGHT and colors.count(HIGHLIGHT) == 1
    w.controls["n_kv_heads"].value = 1  # MQA
    assert w.controls["preset"].value == CUSTOM
    assert w.figure.data[0].x[-1] == CUSTOM and w.figure.data[0].marker.color[-1] == HIGHLIGHT
    assert w.report["bytes_per_token"] == 80 * 2 * 128 * 2


def test_calculator_course_model_shows_measured_check():
    measured = KVCache(TINY, batch_size=1, max_len=8).bytes_per_token  # float32 cache tensors
    w = kv_cache_calculator(TINY, measured_bytes_per_token=measured)
    assert "measured" not in w.readout.value  # only for this course's model
    w.controls["preset"].value = COURSE_MODEL
    assert w.controls["n_layers"].value == TINY.n_layers and w.controls["head_dim"].value == TINY.head_dim
    assert f"measured from the cache tensors: {measured:,} bytes/token" in w.readout.value
    assert "✓" in w.readout.value
    wrong = kv_cache_calculator(TINY, measured_bytes_per_token=measured + 1)
    wrong.controls["preset"].value = COURSE_MODEL
    assert "✓" not in wrong.readout.value and "✗" in wrong.readout.value


def test_calculator_numbers_come_from_kv_cache_report():
    w = kv_cache_calculator(TINY)
    rng = random.Random(0)
    for _ in range(10):
        w.controls["preset"].value = rng.choice(list(w.presets))
        settings = dict(n_layers=rng.randint(1, 96), n_kv_heads=rng.randint(1, 64),
                        head_dim=rng.choice([64, 128, 192]), context=rng.randint(1, 2**17),
                        batch=rng.randint(1, 64), dtype=rng.choice(list(DTYPES)))
        for name, value in settings.items():
            w.controls[name].value = value
        report = kv_cache_report(**settings)
        assert w.report == report
        assert f"{report['bytes_per_token']:,} bytes" in w.readout.value
        run = {k: settings[k] for k in ("context", "batch", "dtype")}
        expected = [kv_cache_report(**shape, **run)["total_bytes"] / 2**30 for shape in w.presets.values()]
        assert list(w.figure.data[0].y[: len(expected)]) == expected


def test_calculator_without_anywidget_falls_back_to_a_static_figure(monkeypatch):
    monkeypatch.setattr(viz, "_figure_widget", lambda fig: None)
    w = kv_cache_calculator()
    assert type(w.figure) is go.Figure
    w.controls["context"].value = 1024
    assert w.figure.data[0].y[0] == 0.5


def test_decode_speed_figure_and_log_bars():
    from minimodels.viz import decode_speed_figure, kv_bytes_chart

    fig = decode_speed_figure([16, 256], {"with cache": [900.0, 800.0], "without": [500.0, 40.0]})
    assert [t.name for t in fig.data] == ["with cache", "without"] and fig.layout.yaxis.type == "log"
    assert list(fig.data[1].y) == [500.0, 40.0]
    with pytest.raises(ValueError, match="2 contexts"):
        decode_speed_figure([16, 256], {"bad": [1.0]})
    assert kv_bytes_chart({"a": 1, "b": 1000}, log_y=True).layout.yaxis.type == "log"
