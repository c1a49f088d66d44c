"""Qwen2 decoder (Qwen2.5, DeepSeek-R1-Distill-Qwen) in Flax Linen, used functionally.

Einsum letters: B batch, T query length, S key length (cache slots), N query heads,
K kv heads, G = N // K query heads per kv head, H head dim, D model dim, F mlp dim, V vocab,
L layers, C labels.

Module and param names follow Hugging Face (`embed_tokens`, `layers_N`, `self_attn`, `q_proj`,
...), so checkpoint import/export is a table of renames and reshapes (`_LAYER`, `_TOP` at the
end, registered with the module as the "qwen2" family in `models/registry.py`). Every param
carries logical axis names; activations are pinned with `sharding.constrain`.

The KV cache is an explicit pytree `{"k": [L, B, S, K, H], "v": [L, B, S, K, H]}` passed in and
returned, updated in place at slot `cache_index`: a scalar (the same slot for every row: the
static sampler left-pads prompts so that they end together) or [B] (each row its own slot: the
continuous engine, `engine.py`, where each cache row is a slot with its own position).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifrl_jax.models import kernels
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.models.registry import (
    IDENTITY,
    O_PROJ,
    TRANSPOSE,
    Family,
    heads_bias,
    heads_kernel,
    register,
)
from ifrl_jax.sharding import constrain

_NEG = -1e30  # finite, so that fully masked (padding) rows give a uniform softmax, never NaN

Cache = dict[str, jax.Array]


_NORMAL = nn.initializers.normal(0.02)


def _init(axes: Sequence[str | None], init=_NORMAL):
    return nn.with_logical_partitioning(init, tuple(axes))


class Linear(nn.Module):
    """y = x @ kernel (+ bias), contracting the last `in_ndim` dims of x."""

    features: tuple[int, ...]
    axes: tuple[str | None, ...]  # logical axes of the kernel: in dims + out dims
    cfg: ModelConfig
    in_ndim: int = 1
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        in_shape = x.shape[-self.in_ndim :]
        kernel = self.param(
            "kernel", _init(self.axes), in_shape + self.features, cfg.jnp_param_dtype
        )
        # On CPU the weight gradient goes through a custom VJP laid out for XLA:CPU (kernels.py).
        dense = kernels.dense_cpu if jax.default_backend() == "cpu" else kernels.dense
        y = dense(x, kernel.astype(cfg.jnp_dtype), self.in_ndim)
        if self.use_bias:
            bias_axes = self.axes[self.in_ndim :]
            bias = self.param(
                "bias", _init(bias_axes, nn.initializers.zeros), self.features, cfg.jnp_param_dtype
            )
            y = y + bias.astype(cfg.jnp_dtype)
        if cfg.lora_rank and self.name in cfg.lora_targets:
            y = y + self._lora(x, dense)
        return y

    def _lora(self, x: jax.Array, dense) -> jax.Array:
        """The adapter's term (alpha / r) * dropout(x) @ lora_a @ lora_b (models/lora.py).

        lora_a [*in, r] starts as PEFT's (kaiming-uniform), lora_b [r, *out] at zero, so a new
        adapter leaves the output exactly unchanged. Dropout only where the caller provides a
        "dropout" rng (training); sampling and log-prob passes are deterministic.
        """
        cfg, n_in = self.cfg, self.in_ndim
        init_a = nn.initializers.variance_scaling(
            1 / 3, "fan_in", "uniform", in_axis=tuple(range(n_in)), out_axis=-1
        )
        a = self.param("lora_a", _init((*self.axes[:n_in], "lora"), init_a),
                       x.shape[-n_in:] + (cfg.lora_rank,), cfg.jnp_param_dtype)  # fmt: skip
        b = self.param("lora_b", _init(("lora", *self.axes[n_in:]), nn.initializers.zeros),
                       (cfg.lora_rank, *self.features), cfg.jnp_param_dtype)  # fmt: skip
        if cfg.lora_dropout and self.has_rng("dropout"):
            x = nn.Dropout(cfg.lora_dropout, deterministic=False)(x)
        xa = dense(x, a.astype(cfg.jnp_dtype), n_in)
        return dense(xa, b.astype(cfg.jnp_dtype) * jnp.asarray(cfg.lora_scale, cfg.jnp_dtype), 1)


class RMSNorm(nn.Module):
    """Qwen2RMSNorm: normalise in fp32, cast back, scale."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            _init(("embed",), nn.initializers.ones),
            (x.shape[-1],),
            self.cfg.jnp_param_dtype,
        )
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        return scale.astype(x.dtype) * xf.astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """sin, cos tables [B, T, H] (fp32) for integer positions [B, T] (HF's non-interleaved RoPE)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, H]
    return jnp.sin(emb), jnp.cos(emb)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """x [B, T, N, H] rotated by the tables [B, T, H]."""
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)


def attention_mask(key_valid: jax.Array, q_offset: jax.Array | int, num_queries: int) -> jax.Array:
    """Causal + padding mask [B, T, S]: query t (at slot q_offset + t) sees valid slots <= its own.

    Args:
      key_valid: [B, S] bool/int, 1 where a key slot holds a real token.
      q_offset: slot of the first query (0 without a cache).
      num_queries: T.
    """
    s = key_valid.shape[-1]
    q_slots = q_offset + jnp.arange(num_queries)  # [T]
    causal = jnp.arange(s)[None, :] <= q_slots[:, None]  # [T, S]
    return causal[None] & key_valid.astype(bool)[:, None, :]


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, impl: str = "auto"
) -> jax.Array:
    """Grouped-query attention; the one entry point the model uses.

    Args:
      q: [B, T, N, H]; k, v: [B, S, K, H]; mask: [B, T, S] bool.
      impl: "cudnn" uses jax.nn.dot_product_attention's cuDNN flash kernel; "xla" the grouped
        einsum below; "auto" picks cuDNN on GPU for 16-bit inputs, else XLA.
    Returns:
      [B, T, N, H] in q's dtype.
    """
    if impl == "auto":
        on_gpu = jax.default_backend() == "gpu"
        impl = "cudnn" if on_gpu and q.dtype in (jnp.bfloat16, jnp.float16) else "xla"
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")
    b, t, n, h = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, n // kh, h)  # [B, T, K, G, H]
    logits = jnp.einsum("btkgh,bskh->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, None, None], logits * (h**-0.5), _NEG)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, K, G, T, S]
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, sin, cos, mask, cache: Cache | None, layer, cache_index):
        cfg = self.cfg
        n, kh, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
        act = ("act_batch", "act_seq")
        q = Linear((n, h), ("embed", "q_heads", "head_dim"), cfg, use_bias=True, name="q_proj")(x)
        k = Linear((kh, h), ("embed", "kv_heads", "head_dim"), cfg, use_bias=True, name="k_proj")(x)
        v = Linear((kh, h), ("embed", "kv_heads", "head_dim"), cfg, use_bias=True, name="v_proj")(x)
        q = constrain(apply_rope(q, sin, cos), (*act, "act_heads", None))  # [B, T, N, H]
        k = constrain(apply_rope(k, sin, cos), (*act, "act_kv_heads", None))  # [B, T, K, H]
        v = constrain(v, (*act, "act_kv_heads", None))
        if cache is not None:
            if jnp.ndim(cache_index) == 0:  # one slot for every row (left-padded prompts)
                start = (layer, 0, cache_index, 0, 0)
                cache = {
                    "k": jax.lax.dynamic_update_slice(
                        cache["k"], k[None].astype(cache["k"].dtype), start
                    ),
                    "v": jax.lax.dynamic_update_slice(
                        cache["v"], v[None].astype(cache["v"].dtype), start
                    ),
                }
            else:  # cache_index [B] (engine.py): row b writes slots cache_index[b] + t, t < T;
                # slots past the end are dropped (never clamped onto earlier ones).
                rows = jnp.arange(k.shape[0])[:, None]  # [B, 1]
                idx = cache_index[:, None] + jnp.arange(k.shape[1])  # [B, T]
                cache = {
                    name: c.at[layer, rows, idx].set(x.astype(c.dtype), mode="drop")
                    for name, c, x in (("k", cache["k"], k), ("v", cache["v"], v))
                }
            k = jax.lax.dynamic_index_in_dim(cache["k"], layer, 0, keepdims=False).astype(q.dtype)
            v = jax.lax.dynamic_index_in_dim(cache["v"], layer, 0, keepdims=False).astype(q.dtype)
        out = dot_product_attention(q, k, v, mask, impl=cfg.attention_impl)  # [B, T, N, H]
        out = constrain(out, (*act, "act_heads", None))
        y = Linear((d,), ("q_heads", "head_dim", "embed"), cfg, in_ndim=2, name="o_proj")(out)
        return y, cache


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        f, d = cfg.intermediate_size, cfg.hidden_size
        gate = Linear((f,), ("embed", "mlp"), cfg, name="gate_proj")(x)
        up = Linear((f,), ("embed", "mlp"), cfg, name="up_proj")(x)
        hidden = constrain(nn.silu(gate) * up, ("act_batch", "act_seq", "act_mlp"))  # [B, T, F]
        return Linear((d,), ("mlp", "embed"), cfg, name="down_proj")(hidden)


class DecoderLayer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, carry, layer, sin, cos, mask, cache_index):
        x, cache = carry
        h = RMSNorm(self.cfg, name="input_layernorm")(x)
        a, cache = Attention(self.cfg, name="self_attn")(
            h, sin, cos, mask, cache, layer, cache_index
        )
        x = x + a
        x = x + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="post_attention_layernorm")(x))
        x = constrain(x, ("act_batch", "act_seq", "act_embed"))  # [B, T, D]
        return (x, cache), None


_REMAT_POLICY = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Qwen2(nn.Module):
    """Embedding -> L decoder layers -> final norm -> (lm_head | score | nothing)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,  # [B, T] int32
        positions: jax.Array,  # [B, T] int32
        mask: jax.Array,  # [B, T, S] bool
        cache: Cache | None = None,
        cache_index: jax.Array | int = 0,
        *,
        head: bool = True,
    ):
        cfg = self.cfg
        embedding = _Embed(cfg, name="embed_tokens")()  # [V, D]
        # Gather the (possibly vocab- or embed-sharded) table before the lookup: a gather from
        # a sharded operand makes the partitioner replicate it anyway, less efficiently.
        table = constrain(embedding, (None, "act_embed"))
        x = jnp.take(table, input_ids, axis=0).astype(cfg.jnp_dtype)  # [B, T, D]
        x = constrain(x, ("act_batch", "act_seq", "act_embed"))
        sin, cos = rope_tables(positions, cfg.head_dim, cfg.rope_theta)

        layer_cls = DecoderLayer
        if cfg.remat != "none":
            layer_cls = nn.remat(
                layer_cls, policy=_REMAT_POLICY[cfg.remat], prevent_cse=not cfg.scan_layers
            )
        carry = (x, cache)
        if cfg.scan_layers:
            scanned = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            layers = jnp.arange(cfg.num_layers)
            carry, _ = scanned(cfg, name="layers")(carry, layers, sin, cos, mask, cache_index)
        else:
            for i in range(cfg.num_layers):
                carry, _ = layer_cls(cfg, name=f"layers_{i}")(carry, i, sin, cos, mask, cache_index)
        x, cache = carry
        x = RMSNorm(cfg, name="norm")(x)  # [B, T, D]
        if cfg.num_labels:  # classifier head `score` (Qwen2ForSequenceClassification)
            head_fn = Linear((cfg.num_labels,), ("embed", "labels"), cfg, name="score")
        elif cfg.tie_word_embeddings:
            head_fn = lambda h: jnp.einsum("btd,vd->btv", h, embedding.astype(cfg.jnp_dtype))
        else:
            head_fn = Linear((cfg.vocab_size,), ("embed", "vocab"), cfg, name="lm_head")
        if not head:  # params of the head still exist (created at init, when head=True)
            return x, cache
        logits = head_fn(x)  # [B, T, V] or [B, T, C]
        if not cfg.num_labels:
            logits = constrain(logits, ("act_batch", "act_seq", "act_vocab"))
        return logits, cache


class _Embed(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self) -> jax.Array:
        cfg = self.cfg
        return self.param(
            "embedding",
            _init(("vocab", "embed")),
            (cfg.vocab_size, cfg.hidden_size),
            cfg.jnp_param_dtype,
        )


# --- the family: HF architecture names and tensor table (models/registry.py) -------------------


def _check_hf_config(d: dict, where: str) -> None:
    if d.get("use_sliding_window"):
        raise ValueError(f"{where}: use_sliding_window=true is not supported (Qwen2.5 has false)")


# flax path inside a layer -> (HF name after `model.layers.{i}.`, to_flax, to_hf).
_LAYER = {
    ("self_attn", "q_proj", "kernel"): ("self_attn.q_proj.weight", *heads_kernel("num_heads")),
    ("self_attn", "k_proj", "kernel"): ("self_attn.k_proj.weight", *heads_kernel("num_kv_heads")),
    ("self_attn", "v_proj", "kernel"): ("self_attn.v_proj.weight", *heads_kernel("num_kv_heads")),
    ("self_attn", "q_proj", "bias"): ("self_attn.q_proj.bias", *heads_bias("num_heads")),
    ("self_attn", "k_proj", "bias"): ("self_attn.k_proj.bias", *heads_bias("num_kv_heads")),
    ("self_attn", "v_proj", "bias"): ("self_attn.v_proj.bias", *heads_bias("num_kv_heads")),
    ("self_attn", "o_proj", "kernel"): ("self_attn.o_proj.weight", *O_PROJ),
    ("mlp", "gate_proj", "kernel"): ("mlp.gate_proj.weight", *TRANSPOSE),
    ("mlp", "up_proj", "kernel"): ("mlp.up_proj.weight", *TRANSPOSE),
    ("mlp", "down_proj", "kernel"): ("mlp.down_proj.weight", *TRANSPOSE),
    ("input_layernorm", "scale"): ("input_layernorm.weight", *IDENTITY),
    ("post_attention_layernorm", "scale"): ("post_attention_layernorm.weight", *IDENTITY),
}
# top-level flax path -> (HF name, to_flax, to_hf).
_TOP = {
    ("embed_tokens", "embedding"): ("model.embed_tokens.weight", *IDENTITY),
    ("norm", "scale"): ("model.norm.weight", *IDENTITY),
    ("lm_head", "kernel"): ("lm_head.weight", *TRANSPOSE),
    ("score", "kernel"): ("score.weight", *TRANSPOSE),
}

FAMILY = register(
    Family(
        name="qwen2",
        module=Qwen2,
        causal_lm="Qwen2ForCausalLM",
        classifier="Qwen2ForSequenceClassification",
        layer_table=_LAYER,
        top_table=_TOP,
        check_hf_config=_check_hf_config,
        hf_config_extra={"use_sliding_window": False},
    )
)
