"""The DeepSeekMoE layer (minimodels/moe.py): the sparse dispatch equals a dense reference that runs every expert
and masks (outputs and gradients), shared experts, dense first layers, fine-grained configs, config errors."""

import pytest
import torch
import torch.nn.functional as F

from minimodels.config import ModelConfig
from minimodels.ffn import FeedForward
from minimodels.model import MiniModel
from minimodels.moe import DISPATCHES, MoE, fine_grained_config, moe_ffn, set_dispatch, sort_by_expert, trace_routing

SMALL = dict(vocab_size=64, dim=16, n_layers=3, n_heads=2, inter_dim=32, max_seq_len=32, ffn="moe",
             n_routed_experts=8, n_activated_experts=3, moe_inter_dim=8, n_shared_experts=1)
VARIANTS = {
    "v2": dict(score_func="softmax", route_scale=1.0),
    "v2_groups": dict(score_func="softmax", route_scale=16.0, n_expert_groups=4, n_limited_groups=2),
    "v3_groups": dict(score_func="sigmoid", route_scale=2.5, n_expert_groups=4, n_limited_groups=2),
    "no_shared": dict(score_func="sigmoid", n_shared_experts=0),
}


def dense_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, then a (N, E) mask of gate values: the maths, without dispatch."""
    flat = x.reshape(-1, x.shape[-1])  # (N, D)
    weights, indices, _ = moe.gate(flat)
    gates = torch.zeros(flat.shape[0], moe.cfg.n_routed_experts).scatter(1, indices, weights)  # (N, E)
    ex = moe.experts
    hidden = F.silu(torch.einsum("nd,ehd->neh", flat, ex.w1)) * torch.einsum("nd,ehd->neh", flat, ex.w3)
    y = (gates.unsqueeze(-1) * torch.einsum("neh,edh->ned", hidden, ex.w2)).sum(1)  # (N, D)
    if moe.shared_experts is not None:
        y = y + moe.shared_experts(flat)
    return y.view_as(x)


def _layer(variant: str, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    layer = MoE(ModelConfig(**{**SMALL, **VARIANTS[variant]}), layer_id=1)
    with torch.no_grad():  # larger weights than the init so the test sees real differences
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


def assert_equals_dense_reference(layer) -> dict[str, torch.Tensor]:
    """The layer's output and every gradient (input and parameters) equal the dense reference's, on a random
    (3, 7, 16) input; returns the layer's gradients by name ("x" for the input)."""
    x = torch.randn(3, 7, 16, requires_grad=True)
    target = torch.randn(3, 7, 16)
    got = layer(x)
    grads = torch.autograd.grad((got * target).sum(), [x, *layer.parameters()])
    want = dense_reference(layer, x)
    want_grads = torch.autograd.grad((want * target).sum(), [x, *layer.parameters()])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, g, h in zip(names, grads, want_grads):
        torch.testing.assert_close(g, h, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"grad of {name}: {m}")
    return dict(zip(names, grads))


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sparse_layer_equals_dense_reference_forward_and_gradients(variant, dispatch):
    layer = _layer(variant)
    layer.dispatch = dispatch
    assert_equals_dense_reference(layer)


def test_dense_reference_differs_when_a_token_is_sent_to_the_wrong_expert():
    """The comparison can fail: a dispatch that swaps two experts' outputs is caught."""
    layer = _layer("v2")
    x = torch.randn(2, 5, 16)
    want = dense_reference(layer, x)
    with torch.no_grad():
        layer.experts.w2[[0, 1]] = layer.experts.w2[[1, 0]].clone()
    assert not torch.allclose(layer(x), want, atol=1e-3)


def test_sort_by_expert_groups_the_choices_and_inverts():
    indices = torch.tensor([[2, 0], [2, 1], [2, 0]])  # pairs a = n·k + j
    order, row_of = sort_by_expert(indices)
    assert order.tolist() == [1, 5, 3, 0, 2, 4]  # expert 0's pairs, then expert 1's, then expert 2's
    assert indices.flatten()[order].tolist() == [0, 0, 1, 2, 2, 2]
    assert order[row_of].tolist() == list(range(6))  # row_of is the inverse permutation


def test_shared_experts_are_unweighted_and_always_on():
    layer = _layer("v2")
    assert isinstance(layer.shared_experts, FeedForward) and layer.shared_experts.w1.out_features == 8
    x = torch.randn(1, 4, 16)
    with torch.no_grad():
        routed_only = layer(x) - layer.shared_experts(x)
        layer.experts.w2.zero_()  # no routed contribution left: the output is exactly the shared expert's
        torch.testing.assert_close(layer(x), layer.shared_experts(x))
    assert routed_only.abs().sum() > 0


def test_first_dense_layers_keep_the_wide_dense_ffn():
    cfg = ModelConfig(**{**SMALL, "n_dense_layers": 2})
    assert isinstance(moe_ffn(cfg, 0), FeedForward) and moe_ffn(cfg, 1).w1.out_features == cfg.inter_dim
    assert isinstance(moe_ffn(cfg, 2), MoE)
    model = MiniModel(cfg)
    assert [type(b.ffn).__name__ for b in model.layers] == ["FeedForward", "FeedForward", "MoE"]


def test_model_trains_a_step_and_the_bias_is_not_a_parameter():
    torch.manual_seed(0)
    model = MiniModel(ModelConfig(**SMALL, score_func="sigmoid", route_scale=2.5))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("gate.bias") for n in names) and "layers.1.ffn.gate.bias" in model.state_dict()
    logits = model(torch.randint(0, 64, (2, 9)))
    logits.sum().backward()
    assert model.layers[1].ffn.gate.weight.grad.abs().sum() > 0
    assert model.layers[1].ffn.experts.w1.grad.abs().sum() > 0


def test_set_dispatch_switches_every_layer_and_rejects_unknown_names():
    model = MiniModel(ModelConfig(**SMALL))
    assert all(b.ffn.dispatch == "sorted" for b in model.layers[1:])  # the default
    set_dispatch(model, "loop")
    assert all(b.ffn.dispatch == "loop" for b in model.layers[1:])
    with pytest.raises(ValueError, match="dispatch"):
        set_dispatch(model, "magic")


def test_fine_grained_config_keeps_parameters_and_activated_width():
    base = ModelConfig(**{**SMALL, "n_shared_experts": 0, "n_activated_experts": 2, "moe_inter_dim": 16})
    fine = fine_grained_config(base, 4, isolate_shared=1)
    assert (fine.n_routed_experts, fine.n_activated_experts, fine.n_shared_experts, fine.moe_inter_dim) == (31, 7, 1, 4)
    width = lambda c: (c.n_routed_experts + c.n_shared_experts) * c.moe_inter_dim  # noqa: E731
    active = lambda c: (c.n_activated_experts + c.n_shared_experts) * c.moe_inter_dim  # noqa: E731
    assert width(fine) == width(base) and active(fine) == active(base)
    with pytest.raises(ValueError, match="moe_inter_dim"):
        fine_grained_config(base, 3)
    with pytest.raises(ValueError, match="isolate"):
        fine_grained_config(base, 2, isolate_shared=4)


@pytest.mark.parametrize("fields, message", [
    (dict(n_activated_experts=9), "at most n_routed_experts"),
    (dict(n_expert_groups=3), "divisible by n_expert_groups"),
    (dict(n_expert_groups=4, n_limited_groups=5), "at most n_expert_groups"),
    (dict(n_expert_groups=4, n_limited_groups=1), "raise n_limited_groups to at least 2"),
    (dict(n_expert_groups=8, n_limited_groups=4, score_func="sigmoid"), "top-2"),
    (dict(score_func="relu"), "softmax"),
    (dict(aux_loss_scope="token"), "sequence"),
    (dict(route_scale=0.0), "route_scale"),
    (dict(bias_update_speed=-1e-3), "bias_update_speed"),
    (dict(n_dense_layers=3), "no MoE layer"),
    (dict(n_routed_experts=0), "n_routed_experts"),
])
def test_config_errors_say_what_to_change(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**SMALL, **fields})


def test_config_round_trips_with_moe_fields(tmp_path):
    cfg = ModelConfig(**SMALL, score_func="sigmoid", route_scale=2.5, bias_update_speed=1e-3)
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg


def test_trace_routing_reports_each_layers_choices_in_eval_mode():
    torch.manual_seed(0)
    model = MiniModel(ModelConfig(**SMALL)).train()
    tokens = torch.randint(0, 64, (2, 5))
    trace = trace_routing(model, tokens)
    assert list(trace) == [1, 2] and model.training  # MoE layers only; the mode is restored
    layer = trace[1]
    assert layer["indices"].shape == layer["weights"].shape == (2, 5, 3) and layer["scores"].shape == (2, 5, 8)
    with torch.no_grad():  # layer 1's FFN input, step by step
        block, freqs = model.layers[1], model.freqs[:5]
        x = model.layers[0](model.embed(tokens), freqs)
        x = x + block.attn(block.attn_norm(x), freqs, 0, None)
        weights, indices, _ = block.ffn.gate(block.ffn_norm(x).reshape(10, -1))
    torch.testing.assert_close(layer["indices"].reshape(10, -1), indices)
    torch.testing.assert_close(layer["weights"].reshape(10, -1), weights)


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_gemm", "expert_loop"])
def test_both_sorted_paths_equal_the_dense_reference_with_unused_experts(grouped, monkeypatch):
    """dispatch "sorted" runs every expert in one grouped GEMM on CPU (when torch has it) and loops over the experts
    elsewhere: both equal the dense reference, also when experts (the first and last) get no token at all."""
    import minimodels.moe as moe_module

    if grouped and not moe_module.grouped_mm_on_cpu():
        pytest.skip("this torch has no CPU grouped GEMM")
    used = []
    monkeypatch.setattr(moe_module, "_use_grouped", lambda x, experts: used.append(grouped) or grouped)
    layer = _layer("v2")
    layer.gate.bias[[0, 7]] = -1e9  # never chosen
    grads = assert_equals_dense_reference(layer)
    assert used == [grouped] and layer.counts[[0, 7]].tolist() == [0, 0] and layer.counts.sum() == 21 * 3
    w1_grad = grads["experts.w1"]
    assert w1_grad[[0, 7]].abs().sum() == 0 and w1_grad[1:7].abs().sum() > 0  # unused experts learn nothing
