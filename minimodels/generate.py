"""Text generation: greedy or sampled (temperature, top-k), with or without a KV cache.

With the cache, the prompt is run once (prefill) and each new token is one single-position forward pass
(decode). Without it, every step re-runs the model over the whole sequence. Both give the same tokens; the
tests check it token for token. Taught in lessons/01_baseline_gpt.ipynb and lessons/02_kv_cache.ipynb.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kv_cache import KVCache


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Pick the next token from last-position logits.  (B, V) -> (B, 1). temperature 0 means greedy."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive int or None")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) smallest kept logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
             cache: KVCache | None = None) -> Tensor:
    """Continue `prompt` (B, T0) by max_new_tokens tokens.  -> (B, T0 + max_new_tokens)

    temperature=0 is greedy decoding. Pass a `generator` for reproducible sampling. A `cache` you pass ends
    holding prompt + max_new_tokens - 1 positions: the last sampled token is returned, never fed back.
    """
    cfg = model.cfg
    b, t0 = prompt.shape
    if t0 < 1:
        raise ValueError("the prompt needs at least one token")
    if t0 + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt ({t0}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len="
                         f"{cfg.max_seq_len}; generate fewer tokens or use a larger max_seq_len")
    was_training = model.training
    model.eval()
    tokens = prompt
    if use_cache:
        if cache is None:
            dtype = next(model.parameters()).dtype
            cache = KVCache(cfg, b, t0 + max_new_tokens, device=prompt.device, dtype=dtype)
        cache.length = 0
        logits = model(prompt, start_pos=0, cache=cache)[:, -1]  # prefill: (B, V)
        cache.length = t0
    for i in range(max_new_tokens):
        if not use_cache:
            logits = model(tokens)[:, -1]  # re-run the whole sequence
        nxt = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)  # (B, 1)
        tokens = torch.cat([tokens, nxt], dim=1)
        if use_cache and i < max_new_tokens - 1:
            logits = model(nxt, start_pos=cache.length, cache=cache)[:, -1]  # decode one position
            cache.length += 1
    model.train(was_training)
    return tokens
