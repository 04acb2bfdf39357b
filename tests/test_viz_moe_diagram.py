"""Tests for minimodels/viz/moe_diagram.py: the DeepSeekMoE diagram follows its config (one box per expert, the
token's k routed experts and every shared expert highlighted, group frames, the caption's parameter counts equal
a real layer's), and the comparison figures draw live histories and the saved benchmark results.

The figures are inspected as Python objects (shape names, colours, annotation texts), without a browser.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from minimodels import MoE, fine_grained_config
from minimodels.config import TINY
from minimodels.viz import active_boxes, benchmark_figure, benchmark_table, comparison_figure, moe_diagram
from minimodels.viz.moe_diagram import COLORS, GROUP, ROUTED, SHARED

ROOT = Path(__file__).resolve().parents[1]
GSHARD = replace(TINY, ffn="moe", n_routed_experts=8, n_activated_experts=2, n_shared_experts=0, moe_inter_dim=64,
                 n_dense_layers=0)


def names(fig, prefix):
    return [s.name for s in fig.layout.shapes if s.name and s.name.startswith(prefix)]


@pytest.mark.parametrize("cfg, indices", [
    (GSHARD, [3, 5]),
    (fine_grained_config(GSHARD, 4), list(range(0, 32, 4))),
    (fine_grained_config(GSHARD, 4, isolate_shared=1), [0, 1, 2, 3, 4, 5, 30]),
    (replace(GSHARD, n_routed_experts=12, n_shared_experts=2, n_activated_experts=3, n_expert_groups=4,
             n_limited_groups=2), [0, 2, 4]),
    (replace(GSHARD, n_routed_experts=160, n_shared_experts=2, n_activated_experts=6, n_expert_groups=8,
             n_limited_groups=3, moe_inter_dim=8), [0, 1, 20, 21, 40, 41]),  # DeepSeek-V2's layout, small
], ids=["gshard", "fine", "fine+shared", "groups", "v2-layout"])
def test_one_box_per_expert_and_the_token_s_experts_highlighted(cfg, indices):
    fig = moe_diagram(cfg, indices, [0.1] * len(indices))
    assert len(names(fig, ROUTED)) == cfg.n_routed_experts
    assert len(names(fig, SHARED)) == cfg.n_shared_experts
    active = active_boxes(fig)
    assert len(active) == cfg.n_activated_experts + cfg.n_shared_experts
    assert sorted(a for a in active if a.startswith(ROUTED)) == sorted(f"{ROUTED}{i}" for i in indices)
    assert len(fig.data) >= 1 and len(fig.data[0].x) == cfg.n_routed_experts + cfg.n_shared_experts


def test_group_frames_mark_the_groups_the_token_uses():
    cfg = replace(GSHARD, n_routed_experts=12, n_activated_experts=3, n_expert_groups=4, n_limited_groups=2)
    fig = moe_diagram(cfg, [0, 1, 7])  # groups of 3: experts 0, 1 in group 0, expert 7 in group 2
    frames = {s.name: s for s in fig.layout.shapes if s.name and s.name.startswith(GROUP)}
    assert sorted(frames) == [f"{GROUP}{g}" for g in range(4)]
    kept = [n for n, s in frames.items() if s.fillcolor == "rgba(0,0,0,0)"]
    assert kept == [f"{GROUP}0", f"{GROUP}2"]
    assert not names(moe_diagram(GSHARD, [0, 1]), GROUP)  # one group: no frames


def test_without_indices_only_the_shared_experts_are_highlighted():
    cfg = fine_grained_config(GSHARD, 2, isolate_shared=1)
    assert active_boxes(moe_diagram(cfg)) == [f"{SHARED}0"]


def test_the_caption_counts_equal_a_real_layer():
    cfg = fine_grained_config(GSHARD, 4, isolate_shared=1)
    layer = MoE(cfg)
    total = sum(p.numel() for p in layer.parameters())
    expert = 3 * cfg.dim * cfg.moe_inter_dim
    active = layer.gate.weight.numel() + (cfg.n_shared_experts + cfg.n_activated_experts) * expert
    caption = next(a.text for a in moe_diagram(cfg).layout.annotations if a.name == "caption")
    assert f"{total:,} in total" in caption and f"{active:,} activated per token" in caption
    assert "<b>8 of 32</b>" in caption  # 1 shared + 7 routed of 1 + 31


@pytest.mark.parametrize("indices, words", [
    ([1], "must name n_activated_experts=2"), ([1, 1], "different"), ([0, 8], "are not routed experts"),
])
def test_bad_indices_say_what_to_change(indices, words):
    with pytest.raises(ValueError, match=words):
        moe_diagram(GSHARD, indices)
    with pytest.raises(ValueError, match="ffn='moe'"):
        moe_diagram(TINY)


def _history(losses, seconds):
    steps = len(losses) * 10
    return {"step": list(range(steps)), "val_step": [10 * i + 9 for i in range(len(losses))], "val_loss": losses,
            "tokens": steps * 100, "train_time_s": seconds, "loss": [1.0] * steps}


def test_comparison_figure_has_a_token_and_a_second_axis_per_run():
    fig = comparison_figure({"dense": _history([3.0, 2.5], 2.0), "gshard": _history([3.1, 2.4], 4.0)})
    assert len(fig.data) == 4
    dense_tokens, dense_seconds = fig.data[0], fig.data[1]
    assert list(dense_tokens.x) == [1000, 2000] and list(dense_seconds.x) == [1.0, 2.0]
    assert list(fig.data[3].x) == [2.0, 4.0]  # gshard: twice the seconds per step
    with pytest.raises(ValueError, match="eval_every"):
        comparison_figure({"x": {**_history([3.0], 1.0), "val_step": []}})


def _saved(name):
    path = ROOT / "benchmarks" / "results" / name
    if not path.is_file():
        pytest.skip(f"{path} is not there yet (benchmarks/bench_moe.py writes it)")
    return json.loads(path.read_text())


def test_benchmark_figure_and_table_draw_the_smoke_results():
    results = _saved("moe_smoke.json")
    fig = benchmark_figure(results)
    steps = results["settings"]["plan"]["steps"]
    rows = [r for r in results["summary"] if r["steps"] == steps]
    assert len(fig.data[0].x) == len(rows)
    assert [round(y, 6) for y in fig.data[0].y] == [round(r["val_loss_mean"], 6) for r in
                                                      sorted(rows, key=lambda r: ["dense", "gshard", "fine",
                                                                                   "deepseekmoe"].index(r["variant"]))]
    assert len(fig.data[1].y) == sum(len(r["val_loss_by_seed"]) for r in rows)
    if results.get("per_second", {}).get("rows"):
        assert len(fig.data) == 3 and len(fig.data[2].y) == len(results["per_second"]["rows"])
    table = benchmark_table(results)
    assert len(table.splitlines()) == len(rows) + 1 and "DeepSeekMoE" in table


def test_benchmark_figure_refuses_results_without_a_summary():
    with pytest.raises(ValueError, match="bench_moe.py"):
        benchmark_figure({"settings": {"plan": {"steps": 10}}, "summary": []})


def test_colors_of_active_and_idle_experts_differ():
    assert COLORS["active"] not in (COLORS["routed"], COLORS["shared"])
