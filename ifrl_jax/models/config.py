"""Frozen model configuration and the named presets (the only place model sizes live)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("auto", "xla", "cudnn")
# The projections LoRA can adapt (HF module names); "all" in a config means every one of them.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder hyperparameters plus how to run them (dtypes, remat, scan).

    Hashable, so it is passed to jitted functions as a static argument. `family` names the
    architecture in `models/registry.py` (its Linen module and HF tensor table); an unknown
    family is a ValueError where the model is first built or exported.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tie_word_embeddings: bool
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    # 0 = causal LM (lm_head); 2 = sequence classification head `score` (the reward model).
    num_labels: int = 0
    pad_token_id: int | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype
    remat: str = "none"  # "none" | "full" | "dots"
    scan_layers: bool = False
    attention_impl: str = "auto"  # "auto" | "xla" | "cudnn"
    family: str = "qwen2"  # registry key and HF model_type
    # LoRA (models/lora.py): rank 0 = off; adapters on the `lora_targets` projections, scaled
    # by lora_alpha / lora_rank; lora_dropout on the adapters' input while training.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: use {list(_DTYPES)}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat={self.remat!r}: use one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"ModelConfig.attention_impl={self.attention_impl!r}: use one of {ATTENTION_IMPLS}"
            )
        if self.lora_rank:
            self._check_lora()
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )

    def lora_dims(self, target: str) -> tuple[int, int]:
        """(in features, out features) of a LoRA target projection (heads flattened)."""
        d, f = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}[target]  # fmt: skip

    def _check_lora(self) -> None:
        if not self.lora_targets:
            raise ValueError(f"ModelConfig.lora_targets is empty: name some of {LORA_TARGETS}")
        for t in self.lora_targets:
            if t not in LORA_TARGETS:
                raise ValueError(
                    f"ModelConfig.lora_targets: {t!r} names no module; use {LORA_TARGETS}"
                )
            width = min(self.lora_dims(t))
            if not 0 < self.lora_rank <= width:
                raise ValueError(f"ModelConfig.lora_rank={self.lora_rank} is above the width "
                                 f"{width} of {t} (or not positive)")  # fmt: skip
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"ModelConfig.lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if self.lora_alpha <= 0:
            raise ValueError(f"ModelConfig.lora_alpha={self.lora_alpha}: must be > 0")

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Exact parameter count (embedding counted once when tied)."""
        d, h, f = self.hidden_size, self.head_dim, self.intermediate_size
        n, k = self.num_heads, self.num_kv_heads
        attn = d * n * h + n * h + 2 * (d * k * h + k * h) + n * h * d
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * self.vocab_size
        if self.num_labels:
            head = d * self.num_labels
        return self.vocab_size * d + self.num_layers * layer + d + head


def _qwen(vocab, d, layers, heads, kv, ffn, tied, theta=1_000_000.0, max_pos=32768):
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=d,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        intermediate_size=ffn,
        tie_word_embeddings=tied,
        rope_theta=theta,
        max_position_embeddings=max_pos,
    )


# Public Qwen2.5 sizes (from the released config.json files) and the R1 distill.
PRESETS: dict[str, ModelConfig] = {
    # For tests: GQA (4 query heads over 2 kv heads), untied head, small vocab.
    "tiny": ModelConfig(
        vocab_size=256,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        tie_word_embeddings=False,
        rope_theta=10_000.0,
        max_position_embeddings=2048,
    ),
    # The CPU default job: Qwen2 architecture sized for 2 cores, vocab of the shipped tokenizer.
    "cpu_small": ModelConfig(
        vocab_size=2048,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
        tie_word_embeddings=True,
        rope_theta=10_000.0,
        max_position_embeddings=1024,
    ),
    "qwen2_5_0_5b": _qwen(151936, 896, 24, 14, 2, 4864, tied=True),
    "qwen2_5_1_5b": _qwen(151936, 1536, 28, 12, 2, 8960, tied=True),
    "qwen2_5_3b": _qwen(151936, 2048, 36, 16, 2, 11008, tied=True),
    "qwen2_5_7b": _qwen(152064, 3584, 28, 28, 4, 18944, tied=False),
    "qwen2_5_14b": _qwen(152064, 5120, 48, 40, 8, 13824, tied=False),
    "qwen2_5_32b": _qwen(152064, 5120, 64, 40, 8, 27648, tied=False),
    "deepseek_r1_distill_qwen_7b": _qwen(
        152064, 3584, 28, 28, 4, 18944, tied=False, theta=10_000.0, max_pos=131072
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """Returns the named preset, with dataclass fields overridden (e.g. dtype, num_layers)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
