"""The DeepSeekMoE layer drawn from a config, and the matched-budget comparison of lesson 07 (live and saved).

`moe_diagram(cfg, indices)`: one token u at the bottom, the router, the routed experts (framed by group when
n_expert_groups > 1), the shared experts beside them, and the sum at the top. Every expert is one plotly shape
named "routed:<i>" or "shared:<i>", so the number of boxes is the config's; the experts ONE token activates (its
router's `indices`, e.g. from trace_routing, plus every shared expert) are filled with the highlight colour. The
caption counts experts and parameters from flops.moe_count, the formula the FLOPs tests check.

`comparison_figure(histories)` draws the live runs of train() (validation loss against tokens and against
seconds); `benchmark_figure(results)` and `benchmark_table(results)` draw benchmarks/bench_moe.py's saved results
(schema: the "summary" rows per token, the "per_second" rows at equal wall-clock). Taught in
lessons/07_deepseekmoe.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..config import ModelConfig
from ..flops import moe_count
from .kv import HIGHLIGHT

COLORS = {"input": "#e8e8e8", "router": "#fde9c8", "routed": "#dfe8f3", "shared": "#d9f0d3", "output": "#e4d7f5",
          "active": HIGHLIGHT}
ROUTED, SHARED, GROUP = "routed:", "shared:", "group:"  # shape-name prefixes (tests count them)
CELL, BOX = 1.0, 0.82  # grid step and box size of one expert
MAX_COLUMNS = 16  # experts per row of the routed grid
VARIANTS = ("dense", "gshard", "fine", "deepseekmoe")  # bench_moe.py's names, in the lesson's order
VARIANT_LABELS = {"dense": "dense FFN", "gshard": "GShard top-2", "fine": "fine-grained",
                  "deepseekmoe": "fine-grained + shared (DeepSeekMoE)"}
SHORT_LABELS = {"dense": "dense", "gshard": "GShard", "fine": "fine-grained", "deepseekmoe": "DeepSeekMoE"}


@dataclass(frozen=True)
class ExpertBox:
    """One expert's box: its shape name, centre, and whether this token uses it (with its gate value)."""

    name: str
    x: float
    y: float
    active: bool
    weight: float | None = None
    group: int | None = None


def _check_indices(cfg: ModelConfig, indices: Sequence[int] | None) -> list[int]:
    if cfg.ffn != "moe":
        raise ValueError(f"moe_diagram needs an MoE config (ffn='moe'), got ffn={cfg.ffn!r}")
    if indices is None:
        return []
    chosen = [int(i) for i in indices]
    if len(chosen) != cfg.n_activated_experts or len(set(chosen)) != len(chosen):
        raise ValueError(f"indices={chosen} must name n_activated_experts={cfg.n_activated_experts} different "
                         f"routed experts (one token's row of the router's indices)")
    bad = [i for i in chosen if not 0 <= i < cfg.n_routed_experts]
    if bad:
        raise ValueError(f"indices {bad} are not routed experts: use 0 .. {cfg.n_routed_experts - 1}")
    return chosen


def layout_experts(cfg: ModelConfig, indices: Sequence[int] | None = None,
                   weights: Sequence[float] | None = None) -> tuple[list[ExpertBox], list[tuple]]:
    """Boxes of the routed experts (grouped blocks) and shared experts, and the group frames
    (name, x0, x1, y0, y1, kept). Groups a token may use are those holding its chosen experts."""
    chosen = _check_indices(cfg, indices)
    gate = dict(zip(chosen, weights)) if weights is not None else {}
    n_groups, per_group = cfg.n_expert_groups, cfg.n_routed_experts // cfg.n_expert_groups
    cols = min(per_group, MAX_COLUMNS if n_groups == 1 else 8)  # columns inside one group's block
    rows = math.ceil(per_group / cols)
    per_row = max(1, MAX_COLUMNS // cols)  # group blocks side by side
    shared_cols = max(1, min(cfg.n_shared_experts, 2))
    x_start = shared_cols * CELL + 1.0  # the shared lane sits left of the routed grid
    boxes, frames = [], []
    kept = {i // per_group for i in chosen}
    for g in range(n_groups):
        bx = x_start + (g % per_row) * (cols * CELL + 0.5)
        by = 2.6 + (g // per_row) * (rows * CELL + 0.5)
        for j in range(per_group):
            i = g * per_group + j
            x, y = bx + (j % cols) * CELL + CELL / 2, by + (j // cols) * CELL + CELL / 2
            boxes.append(ExpertBox(f"{ROUTED}{i}", x, y, i in chosen, gate.get(i), g))
        if n_groups > 1:
            frames.append((f"{GROUP}{g}", bx - 0.15, bx + cols * CELL + 0.15, by - 0.15, by + rows * CELL + 0.15,
                           g in kept))
    for s in range(cfg.n_shared_experts):
        boxes.append(ExpertBox(f"{SHARED}{s}", 0.5 + (s % shared_cols) * CELL, 2.6 + (s // shared_cols) * CELL + 0.5,
                               True))
    return boxes, frames


def moe_caption(cfg: ModelConfig) -> str:
    """Experts and parameters of one DeepSeekMoE layer: total vs what one token activates."""
    layer = moe_count(cfg, cfg.n_dense_layers)  # an MoE layer (the first n_dense_layers are dense)
    total_experts = cfg.n_shared_experts + cfg.n_routed_experts
    active = cfg.n_shared_experts + cfg.n_activated_experts
    groups = (f"; routed experts in {cfg.n_expert_groups} groups, a token uses at most {cfg.n_limited_groups}"
              if cfg.n_expert_groups > 1 else "")
    return (f"experts: {cfg.n_shared_experts} shared + {cfg.n_routed_experts} routed = {total_experts}, of width "
            f"{cfg.moe_inter_dim}; activated per token: {cfg.n_shared_experts} shared + {cfg.n_activated_experts} "
            f"routed = <b>{active} of {total_experts}</b>{groups}<br>parameters of one MoE layer (router + experts): "
            f"{layer.params:,} in total, <b>{layer.active_params:,} activated per token</b> "
            f"({layer.active_params / layer.params:.0%})")


def _arrow(x0: float, y0: float, x1: float, y1: float, name: str) -> dict:
    return dict(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
                arrowhead=2, arrowsize=1, arrowwidth=1.2, arrowcolor="#555", name=name)


def _box(fig: go.Figure, name: str, x0: float, x1: float, y0: float, y1: float, color: str, text: str = "",
         size: int = 11, bold_line: bool = False) -> None:
    fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, name=name, fillcolor=color, layer="below",
                  line=dict(color="#7a0f10" if bold_line else "#555", width=2 if bold_line else 1))
    if text:  # white on the highlight colour, black elsewhere
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False, name=name,
                           font=dict(size=size, color="white" if color == COLORS["active"] else "black"))


def moe_diagram(cfg: ModelConfig, indices: Sequence[int] | None = None, weights: Sequence[float] | None = None,
                *, token: str | None = None, title: str | None = None) -> go.Figure:
    """The DeepSeekMoE layer of `cfg`; `indices` (and `weights`): one token's chosen routed experts (its row of
    the router's output), highlighted with every shared expert. Without indices nothing routed is highlighted."""
    boxes, frames = layout_experts(cfg, indices, weights)
    fig = go.Figure()
    x_max = max(b.x for b in boxes) + CELL
    y_top = max(b.y for b in boxes) + CELL
    mid = x_max / 2
    _box(fig, "input", mid - 2.2, mid + 2.2, -0.3, 0.3, COLORS["input"],
         f"token u{f' = {token!r}' if token else ''}  (D = {cfg.dim})")
    routed_x0 = min(b.x for b in boxes if b.name.startswith(ROUTED)) - CELL / 2
    score = "softmax (V2)" if cfg.score_func == "softmax" else "sigmoid + bias for the choice (V3)"
    limit = f", {cfg.n_limited_groups} of {cfg.n_expert_groups} groups" if cfg.n_expert_groups > 1 else ""
    _box(fig, "router", routed_x0, x_max - CELL / 2, 1.1, 1.9, COLORS["router"],
         f"router: {score} scores of {cfg.n_routed_experts} experts → top-{cfg.n_activated_experts}{limit}", 10)
    for name, x0, x1, y0, y1, kept in frames:
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, name=name, layer="below",
                      fillcolor="rgba(0,0,0,0)" if kept else "rgba(120,120,120,0.18)",
                      line=dict(color="#7a0f10" if kept else "#999", width=2 if kept else 1, dash="dot"))
    small = cfg.n_routed_experts > 64  # many experts: numbers only on hover
    for b in boxes:
        kind = "shared" if b.name.startswith(SHARED) else "routed"
        color = COLORS["active"] if b.active else COLORS[kind]
        label = "" if small else (f"S{b.name[len(SHARED):]}" if kind == "shared" else b.name[len(ROUTED):])
        _box(fig, b.name, b.x - BOX / 2, b.x + BOX / 2, b.y - BOX / 2, b.y + BOX / 2, color, label, 9,
             bold_line=b.active)
    shared = [b for b in boxes if b.name.startswith(SHARED)]
    if shared:  # the lane's title above its boxes; the token feeds it directly (no router), it feeds the sum
        lane_x = sum(b.x for b in shared) / len(shared)
        lane_top = max(b.y for b in shared) + BOX / 2
        fig.add_annotation(x=lane_x, y=lane_top + 0.35, showarrow=False, text="shared<br>(always on)",
                           name="shared-title", font=dict(size=10))
        fig.add_annotation(_arrow(mid - 2.2, 0.0, lane_x, min(b.y for b in shared) - BOX / 2, "input->shared"))
        fig.add_annotation(_arrow(lane_x, lane_top + 0.7, lane_x, y_top + 0.4, "shared->output"))
    _box(fig, "output", 0.0, x_max - CELL / 2, y_top + 0.4, y_top + 1.1, COLORS["output"],
         "Σ shared outputs + Σ g<sub>i</sub> · routed outputs   (the block then adds u: h = u + …)", 10)
    fig.add_annotation(_arrow(mid, 0.3, mid, 1.1, "input->router"))
    fig.add_annotation(_arrow(mid, 1.9, mid, 2.45, "router->experts"))
    fig.add_annotation(_arrow(mid, y_top - 0.1, mid, y_top + 0.4, "experts->output"))
    fig.add_trace(go.Scatter(  # invisible markers: hovering a box names the expert (and the figure has a trace)
        x=[b.x for b in boxes], y=[b.y for b in boxes], mode="markers", marker=dict(size=14, opacity=0),
        hoverinfo="text", showlegend=False, hovertext=[_hover(b) for b in boxes]))
    fig.add_annotation(x=mid, y=-1.0, text=moe_caption(cfg), showarrow=False, name="caption", font=dict(size=11))
    active = cfg.n_shared_experts + (cfg.n_activated_experts if indices is not None else 0)
    fig.update_layout(
        title=title or f"A DeepSeekMoE layer: the {active} experts one token uses (red)",
        template="plotly_white", height=int(330 + 36 * y_top), showlegend=False, margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(visible=False, range=[-0.3, x_max + 0.3]), yaxis=dict(visible=False, range=[-1.6, y_top + 1.4]))
    return fig


def _hover(b: ExpertBox) -> str:
    if b.name.startswith(SHARED):
        return f"shared expert {b.name[len(SHARED):]}: always on, weight 1"
    i = b.name[len(ROUTED):]
    group = f" (group {b.group})" if b.group is not None else ""
    if not b.active:
        return f"routed expert {i}{group}: not chosen"
    return f"routed expert {i}{group}: chosen" + (f", gate value {b.weight:.3f}" if b.weight is not None else "")


def active_boxes(fig: go.Figure) -> list[str]:
    """Names of the highlighted expert boxes of a moe_diagram (for tests and lesson asserts)."""
    return [s.name for s in fig.layout.shapes
            if s.name and s.name.startswith((ROUTED, SHARED)) and s.fillcolor == COLORS["active"]]


# ---------------------------------------------------------------- the matched-budget comparison


def _color(i: int) -> str:
    return qualitative.Plotly[i % len(qualitative.Plotly)]


def comparison_figure(histories: dict[str, dict], *, title: str = "Matched budget, one seed: validation loss"
                      ) -> go.Figure:
    """Validation loss of train() histories against training tokens (left) and training seconds (right).

    The seconds are train()'s own clock (train_time_s), spread evenly over the steps: the per-second view."""
    if not histories:
        raise ValueError("comparison_figure needs {name: train() history}")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("per token", "per second (this machine, this run)"))
    for i, (name, h) in enumerate(histories.items()):
        if not h.get("val_step"):
            raise ValueError(f"history {name!r} has no validation points: train with eval_every > 0")
        steps = len(h["step"])
        tokens_per_step = h["tokens"] / steps
        seconds_per_step = h["train_time_s"] / steps
        x_tok = [(s + 1) * tokens_per_step for s in h["val_step"]]
        x_sec = [(s + 1) * seconds_per_step for s in h["val_step"]]
        for col, x in ((1, x_tok), (2, x_sec)):
            fig.add_scatter(x=x, y=h["val_loss"], mode="lines+markers", name=name, legendgroup=name,
                            showlegend=col == 1, line=dict(color=_color(i)), row=1, col=col,
                            hovertemplate=f"{name}: %{{y:.3f}} at %{{x:,.0f}}<extra></extra>")
    fig.update_xaxes(title_text="training tokens", row=1, col=1)
    fig.update_xaxes(title_text="training seconds", row=1, col=2)
    fig.update_yaxes(title_text="validation loss (nats/token)", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=420)
    return fig


def _plan_rows(results: dict) -> dict[str, dict]:
    """The summary rows at the plan's step budget, by variant (bench_moe.py's schema)."""
    steps = results.get("settings", {}).get("plan", {}).get("steps")
    rows = [r for r in results.get("summary", []) if steps is None or r["steps"] == steps]
    if not rows:
        raise ValueError("the results hold no summary rows at the plan's steps: run benchmarks/bench_moe.py")
    return {r["variant"]: r for r in rows}


def benchmark_figure(results: dict, *, title: str | None = None) -> go.Figure:
    """bench_moe.py's saved results: mean validation loss per variant with its seeds (left, equal tokens) and
    the loss each reaches in dense's training time (right, equal wall-clock), when the file has that view."""
    rows = _plan_rows(results)
    names = [v for v in VARIANTS if v in rows] + [v for v in rows if v not in VARIANTS]
    labels = [SHORT_LABELS.get(v, v) for v in names]
    per_second = {r["variant"]: r for r in results.get("per_second", {}).get("rows", [])}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("per token: same training tokens",
                                                        "per second: dense's training time"))
    means = [rows[v]["val_loss_mean"] for v in names]
    fig.add_bar(x=labels, y=means, marker_color=[_color(i) for i in range(len(names))], name="mean of seeds",
                error_y=dict(type="data", array=[rows[v].get("val_loss_std") or 0 for v in names]), row=1, col=1,
                hovertemplate="%{x}: %{y:.4f} (mean over seeds ± std)<extra></extra>")  # numbers: benchmark_table
    seeds_x = [SHORT_LABELS.get(v, v) for v in names for _ in rows[v].get("val_loss_by_seed", {})]
    seeds_y = [loss for v in names for loss in rows[v].get("val_loss_by_seed", {}).values()]
    fig.add_scatter(x=seeds_x, y=seeds_y, mode="markers", marker=dict(color="black", size=6), name="one seed",
                    row=1, col=1, hovertemplate="%{x}: %{y:.4f} (one seed)<extra></extra>")
    if per_second:
        timed = [v for v in names if v in per_second]
        losses = [per_second[v]["val_loss_at_that_time"] for v in timed]
        fig.add_bar(x=[SHORT_LABELS.get(v, v) for v in timed], y=losses, showlegend=False, row=1, col=2,
                    marker_color=[_color(names.index(v)) for v in timed], textposition="outside",
                    text=[f"{loss:.3f}{'' if per_second[v].get('exact', True) else ' (extrapolated)'}"
                          for v, loss in zip(timed, losses)],
                    hovertemplate="%{x}: %{y:.4f} after dense's training time<extra></extra>")
    shown = seeds_y + means + [r["val_loss_at_that_time"] for r in per_second.values()]
    low, high = min(shown), max(shown)
    pad = max(0.02, (high - low) * 0.4)
    for col in (1, 2):  # one range for both views, so their bars compare
        fig.update_yaxes(range=[low - pad, high + pad], row=1, col=col)
    fig.update_yaxes(title_text="validation loss (nats/token)", row=1, col=1)
    n_seeds = max((rows[v].get("n_seeds", 1) for v in names), default=1)
    fig.update_layout(template="plotly_white", height=440, bargap=0.35,
                      title=title or f"Matched budget, {n_seeds} seeds ({results.get('profile', '?')} profile)")
    return fig


def benchmark_table(results: dict) -> str:
    """The per-token and per-second numbers of the saved results as aligned text lines."""
    rows = _plan_rows(results)
    per_second = {r["variant"]: r for r in results.get("per_second", {}).get("rows", [])}
    lines = [f"{'variant':<38}{'val loss':>10}{'± std':>8}{'vs GShard':>11}{'at dense time':>15}{'tokens/s':>10}"]
    for v in [v for v in VARIANTS if v in rows] + [v for v in rows if v not in VARIANTS]:
        r, s = rows[v], per_second.get(v, {})
        gap = r.get("gap_to_gshard")
        lines.append(f"{VARIANT_LABELS.get(v, v):<38}{r['val_loss_mean']:>10.4f}{r.get('val_loss_std') or 0:>8.4f}"
                     f"{'' if gap is None else f'{gap:+.4f}':>11}"
                     f"{'' if not s else format(s['val_loss_at_that_time'], '.4f'):>15}"
                     f"{'' if not s else format(s['tokens_per_s'], ',.0f'):>10}")
    return "\n".join(lines)
