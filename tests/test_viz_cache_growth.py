"""Tests for minimodels/viz/cache_growth.py: bytes read from each model's cache, token by token, live and static."""

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch
from display_log import fake_display

from minimodels import KVCache, MiniModel, generate
from minimodels.config import TINY
from minimodels.viz import CacheGrowth, cache_growth, cache_growth_figure, common, watch_cache_growth

CFG = replace(TINY, vocab_size=64, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=32)


def models():
    torch.manual_seed(0)
    mla = replace(CFG, attn="mla", kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)
    return {"MHA": MiniModel(CFG).eval(), "MLA": MiniModel(mla).eval()}


def test_bytes_are_read_from_each_cache_after_every_token():
    ms, prompt = models(), torch.tensor([[1, 2, 3]])
    growth = watch_cache_growth(ms, prompt, 5)
    for name, model in ms.items():
        per_token = KVCache(model.cfg, 1, 1).bytes_per_token
        assert growth.bytes_per_token[name] == per_token
        assert growth.lengths[name] == [3, 4, 5, 6, 7, 8]  # prefill, then one position per generated token
        assert growth.used_bytes[name] == [n * per_token for n in growth.lengths[name]]
    assert growth.bytes_per_token["MLA"] < growth.bytes_per_token["MHA"]  # 2·(8+4)·4 vs 2·2·32·4 bytes


def test_the_text_is_the_greedy_continuation_of_each_model():
    ms, prompt = models(), torch.tensor([[5, 6]])
    growth = watch_cache_growth(ms, prompt, 4, decode=lambda ids: ",".join(map(str, ids)))
    for name, model in ms.items():
        want = generate(model, prompt, 4)[0, 2:].tolist()
        assert growth.texts[name] == ",".join(map(str, want))


def test_the_static_figure_has_one_line_per_model():
    growth = watch_cache_growth(models(), torch.tensor([[1]]), 3)
    fig = growth.figure
    assert type(fig) is go.Figure and len(fig.data) == 2
    assert fig.data[0].name.startswith("MHA (") and "B/token" in fig.data[1].name
    assert list(fig.data[1].y) == growth.used_bytes["MLA"]
    assert "bytes" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="watch_cache_growth"):
        cache_growth_figure(CacheGrowth())


def test_bad_requests_say_what_to_change():
    ms = models()
    with pytest.raises(ValueError, match="at least one model"):
        watch_cache_growth({}, torch.tensor([[1]]), 2)
    with pytest.raises(ValueError, match=r"\(1, T0\)"):
        watch_cache_growth(ms, torch.tensor([1, 2]), 2)
    with pytest.raises(ValueError, match="n_new"):
        watch_cache_growth(ms, torch.tensor([[1]]), 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        watch_cache_growth(ms, torch.tensor([[1] * 30]), 5)


def test_live_view_updates_per_token_then_leaves_a_static_figure(monkeypatch):
    log, seen = [], []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display(log))
    real_update = cache_growth._LiveView.update

    def spy(self, growth):
        real_update(self, growth)
        seen.append([list(t.y) for t in self.chart.data])
        assert "MLA" in self.text.value
    monkeypatch.setattr(cache_growth._LiveView, "update", spy)
    growth = watch_cache_growth(models(), torch.tensor([[1, 2]]), 3)
    assert len(seen) == 3 and [len(y) for y in seen[-1]] == [4, 4]  # one redraw per generated token
    note, box = log[0][1], log[1][1]
    assert "run this cell" in note.data and cache_growth.CSS_CLASS in box._dom_classes
    updates = [entry for entry in log if entry[0] == "update"]
    assert updates[0][1] is box and updates[0][3] == {"raw": True}  # the chart's output now holds the figure
    assert updates[0][2]["application/vnd.plotly.v1+json"]["data"][1]["y"] == growth.used_bytes["MLA"]
    assert updates[1][1] is note and updates[1][2] == {"text/plain": ""}
    assert box.comm is None  # the live widgets are closed


def test_without_anywidget_the_static_figure_is_displayed_once(monkeypatch):
    log = []
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "_figure_widget", lambda fig: None)
    monkeypatch.setattr(cache_growth, "display", fake_display(log))
    growth = watch_cache_growth(models(), torch.tensor([[1]]), 2)
    assert log == [("display", growth.figure, {})]


def test_outside_a_kernel_nothing_is_displayed(monkeypatch):
    log = []
    monkeypatch.setattr(common, "display", fake_display(log))
    monkeypatch.setattr(cache_growth, "display", fake_display(log))
    growth = watch_cache_growth(models(), torch.tensor([[1]]), 2)
    assert log == [] and type(growth.figure) is go.Figure


def test_each_model_is_left_in_the_mode_it_came_in():
    ms = models()
    ms["MHA"].train()
    watch_cache_growth(ms, torch.tensor([[1]]), 2)
    assert ms["MHA"].training and not ms["MLA"].training


def test_a_broken_live_chart_never_stops_the_generation(monkeypatch):
    monkeypatch.setattr(common, "_in_kernel", lambda: True)
    monkeypatch.setattr(common, "display", fake_display([]))

    def broken(self):
        raise RuntimeError("the front-end went away")
    monkeypatch.setattr(go.FigureWidget, "batch_update", broken)
    growth = watch_cache_growth(models(), torch.tensor([[1]]), 3)
    assert len(growth.lengths["MLA"]) == 4 and type(growth.figure) is go.Figure
