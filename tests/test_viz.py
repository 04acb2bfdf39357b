"""Tests for minimodels/viz/: figures and widgets are inspected as Python objects, without a browser."""

import random

import plotly.graph_objects as go
import pytest
import torch
from display_log import fake_display

from minimodels.config import TINY
from minimodels.kv_cache import DTYPES, KV_PRESETS, KVCache, kv_cache_report
from minimodels.rope import rope_frequencies
from minimodels.viz import (
    COURSE_MODEL,
    CUSTOM,
    HIGHLIGHT,
    LiveLossPlot,
    attainable,
    attention_heatmap,
    byte_unit,
    common,
    decode_speed_figure,
    even_previous_share,
    in_unit,
    kv_bytes_chart,
    kv_cache_calculator,
    log_ticks,
    loss,
    loss_curve_figure,
    previous_token_share,
    roofline_figure,
    rope_distance_figure,
    rope_scores_by_distance,
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

def test_kv_bytes_chart_uses_one_unit_for_bars_labels_and_axis():
    fig = kv_bytes_chart({"MHA": 4096, "MLA": 1152}, title="measured")
    assert list(fig.data[0].x) == ["MHA", "MLA"] and list(fig.data[0].y) == [4.0, 1.125]
    assert fig.data[0].text == ("4 KiB", "1.12 KiB") and list(fig.data[0].customdata) == [4096, 1152]
    assert fig.layout.yaxis.title.text == "KiB per token"
    mixed = kv_bytes_chart({"V3 shape as MHA": 3_997_696, "V3 MLA": 70_272})  # 3.8 MiB next to 68.6 KiB
    assert mixed.layout.yaxis.title.text == "MiB per token" and all(t.endswith(" MiB") for t in mixed.data[0].text)
    forced = kv_bytes_chart({"V3 shape as MHA": 3_997_696, "V3 MLA": 70_272}, unit="KiB")
    assert forced.data[0].text == ("3,904 KiB", "68.6 KiB")
    with pytest.raises(ValueError, match="unit"):
        kv_bytes_chart({"a": 1}, unit="KB")


def _ticks_read_as_their_values(axis) -> bool:
    return all(float(text.replace(",", "")) == value for text, value in zip(axis.ticktext, axis.tickvals))


def test_log_axes_label_every_tick_with_its_full_value():
    assert log_ticks(22, 420) == [20, 50, 100, 200, 500]
    assert log_ticks(0.3, 3e5) == [0.1, 1, 10, 100, 1000, 1e4, 1e5, 1e6]  # wide: powers of ten only
    assert log_ticks(100, 100) == [50, 100, 200]
    fig = kv_bytes_chart({"Llama-2-7B": 524_288, "tiny": 512}, log_y=True)
    axis = fig.layout.yaxis
    assert axis.type == "log" and _ticks_read_as_their_values(axis)
    assert min(axis.tickvals) < 0.5 and max(axis.tickvals) >= 512  # both bars inside the ticks, in KiB
    speed = decode_speed_figure([16, 960], {"cache": [420.0, 264.0], "none": [245.0, 22.0]})
    assert _ticks_read_as_their_values(speed.layout.yaxis) and list(speed.layout.yaxis.tickvals)[0] <= 22
    with pytest.raises(ValueError, match="positive"):
        log_ticks(0, 10)


def test_byte_units():
    assert byte_unit([512, 1023]) == "B" and byte_unit([512, 524_288]) == "KiB" and byte_unit([3 * 2**20]) == "MiB"
    assert in_unit(69_120, "KiB") == "67.5 KiB" and in_unit(2**31, "GiB") == "2 GiB"


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
    monkeypatch.setattr(common, "_figure_widget", lambda fig: None)
    w = kv_cache_calculator()
    assert type(w.figure) is go.Figure
    w.controls["context"].value = 1024
    assert w.figure.data[0].y[0] == 0.5


def test_decode_speed_figure_and_log_bars():
    fig = decode_speed_figure([16, 256], {"with cache": [900.0, 800.0], "without": [500.0, 40.0]})
    assert fig.layout.yaxis.title.text == "tokens per second"
    assert [t.name for t in fig.data] == ["with cache", "without"] and fig.layout.yaxis.type == "log"
    assert list(fig.data[1].y) == [500.0, 40.0]
    with pytest.raises(ValueError, match="2 contexts"):
        decode_speed_figure([16, 256], {"bad": [1.0]})
    assert kv_bytes_chart({"a": 1, "b": 1000}, log_y=True).layout.yaxis.type == "log"


# --- attention: readable heatmaps, the previous-token pattern, RoPE by distance ---

def test_attention_heatmap_is_tall_enough_and_titles_follow_the_head():
    probs = torch.softmax(torch.randn(4, 15, 15), dim=-1)
    titles = [f"layer 1, head {h}: something" for h in range(4)]
    fig = attention_heatmap(probs, [f"t{i}" for i in range(15)], head_titles=titles)
    assert fig.layout.height >= 15 * 26  # one readable label per query row, not 15 labels in ~150 px
    assert fig.layout.title.text == titles[0]
    steps = fig.layout.sliders[0].steps
    assert [s.args[1]["title.text"] for s in steps] == titles  # the slider changes the title with the head
    default = attention_heatmap(probs, title="Trained")
    assert default.layout.sliders[0].steps[3].args[1]["title.text"] == "Trained, head 3"
    with pytest.raises(ValueError, match="head_titles"):
        attention_heatmap(probs, head_titles=["only one"])
    third = attention_heatmap(probs, head_titles=titles, head=2)  # start on the head worth showing
    assert [t.visible for t in third.data] == [False, False, True, False]
    assert third.layout.title.text == titles[2] and third.layout.sliders[0].active == 2
    with pytest.raises(ValueError, match="head=4"):
        attention_heatmap(probs, head=4)
    assert attention_heatmap(probs[0]).layout.height >= 15 * 26


def test_previous_token_share_finds_a_previous_token_head():
    t = 6
    prev = torch.zeros(t, t)
    prev[0, 0] = 1.0
    prev[torch.arange(1, t), torch.arange(t - 1)] = 1.0  # every query looks at the token before it
    even = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]  # uniform over visible keys
    self_only = torch.eye(t)
    shares = previous_token_share(torch.stack([prev, even, self_only]))
    torch.testing.assert_close(shares, torch.tensor([1.0, even_previous_share(t), 0.0]))
    # T < S: the 2 queries are the last 2 of 6 keys, so query 0 sits at position 4 and looks at key 3
    tail = torch.zeros(2, 6)
    tail[0, 3], tail[1, 4] = 1.0, 1.0
    assert previous_token_share(tail).item() == 1.0
    with pytest.raises(ValueError, match="previous token"):
        previous_token_share(torch.ones(1, 1))


def test_rope_scores_depend_on_distance_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, generator=g)
    freqs = rope_frequencies(16, 256)
    near, far = (rope_scores_by_distance(q, k, freqs, pos, 40) for pos in (40, 200))
    torch.testing.assert_close(near, far, atol=1e-4, rtol=0)
    assert abs(near[0].item() - (q @ k).item()) < 1e-4  # distance 0: the rotations cancel
    assert (near - near[0]).abs().max() > 0.1  # other distances, other scores
    ones = rope_scores_by_distance(torch.ones(16), torch.ones(16), freqs, 100, 100)
    assert ones[0] == ones.max() and ones[-1] < ones[0] / 2  # aligned vectors: the score falls with distance
    fig = rope_distance_figure(q, k, freqs, query_positions=(40, 200), max_distance=40)
    assert [t.mode for t in fig.data] == ["lines", "markers"] and len(fig.data[0].x) == 41
    assert fig.layout.xaxis.title.text.startswith("distance")
    with pytest.raises(ValueError, match="before position 0"):
        rope_scores_by_distance(q, k, freqs, 10, 20)
    with pytest.raises(ValueError, match="RoPE table"):
        rope_scores_by_distance(q, k, freqs, 300, 20)


# --- roofline ---

def test_roofline_points_sit_on_the_roof():
    peak, bw = 100e9, 10e9  # ridge at 10 FLOPs per byte
    fig = roofline_figure({"decode": 0.5, "prefill": 64.0}, peak, bw, machine="test box")
    roof, decode, prefill = fig.data
    assert decode.y[0] == pytest.approx(0.5 * bw / 1e9) and prefill.y[0] == pytest.approx(peak / 1e9)
    assert max(roof.y) == pytest.approx(peak / 1e9) and 10.0 in roof.x  # the ridge is a corner of the roof
    assert "100 GFLOP/s" in roof.name and "10.0 GB/s" in roof.name and "test box" in roof.name
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    assert _ticks_read_as_their_values(fig.layout.xaxis)
    assert attainable(1.0, peak, bw) == 10e9 and attainable(1e3, peak, bw) == peak
    with pytest.raises(ValueError, match="positive"):
        roofline_figure({"bad": 0.0}, peak, bw)
    with pytest.raises(ValueError, match="positive"):
        roofline_figure({"decode": 0.5}, 0.0, bw)


# --- charts that survive a reload, widgets that say to run their cell ---

def test_finish_replaces_the_live_chart_with_a_static_figure(monkeypatch):
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display(log))
    h = fake_history(50, eval_every=10)
    live = LiveLossPlot(h, title="run")
    note, box = log[0][1], log[1][1]
    key = next(c for c in note.data.split('"')[1].split() if c.startswith("mm-kernel-hint-"))
    assert "run this cell" in note.data
    assert any(key in getattr(child, "value", "") and "display: none" in child.value for child in box.children)
    widget = live.widget
    fig = live.finish(h)
    assert type(fig) is go.Figure and list(fig.data[0].y) == h["loss"] and fig.layout.title.text == "run"
    updates = [entry for entry in log if entry[0] == "update"]
    assert updates[0][1] is box and updates[0][3] == {"raw": True}  # the chart's output now holds the figure
    assert updates[0][2]["application/vnd.plotly.v1+json"]["data"][0]["y"] == h["loss"]
    assert not [entry for entry in log if entry[0] == "display" and entry[1] is fig]  # replaced, not appended
    assert updates[1][1] is note and updates[1][2] == {"text/plain": ""}  # and the note is gone
    assert live.widget is None and widget.comm is None  # the live widget is closed


def test_finish_outside_a_notebook_displays_nothing_and_without_a_live_chart_displays_it(monkeypatch):
    h = fake_history(10)
    assert type(LiveLossPlot(h).finish(h)) is go.Figure  # pytest: no kernel, nothing to display
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "_figure_widget", lambda fig: None)  # anywidget missing
    monkeypatch.setattr(loss, "display", fake_display(log))
    fig = LiveLossPlot(h).finish(h)
    assert log == [("display", fig, {})]


def test_calculator_displays_a_run_this_cell_note_that_the_live_widget_hides(monkeypatch):
    log = []
    monkeypatch.setattr(common, "display", fake_display(log))
    w = kv_cache_calculator()
    w._ipython_display_()
    note, bundle = log[0][1], log[1][1]
    assert "KV-cache calculator" in note.data and "run this cell" in note.data
    assert f"mm-kernel-hint-{w._hint_key}" in note.data
    assert "application/vnd.jupyter.widget-view+json" in bundle and log[1][2] == {"raw": True}
    hider = w.children[0]
    assert f".mm-kernel-hint-{w._hint_key} " in hider.value and hider.layout.display == "none"
    other = kv_cache_calculator()
    assert other._hint_key != w._hint_key  # one calculator's style never hides another's note
