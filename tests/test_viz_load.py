"""Tests for minimodels/viz/load.py: the expert-load heatmap (static and live during train()), the per-layer load
histograms with MaxVio and dead experts, and the ablation figure from live histories and saved results."""

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
import torch
from display_log import fake_display

from minimodels import MiniModel, TrainConfig, train
from minimodels.config import ModelConfig
from minimodels.viz import ablation_figure, ablation_rows, common, expert_load_figure, load, load_histograms_figure

CFG = ModelConfig(vocab_size=40, dim=32, n_layers=3, n_heads=4, inter_dim=64, max_seq_len=32, ffn="moe",
                  n_dense_layers=1, n_routed_experts=8, n_activated_experts=2, moe_inter_dim=16, score_func="sigmoid")
RUN = dict(steps=5, batch_size=4, seq_len=16, eval_every=0, eval_batches=1, progress=False)
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def data():
    ids = (torch.arange(3000) * 7 % 40).long()
    return SimpleNamespace(train=ids[:2500], val=ids[2500:])


def run(data, **fields):
    torch.manual_seed(0)
    return train(MiniModel(replace(CFG, **fields)), data, TrainConfig(**RUN))


@pytest.fixture(scope="module")
def plain(data):
    return run(data)


@pytest.fixture(scope="module")
def with_bias(data):
    return run(data, bias_update_speed=0.01)


def heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_the_heatmap_is_load_over_mean_per_layer_and_step(plain):
    fig = expert_load_figure(plain)
    maps = heatmaps(fig)
    assert len(maps) == 2  # MoE layers 1 and 2 (layer 0 is dense)
    for col, heat in enumerate(maps):
        assert len(heat.z) == 8 and len(heat.z[0]) == RUN["steps"]  # experts × steps
        for s, loads in enumerate(plain["expert_load"]):
            counts = loads[col]
            mean = sum(counts) / len(counts)
            assert [row[s] for row in heat.z] == pytest.approx([c / mean for c in counts])
    vio = [t for t in fig.data if t.name == "MaxVio"]
    assert [list(t.y) for t in vio] == [[s[i] for s in plain["max_vio"]] for i in range(2)]
    assert not any((t.name or "").startswith("bias of") for t in fig.data)  # no bias: no bias panel


def test_dead_experts_are_marked_at_their_steps():
    history = {"step": [0, 1], "moe_layers": [1], "expert_load": [[[4, 0, 0, 4]], [[2, 2, 2, 2]]],
               "max_vio": [[1.0], [0.0]], "dead_experts": [[2], [0]]}
    fig = expert_load_figure(history)
    dead = next(t for t in fig.data if t.name == "dead experts")
    assert list(dead.x) == [0] and list(dead.y) == [2]
    assert list(heatmaps(fig)[0].z[1]) == [0.0, 1.0]  # expert 1: dead at step 0, a fair share at step 1


def test_bias_runs_get_one_line_per_expert_and_layer(with_bias):
    fig = expert_load_figure(with_bias)
    lines = [t for t in fig.data if (t.name or "").startswith("bias of")]
    assert len(lines) == 2 * 8
    assert list(lines[3].y) == [b[0][3] for b in with_bias["router_bias"]]


def test_a_history_without_routing_says_what_to_pass():
    with pytest.raises(ValueError, match="ffn='moe'"):
        expert_load_figure({"step": [0], "loss": [1.0]})


def test_histograms_mark_max_vio_and_dead_experts(plain, with_bias):
    history = {"step": [0], "moe_layers": [1, 2], "expert_load": [[[6, 0, 1, 1], [2, 2, 2, 2]]],
               "max_vio": [[2.0, 0.0]], "dead_experts": [[1, 0]]}
    fig = load_histograms_figure(history)
    titles = [a.text for a in fig.layout.annotations]
    assert "MaxVio 2.00, 1 dead" in titles[0] and "MaxVio 0.00, 0 dead" in titles[1]
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert list(bars[0].y) == [6, 0, 1, 1] and bars[0].marker.color[1] == load.DEAD
    crosses = [t for t in fig.data if t.name == "dead expert"]
    assert list(crosses[0].x) == [1] and list(crosses[1].x) == []
    both = load_histograms_figure({"none": plain, "bias": with_bias}, step=2)
    assert len([t for t in both.data if isinstance(t, go.Bar)]) == 4  # 2 runs × 2 layers
    assert f"step {plain['step'][2]}" in both.layout.annotations[0].text
    with pytest.raises(ValueError, match="recorded steps"):
        load_histograms_figure(plain, step=99)


def test_live_view_redraws_during_training_then_leaves_a_static_figure(data, monkeypatch):
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display(log))
    ticks = iter(range(1000))
    seen = []

    def spy(step, history):
        seen.append(len(history["expert_load"]))
    torch.manual_seed(0)
    history = load.watch_expert_load(MiniModel(replace(CFG, bias_update_speed=0.01)), data, TrainConfig(**RUN),
                                     clock=lambda: next(ticks), callback=spy)
    assert seen == [1, 2, 3, 4, 5]  # the caller's callback still runs every step
    note, box = log[0][1], log[1][1]
    assert "run this cell" in note.data and load.CSS_CLASS in box._dom_classes
    updates = [entry for entry in log if entry[0] == "update"]
    assert updates[0][1] is box and updates[0][3] == {"raw": True}  # the chart's output now holds the figure
    heat = updates[0][2]["application/vnd.plotly.v1+json"]["data"][0]
    assert len(heat["z"][0]) == RUN["steps"]  # every step in the saved figure
    assert updates[1][1] is note and updates[1][2] == {"text/plain": ""}
    assert box.comm is None  # the live widgets are closed
    assert len(history["router_bias"]) == RUN["steps"]


def test_the_live_figure_follows_the_run(data, monkeypatch):
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display([]))
    live = load._LiveLoad("t", True, 0.0, lambda: 0.0)
    widths = []

    def watch(step, history):
        live(step, history)
        widths.append(len(live.chart.data[0].z[0]))
    torch.manual_seed(0)
    train(MiniModel(CFG), data, TrainConfig(**RUN), callback=watch)
    assert widths == [1, 2, 3, 4, 5] and live.redraws == 5


def test_without_anywidget_or_kernel(data, monkeypatch):
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "_figure_widget", lambda fig: None)
    monkeypatch.setattr(load, "display", fake_display(log))
    torch.manual_seed(0)
    load.watch_expert_load(MiniModel(CFG), data, TrainConfig(**RUN))
    assert len(log) == 1 and isinstance(log[0][1], go.Figure)  # the static figure, once
    log.clear()
    monkeypatch.setattr(common, "_in_kernel", lambda: False)
    monkeypatch.setattr(common, "display", fake_display(log))
    load.watch_expert_load(MiniModel(CFG), data, TrainConfig(**RUN))
    assert log == []


def test_a_broken_live_chart_never_stops_training(data, monkeypatch):
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display(log))
    monkeypatch.setattr(load._LiveLoad, "_redraw", lambda self, history: 1 / 0)  # e.g. the front-end went away
    torch.manual_seed(0)
    history = load.watch_expert_load(MiniModel(CFG), data, TrainConfig(**RUN), min_interval_s=0.0)
    assert len(history["expert_load"]) == RUN["steps"]
    assert [entry[0] for entry in log] == ["display", "display", "update", "update"]  # the static figure is left


def test_ablation_rows_and_figure(plain, with_bias):
    rows = ablation_rows({"none": plain, "bias": with_bias})
    assert [r["name"] for r in rows] == ["none", "bias"]
    assert rows[0]["val_loss"] == plain["val_loss"][-1]
    assert rows[0]["max_vio"] == pytest.approx(sum(plain["max_vio"][-1]) / 2)  # last 10% of 5 steps: the last
    fig = ablation_figure(rows)
    assert [list(t.x) for t in fig.data] == [["none", "bias"]] * 2
    assert fig.data[1].y[0] == pytest.approx(rows[0]["max_vio"])
    with pytest.raises(ValueError, match="no ablation rows"):
        ablation_figure([])


def arow(arm, steps, loss, vio):
    return {"arm": arm, "steps": steps, "seeds": [0], "val_loss_mean": loss, "val_loss_std": 0.0, "max_vio_mean": vio,
            "max_vio_over_training": vio, "dead_experts_mean": 0.0, "router_entropy_mean": 1.0,
            "max_vio_curve_mean": [[1, 2.0], [steps, vio]]}


def test_saved_rows_keep_the_planned_budget_in_arm_order():
    results = {"settings": {"plan": {"steps": 600}},
               "ablation": {"summary": [arow("none", 600, 4.2, 2.5), arow("none", 60, 5.0, 1.0),
                                        arow("bias", 600, 4.1, 0.3)]}}
    rows = load.saved_ablation_rows(results)
    assert [(r["name"], r["steps"], r["max_vio"]) for r in rows] == [("none", 600, 2.5), ("bias", 600, 0.3)]
    assert ablation_figure(rows).data[0].error_y.array == (0.0, 0.0)
    curves = load.saved_max_vio_figure(results)
    assert [t.name for t in curves.data] == ["none", "bias"] and list(curves.data[1].y) == [2.0, 0.3]
    assert load.saved_ablation_rows({}) == []
    with pytest.raises(ValueError, match="--skip-ablation"):
        load.saved_max_vio_figure({})


@pytest.mark.skipif(not (RESULTS / "moe_smoke.json").is_file(), reason="bench_moe.py has not written its smoke file")
def test_the_saved_smoke_results_draw():
    results = json.loads((RESULTS / "moe_smoke.json").read_text())
    rows = load.saved_ablation_rows(results)
    assert [r["name"] for r in rows][:4] == ["none", "expert_loss", "seq_loss", "bias"]
    fig = ablation_figure(rows)
    assert len(fig.data) == 2 and all(len(t.x) == len(rows) for t in fig.data)
    assert len(load.saved_max_vio_figure(results).data) == len(rows)
