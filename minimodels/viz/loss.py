"""Loss curves (lesson 01): a static figure of one or several `train()` histories, and the live curve that
`train(..., plot=True)` redraws while it runs and replaces with a static figure when it ends.

The static figure is what survives: widget outputs need their kernel, so a reopened notebook would show an
empty live chart, while a plotly figure is saved with the notebook. Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display
from plotly.colors import qualitative

from . import common

LOSS_AXES = dict(xaxis_title="step", yaxis_title="cross-entropy loss (nats)")


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
    curve is always drawn. `update(history, final=True)` forces a redraw. `finish(history)` puts a static
    figure of the finished run where the live chart was, so the curve survives saving and reopening.
    """

    def __init__(self, history: dict, *, title: str = "Loss", min_interval_s: float = 0.5,
                 widget: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.title, self.min_interval_s, self.clock = title, min_interval_s, clock
        self.redraws = 0  # how many times the traces were actually refreshed
        self._last_time, self._last_val = -math.inf, len(history["val_step"])
        self.widget: go.FigureWidget | None = None
        self._handles: tuple | None = None  # (note, chart) display handles, once shown in a notebook
        self._box: widgets.VBox | None = None  # what was displayed: the hint's hider and the widget
        self.shown = common._in_kernel() if widget is None else widget  # False: finish() displays nothing
        if not self.shown:
            return
        try:  # live plotting is a nicety: never let it break a training run
            self.widget = common._figure_widget(loss_curve_figure(history, title=title))
            if self.widget is not None and common._in_kernel():
                key = common.new_hint_key()
                self._box = widgets.VBox([common.hint_hider(key), self.widget])
                self._handles = common.display_live(self._box, key, "The live loss chart")
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

    def finish(self, history: dict) -> go.Figure:
        """The finished run as a static figure: it replaces the live chart (or is displayed, if none was).

        Returns the figure. Outside a notebook nothing is displayed. The live widget is closed afterwards.
        """
        fig = loss_curve_figure(history, title=self.title)
        if not self.shown or not common._in_kernel():
            return fig
        if self._handles is None:  # no live chart was displayed (e.g. anywidget missing): show it now
            display(fig)
            return fig
        common.replace_live(self._handles, self._box, fig)  # same place, now a figure saved with the notebook
        self.widget, self._box, self._handles = None, None, None
        return fig
