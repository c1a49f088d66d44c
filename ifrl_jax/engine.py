"""Continuous-batching sampler: a fixed number of cache slots, each refilled as its row ends.

Letters: B prompts, n samples per prompt, R = B * n rows, S slots, W prefill lanes, P prompt
bucket, Q prefill chunk, M max_new_tokens, C cache positions per slot (`slot_len`, default
P + M), L layers, K kv heads, H head dim, D model dim, V vocab.

`generate` has `sampling.generate`'s contract (rows in the same order, row b * n + j = sample j
of prompt b; log-probs of the tempered distribution before the top-k / top-p cut) and draws with
the same per-row keys (`sampling.row_keys`, `sampling.choose_tokens`: token t of row (b, j) from
fold_in(fold_in(fold_in(rng, prompt_ids[b]), j), t)), so both engines return the same tokens
for the same rng and prompt ids, whatever the scheduling (up to float rounding at near-ties).

Design:

* Cache per slot, {"k", "v"}: [L, S, C, K, H]. A slot holds one row left-aligned (cache index
  = position, no padding), and each slot writes at its own index: the model's per-row
  `cache_index` [S] (qwen2.Attention). Queries see the keys at or before their own position.
* Prefill lanes, {"k", "v"}: [L, W, P, K, H] plus the last prompt position's logits [W, V].
  Lane w prefills prompts w, w + W, w + 2W, ... in chunks of Q tokens. A prompt is prefilled
  once; each of its n samples starts by copying its P cached positions into a free slot (a
  fork) and drawing token 0 from the stored logits. A lane takes its next prompt once the n
  samples of its current one have started. Default W = ceil(S / n), enough prompts to fill
  every slot at the start, at most 4 S / Q (`prefill_lanes_for`).
* One jitted `while_loop` runs the whole schedule on the device. Each iteration: (1) forks:
  every free slot takes the next row in row order whose prompt is prefilled (one slot per
  inner-loop trip, P positions copied); (2) if a lane is prefilling, one [W, Q] chunk through
  the model for all lanes (`lax.cond`: skipped when none is); (3) if a slot is active, one
  [S, 1] decode step (`lax.cond`). A prefill is thus folded into the decode steps and never
  stops them, and a slot whose row ended is refilled in the next iteration with no host round
  trip. Two model calls per mixed iteration, not one [S, Q] block: on [S, Q] every decoding
  slot would pay Q token positions for the few that prefill.
* Tail shrink: once every row has started, the loop exits when at most S / 2 slots are active;
  the host gathers the active slots into S / 2 (then S / 4, ...) and runs the program compiled
  for that many, down to `min_slots`. A decode step costs about rows x cache length, so the
  long rows of a long tail stop paying for the finished ones. One program per slot count
  (log2(S / min_slots) + 1 at most), each compiled once per shape.
* Memory: S x C positions (slots) + W x P (lanes), against the static sampler's R x (P + M)
  plus B x (P + M) during its prefill (`footprint.engine_cache_bytes`).

The host loop ends when every row has ended; stats (`SampleOutput.stats`): iterations, decode
steps, prefill chunks, refills (forks into a slot that had held another row), slot steps
(sum of S over decode steps), shrinks.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import sampling, sharding
from ifrl_jax.errors import UserError
from ifrl_jax.models import api
from ifrl_jax.models.config import ModelConfig

_LANE_AXES = (None, None, None, "act_kv_heads", None)  # [L, W, P, K, H]: lanes replicated
_STATS = ("iterations", "decode_steps", "prefill_chunks", "refills", "slot_steps")
# The settings' names in errors: the GRPO job's config keys (other jobs pass theirs).
KEYS = dict(engine="rollout.engine", slots="rollout.engine_slots", chunk="rollout.engine_chunk",
            slot_len="rollout.engine_slot_len", n="rollout.n", max_prompt_len="data.max_prompt_len",
            max_new_tokens="rollout.max_new_tokens")  # fmt: skip


@flax.struct.dataclass
class _Consts:
    """Per-call inputs the loop reads: prompts left-aligned, row keys and limits, sampling."""

    prompts: jax.Array  # [B, P + Q] int32, real tokens from index 0, then pad_id
    plen: jax.Array  # [B] int32 real prompt tokens
    keys: jax.Array  # [R] row keys (sampling.row_keys)
    limits: jax.Array  # [R] int32 per-row caps (<= M)
    eos_ids: jax.Array  # [E] int32
    temperature: jax.Array  # scalar fp32
    top_p: jax.Array  # scalar fp32


@flax.struct.dataclass
class _State:
    """The loop's carry: S slots, W lanes, the [R, M] outputs and counters."""

    cache: dict[str, jax.Array]  # {"k", "v"}: [L, S, C, K, H]
    pos: jax.Array  # [S] int32 positions held = cache index of the token fed next
    last: jax.Array  # [S] int32 token chosen last (fed at the next decode step)
    row: jax.Array  # [S] int32 the slot's row; R where the slot never held one
    t: jax.Array  # [S] int32 response tokens chosen so far
    active: jax.Array  # [S] bool
    lane_cache: dict[str, jax.Array]  # {"k", "v"}: [L, W, P, K, H]
    lane_prompt: jax.Array  # [W] int32 prompt in the lane; B where none is left
    lane_pos: jax.Array  # [W] int32 prompt tokens prefilled
    lane_logits: jax.Array  # [W, V] fp32 logits after the lane's whole prompt
    next_row: jax.Array  # scalar int32: rows started so far (rows start in order)
    tokens: jax.Array  # [R, M] int32
    logprobs: jax.Array  # [R, M] fp32
    lengths: jax.Array  # [R] int32
    finished: jax.Array  # [R] bool
    counts: jax.Array  # [len(_STATS)] int32


def _constrain_slots(cache):
    return {k: sharding.constrain(v, sampling._CACHE_AXES) for k, v in cache.items()}


def _halves(slots: int, n_active: int, *, min_slots: int, mesh) -> bool:
    """Whether S slots may shrink to S / 2 with n_active rows left (S / 2 still splits evenly
    over the data-parallel devices)."""
    half, ways = slots // 2, 1 if mesh is None else sharding.data_ways(mesh)
    return half >= max(n_active, min_slots, 1) and half % ways == 0


_INIT_STATIC = ("cfg", "num_samples", "num_slots", "lanes", "chunk", "slot_len",
                "max_new_tokens", "cache_dtype", "mesh", "rules")  # fmt: skip


@functools.partial(jax.jit, static_argnames=_INIT_STATIC)
def _init(
    input_ids, mask, rng, prompt_ids, limits, eos_ids, temperature, top_p, pad_id, *,
    cfg, num_samples, num_slots, lanes, chunk, slot_len, max_new_tokens, cache_dtype, mesh,
    rules,
):  # fmt: skip
    """(consts, state) for a call: prompts left-aligned, lanes on prompts 0..W-1, slots free."""
    b, p = input_ids.shape
    r, m = b * num_samples, max_new_tokens
    rng, prompt_ids = sampling._keys_and_ids(rng, prompt_ids, b)
    plen = jnp.sum(mask, axis=-1).astype(jnp.int32)
    idx = jnp.arange(p + chunk)[None, :] + (p - plen)[:, None]  # [B, P + Q]
    aligned = jnp.take_along_axis(input_ids, jnp.minimum(idx, p - 1), axis=-1)
    prompts = jnp.where(idx < p, aligned, pad_id).astype(jnp.int32)
    limits = jnp.full((r,), m, jnp.int32) if limits is None else limits
    consts = _Consts(
        prompts=prompts, plen=plen, keys=sampling.row_keys(rng, prompt_ids, num_samples),
        limits=limits, eos_ids=eos_ids, temperature=temperature, top_p=top_p,
    )  # fmt: skip
    dt = jnp.dtype(cache_dtype)
    kv = (cfg.num_kv_heads, cfg.head_dim)
    with sharding.activation_sharding(mesh, rules):
        cache = _constrain_slots({k: jnp.zeros((cfg.num_layers, num_slots, slot_len, *kv), dt)
                                  for k in "kv"})  # fmt: skip
        lane_shape = (cfg.num_layers, lanes, min(p, slot_len), *kv)  # prompts < slot_len
        lane_cache = {k: sharding.constrain(jnp.zeros(lane_shape, dt), _LANE_AXES)
                      for k in "kv"}  # fmt: skip
    first = jnp.arange(lanes, dtype=jnp.int32)
    zeros_s = jnp.zeros((num_slots,), jnp.int32)
    state = _State(
        cache=cache, pos=zeros_s, last=zeros_s, row=zeros_s + r, t=zeros_s,
        active=jnp.zeros((num_slots,), bool), lane_cache=lane_cache,
        lane_prompt=jnp.where(first < b, first, b), lane_pos=jnp.zeros((lanes,), jnp.int32),
        lane_logits=jnp.zeros((lanes, cfg.vocab_size), jnp.float32), next_row=jnp.int32(0),
        tokens=jnp.full((r, m), pad_id, jnp.int32), logprobs=jnp.zeros((r, m), jnp.float32),
        lengths=jnp.zeros((r,), jnp.int32), finished=jnp.zeros((r,), bool),
        counts=jnp.zeros((len(_STATS),), jnp.int32),
    )  # fmt: skip
    return consts, state


def _maybe(pred, fn, st: _State) -> _State:
    """fn(st) if pred else st, as a while_loop that runs at most once: XLA:CPU copied the whole
    cache in and out of a `lax.cond` (cpu_small, 128 slots: 43 ms a decode step vs 22 ms)."""
    return jax.lax.while_loop(lambda x: x[0], lambda x: (jnp.bool_(False), fn(x[1])), (pred, st))[1]


def _count(st: _State, name: str, value) -> jax.Array:
    return st.counts.at[_STATS.index(name)].add(jnp.asarray(value, jnp.int32))


def _forks(st: _State, c: _Consts, *, num_samples, lanes, pick):
    """Every free slot takes the next row whose prompt is prefilled, one per inner trip."""
    n = num_samples
    b_all, r_all = c.plen.shape[0], c.keys.shape[0]

    def ready(st):
        b = st.next_row // n
        lane = b % lanes
        done = st.lane_pos[lane] == c.plen[jnp.minimum(b, b_all - 1)]
        return (st.next_row < r_all) & (st.lane_prompt[lane] == b) & done & ~jnp.all(st.active)

    def fork(st):
        r = st.next_row
        b, j = r // n, r % n
        lane = b % lanes
        s = jnp.argmin(st.active)  # the first free slot
        cache = {
            k: jax.lax.dynamic_update_slice(
                st.cache[k], jax.lax.dynamic_slice_in_dim(st.lane_cache[k], lane, 1, axis=1),
                (0, s, 0, 0, 0),
            )
            for k in "kv"
        }  # fmt: skip
        tok, logp = pick(st.lane_logits[lane][None], c.keys[r][None], 0)
        tok, logp = tok[0], logp[0]
        eos = jnp.isin(tok, c.eos_ids)
        nxt = jnp.where(b + lanes < b_all, b + lanes, b_all)
        last_sample = j == n - 1
        return st.replace(
            cache=cache,
            pos=st.pos.at[s].set(c.plen[b]),
            last=st.last.at[s].set(tok),
            row=st.row.at[s].set(r),
            t=st.t.at[s].set(1),
            active=st.active.at[s].set(~eos & (c.limits[r] > 1)),
            lane_prompt=st.lane_prompt.at[lane].set(jnp.where(last_sample, nxt, b)),
            lane_pos=st.lane_pos.at[lane].set(jnp.where(last_sample, 0, st.lane_pos[lane])),
            next_row=r + 1,
            tokens=st.tokens.at[r, 0].set(tok),
            logprobs=st.logprobs.at[r, 0].set(logp),
            lengths=st.lengths.at[r].set(1),
            finished=st.finished.at[r].set(eos),
            counts=_count(st, "refills", st.row[s] < r_all),
        )

    return jax.lax.while_loop(ready, fork, st)


def _prefill(st: _State, c: _Consts, params, w, *, cfg, chunk):
    """One chunk of Q prompt tokens through every prefilling lane (the others masked)."""
    b_all, p = c.plen.shape[0], st.lane_cache["k"].shape[2]
    bi = jnp.minimum(st.lane_prompt, b_all - 1)
    plen = jnp.where(st.lane_prompt < b_all, c.plen[bi], 0)  # [W]
    start = st.lane_pos
    nvalid = jnp.clip(plen - start, 0, chunk)  # [W]
    toks = jax.vmap(lambda x, s0: jax.lax.dynamic_slice(x, (s0,), (chunk,)))(c.prompts[bi], start)
    qpos = start[:, None] + jnp.arange(chunk)  # [W, Q]
    keys = jnp.arange(p)[None, None, :]  # [1, 1, P]
    mask = (keys <= qpos[:, :, None]) & (keys < (start + nvalid)[:, None, None])  # [W, Q, P]
    hidden, lane_cache = api.apply(
        cfg, params, toks, qpos, mask, cache=st.lane_cache, cache_index=start, head=False
    )  # [W, Q, D]
    h = jnp.take_along_axis(hidden, jnp.maximum(nvalid - 1, 0)[:, None, None], axis=1)[:, 0]
    logits = jnp.einsum("wd,dv->wv", h, w, preferred_element_type=jnp.float32)
    completing = (nvalid > 0) & (start + nvalid == plen)
    return st.replace(
        lane_cache={k: sharding.constrain(v, _LANE_AXES) for k, v in lane_cache.items()},
        lane_pos=start + nvalid,
        lane_logits=jnp.where(completing[:, None], logits, st.lane_logits),
        counts=_count(st, "prefill_chunks", 1),
    )


def _decode(st: _State, c: _Consts, params, w, *, cfg, pick):
    """One token for every active slot; rows that reach an EOS id or their cap end."""
    r_all, slots, slot_len = c.keys.shape[0], st.pos.shape[0], st.cache["k"].shape[2]
    mask = jnp.arange(slot_len)[None, None, :] <= st.pos[:, None, None]  # [S, 1, C]
    hidden, cache = api.apply(
        cfg, params, st.last[:, None], st.pos[:, None], mask, cache=st.cache,
        cache_index=st.pos, head=False,
    )  # fmt: skip
    logits = jnp.einsum("sd,dv->sv", hidden[:, 0], w, preferred_element_type=jnp.float32)
    rows = jnp.minimum(st.row, r_all - 1)
    tok, logp = pick(logits, c.keys[rows], st.t)
    act = st.active
    wrow = jnp.where(act, st.row, r_all)  # inactive slots write nowhere
    t = st.t + act
    eos = jnp.isin(tok, c.eos_ids)
    return st.replace(
        cache=_constrain_slots(cache),
        pos=st.pos + act,
        last=jnp.where(act, tok, st.last),
        t=t,
        active=act & ~eos & (t < c.limits[rows]),
        tokens=st.tokens.at[wrow, st.t].set(tok, mode="drop"),
        logprobs=st.logprobs.at[wrow, st.t].set(logp, mode="drop"),
        lengths=st.lengths.at[wrow].set(t, mode="drop"),
        finished=st.finished.at[wrow].set(eos, mode="drop"),
        counts=_count(st, "decode_steps", 1).at[_STATS.index("slot_steps")].add(slots),
    )


_RUN_STATIC = ("cfg", "num_samples", "lanes", "chunk", "top_k", "use_top_p", "min_slots",
               "mesh", "rules")  # fmt: skip


@functools.partial(jax.jit, static_argnames=_RUN_STATIC, donate_argnames=("state",))
def _run(
    params, consts: _Consts, state: _State, *, cfg, num_samples, lanes, chunk, top_k,
    use_top_p, min_slots, mesh, rules,
):  # fmt: skip
    """The schedule until every row has ended, or (rows all started) at most S/2 are active."""
    c = consts
    slots = state.pos.shape[0]
    r_all = c.keys.shape[0]
    can_shrink = _halves(slots, 0, min_slots=min_slots, mesh=mesh)

    def pick(logits, keys, step):
        return sampling.choose_tokens(
            logits, keys, step, c.temperature, c.top_p, top_k=top_k, use_top_p=use_top_p
        )

    def cond(st):
        started = st.next_row >= r_all
        n_active = jnp.sum(st.active)
        stop = started & (n_active == 0)
        if can_shrink:
            stop |= started & (n_active <= slots // 2)
        return ~stop

    def body(st):
        st = _forks(st, c, num_samples=num_samples, lanes=lanes, pick=pick)
        b_all = c.plen.shape[0]
        bi = jnp.minimum(st.lane_prompt, b_all - 1)
        prefilling = jnp.any((st.lane_prompt < b_all) & (st.lane_pos < c.plen[bi]))
        st = _maybe(prefilling, lambda s: _prefill(s, c, params, w, cfg=cfg, chunk=chunk), st)
        st = _maybe(jnp.any(st.active), lambda s: _decode(s, c, params, w, cfg=cfg, pick=pick), st)
        return st.replace(counts=_count(st, "iterations", 1))

    with sharding.activation_sharding(mesh, rules):
        w = api.lm_head_weight(cfg, params).astype(cfg.jnp_dtype)  # [D, V], transposed once
        return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnames=("num_slots", "mesh", "rules"))
def _shrink(state: _State, *, num_slots: int, mesh, rules) -> _State:
    """The state on `num_slots` slots: the active ones first (all of them must fit)."""
    keep = jnp.argsort(~state.active, stable=True)[:num_slots]
    take = lambda x: jnp.take(x, keep, axis=0)
    with sharding.activation_sharding(mesh, rules):
        cache = _constrain_slots({k: jnp.take(v, keep, axis=1) for k, v in state.cache.items()})
    return state.replace(
        cache=cache, pos=take(state.pos), last=take(state.last), row=take(state.row),
        t=take(state.t), active=take(state.active),
    )  # fmt: skip


def check_engine_args(
    *, num_slots: int, num_samples: int, prefill_chunk: int, prompt_len: int, max_new_tokens: int,
    slot_len: int, max_positions: int, data_ways: int = 1, keys: dict | None = None,
) -> None:  # fmt: skip
    """The engine's input errors, raised before anything compiles, naming the setting's key
    (`keys`: KEYS' names -> a job's config keys or flags; default KEYS)."""
    k = {**KEYS, **(keys or {})}
    if num_slots < 1 or num_slots % data_ways:
        raise UserError(
            f"num_slots={num_slots} ({k['slots']}) must be >= 1 and a multiple of the "
            f"{data_ways} data-parallel devices"
        )
    if num_samples > num_slots:
        raise UserError(
            f"num_samples={num_samples} ({k['n']}) is more than num_slots={num_slots} "
            f"({k['slots']}): a prompt's samples could not run together; raise {k['slots']}"
        )
    if prefill_chunk < 1:
        raise UserError(f"prefill_chunk={prefill_chunk} ({k['chunk']}) must be >= 1")
    if prompt_len >= slot_len:
        raise UserError(
            f"a prompt of {prompt_len} tokens does not fit the slot's cache of {slot_len} "
            f"positions ({k['slot_len']}): raise it or shorten prompts ({k['max_prompt_len']})"
        )
    if prompt_len + max_new_tokens > slot_len:
        raise UserError(
            f"max_new_tokens={max_new_tokens} ({k['max_new_tokens']}) is above the slot's room: "
            f"{slot_len} positions ({k['slot_len']}) - {prompt_len} prompt tokens = "
            f"{slot_len - prompt_len}"
        )
    if slot_len > max_positions:
        raise UserError(
            f"slot_len {slot_len} (prompt + max_new_tokens) exceeds the model's "
            f"max_position_embeddings {max_positions}"
        )


def prefill_lanes_for(prompts: int, slots: int, num_samples: int, ways: int = 1,
                      requested: int = 0, chunk: int = 32) -> int:  # fmt: skip
    """W: `requested`, else ceil(S / n) prompts prefilled at once (enough to fill every slot at
    the start) but at most max(1, 4 S / Q); at most B; rounded up to a multiple of the
    data-parallel devices (the model splits its batch over them; extra lanes idle).

    The cap: a prefill call costs W x Q token positions whatever the number of lanes that
    prefill, a decode step S, and once the slots are full a refill often has one lane to
    prefill. With n = 1 (pair building) and no cap, W = S made every refill cost Q decode steps
    per chunk: the default job's pairs (438 prompts, n = 1, S = 32, Q = 32) sampled in 15.6 s
    with 32 lanes, 6.2 s with 4, against the static sampler's 4.9 s."""
    lanes = requested or min(-(-slots // num_samples), max(1, 4 * slots // chunk))
    lanes = min(prompts, lanes)
    return -(-lanes // ways) * ways


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
    buckets: Sequence[int] = sampling.DEFAULT_BUCKETS,
    mesh: Mesh | None = None,
    rules: sharding.Rules | str | None = None,
    num_slots: int,
    prefill_chunk: int = 32,
    prompt_ids: Sequence[int] | None = None,
    max_lengths: Sequence[int] | None = None,
    slot_len: int | None = None,
    prefill_lanes: int = 0,
    min_slots: int = 8,
) -> sampling.SampleOutput:
    """Samples `num_samples` responses per left-padded prompt on `num_slots` refilled slots.

    Args (as `sampling.generate`, plus):
      num_slots: S, rows decoded at once (rollout.engine_slots); >= num_samples.
      prefill_chunk: Q, prompt tokens per lane per loop iteration.
      prompt_ids: [B] ints keying each prompt's rows (default 0..B-1), as in `sampling`.
      max_lengths: [B * num_samples] per-row caps on response tokens in [1, M] (benchmarks).
      slot_len: C, cache positions per slot (default: prompt bucket + max_new_tokens); the
        longest prompt + max_new_tokens must fit.
      prefill_lanes: W, prompts prefilled at once (0 = `prefill_lanes_for`'s default),
        rounded up to a multiple of the data-parallel devices.
      min_slots: the tail shrinks the slots by halves while at least this many remain.
    Returns:
      sampling.SampleOutput: tokens / log-probs [B * num_samples, M], lengths, finished, as
      `sampling.generate` returns them for the same rng and prompt ids; decode_steps = decode
      iterations; stats = the engine's counters (module docstring) as ints.
    """
    sampling.check_args(eos_ids=eos_ids, max_new_tokens=max_new_tokens)
    if isinstance(input_ids, jax.Array) and not input_ids.is_fully_addressable:
        raise ValueError("the continuous engine runs in one process; use sampling.generate")
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    (ids, mask), p = sampling._prepare(input_ids, attention_mask_, pad_id, buckets, mesh)
    longest = int(np.asarray(attention_mask_).sum(-1).max()) if mask.size else 0
    m, n, b = int(max_new_tokens), int(num_samples), ids.shape[0]
    slot_len = p + m if slot_len is None else int(slot_len)
    ways = 1 if mesh is None else sharding.data_ways(mesh)
    check_engine_args(
        num_slots=num_slots, num_samples=n, prefill_chunk=prefill_chunk, prompt_len=longest,
        max_new_tokens=m, slot_len=slot_len, max_positions=cfg.max_position_embeddings,
        data_ways=ways,
    )  # fmt: skip
    lanes = prefill_lanes_for(b, num_slots, n, ways, prefill_lanes, prefill_chunk)
    rng = jax.random.key(0) if rng is None else rng
    extra = sampling.row_args(prompt_ids, max_lengths, b, n, m, mesh)
    consts, state = _init(
        ids, mask, rng, *extra, jnp.asarray(np.asarray(eos_ids, np.int32)),
        jnp.float32(temperature), jnp.float32(top_p), jnp.int32(pad_id), cfg=cfg,
        num_samples=n, num_slots=num_slots, lanes=lanes, chunk=prefill_chunk, slot_len=slot_len,
        max_new_tokens=m, cache_dtype=cache_dtype, mesh=mesh, rules=rules,
    )  # fmt: skip
    run = functools.partial(
        _run, cfg=cfg, num_samples=n, lanes=lanes, chunk=prefill_chunk, top_k=int(top_k),
        use_top_p=bool(top_p < 1.0), min_slots=min_slots, mesh=mesh, rules=rules,
    )  # fmt: skip
    slots, shrinks = num_slots, 0
    while True:
        state = run(params, consts, state)
        n_active, started = (
            int(x) for x in jax.device_get((jnp.sum(state.active), state.next_row))
        )
        if n_active == 0 and started >= b * n:
            break
        half = slots
        while _halves(half, n_active, min_slots=min_slots, mesh=mesh):
            half //= 2
        if half == slots:  # the loop only exits to shrink; this would spin
            raise RuntimeError(f"engine stopped at {n_active} active slots of {slots}")
        state, slots, shrinks = (
            _shrink(state, num_slots=half, mesh=mesh, rules=rules),
            half,
            shrinks + 1,
        )
    stats = dict(zip(_STATS, (int(x) for x in jax.device_get(state.counts))), shrinks=shrinks)
    return sampling.SampleOutput(
        state.tokens, state.logprobs, state.lengths, state.finished,
        jnp.int32(stats["decode_steps"]), prompt_len=p, stats=stats,
    )  # fmt: skip
