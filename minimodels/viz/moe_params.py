"""Total vs activated parameters (lesson 06): what an MoE model stores against what one token uses.

An MoE layer keeps all E routed experts but runs only k of them per token, so "parameters" splits in two: the
total (memory, what a checkpoint holds) and the activated ones (the weights a token multiplies, which set its
FLOPs). `activated_parameters` measures both for a course model; `DEEPSEEK_MOE_PARAMS` holds the papers' values
for DeepSeek-V2, V2-Lite and V3 (REFERENCE.md §3.4); `moe_params_chart` draws them side by side on a log axis.
Taught in lessons/06_dense_to_moe.ipynb.
"""

from __future__ import annotations

import plotly.graph_objects as go
from torch import nn

from ..flops import count_flops
from ..model import count_parameters
from . import common

# published totals and activated parameters per token, with where each pair is stated
DEEPSEEK_MOE_PARAMS: dict[str, dict] = {
    "DeepSeek-V2-Lite": {"total": 15.7e9, "activated": 2.4e9, "source": "DeepSeek-V2 paper, Appendix B.1"},
    "DeepSeek-V2": {"total": 236e9, "activated": 21e9, "source": "DeepSeek-V2 paper, §3.1.2"},
    "DeepSeek-V3": {"total": 671e9, "activated": 37e9, "source": "DeepSeek-V3 paper, §4.2"},
}
TOTAL_COLOR, ACTIVATED_COLOR = "#9fb7d4", "#d62728"  # stored (muted) vs used per token (highlight)


def activated_parameters(model: nn.Module) -> dict[str, int]:
    """{"total": every trainable parameter, "activated": those one token uses}.

    The difference is the routed experts a token does not run: (E - k) experts of 3·D·H weights in every MoE
    layer, read from minimodels.flops.count_flops (params - active_params of the same config).
    """
    total = count_parameters(model)
    flops = count_flops(model.cfg, 1)
    return {"total": total, "activated": total - (flops.params - flops.active_params)}


def short_count(n: float) -> str:
    """A parameter count in words of three digits: 236e9 -> '236B', 1_234_567 -> '1.23M', 900 -> '900'."""
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return f"{n:.0f}"


def moe_params_chart(rows: dict[str, dict], *, title: str = "Total vs activated parameters") -> go.Figure:
    """Grouped bars, total and activated parameters per model, on a log axis (the models span 6 decades).

    rows: {model name: {"total": int, "activated": int, ...}} (e.g. activated_parameters(model), or
    DEEPSEEK_MOE_PARAMS). Hovering a bar shows the activated share.
    """
    if not rows:
        raise ValueError("rows is empty: pass {model name: {'total': ..., 'activated': ...}}")
    names = list(rows)
    for name, row in rows.items():
        if not 0 < row["activated"] <= row["total"]:
            raise ValueError(f"{name}: activated={row['activated']} must be > 0 and at most total={row['total']}")
    share = [rows[n]["activated"] / rows[n]["total"] for n in names]
    bars = []
    for key, color in (("total", TOTAL_COLOR), ("activated", ACTIVATED_COLOR)):
        values = [rows[n][key] for n in names]
        bars.append(go.Bar(x=names, y=values, name=f"{key} parameters", marker_color=color,
                           text=[short_count(v) for v in values], textposition="outside", cliponaxis=False,
                           customdata=[f"{s:.1%}" for s in share],
                           hovertemplate="%{x}: %{text} " + key + " (activated share %{customdata})<extra></extra>"))
    everything = [rows[n][k] for n in names for k in ("total", "activated")]
    yaxis = common.log_axis([min(everything) / 2, max(everything) * 3], "parameters (log scale)")
    yaxis["ticktext"] = [short_count(t) for t in yaxis["tickvals"]]
    return go.Figure(bars, layout=dict(title=title, template="plotly_white", barmode="group", yaxis=yaxis,
                                       xaxis_title="model", margin=dict(t=80)))


__all__ = ["activated_parameters", "DEEPSEEK_MOE_PARAMS", "moe_params_chart", "short_count"]
