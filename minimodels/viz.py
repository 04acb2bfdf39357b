"""Figures and widgets of the course: loss curves, attention heatmaps and the KV-cache calculator.

Every visual is a function that takes tensors, histories or configs and returns a plotly `go.Figure` or an
ipywidgets container, so a lesson shows it with one line and a test inspects it without a browser.
Static figures survive HTML export; `LiveLossPlot` and the calculator need a running kernel, and without
one (or without anywidget) they degrade quietly. Used in lessons/01_baseline_gpt.ipynb (loss curves,
attention) and lessons/02_kv_cache.ipynb (the calculator, measured cache sizes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display
from plotly.colors import qualitative
from torch import Tensor

from .kv_cache import DTYPES, KV_PRESETS, kv_cache_report

LOSS_AXES = dict(xaxis_title="step", yaxis_title="cross-entropy loss (nats)")
COURSE_MODEL = "this course's model"  # preset name the calculator adds for a given ModelConfig
CUSTOM = "custom"  # preset name once a shape control no longer matches the chosen preset
HIGHLIGHT, MUTED = "#d62728", "#9fb7d4"  # current configuration vs the other bars


def _in_kernel() -> bool:
    """True inside a running IPython kernel (a notebook), where widgets can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _figure_widget(fig: go.Figure) -> go.FigureWidget | None:
    """A FigureWidget of `fig`, or None when anywidget (plotly's widget backend since 6.0) is missing."""
    try:
        return go.FigureWidget(fig)
    except ImportError:
        return None


def _human(n: float, digits: int = 1) -> str:
    """Binary units: 524288 -> '512.0 KiB' (plain bytes below 1 KiB)."""
    if n < 1024:
        return f"{int(n)} B"
    units = ["KiB", "MiB", "GiB", "TiB"]
    n /= 1024
    while n >= 1024 and len(units) > 1:
        n, units = n / 1024, units[1:]
    return f"{n:.{digits}f} {units[0]}"


# --- loss curves (lesson 01) ---

def _loss_traces(history: dict, name: str, color: str) -> list[go.Scatter]:
    prefix = f"{name} " if name else ""
    train = go.Scatter(x=list(history["step"]), y=list(history["loss"]), mode="lines", name=f"{prefix}train",
                       line=dict(color=color, width=1.5))
    val = go.Scatter(x=list(history["val_step"]), y=list(history["val_loss"]), mode="lines+markers",
                     name=f"{prefix}validation", line=dict(color=color, dash="dash"), marker=dict(size=7))
    return [train, val]


def loss_curve_figure(history_or_histories: dict, *, title: str = "Loss") -> go.Figure:
    """Train loss per step (line) and validation loss (markers) of one `train()` history.

    Pass `{"run name": history, ...}` instead to compare runs: one train + validation pair per run.
    """
    if "loss" in history_or_histories:  # one history as returned by train()
        runs = {"": history_or_histories}
    else:
        runs = history_or_histories
    fig = go.Figure(layout=dict(title=title, template="plotly_white", hovermode="x unified", **LOSS_AXES))
    for i, (name, history) in enumerate(runs.items()):
        fig.add_traces(_loss_traces(history, name, qualitative.Plotly[i % len(qualitative.Plotly)]))
    return fig


class LiveLossPlot:
    """A loss curve that redraws while `train(..., plot=True)` runs; a silent no-op outside a notebook.

    Redraws are throttled to one per `min_interval_s`, plus one whenever a validation point arrives: an
    evaluation costs far more than a redraw, and train() always evaluates on its last step, so the final
    curve is always drawn. `update(history, final=True)` forces a redraw.
    """

    def __init__(self, history: dict, *, title: str = "Loss", min_interval_s: float = 0.5,
                 widget: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.min_interval_s, self.clock = min_interval_s, clock
        self.redraws = 0  # how many times the traces were actually refreshed
        self._last_time, self._last_val = -math.inf, len(history["val_step"])
        self.widget: go.FigureWidget | None = None
        show = _in_kernel() if widget is None else widget
        if not show:
            return
        try:  # live plotting is a nicety: never let it break a training run
            self.widget = _figure_widget(loss_curve_figure(history, title=title))
            if self.widget is not None and _in_kernel():
                display(self.widget)
        except Exception:
            self.widget = None

    def update(self, history: dict, *, final: bool = False) -> None:
        now = self.clock()
        new_val = len(history["val_step"]) != self._last_val
        if not (final or new_val or now - self._last_time >= self.min_interval_s):
            return
        self._last_time, self._last_val = now, len(history["val_step"])
        self.redraws += 1
        self._redraw(history)

    def _redraw(self, history: dict) -> None:
        if self.widget is None:
            return
        try:
            train, val = self.widget.data[:2]
            with self.widget.batch_update():
                train.x, train.y = list(history["step"]), list(history["loss"])
                val.x, val.y = list(history["val_step"]), list(history["val_loss"])
        except Exception:
            self.widget = None  # e.g. the front-end went away; stop trying


# --- attention (lesson 01) ---

def attention_heatmap(probs: Tensor, tokens: list[str] | None = None, *,
                      title: str = "Attention probabilities") -> go.Figure:
    """Heatmap of post-softmax attention: keys on x, queries on y (query 0 on top).

    probs (T, S) for one head, or (H, T, S) with a slider over heads. The T queries are the last T of the
    S keys (as with a KV cache), so `tokens` has S strings and the query labels are its last T.
    """
    if probs.dim() not in (2, 3):
        raise ValueError(f"probs must be (T, S) for one head or (H, T, S) for H heads, got shape "
                         f"{tuple(probs.shape)}")
    heads = probs.detach().float().cpu().reshape(-1, *probs.shape[-2:]).numpy()  # (H, T, S)
    n_heads, t, s = heads.shape
    if t > s:
        raise ValueError(f"probs has T={t} queries but only S={s} keys; queries attend to at most S keys")
    if tokens is not None and len(tokens) != s:
        raise ValueError(f"got {len(tokens)} tokens for S={s} keys; pass one token string per key")
    # numeric axes + tick labels: a categorical axis would merge repeated tokens
    keys = tokens if tokens is not None else [str(j) for j in range(s)]
    axis = dict(tickmode="array", tickvals=list(range(s)), ticktext=keys)
    zmax = float(heads.max()) or 1.0  # one colour scale for all heads, so they can be compared
    fig = go.Figure(layout=dict(title=title, template="plotly_white", xaxis=dict(title="key", **axis),
                                yaxis=dict(title="query", autorange="reversed", tickmode="array",
                                           tickvals=list(range(t)), ticktext=keys[s - t:])))
    for h in range(n_heads):
        fig.add_trace(go.Heatmap(z=heads[h], x=list(range(s)), y=list(range(t)), zmin=0.0, zmax=zmax,
                                 colorscale="Blues", visible=h == 0, name=f"head {h}",
                                 hovertemplate="query %{y} → key %{x}<br>p = %{z:.3f}<extra></extra>"))
    if probs.dim() == 3:
        steps = [dict(method="update", label=str(h), args=[{"visible": [i == h for i in range(n_heads)]}])
                 for h in range(n_heads)]
        fig.update_layout(sliders=[dict(active=0, currentvalue=dict(prefix="head "), steps=steps)])
    return fig


# --- KV cache (lesson 02) ---

def kv_bytes_chart(rows: dict[str, int], *, title: str = "KV cache bytes per token",
                   log_y: bool = False) -> go.Figure:
    """Static bar chart of bytes per token for named configurations (e.g. measured from KVCache objects)."""
    names, values = list(rows), [int(v) for v in rows.values()]
    bar = go.Bar(x=names, y=values, text=[_human(v) for v in values], textposition="outside",
                 marker_color=MUTED, hovertemplate="%{x}: %{y:,} bytes/token<extra></extra>")
    return go.Figure(bar, layout=dict(title=title, template="plotly_white", yaxis_title="bytes per token",
                                      xaxis_title="configuration", yaxis_type="log" if log_y else "linear"))


def decode_speed_figure(contexts: list[int], speeds: dict[str, list[float]], *,
                        title: str = "Decoding speed vs context length") -> go.Figure:
    """Tokens/s per context length, one line per method (e.g. with / without the KV cache), log y axis."""
    for name, values in speeds.items():
        if len(values) != len(contexts):
            raise ValueError(f"speeds[{name!r}] has {len(values)} values for {len(contexts)} contexts")
    fig = go.Figure(layout=dict(title=title, template="plotly_white", yaxis_type="log",
                                xaxis_title="context (tokens already seen)", yaxis_title="tokens per second"))
    for name, values in speeds.items():
        fig.add_scatter(x=list(contexts), y=list(values), mode="lines+markers", name=name)
    return fig


SHAPE_NAMES = ("n_layers", "n_kv_heads", "head_dim")  # the controls a preset fills
RUN_NAMES = ("context", "batch", "dtype")  # the controls that apply to every preset


def _kv_controls(presets: dict[str, dict[str, int]]) -> dict[str, widgets.Widget]:
    style = {"description_width": "initial"}
    first = presets[next(iter(presets))]

    def number(description, value, maximum):
        return widgets.BoundedIntText(value=value, min=1, max=maximum, description=description, style=style)

    controls = {
        "preset": widgets.Dropdown(options=[*presets, CUSTOM], value=next(iter(presets)), description="model",
                                   style=style),
        "n_layers": number("layers", first["n_layers"], 1024),
        "n_kv_heads": number("KV heads", first["n_kv_heads"], 1024),
        "head_dim": number("head width", first["head_dim"], 8192),
        "context": number("context (tokens)", 4096, 2**24),
        "batch": number("batch (sequences)", 1, 4096),
        "dtype": widgets.Dropdown(options=list(DTYPES), value="bfloat16", description="cache dtype",
                                  style=style),
    }
    for name, control in controls.items():
        control.add_class("kv-control")
        control.add_class(f"kv-{name.replace('_', '-')}")  # e.g. .kv-n-layers, .kv-context
    return controls


class KVCacheCalculator(widgets.VBox):
    """The calculator widget: controls, an HTML readout and a bar chart, all fed by kv_cache_report.

    Attributes for tests: `controls` (dict of widgets), `readout` (HTML), `chart` (the displayed chart
    widget), `figure` (its plotly figure) and `report` (the latest kv_cache_report result).
    """

    def __init__(self, presets: dict[str, dict[str, int]], *, measured_bytes_per_token: int | None = None,
                 measured_dtype: str = "float32"):
        self.presets, self.measured, self.measured_dtype = presets, measured_bytes_per_token, measured_dtype
        self.controls = c = _kv_controls(presets)
        self.readout = widgets.HTML()
        self.readout.add_class("kv-readout")
        bars = go.Figure(go.Bar(x=list(presets), y=[0.0] * len(presets), hovertemplate="%{x}: %{y:.2f} GiB"),
                         layout=dict(template="plotly_white", yaxis_title="KV cache (GiB)", height=340,
                                     margin=dict(t=50, b=40)))
        widget = _figure_widget(bars)  # without anywidget: a static figure redrawn into an Output
        self.figure = widget if widget is not None else bars
        self.chart = widget if widget is not None else widgets.Output()
        self.chart.add_class("kv-chart")
        self.report: dict[str, int] = {}
        self._filling = False  # True while a preset writes the shape controls
        columns = [widgets.VBox([c[n] for n in ("preset", *SHAPE_NAMES)]),
                   widgets.VBox([c[n] for n in RUN_NAMES])]
        super().__init__([widgets.HBox(columns), self.readout, self.chart])
        self.add_class("kv-calculator")
        c["preset"].observe(self._on_preset, names="value")
        for name in SHAPE_NAMES:
            c[name].observe(self._on_shape, names="value")
        for name in RUN_NAMES:
            c[name].observe(self.refresh, names="value")
        self.refresh()

    def settings(self) -> dict:
        return {n: self.controls[n].value for n in (*SHAPE_NAMES, *RUN_NAMES)}

    def _on_preset(self, change) -> None:
        if change["new"] != CUSTOM:
            self._filling = True
            try:
                for name in SHAPE_NAMES:
                    self.controls[name].value = self.presets[change["new"]][name]
            finally:
                self._filling = False
        self.refresh()

    def _on_shape(self, _change) -> None:
        if self._filling:
            return
        chosen = self.presets.get(self.controls["preset"].value)
        if chosen is not None and any(self.controls[n].value != chosen[n] for n in SHAPE_NAMES):
            self.controls["preset"].value = CUSTOM  # _on_preset then refreshes
        else:
            self.refresh()

    def refresh(self, _change=None) -> None:
        s = self.settings()
        self.report = r = kv_cache_report(**s)
        lines = [f"<b>{_human(r['bytes_per_token'])} per token</b> "
                 f"({r['bytes_per_token']:,} bytes in {s['dtype']})",
                 f"<b>{_human(r['total_bytes'], 2)}</b> for {s['batch']:,} × {s['context']:,} tokens"]
        if self.measured is not None and self.controls["preset"].value == COURSE_MODEL:
            lines.append(self._measured_line())
        self.readout.value = "<br>".join(lines)
        self._update_chart(s)

    def _measured_line(self) -> str:
        formula = kv_cache_report(**self.presets[COURSE_MODEL], context=1, dtype=self.measured_dtype)
        ok = formula["bytes_per_token"] == self.measured
        return (f"measured from the cache tensors: {self.measured:,} bytes/token ({self.measured_dtype}) "
                f"{'✓ equals' if ok else '✗ differs from'} the formula's {formula['bytes_per_token']:,}")

    def _update_chart(self, s: dict) -> None:
        current = self.controls["preset"].value
        rows = dict(self.presets)
        if current == CUSTOM:  # the user's own shape gets a bar of its own
            rows[CUSTOM] = {n: s[n] for n in SHAPE_NAMES}
        run = {n: s[n] for n in RUN_NAMES}
        gib = [kv_cache_report(**shape, **run)["total_bytes"] / 2**30 for shape in rows.values()]
        bar = self.figure.data[0]
        with self.figure.batch_update():
            bar.x, bar.y = list(rows), gib
            bar.marker.color = [HIGHLIGHT if name == current else MUTED for name in rows]
            self.figure.layout.title.text = (f"KV cache of {s['batch']:,} × {s['context']:,} tokens "
                                             f"in {s['dtype']}")
        if self.chart is not self.figure and _in_kernel():
            self.chart.clear_output(wait=True)
            with self.chart:
                display(self.figure)


def kv_cache_calculator(model_cfg=None, *, measured_bytes_per_token: int | None = None,
                        measured_dtype: str = "float32") -> KVCacheCalculator:
    """The KV-cache calculator of lesson 02: presets of real models, shape/context/batch/dtype controls.

    With `model_cfg` (a ModelConfig) the presets include this course's model, and `measured_bytes_per_token`
    (read from a KVCache allocated in `measured_dtype`) is shown beside the formula with a ✓ when they agree.
    """
    presets = dict(KV_PRESETS)
    if model_cfg is not None:
        presets[COURSE_MODEL] = {"n_layers": model_cfg.n_layers, "n_kv_heads": model_cfg.n_heads,
                                 "head_dim": model_cfg.head_dim}
    return KVCacheCalculator(presets, measured_bytes_per_token=measured_bytes_per_token,
                             measured_dtype=measured_dtype)
