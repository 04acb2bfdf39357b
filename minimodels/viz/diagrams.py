"""Diagrams of what an attention variant computes and what it caches, drawn from a ModelConfig.

One column per config: the input x at the bottom, the projections as boxes (with their widths read from the
config), arrows along the data flow, attention and the output projection at the top. The cached tensors are
the entries of `cache_spec(cfg)`, the very dict KVCache allocates, so the highlighted boxes are what the
package caches; each carries its size per token and layer, and the caption under the column gives the bytes
per token of the whole model (kv_bytes_per_token, the formula the tests check against the cache tensors).
Change a config field and the diagram follows. Used in lessons/04_mla.ipynb (MHA vs GQA vs MLA); lessons 03
and 05 can reuse it (`variant_configs` builds the usual trio from one model config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import torch

from ..config import ModelConfig
from ..kv_cache import cache_spec, kv_bytes_per_token
from .common import _human
from .kv import HIGHLIGHT

# box colours by kind: the cached tensors use the course's highlight colour (viz/kv.py)
COLORS = {"input": "#e8e8e8", "proj": "#cfe0f3", "norm": "#fde9c8", "rope": "#e4d7f5", "op": "#d9f0d3",
          "cache": HIGHLIGHT}
CACHE_PREFIX = "cache:"  # shape names of the cached boxes: "cache:k", "cache:kv", ...
ROW_HEIGHT, BOX_HEIGHT, COLUMN_WIDTH = 1.0, 0.56, 3.2
SLOTS = (0.55, 1.6, 2.65)  # x centres of the query, key (latent) and value (rope key) lanes inside a column
VARIANT_NAMES = {"mha": "MHA", "gqa": "GQA", "mla": "MLA", "mla_lowrank": "low-rank MLA (no RoPE)"}


@dataclass(frozen=True)
class Box:
    """One box of the diagram: a projection, a norm, an operation or a tensor, at (lane, row)."""

    key: str
    label: str
    lane: float  # x centre inside the column (one of SLOTS, or between them)
    row: int  # 0 = input x at the bottom
    kind: str
    width: float = 0.95


def _spec_label(name: str, shape: tuple[int, ...], letters: str, note: str = "") -> str:
    """'<b>k</b> (after RoPE)<br>H×K = 4×32 = 128' for the cached tensor `name` of shape `shape` (from the spec)."""
    dims = "×".join(str(n) for n in shape)
    size = f" = {math.prod(shape)}" if len(shape) > 1 else ""
    return f"<b>{name}</b>{note}<br>{letters} = {dims}{size}"


def _mha_boxes(cfg: ModelConfig) -> tuple[list[Box], list[tuple[str, str]]]:
    """MHA and GQA: W^Q, W^K, W^V; RoPE on q and k; the cached k and v per KV head; GQA repeats them."""
    d, h, k = cfg.dim, cfg.n_heads, cfg.head_dim
    g = cfg.n_kv_heads or h
    spec = cache_spec(cfg)
    heads = "H×K" if g == h else "G×K"
    boxes = [Box("x", f"x  (D = {d})", SLOTS[1], 0, "input", 1.4),
             Box("wq", f"W<sup>Q</sup>  {d}→{h * k}", SLOTS[0], 1, "proj"),
             Box("wk", f"W<sup>K</sup>  {d}→{g * k}", SLOTS[1], 1, "proj"),
             Box("wv", f"W<sup>V</sup>  {d}→{g * k}", SLOTS[2], 1, "proj"),
             Box("q", f"RoPE(q)<br>H×K = {h}×{k}", SLOTS[0], 2, "rope"),
             Box(CACHE_PREFIX + "k", _spec_label("k", spec["k"], heads, " (RoPE'd)"), SLOTS[1], 2, "cache"),
             Box(CACHE_PREFIX + "v", _spec_label("v", spec["v"], heads), SLOTS[2], 2, "cache")]
    edges = [("x", "wq"), ("x", "wk"), ("x", "wv"), ("wq", "q"), ("wk", CACHE_PREFIX + "k"),
             ("wv", CACHE_PREFIX + "v")]
    if g != h:  # each KV head serves H/G query heads
        boxes.append(Box("repeat", f"repeat each KV head ×{h // g} → H = {h}", (SLOTS[1] + SLOTS[2]) / 2, 3,
                         "op", 2.0))
        edges += [(CACHE_PREFIX + "k", "repeat"), (CACHE_PREFIX + "v", "repeat"), ("repeat", "attn")]
    else:
        edges += [(CACHE_PREFIX + "k", "attn"), (CACHE_PREFIX + "v", "attn")]
    edges.append(("q", "attn"))
    return boxes, edges


def _mla_boxes(cfg: ModelConfig) -> tuple[list[Box], list[tuple[str, str]]]:
    """MLA (and low-rank MLA): query path, wkv_a -> [c_kv | k_pe], kv_norm, RoPE, wkv_b per head."""
    d, h = cfg.dim, cfg.n_heads
    c, kn, v = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.v_head_dim
    r = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    spec = cache_spec(cfg)
    q_width = h * (kn + r)
    q_dims = f"H·(K+R) = {q_width}" if r else f"H·K = {q_width}"
    boxes = [Box("x", f"x  (D = {d})", SLOTS[1], 0, "input", 1.4)]
    if cfg.q_lora_rank:
        boxes += [Box("wq_a", f"wq_a  {d}→{cfg.q_lora_rank}", SLOTS[0], 1, "proj"),
                  Box("q_norm", "q_norm (RMSNorm)", SLOTS[0], 2, "norm"),
                  Box("wq_b", f"wq_b<br>{cfg.q_lora_rank}→{q_dims}", SLOTS[0], 3, "proj")]
        edges = [("x", "wq_a"), ("wq_a", "q_norm"), ("q_norm", "wq_b"), ("wq_b", "attn")]
    else:
        boxes.append(Box("wq", f"wq<br>{d}→{q_dims}", SLOTS[0], 1, "proj"))
        edges = [("x", "wq"), ("wq", "attn")]
    latent_lane = SLOTS[1] if r else (SLOTS[1] + SLOTS[2]) / 2  # with RoPE, k_pe takes the right lane
    wkv_a = Box("wkv_a", f"wkv_a  {d}→C+R = {c}+{r}" if r else f"wkv_a  {d}→C = {c}", (SLOTS[1] + SLOTS[2]) / 2,
                1, "proj", 2.0)
    boxes += [wkv_a,
              Box(CACHE_PREFIX + "kv", _spec_label("kv", spec["kv"], "C", " = kv_norm(c_kv)"), latent_lane, 2,
                  "cache"),
              Box("wkv_b", f"wkv_b (per head)<br>{c}→{h}·({kn}+{v})", latent_lane, 3, "proj")]
    edges += [("x", "wkv_a"), ("wkv_a", CACHE_PREFIX + "kv"), (CACHE_PREFIX + "kv", "wkv_b"), ("wkv_b", "attn")]
    if r:
        boxes.append(Box(CACHE_PREFIX + "pe", _spec_label("pe", spec["pe"], "R", " = RoPE(k_pe)"), SLOTS[2], 2,
                         "cache"))
        edges += [("wkv_a", CACHE_PREFIX + "pe"), (CACHE_PREFIX + "pe", "attn")]
    return boxes, edges


def diagram_boxes(cfg: ModelConfig) -> tuple[list[Box], list[tuple[str, str]]]:
    """The boxes and arrows (source key, target key) of cfg's attention, bottom (x) to top (wo)."""
    boxes, edges = (_mla_boxes if cfg.attn in ("mla", "mla_lowrank") else _mha_boxes)(cfg)
    if cfg.attn in ("mla", "mla_lowrank"):
        r = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
        k_width, v_width = cfg.qk_nope_head_dim + r, cfg.v_head_dim
    else:
        k_width = v_width = cfg.head_dim
    scores = {"mla": "[q_nope; RoPE(q_pe)]·[k_nope; pe]ᵀ", "mla_lowrank": "q·k_nopeᵀ"}.get(cfg.attn, "q·kᵀ")
    boxes += [Box("attn", f"softmax({scores} / √{k_width}) · v, {cfg.n_heads} heads", SLOTS[1], 4, "op", 3.0),
              Box("wo", f"wo  H·V = {cfg.n_heads * v_width}→{cfg.dim}", SLOTS[1], 5, "proj", 1.6)]
    edges.append(("attn", "wo"))
    return boxes, edges


def cache_caption(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> str:
    """'cached per token and layer: 48 numbers; whole model: 768 B/token (fp32)', from cache_spec."""
    spec = cache_spec(cfg)
    per_layer = sum(math.prod(shape) for shape in spec.values())
    total = kv_bytes_per_token(spec, cfg.n_layers, dtype)
    terms = " + ".join(f"{name} {math.prod(shape)}" for name, shape in spec.items())
    name = str(dtype).removeprefix("torch.")
    return (f"cached per token and layer: {terms} = <b>{per_layer} numbers</b><br>"
            f"× {cfg.n_layers} layers × {torch.empty((), dtype=dtype).element_size()} B ({name}) = "
            f"<b>{_human(total) if total >= 1024 else f'{total} B'}</b> per token")


def variant_configs(cfg: ModelConfig, *, n_kv_heads: int | None = None) -> dict[str, ModelConfig]:
    """MHA, GQA (n_kv_heads, default n_heads // 2 or 1) and MLA versions of one model config, for a side by side."""
    g = n_kv_heads if n_kv_heads is not None else max(cfg.n_heads // 2, 1)
    return {"MHA": replace(cfg, attn="mha", n_kv_heads=0),
            ("MQA (1 KV head)" if g == 1 else f"GQA ({g} KV heads)"): replace(cfg, attn="gqa", n_kv_heads=g),
            "MLA": replace(cfg, attn="mla", n_kv_heads=0)}


def _arrow(x0: float, y0: float, x1: float, y1: float) -> dict:
    return dict(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
                arrowhead=2, arrowsize=1, arrowwidth=1.2, arrowcolor="#555")


def attention_diagram(configs: ModelConfig | dict[str, ModelConfig], *, dtype: torch.dtype = torch.float32,
                      title: str | None = None) -> go.Figure:
    """Side-by-side diagrams of what each config's attention computes and caches (one column per config).

    configs: one ModelConfig, or {column title: config} (e.g. variant_configs(cfg)). Cached tensors are the
    red boxes (their plotly shape is named "cache:<name>", as in cache_spec); the caption under each column
    gives the numbers per token and layer and the bytes per token of the whole model in `dtype`.
    """
    if isinstance(configs, ModelConfig):
        configs = {VARIANT_NAMES[configs.attn]: configs}
    if not configs:
        raise ValueError("attention_diagram needs at least one config")
    fig = go.Figure()
    for col, (name, cfg) in enumerate(configs.items()):
        _draw_column(fig, col * (COLUMN_WIDTH + 0.3), name, cfg, dtype)
    n = len(configs)
    fig.update_layout(
        title=title or "What each attention computes (bottom to top) and caches (red)", template="plotly_white",
        height=600, showlegend=False, margin=dict(l=10, r=10, t=60, b=10),  # width: the notebook panel's
        xaxis=dict(visible=False, range=[-0.1, n * (COLUMN_WIDTH + 0.3) - 0.2]),
        yaxis=dict(visible=False, range=[-1.7, 6.2]))
    return fig


def _draw_column(fig: go.Figure, x0: float, name: str, cfg: ModelConfig, dtype: torch.dtype) -> None:
    boxes, edges = diagram_boxes(cfg)
    where = {b.key: b for b in boxes}
    for b in boxes:
        cx, cy = x0 + b.lane, b.row * ROW_HEIGHT
        cached = b.kind == "cache"
        fig.add_shape(type="rect", x0=cx - b.width / 2, x1=cx + b.width / 2, y0=cy - BOX_HEIGHT / 2,
                      y1=cy + BOX_HEIGHT / 2, name=b.key, fillcolor=COLORS[b.kind], opacity=0.9 if cached else 1,
                      line=dict(color="#7a0f10" if cached else "#555", width=2.5 if cached else 1), layer="below")
        fig.add_annotation(x=cx, y=cy, text=b.label, showarrow=False, name=b.key,
                           font=dict(size=10, color="white" if cached else "black"))
    # an invisible marker per box: hovering a box says what it is (and the figure has a trace to render)
    fig.add_trace(go.Scatter(
        x=[x0 + b.lane for b in boxes], y=[b.row * ROW_HEIGHT for b in boxes], mode="markers", name=name,
        marker=dict(size=28, opacity=0), hoverinfo="text",
        hovertext=[f"{name}: {b.label} ({'cached per token' if b.kind == 'cache' else b.kind})" for b in boxes]))
    for src, dst in edges:
        a, b = where[src], where[dst]
        end = a.lane if b.width >= 2.5 else b.lane  # into a wide box (attention) straight up, no crossings
        fig.add_annotation(_arrow(x0 + a.lane, a.row * ROW_HEIGHT + BOX_HEIGHT / 2, x0 + end,
                                  b.row * ROW_HEIGHT - BOX_HEIGHT / 2), name=f"{src}->{dst}")
    fig.add_annotation(x=x0 + COLUMN_WIDTH / 2, y=6.0, text=f"<b>{name}</b>", showarrow=False, name="title",
                       font=dict(size=14))
    fig.add_annotation(x=x0 + COLUMN_WIDTH / 2, y=-1.15, text=cache_caption(cfg, dtype), showarrow=False,
                       name="caption", font=dict(size=11))
