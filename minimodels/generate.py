"""Text generation: greedy or sampled (temperature, top-k), with or without a KV cache.

With the cache, the prompt is run once (prefill) and each new token is one single-position forward pass
(decode). Without it, every step re-runs the model over the whole sequence. Both give the same tokens; the
tests check it token for token. Taught in lessons/01_baseline_gpt.ipynb and lessons/02_kv_cache.ipynb.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .kv_cache import KVCache


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Pick the next token from last-position logits.  (B, V) -> (B, 1). temperature 0 means greedy."""
    _check_sampling(temperature, top_k)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor of shape (batch, vocab), got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}; "
                         f"from a model's (batch, time, vocab) output pass the last position, logits[:, -1]")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) smallest kept logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


def _check_sampling(temperature: float, top_k: int | None) -> None:
    """temperature: a finite number >= 0; top_k: None or an int >= 1. NaN or inf would sample silently wrong."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature={temperature!r} must be a number (0 = greedy, 1 = the model's own "
                        f"distribution)")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature} must be a finite number >= 0 (0 = greedy, 1 = the model's "
                         f"own distribution)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise TypeError(f"top_k={top_k!r} must be a positive int (keep the k most likely tokens) or None")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive int (keep the k most likely tokens) or None")


def _check_request(prompt: Tensor, max_new_tokens: int, cfg, use_cache: bool, cache: KVCache | None) -> None:
    """Errors that say what to pass, before any work: the prompt, the number of tokens, the cache's room."""
    if not isinstance(prompt, Tensor):
        raise TypeError(f"prompt must be a (batch, time) tensor of token ids, got a {type(prompt).__name__}; for "
                        f"one sequence use torch.tensor([ids])")
    if prompt.dim() != 2 or not prompt.numel():
        raise ValueError(f"prompt must be a (batch, time) tensor of token ids with at least one token, got shape "
                         f"{tuple(prompt.shape)}; for one sequence use torch.tensor([ids])")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 0: how many tokens to add")
    b, t0 = prompt.shape
    if t0 + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt ({t0}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len="
                         f"{cfg.max_seq_len}; generate fewer tokens or use a larger max_seq_len")
    if cache is not None and not use_cache:
        raise ValueError("a cache was passed with use_cache=False; pass use_cache=True or leave cache out")
    need = max(t0, t0 + max_new_tokens - 1)  # the last sampled token is returned, never fed back
    if cache is not None and cache.max_len < need:
        raise ValueError(f"the cache holds max_len={cache.max_len} positions but this call writes {need} (the "
                         f"prompt's {t0} and every new token but the last); allocate KVCache(cfg, {b}, "
                         f"max_len={need}) or more")


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
             cache: KVCache | None = None) -> Tensor:
    """Continue `prompt` (B, T0) by max_new_tokens tokens.  -> (B, T0 + max_new_tokens)

    temperature=0 is greedy decoding. Pass a `generator` for reproducible sampling. A `cache` you pass is
    overwritten from position 0 and ends holding prompt + max_new_tokens - 1 positions: the last sampled token
    is returned, never fed back.
    """
    cfg = model.cfg
    _check_request(prompt, max_new_tokens, cfg, use_cache, cache)
    _check_sampling(temperature, top_k)
    b, t0 = prompt.shape
    was_training = model.training
    model.eval()
    try:
        tokens = prompt
        if use_cache:
            if cache is None:
                dtype = next(model.parameters()).dtype
                cache = KVCache(cfg, b, t0 + max_new_tokens, device=prompt.device, dtype=dtype)
            logits = model(prompt, start_pos=0, cache=cache)[:, -1]  # prefill: (B, V); cache.length = t0
        for i in range(max_new_tokens):
            if not use_cache:
                logits = model(tokens)[:, -1]  # re-run the whole sequence
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)  # (B, 1)
            tokens = torch.cat([tokens, nxt], dim=1)
            if use_cache and i < max_new_tokens - 1:
                logits = model(nxt, start_pos=cache.length, cache=cache)[:, -1]  # decode one position: length + 1
    finally:
        model.train(was_training)
    return tokens
