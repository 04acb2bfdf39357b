"""Load balancing (minimodels/balance.py) on hand-computed cases: the expert-level, device-level, communication
and V3 sequence-wise losses, the aux-loss-free bias update, and the routing statistics train() records."""

import math

import pytest
import torch

from minimodels.balance import (
    balance_loss,
    balance_losses,
    bias_step,
    comm_balance_loss,
    device_balance_loss,
    expert_balance_loss,
    expert_fraction,
    load_entropy,
    max_violation,
    record_routing,
    routing_stats,
    update_router_bias,
)
from minimodels.config import ModelConfig
from minimodels.model import MiniModel
from minimodels.router import Gate

ALPHA = 0.01
SMALL = dict(vocab_size=64, dim=16, n_layers=3, n_heads=2, inter_dim=32, max_seq_len=32, ffn="moe",
             n_routed_experts=8, n_activated_experts=2, moe_inter_dim=8)


def test_uniform_routing_gives_alpha():
    scores = torch.full((1, 4, 4), 0.25)  # (S, T, E)
    indices = torch.tensor([[[0], [1], [2], [3]]])  # each expert chosen once
    assert expert_fraction(indices, 4).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert expert_balance_loss(scores, indices, ALPHA).item() == pytest.approx(ALPHA)


def test_expert_loss_hand_case_and_its_normalisation():
    scores = torch.tensor([[[0.8, 0.2], [0.6, 0.4]]])  # T = 2, E = 2, k = 1; both tokens choose expert 0
    indices = torch.tensor([[[0], [0]]])
    # f = N_r/(K_r T) · count = 2/(1·2) · (2, 0) = (2, 0); P = (0.7, 0.3); Σ f P = 1.4
    assert expert_fraction(indices, 2).tolist() == [[2.0, 0.0]]
    assert expert_balance_loss(scores, indices, ALPHA).item() == pytest.approx(1.4 * ALPHA)


def test_sequence_scope_differs_from_batch_scope():
    a = [[0.8, 0.2], [0.6, 0.4]]  # sequence A: both tokens choose expert 0
    b = [[0.2, 0.8], [0.4, 0.6]]  # sequence B: both choose expert 1
    scores, indices = torch.tensor([a, b]), torch.tensor([[[0], [0]], [[1], [1]]])
    assert expert_balance_loss(scores, indices, ALPHA).item() == pytest.approx(1.4 * ALPHA)  # each sequence 1.4
    cfg = ModelConfig(**SMALL, aux_loss_alpha=ALPHA, aux_loss_scope="batch")
    # the batch as one sequence: counts (2, 2) -> f = (1, 1), P = (0.5, 0.5): balanced, 1.0
    assert balance_losses(scores, indices, cfg).item() == pytest.approx(1.0 * ALPHA)
    seq = ModelConfig(**SMALL, aux_loss_alpha=ALPHA)
    assert balance_losses(scores, indices, seq).item() == pytest.approx(1.4 * ALPHA)


def test_v3_loss_renormalises_sigmoid_scores_over_all_experts():
    scores = torch.tensor([[[0.6, 0.2]]])  # sigmoid scores: they do not sum to 1
    indices = torch.tensor([[[0]]])
    # s' = (0.75, 0.25); f = (2, 0): 2 · 0.75 = 1.5 (without s' it would be 1.2)
    assert expert_balance_loss(scores, indices, ALPHA).item() == pytest.approx(1.5 * ALPHA)


DEVICE_SCORES = torch.tensor([[[0.4, 0.3, 0.2, 0.1], [0.4, 0.1, 0.4, 0.1]]])  # P = (0.4, 0.2, 0.3, 0.1)
DEVICE_CHOICE = torch.tensor([[[0, 1], [0, 2]]])  # E = 4 on D = 2 devices {0, 1}, {2, 3}; k = 2


def test_device_loss_uses_the_mean_of_f_and_the_sum_of_p():
    # f = 4/(2·2) · (2, 1, 1, 0); f' = mean per device = (1.5, 0.5); P' = sum per device = (0.6, 0.4)
    loss = device_balance_loss(DEVICE_SCORES, DEVICE_CHOICE, 2, ALPHA)
    assert loss.item() == pytest.approx((1.5 * 0.6 + 0.5 * 0.4) * ALPHA)  # 1.1 α (sum of f: 2.2, mean of P: 0.55)
    uniform = device_balance_loss(torch.full((1, 2, 4), 0.25), torch.tensor([[[0, 2], [1, 3]]]), 2, ALPHA)
    assert uniform.item() == pytest.approx(ALPHA)


def test_communication_loss_counts_each_token_once_per_device():
    # M = 2: token 0 is sent to device 0 only, token 1 to both: f'' = D/(M T) · (2, 1) = (1, 0.5); P'' = (0.6, 0.4)
    loss = comm_balance_loss(DEVICE_SCORES, DEVICE_CHOICE, 2, 2, ALPHA)
    assert loss.item() == pytest.approx((1.0 * 0.6 + 0.5 * 0.4) * ALPHA)
    uniform = comm_balance_loss(torch.full((1, 2, 4), 0.25), torch.tensor([[[0, 2], [1, 3]]]), 2, 2, ALPHA)
    assert uniform.item() == pytest.approx(ALPHA)


def test_loss_gradient_reaches_the_router_weight_and_not_through_f():
    cfg = ModelConfig(**SMALL, aux_loss_alpha=ALPHA)
    gate = Gate(cfg)
    _, indices, scores = gate(torch.randn(2 * 6, 16))
    assert not expert_fraction(indices.view(2, 6, -1), 8).requires_grad  # a count: no gradient path
    balance_losses(scores.view(2, 6, -1), indices.view(2, 6, -1), cfg).backward()
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_no_loss_when_every_alpha_is_zero():
    cfg = ModelConfig(**SMALL)
    assert balance_losses(torch.rand(1, 2, 8), torch.zeros(1, 2, 2, dtype=torch.long), cfg) is None


def test_bias_update_lowers_an_overloaded_expert():
    bias = torch.zeros(4)
    bias_step(bias, torch.tensor([10, 2, 2, 2]), 0.001)  # mean 4: expert 0 is overloaded
    torch.testing.assert_close(bias, torch.tensor([-0.001, 0.001, 0.001, 0.001]))
    bias_step(bias, torch.tensor([3, 3, 3, 3]), 0.001)  # balanced: sign 0, nothing moves
    torch.testing.assert_close(bias, torch.tensor([-0.001, 0.001, 0.001, 0.001]))


def _trained_forward(**fields) -> MiniModel:
    torch.manual_seed(0)
    model = MiniModel(ModelConfig(**SMALL, **fields)).train()
    model(torch.randint(0, 64, (2, 10)))
    return model


def test_model_level_bias_update_follows_the_batch_counts_outside_autograd():
    model = _trained_forward(score_func="sigmoid", bias_update_speed=0.001)
    layers = [b.ffn for b in model.layers[1:]]
    counts = [m.counts.float() for m in layers]
    assert update_router_bias(model)
    for m, c in zip(layers, counts):
        torch.testing.assert_close(m.gate.bias, 0.001 * torch.sign(c.mean() - c))
        assert not m.gate.bias.requires_grad
    assert not update_router_bias(_trained_forward())  # bias_update_speed = 0: nothing changes


def test_model_balance_loss_sums_the_layers():
    model = _trained_forward(aux_loss_alpha=ALPHA)
    layers = [b.ffn for b in model.layers[1:]]
    torch.testing.assert_close(balance_loss(model), layers[0].aux_loss + layers[1].aux_loss)
    assert balance_loss(_trained_forward()) is None
    assert balance_loss(MiniModel(ModelConfig(**{**SMALL, "ffn": "dense"}))) is None


def test_routing_statistics_hand_cases():
    assert max_violation(torch.tensor([6, 2, 2, 2])).item() == pytest.approx(1.0)  # 6 / 3 - 1
    assert max_violation(torch.tensor([3, 3, 3, 3])).item() == 0.0
    assert load_entropy(torch.tensor([5, 5, 5, 5])).item() == pytest.approx(math.log(4))
    assert load_entropy(torch.tensor([8, 0, 0, 0])).item() == pytest.approx(0.0)


def test_record_routing_appends_one_entry_per_moe_layer_and_nothing_for_dense():
    model = _trained_forward(bias_update_speed=0.001)
    history = {}
    record_routing(model, history, torch.tensor(0.5))
    assert history["balance_loss"] == [0.5] and history["moe_layers"] == [1, 2]
    assert len(history["expert_load"][0]) == 2 and sum(history["expert_load"][0][0]) == 2 * 10 * 2
    stats = routing_stats(model)
    assert stats["dead_experts"] == [sum(c == 0 for c in row) for row in stats["load"]]
    assert len(history["router_bias"][0][0]) == 8
    dense, before = MiniModel(ModelConfig(**{**SMALL, "ffn": "dense"})), {"loss": [1.0]}
    record_routing(dense, before)
    assert before == {"loss": [1.0]}
