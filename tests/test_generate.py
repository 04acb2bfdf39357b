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


@pytest.mark.parametrize("prompt, error, words", [
    ([[1, 2, 3]], TypeError, r"got a list; for one sequence use torch.tensor\(\[ids\]\)"),
    (torch.tensor([1, 2, 3]), ValueError, r"\(batch, time\) tensor.*got shape \(3,\); for one sequence use"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, r"at least one token, got shape \(1, 0\)"),
    (torch.zeros(0, 2, dtype=torch.long), ValueError, r"at least one token, got shape \(0, 2\)"),
    (torch.zeros(1, 2), TypeError, "integer tensor"),  # float ids: the model's own check
])
def test_bad_prompts_say_what_to_pass(model, prompt, error, words):
    with pytest.raises(error, match=words):
        generate(model, prompt, 3)


@pytest.mark.parametrize("n, words", [(-1, "max_new_tokens=-1 must be an int >= 0"),
                                      (2.0, "max_new_tokens=2.0 must be an int"),
                                      (True, "max_new_tokens=True must be an int")])
def test_bad_max_new_tokens(model, n, words):
    with pytest.raises(ValueError, match=words):
        generate(model, torch.zeros(1, 2, dtype=torch.long), n)


def test_zero_new_tokens_returns_the_prompt(model):
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(generate(model, prompt, 0), prompt)
    assert torch.equal(generate(model, prompt, 0, use_cache=False), prompt)


@pytest.mark.parametrize("kw, error, words", [
    (dict(temperature=float("nan")), ValueError, "temperature=nan must be a finite number >= 0"),
    (dict(temperature=float("inf")), ValueError, "temperature=inf must be a finite number"),
    (dict(temperature=-0.5), ValueError, "temperature=-0.5 must be a finite number >= 0"),
    (dict(temperature="0.8"), TypeError, "temperature='0.8' must be a number"),
    (dict(temperature=1.0, top_k=2.5), TypeError, "top_k=2.5 must be a positive int"),
    (dict(temperature=1.0, top_k=True), TypeError, "top_k=True must be a positive int"),
    (dict(temperature=1.0, top_k=0), ValueError, "top_k=0 must be a positive int"),
])
def test_bad_sampling_settings_raise_before_any_work(model, kw, error, words):
    with pytest.raises(error, match=words):
        sample_next(torch.zeros(1, 60), **kw)
    with pytest.raises(error, match=words):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 3, **kw)


def test_logits_of_every_position_are_refused():
    with pytest.raises(ValueError, match=r"\(batch, vocab\).*logits\[:, -1\]"):
        sample_next(torch.zeros(1, 4, 60), temperature=0)  # argmax would quietly return (1, 4, 1)


def test_a_short_cache_is_refused_before_generating(model):
    """A cache shorter than prompt + new tokens - 1 used to drop keys silently and change the tokens."""
    prompt = torch.randint(0, 60, (1, 5), generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match=r"max_len=10 positions but this call writes 14.*max_len=14\) or more"):
        generate(model, prompt, 10, cache=KVCache(CFG, 1, 10))
    cache = KVCache(CFG, 1, 14)  # exactly enough: the last token is never fed back
    assert torch.equal(generate(model, prompt, 10, cache=cache), generate(model, prompt, 10, use_cache=False))
    assert cache.length == 14
    with pytest.raises(ValueError, match="use_cache=False"):
        generate(model, prompt, 10, use_cache=False, cache=cache)


def test_a_cache_of_another_batch_is_refused(model):
    with pytest.raises(ValueError, match=r"batch_size=3 sequences but the input has 2"):
        generate(model, torch.zeros(2, 3, dtype=torch.long), 4, cache=KVCache(CFG, 3, 10))


def test_the_model_is_left_in_its_mode_after_an_error(model):
    for training in (True, False):
        model.train(training)
        with pytest.raises(ValueError, match="batch_size=2"):  # raised inside the loop, after model.eval()
            generate(model, torch.zeros(1, 3, dtype=torch.long), 4, cache=KVCache(CFG, 2, 10))
        assert model.training == training
    model.train()  # the fixture's mode
