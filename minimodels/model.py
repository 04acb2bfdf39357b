"""The pre-norm Transformer block and the language model that every lesson trains.

x = x + attn(norm(x)); x = x + ffn(norm(x)); a final RMSNorm and an untied output head, as in DeepSeek-V2/V3.
The attention and feed-forward modules are chosen by `cfg.attn` / `cfg.ffn` from the registries below, so
each later lesson (GQA, MLA, MoE) drops its module in without touching this file's logic.
Taught in lessons/01_baseline_gpt.ipynb.
"""

# Shapes: B batch, T new positions, D = dim, V = vocab_size

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ATTN_KINDS, FFN_KINDS, ModelConfig
from .ffn import FeedForward
from .gqa import GroupedQueryAttention
from .mha import MultiHeadAttention
from .mla import LowRankAttention, MultiHeadLatentAttention
from .moe import moe_ffn
from .norms import RMSNorm
from .rope import RopeTable

# variant name -> module class; config.py lists the same names (a test keeps the two in step)
ATTENTION = {"mha": MultiHeadAttention, "gqa": GroupedQueryAttention, "mla": MultiHeadLatentAttention,
             "mla_lowrank": LowRankAttention}
FEED_FORWARD = {"dense": lambda cfg, layer_id: FeedForward(cfg.dim, cfg.inter_dim),
                "moe": moe_ffn}  # DeepSeekMoE after the first n_dense_layers dense ones
assert tuple(ATTENTION) == ATTN_KINDS and tuple(FEED_FORWARD) == FFN_KINDS


class Block(nn.Module):
    """One pre-norm Transformer layer.  (B, T, D) -> (B, T, D)"""

    def __init__(self, layer_id: int, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = ATTENTION[cfg.attn](cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FEED_FORWARD[cfg.ffn](cfg, layer_id)

    def forward(self, x: Tensor, freqs: Tensor, start_pos: int = 0, cache: dict | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), freqs, start_pos, cache)
        return x + self.ffn(self.ffn_norm(x))


class MiniModel(nn.Module):
    """Token ids -> next-token logits.  (B, T) long -> (B, T, V)"""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(i, cfg) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)  # untied from embed, as in DeepSeek
        # RoPE rotations for every position the model may see (complex64: .to() moves them but never casts them);
        # as wide as the channels the variant rotates: the head in MHA/GQA, qk_rope_head_dim in MLA
        self.freqs = RopeTable(cfg.rope_head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    def forward(self, tokens: Tensor, start_pos: int = 0, cache=None) -> Tensor:
        """tokens sit at positions start_pos..start_pos+T-1; `cache` is a KVCache (kv_cache.py) or None."""
        check_tokens(tokens, self.cfg, start_pos)
        if cache is not None:  # it must be this model's, batch's and dtype's, with room for the new positions
            cache.claim(self.cfg, tokens, start_pos, self.head.weight.dtype)
        t = tokens.shape[1]
        freqs = self.freqs[start_pos:start_pos + t]  # (T, rope_head_dim / 2)
        x = self.embed(tokens)  # (B, T, D)
        for i, layer in enumerate(self.layers):
            x = layer(x, freqs, start_pos, None if cache is None else cache.layers[i])
        return self.head(self.norm(x))  # (B, T, V)


def count_parameters(model: nn.Module, *, exclude_embedding: bool = False) -> int:
    """Number of trainable parameters (optionally without the input embedding, as papers often count)."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if exclude_embedding and hasattr(model, "embed"):
        n -= model.embed.weight.numel()
    return n


@torch.no_grad()
def check_tokens(tokens: Tensor, cfg: ModelConfig, start_pos: int = 0) -> None:
    """Clear errors for the usual input mistakes (not a tensor, wrong dtype or rank, empty, ids outside the
    vocabulary, positions outside 0 .. max_seq_len - 1).

    The range check runs on CPU tensors only: on a GPU it would force a device sync every step.
    """
    if not isinstance(tokens, Tensor):
        raise TypeError(f"token ids must be a (batch, time) tensor, got {type(tokens).__name__}; for one "
                        f"sequence use torch.tensor([ids])")
    if tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"token ids must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or not tokens.numel():
        raise ValueError(f"token ids must have shape (batch, time) with at least one token, got "
                         f"{tuple(tokens.shape)}; for one sequence use torch.tensor([ids])")
    if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
        raise ValueError(f"start_pos={start_pos!r} must be an int >= 0: the position of the first token")
    if start_pos + tokens.shape[1] > cfg.max_seq_len:
        raise ValueError(f"positions up to {start_pos + tokens.shape[1]} exceed max_seq_len={cfg.max_seq_len}; "
                         f"use a shorter input or a config with a larger max_seq_len")
    if tokens.device.type == "cpu" and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
        raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}); got min {int(tokens.min())}, "
                         f"max {int(tokens.max())}")
