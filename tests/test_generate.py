import pytest
import torch

from minimodels.config import ModelConfig
from minimodels.generate import generate, sample_next
from minimodels.kv_cache import KVCache
from minimodels.model import MiniModel

CFG = ModelConfig(vocab_size=60, dim=32, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MiniModel(CFG)
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.head.weight.mul_(20)
    return m


def test_cached_greedy_equals_uncached_token_for_token(model):
    prompt = torch.randint(0, 60, (3, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(generate(model, prompt, 30, use_cache=True), generate(model, prompt, 30, use_cache=False))


def test_cached_sampling_equals_uncached_with_the_same_generator(model):
    prompt = torch.randint(0, 60, (2, 3), generator=torch.Generator().manual_seed(2))
    a = generate(model, prompt, 25, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 25, temperature=0.8, top_k=10, use_cache=False,
                 generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_cached_logits_equal_full_forward(model):
    tokens = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(3))
    full = model(tokens)
    cache = KVCache(CFG, 2, 12)
    steps = [model(tokens[:, :5], 0, cache)] + [model(tokens[:, i:i + 1], i, cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_top_k_and_temperature():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, temperature=1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 2}
    assert sample_next(logits, temperature=0).item() == 1
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, top_k=0)


def test_generation_longer_than_the_context_is_refused(model):
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, torch.zeros(1, 30, dtype=torch.long), 20)
