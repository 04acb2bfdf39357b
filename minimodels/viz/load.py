"""Expert load (lesson 08): how many tokens each expert gets, step by step, layer by layer, live while training.

- `expert_load_figure(history)`: the load of every expert over training as a heatmap (steps × experts, one column
  per MoE layer; colour = tokens / mean tokens, so 1 is a fair share and 0 a dead expert), MaxVio and dead
  experts per step under it, and, for aux-loss-free runs, every expert's router bias (one line per expert).
- `watch_expert_load(model, data, cfg)`: runs `train()` and redraws that figure while it runs (a FigureWidget in
  a notebook with a kernel); when training ends a static figure replaces it, so the notebook keeps it when saved.
- `load_histograms_figure(history)`: tokens per expert at one step, per layer (and per run), with the mean load,
  MaxVio and the dead experts marked.
- `ablation_rows` / `ablation_figure`: validation loss and MaxVio of the balancing ablation, from live histories
  or from the saved benchmark results (benchmarks/bench_moe.py, its "ablation" part).
The histories are train()'s (keys expert_load, max_vio, dead_experts, router_bias, moe_layers: balance.py's
record_routing). Taught in lessons/08_load_balancing.ipynb.
"""

# Shapes: S recorded steps, L MoE layers, E routed experts

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from . import common

CSS_CLASS = "mm-expert-load"  # the live widget's class (the browser test looks for it)
DEAD = "#d62728"  # dead experts and overload marks
HIGH = "#f16913"  # the most loaded expert
LOAD_SCALE = [[0.0, "#ffffff"], [0.25, "#c6dbef"], [0.5, "#4292c6"], [0.75, "#f16913"], [1.0, "#7f0000"]]


def _check_history(history: dict) -> None:
    if not isinstance(history, dict) or not history.get("expert_load"):
        raise ValueError("the history holds no expert load: pass the history train() returned for a model with "
                         "MoE layers (ffn='moe'), after at least one step")


def _relative(loads: list[int]) -> list[float]:
    """Tokens per expert divided by the mean: 1 = a fair share, 0 = dead."""
    mean = sum(loads) / len(loads)
    return [c / mean if mean else 0.0 for c in loads]


def _rows(history: dict) -> list[str]:
    rows = ["load", "maxvio"]
    return rows + ["bias"] if history.get("router_bias") else rows


def _trace_data(history: dict) -> list[dict]:
    """The data of every trace of expert_load_figure, in the order it adds them: per layer the heatmap (z: E × S,
    tokens / mean), MaxVio, dead-expert marks, then (bias runs) one bias line per expert. The live view writes
    these into its traces at each redraw, without rebuilding the figure (make_subplots costs far more)."""
    steps = history["step"][-len(history["expert_load"]):]
    n_experts = len(history["expert_load"][0][0])
    out = []
    for col in range(len(history["moe_layers"])):
        share = [_relative(step[col]) for step in history["expert_load"]]  # (S, E)
        out.append(dict(x=steps, z=[[row[e] for row in share] for e in range(n_experts)]))
        out.append(dict(x=steps, y=[s[col] for s in history["max_vio"]]))
        dead = [(x, s[col]) for x, s in zip(steps, history["dead_experts"]) if s[col]]
        out.append(dict(x=[d[0] for d in dead], y=[d[1] for d in dead]))
        if history.get("router_bias"):
            out += [dict(x=steps, y=[b[col][e] for b in history["router_bias"]]) for e in range(n_experts)]
    return out


def expert_load_figure(history: dict, *, title: str = "Expert load over training", zmax: float = 3.0) -> go.Figure:
    """Heatmap of tokens per expert / mean (steps × experts) per MoE layer, MaxVio and dead experts per step,
    and the router bias of every expert when the run used aux-loss-free balancing. Colours stop at `zmax`."""
    _check_history(history)
    layers, rows = history["moe_layers"], _rows(history)
    n_experts = len(history["expert_load"][0][0])
    heights = {"load": 0.5, "maxvio": 0.25, "bias": 0.25}
    fig = make_subplots(rows=len(rows), cols=len(layers), shared_xaxes=True, vertical_spacing=0.06,
                        horizontal_spacing=0.04, row_heights=[heights[r] for r in rows],
                        subplot_titles=[f"layer {lay}" for lay in layers])
    data = iter(_trace_data(history))
    for col, _ in enumerate(layers, start=1):
        fig.add_heatmap(**next(data), y=list(range(n_experts)), zmin=0, zmax=zmax, colorscale=LOAD_SCALE,
                        showscale=col == 1, colorbar=dict(title="load / mean", len=0.45, y=0.78),
                        hovertemplate="step %{x}, expert %{y}: %{z:.2f}× the mean load<extra></extra>",
                        row=1, col=col)
        fig.add_scatter(**next(data), mode="lines", name="MaxVio", line=dict(color="#333", width=1.5),
                        showlegend=col == 1, legendgroup="maxvio",
                        hovertemplate="step %{x}: MaxVio %{y:.2f}<extra></extra>", row=2, col=col)
        fig.add_scatter(**next(data), mode="markers", name="dead experts", marker=dict(color=DEAD, symbol="x", size=6),
                        showlegend=col == 1, legendgroup="dead",
                        hovertemplate="step %{x}: %{y} dead experts<extra></extra>", row=2, col=col)
        if "bias" in rows:
            for e in range(n_experts):
                fig.add_scatter(**next(data), mode="lines", name=f"bias of expert {e}", showlegend=False,
                                line=dict(width=1, color=qualitative.Plotly[e % len(qualitative.Plotly)]),
                                hovertemplate=f"expert {e}, step %{{x}}: b = %{{y:.4f}}<extra></extra>",
                                row=3, col=col)
    fig.update_yaxes(title_text="expert", row=1, col=1)
    fig.update_yaxes(title_text="MaxVio / dead", rangemode="tozero", row=2, col=1)
    if "bias" in rows:
        fig.update_yaxes(title_text="router bias b_i", row=3, col=1)
    fig.update_xaxes(title_text="step", row=len(rows))
    fig.update_layout(title=title, template="plotly_white", height=260 + 140 * len(rows),
                      legend=dict(orientation="h", y=-0.12))
    return fig


class _LiveLoad:
    """The live figure while train() runs: created at the first step that has routing statistics, redrawn at
    most every `min_interval_s`, replaced by a static figure by `finish`."""

    def __init__(self, title: str, show: bool, min_interval_s: float, clock: Callable[[], float]):
        self.title, self.show, self.min_interval_s, self.clock = title, show, min_interval_s, clock
        self.chart = self.box = self.handles = None
        self.redraws, self._last = 0, -math.inf
        self.history: dict = {}  # the run's history, as of the last step (train() fills it in place)

    def __call__(self, step: int, history: dict) -> None:
        self.history = history
        if not self.show or not history.get("expert_load"):
            return
        now = self.clock()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        try:  # a live chart is a nicety: never let it stop the training run
            if self.chart is None and self.handles is None:
                self._start(history)
            elif self.chart is not None:
                self._redraw(history)
        except Exception:
            self.chart = None  # e.g. the front-end went away; finish() still shows the static figure

    def _start(self, history: dict) -> None:
        self.chart = common._figure_widget(expert_load_figure(history, title=self.title))
        if self.chart is None:  # anywidget missing: only the static figure, at the end
            self.handles = ()
            return
        key = common.new_hint_key()
        self.box = widgets.VBox([common.hint_hider(key), self.chart])
        self.box.add_class(CSS_CLASS)
        self.handles = common.display_live(self.box, key, "The live expert-load chart")
        self.redraws += 1

    def _redraw(self, history: dict) -> None:
        data = _trace_data(history)
        if len(data) != len(self.chart.data):
            return
        with self.chart.batch_update():
            for trace, values in zip(self.chart.data, data):
                for key, value in values.items():
                    setattr(trace, key, value)
        self.redraws += 1

    def finish(self, history: dict) -> go.Figure | None:
        if not history.get("expert_load"):
            return None
        fig = expert_load_figure(history, title=self.title)
        if not self.show:
            return fig
        if not self.handles:  # no live chart was displayed: show the figure now
            display(fig)
            return fig
        common.replace_live(self.handles, self.box, fig)  # the figure's output, saved with the notebook
        self.chart = self.box = self.handles = None
        return fig


def watch_expert_load(model, data, cfg, *, title: str = "Expert load over training", widget: bool | None = None,
                      min_interval_s: float = 1.0, clock: Callable[[], float] | None = None,
                      callback: Callable[[int, dict], None] | None = None) -> dict:
    """train(model, data, cfg) with the expert-load figure redrawn while it runs; returns train()'s history.
    When training ends (or is interrupted) a static figure of the steps that ran replaces the live one.
    widget: None = live only inside a kernel; callback(step, history) runs after each step as in train()."""
    import time

    from ..train import train

    live = _LiveLoad(title, common._in_kernel() if widget is None else widget, min_interval_s,
                     clock or time.monotonic)

    def each_step(step: int, history: dict) -> None:
        live(step, history)
        if callback is not None:
            callback(step, history)

    try:
        return train(model, data, cfg, callback=each_step)
    finally:  # also after Ctrl-C: the steps that ran stay on screen as a static figure
        live.finish(live.history)


def _at(history: dict, step: int) -> tuple[list[list[int]], int]:
    _check_history(history)
    n = len(history["expert_load"])
    if not -n <= step < n:
        raise ValueError(f"step={step}: the history holds {n} recorded steps (use -1 for the last)")
    return history["expert_load"][step], history["step"][-n:][step]


def load_histograms_figure(history_or_runs: dict, *, step: int = -1,
                           title: str = "Tokens per expert, per layer") -> go.Figure:
    """Bars of tokens per expert at one recorded step (default the last), one column per MoE layer and one row
    per run ({name: history} or a single history); a dashed line at the mean load, dead experts marked with a
    red ×, MaxVio (max load / mean − 1) in each panel's title."""
    runs = {"": history_or_runs} if "expert_load" in history_or_runs or "step" in history_or_runs \
        else history_or_runs
    if not runs:
        raise ValueError("pass a train() history or {run name: history}")
    picked = {name: _at(h, step) for name, h in runs.items()}
    layers = next(iter(runs.values()))["moe_layers"]
    titles = []
    for name, (loads, at) in picked.items():
        for lay, counts in zip(layers, loads):
            mean = sum(counts) / len(counts)
            vio = max(counts) / mean - 1 if mean else 0.0
            dead = sum(c == 0 for c in counts)
            titles.append(f"{name + ': ' if name else ''}layer {lay}, step {at}<br>MaxVio {vio:.2f}, {dead} dead")
    fig = make_subplots(rows=len(runs), cols=len(layers), subplot_titles=titles, vertical_spacing=0.18,
                        horizontal_spacing=0.05)
    for r, (loads, _) in enumerate(picked.values(), start=1):
        for c, counts in enumerate(loads, start=1):
            mean, experts = sum(counts) / len(counts), list(range(len(counts)))
            colors = [DEAD if n == 0 else (HIGH if n == max(counts) else "#4292c6") for n in counts]
            fig.add_bar(x=experts, y=counts, marker_color=colors, showlegend=False,
                        hovertemplate="expert %{x}: %{y} tokens<extra></extra>", row=r, col=c)
            dead = [e for e, n in zip(experts, counts) if n == 0]
            fig.add_scatter(x=dead, y=[0] * len(dead), mode="markers", marker=dict(symbol="x", size=10, color=DEAD),
                            name="dead expert", showlegend=r == c == 1 and bool(dead), legendgroup="dead",
                            hovertemplate="expert %{x}: dead (no token)<extra></extra>", row=r, col=c)
            fig.add_hline(y=mean, line=dict(dash="dash", color="#333", width=1), row=r, col=c)
    n_experts = len(next(iter(picked.values()))[0][0])
    fig.update_xaxes(title_text="expert", dtick=1 if n_experts <= 16 else None, row=len(runs))
    fig.update_yaxes(title_text="tokens", col=1)
    fig.update_layout(title=title, template="plotly_white", height=140 + 250 * len(runs), bargap=0.15)
    return fig


# --- the balancing ablation ---------------------------------------------------------------------------------


def run_max_vio(history: dict, *, tail: float = 0.1) -> float:
    """MaxVio of a run: the mean over its last `tail` share of steps (a single step is noisy) and over its MoE
    layers, as benchmarks/bench_moe.py's max_vio_mean."""
    _check_history(history)
    vio = history["max_vio"]
    last = vio[len(vio) - max(1, round(len(vio) * tail)):]
    return statistics.fmean(v for step in last for v in step)


def ablation_rows(histories: dict[str, dict]) -> list[dict]:
    """One row per live run: {"name", "val_loss", "max_vio"} (final validation loss; run_max_vio)."""
    return [{"name": name, "val_loss": h["val_loss"][-1], "max_vio": run_max_vio(h)} for name, h in histories.items()]


def _saved_summary(results: dict) -> list[dict]:
    """The ablation summary rows of the plan's step budget (a summary may also hold shorter runs)."""
    summary = results.get("ablation", {}).get("summary", [])
    steps = results.get("settings", {}).get("plan", {}).get("steps")
    planned = [r for r in summary if r.get("steps") == steps]
    return planned or summary


def saved_ablation_rows(results: dict) -> list[dict]:
    """The rows of ablation_figure from bench_moe.py's saved results (their "ablation" part), in its arm order;
    [] when the results hold no ablation. val_loss and max_vio are means over seeds (MaxVio: last 10% of steps)."""
    rows = []
    for r in _saved_summary(results):
        rows.append({"name": r["arm"], "val_loss": r["val_loss_mean"], "max_vio": r["max_vio_mean"],
                     "val_loss_std": r.get("val_loss_std"), "seeds": r.get("seeds"), "steps": r.get("steps")})
    return rows


def saved_max_vio_figure(results: dict, *, title: str = "MaxVio over training, per arm (saved benchmark)") -> go.Figure:
    """MaxVio (mean over layers and seeds) against step for every arm of the saved ablation."""
    summary = [r for r in _saved_summary(results) if r.get("max_vio_curve_mean")]
    if not summary:
        raise ValueError("the results hold no ablation summary: run benchmarks/bench_moe.py without --skip-ablation")
    fig = go.Figure(layout=dict(title=title, template="plotly_white", height=380, xaxis_title="step",
                                yaxis=dict(title="MaxVio (max load / mean − 1)", rangemode="tozero")))
    for i, r in enumerate(summary):
        curve = r["max_vio_curve_mean"]
        fig.add_scatter(x=[p[0] for p in curve], y=[p[1] for p in curve], mode="lines", name=r["arm"],
                        line=dict(color=qualitative.Plotly[i % 10]),
                        hovertemplate=f"{r['arm']}, step %{{x}}: MaxVio %{{y:.2f}}<extra></extra>")
    return fig


def ablation_figure(rows: list[dict], *, title: str = "Load balancing: validation loss and MaxVio") -> go.Figure:
    """Two bar panels, one bar per arm: validation loss and MaxVio. Rows carry "name", "val_loss", "max_vio"
    and optionally "val_loss_std", "max_vio_std" (error bars over seeds) and "seeds"."""
    if not rows:
        raise ValueError("no ablation rows to draw (pass ablation_rows(histories) or the saved results' rows)")
    names = [r["name"] for r in rows]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["validation loss (nats per token)", "MaxVio (max load / mean − 1)"])
    for col, key in enumerate(("val_loss", "max_vio"), start=1):
        stds = [r.get(f"{key}_std") for r in rows]
        errors = dict(type="data", array=stds, visible=True) if all(s is not None for s in stds) else None
        fig.add_bar(x=names, y=[r[key] for r in rows], error_y=errors, showlegend=False,
                    marker_color=[qualitative.Plotly[i % 10] for i in range(len(rows))],
                    text=[f"{r[key]:.3f}" if key == "val_loss" else f"{r[key]:.2f}" for r in rows],
                    textposition="outside", hovertemplate="%{x}: %{y:.4f}<extra></extra>", row=1, col=col)
    losses = [r["val_loss"] for r in rows]
    spread = max(losses) - min(losses)
    pad = max(spread, 0.02)
    fig.update_yaxes(range=[min(losses) - pad, max(losses) + pad], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", height=400)
    return fig


__all__ = ["ablation_figure", "ablation_rows", "CSS_CLASS", "expert_load_figure", "load_histograms_figure",
           "run_max_vio", "saved_ablation_rows", "saved_max_vio_figure", "watch_expert_load"]
