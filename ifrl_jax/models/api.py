"""Functional entry points: init, shardings, forward, chunked token log-probabilities.

Letters as in `qwen2.py`: B batch, T length, D model dim, V vocab.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import sharding
from ifrl_jax.models import kernels, registry
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.models.qwen2 import attention_mask

Params = dict


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Positions [B, T] for left-padded rows: 0 at the first real token, 0 on padding."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def check_backend(dtypes, devices=None) -> None:
    """ValueError where the devices cannot run these dtype names: bf16 on a GPU older than
    Ampere (compute capability < 8.0; TPUs and CPUs run it)."""
    wanted = set(dtypes) & {"bfloat16"}
    for d in devices if devices is not None else jax.devices():
        cc = getattr(d, "compute_capability", None)
        if wanted and d.platform == "gpu" and cc is not None and float(cc) < 8.0:
            raise ValueError(f"bfloat16 needs a GPU of compute capability >= 8.0 (Ampere); "
                             f"{d.device_kind} has {cc}: use float32 or float16")  # fmt: skip


def module(cfg: ModelConfig) -> nn.Module:
    """The Linen module of cfg.family (`models/registry.py`), e.g. `qwen2.Qwen2(cfg)`."""
    return registry.get(cfg.family).module(cfg)


def _init_boxed(cfg: ModelConfig, rng: jax.Array):
    ids = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    return module(cfg).init(rng, ids, jnp.zeros((1, 1), jnp.int32), mask)["params"]


def abstract_params(cfg: ModelConfig):
    """ShapeDtypeStructs of the param tree (no memory used): for real presets and planners."""
    return nn.unbox(jax.eval_shape(functools.partial(_init_boxed, cfg), jax.random.key(0)))


def logical_axes(cfg: ModelConfig):
    """PartitionSpecs of logical axis names for every param."""
    boxed = jax.eval_shape(functools.partial(_init_boxed, cfg), jax.random.key(0))
    return nn.get_partition_spec(boxed)


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: sharding.Rules | str):
    """NamedShardings of every param under a rules preset (name or table); checks divisibility."""
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    return sharding.shardings_from_logical(logical_axes(cfg), abstract_params(cfg), mesh, rules)


def init_params(
    cfg: ModelConfig, rng: jax.Array, *, mesh: Mesh | None = None, rules=None
) -> Params:
    """Random params (normal(0.02) weights, zero biases, unit norms) as a plain pytree.

    With a mesh, each param is created directly in its sharding (never whole on one device).
    """
    init = lambda key: nn.unbox(_init_boxed(cfg, key))
    if mesh is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=param_shardings(cfg, mesh, rules))(rng)


_DROPOUT: contextvars.ContextVar[jax.Array | None] = contextvars.ContextVar(
    "ifrl_jax_dropout", default=None
)


@contextlib.contextmanager
def dropout_rng(key: jax.Array | None) -> Iterator[None]:
    """Within this context, `apply` passes `key` as the "dropout" rng (LoRA dropout while
    training: `train_step` sets it around the loss; every other call runs without dropout)."""
    token = _DROPOUT.set(key)
    try:
        yield
    finally:
        _DROPOUT.reset(token)


def apply(
    cfg: ModelConfig,
    params: Params,
    input_ids: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    *,
    cache=None,
    cache_index=0,
    head: bool = True,
):
    """The raw module call: returns (logits or final hidden states, updated cache)."""
    key = _DROPOUT.get()
    rngs = {"dropout": key} if key is not None and cfg.lora_dropout else None
    return module(cfg).apply(
        {"params": params}, input_ids, positions, mask, cache, cache_index, head=head, rngs=rngs
    )


def hidden_states(
    cfg: ModelConfig, params: Params, input_ids: jax.Array, attention_mask_: jax.Array
) -> jax.Array:
    """Final-normed hidden states [B, T, D] of a left-padded batch (no cache)."""
    t = input_ids.shape[1]
    mask = attention_mask(attention_mask_, 0, t)
    out, _ = apply(cfg, params, input_ids, positions_from_mask(attention_mask_), mask, head=False)
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward(cfg, mesh, rules, params, input_ids, attention_mask_):
    with sharding.activation_sharding(mesh, rules):
        t = input_ids.shape[1]
        mask = attention_mask(attention_mask_, 0, t)
        logits, _ = apply(cfg, params, input_ids, positions_from_mask(attention_mask_), mask)
    return logits


def forward(
    cfg: ModelConfig,
    params: Params,
    input_ids,
    attention_mask_,
    *,
    mesh: Mesh | None = None,
    rules: sharding.Rules | str | None = None,
) -> jax.Array:
    """Logits [B, T, V] (or [B, T, C] for a classifier) of a left-padded batch.

    Args:
      input_ids: [B, T] ints (numpy or jax).
      attention_mask_: [B, T], 1 on real tokens, 0 on (left) padding.
      mesh, rules: when given, activations are pinned by the rules (preset name or table) and
        the batch is placed over the mesh's data axes.
    """
    ids = jnp.asarray(input_ids, jnp.int32)
    mask = jnp.asarray(attention_mask_, jnp.int32)
    if mesh is not None:
        rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
        ids, mask = jax.device_put((ids, mask), sharding.data_sharding(mesh))
    return _forward(cfg, mesh, rules, params, ids, mask)


def lm_head_weight(cfg: ModelConfig, params: Params) -> jax.Array:
    """The output projection as [D, V] (the transposed embedding when tied)."""
    if cfg.tie_word_embeddings:
        return params["embed_tokens"]["embedding"].T
    return params["lm_head"]["kernel"]


# Default budget for one chunk's [B, c, V] fp32 logits. A few buffers of this size (logits,
# softmax, dz) live at once; 1 GiB keeps a 0.5B-vocab batch of 4 x 256 in one chunk (one
# chunk is ~20% faster on CPU: no recomputed head matmul) and is small beside GPU/TPU memory.
LOGIT_CHUNK_BYTES = 1 << 30


def balanced_chunk(b: int, t: int, vocab: int, *, max_chunk_bytes: int = LOGIT_CHUNK_BYTES) -> int:
    """Positions per log-prob chunk: the fewest chunks with B*chunk*V*4 <= max_chunk_bytes, and
    T split evenly over them (the largest fitting chunk can pad T a lot: T=256 in chunks of 110
    computes 330 positions; 3 balanced chunks of 86 compute 258)."""
    largest = max(1, max_chunk_bytes // max(1, b * vocab * 4))
    n = -(-t // largest)
    return -(-t // n)


def token_logprobs(
    cfg: ModelConfig,
    params: Params,
    hidden: jax.Array,
    targets: jax.Array,
    *,
    chunk_size: int | None = None,
    with_entropy: bool = False,
    max_chunk_bytes: int = LOGIT_CHUNK_BYTES,
):
    """log p(targets) [B, T] (and entropy [B, T]) from hidden states, chunked over T.

    Only a [B, chunk, V] slice of logits exists at a time; with more than one chunk each is
    recomputed in the backward pass, so the full [B, T, V] never is (one chunk keeps its logits
    for the backward pass instead). That gradient is written out by hand
    (`kernels.chunked_head_logprobs`): per chunk dz = g * (onehot - softmax), then dh and the
    head's gradient in the head's own layout.

    Args:
      hidden: [B, T, D] final hidden states; targets: [B, T] token ids.
      chunk_size: positions per chunk; None: `balanced_chunk` under max_chunk_bytes.
    Returns:
      logp [B, T] fp32, or (logp, entropy) when with_entropy.
    """
    tied = cfg.tie_word_embeddings
    w = params["embed_tokens"]["embedding"] if tied else params["lm_head"]["kernel"]
    w = w.astype(cfg.jnp_dtype)  # [V, D] tied (no transposed copy) or [D, V]
    b, t, _ = hidden.shape
    if chunk_size is None:
        chunk_size = balanced_chunk(b, t, cfg.vocab_size, max_chunk_bytes=max_chunk_bytes)
    n = -(-t // min(chunk_size, t))
    pad = n * -(-t // n) - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    y = jnp.pad(targets, ((0, 0), (0, pad)))
    logp, ent = kernels.chunked_head_logprobs(h, w, y, n, tied, with_entropy)
    logp, ent = logp[:, :t], ent[:, :t]
    return (logp, ent) if with_entropy else logp


def sequence_logprobs(
    cfg: ModelConfig, params: Params, input_ids, attention_mask_, *, first: int = 1,
    temperature: float = 1.0, **kw,
) -> jax.Array:  # fmt: skip
    """log p(x_t | x_<t) [B, T] for positions t >= first (0 before): forward + chunked log-probs.

    first > 1 runs the LM head only where it is needed (for GRPO: the response positions; the
    head is most of a small model's FLOPs at Qwen's vocabulary). temperature: the log-probs (and
    entropies) of softmax(logits / temperature), the distribution a sampler at that temperature
    draws from (the hidden states are divided before the head: the same logits / temperature).
    """
    t = input_ids.shape[1]
    if not 1 <= first < t:
        raise ValueError(f"first={first}: need 1 <= first < T={t}")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: log-probs need a temperature > 0")
    hidden = hidden_states(cfg, params, input_ids, attention_mask_)[:, first - 1 : t - 1]
    if temperature != 1.0:
        hidden = hidden / jnp.asarray(temperature, hidden.dtype)
    logp = token_logprobs(cfg, params, hidden, input_ids[:, first:], **kw)
    pad = lambda a: jnp.pad(a, ((0, 0), (first, 0)))
    if isinstance(logp, tuple):
        return tuple(pad(a) for a in logp)
    return pad(logp)


def to_numpy(tree):
    """Fetches a (possibly sharded) pytree to host numpy arrays."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)
