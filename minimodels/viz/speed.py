"""Speed pictures (lesson 02): measured decoding speed against context length, and a roofline of prefill and
decode: attainable FLOP/s against arithmetic intensity (FLOPs per byte moved), bounded by this machine's
measured matmul rate (the flat roof) and memory bandwidth (the slope).

The roofline model is Williams, Waterman and Patterson, "Roofline" (CACM 2009): a kernel that does I FLOPs
per byte can run at most at min(peak FLOP/s, I × bandwidth). The inputs are measured or counted by the
lesson; nothing here invents a number. Taught in lessons/02_kv_cache.ipynb §2.1 and §2.4.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

from . import common


def decode_speed_figure(contexts: list[int], speeds: dict[str, list[float]], *,
                        title: str = "Decoding speed vs context length") -> go.Figure:
    """Tokens/s per context length, one line per method (e.g. with / without the KV cache), log y axis."""
    for name, values in speeds.items():
        if len(values) != len(contexts):
            raise ValueError(f"speeds[{name!r}] has {len(values)} values for {len(contexts)} contexts")
    every = [v for values in speeds.values() for v in values]
    fig = go.Figure(layout=dict(title=title, template="plotly_white", xaxis_title="context (tokens already seen)",
                                yaxis=common.log_axis(every, "tokens per second")))
    for name, values in speeds.items():
        fig.add_scatter(x=list(contexts), y=list(values), mode="lines+markers", name=name)
    return fig


def attainable(intensity: float, peak_flops_per_s: float, bytes_per_s: float) -> float:
    """The roofline: the most FLOP/s a kernel of `intensity` FLOPs per byte can reach on this machine."""
    return min(peak_flops_per_s, intensity * bytes_per_s)


def roofline_figure(points: dict[str, float], peak_flops_per_s: float, bytes_per_s: float, *,
                    machine: str = "this machine",
                    title: str = "Roofline: prefill vs decode") -> go.Figure:
    """Log-log roofline: the roof min(peak, I × bandwidth), and each named workload at its intensity I.

    points: name -> FLOPs per byte moved; peak_flops_per_s and bytes_per_s as measured on `machine`.
    Each point sits on the roof: the best that workload could do there, not a measured speed.
    """
    if not (peak_flops_per_s > 0 and bytes_per_s > 0):
        raise ValueError(f"peak_flops_per_s={peak_flops_per_s} and bytes_per_s={bytes_per_s} must be positive")
    if not points or min(points.values()) <= 0:
        raise ValueError(f"points must map names to positive FLOPs per byte, got {points}")
    ridge = peak_flops_per_s / bytes_per_s  # intensity where the slope meets the flat roof
    lo, hi = min(*points.values(), ridge) / 4, max(*points.values(), ridge) * 4
    xs = sorted({lo, ridge, hi})
    roof = [attainable(x, peak_flops_per_s, bytes_per_s) / 1e9 for x in xs]  # GFLOP/s
    fig = go.Figure(layout=dict(
        title=title, template="plotly_white", height=440,
        xaxis=common.log_axis(xs, "arithmetic intensity (FLOPs per byte moved)"),
        yaxis=common.log_axis([roof[0] / 2, roof[-1] * 1.5], "attainable GFLOP/s"),
        legend=dict(orientation="h", y=-0.25)))
    fig.add_scatter(x=xs, y=roof, mode="lines", line=dict(color="#444", width=2),
                    name=(f"{machine}: {peak_flops_per_s / 1e9:,.0f} GFLOP/s matmul, "
                          f"{bytes_per_s / 1e9:,.1f} GB/s memory"))
    for i, (name, intensity) in enumerate(points.items()):
        y = attainable(intensity, peak_flops_per_s, bytes_per_s) / 1e9
        value = f"{intensity:,.0f}" if intensity >= 100 else f"{intensity:.3g}"
        fig.add_scatter(x=[intensity], y=[y], mode="markers", name=f"{name}: {value} FLOPs/byte",
                        marker=dict(size=12, color=qualitative.D3[i % len(qualitative.D3)]),
                        hovertemplate=f"{name}<br>%{{x:.3g}} FLOPs/byte<br>at most %{{y:,.1f}} GFLOP/s<extra></extra>")
    fig.add_vline(x=ridge, line=dict(dash="dot", color="#999"),
                  annotation_text=f"ridge: {ridge:.3g} FLOPs/byte", annotation_position="bottom right")
    return fig
