"""The KV cache growing while models generate, side by side (lesson 05): MHA against MLA, token by token.

Each model decodes greedily into its own `KVCache`; after every token the chart reads the bytes each cache
holds (`KVCache.used_bytes`: written positions × batch × bytes per position, measured from the cache tensors),
and the text each model has written so far is shown under the chart. In a notebook with a kernel the chart is
a live plotly FigureWidget; when generation ends it is replaced by a static figure that is saved with the
notebook (the pattern of loss.py's LiveLossPlot.finish). Without a kernel nothing is displayed and the static
figure is returned. Taught in lessons/05_rope_absorption.ipynb §5.5.
"""

# Shapes: B batch (1 here), T0 prompt tokens, V vocabulary

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from IPython.display import display
from plotly.colors import qualitative
from torch import Tensor, nn

from ..kv_cache import KVCache
from . import common

CSS_CLASS = "mm-cache-growth"  # the live widget's class (the browser test looks for it)
AXES = dict(xaxis_title="positions in the cache (prompt + generated tokens)", yaxis_title="KV-cache bytes in use")


@dataclass
class CacheGrowth:
    """What `watch_cache_growth` measured: per model, cache length and bytes in use after each step, and text."""

    lengths: dict[str, list[int]] = field(default_factory=dict)
    used_bytes: dict[str, list[int]] = field(default_factory=dict)
    bytes_per_token: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    figure: go.Figure | None = None


def cache_growth_figure(growth: CacheGrowth, *, title: str = "KV cache while generating") -> go.Figure:
    """Bytes in use against cache length, one line per model (static; the live view updates the same traces)."""
    if not growth.lengths:
        raise ValueError("nothing to draw: the CacheGrowth holds no model (run watch_cache_growth first)")
    fig = go.Figure(layout=dict(title=title, template="plotly_white", height=380, **AXES))
    for i, name in enumerate(growth.lengths):
        per_token = growth.bytes_per_token.get(name, 0)
        fig.add_scatter(x=list(growth.lengths[name]), y=list(growth.used_bytes[name]), mode="lines+markers",
                        name=f"{name} ({per_token:,} B/token)", marker=dict(size=4),
                        line=dict(color=qualitative.Plotly[i % len(qualitative.Plotly)]),
                        hovertemplate="%{x} positions: %{y:,} bytes<extra></extra>")
    return fig


def _text_html(texts: dict[str, str]) -> str:
    rows = "".join(f"<div><b>{html.escape(name)}</b>: <code>{html.escape(text)}</code></div>"
                   for name, text in texts.items())
    return f'<div style="font-size:12px;white-space:pre-wrap">{rows}</div>'


class _LiveView:
    """The FigureWidget and the text box while generation runs; `finish` leaves a static figure in their place."""

    def __init__(self, growth: CacheGrowth, title: str, show: bool):
        self.title, self.chart, self.text, self.box, self.handles = title, None, None, None, None
        self.shown = show
        if not show:
            return
        self.chart = common._figure_widget(cache_growth_figure(growth, title=title))
        if self.chart is None:  # anywidget missing: only the static figure, at the end
            return
        key = common.new_hint_key()
        self.text = widgets.HTML(_text_html(growth.texts))
        self.box = widgets.VBox([common.hint_hider(key), self.chart, self.text])
        self.box.add_class(CSS_CLASS)
        self.handles = common.display_live(self.box, key, "The live cache chart")

    def update(self, growth: CacheGrowth) -> None:
        if self.chart is None:
            return
        try:  # a live chart is a nicety: never let it stop the generation
            with self.chart.batch_update():
                for trace, name in zip(self.chart.data, growth.lengths):
                    trace.x, trace.y = list(growth.lengths[name]), list(growth.used_bytes[name])
            self.text.value = _text_html(growth.texts)
        except Exception:
            self.chart = None  # e.g. the front-end went away; finish() still shows the static figure

    def finish(self, growth: CacheGrowth) -> go.Figure:
        fig = cache_growth_figure(growth, title=self.title)
        if not self.shown:
            return fig
        if self.handles is None:
            display(fig)
            return fig
        common.replace_live(self.handles, self.box, fig)  # the figure's output, saved with the notebook
        self.chart = self.text = self.box = self.handles = None
        return fig


def _check_request(models: dict[str, nn.Module], prompt: Tensor, n_new: int) -> None:
    if not models:
        raise ValueError("pass at least one model: {'MHA': mha_model, 'MLA': mla_model}")
    if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.shape[0] != 1 or not prompt.numel():
        raise ValueError(f"prompt must be a (1, T0) tensor of token ids, got "
                         f"{tuple(prompt.shape) if isinstance(prompt, Tensor) else type(prompt).__name__}")
    if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
        raise ValueError(f"n_new={n_new!r} must be an int >= 1: how many tokens each model generates")
    for name, model in models.items():
        if prompt.shape[1] + n_new > model.cfg.max_seq_len:
            raise ValueError(f"{name}: prompt ({prompt.shape[1]}) + n_new ({n_new}) exceeds max_seq_len="
                             f"{model.cfg.max_seq_len}; generate fewer tokens")


@torch.no_grad()
def watch_cache_growth(models: dict[str, nn.Module], prompt: Tensor, n_new: int, *,
                       decode: Callable[[list[int]], str] | None = None, widget: bool | None = None,
                       title: str = "KV cache while generating") -> CacheGrowth:
    """Greedy-decode `n_new` tokens with every model in turn, one token each per step, charting cache bytes.

    models: {name: MiniModel}; prompt (1, T0) token ids; decode: token ids -> text (e.g. tokenizer.decode),
    else the ids are shown. widget: None = live only inside a kernel. Returns the measurements and the figure.
    """
    _check_request(models, prompt, n_new)
    modes = {name: model.training for name, model in models.items()}
    try:
        return _generate(models, prompt, n_new, decode or (lambda ids: " ".join(map(str, ids))),
                         common._in_kernel() if widget is None else widget, title)
    finally:
        for name, model in models.items():
            model.train(modes[name])  # as generate() does: leave each model in the mode it came in


def _generate(models: dict[str, nn.Module], prompt: Tensor, n_new: int, decode: Callable[[list[int]], str],
              show: bool, title: str) -> CacheGrowth:
    """watch_cache_growth's loop: prefill every model, then one greedy token per model per step."""
    growth, caches, tokens, logits = CacheGrowth(), {}, {}, {}
    for name, model in models.items():
        model.eval()
        dtype = next(model.parameters()).dtype
        caches[name] = KVCache(model.cfg, 1, prompt.shape[1] + n_new, device=prompt.device, dtype=dtype)
        logits[name] = model(prompt, start_pos=0, cache=caches[name])[:, -1]  # prefill: (1, V)
        tokens[name] = prompt
        growth.bytes_per_token[name] = caches[name].bytes_per_token
        growth.lengths[name], growth.used_bytes[name] = [caches[name].length], [caches[name].used_bytes]
        growth.texts[name] = ""
    view = _LiveView(growth, title, show)
    for _ in range(n_new):
        for name, model in models.items():
            nxt = logits[name].argmax(dim=-1, keepdim=True)  # (1, 1): greedy
            tokens[name] = torch.cat([tokens[name], nxt], dim=1)
            cache = caches[name]
            logits[name] = model(nxt, start_pos=cache.length, cache=cache)[:, -1]  # one position: length + 1
            growth.lengths[name].append(cache.length)
            growth.used_bytes[name].append(cache.used_bytes)  # read from the cache, not computed here
            growth.texts[name] = decode(tokens[name][0, prompt.shape[1]:].tolist())
        view.update(growth)
    growth.figure = view.finish(growth)
    return growth
