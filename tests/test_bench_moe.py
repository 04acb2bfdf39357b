"""Tests of benchmarks/bench_moe.py: matched variants, the statistics and targets its tables rest on, and a tiny
smoke run of every part that writes and merges a result file (fast: smoke profile, a few steps)."""

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from minimodels import ModelConfig, get_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # bench_moe imports bench_baseline
bm = importlib.import_module("bench_moe")

SMOKE = get_profile("smoke")


def counts_of(configs: dict[str, ModelConfig]) -> dict[str, dict]:
    return {name: bm.parameter_counts(cfg, SMOKE.seq_len) for name, cfg in configs.items()}


def test_smoke_variants_are_matched_in_total_and_activated_ffn_weights():
    configs = bm.variant_configs(SMOKE.model)
    counts = counts_of(configs)
    assert bm.matching_problems(counts) == []
    moe = ("gshard", "fine", "deepseekmoe")
    assert len({counts[n]["ffn_weights_total"] for n in moe}) == 1
    assert len({c["ffn_weights_activated"] for c in counts.values()}) == 1
    assert counts["dense"]["ffn_weights_total"] == counts["dense"]["ffn_weights_activated"]  # no idle weights
    # the whole models differ by the routers alone (D x E per MoE layer)
    for name in moe:
        extra = counts[name]["activated"] - counts["dense"]["activated"]
        assert extra == counts[name]["router_params"] == 64 * configs[name].n_routed_experts * 2
    # the closed-form FLOPs count the same activated weights the modules hold
    for name, c in counts.items():
        cfg = configs[name]
        norm_gains = (2 * cfg.n_layers + 1) * cfg.dim  # two per layer and the final norm: not matmul weights
        assert c["flops_active_params"] == c["activated_without_embedding"] - norm_gains, name


def test_matching_problems_catch_an_unmatched_variant():
    configs = bm.variant_configs(SMOKE.model)
    configs["fine"] = replace(configs["fine"], n_activated_experts=6)  # forgot to activate m x k experts
    assert any("activated" in p for p in bm.matching_problems(counts_of(configs)))
    configs = bm.variant_configs(SMOKE.model)
    configs["gshard"] = replace(configs["gshard"], n_routed_experts=6)
    assert any("total" in p for p in bm.matching_problems(counts_of(configs)))


def test_widths_follow_the_profile():
    for name, width in (("smoke", 256), ("cpu", 512), ("gpu", 1536)):
        cfgs = bm.variant_configs(get_profile(name).model)
        assert cfgs["dense"].inter_dim == width, name
        g, d = cfgs["gshard"], cfgs["deepseekmoe"]
        layout = lambda c: (c.n_routed_experts, c.moe_inter_dim, c.n_activated_experts, c.n_shared_experts)  # noqa: E731
        assert layout(g) == (8, width // 2, 2, 0) and layout(d) == (31, width // 8, 7, 1)
        assert cfgs["fine"].n_routed_experts == 32 and cfgs["fine"].n_activated_experts == 8
        assert all(c.n_dense_layers == 0 and c.aux_loss_alpha == bm.AUX_ALPHA for c in (g, d, cfgs["fine"]))
    with pytest.raises(ValueError, match="divisible"):
        bm.variant_configs(ModelConfig(dim=5, n_heads=1, attn="mla"))  # A = 20: no 8 equal pieces


def test_ablation_arms_share_the_sigmoid_layout_and_differ_only_in_balancing():
    arms = bm.arm_configs(SMOKE.model)
    layout = replace(arms["none"], aux_loss_alpha=0.0, bias_update_speed=0.0)
    for name, cfg in arms.items():
        assert cfg.score_func == "sigmoid" and cfg.n_shared_experts == 1
        assert replace(cfg, aux_loss_alpha=0.0, bias_update_speed=0.0) == layout, name
    assert (arms["none"].aux_loss_alpha, arms["none"].bias_update_speed) == (0.0, 0.0)
    assert (arms["expert_loss"].aux_loss_alpha, arms["seq_loss"].aux_loss_alpha) == (0.01, 1e-4)
    assert (arms["bias"].aux_loss_alpha, arms["bias"].bias_update_speed) == (0.0, 1e-3)


def history(n_steps: int = 20, n_experts: int = 4, bias: bool = False) -> dict:
    """A synthetic train() history of a 2-MoE-layer model: expert 3 of layer 0 never used after step 9."""
    load = [[[5, 5, 5, 0 if s >= 10 else 5], [8, 4, 4, 4]] for s in range(n_steps)]
    h = {"moe_layers": [0, 1], "expert_load": load, "max_vio": [[0.2 + s / 100, 0.6] for s in range(n_steps)],
         "load_entropy": [[1.0, 1.2]] * n_steps, "router_entropy": [[1.3, 1.4]] * n_steps,
         "balance_loss": [0.02] * n_steps, "dead_experts": [[1 if s >= 10 else 0, 0] for s in range(n_steps)]}
    if bias:
        h["router_bias"] = [[[0.001 * s] * n_experts] * 2 for s in range(n_steps)]
    return h


def test_routing_summary_uses_the_last_tenth_and_finds_dead_experts():
    out = bm.routing_summary(history())
    assert out["max_vio"] == [pytest.approx(0.385), 0.6]  # steps 18, 19: 0.38, 0.39
    assert out["max_vio_mean"] == pytest.approx((0.385 + 0.6) / 2, abs=1e-4)
    assert out["dead_experts"] == [1, 0] and out["final_load"] == [[10, 10, 10, 0], [16, 8, 8, 8]]
    assert out["routing_curve"]["dead_experts"][0] == [0, 0] and out["routing_curve"]["dead_experts"][-1] == [1, 0]
    assert "bias_curve" not in out and bm.routing_summary({"loss": [1.0]}) == {}  # dense model: nothing
    biased = bm.routing_summary(history(bias=True))
    assert biased["bias_curve"]["step"][0] == 1 and biased["bias_curve"]["bias"][-1][0][0] == pytest.approx(0.019)


def test_interpolate_and_mean_curve():
    curve = [[10, 4.0], [20, 3.0], [30, 2.5]]
    assert bm.interpolate(curve, 15) == (3.5, True)
    assert bm.interpolate(curve, 5) == (4.0, True)
    assert bm.interpolate(curve, 30) == (2.5, True)
    assert bm.interpolate(curve, 45) == (2.5, False)  # never got there
    assert bm.mean_curve([[[10, 4.0], [20, 3.0]], [[10, 2.0], [20, 1.0], [30, 0.5]]]) == [[10, 3.0], [20, 2.0]]


def run(variant: str, seed: int, loss: float, steps: int = 600, moe: bool = True) -> dict:
    return {"variant": variant, "seed": seed, "steps": steps, "final_val_loss": loss,
            "val_loss_by_domain": {"prose": loss + 0.1, "code": loss - 0.1},
            "val_curve": [[steps // 2, loss + 0.5], [steps, loss]], "parameters": 10, "activated_parameters": 5,
            "training_flops_per_token": 30, "max_vio": [0.5, 0.7] if moe else None,
            "max_vio_mean": 0.6 if moe else None, "max_vio_over_training": 0.8 if moe else None,
            "dead_experts": [0, 1] if moe else None, "router_entropy": [2.0, 2.0] if moe else None,
            "routing_curve": {"step": [300, 600], "max_vio": [[1.0, 1.0], [0.5, 0.7]]} if moe else None}


def main_runs(gaps: tuple[float, ...] = (0.05, 0.06, 0.07)) -> list[dict]:
    runs = []
    for seed, gap in enumerate(gaps):
        runs += [run("dense", seed, 4.0, moe=False), run("gshard", seed, 3.9), run("deepseekmoe", seed, 3.9 - gap)]
    return runs


def test_summarize_means_gaps_and_paired_differences():
    rows = {(r["variant"], r["steps"]): r for r in bm.summarize(
        main_runs() + [run("gshard", 0, 3.0, steps=1200)], "variant", bm.VARIANTS)}
    ds, dense = rows[("deepseekmoe", 600)], rows[("dense", 600)]
    assert ds["val_loss_mean"] == pytest.approx(3.84) and ds["val_loss_std"] == pytest.approx(0.01)
    assert ds["gap_to_gshard"] == pytest.approx(-0.06) and ds["gap_to_dense"] == pytest.approx(-0.16)
    assert ds["paired_diff_to_gshard"] == {"0": -0.05, "1": -0.06, "2": -0.07}
    assert ds["val_loss_by_domain_mean"]["code"] == pytest.approx(3.74) and ds["max_vio_mean"] == 0.6
    assert dense["max_vio_mean"] is None and dense["dead_experts_mean"] is None
    assert ds["val_curve_mean"] == [[300, 4.34], [600, 3.84]]
    assert ds["max_vio_curve_mean"] == [[300, 1.0], [600, 0.6]]
    assert rows[("gshard", 1200)]["gap_to_dense"] is None  # no dense run at 1200 steps


def results_with(runs: list[dict], rates: dict[str, float] | None = None) -> dict:
    results = {"settings": {"plan": {"steps": 600}}, "training": {"runs": runs}}
    if rates:
        results["timing"] = {"rows": [{"variant": n, "tokens_per_s": r} for n, r in rates.items()]}
    bm.finish(results, 600, 100)
    return results


def met(results: dict) -> dict[str, bool]:
    return {t["name"].split(" ")[0] + (" speed" if "tokens/s" in t["name"] else ""): t["met"]
            for t in results["targets"]}


def test_targets_met_and_not_met():
    good = results_with(main_runs(), {"dense": 1000.0, "gshard": 900.0, "deepseekmoe": 720.0})
    assert met(good) == {"DeepSeekMoE speed": True, "DeepSeekMoE": True, "hypothesis,": True}
    slow = results_with(main_runs(), {"dense": 1000.0, "deepseekmoe": 690.0})
    assert met(slow)["DeepSeekMoE speed"] is False
    one_seed_short = results_with(main_runs((0.05, 0.03, 0.09)))  # mean 0.057 but one seed misses 0.04
    assert met(one_seed_short) == {"DeepSeekMoE": False, "hypothesis,": True}
    assert one_seed_short["targets"][0]["value"] == pytest.approx(0.03)
    two_seeds = results_with(main_runs((0.05, 0.06)))  # held needs three seeds
    assert met(two_seeds)["DeepSeekMoE"] is False
    reversed_order = results_with(main_runs((-0.01, -0.01, -0.01)))  # DeepSeekMoE worse than GShard
    assert met(reversed_order) == {"DeepSeekMoE": False, "hypothesis,": False}


def test_per_second_reads_the_curve_at_dense_finish_time():
    results = results_with(main_runs(), {"dense": 1000.0, "gshard": 500.0, "deepseekmoe": 2000.0})
    view = {r["variant"]: r for r in results["per_second"]["rows"]}
    assert results["per_second"]["seconds"] == 60.0  # 600 steps x 100 tokens / 1000 tokens/s
    assert view["gshard"]["steps_in_that_time"] == 300 and view["gshard"]["val_loss_at_that_time"] == 4.4
    assert view["deepseekmoe"]["exact"] is False  # twice as fast: would have trained past its curve
    assert view["dense"]["val_loss_at_that_time"] == view["dense"]["loss_per_token"] == 4.0


def test_make_plan_applies_quick_then_options_and_refuses_nonsense():
    plan = bm.make_plan(bm.parse_args(["--quick", "--seeds", "3,4", "--arms", "none,bias"]), "smoke")
    assert plan.seeds == (3, 4) and plan.arms == ("none", "bias") and plan.timing_rounds == 1
    assert bm.make_plan(bm.parse_args([]), "cpu").seeds == (0, 1, 2)
    for bad in (["--seeds", "0,x"], ["--variants", "switch"], ["--arms", "aux"], ["--steps", "1"],
                ["--timing-steps", "0"]):
        with pytest.raises(SystemExit):
            bm.make_plan(bm.parse_args(bad), "cpu")


def test_smoke_quick_run_of_every_part_writes_and_merges(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["--profile", "smoke", "--quick", "--steps", "4", "--threads", "1", "--out", str(tmp_path)]
    first = bm.main(common + ["--timing-steps", "2", "--arms", "none,bias"])
    saved = json.loads((tmp_path / "moe_smoke.json").read_text())
    assert saved["targets"] == first["targets"]
    for key in ("configs", "parameters", "training", "summary", "ablation", "timing", "dispatch", "per_second",
                "targets", "machine", "settings", "activated_ffn_width"):
        assert key in saved, key
    assert saved["matching_problems"] == []
    assert {r["variant"] for r in saved["training"]["runs"]} == set(bm.VARIANTS)
    moe_run = next(r for r in saved["training"]["runs"] if r["variant"] == "deepseekmoe")
    assert set(moe_run["val_loss_by_domain"]) == {"prose", "code"} and len(moe_run["max_vio"]) == 2
    assert [r["arm"] for r in saved["ablation"]["summary"]] == ["none", "bias"]
    assert "bias_curve" in next(r for r in saved["ablation"]["runs"] if r["arm"] == "bias")
    assert [r["variant"] for r in saved["timing"]["rows"]] == list(bm.VARIANTS)
    text = (tmp_path / "moe_smoke.md").read_text()
    assert "## 1. Per token" in text and "## 2. Per second" in text and "## Targets" in text
    # a second invocation with another seed and only the training part keeps both seeds and the other parts
    bm.main(common + ["--seeds", "1", "--variants", "dense,gshard", "--skip-ablation", "--skip-timing",
                      "--skip-dispatch"])
    merged = json.loads((tmp_path / "moe_smoke.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in merged["training"]["runs"] if r["variant"] != "fine"
                  and r["variant"] != "deepseekmoe") == [("dense", 0), ("dense", 1), ("gshard", 0), ("gshard", 1)]
    assert len(merged["ablation"]["runs"]) == 2 and merged["timing"]["from_run"] == saved["date"]
    assert next(r for r in merged["summary"] if r["variant"] == "dense")["n_seeds"] == 2
