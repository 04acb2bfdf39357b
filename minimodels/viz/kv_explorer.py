"""The KV-cache explorer: every attention variant's cache (MHA, GQA, MQA, MLA) side by side, for published
configs (Llama, Mistral, DeepSeek 67B, DeepSeek-V2, V2-Lite, V3) and for this course's own models.

The lesson 02 calculator sizes MHA/GQA caches; the explorer adds the variant, the query heads, MLA's latent width
(kv_lora_rank) and rope width, and a serving question: how many sequences of L tokens fit in N GB of cache.
Every number comes from minimodels.kv_cache (kv_cache_report, the formula of cache_spec); for the course's
models the readout also shows the bytes read from allocated KVCache tensors. Needs a running kernel: displayed,
it leaves a "run this cell" note for a notebook reopened without one (viz/common.py). `cache_loss_figure` draws
the other side of the trade-off: validation loss against cache bytes per token of trained variants.
Taught in lessons/03_gqa.ipynb (and reused by 04_mla.ipynb and 05_rope_absorption.ipynb).
"""

from __future__ import annotations

import html
from dataclasses import replace

import ipywidgets as widgets
import plotly.graph_objects as go
from IPython.display import display

from ..config import ModelConfig
from ..kv_cache import DTYPES, KV_PRESETS, MLA_PRESETS, KVCache, kv_cache_report
from . import common
from .common import _human
from .kv import CUSTOM, HIGHLIGHT, MUTED

FAMILIES = {"kv": "MHA / GQA / MQA: keys and values per KV head", "mla": "MLA: one latent + one rope key"}
SHAPE_FIELDS = ("family", "n_layers", "n_heads", "n_kv_heads", "head_dim", "kv_lora_rank", "qk_rope_head_dim")
RUN_FIELDS = ("context", "batch", "dtype", "memory_gb")
GB = 10**9  # the memory budget is in GB (10^9 bytes), as GPU memory is sold; cache sizes are shown in KiB/GiB

# query heads and head widths of the published models (their config.json: num_attention_heads, head width
# hidden_size / heads, or qk_nope_head_dim for MLA); KV_PRESETS / MLA_PRESETS give layers and cached widths
QUERY_HEADS = {"Llama-2-7B": 32, "Llama-2-70B": 64, "Llama-3-8B": 32, "Mistral-7B": 32, "DeepSeek-67B": 64,
               "DeepSeek-V2": 128, "DeepSeek-V2-Lite": 16, "DeepSeek-V3": 128}
MLA_HEAD_DIM = 128  # qk_nope_head_dim = v_head_dim = 128 in DeepSeek-V2, V2-Lite and V3
# DeepSeek LLM 67B (config.json: 95 layers, 64 heads of 128, 8 KV heads): the GQA model DeepSeek-V2's
# "93.3% smaller cache" is measured against (V2 paper, abstract and §3.2.3)
DEEPSEEK_67B = {"n_layers": 95, "n_kv_heads": 8, "head_dim": 128}


def published_presets() -> dict[str, dict]:
    """Shapes of real models for the explorer: MHA/GQA from KV_PRESETS (+ DeepSeek 67B), MLA from MLA_PRESETS."""
    presets = {}
    for name, shape in {**KV_PRESETS, "DeepSeek-67B": DEEPSEEK_67B}.items():
        presets[name] = dict(family="kv", n_heads=QUERY_HEADS[name], kv_lora_rank=0, qk_rope_head_dim=0, **shape)
    for name, shape in MLA_PRESETS.items():
        presets[name] = dict(family="mla", n_heads=QUERY_HEADS[name], n_kv_heads=QUERY_HEADS[name],
                             head_dim=MLA_HEAD_DIM, **shape)
    return presets


def course_variants(cfg: ModelConfig) -> dict[str, ModelConfig]:
    """The course's model `cfg` in every attention variant: MHA, GQA (half the KV heads), MQA, MLA, low-rank."""
    h = cfg.n_heads
    base = replace(cfg, attn="mha", n_kv_heads=0)
    variants = {"course MHA": base}
    if h // 2 > 1 and h % (h // 2) == 0:
        variants[f"course GQA ({h // 2} KV heads)"] = replace(base, attn="gqa", n_kv_heads=h // 2)
    variants["course MQA"] = replace(base, attn="gqa", n_kv_heads=1)
    variants["course MLA"] = replace(base, attn="mla")
    variants["course MLA, no RoPE"] = replace(base, attn="mla_lowrank")
    return variants


def config_shape(cfg: ModelConfig) -> dict:
    """The explorer's shape of a ModelConfig: which family caches what, and its widths."""
    if cfg.attn in ("mha", "gqa"):
        return dict(family="kv", n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads or cfg.n_heads,
                    head_dim=cfg.head_dim, kv_lora_rank=0, qk_rope_head_dim=0)
    rope = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    return dict(family="mla", n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_heads,
                head_dim=cfg.qk_nope_head_dim, kv_lora_rank=cfg.kv_lora_rank, qk_rope_head_dim=rope)


def variant_name(shape: dict) -> str:
    """MHA, MQA, GQA (G KV heads) or MLA, read from a shape."""
    if shape["family"] == "mla":
        return "MLA" if shape["qk_rope_head_dim"] else "MLA (no RoPE)"
    g = shape["n_kv_heads"]
    return "MHA" if g == shape["n_heads"] else "MQA" if g == 1 else f"GQA ({g} KV heads)"


def shape_report(shape: dict, *, context: int, batch: int = 1, dtype: str = "bfloat16",
                 memory_gb: float = 80.0) -> dict:
    """kv_cache_report for one shape, plus what the explorer shows beside it.

    Returns bytes_per_token and total_bytes (kv_cache_report's), elements (per token and layer), formula (the
    multiplication written out), mha_bytes_per_token (MHA with the same query heads and head width: the paper's
    2·n_h·d_h·l) and fits (how many sequences of `context` tokens fit in memory_gb·10^9 bytes of cache).
    """
    size = DTYPES[dtype].itemsize  # bytes per cached number
    if shape["family"] == "mla":
        report = kv_cache_report(shape["n_layers"], context=context, batch=batch, dtype=dtype,
                                 kv_lora_rank=shape["kv_lora_rank"], qk_rope_head_dim=shape["qk_rope_head_dim"])
        elements = shape["kv_lora_rank"] + shape["qk_rope_head_dim"]
        formula = (f"layers × (kv_lora_rank + rope width) × bytes = {shape['n_layers']} × "
                   f"({shape['kv_lora_rank']} + {shape['qk_rope_head_dim']}) × {size}")
    else:
        report = kv_cache_report(shape["n_layers"], shape["n_kv_heads"], shape["head_dim"], context=context,
                                 batch=batch, dtype=dtype)
        elements = 2 * shape["n_kv_heads"] * shape["head_dim"]
        formula = (f"2 × layers × KV heads × head width × bytes = 2 × {shape['n_layers']} × "
                   f"{shape['n_kv_heads']} × {shape['head_dim']} × {size}")
    mha = kv_cache_report(shape["n_layers"], shape["n_heads"], shape["head_dim"], context=1, dtype=dtype)
    per_sequence = report["bytes_per_token"] * context
    return {**report, "elements": elements, "formula": f"{formula} = {report['bytes_per_token']:,} bytes",
            "mha_bytes_per_token": mha["bytes_per_token"], "fits": int(memory_gb * GB // per_sequence)}


def measured_bytes_per_token(cfg: ModelConfig, dtype: str = "float32") -> int:
    """Bytes per token read from the tensors of a KVCache allocated for `cfg` in `dtype` (one position)."""
    return KVCache(cfg, batch_size=1, max_len=1, dtype=DTYPES[dtype]).bytes_per_token


def _number(description: str, value: int, low: int, high: int) -> widgets.BoundedIntText:
    return widgets.BoundedIntText(value=value, min=low, max=high, description=description,
                                  style={"description_width": "initial"})


def _controls(presets: dict[str, dict]) -> dict[str, widgets.Widget]:
    first = presets[next(iter(presets))]
    style = {"description_width": "initial"}
    controls = {
        "preset": widgets.Dropdown(options=[*presets, CUSTOM], value=next(iter(presets)), description="model",
                                   style=style),
        "family": widgets.Dropdown(options=[(text, key) for key, text in FAMILIES.items()],
                                   value=first["family"], description="attention", style=style),
        "n_layers": _number("layers", first["n_layers"], 1, 1024),
        "n_heads": _number("query heads", first["n_heads"], 1, 1024),
        "n_kv_heads": _number("KV heads", first["n_kv_heads"], 1, 1024),
        "head_dim": _number("head width", first["head_dim"], 1, 8192),
        "kv_lora_rank": _number("kv_lora_rank (latent)", first["kv_lora_rank"], 0, 65536),
        "qk_rope_head_dim": _number("rope width", first["qk_rope_head_dim"], 0, 8192),
        "context": _number("context L (tokens)", 4096, 1, 2**24),
        "batch": _number("batch (sequences)", 1, 1, 4096),
        "dtype": widgets.Dropdown(options=list(DTYPES), value="bfloat16", description="cache dtype", style=style),
        "memory_gb": widgets.BoundedFloatText(value=80.0, min=0.001, max=1e6, description="cache memory N (GB)",
                                              style=style),
    }
    for name, control in controls.items():
        control.add_class("kvx-control")
        control.add_class(f"kvx-{name.replace('_', '-')}")  # e.g. .kvx-kv-lora-rank, .kvx-context
    return controls


class KVCacheExplorer(common.PresetWidget):
    """Controls for every variant's shape, a readout with the formula, a table and a chart of all presets.

    Attributes for tests: `controls`, `readout` (HTML), `table` (HTML), `chart` (the displayed chart widget),
    `figure` (its plotly figure), `report` (shape_report of the current settings), `rows` (name -> report).
    """

    what, shape_names, run_names = "The KV-cache explorer", SHAPE_FIELDS, RUN_FIELDS

    def __init__(self, presets: dict[str, dict], *, measured: dict[str, tuple[int, str]] | None = None):
        self.presets, self.measured = presets, measured or {}
        self.controls = c = _controls(presets)
        self.readout, self.table = widgets.HTML(), widgets.HTML()
        self.readout.add_class("kvx-readout")
        self.table.add_class("kvx-table")
        bars = go.Figure(go.Bar(orientation="h", x=[1.0] * len(presets), y=list(presets), textposition="outside",
                                cliponaxis=False, hovertemplate="%{y}: %{x:,.2f} KiB per token<extra></extra>"),
                         layout=dict(template="plotly_white", height=120 + 28 * len(presets),
                                     yaxis=dict(autorange="reversed"), margin=dict(t=50, l=10, r=80)))
        widget = common._figure_widget(bars)  # without anywidget: a static figure redrawn into an Output
        self.figure = widget if widget is not None else bars
        self.chart = widget if widget is not None else widgets.Output()
        self.chart.add_class("kvx-chart")
        self.report: dict = {}
        self.rows: dict[str, dict] = {}
        shape_box = widgets.VBox([c[n] for n in ("preset", *SHAPE_FIELDS)])
        self._assemble([widgets.HBox([shape_box, widgets.VBox([c[n] for n in RUN_FIELDS])]),
                        self.readout, self.table, self.chart], "kv-explorer")

    def run(self) -> dict:
        return {n: self.controls[n].value for n in RUN_FIELDS}


    def refresh(self, _change=None) -> None:
        shape, run = self.shape(), self.run()
        self.controls["n_kv_heads"].disabled = shape["family"] == "mla"  # widths the other family does not cache
        for name in ("kv_lora_rank", "qk_rope_head_dim"):
            self.controls[name].disabled = shape["family"] == "kv"
        problem = _shape_problem(shape)
        rows = dict(self.presets)
        if self.controls["preset"].value == CUSTOM:
            rows[CUSTOM] = shape
        self.report = shape_report(shape, **run) if problem is None else {}
        self.rows = {name: shape_report(s, **run) for name, s in rows.items() if _shape_problem(s) is None}
        self.readout.value = self._readout(shape, run, problem)
        self.table.value = self._table(rows, run)
        self._update_chart()

    def _readout(self, shape: dict, run: dict, problem: str | None) -> str:
        if problem is not None:
            return f"<b>⚠ {html.escape(problem)}</b>"
        r, name = self.report, self.controls["preset"].value
        lines = [f"<b>{variant_name(shape)}</b>: {r['elements']:,} numbers per token and layer",
                 f"<code>{html.escape(r['formula'])}</code>",
                 f"<b>{_human(r['bytes_per_token'])} per token</b>; <b>{_human(r['total_bytes'], 2)}</b> for "
                 f"{run['batch']:,} × {run['context']:,} tokens in {run['dtype']}",
                 f"{r['bytes_per_token'] / r['mha_bytes_per_token']:.1%} of an MHA cache with the same "
                 f"{shape['n_heads']} heads of {shape['head_dim']} (2 × layers × heads × head width)",
                 f"<b>{r['fits']:,} sequences</b> of {run['context']:,} tokens fit in {run['memory_gb']:g} GB "
                 f"of cache memory"]
        if name in self.measured:
            lines.append(self._measured_line(shape, *self.measured[name]))
        return "<br>".join(lines)

    def _measured_line(self, shape: dict, measured: int, dtype: str) -> str:
        formula = shape_report(shape, context=1, dtype=dtype)["bytes_per_token"]
        ok = formula == measured
        return (f"measured from the KVCache tensors: {measured:,} bytes/token ({dtype}) "
                f"{'✓ equals' if ok else '✗ differs from'} the formula's {formula:,}")

    def _table(self, rows: dict[str, dict], run: dict) -> str:
        current = self.controls["preset"].value
        titles = ("model", "attention", "numbers per token and layer", "per token",
                  f"{run['batch']:,} × {run['context']:,} tokens",
                  f"sequences of {run['context']:,} in {run['memory_gb']:g} GB")
        head = "<tr>" + "".join(f"<th{_CELL if i < 2 else _NUMBER}>{t}</th>" for i, t in enumerate(titles)) + "</tr>"
        body = []
        for name, shape in rows.items():
            if name not in self.rows:
                continue
            r = self.rows[name]
            style = ' style="font-weight:bold;color:#d62728"' if name == current else ""
            cells = [html.escape(name), variant_name(shape), f"{r['elements']:,}", _human(r["bytes_per_token"]),
                     _human(r["total_bytes"], 2), f"{r['fits']:,}"]
            body.append(f"<tr{style}>" + "".join(f"<td{_CELL if i < 2 else _NUMBER}>{c}</td>"
                                                 for i, c in enumerate(cells)) + "</tr>")
        return f'<table class="kvx-rows" style="border-collapse:collapse">{head}{"".join(body)}</table>'

    def _update_chart(self) -> None:
        current = self.controls["preset"].value
        names = list(self.rows)
        kib = [self.rows[n]["bytes_per_token"] / 2**10 for n in names]
        bar = self.figure.data[0]
        with self.figure.batch_update():
            bar.y, bar.x = names, kib
            bar.text = [_human(self.rows[n]["bytes_per_token"]) for n in names]
            bar.marker.color = [HIGHLIGHT if n == current else MUTED for n in names]
            self.figure.layout.xaxis = common.log_axis([*kib, min(kib) / 2], "KV cache per token (KiB, log scale)")
            self.figure.layout.height = 120 + 28 * len(names)
            self.figure.layout.title.text = f"KV cache per token in {self.controls['dtype'].value}"
        if self.chart is not self.figure and common._in_kernel():
            self.chart.clear_output(wait=True)
            with self.chart:
                display(self.figure)


_CELL = ' style="padding:2px 10px;text-align:left"'
_NUMBER = ' style="padding:2px 10px;text-align:right"'


def _shape_problem(shape: dict) -> str | None:
    """Why a shape cannot be sized (said in the readout instead of a number), or None."""
    if shape["family"] == "mla":
        return None if shape["kv_lora_rank"] >= 1 else "MLA needs kv_lora_rank >= 1 (the cached latent width)"
    if shape["n_kv_heads"] > shape["n_heads"] or shape["n_heads"] % shape["n_kv_heads"]:
        return (f"{shape['n_heads']} query heads cannot share {shape['n_kv_heads']} KV heads evenly: choose KV "
                f"heads that divide the query heads")
    return None


def kv_cache_explorer(model_cfg: ModelConfig | None = None, *, measured_dtype: str = "float32") -> KVCacheExplorer:
    """The KV-cache explorer: published presets (MHA/GQA and DeepSeek's MLA) and, with `model_cfg`, the course's
    model in every attention variant, each with its bytes per token measured from a KVCache in `measured_dtype`.
    """
    presets = published_presets()
    measured = {}
    if model_cfg is not None:
        for name, cfg in course_variants(model_cfg).items():
            presets[name] = config_shape(cfg)
            measured[name] = (measured_bytes_per_token(cfg, measured_dtype), measured_dtype)
    return KVCacheExplorer(presets, measured=measured)


def cache_loss_figure(points: dict[str, dict], *, title: str = "Cache vs loss: what sharing K/V heads costs",
                      dtype: str = "float32") -> go.Figure:
    """Validation loss against KV-cache bytes per token, one labelled marker per variant (lesson 03's trade-off).

    points: {name: {"cache_bytes_per_token": int, "val_loss": float, optional "val_loss_std": float}}, e.g. from
    live training runs or a benchmark's saved summary. The std, where given, is drawn as an error bar.
    """
    if not points:
        raise ValueError("cache_loss_figure needs at least one point")
    missing = [n for n, p in points.items() if not {"cache_bytes_per_token", "val_loss"} <= set(p)]
    if missing:
        raise ValueError(f"points {missing} need 'cache_bytes_per_token' and 'val_loss'")
    names = list(points)
    stds = [points[n].get("val_loss_std") for n in names]
    marker = go.Scatter(
        x=[points[n]["cache_bytes_per_token"] for n in names], y=[points[n]["val_loss"] for n in names],
        text=names, mode="markers+text", textposition="top center", marker=dict(size=12, color=HIGHLIGHT),
        error_y=dict(type="data", array=[s or 0.0 for s in stds], visible=any(s for s in stds)),
        hovertemplate="%{text}: %{x:,} bytes/token, loss %{y:.3f}<extra></extra>")
    losses = [points[n]["val_loss"] + sign * (s or 0.0) for n, s in zip(names, stds) for sign in (-1, 1)]
    pad = max(0.25 * (max(losses) - min(losses)), 0.01)  # room for the labels above the markers
    return go.Figure(marker, layout=dict(
        title=title, template="plotly_white", height=420,
        xaxis=dict(title=f"KV cache per token (bytes, {dtype})", tickformat=",",
                   range=[0, 1.1 * max(marker.x)]),
        yaxis=dict(title="validation loss (nats, lower is better)", range=[min(losses) - pad, max(losses) + pad])))
