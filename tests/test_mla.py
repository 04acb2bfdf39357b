"""Multi-head Latent Attention: the module against DeepSeek-V2's equations written out per head, the two paths
(naive and absorbed) against each other, the cache contents, and the classic mistakes of REFERENCE.md §6."""

import math

import pytest
import torch

from minimodels.config import ModelConfig, replace
from minimodels.kv_cache import KVCache, cache_spec
from minimodels.mla import (
    LowRankAttention,
    MultiHeadLatentAttention,
    mla_absorbed_attention,
    mla_naive_attention,
    set_attn_impl,
    split_wkv_b,
)
from minimodels.model import MiniModel
from minimodels.rope import rope_frequencies

# deliberately all different widths, so a mixed-up dimension cannot pass by accident
CFG = ModelConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, inter_dim=64, max_seq_len=32, attn="mla",
                  kv_lora_rank=20, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=10, q_lora_rank=0)
CFG_Q = replace(CFG, q_lora_rank=14)
H, K, R, V, C = 4, 6, 4, 10, 20


def attention(cfg, seed=0, cls=MultiHeadLatentAttention):
    torch.manual_seed(seed)
    m = cls(cfg)
    for p in m.parameters():  # random norm gains too, so a missing or misplaced norm shows
        torch.nn.init.normal_(p, std=0.3 if p.dim() > 1 else 1.0)
    return m


def rope_by_hand(x, theta=10000.0):
    """Adjacent-pair rotation of x (..., T, W) at positions 0..T-1, written out with cos and sin."""
    t, w = x.shape[-2:]
    angle = torch.arange(t)[:, None] * theta ** (-torch.arange(0, w, 2) / w)  # (T, W/2)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * angle.cos() - x1 * angle.sin(), x0 * angle.sin() + x1 * angle.cos()], -1).flatten(-2)


def rms(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reference(m, x, *, split="per_head", scale=None, norm_rope_key=False, rope_on_all=False):
    """DeepSeek-V2 Eq. 9-19 (+ the latent RMSNorms), one head at a time, from the module's weights.

    The keyword arguments switch on classic mistakes, so the tests can show that each one changes the output.
    """
    t = x.shape[1]
    scale = (K + R) ** -0.5 if scale is None else scale
    c_q = x if m.q_lora_rank == 0 else rms(x @ m.wq_a.weight.T, m.q_norm.weight)
    w_q = m.wq.weight if m.q_lora_rank == 0 else m.wq_b.weight  # (H·(K+R), ·)
    kv_a = x @ m.wkv_a.weight.T  # (B, T, C+R)
    if norm_rope_key:  # mistake: normalise [c_kv | k_rope] together
        kv_a = rms(kv_a, torch.cat([m.kv_norm.weight, torch.ones(R)]))
        c_kv, k_rope = kv_a[..., :C], rope_by_hand(kv_a[..., C:])
    else:
        c_kv, k_rope = rms(kv_a[..., :C], m.kv_norm.weight), rope_by_hand(kv_a[..., C:])  # k^R_t: ONE per token
    w_kv = m.wkv_b.weight  # (H·(K+V), C)
    heads = []
    for i in range(H):
        w_uq, w_qr = w_q[i * (K + R):i * (K + R) + K], w_q[i * (K + R) + K:(i + 1) * (K + R)]
        if split == "per_head":
            w_uk, w_uv = w_kv[i * (K + V):i * (K + V) + K], w_kv[i * (K + V) + K:(i + 1) * (K + V)]
        else:  # mistake: [all keys; all values]
            w_uk, w_uv = w_kv[i * K:(i + 1) * K], w_kv[H * K + i * V:H * K + (i + 1) * V]
        q = torch.cat([c_q @ w_uq.T, rope_by_hand(c_q @ w_qr.T)], -1)  # q_{t,i} = [q^C; q^R]
        k = torch.cat([c_kv @ w_uk.T, k_rope], -1)  # k_{t,i} = [k^C; k^R]
        if rope_on_all:  # mistake: rotate the compressed parts too (then W^UK cannot be absorbed)
            q = torch.cat([rope_by_hand(c_q @ w_uq.T), q[..., K:]], -1)
            k = torch.cat([rope_by_hand(c_kv @ w_uk.T), k_rope], -1)
        scores = (q @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        heads.append(scores.softmax(-1) @ (c_kv @ w_uv.T))  # (B, T, V)
    return torch.cat(heads, -1) @ m.wo.weight.T


@pytest.mark.parametrize("cfg", [CFG, CFG_Q], ids=["q_lora_rank=0", "q_lora_rank=14"])
@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_both_paths_follow_the_paper_per_head(cfg, impl):
    m = attention(cfg)
    m.attn_impl = impl
    x = torch.randn(2, 9, 48)
    torch.testing.assert_close(m(x, rope_frequencies(R, 9)), reference(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mistake", [dict(split="global"), dict(scale=K ** -0.5), dict(scale=(C + R) ** -0.5),
                                     dict(norm_rope_key=True), dict(rope_on_all=True)],
                         ids=["global split", "scale 1/sqrt(K)", "scale 1/sqrt(C+R)", "normalised rope key",
                              "RoPE on the compressed part"])
def test_each_classic_mistake_changes_the_output(mistake):
    m = attention(CFG_Q)
    x = torch.randn(2, 9, 48)
    out = m(x, rope_frequencies(R, 9))
    assert (out - reference(m, x, **mistake)).abs().max() > 1e-3


def test_module_parts_and_their_shapes():
    m, mq = attention(CFG), attention(CFG_Q)
    assert m.wq.weight.shape == (H * (K + R), 48) and not hasattr(m, "wq_a")
    assert (mq.wq_a.weight.shape, mq.q_norm.weight.shape, mq.wq_b.weight.shape) == ((14, 48), (14,), (H * (K + R), 14))
    assert not hasattr(mq, "wq")
    assert m.wkv_a.weight.shape == (C + R, 48)  # [W^DKV; W^KR]: ONE rope key, not H of them
    assert m.kv_norm.weight.shape == (C,)  # the norm covers the latent only
    assert m.wkv_b.weight.shape == (H * (K + V), C) and m.wo.weight.shape == (48, H * V)
    assert m.softmax_scale == pytest.approx(1 / math.sqrt(K + R))


def test_the_rope_key_is_one_per_token_from_the_hidden_state_and_not_normalised():
    m = attention(CFG_Q)
    x = torch.randn(2, 7, 48)
    c_kv, k_pe = m.latent(x, rope_frequencies(R, 7))
    assert k_pe.shape == (2, 7, R)  # one per token, shared by all heads
    raw = x @ m.wkv_a.weight[C:].T  # W^KR h_t, straight from the hidden state
    torch.testing.assert_close(k_pe, rope_by_hand(raw), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_kv, rms(x @ m.wkv_a.weight[:C].T, m.kv_norm.weight), atol=1e-5, rtol=1e-5)


def test_split_wkv_b_is_per_head():
    w = torch.arange(H * (K + V) * C, dtype=torch.float32).view(H * (K + V), C)
    w_uk, w_uv = split_wkv_b(w, H, K)
    assert w_uk.shape == (H, K, C) and w_uv.shape == (H, V, C)
    for i in range(H):
        assert torch.equal(w_uk[i], w[i * (K + V):i * (K + V) + K])
        assert torch.equal(w_uv[i], w[i * (K + V) + K:(i + 1) * (K + V)])


def test_naive_and_absorbed_functions_agree_on_random_inputs():
    torch.manual_seed(3)
    q_nope, q_pe = torch.randn(2, 3, H, K), torch.randn(2, 3, H, R)
    c_kv, k_pe, wkv_b = torch.randn(2, 8, C), torch.randn(2, 8, R), torch.randn(H * (K + V), C)
    for pe in [(q_pe, k_pe), (None, None)]:
        a = mla_naive_attention(q_nope, pe[0], c_kv, pe[1], wkv_b, 0.3)
        b = mla_absorbed_attention(q_nope, pe[0], c_kv, pe[1], wkv_b, 0.3)
        assert a.shape == (2, 3, H, V)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def model(cfg, seed=0):
    torch.manual_seed(seed)
    m = MiniModel(cfg)
    with torch.no_grad():  # larger weights than the init, so differences are not hidden by tiny activations
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(std=0.2)
    return m


@pytest.mark.parametrize("cfg", [CFG, CFG_Q, replace(CFG, attn="mla_lowrank")], ids=["mla", "mla q_lora",
                                                                                       "mla_lowrank"])
def test_absorbed_equals_naive_logits_prefill_and_token_by_token(cfg):
    m = model(cfg)
    tokens = torch.randint(0, 64, (3, 14), generator=torch.Generator().manual_seed(1))
    naive = m(tokens)
    torch.testing.assert_close(set_attn_impl(m, "absorb")(tokens), naive, atol=1e-5, rtol=1e-5)
    caches = {}
    for impl in ("naive", "absorb", "auto"):
        set_attn_impl(m, impl)
        caches[impl] = KVCache(cfg, 3, 14)
        steps = [m(tokens[:, :4], 0, caches[impl])] + [m(tokens[:, i:i + 1], i, caches[impl]) for i in range(4, 14)]
        torch.testing.assert_close(torch.cat(steps, 1), naive, atol=1e-5, rtol=1e-5)
    naive_cache, absorbed_cache = caches["naive"].layers, caches["absorb"].layers
    for name in naive_cache[0]:  # both paths write the same latent cache: exactly in the first layer...
        assert torch.equal(naive_cache[0][name], absorbed_cache[0][name])
    for a, b in zip(naive_cache[1:], absorbed_cache[1:]):  # ...and up to rounding after it
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


def test_cache_holds_the_normalised_latent_and_the_rotated_rope_key():
    m = model(CFG)
    layer = m.layers[0]
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    cache = KVCache(CFG, 2, 10)
    m(tokens, 0, cache)
    assert cache.spec == cache_spec(CFG) == {"kv": (C,), "pe": (R,)}
    x = layer.attn_norm(m.embed(tokens))
    c_kv, k_pe = layer.attn.latent(x, rope_frequencies(R, 6))
    torch.testing.assert_close(cache.layers[0]["kv"][:, :6], c_kv)
    torch.testing.assert_close(cache.layers[0]["pe"][:, :6], k_pe)
    assert cache.layers[0]["kv"][:, 6:].abs().sum() == 0
    assert cache.bytes_per_token == CFG.n_layers * (C + R) * 4  # fp32; the heads do not appear


def test_lowrank_has_no_rope_and_no_position_information():
    cfg = replace(CFG, attn="mla_lowrank")
    m = attention(cfg, cls=LowRankAttention)
    assert m.wkv_a.weight.shape == (C, 48) and m.wq.weight.shape == (H * K, 48)
    assert LowRankAttention.cache_spec(cfg) == {"kv": (C,)}
    assert m.softmax_scale == pytest.approx(1 / math.sqrt(K))
    x = torch.randn(1, 6, 48)
    shuffled = x[:, [3, 0, 4, 2, 1, 5]]  # same tokens before the last one, in another order
    free = rope_frequencies(R, 6)
    torch.testing.assert_close(m(x, free)[:, -1], m(shuffled, free)[:, -1], atol=1e-5, rtol=1e-5)
    rope = attention(CFG)  # with decoupled RoPE the order matters
    assert (rope(x, free)[:, -1] - rope(shuffled, free)[:, -1]).abs().max() > 1e-3


def test_mla_scores_depend_only_on_distance():
    """Shifting every position by the same amount leaves the output unchanged: RoPE sees only distances."""
    m = attention(CFG)
    x = torch.randn(1, 5, 48)
    freqs = rope_frequencies(R, 20)
    torch.testing.assert_close(m(x, freqs[:5]), m(x, freqs[11:16]), atol=1e-5, rtol=1e-5)


def test_attn_impl_is_checked_and_switchable():
    m = attention(CFG)
    assert m.attn_impl == "naive"
    with pytest.raises(ValueError, match="choose one of"):
        m.attn_impl = "flash"
    with pytest.raises(ValueError, match="no MLA layers"):
        set_attn_impl(MiniModel(replace(CFG, attn="mha")), "absorb")
    assert all(a.attn.attn_impl == "absorb" for a in set_attn_impl(model(CFG), "absorb").layers)


@pytest.mark.parametrize("impl", ["naive", "absorb"])
def test_gradients_reach_every_parameter(impl):
    m = set_attn_impl(model(CFG_Q), impl)
    m(torch.randint(0, 64, (2, 8))).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("change, words", [
    (dict(kv_lora_rank=0), "kv_lora_rank"),
    (dict(qk_nope_head_dim=0), "qk_nope_head_dim"),
    (dict(v_head_dim=-1), "v_head_dim"),
    (dict(q_lora_rank=-2), "q_lora_rank"),
    (dict(qk_rope_head_dim=5), "even"),
    (dict(qk_rope_head_dim=0), "mla_lowrank"),
    (dict(n_kv_heads=2), "attn='gqa'"),
])
def test_invalid_mla_configs_say_what_to_change(change, words):
    with pytest.raises(ValueError, match=words):
        replace(CFG, **change)


def test_lowrank_ignores_the_rope_width_but_not_the_other_fields():
    replace(CFG, attn="mla_lowrank", qk_rope_head_dim=0)  # fine: no rope channels at all
    with pytest.raises(ValueError, match="kv_lora_rank"):
        replace(CFG, attn="mla_lowrank", kv_lora_rank=0)


def test_an_mla_too_big_for_memory_is_refused_before_allocation():
    with pytest.raises(ValueError, match=r"kv_lora_rank=1073741824, .* make a model of .* over the limit"):
        replace(CFG, kv_lora_rank=2**30)
