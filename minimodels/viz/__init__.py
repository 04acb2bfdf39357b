"""Figures and widgets of the course, one module per topic.

Every visual is a function that takes tensors, histories, configs or measurements and returns a plotly
`go.Figure` or an ipywidgets container, so a lesson shows it with one line and a test inspects it without a
browser. Static figures are saved with the notebook; live widgets need a running kernel and, reopened
without one, leave a note that says to run their cell (common.py).

- common.py     kernel detection, byte units, readable log ticks, the "run this cell" note
- loss.py       loss curves and the live loss plot of train(plot=True)        (lesson 01)
- attention.py  attention heatmaps, previous-token share, RoPE score by distance (lesson 01)
- kv.py         KV-cache bytes per token and the KV-cache calculator         (lessons 00, 02)
- kv_explorer.py  the KV-cache explorer: every attention variant, real configs  (lessons 03-05)
- speed.py      decoding speed and the roofline of prefill vs decode          (lesson 02)
- diagrams.py   what MHA, GQA and MLA compute and cache, drawn from a config  (lesson 04; 03, 05)
- cache_growth.py  the KV cache growing while MHA and MLA generate, live      (lesson 05)
- moe_params.py  total vs activated parameters: course models and DeepSeek-V2/V3 (lesson 06)
- load.py       expert load over training (live), load histograms, balancing ablation (lesson 08)
- moe_diagram.py  the DeepSeekMoE layer from a config; the matched-budget comparison (lesson 07)
- routing.py    token -> expert grid and domain view, the live routing explorer    (lesson 07)
A new dashboard gets a module of its own here.
"""

from .attention import (
    attention_heatmap,
    even_previous_share,
    previous_token_share,
    rope_distance_figure,
    rope_scores_by_distance,
)
from .cache_growth import CacheGrowth, cache_growth_figure, watch_cache_growth
from .common import byte_unit, in_unit, log_axis, log_ticks
from .diagrams import attention_diagram, cache_caption, diagram_boxes, variant_configs
from .kv import (
    COURSE_MODEL,
    CUSTOM,
    HIGHLIGHT,
    MUTED,
    RUN_NAMES,
    SHAPE_NAMES,
    KVCacheCalculator,
    kv_bytes_chart,
    kv_cache_calculator,
)
from .kv_explorer import KVCacheExplorer, cache_loss_figure, kv_cache_explorer
from .load import (
    ablation_figure,
    ablation_rows,
    expert_load_figure,
    load_histograms_figure,
    saved_ablation_rows,
    saved_max_vio_figure,
    watch_expert_load,
)
from .loss import LOSS_AXES, LiveLossPlot, loss_curve_figure
from .moe_diagram import active_boxes, benchmark_figure, benchmark_table, comparison_figure, moe_caption, moe_diagram
from .moe_params import DEEPSEEK_MOE_PARAMS, activated_parameters, moe_params_chart
from .routing import (
    ExpertRouting,
    domain_expert_shares,
    domain_share_figure,
    expert_routing,
    token_expert_figure,
)
from .speed import attainable, decode_speed_figure, roofline_figure

__all__ = [
    "attainable", "attention_heatmap", "byte_unit", "COURSE_MODEL", "CUSTOM", "decode_speed_figure",
    "even_previous_share", "HIGHLIGHT", "in_unit", "kv_bytes_chart", "kv_cache_calculator", "KVCacheCalculator",
    "cache_loss_figure", "kv_cache_explorer", "KVCacheExplorer",  # lesson 03 (kv_explorer.py)
    "LiveLossPlot", "log_axis", "log_ticks", "LOSS_AXES", "loss_curve_figure", "MUTED", "previous_token_share",
    "roofline_figure", "rope_distance_figure", "rope_scores_by_distance", "RUN_NAMES", "SHAPE_NAMES",
    "CacheGrowth", "cache_growth_figure", "watch_cache_growth",  # lesson 05
    "attention_diagram", "cache_caption", "diagram_boxes", "variant_configs",  # lesson 04 (diagrams.py)
    "activated_parameters", "DEEPSEEK_MOE_PARAMS", "moe_params_chart",  # lesson 06 (moe_params.py)
    "ablation_figure", "ablation_rows", "expert_load_figure", "load_histograms_figure",  # lesson 08 (load.py)
    "saved_ablation_rows", "saved_max_vio_figure", "watch_expert_load",
    "active_boxes", "benchmark_figure", "benchmark_table", "comparison_figure", "moe_caption",  # lesson 07
    "moe_diagram", "domain_expert_shares", "domain_share_figure", "expert_routing", "ExpertRouting",
    "token_expert_figure",
]
