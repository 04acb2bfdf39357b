"""Tests for minimodels/viz/routing.py: the token grid shows each token's top expert and, on hover, all its chosen
experts and weights; the domain shares count the routing choices of each domain; the live widget switches layers
(readout, grid and domain heatmap follow) and leaves the "run this cell" note for a notebook without a kernel.

Inspected as Python objects with a fake IPython display (tests/display_log.py), without a browser.
"""

from dataclasses import replace

import pytest
import torch
from display_log import fake_display

from minimodels import MiniModel, trace_routing
from minimodels.config import TINY
from minimodels.viz import domain_expert_shares, domain_share_figure, expert_routing, routing, token_expert_figure
from minimodels.viz.routing import (
    CHART_CLASS,
    CSS_CLASS,
    DOMAINS_CLASS,
    LAYER_CLASS,
    READOUT_CLASS,
    domain_distance,
    readable,
)

CFG = replace(TINY, vocab_size=64, dim=32, n_heads=2, n_layers=3, ffn="moe", n_dense_layers=1, n_routed_experts=6,
              n_activated_experts=2, n_shared_experts=1, moe_inter_dim=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiniModel(CFG).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, CFG.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))


def pieces_of(tokens):
    return [[f"t{int(i)}" for i in row] for row in tokens]


def test_cells_are_coloured_by_the_top_expert_and_hover_lists_every_choice(model, tokens):
    rec = trace_routing(model, tokens)[1]
    fig = token_expert_figure(rec["weights"], rec["indices"], pieces_of(tokens), 6, labels=["prose", "code"],
                              layer=1)
    (heat,) = fig.data
    assert len(heat.z) == 4 and len(heat.z[0]) == 16  # 2 texts × ceil(20 / 16) rows of 16 cells
    assert heat.z[0][3] == int(rec["indices"][0, 3, 0]) and heat.z[2][0] == int(rec["indices"][1, 0, 0])
    assert heat.z[1][4] is None and heat.text[1][4] == ""  # past the 20th token: empty cells
    hover = heat.hovertext[3][3]  # code, position 19
    for j in range(2):
        assert f"expert {int(rec['indices'][1, 19, j])}: {float(rec['weights'][1, 19, j]):.3f}" in hover
    assert "code, position 19" in hover and heat.zmin == -0.5 and heat.zmax == 5.5


def test_token_labels_show_spaces_and_newlines():
    assert readable(" the") == "␣the" and readable("\n    ") == "⏎    " and readable("") == "∅"


def test_bad_shapes_say_what_to_pass(model, tokens):
    rec = trace_routing(model, tokens)[1]
    with pytest.raises(ValueError, match="token strings"):
        token_expert_figure(rec["weights"], rec["indices"], pieces_of(tokens)[:1], 6)
    with pytest.raises(ValueError, match=r"\(B, T, k\)"):
        token_expert_figure(rec["weights"][0], rec["indices"][0], pieces_of(tokens), 6)


def test_domain_shares_count_each_domain_s_choices(model):
    g = torch.Generator().manual_seed(2)
    prose, code = torch.randint(0, 32, (200,), generator=g), torch.randint(32, 64, (200,), generator=g)
    shares = domain_expert_shares(model, {"prose": prose, "code": code}, seq_len=16, n_windows=3)
    assert sorted(shares) == [1, 2]  # the MoE layers (layer 0 is dense)
    windows = torch.stack([code[s:s + 16] for s in torch.linspace(0, 200 - 16, 3).long().tolist()])
    counts = torch.bincount(trace_routing(model, windows)[2]["indices"].flatten(), minlength=6).float()
    torch.testing.assert_close(shares[2]["code"], counts / counts.sum())
    assert all(abs(float(s.sum()) - 1) < 1e-6 for layer in shares.values() for s in layer.values())
    same = domain_expert_shares(model, {"a": prose, "b": prose}, seq_len=16, n_windows=3)
    assert domain_distance(same[1]) == 0.0
    fig = domain_share_figure(shares)
    assert list(fig.data[0].y) == ["layer 1 · prose", "layer 1 · code", "layer 2 · prose", "layer 2 · code"]
    with pytest.raises(ValueError, match="fewer than seq_len"):
        domain_expert_shares(model, {"prose": prose[:8]}, seq_len=16)


def test_the_widget_follows_the_layer_selector(model, tokens):
    g = torch.Generator().manual_seed(3)
    streams = {"prose": torch.randint(0, 32, (100,), generator=g), "code": torch.randint(32, 64, (100,), generator=g)}
    shares = domain_expert_shares(model, streams, seq_len=16, n_windows=2)
    w = expert_routing(model, tokens, pieces_of(tokens), labels=["prose", "code"], shares=shares)
    assert CSS_CLASS in w._dom_classes and LAYER_CLASS in w.layer._dom_classes
    assert READOUT_CLASS in w.readout._dom_classes and CHART_CLASS in w.chart._dom_classes
    assert DOMAINS_CLASS in w.domain_chart._dom_classes
    assert [v for _, v in w.layer.options] == [1, 2]
    assert "MoE layer 1" in w.readout.value and "prose vs code" in w.readout.value
    rec = trace_routing(model, tokens)
    top = [[int(i) for i in row[:16]] for row in rec[2]["indices"][:, :, 0]]
    w.layer.value = 2
    assert "MoE layer 2" in w.readout.value and "layer 2" in w.figure.layout.title.text
    assert list(w.figure.data[0].z[0]) == top[0] and list(w.figure.data[0].z[2]) == top[1]
    assert list(w.domains.data[0].y) == ["layer 2 · prose", "layer 2 · code"]


def test_without_a_kernel_the_widget_leaves_a_run_this_cell_note(model, tokens, monkeypatch):
    log = []
    monkeypatch.setattr(routing, "display", fake_display(log))
    w = expert_routing(model, tokens, pieces_of(tokens))
    w._ipython_display_()
    note = log[0][1]
    assert f"mm-kernel-hint-{w._hint_key}" in note.data and "run this cell" in note.data
    assert f".mm-kernel-hint-{w._hint_key} " in w.children[0].value  # the live widget hides the note
    assert w.domains is None


def test_a_dense_model_has_no_routing_to_show(tokens):
    dense = MiniModel(replace(CFG, ffn="dense"))
    with pytest.raises(ValueError, match="no MoE layer"):
        expert_routing(dense, tokens, pieces_of(tokens))
