"""Jitted sampling with a preallocated KV cache: groups of responses per prompt.

Letters: B prompts, n samples per prompt, R = B * n rows, P prompt bucket length,
M max_new_tokens, S = P + M cache slots, L layers, K kv heads, H head dim, D model dim, V vocab.

One compiled program per (prompt bucket, batch size, max_new_tokens, sampling mode): prefill of
the B prompts (logits at the last position only), the cache copied to the n samples of each
prompt, then a `lax.while_loop` of single-token decode steps that stops as soon as every row
has finished. EOS ids, temperature and top-p are traced arguments, not compile-time constants.

Randomness is keyed per row, so that a row's tokens do not depend on which rows share its batch
(`engine.py`, the continuous engine, draws the same tokens): row b * n + j (sample j of prompt
b) draws its response token t with key fold_in(fold_in(fold_in(rng, prompt_ids[b]), j), t)
(`row_keys`, `choose_tokens`), one uniform number per row.

A sampled step draws from softmax(logits / temperature) cut to the top-k and then the top-p set
of that tempered distribution, in transformers' and vLLM's order (`sampling_probs`). The
log-probs recorded are those of the tempered distribution before the top-k/top-p cut,
log_softmax(logits / temperature) (temperature 1 when greedy): what the GRPO trainer computes
(`grpo_step.StepConfig.temperature`), as verl, TRL and tunix do. Top-k/top-p only choose which
tokens can be drawn; neither side renormalizes over the cut set.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import sharding
from ifrl_jax.models import api
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.models.qwen2 import attention_mask

DEFAULT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_CACHE_AXES = (None, "act_batch", None, "act_kv_heads", None)  # [L, R, S, K, H]


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """Responses of R = B * num_samples rows; row b * num_samples + j is sample j of prompt b."""

    tokens: jax.Array  # [R, M] int32, pad_id after the end
    # [R, M] fp32 log p(token) under softmax(logits / temperature) (1 when greedy), before the
    # top-k / top-p cut (the trainer's distribution); 0 after the end.
    logprobs: jax.Array
    lengths: jax.Array  # [R] int32, response tokens including the EOS token
    finished: jax.Array  # [R] bool, True where an EOS id ended the response
    decode_steps: jax.Array  # scalar int32: model steps run after the prefill (<= M - 1)
    prompt_len: int  # P, the bucketed prompt length that was compiled
    stats: dict | None = None  # the continuous engine's counters (engine.py); None here

    @property
    def truncated(self) -> jax.Array:
        """[R] bool: the response hit max_new_tokens without an EOS."""
        return ~self.finished


@flax.struct.dataclass
class _DecodeState:
    """The decode loop's carry; R rows, S = P + M cache slots."""

    step: jax.Array  # scalar int32 i: the response index of the token chosen next
    cache: dict[str, jax.Array]  # {"k", "v"}: [L, R, S, K, H]
    key_valid: jax.Array  # [R, S] int32, 1 on slots that hold a real token
    last: jax.Array  # [R] int32, the token chosen at step i - 1 (fed to the model at step i)
    tokens: jax.Array  # [R, M] int32
    logprobs: jax.Array  # [R, M] fp32
    lengths: jax.Array  # [R] int32
    done: jax.Array  # [R] bool


def bucket(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """Smallest bucket >= n (multiples of the largest bucket beyond it)."""
    for b in buckets:
        if n <= b:
            return b
    top = buckets[-1]
    return -(-n // top) * top


def _candidates(logits, temperature, *, top_k: int, use_top_p: bool, top_p):
    """The distribution one sampled step draws from: probabilities [R, C] over candidates and
    their vocab ids [R, C] (None when C = V and the candidates are the vocabulary in order).

    As transformers' `generate` and vLLM do: the logits are divided by the temperature first,
    then top-k keeps the k largest, then top-p keeps the most likely candidates whose mass
    strictly above each is < top_p (the top one always survives), measured on the tempered
    distribution (renormalized over the top k when both are on); the survivors are renormalized.
    """
    scaled = logits / jnp.maximum(temperature, 1e-6)  # [R, V]
    if top_k:
        vals, ids = jax.lax.top_k(scaled, top_k)  # sorted, descending
    elif use_top_p:
        ids = jnp.argsort(-scaled, axis=-1)
        vals = jnp.take_along_axis(scaled, ids, axis=-1)
    else:
        return jax.nn.softmax(scaled, axis=-1), None
    if use_top_p:
        probs = jax.nn.softmax(vals, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
        vals = jnp.where(before < top_p, vals, -jnp.inf)  # the top candidate always survives
    return jax.nn.softmax(vals, axis=-1), ids


def sampling_probs(
    logits: jax.Array, *, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """Probabilities [R, V] that a sampled step (temperature > 0) draws each token with.

    Args:
      logits: [R, V] the model's logits; temperature, top_k (0 = off), top_p (1 = off) as in
        `generate`. Tokens outside the top-k / top-p set get probability 0.
    """
    probs, ids = _candidates(
        logits, jnp.float32(temperature), top_k=top_k, use_top_p=top_p < 1.0, top_p=top_p
    )
    if ids is None:
        return probs
    return jnp.zeros(logits.shape, probs.dtype).at[jnp.arange(len(ids))[:, None], ids].set(probs)


def _pick(logits, key, temperature, *, top_k, use_top_p, top_p):
    """Greedy where temperature == 0, else a draw from `_candidates` (tempered, then filtered).

    The draw inverts the CDF with one uniform number per row: exact, and on CPU far cheaper
    than `jax.random.categorical`'s Gumbel noise over the whole vocabulary (35 ms per step for
    8 x 152k). `lax.cond` runs only the branch taken, so greedy decoding pays for neither.
    `key`: one key for all rows, or [R] keys (row r's uniform from key[r] alone).
    """

    def draw(_):
        probs, ids = _candidates(logits, temperature, top_k=top_k, use_top_p=use_top_p, top_p=top_p)
        cdf = jnp.cumsum(probs, axis=-1)  # [R, C]
        if key.ndim:
            u = jax.vmap(jax.random.uniform)(key)[:, None] * cdf[:, -1:]
        else:
            u = jax.random.uniform(key, (logits.shape[0], 1)) * cdf[:, -1:]
        idx = jnp.minimum(jnp.sum(cdf < u, axis=-1), probs.shape[-1] - 1)  # first cdf >= u
        if ids is not None:
            idx = jnp.take_along_axis(ids, idx[:, None], axis=-1)[:, 0]
        return idx.astype(jnp.int32)

    greedy = lambda _: jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.lax.cond(temperature > 0, draw, greedy, None)


def row_keys(rng: jax.Array, prompt_ids: jax.Array, num_samples: int) -> jax.Array:
    """[B * n] keys: row b * n + j gets fold_in(fold_in(rng, prompt_ids[b]), j)."""
    fold = jax.vmap(jax.random.fold_in, (None, 0))
    per_prompt = fold(rng, prompt_ids.astype(jnp.int32))  # [B]
    return jax.vmap(fold, (0, None))(per_prompt, jnp.arange(num_samples)).reshape(-1)


def choose_tokens(logits, keys, step, temperature, top_p, *, top_k: int, use_top_p: bool):
    """Each row's token at response index step and its recorded log-prob (both engines).

    Args:
      logits: [R, V] fp32; keys: [R] row keys (`row_keys`); step: [R] or scalar int32, the
        response index t of the token chosen (its key is fold_in(keys[r], t)).
    Returns:
      tokens [R] int32 and log-probs [R] fp32 under softmax(logits / temperature), temperature
      1 when greedy, before the top-k / top-p cut: what the trainer computes
      (grpo_step.StepConfig.temperature), as verl, TRL and tunix do.
    """
    step = jnp.broadcast_to(step, keys.shape)
    step_keys = jax.vmap(jax.random.fold_in)(keys, step)
    tok = _pick(logits, step_keys, temperature, top_k=top_k, use_top_p=use_top_p, top_p=top_p)
    t_logp = jnp.where(temperature > 0, temperature, 1.0)
    logp = jax.nn.log_softmax(logits / t_logp, -1)
    return tok, jnp.take_along_axis(logp, tok[:, None], -1)[:, 0]


def _keys_and_ids(rng, prompt_ids, b):
    """Typed PRNG key (raw uint32 keys wrapped) and [B] prompt ids (arange(B) by default)."""
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(rng)
    return rng, jnp.arange(b, dtype=jnp.int32) if prompt_ids is None else prompt_ids


@functools.partial(
    jax.jit,
    static_argnames=("cfg", "max_new_tokens", "num_samples", "top_k", "use_top_p",
                     "cache_dtype", "mesh", "rules"),
)  # fmt: skip
def _generate(
    params, input_ids, mask, rng, eos_ids, temperature, top_p, pad_id, prompt_ids=None,
    limits=None, *, cfg: ModelConfig, max_new_tokens: int, num_samples: int, top_k: int,
    use_top_p: bool, cache_dtype: str, mesh: Mesh | None, rules,
):  # fmt: skip
    with sharding.activation_sharding(mesh, rules):
        return _generate_body(
            params, input_ids, mask, rng, eos_ids, temperature, top_p, pad_id, prompt_ids,
            limits, cfg=cfg,
            max_new_tokens=max_new_tokens, num_samples=num_samples, top_k=top_k,
            use_top_p=use_top_p, cache_dtype=cache_dtype,
        )  # fmt: skip


def _generate_body(
    params, input_ids, mask, rng, eos_ids, temperature, top_p, pad_id, prompt_ids, limits, *,
    cfg, max_new_tokens, num_samples, top_k, use_top_p, cache_dtype,
):  # fmt: skip
    b, p = input_ids.shape
    m, n = max_new_tokens, num_samples
    rng, prompt_ids = _keys_and_ids(rng, prompt_ids, b)
    keys = row_keys(rng, prompt_ids, n)  # [R]
    limits = jnp.full((b * n,), m, jnp.int32) if limits is None else limits  # [R]
    s = p + m
    w = api.lm_head_weight(cfg, params).astype(cfg.jnp_dtype)  # [D, V], transposed once
    cache_shape = (cfg.num_layers, b, s, cfg.num_kv_heads, cfg.head_dim)
    cache = {k: jnp.zeros(cache_shape, jnp.dtype(cache_dtype)) for k in ("k", "v")}
    cache = {k: sharding.constrain(v, _CACHE_AXES) for k, v in cache.items()}

    # Prefill the B prompts once; only the last position's logits are computed.
    key_valid = jnp.pad(mask, ((0, 0), (0, m)))  # [B, S]
    positions = api.positions_from_mask(mask)
    hidden, cache = api.apply(
        cfg, params, input_ids, positions, attention_mask(key_valid, 0, p),
        cache=cache, cache_index=0, head=False,
    )  # fmt: skip
    logits = jnp.einsum("bd,dv->bv", hidden[:, -1], w, preferred_element_type=jnp.float32)

    # Copy prompt state to the n samples of each prompt: rows b*n .. b*n + n - 1.
    rep = lambda x: jnp.repeat(x, n, axis=0)
    cache = {k: sharding.constrain(jnp.repeat(v, n, axis=1), _CACHE_AXES) for k, v in cache.items()}
    logits, key_valid = rep(logits), rep(key_valid)
    next_pos = rep(jnp.sum(mask, axis=-1).astype(jnp.int32))  # [R] position of token 0
    r = b * n

    def choose(logits, i, done):
        tok, logp = choose_tokens(
            logits, keys, i, temperature, top_p, top_k=top_k, use_top_p=use_top_p
        )
        tok = jnp.where(done, pad_id, tok)
        logp = jnp.where(done, 0.0, logp)
        # A row ends at an EOS id or at its length limit (i + 1 tokens chosen).
        now_done = done | jnp.isin(tok, eos_ids) | (i + 1 >= limits)
        return tok, logp, now_done

    tokens = jnp.full((r, m), pad_id, jnp.int32)
    logps = jnp.zeros((r, m), jnp.float32)
    tok, logp, done = choose(logits, 0, jnp.zeros((r,), bool))
    tokens, logps = tokens.at[:, 0].set(tok), logps.at[:, 0].set(logp)
    lengths = jnp.ones((r,), jnp.int32)

    def cond(state: _DecodeState):
        return (state.step < m) & ~jnp.all(state.done)

    def body(state: _DecodeState) -> _DecodeState:
        i, done = state.step, state.done
        slot = p + i - 1  # cache slot of the token fed now (token i - 1)
        key_valid = state.key_valid.at[:, slot].set(1)
        hidden, cache = api.apply(
            cfg, params, state.last[:, None], (next_pos + i - 1)[:, None],
            attention_mask(key_valid, slot, 1), cache=state.cache, cache_index=slot, head=False,
        )  # fmt: skip
        logits = jnp.einsum("bd,dv->bv", hidden[:, 0], w, preferred_element_type=jnp.float32)
        lengths = state.lengths + (~done).astype(jnp.int32)
        tok, logp, done = choose(logits, i, done)
        return _DecodeState(
            step=i + 1,
            cache=cache,
            key_valid=key_valid,
            last=tok,
            tokens=jax.lax.dynamic_update_slice(state.tokens, tok[:, None], (0, i)),
            logprobs=jax.lax.dynamic_update_slice(state.logprobs, logp[:, None], (0, i)),
            lengths=lengths,
            done=done,
        )

    state = _DecodeState(
        step=jnp.int32(1), cache=cache, key_valid=key_valid, last=tok, tokens=tokens,
        logprobs=logps, lengths=lengths, done=done,
    )  # fmt: skip
    state = jax.lax.while_loop(cond, body, state)
    last = jnp.take_along_axis(state.tokens, state.lengths[:, None] - 1, -1)[:, 0]
    finished = jnp.isin(last, eos_ids)  # ended by an EOS id, not by a length limit
    return state.tokens, state.logprobs, state.lengths, finished, state.step - 1


def _prepare(input_ids, attention_mask_, pad_id, buckets, mesh):
    """Host prompts -> (bucket-padded device arrays, bucket length), with input checks."""
    ids = np.asarray(input_ids, np.int32)
    mask = np.asarray(attention_mask_, np.int32)
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be [B, T]")
    if mask.size and (mask[:, -1] == 0).any():
        raise ValueError("prompts must be left-padded: attention_mask[:, -1] has zeros")
    p = bucket(ids.shape[1], buckets)
    pad = p - ids.shape[1]
    ids = np.pad(ids, ((0, 0), (pad, 0)), constant_values=pad_id)
    mask = np.pad(mask, ((0, 0), (pad, 0)))
    if mesh is None:
        return (jnp.asarray(ids), jnp.asarray(mask)), p
    ways = sharding.data_ways(mesh)
    if ids.shape[0] % ways:
        raise ValueError(
            f"{ids.shape[0]} prompts do not split over the {ways} data-parallel devices "
            "(mesh axes data x fsdp): use a prompt batch that is a multiple of that"
        )
    return jax.device_put((ids, mask), sharding.data_sharding(mesh)), p


def check_args(*, eos_ids, max_new_tokens: int) -> None:
    """The input errors both engines raise before compiling."""
    if not len(eos_ids):
        raise ValueError("eos_ids is empty: pass the tokenizer's eos ids")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")


def row_args(prompt_ids, max_lengths, b: int, n: int, m: int, mesh: Mesh | None):
    """(prompt_ids [B], max_lengths [B * n]) as int32 device arrays (None where not given),
    checked, rows split over the data axes like the prompts."""
    out = []
    for name, x, size in (("prompt_ids", prompt_ids, b), ("max_lengths", max_lengths, b * n)):
        if x is None or (isinstance(x, jax.Array) and not x.is_fully_addressable):
            out.append(x)
            continue
        x = np.asarray(x, np.int32)
        if x.shape != (size,):
            raise ValueError(f"{name} has shape {x.shape}; expected ({size},)")
        if name == "max_lengths" and (x.min() < 1 or x.max() > m):
            raise ValueError(f"max_lengths must be in [1, max_new_tokens={m}]")
        place = sharding.data_sharding(mesh) if mesh is not None else None
        out.append(jax.device_put(x, place))
    return out


def generate(
    cfg: ModelConfig,
    params,
    input_ids,
    attention_mask_,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    rng: jax.Array | None = None,
    cache_dtype: str = "float32",
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    mesh: Mesh | None = None,
    rules: sharding.Rules | str | None = None,
    prompt_ids: Sequence[int] | None = None,
    max_lengths: Sequence[int] | None = None,
) -> SampleOutput:
    """Samples `num_samples` responses per left-padded prompt.

    Args:
      input_ids, attention_mask_: [B, T] prompts, left-padded (numpy or jax); T is padded on
        the left up to its bucket so that a run compiles a few programs, not one per batch.
      max_new_tokens: M; the decode loop runs at most M - 1 model steps after the prefill.
      temperature: 0 = greedy; top_p: nucleus mass (1 = off); top_k: 0 = off. Top-k, then
        top-p, cut the tempered distribution softmax(logits / temperature) (`sampling_probs`).
      eos_ids: any of these ends a row (a traced argument: changing it does not recompile).
      pad_id: written after each row's end.
      rng: PRNG key; the same key gives the same samples.
      cache_dtype: "float32" or "bfloat16" KV cache.
      mesh, rules: shard rows over the data axes and heads per the rules preset.
      prompt_ids: [B] ints keying each prompt's rows (default 0..B-1); a caller that splits a
        batch over several calls passes global indices, and each row draws what one call over
        the whole batch would (`row_keys`).
      max_lengths: [B * num_samples] per-row caps on response tokens, each in [1, M] (default
        M); a row at its cap ends without EOS (finished False). For benchmarks that force
        response lengths.
    Returns:
      SampleOutput with [B * num_samples, M] tokens and log-probs, lengths, finished. The
      log-probs are of softmax(logits / temperature) (1 when greedy) before top-k / top-p.
    """
    check_args(eos_ids=eos_ids, max_new_tokens=max_new_tokens)
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    if isinstance(input_ids, jax.Array) and not input_ids.is_fully_addressable:
        # Multi-host: global arrays, already bucketed and placed by the caller.
        args, p = (input_ids, attention_mask_), input_ids.shape[1]
    else:
        args, p = _prepare(input_ids, attention_mask_, pad_id, buckets, mesh)
    if p + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(
            f"prompt bucket {p} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_position_embeddings {cfg.max_position_embeddings}"
        )
    rng = jax.random.key(0) if rng is None else rng
    extra = row_args(prompt_ids, max_lengths, args[0].shape[0], num_samples, max_new_tokens, mesh)
    tokens, logps, lengths, done, steps = _generate(
        params, *args, rng, jnp.asarray(np.asarray(eos_ids, np.int32)),
        jnp.float32(temperature), jnp.float32(top_p), jnp.int32(pad_id), *extra,
        cfg=cfg, max_new_tokens=int(max_new_tokens), num_samples=int(num_samples),
        top_k=int(top_k), use_top_p=bool(top_p < 1.0), cache_dtype=cache_dtype, mesh=mesh,
        rules=rules,
    )  # fmt: skip
    return SampleOutput(tokens, logps, lengths, done, steps, prompt_len=p)


def generate_program(
    cfg: ModelConfig,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    top_k: int = 0,
    use_top_p: bool = False,
    cache_dtype: str = "float32",
    mesh: Mesh | None = None,
    rules: sharding.Rules | None = None,
):
    """The jitted program `generate` runs (prefill + decode loop), static arguments bound.

    A function of (params, input_ids, attention_mask, rng, eos_ids, temperature, top_p,
    pad_id) returning (tokens, logprobs, lengths, finished, steps): for ahead-of-time lowering
    on abstract arguments (compile-time benchmark) without going through the host-side prep.
    """
    return functools.partial(
        _generate, cfg=cfg, max_new_tokens=max_new_tokens, num_samples=num_samples, top_k=top_k,
        use_top_p=use_top_p, cache_dtype=cache_dtype, mesh=mesh, rules=rules,
    )  # fmt: skip


def compiled_programs() -> int:
    """Number of sampler programs compiled so far in this process (for tests and logs)."""
    return _generate._cache_size()
