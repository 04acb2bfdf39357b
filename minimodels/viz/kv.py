"""KV-cache pictures (lesson 02): bytes per token of named configurations, and the KV-cache calculator, a
widget that sizes the cache of real models (presets from their config.json) and of this course's model.

Every number comes from minimodels.kv_cache (kv_cache_report, KV_PRESETS); this file only draws. Charts
use one byte unit each. The calculator needs a running kernel: displayed, it leaves a note saying so for
a notebook reopened without one (viz/common.py). Taught in lessons/02_kv_cache.ipynb (and lesson 00).
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

from ..kv_cache import DTYPES, KV_PRESETS, kv_cache_report
from . import common
from .common import _human

COURSE_MODEL = "this course's model"  # preset name the calculator adds for a given ModelConfig
CUSTOM = common.CUSTOM  # preset name once a shape control no longer matches the chosen preset
HIGHLIGHT, MUTED = "#d62728", "#9fb7d4"  # current configuration vs the other bars


def kv_bytes_chart(rows: dict[str, int], *, title: str = "KV cache bytes per token", log_y: bool = False,
                   unit: str | None = None) -> go.Figure:
    """Static bar chart of bytes per token for named configurations (e.g. measured from KVCache objects).

    Bars, labels and axis share one binary unit: `unit` ("B", "KiB", "MiB", ...) or, by default, the unit
    of the largest bar. log_y draws a log axis whose ticks carry full values (1, 10, 100, ...).
    """
    names, values = list(rows), [int(v) for v in rows.values()]
    unit = unit or common.byte_unit(values)
    if unit not in common.BYTE_UNITS:
        raise ValueError(f"unit={unit!r}: use one of {list(common.BYTE_UNITS)}")
    scaled = [v / common.BYTE_UNITS[unit] for v in values]
    bar = go.Bar(x=names, y=scaled, text=[common.in_unit(v, unit) for v in values], textposition="outside",
                 customdata=values, marker_color=MUTED, cliponaxis=False,
                 hovertemplate="%{x}: %{customdata:,} bytes/token<extra></extra>")
    axis_title = f"{unit} per token"
    yaxis = common.log_axis([*scaled, min(scaled) / 2], axis_title) if log_y else dict(title=axis_title, tickformat=",")
    return go.Figure(bar, layout=dict(title=title, template="plotly_white", yaxis=yaxis,
                                      xaxis_title="configuration", margin=dict(t=80)))


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


class KVCacheCalculator(common.PresetWidget):
    """The calculator widget: controls, an HTML readout and a bar chart, all fed by kv_cache_report.

    Attributes for tests: `controls` (dict of widgets), `readout` (HTML), `chart` (the displayed chart
    widget), `figure` (its plotly figure) and `report` (the latest kv_cache_report result).
    """

    what, shape_names, run_names = "The KV-cache calculator", SHAPE_NAMES, RUN_NAMES

    def __init__(self, presets: dict[str, dict[str, int]], *, measured_bytes_per_token: int | None = None,
                 measured_dtype: str = "float32"):
        self.presets, self.measured, self.measured_dtype = presets, measured_bytes_per_token, measured_dtype
        self.controls = c = _kv_controls(presets)
        self.readout = widgets.HTML()
        self.readout.add_class("kv-readout")
        bars = go.Figure(go.Bar(x=list(presets), y=[0.0] * len(presets), hovertemplate="%{x}: %{y:.2f} GiB"),
                         layout=dict(template="plotly_white", yaxis_title="KV cache (GiB)", height=340,
                                     margin=dict(t=50, b=40)))
        widget = common._figure_widget(bars)  # without anywidget: a static figure redrawn into an Output
        self.figure = widget if widget is not None else bars
        self.chart = widget if widget is not None else widgets.Output()
        self.chart.add_class("kv-chart")
        self.report: dict[str, int] = {}
        columns = [widgets.VBox([c[n] for n in ("preset", *SHAPE_NAMES)]),
                   widgets.VBox([c[n] for n in RUN_NAMES])]
        self._assemble([widgets.HBox(columns), self.readout, self.chart], "kv-calculator")

    def settings(self) -> dict:
        return {n: self.controls[n].value for n in (*SHAPE_NAMES, *RUN_NAMES)}


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
        if self.chart is not self.figure and common._in_kernel():
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
