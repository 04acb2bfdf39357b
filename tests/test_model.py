import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.model import MiniModel, count_parameters
from minimodels.profiles import PROFILES

CFG = ModelConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=16)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_models_build_and_shape(name):
    cfg = PROFILES[name].model
    model = MiniModel(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 8))
    assert model(x).shape == (2, 8, cfg.vocab_size)


def test_parameter_count_formula():
    d, v, f, n = CFG.dim, CFG.vocab_size, CFG.inter_dim, CFG.n_layers
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    assert count_parameters(MiniModel(CFG)) == 2 * v * d + n * per_layer + d
    assert count_parameters(MiniModel(CFG), exclude_embedding=True) == v * d + n * per_layer + d


def test_initial_loss_is_near_uniform():
    torch.manual_seed(0)
    logits = MiniModel(CFG)(torch.randint(0, 50, (4, 16)))
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.randint(0, 50, (64,)))
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.1


def test_bad_inputs_get_clear_errors():
    model = MiniModel(CFG)
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        model(torch.full((1, 4), 50))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_gradients_reach_every_parameter():
    model = MiniModel(CFG)
    model(torch.randint(0, 50, (2, 8))).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("tokens, error, words", [
    ([[1, 2, 3]], TypeError, r"got list; for one sequence use torch.tensor\(\[ids\]\)"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, r"at least one token, got \(1, 0\)"),
    (torch.zeros(0, 3, dtype=torch.long), ValueError, r"at least one token, got \(0, 3\)"),
    (torch.tensor([1, 2, 3]), ValueError, r"got \(3,\); for one sequence use torch.tensor\(\[ids\]\)"),
])
def test_empty_list_and_1d_inputs_say_what_to_pass(tokens, error, words):
    with pytest.raises(error, match=words):
        MiniModel(CFG)(tokens)


@pytest.mark.parametrize("start_pos", [-1, 1.0, True, torch.tensor(1)])
def test_start_pos_must_be_a_non_negative_int(start_pos):
    """A negative start_pos used to slice the RoPE table from its end: rotations of positions near max_seq_len."""
    with pytest.raises(ValueError, match="must be an int >= 0: the position of the first token"):
        MiniModel(CFG)(torch.zeros(1, 2, dtype=torch.long), start_pos=start_pos)


def test_state_dict_has_no_rope_table():
    """The rotations are rebuilt from the config: checkpoints written before the RopeTable change still load."""
    model = MiniModel(CFG)
    assert not any("freqs" in name for name in model.state_dict())
    MiniModel(CFG).load_state_dict(model.state_dict())  # strict


def test_golden_logits_of_a_seeded_model():
    """Logits recorded from the code before the RoPE table became a RopeTable (issue 6): lessons 01/02 train and
    generate exactly as before. Regenerate only for a deliberate change of the model's numbers."""
    torch.manual_seed(0)
    model = MiniModel(CFG)
    with torch.no_grad():
        logits = model(torch.arange(12).reshape(2, 6) * 4)
    torch.testing.assert_close(logits[1, -1, :4], torch.tensor([-0.11885107, -0.14414099, -0.11050996, 0.14697501]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(logits[0, 2, 10:13], torch.tensor([-0.00628333, -0.06897862, 0.13428231]),
                               atol=1e-6, rtol=0)
