"""Helpers shared by the course's figures: kernel detection, byte units, readable log ticks, and the
"run this cell" note a live widget leaves behind when its notebook is reopened without a kernel.

Why the note: JupyterLab saves a widget output as a reference to a model that lives in the kernel. Reopened
later, that output shows only "Loading widget..." or "Error displaying widget: model not found"
(jupyterlab_widgets' WidgetRenderer). So every live widget is displayed after a small HTML note, and the live
widget carries a hidden <style> that hides exactly that note: live, the note is invisible; reopened without a
kernel, the style is gone and the note says to run the cell. Not taught; used by the other viz modules.
"""

from __future__ import annotations

import math
import uuid

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import HTML, display

BYTE_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
HINT_CLASS = "mm-kernel-hint"  # every note has this class, plus one of its own (HINT_CLASS-<key>)


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


def byte_unit(values: list[float]) -> str:
    """The binary unit in which the largest value reads between 1 and 1024 (one unit for a whole chart)."""
    top = max((abs(v) for v in values), default=0)
    unit = "B"
    for name, size in BYTE_UNITS.items():
        if top >= size:
            unit = name
    return unit


def in_unit(n: float, unit: str) -> str:
    """`n` bytes written in `unit` with three significant digits: in_unit(69120, 'KiB') -> '67.5 KiB'."""
    if unit not in BYTE_UNITS:
        raise ValueError(f"unit={unit!r}: use one of {list(BYTE_UNITS)}")
    value = n / BYTE_UNITS[unit]
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values 1, 2, 5 × 10^k from the last one at or below `lo` to the first at or above `hi`.

    Over more than 2.5 decades only powers of ten. Plotly's own log ticks label minor steps with single
    digits ("2, 5, 100, 2, 5"), which read as different numbers; these all carry their full value.
    """
    if not (lo > 0 and hi > 0):
        raise ValueError(f"log ticks need positive bounds, got lo={lo}, hi={hi}")
    lo, hi = min(lo, hi), max(lo, hi)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    steps = (1, 2, 5) if math.log10(hi / lo) <= 2.5 else (1,)  # wide ranges: fewer, rounder ticks
    ticks = [m * 10.0**k for k in decades for m in steps]
    first = max(t for t in ticks if t <= lo * 1.0001)
    last = min(t for t in ticks if t >= hi / 1.0001)
    if first == last:  # one value: a tick on each side of it
        first, last = ticks[ticks.index(first) - 1], ticks[ticks.index(last) + 1]
    return [t for t in ticks if first <= t <= last]


def log_axis(values: list[float], title: str) -> dict:
    """A plotly log axis over positive `values`: ticks at full numbers (see log_ticks) and a range that
    ends on a tick at each side."""
    positive = [v for v in values if v > 0]
    if not positive:
        raise ValueError(f"a log axis needs positive values, got {values}")
    ticks = log_ticks(min(positive), max(positive))
    text = [f"{t:,.0f}" if t >= 1 else f"{t:g}" for t in ticks]
    return dict(type="log", title=title, tickmode="array", tickvals=ticks, ticktext=text,
                range=[math.log10(ticks[0]), math.log10(ticks[-1])])


# --- the "run this cell" note of live widgets ---

def kernel_hint(key: str, what: str) -> HTML:
    """The note shown where a live widget cannot render: it names the widget and says to run its cell."""
    return HTML(f'<div class="{HINT_CLASS} {HINT_CLASS}-{key}" style="color:#666;font-style:italic">'
                f"{what} is a live widget: it needs this notebook's running kernel. If you see nothing, "
                f'"Loading widget..." or "model not found" below, run this cell.</div>')


def hint_hider(key: str) -> widgets.HTML:
    """An invisible widget whose <style> hides the note of `key` while the widget it sits in is rendered."""
    hider = widgets.HTML(f"<style>.{HINT_CLASS}-{key} {{display: none !important}}</style>",
                         layout=widgets.Layout(display="none"))
    hider.add_class("mm-hint-hider")
    return hider


def new_hint_key() -> str:
    return uuid.uuid4().hex[:12]


def display_live(widget: widgets.Widget, key: str, what: str) -> tuple:
    """Display the note of `key`, then `widget` (which must contain hint_hider(key)); return both handles.

    The handles let a caller replace the widget later (LiveLossPlot.finish puts a static figure there).
    """
    note = display(kernel_hint(key, what), display_id=True)
    shown = display(widget, display_id=True)
    return note, shown


PLOTLY_MIME = "application/vnd.plotly.v1+json"


def replace_live(handles: tuple, box: widgets.Widget, fig: go.Figure) -> None:
    """Put the static `fig` where a live widget was displayed (display_live's handles) and close the widget.

    The figure's mime bundle goes into the same output, so it is saved with the notebook and reopens without a
    kernel; the "run this cell" note is emptied; the live widgets are closed, so no stale view remains.
    """
    note, shown = handles
    # the figure's mime bundle, not the figure: plotly's _ipython_display_ would append a new output
    bundle = dict(fig._repr_mimebundle_() or {})  # what the default renderer shows (e.g. +text/html)
    bundle.setdefault(PLOTLY_MIME, fig.to_plotly_json())  # JupyterLab's plotly renderer reads this
    shown.update(bundle, raw=True)
    note.update({"text/plain": ""}, raw=True)  # the "run this cell" note no longer applies
    for w in (*box.children, box):
        w.close()


CUSTOM = "custom"  # preset name once a shape control no longer matches the chosen preset


class PresetWidget(widgets.VBox):
    """A live widget whose "preset" dropdown fills its shape controls; editing a shape switches it to "custom".

    Subclasses set `what` (the name the "run this cell" note gives), `shape_names` (the controls a preset fills),
    `run_names` (controls every preset shares), keep `self.controls` and `self.presets`, define `refresh()`, and
    call `_assemble(children, css_class)` at the end of `__init__`. Used by the KV-cache calculator and explorer.
    """

    what = "This widget"
    shape_names: tuple[str, ...] = ()
    run_names: tuple[str, ...] = ()

    def _assemble(self, children: list, css_class: str) -> None:
        self._filling = False  # True while a preset writes the shape controls
        self._hint_key = new_hint_key()
        super().__init__([hint_hider(self._hint_key), *children])
        self.add_class(css_class)
        self.controls["preset"].observe(self._on_preset, names="value")
        for name in self.shape_names:
            self.controls[name].observe(self._on_shape, names="value")
        for name in self.run_names:
            self.controls[name].observe(self.refresh, names="value")
        self.refresh()

    def _ipython_display_(self) -> None:
        """Displayed in a notebook: the "run this cell" note (hidden while live), then the widget."""
        display(kernel_hint(self._hint_key, self.what))
        display(self._repr_mimebundle_(), raw=True)

    def shape(self) -> dict:
        return {n: self.controls[n].value for n in self.shape_names}

    def _on_preset(self, change) -> None:
        if change["new"] != CUSTOM:
            self._filling = True
            try:
                for name in self.shape_names:
                    self.controls[name].value = self.presets[change["new"]][name]
            finally:
                self._filling = False
        self.refresh()

    def _on_shape(self, _change) -> None:
        if self._filling:
            return
        chosen = self.presets.get(self.controls["preset"].value)
        if chosen is not None and any(self.controls[n].value != chosen[n] for n in self.shape_names):
            self.controls["preset"].value = CUSTOM  # _on_preset then refreshes
        else:
            self.refresh()

    def refresh(self, _change=None) -> None:
        raise NotImplementedError
