"""Token -> expert views of a trained MoE model (lesson 07): which routed experts each token of a text uses.

- `token_expert_figure`: the text as a grid of cells, one per token (its decoded piece as the label), coloured
  by the token's top routed expert in one layer; hovering a cell lists all k chosen experts with their gate
  values. The routing comes from moe.trace_routing (one eval-mode forward).
- `domain_expert_shares` / `domain_share_figure`: from the corpus's domain labels (prose vs code, data.DOMAINS),
  the share of each domain's routing choices that goes to each expert, per MoE layer; and how different the two
  domains' shares are (total variation distance: 0 = the same experts in the same proportions, 1 = disjoint).
- `expert_routing(...)`: the live widget, a layer selector above the token grid, a readout and the domain
  heatmap of that layer. Reopened without a kernel it leaves the course's "run this cell" note (common.py).
Taught in lessons/07_deepseekmoe.ipynb §7.5.
"""

# Shapes: B sequences, T tokens each, k = routed experts per token, E = routed experts

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from IPython.display import display
from plotly.colors import qualitative
from torch import Tensor, nn

from ..moe import trace_routing
from . import common

CSS_CLASS = "expert-routing"  # the live widget (the browser test looks for it)
LAYER_CLASS, READOUT_CLASS = "expert-routing-layer", "expert-routing-readout"
CHART_CLASS, DOMAINS_CLASS = "expert-routing-chart", "expert-routing-domains"  # the token grid, the domain heatmap
PALETTE = qualitative.Alphabet + qualitative.Light24 + qualitative.Dark24  # 74 distinct colours, then repeats
COLUMNS = 16  # tokens per row of the grid


def expert_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def readable(piece: str) -> str:
    """A token's text as a cell label: newlines and tabs shown, a leading space as '␣'."""
    piece = piece.replace("\n", "⏎").replace("\t", "⇥")
    return "␣" + piece[1:] if piece.startswith(" ") else piece or "∅"


def _discrete_scale(n: int) -> list:
    """A plotly colorscale where value i (of 0 .. n-1, with zmin -0.5 and zmax n - 0.5) is expert_color(i)."""
    scale = []
    for i in range(n):
        scale += [[i / n, expert_color(i)], [(i + 1) / n, expert_color(i)]]
    return scale


def _check_routing(weights: Tensor, indices: Tensor, pieces: Sequence[Sequence[str]]) -> None:
    if weights.shape != indices.shape or weights.dim() != 3:
        raise ValueError(f"weights {tuple(weights.shape)} and indices {tuple(indices.shape)} must both be (B, T, k), "
                         f"one layer of trace_routing(model, tokens)")
    if len(pieces) != weights.shape[0] or any(len(p) != weights.shape[1] for p in pieces):
        raise ValueError(f"pieces must hold B={weights.shape[0]} lists of T={weights.shape[1]} token strings "
                         f"(tokenizer.token_strings of each row of tokens)")


def token_grid(weights: Tensor, indices: Tensor, pieces: Sequence[Sequence[str]],
               labels: Sequence[str] | None = None, *, columns: int = COLUMNS) -> dict:
    """The grid of a token_expert_figure: z (top expert or None), text, hover, y labels (one row per line)."""
    _check_routing(weights, indices, pieces)
    b, t, k = indices.shape
    rows_per_seq = math.ceil(t / columns)
    z, text, hover, ylabels = [], [], [], []
    for s in range(b):
        name = labels[s] if labels else f"text {s + 1}"
        for r in range(rows_per_seq):
            zs, ts, hs = [], [], []
            for c in range(columns):
                p = r * columns + c
                if p >= t:
                    zs.append(None), ts.append(""), hs.append("")
                    continue
                zs.append(int(indices[s, p, 0]))
                ts.append(html.escape(readable(pieces[s][p]), quote=False))  # plotly shows no &quot;
                chosen = "<br>".join(f"expert {int(indices[s, p, j])}: {float(weights[s, p, j]):.3f}"
                                     for j in range(k))
                hs.append(f"{html.escape(repr(pieces[s][p]), quote=False)} ({html.escape(name, quote=False)}, "
                          f"position {p})<br>{chosen}")
            z.append(zs), text.append(ts), hover.append(hs)
            ylabels.append(f"{name} {r * columns}–{min(t, (r + 1) * columns) - 1}")
    return dict(z=z, text=text, hover=hover, y=ylabels)


def token_expert_figure(weights: Tensor, indices: Tensor, pieces: Sequence[Sequence[str]], n_experts: int, *,
                        labels: Sequence[str] | None = None, layer: int | None = None,
                        columns: int = COLUMNS) -> go.Figure:
    """Tokens as cells coloured by their top routed expert (weights, indices: one layer's (B, T, k) from
    trace_routing; pieces: each row's decoded token strings). Hover: every chosen expert and its gate value."""
    grid = token_grid(weights, indices, pieces, labels, columns=columns)
    fig = go.Figure(go.Heatmap(
        z=grid["z"], text=grid["text"], hovertext=grid["hover"], texttemplate="%{text}", textfont=dict(size=10),
        hoverinfo="text", colorscale=_discrete_scale(n_experts), zmin=-0.5, zmax=n_experts - 0.5, xgap=2, ygap=2,
        y=grid["y"], colorbar=dict(title="top expert", tickvals=list(range(0, n_experts, max(1, n_experts // 8))))))
    where = f"layer {layer}: " if layer is not None else ""
    fig.update_layout(title=f"{where}each token coloured by its top routed expert (hover: all {indices.shape[-1]})",
                      template="plotly_white", height=120 + 30 * len(grid["y"]), margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(visible=False), yaxis=dict(autorange="reversed", tickfont=dict(size=10)))
    return fig


@torch.no_grad()
def domain_expert_shares(model: nn.Module, streams: dict[str, Tensor], *, seq_len: int, n_windows: int = 4
                         ) -> dict[int, dict[str, Tensor]]:
    """{layer: {domain: (E,) share of that domain's routing choices going to each expert}}, from n_windows
    evenly spaced windows of seq_len tokens of each domain's stream (e.g. data.val_by_domain)."""
    device = next(model.parameters()).device
    shares: dict[int, dict[str, Tensor]] = {}
    for domain, ids in streams.items():
        if ids.numel() < seq_len:
            raise ValueError(f"domain {domain!r} has {ids.numel()} tokens, fewer than seq_len={seq_len}")
        starts = torch.linspace(0, ids.numel() - seq_len, n_windows).long()
        windows = torch.stack([ids[s:s + seq_len] for s in starts.tolist()]).to(device)  # (n_windows, T)
        for layer, rec in trace_routing(model, windows).items():
            n_experts = rec["scores"].shape[-1]
            counts = torch.bincount(rec["indices"].flatten().cpu(), minlength=n_experts).float()  # (E,)
            shares.setdefault(layer, {})[domain] = counts / counts.sum()
    return shares


def domain_distance(shares: dict[str, Tensor]) -> float:
    """Total variation distance between the first two domains' expert shares: 0 same use, 1 disjoint."""
    a, b = list(shares.values())[:2]
    return 0.5 * float((a - b).abs().sum())


def domain_share_figure(shares: dict[int, dict[str, Tensor]], *, layers: Sequence[int] | None = None) -> go.Figure:
    """A heatmap: one row per (layer, domain), one column per expert, the share of that domain's choices."""
    layers = list(shares) if layers is None else list(layers)
    z, y = [], []
    for layer in layers:
        for domain, share in shares[layer].items():
            z.append([round(100 * float(v), 2) for v in share])
            y.append(f"layer {layer} · {domain}")
    n_experts = len(z[0])
    distances = ", ".join(f"layer {layer}: {domain_distance(shares[layer]):.2f}" for layer in layers)
    fig = go.Figure(go.Heatmap(z=z, y=y, x=list(range(n_experts)), colorscale="Blues", zmin=0,
                               colorbar=dict(title="% of<br>choices"),
                               hovertemplate="%{y}, expert %{x}: %{z:.1f}% of the choices<extra></extra>"))
    fig.update_layout(title=f"Which experts each domain uses (prose vs code distance, 0 = same, 1 = disjoint: "
                            f"{distances})", template="plotly_white", height=max(280, 140 + 26 * len(y)),
                      margin=dict(l=10, r=10, t=60, b=40), title_font=dict(size=13),
                      xaxis=dict(title="routed expert", dtick=max(1, n_experts // 16)),
                      yaxis=dict(autorange="reversed"))
    return fig


class ExpertRouting(widgets.VBox):
    """A layer selector, a readout, the token grid of that layer and its domain heatmap, live in a kernel.

    Attributes for tests: `layer` (the Dropdown), `readout` (HTML), `figure` (the token grid figure or
    FigureWidget), `domains` (the domain heatmap, or None), `routing` ({layer: trace_routing record})."""

    what = "The token → expert explorer"

    def __init__(self, routing: dict[int, dict[str, Tensor]], pieces: Sequence[Sequence[str]], *,
                 labels: Sequence[str] | None = None, shares: dict[int, dict[str, Tensor]] | None = None):
        if not routing:
            raise ValueError("no MoE layer in the routing: trace_routing(model, tokens) of an ffn='moe' model")
        self.routing, self.pieces, self.labels, self.shares = routing, pieces, labels, shares
        first = next(iter(routing))
        self.n_experts = routing[first]["scores"].shape[-1]
        self.layer = widgets.Dropdown(options=[(f"MoE layer {i}", i) for i in routing], value=first,
                                      description="layer")
        self.layer.add_class(LAYER_CLASS)
        self.readout = widgets.HTML()
        self.readout.add_class(READOUT_CLASS)
        grid = self._grid_figure(first)
        widget = common._figure_widget(grid)  # without anywidget: a static figure redrawn into an Output
        self.figure = widget if widget is not None else grid
        self.chart = widget if widget is not None else widgets.Output()
        self.chart.add_class(CHART_CLASS)
        self.domains = None
        children = [self.layer, self.readout, self.chart]
        if shares is not None:
            fig = domain_share_figure(shares, layers=[first])
            self.domains = common._figure_widget(fig) or fig
            self.domain_chart = self.domains if isinstance(self.domains, widgets.Widget) else widgets.Output()
            self.domain_chart.add_class(DOMAINS_CLASS)
            children.append(self.domain_chart)
        self._hint_key = common.new_hint_key()
        super().__init__([common.hint_hider(self._hint_key), *children])
        self.add_class(CSS_CLASS)
        self.layer.observe(self.refresh, names="value")
        self.refresh()

    def _grid_figure(self, layer: int) -> go.Figure:
        rec = self.routing[layer]
        return token_expert_figure(rec["weights"], rec["indices"], self.pieces, self.n_experts,
                                   labels=self.labels, layer=layer)

    def _readout(self, layer: int) -> str:
        top = self.routing[layer]["indices"][..., 0].flatten()  # (B·T,) each token's top expert
        counts = torch.bincount(top, minlength=self.n_experts)
        used, busiest = int((counts > 0).sum()), int(counts.argmax())
        line = (f"<b>MoE layer {layer}</b>: the {top.numel()} tokens below have {used} of {self.n_experts} experts "
                f"as their top choice; the most common is expert {busiest} ({counts[busiest] / top.numel():.0%})")
        if self.shares is not None:
            line += (f"; prose vs code expert shares differ by {domain_distance(self.shares[layer]):.2f} "
                     f"(0 = same experts, 1 = disjoint)")
        return line

    def refresh(self, _change=None) -> None:
        layer = self.layer.value
        self.readout.value = self._readout(layer)
        fresh = self._grid_figure(layer)
        self._redraw(self.figure, self.chart, fresh)
        if self.shares is not None:
            self._redraw(self.domains, self.domain_chart, domain_share_figure(self.shares, layers=[layer]))

    @staticmethod
    def _redraw(figure, chart, fresh: go.Figure) -> None:
        """Copy `fresh` into the shown figure (a FigureWidget updates in place; an Output is redrawn)."""
        with figure.batch_update():
            for name in ("z", "text", "hovertext", "y", "x"):
                figure.data[0][name] = fresh.data[0][name]
            figure.layout.title.text = fresh.layout.title.text
        if chart is not figure and common._in_kernel():
            chart.clear_output(wait=True)
            with chart:
                display(figure)

    def _ipython_display_(self) -> None:
        """Displayed in a notebook: the "run this cell" note (hidden while live), then the widget."""
        display(common.kernel_hint(self._hint_key, self.what))
        display(self._repr_mimebundle_(), raw=True)


def expert_routing(model: nn.Module, tokens: Tensor, pieces: Sequence[Sequence[str]], *,
                   labels: Sequence[str] | None = None, shares: dict[int, dict[str, Tensor]] | None = None
                   ) -> ExpertRouting:
    """The live token → expert widget for `tokens` (B, T) of an MoE model; pieces: each row's token strings
    (tokenizer.token_strings); shares: domain_expert_shares(...) for the domain heatmap under the grid."""
    return ExpertRouting(trace_routing(model, tokens), pieces, labels=labels, shares=shares)
