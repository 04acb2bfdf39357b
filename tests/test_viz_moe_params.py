"""Tests for minimodels/viz/moe_params.py: activated parameters of course models, the papers' values, and the
total-vs-activated chart (inspected as a Python object, without a browser)."""

from dataclasses import replace

import pytest

from minimodels import MiniModel, count_parameters
from minimodels.config import TINY
from minimodels.viz import DEEPSEEK_MOE_PARAMS, activated_parameters, moe_params_chart
from minimodels.viz.moe_params import short_count

MOE = replace(TINY, ffn="moe", n_routed_experts=8, n_activated_experts=2, n_shared_experts=1, moe_inter_dim=32,
              n_dense_layers=1)


def test_a_dense_model_activates_every_parameter():
    counts = activated_parameters(MiniModel(TINY))
    assert counts["total"] == counts["activated"] == count_parameters(MiniModel(TINY))


def test_an_moe_model_leaves_the_unchosen_routed_experts_out():
    model = MiniModel(MOE)
    counts = activated_parameters(model)
    moe_layers = MOE.n_layers - MOE.n_dense_layers
    unused = moe_layers * (MOE.n_routed_experts - MOE.n_activated_experts) * 3 * MOE.dim * MOE.moe_inter_dim
    assert counts["total"] == count_parameters(model)
    assert counts["total"] - counts["activated"] == unused


def test_the_papers_values_are_those_of_reference_3_4():
    assert {n: (r["total"], r["activated"]) for n, r in DEEPSEEK_MOE_PARAMS.items()} == {
        "DeepSeek-V2-Lite": (15.7e9, 2.4e9), "DeepSeek-V2": (236e9, 21e9), "DeepSeek-V3": (671e9, 37e9)}
    assert all(r["source"] for r in DEEPSEEK_MOE_PARAMS.values())


def test_the_chart_has_two_bars_per_model_on_a_log_axis():
    rows = {"course MoE": activated_parameters(MiniModel(MOE)), **DEEPSEEK_MOE_PARAMS}
    fig = moe_params_chart(rows)
    assert [t.name for t in fig.data] == ["total parameters", "activated parameters"]
    assert all(list(t.x) == list(rows) for t in fig.data)
    assert list(fig.data[0].y) == [r["total"] for r in rows.values()]
    assert list(fig.data[1].y) == [r["activated"] for r in rows.values()]
    assert fig.layout.yaxis.type == "log" and fig.layout.barmode == "group"
    ticks = fig.layout.yaxis.tickvals
    assert ticks[0] <= min(fig.data[1].y) and ticks[-1] >= 671e9
    assert "236B" in fig.data[0].text and "5.5%" in fig.data[1].customdata  # V3: 37 / 671


@pytest.mark.parametrize("rows", [{}, {"x": {"total": 10, "activated": 20}}, {"x": {"total": 10, "activated": 0}}])
def test_bad_rows_are_refused(rows):
    with pytest.raises(ValueError):
        moe_params_chart(rows)


def test_short_count_reads_like_the_papers():
    assert [short_count(n) for n in (671e9, 15.7e9, 2_643_072, 231_232, 950)] == ["671B", "15.7B", "2.64M", "231k",
                                                                              "950"]
