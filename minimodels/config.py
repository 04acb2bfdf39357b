"""Model configuration: one frozen dataclass that every lesson builds on.

Field names follow DeepSeek's `ModelArgs` (deepseek-ai/DeepSeek-V3, inference/model.py) so that a learner can
put our code beside theirs. The config checks itself: an impossible combination, a NaN or infinite number, or a
model too big for memory raises ValueError that names the field and says what to change. Later lessons switch
the attention (`attn`) and feed-forward (`ffn`) variants here.
Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

# the variants a config may name; each later lesson adds its module to these tuples and to model.py's registry
ATTN_KINDS = ("mha", "gqa", "mla", "mla_lowrank")
FFN_KINDS = ("dense", "moe")

# Size limits. The course's largest model (the gpu profile) has 11.4 M parameters and 1,024 × 32 RoPE
# rotations; these limits sit far above that but refuse a typo before it allocates more than a machine holds:
# 2**32 fp32 parameters are 16 GiB of weights, more than the whole 16 GB GPU the gpu profile is sized for, and
# training adds three times as much again (gradients and AdamW's two moments). RoPE rotations are complex64
# (8 bytes), built through float64 and complex128 temporaries (about 40 bytes each at the peak): 2**24 of them
# peak near 640 MiB.
MAX_PARAMETERS = 2**32
MAX_ROPE_ROTATIONS = 2**24


@dataclass(frozen=True)
class ModelConfig:
    # --- sizes of the baseline GPT (lesson 01) ---
    vocab_size: int = 1024
    dim: int = 128  # model width d ("d_model", HF hidden_size)
    n_layers: int = 4
    n_heads: int = 4  # attention heads n_h; head width d_h = dim // n_heads
    inter_dim: int = 344  # hidden width of the dense SwiGLU FFN (HF intermediate_size)
    max_seq_len: int = 256  # longest context RoPE tables and KV caches are sized for
    # --- variants chosen by later lessons ---
    attn: Literal["mha", "gqa", "mla", "mla_lowrank"] = "mha"
    ffn: Literal["dense", "moe"] = "dense"
    # --- GQA / MQA (lesson 03) ---
    n_kv_heads: int = 0  # key/value heads for attn="gqa": 0 = n_heads (MHA), 1 = MQA; must divide n_heads
    # --- MLA (lessons 04, 05), DeepSeek's names; paper symbols in REFERENCE.md §1 ---
    q_lora_rank: int = 0  # query latent width d_c' (0 = no query compression, as in DeepSeek-V2-Lite)
    # The defaults are the course's MLA preset, picked from benchmarks/results/attention_cpu.md (3 seeds, cpu
    # profile, head width 32): latent C = 32 and rope key R = 32 cache 1,024 B/token (4x less than MHA, as MQA)
    # and matched MHA's validation loss (-0.002 nats), where R = 16 was 0.029 nats behind and MQA 0.024.
    kv_lora_rank: int = 32  # cached KV latent width d_c
    qk_nope_head_dim: int = 32  # per-head query/key width d_h of the compressed part (no RoPE)
    qk_rope_head_dim: int = 32  # decoupled RoPE width d_h^R: per-head rope query, one shared rope key
    v_head_dim: int = 32  # per-head value width
    # --- DeepSeekMoE (lessons 06-08), DeepSeek's names; paper symbols in REFERENCE.md §1; used when ffn="moe" ---
    n_routed_experts: int = 8  # routed experts N_r
    n_shared_experts: int = 1  # shared experts N_s: always on, unweighted, one SwiGLU of width N_s·moe_inter_dim
    n_activated_experts: int = 2  # routed experts each token uses, K_r (top-k)
    n_expert_groups: int = 1  # groups of routed experts (V2: devices D, V3: nodes); 1 = no group-limited routing
    n_limited_groups: int = 1  # groups one token may use (V2: M, V3: topk_group)
    score_func: Literal["softmax", "sigmoid"] = "softmax"  # router affinities: V2 softmax, V3 sigmoid
    route_scale: float = 1.0  # multiplies the routed weights (V2 16, V2-Lite 1, V3 2.5)
    moe_inter_dim: int = 64  # hidden width of one expert
    n_dense_layers: int = 1  # the first layers keep the dense FFN of width inter_dim (V2: 1, V3: 3)
    # balancing (lesson 08): all off by default
    aux_loss_alpha: float = 0.0  # expert-level balance loss α1 (DeepSeekMoE 2B 0.01; V3's sequence-wise 1e-4)
    aux_loss_scope: Literal["sequence", "batch"] = "sequence"  # the T of the losses: each sequence, or the batch
    device_loss_alpha: float = 0.0  # V2's device-level loss α2, the expert groups as devices (V2: 0.05)
    comm_loss_alpha: float = 0.0  # V2's communication loss α3 (V2: 0.02)
    bias_update_speed: float = 0.0  # γ of V3's aux-loss-free bias update (V3: 0.001); 0 = off
    # --- numerics ---
    rope_theta: float = 10000.0  # RoPE base θ, as in DeepSeek
    norm_eps: float = 1e-6  # RMSNorm epsilon (DeepSeek uses 1e-6)
    init_std: float = 0.02  # normal init std; DeepSeek's papers use 0.006 at 7168 width, 0.02 suits small widths

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            want = float if f.type == "float" else int if f.type == "int" else str
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}={value!r} must be an int")
            if want is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name}={value!r} must be a number")
            if want is float and not _finite(value):
                raise ValueError(f"{f.name}={value!r} must be a finite number (NaN and inf train to NaN)")
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "inter_dim", "max_seq_len", "rope_theta",
                    "norm_eps", "init_std", "kv_lora_rank", "qk_nope_head_dim", "v_head_dim")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        for name, zero in (("n_kv_heads", "one KV head per query head"), ("q_lora_rank", "no query compression"),
                           ("qk_rope_head_dim", "no decoupled RoPE")):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 means {zero})")
        self._check_numerics()
        if self.attn not in ATTN_KINDS:
            raise ValueError(f"attn={self.attn!r} is not a known attention variant; choose one of {ATTN_KINDS}")
        if self.ffn not in FFN_KINDS:
            raise ValueError(f"ffn={self.ffn!r} is not a known feed-forward variant; choose one of {FFN_KINDS}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads} "
                             f"(each head gets dim // n_heads channels)")
        self._check_attention_fields()
        self._check_moe_fields()
        self._check_sizes()

    def _check_numerics(self) -> None:
        """Ranges outside which the float fields stop meaning what they say (or overflow to inf and NaN)."""
        if self.rope_theta <= 1:
            raise ValueError(f"rope_theta={self.rope_theta!r} must be > 1: pair i turns by rope_theta^(-2i/K) "
                             f"per position, which must fall with i (DeepSeek uses 10000)")
        if self.norm_eps >= 1:
            raise ValueError(f"norm_eps={self.norm_eps!r} must be < 1: it only keeps RMSNorm from dividing by 0, "
                             f"and at 1 or more it swamps mean(x²) so the norm stops normalising (try 1e-6)")
        if self.init_std > 1:
            raise ValueError(f"init_std={self.init_std!r} must be <= 1: larger initial weights saturate the "
                             f"softmax and can overflow in fp16 (0.02 suits the course's widths)")

    def _check_attention_fields(self) -> None:
        """The widths RoPE needs and the GQA / MLA fields; each error names the field to change."""
        if self.attn in ("mha", "gqa") and self.head_dim % 2:
            raise ValueError(f"head width dim // n_heads = {self.head_dim} must be even: RoPE rotates pairs "
                             f"of channels; change dim or n_heads")
        if self.n_kv_heads not in (0, self.n_heads) and self.attn != "gqa":
            raise ValueError(f"n_kv_heads={self.n_kv_heads} is used only by grouped-query attention: set "
                             f"attn='gqa' (attn={self.attn!r} now), or n_kv_heads=0")
        if self.n_kv_heads > self.n_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must be at most n_heads={self.n_heads}")
        if self.n_kv_heads and self.n_heads % self.n_kv_heads:
            fits = [g for g in range(1, self.n_heads + 1) if self.n_heads % g == 0]
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads} (each "
                             f"KV head serves the same number of query heads); choose n_kv_heads in {fits}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even: RoPE rotates pairs of "
                             f"channels")
        if self.attn == "mla" and self.qk_rope_head_dim == 0:
            raise ValueError("attn='mla' needs qk_rope_head_dim > 0 (the decoupled RoPE channels); for the "
                             "latent attention without RoPE use attn='mla_lowrank'")

    def _check_moe_fields(self) -> None:
        """DeepSeekMoE's router, expert and balancing fields; each error names the field to change."""
        for name in ("n_routed_experts", "n_activated_experts", "n_expert_groups", "n_limited_groups",
                     "moe_inter_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("n_shared_experts", "n_dense_layers", "aux_loss_alpha", "device_loss_alpha",
                     "comm_loss_alpha", "bias_update_speed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 switches it off)")
        if not self.route_scale > 0:
            raise ValueError(f"route_scale={self.route_scale} must be > 0 (1.0 leaves the routed weights as they are)")
        if self.score_func not in ("softmax", "sigmoid"):
            raise ValueError(f"score_func={self.score_func!r} must be 'softmax' (DeepSeek-V2) or 'sigmoid' (V3)")
        if self.aux_loss_scope not in ("sequence", "batch"):
            raise ValueError(f"aux_loss_scope={self.aux_loss_scope!r} must be 'sequence' (the papers' T) or 'batch'")
        self._check_moe_routing()
        if self.ffn == "moe" and self.n_dense_layers >= self.n_layers:
            raise ValueError(f"n_dense_layers={self.n_dense_layers} leaves no MoE layer in n_layers={self.n_layers}; "
                             f"lower n_dense_layers below n_layers (or use ffn='dense')")
        experts = (self.n_layers - self.n_dense_layers) * self.n_routed_experts * 3 * self.dim * self.moe_inter_dim
        if self.ffn == "moe" and experts > MAX_PARAMETERS:
            raise ValueError(f"n_routed_experts={self.n_routed_experts} experts of moe_inter_dim={self.moe_inter_dim} "
                             f"in {self.n_layers - self.n_dense_layers} MoE layers are {experts:,} parameters, over "
                             f"the limit of {MAX_PARAMETERS:,}; use fewer or narrower experts")

    def _check_moe_routing(self) -> None:
        """top-k must be reachable inside the groups a token may use."""
        n_routed, k, groups, limited = (self.n_routed_experts, self.n_activated_experts, self.n_expert_groups,
                                        self.n_limited_groups)
        if k > n_routed:
            raise ValueError(f"n_activated_experts={k} must be at most n_routed_experts={n_routed}: a token "
                             f"cannot choose more experts than there are")
        if n_routed % groups:
            fits = [g for g in range(1, n_routed + 1) if n_routed % g == 0]
            raise ValueError(f"n_routed_experts={n_routed} must be divisible by n_expert_groups={groups} (every "
                             f"group holds the same number of experts); choose n_expert_groups in {fits}")
        if limited > groups:
            raise ValueError(f"n_limited_groups={limited} must be at most n_expert_groups={groups}")
        per_group = n_routed // groups
        if limited * per_group < k:
            raise ValueError(f"n_activated_experts={k} cannot be reached inside n_limited_groups={limited} groups "
                             f"of {per_group} experts; raise n_limited_groups to at least {-(-k // per_group)} or "
                             f"lower n_activated_experts to {limited * per_group}")
        if self.score_func == "sigmoid" and groups > 1 and per_group < 2:
            raise ValueError(f"score_func='sigmoid' scores a group by its top-2 experts (DeepSeek-V3), so each of "
                             f"the n_expert_groups={groups} groups needs at least 2 experts; use fewer groups")

    def _check_sizes(self) -> None:
        """Sizes that would not fit in memory: refuse them here, before a model allocates anything."""
        n_params = model_parameters(self)
        if n_params > MAX_PARAMETERS:
            widths = "".join(f", {name}={getattr(self, name)}" for name in ATTN_WIDTHS.get(self.attn, ()))
            raise ValueError(f"vocab_size={self.vocab_size}, dim={self.dim}, n_layers={self.n_layers}, "
                             f"inter_dim={self.inter_dim}{widths} make a model of {n_params:,} parameters "
                             f"({4 * n_params / 2**30:,.0f} GiB in fp32), over the limit of {MAX_PARAMETERS:,}; "
                             f"make them smaller")
        rotations = self.max_seq_len * (self.rope_head_dim // 2)
        if rotations > MAX_ROPE_ROTATIONS:
            raise ValueError(f"max_seq_len={self.max_seq_len} positions × {self.rope_head_dim // 2} channel pairs = "
                             f"{rotations:,} RoPE rotations, over the limit of {MAX_ROPE_ROTATIONS:,}; use a "
                             f"smaller max_seq_len (or narrower rope channels)")

    @property
    def head_dim(self) -> int:
        """Per-head width d_h of queries, keys and values in MHA and GQA (MLA's widths are its own fields)."""
        return self.dim // self.n_heads

    @property
    def rope_head_dim(self) -> int:
        """Channels RoPE rotates in each query and key, the width of the model's RoPE table: the whole head in
        MHA/GQA, the decoupled qk_rope_head_dim in MLA, none in mla_lowrank."""
        return {"mla": self.qk_rope_head_dim, "mla_lowrank": 0}.get(self.attn, self.head_dim)

    # --- serialisation, as DeepSeek loads configs/*.json ---
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range: 10**400 is no rope_theta either
        return False


def baseline_parameters(cfg: ModelConfig) -> int:
    """Parameters of the baseline layout (MHA + dense SwiGLU) with cfg's sizes, in closed form.

    Embedding and head V·D each; per layer W^Q, W^K, W^V, W^O (4·D²), w1, w2, w3 (3·D·F) and two RMSNorm gains
    (2·D); the final norm D. `model_parameters` swaps in the attention of other variants.
    """
    d, v, f, n = cfg.dim, cfg.vocab_size, cfg.inter_dim, cfg.n_layers
    return 2 * v * d + n * (4 * d * d + 3 * d * f + 2 * d) + d


# the fields besides dim and n_heads that size each attention variant's projections
ATTN_WIDTHS = {"mla": ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
               "mla_lowrank": ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "v_head_dim")}


def attention_parameters(cfg: ModelConfig) -> int:
    """Parameters of one attention layer of the variant cfg.attn, in closed form (a test counts the modules).

    MHA: W^Q, W^K, W^V, W^O, each D×D. GQA: W^K and W^V shrink to D×(G·K). MLA: the query path (wq, or wq_a,
    q_norm, wq_b), wkv_a D×(C+R), kv_norm C, wkv_b C×H·(K+V), wo H·V×D; mla_lowrank is MLA with R = 0.
    """
    d, h = cfg.dim, cfg.n_heads
    if cfg.attn in ("mha", "gqa"):
        kv_width = (cfg.n_kv_heads or h) * cfg.head_dim
        return 2 * d * d + 2 * d * kv_width
    r = cfg.qk_rope_head_dim if cfg.attn == "mla" else 0
    q_out = h * (cfg.qk_nope_head_dim + r)
    query = d * q_out if cfg.q_lora_rank == 0 else d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * q_out
    latent = d * (cfg.kv_lora_rank + r) + cfg.kv_lora_rank  # wkv_a and kv_norm
    up = cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)  # wkv_b
    return query + latent + up + h * cfg.v_head_dim * d


def model_parameters(cfg: ModelConfig) -> int:
    """Parameters of MiniModel(cfg): the baseline count with each layer's attention replaced by cfg.attn's."""
    return baseline_parameters(cfg) + cfg.n_layers * (attention_parameters(cfg) - 4 * cfg.dim * cfg.dim)


# presets: plain module constants; profiles.py picks one per compute budget
TINY = ModelConfig()

__all__ = ["ATTN_KINDS", "FFN_KINDS", "MAX_PARAMETERS", "MAX_ROPE_ROTATIONS", "ModelConfig", "TINY",
           "attention_parameters", "baseline_parameters", "model_parameters", "replace"]
