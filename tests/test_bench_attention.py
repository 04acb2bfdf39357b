"""Tests of benchmarks/bench_attention.py's helpers: the logic its tables rest on, not its timings (fast)."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from minimodels import KVCache, MiniModel, ModelConfig, set_attn_impl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # bench_attention imports bench_baseline
ba = importlib.import_module("bench_attention")

TINY = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=32)


def test_variant_configs_keep_the_head_widths_and_cache_what_they_say():
    base = ModelConfig(dim=128, n_layers=4, n_heads=4)  # the cpu profile's sizes
    mla = ba.VARIANTS["mla-c64-r32"].config(base)
    assert (mla.attn, mla.kv_lora_rank, mla.qk_rope_head_dim) == ("mla", 64, 32)
    assert mla.qk_nope_head_dim == mla.v_head_dim == 32  # MHA's head width, not the config default
    h8 = ba.VARIANTS["mla-h8-c32-r8"].config(base)
    assert (h8.n_heads, h8.qk_nope_head_dim) == (8, 16)
    # bytes per token: MHA 2·H·K·L·4, GQA 2·G·K·L·4, MLA (C + R)·L·4
    expected = {"mha": 4096, "gqa2": 2048, "mqa": 1024, "mla-c64-r32": 1536, "mla-c32-r32": 1024,
                "mla-h8-c32-r8": 640, "lowrank-c64": 1024}
    for name, nbytes in expected.items():
        assert ba.cache_bytes_per_token(ba.VARIANTS[name].config(base)) == nbytes, name


def test_target_mla_is_within_the_issue_cache_limit():
    base = ba.gpt2_config(1024, 64)
    mha, mla = (ba.cache_bytes_per_token(ba.VARIANTS[n].config(base)) for n in ("mha", ba.TARGET_MLA))
    assert mla / mha <= ba.TARGET_CACHE_FRACTION
    assert (mha, mla) == (2 * 24 * 32 * 12 * 4, (128 + 16) * 12 * 4)


def test_every_default_and_decode_variant_is_registered():
    groups = [(p.variants, p.decode_variants) for p in ba.PLANS.values()]
    groups.append((ba.QUICK["variants"], ba.QUICK["decode_variants"]))
    assert all(n in ba.VARIANTS for pair in groups for group in pair for n in group)
    assert all(n in ba.VARIANTS for n in (*ba.TARGET_VARIANTS, *ba.SERVING_VARIANTS))


def test_parse_names_accepts_known_and_all_and_rejects_typos():
    assert ba.parse_names("mha, mqa", ba.VARIANTS, "variants") == ("mha", "mqa")
    assert ba.parse_names("all", ba.VARIANTS, "variants") == tuple(ba.VARIANTS)
    with pytest.raises(SystemExit, match="mla-c999"):
        ba.parse_names("mha,mla-c999", ba.VARIANTS, "variants")
    with pytest.raises(SystemExit):
        ba.parse_names(",", ba.VARIANTS, "variants")


def test_largest_batch_fills_the_budget_and_refuses_one_too_small():
    assert ba.largest_batch(1000, 10, 10) == 10
    assert ba.largest_batch(1099, 10, 10) == 10  # whole sequences only
    with pytest.raises(ValueError, match="serve-budget-mib"):
        ba.largest_batch(99, 10, 10)


def rows(naive: dict, absorb: dict) -> list[dict]:
    return [{"context": c, "path": p, "tokens_per_s": v} for p, d in (("naive", naive), ("absorb", absorb))
            for c, v in d.items()]


def test_crossover_is_where_absorbed_stays_at_least_as_fast():
    assert ba.crossover_context(rows({64: 10, 512: 8, 1024: 5, 2048: 3}, {64: 6, 512: 8, 1024: 6, 2048: 6})) == 512
    # a dip at a longer context moves the crossover past it
    assert ba.crossover_context(rows({64: 10, 512: 8, 1024: 7}, {64: 11, 512: 7, 1024: 9})) == 1024
    assert ba.crossover_context(rows({64: 10, 512: 8}, {64: 12, 512: 7})) is None  # slower at the longest
    assert ba.crossover_context(rows({64: 1, 512: 1}, {64: 2, 512: 2})) == 64


def test_pareto_front_drops_dominated_points():
    points = [("mha", 4096, 3.70), ("mqa", 1024, 3.80), ("mla", 768, 3.75), ("bad", 2048, 3.90), ("tie", 768, 3.75)]
    assert ba.pareto_front(points) == ["mla", "tie", "mha"]  # equal points do not dominate each other
    assert "mqa" not in ba.pareto_front(points)  # mla has less cache and lower loss


def run(variant: str, seed: int, steps: int = 600, loss: float = 3.8) -> dict:
    return {"variant": variant, "seed": seed, "steps": steps, "final_val_loss": loss, "parameters": 10,
            "parameters_without_embedding": 8, "cache_bytes_per_token": 4096 if variant == "mha" else 1024,
            "tokens_per_s": 1000.0, "mfu": 0.5}


def test_merge_runs_replaces_same_keys_and_drops_changed_variants():
    old = [run("mha", 0, loss=4.0), run("mha", 1), run("mqa", 0)]
    new = [run("mha", 0, loss=3.5), run("mha", 0, steps=1200)]
    merged = ba.merge_runs(old, new, {"mha": {"a": 1}, "mqa": {"a": 1}}, {"mha": {"a": 1}})
    assert sorted((r["variant"], r["seed"], r["steps"], r["final_val_loss"]) for r in merged) == [
        ("mha", 0, 600, 3.5), ("mha", 0, 1200, 3.8), ("mha", 1, 600, 3.8), ("mqa", 0, 600, 3.8)]
    changed = ba.merge_runs(old, [run("mqa", 1)], {"mqa": {"a": 1}}, {"mqa": {"a": 2}})
    assert [(r["variant"], r["seed"]) for r in changed] == [("mha", 0), ("mha", 1), ("mqa", 1)]


def test_summarize_averages_seeds_and_measures_the_gap_to_the_same_heads_mha():
    base = ModelConfig(dim=128, n_layers=4, n_heads=4)
    configs = {n: ba.VARIANTS[n].config(base).to_dict() for n in ("mha", "mqa", "mla-h8-c32-r8")}
    runs = [run("mha", 0, loss=3.7), run("mha", 1, loss=3.9), run("mqa", 0, loss=4.0), run("mqa", 1, loss=4.0),
            run("mla-h8-c32-r8", 0), run("mqa", 0, steps=1200, loss=3.6)]
    rows = {(r["variant"], r["steps"]): r for r in ba.summarize(runs, configs, 4096)}
    mha, mqa = rows[("mha", 600)], rows[("mqa", 600)]
    assert mha["val_loss_mean"] == pytest.approx(3.8) and mha["val_loss_std"] == pytest.approx(0.1414, abs=1e-4)
    assert mqa["gap_to_mha"] == pytest.approx(0.2) and mqa["cache_fraction_of_mha"] == 0.25
    assert mqa["n_kv_heads"] == 1 and mqa["kv_lora_rank"] is None
    assert rows[("mla-h8-c32-r8", 600)]["gap_to_mha"] is None  # no 8-head MHA was trained
    assert rows[("mqa", 1200)]["gap_to_mha"] is None  # nor an MHA with 1200 steps


def test_replicated_cache_decodes_every_row_like_the_single_sequence():
    torch.manual_seed(0)
    cfg = ba.VARIANTS["mla-c32-r16"].config(TINY)
    model = MiniModel(cfg)
    set_attn_impl(model, "absorb")
    prompt = torch.randint(0, 64, (1, 9))
    one, logits = ba.prefill(model, prompt, 16)
    assert one.length == 9 and torch.allclose(logits, model(prompt)[:, -1], atol=1e-5)
    many = ba.replicate(one, 3)
    nxt = torch.tensor([[5]])
    with torch.no_grad():
        want = model(nxt, start_pos=9, cache=one)[:, -1]
        got = model(nxt.expand(3, 1), start_pos=9, cache=many)[:, -1]
    assert torch.allclose(got, want.expand(3, -1), atol=1e-6)


def test_time_decode_leaves_the_cache_where_it_started():
    torch.manual_seed(0)
    model = MiniModel(TINY)
    cache, logits = ba.prefill(model, torch.randint(0, 64, (1, 5)), 12)
    assert ba.time_decode(model, cache, logits, 4) > 0
    assert cache.length == 5  # the next timed call decodes the same positions again
    with pytest.raises(ValueError, match="max_len"):  # the cache's room is still checked
        ba.time_decode(model, cache, logits, 8)


def test_prefill_in_chunks_equals_one_pass(monkeypatch):
    torch.manual_seed(0)
    model = MiniModel(TINY)
    prompt = torch.randint(0, 64, (1, 11))
    whole = ba.prefill(model, prompt, 12)
    monkeypatch.setattr(ba, "PREFILL_CHUNK", 4)
    chunked = ba.prefill(model, prompt, 12)
    assert torch.allclose(whole[1], chunked[1], atol=1e-5)
    assert torch.allclose(whole[0].layers[1]["k"][:, :11], chunked[0].layers[1]["k"][:, :11], atol=1e-5)


def test_merge_previous_keeps_skipped_parts_and_old_runs(tmp_path):
    path = tmp_path / "attention_x.json"
    old = {"date": "then", "decode": {"rows": []}, "training": {"configs": {"mha": {}}, "runs": [run("mha", 0)],
                                                                 "peaks": [{"flops_per_s": 1}]}}
    path.write_text(json.dumps(old))
    results = {"training": {"configs": {"mqa": {}}, "runs": [run("mqa", 0)], "peaks": []}}
    ba.merge_previous(results, path)
    assert results["decode"]["from_run"] == "then"
    assert [r["variant"] for r in results["training"]["runs"]] == ["mha", "mqa"]
    assert set(results["training"]["configs"]) == {"mha", "mqa"}
    assert results["training"]["peaks"] == [{"flops_per_s": 1}]  # this invocation measured none


def test_pareto_figure_has_a_trace_per_family_and_the_front():
    base = ModelConfig(dim=128, n_layers=4, n_heads=4)
    configs = {n: ba.VARIANTS[n].config(base).to_dict() for n in ("mha", "mqa")}
    summary = ba.summarize([run("mha", 0, loss=3.7), run("mqa", 0, loss=3.9)], configs, 4096)
    fig = ba.pareto_figure(summary)
    assert [t.name for t in fig.data] == ["MHA", "GQA", "Pareto front"]
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="training"):
        ba.pareto_figure([])


def test_kv_cache_bytes_are_read_from_the_tensors():
    cfg = ba.VARIANTS["mqa"].config(TINY)
    assert ba.cache_bytes_per_token(cfg) == KVCache(cfg, 2, 7).nbytes // 14 == 2 * 1 * 8 * 2 * 4


def test_make_plan_applies_quick_then_the_options_and_refuses_nonsense():
    plan = ba.make_plan(ba.parse_args(["--profile", "smoke", "--quick", "--seeds", "3,4"]), "smoke")
    assert plan.seeds == (3, 4) and plan.variants == ba.QUICK_VARIANTS and plan.target_new_tokens == 32
    assert ba.make_plan(ba.parse_args([]), "cpu").target_new_tokens == 512  # the issue's target
    for bad in (["--repeats", "0"], ["--seeds", "0,x"], ["--contexts", "64,0"], ["--variants", "gqa9"]):
        with pytest.raises(SystemExit):
            ba.make_plan(ba.parse_args(bad), "cpu")


def test_quiet_timing_replaces_the_speeds_of_the_timed_variants_only(tmp_path):
    base = ModelConfig(dim=128, n_layers=4, n_heads=4)
    configs = {n: ba.VARIANTS[n].config(base).to_dict() for n in ("mha", "mqa")}
    summary = ba.summarize([run("mha", 0), run("mqa", 0)], configs, 4096)
    timing = {"rows": [{"variant": "mqa", "tokens_per_s": 2500.0, "mfu": 0.61}]}
    ba.use_quiet_speeds(summary, timing)
    rows = {r["variant"]: r for r in summary}
    assert (rows["mqa"]["tokens_per_s_mean"], rows["mqa"]["mfu_mean"], rows["mqa"]["speed_from"]) == (2500.0, 0.61,
                                                                                                        "timing")
    assert (rows["mha"]["tokens_per_s_mean"], rows["mha"]["speed_from"]) == (1000.0, "training")
    path = tmp_path / "attention_x.json"  # a later invocation without part 5 keeps the old timing
    path.write_text(json.dumps({"date": "then", "timing": timing}))
    results = {}
    ba.merge_previous(results, path)
    assert results["timing"]["rows"] == timing["rows"] and results["timing"]["from_run"] == "then"


def test_timing_part_times_every_variant_in_each_round(monkeypatch):
    calls = []

    def fake_run(variant, profile, data, device, seed, steps):
        calls.append((variant.name, seed, steps))
        return {"tokens_per_s": 100.0 * (1 + len(calls)), "training_flops_per_token": 10}

    monkeypatch.setattr(ba, "train_run", fake_run)
    monkeypatch.setattr(ba, "bench_peak", lambda device, plan: {"flops_per_s": 4000.0})
    plan = ba.make_plan(ba.parse_args(["--profile", "smoke", "--variants", "mha,mqa"]), "smoke")
    profile = ba.get_profile("smoke")

    class Data:
        class tokenizer:  # noqa: N801
            vocab_size = 1024

    t = ba.bench_timing(profile, Data, torch.device("cpu"), plan)
    assert calls == [("mha", 0, 10), ("mqa", 0, 10), ("mqa", 0, 10), ("mha", 0, 10)]  # the second round reversed
    rows = {r["variant"]: r for r in t["rows"]}
    assert rows["mha"]["runs_tokens_per_s"] == [200.0, 500.0] and rows["mha"]["tokens_per_s"] == 350.0
    assert rows["mqa"]["vs_mha"] == pytest.approx(350.0 / 350.0)
    assert rows["mha"]["mfu"] == pytest.approx(
        ba.mfu(rows["mha"]["training_flops_per_token"], 350.0, 4000.0), abs=1e-4)
    assert "## 5. Training speed" in "\n".join(ba.markdown_timing(t))


def test_gap_along_training_compares_each_evaluation_with_the_same_heads_mha():
    base = ModelConfig(dim=128, n_layers=4, n_heads=4)
    configs = {n: ba.VARIANTS[n].config(base).to_dict() for n in ("mha", "mqa", "mla-h8-c32-r8")}

    def curve(variant, seed, losses, steps=600):
        return {**run(variant, seed, steps), "val_curve": [[100 * (i + 1), v] for i, v in enumerate(losses)]}

    runs = [curve("mha", 0, [5.0, 4.0]), curve("mha", 1, [5.2, 4.2]), curve("mqa", 0, [4.9, 4.3]),
            curve("mqa", 1, [5.1, 4.3]), curve("mla-h8-c32-r8", 0, [4.0, 3.0]), curve("mqa", 0, [9.0], steps=300)]
    gaps = ba.gap_along_training(runs, configs, 600)
    assert gaps == {"mqa": {100: pytest.approx(-0.1), 200: pytest.approx(0.2)}}  # no 8-head MHA: no gap for h8
