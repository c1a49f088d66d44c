"""One rollout batch, from records to scored groups: sample -> verify + RM score -> advantages.

    sampled = rollout.sample(cfg, params, tokenizer, records, opts=opts, rng=key, mesh=mesh,
                             rules=rules)                     # n responses per prompt [devices]
    future = scorer.submit(sampled.records, sampled.texts)  # rewards in a host thread [host]
    ...                                                       # old/ref log-probs meanwhile
    result, seconds = future.result()
    adv, weight = rollout.advantages(result, sampled.prompt_weight, n=opts.n, ...)

`sampled.rows` holds the train step's [R, P + M] arrays (prompt left-padded, response
right-padded); rows are ordered group by group (the n responses of prompt i are rows
i*n .. i*n + n - 1), like `records` and `texts`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import data, grpo, oracle, rewards, samplers, sampling, sharding, verifiers
from ifrl_jax.models import ModelConfig
from ifrl_jax.records import Record


@dataclasses.dataclass(frozen=True)
class Options:
    """How a batch is sampled; field names are config.rollout's (and config.data's) keys."""

    n: int = 5  # responses per prompt
    max_new_tokens: int = 8192
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    cache_dtype: str = "bfloat16"
    sample_prompts: int = 0  # prompts per sampler call and process; 0 = the whole batch
    max_prompt_len: int = 2048
    overlong: str = "truncate_left"
    prompt_buckets: tuple[int, ...] = ()  # () = sampling.DEFAULT_BUCKETS
    engine: str = "continuous"  # samplers.Options, from the engine_* keys
    engine_slots: int = 0
    engine_chunk: int = 32
    engine_slot_len: int = 0

    @property
    def buckets(self) -> tuple[int, ...]:
        return tuple(self.prompt_buckets) or sampling.DEFAULT_BUCKETS

    @property
    def engine_options(self) -> samplers.Options:
        return samplers.Options(self.engine, self.engine_slots, self.engine_chunk,
                              self.engine_slot_len)  # fmt: skip


@dataclasses.dataclass
class Sampled:
    """A sampled batch on the host. R = prompts * n rows, group by group.

    Attributes:
      records: [R] the record of each row; texts: [R] decoded responses.
      rows: input_ids, attention_mask, response_mask [R, P + M] for the train step.
      lengths: [R] response tokens (EOS included); finished: [R] ended by EOS.
      prompt_weight: [prompts] 0 for filler prompts (repeats standing in for dropped ones).
      num_truncated, num_dropped: prompts cut on the left / dropped as over-long.
      seconds: time spent sampling.
    """

    records: list[Record]
    texts: list[str]
    rows: dict[str, np.ndarray]
    lengths: np.ndarray
    finished: np.ndarray
    prompt_weight: np.ndarray
    num_truncated: int
    num_dropped: int
    seconds: float


def fill_batch(enc: data.EncodedPrompts, size: int):
    """Keeps the batch shape when prompts were dropped: repeats kept rows with weight 0.

    Returns:
      (records, input_ids, attention_mask, weight [size]).
    """
    recs = list(enc.records)
    ids, mask = enc.input_ids, enc.attention_mask
    weight = np.ones(len(recs), np.float32)
    if len(recs) == size:
        return recs, ids, mask, weight
    if not recs:
        raise ValueError(
            "every prompt of the batch was dropped as over-long (config.data.overlong)"
        )
    extra = size - len(recs)
    take = np.arange(extra) % len(recs)
    weight = np.concatenate([weight, np.zeros(extra, np.float32)])
    ids, mask = np.concatenate([ids, ids[take]]), np.concatenate([mask, mask[take]])
    return recs + [recs[i] for i in take], ids, mask, weight


def train_rows(
    prompt_ids: np.ndarray, prompt_mask: np.ndarray, tokens: np.ndarray, lengths: np.ndarray,
    n: int, logprobs: np.ndarray | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Prompt + response rows [R, P + M] for the train step (left-padded prompt, right-padded
    response); response_mask marks the sampled tokens (the EOS included); rollout_logp (with
    `logprobs` [R, M], the sampler's) is aligned like the trainer's log-probs (0 on prompts)."""
    m = tokens.shape[1]
    resp = (np.arange(m)[None, :] < lengths[:, None]).astype(np.int32)
    prompt_zeros = np.zeros_like(np.repeat(prompt_mask, n, 0))
    ids = np.concatenate([np.repeat(prompt_ids, n, 0), tokens], axis=1).astype(np.int32)
    mask = np.concatenate([np.repeat(prompt_mask, n, 0), resp], axis=1).astype(np.int32)
    response_mask = np.concatenate([prompt_zeros, resp], axis=1)
    rows = {"input_ids": ids, "attention_mask": mask, "response_mask": response_mask}
    if logprobs is not None:
        rollout_logp = np.concatenate([prompt_zeros.astype(np.float32), logprobs * resp], axis=1)
        rows["rollout_logp"] = rollout_logp.astype(np.float32)
    return rows


def sample(
    cfg: ModelConfig, params: dict, tokenizer, batch_records: Sequence[Record], *,
    opts: Options, rng: jax.Array, mesh: Mesh, rules,
) -> Sampled:  # fmt: skip
    """Samples opts.n responses to each of this process's records: the continuous engine in one
    call on opts.engine_slots slots, or the static sampler in chunks of opts.sample_prompts
    prompts per call (which bounds its KV cache). Row (prompt i, sample j) draws from the keys of
    (rng, i, j) in one process (`sampling.row_keys`), so both engines sample the same tokens."""
    t0 = time.time()
    enc = data.encode_prompts(
        tokenizer, batch_records, max_prompt_len=opts.max_prompt_len, overlong=opts.overlong,
        buckets=opts.buckets,
    )  # fmt: skip
    recs, ids, mask, weight = fill_batch(enc, len(batch_records))
    p = sharding.agree_max(ids.shape[1])  # hosts bucket their own prompts: use one length
    ids = np.pad(ids, ((0, 0), (p - ids.shape[1], 0)), constant_values=tokenizer.pad_id)
    mask = np.pad(mask, ((0, 0), (p - mask.shape[1], 0)))
    eng = opts.engine_options
    static_chunk = opts.sample_prompts or ids.shape[0]
    chunk = ids.shape[0] if eng.continuous() else static_chunk
    outs = []
    for lo in range(0, ids.shape[0], chunk):  # the KV cache: [L, chunk * n, P + M, K, H]
        prompts = (ids[lo : lo + chunk], mask[lo : lo + chunk])
        keys = {"rng": rng, "prompt_ids": np.arange(lo, lo + len(prompts[0]))}
        if jax.process_count() > 1:  # global arrays; one process passes its numpy rows directly
            prompts = sharding.host_to_global(prompts, mesh)
            keys = {"rng": jax.random.fold_in(rng, lo) if lo else rng}
        out = samplers.sample(
            cfg, params, *prompts, opts=eng, static_rows=static_chunk * opts.n,
            max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p,
            top_k=opts.top_k, num_samples=opts.n, eos_ids=tokenizer.eos_ids,
            pad_id=tokenizer.pad_id, cache_dtype=opts.cache_dtype, mesh=mesh, rules=rules,
            buckets=opts.buckets, **keys,
        )  # fmt: skip
        fetched = (out.tokens, out.lengths, out.finished, out.logprobs)
        outs.append(sharding.global_to_host(fetched, mesh))
    tokens, lengths, finished, logprobs = (np.concatenate(x) for x in zip(*outs))
    ids = np.pad(ids, ((0, 0), (out.prompt_len - ids.shape[1], 0)),
                 constant_values=tokenizer.pad_id)  # fmt: skip
    mask = np.pad(mask, ((0, 0), (out.prompt_len - mask.shape[1], 0)))
    t1 = time.time()
    return Sampled(
        records=[rec for rec in recs for _ in range(opts.n)],
        texts=tokenizer.decode_batch(tokens, lengths),
        rows=train_rows(ids, mask, tokens, lengths, opts.n, logprobs),
        lengths=lengths, finished=finished, prompt_weight=weight,
        num_truncated=enc.num_truncated, num_dropped=enc.num_dropped, seconds=t1 - t0,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RewardOptions:
    """How responses are scored; field names are config.reward's keys."""

    scale: float = 5.0
    think_mode: str = "none"
    soft: str = "exclude"  # soft constraints without a reward model: exclude/zero/error
    rm_ids: tuple[str, ...] = ()  # hard ids the RM scores instead of the rules
    verifier_processes: int = 8  # 0: the verifiers' shared worker process (verifiers.shared_pool)
    timeout_s: float = 10.0


class Scorer:
    """Rewards in a host thread (rule verifiers, in-process or a VerifierPool, plus the soft
    scorer), so that device work overlaps them. A context manager: `close` stops the pool."""

    def __init__(self, opts: RewardOptions, soft_scorer: rewards.SoftScorer | None = None):
        self.opts, self.soft_scorer = opts, soft_scorer
        procs = opts.verifier_processes
        self.pool = verifiers.VerifierPool(procs) if procs else None
        if not procs:
            verifiers.shared_pool()  # starts (and warms) now, not in the first reward batch
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reward")

    def _score(self, recs, texts) -> tuple[rewards.RewardResult, float]:
        soft_seconds = [0.0]

        def timed_soft(*args):
            t0 = time.time()
            out = self.soft_scorer(*args)
            soft_seconds[0] += time.time() - t0
            return out

        o = self.opts
        result = rewards.score(
            recs, texts, think_mode=o.think_mode, scale=o.scale,
            soft_scorer=timed_soft if self.soft_scorer is not None else None, soft=o.soft,
            pool=self.pool, timeout_s=o.timeout_s, rm_ids=tuple(o.rm_ids),
        )  # fmt: skip
        return result, soft_seconds[0]

    def submit(self, recs: Sequence[Record], texts: Sequence[str]) -> concurrent.futures.Future:
        """Starts scoring; the future gives (RewardResult, soft-scorer seconds, total seconds)."""
        t0 = time.time()

        def job():
            result, soft = self._score(recs, texts)
            return result, soft, time.time() - t0

        if self.soft_scorer is None or jax.process_count() == 1:
            return self.executor.submit(job)
        # Several processes: the RM is a collective; scored here, in the order of the device
        # work every host issues, never beside it in a thread (hosts could interleave them
        # differently and wait on each other).
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            done.set_result(job())
        except Exception as e:
            done.set_exception(e)
        return done

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


OVERLONG = ("keep", "filter", "penalty")  # grpo.overlong


def overlong_shaping(
    lengths: np.ndarray, finished: np.ndarray, *, mode: str, max_new_tokens: int, buffer: int,
    penalty: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(reward change [R], row weight [R]) for responses at or near the length limit (DAPO).

    keep: nothing changes. filter (overlong filtering): rows cut by the limit (no EOS) get
    weight 0, so a truncated answer is neither rewarded nor punished. penalty (soft overlong
    punishment): `-penalty * clip((length - (max_new_tokens - buffer)) / buffer, 0, 1)` added
    to the reward, so the last `buffer` tokens before the limit cost up to `penalty` (reward
    units) and a truncated row pays all of it.
    """
    lengths = np.asarray(lengths, np.float32)
    delta, weight = np.zeros_like(lengths), np.ones_like(lengths)
    if mode == "filter":
        weight = np.asarray(finished, np.float32)
    elif mode == "penalty":
        over = (lengths - (max_new_tokens - buffer)) / max(buffer, 1)
        delta = -penalty * np.clip(over, 0.0, 1.0)
    elif mode != "keep":
        raise ValueError(f"overlong mode {mode!r}: use one of {OVERLONG}")
    return delta.astype(np.float32), weight.astype(np.float32)


def advantages(
    result: rewards.RewardResult, prompt_weight: np.ndarray, *, n: int, std: str, eps: float,
    filter_zero_variance: bool, shaping: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(advantages [R], row weights [R]): group-normalized advantages; weight 0 on filler
    prompts, rows without a valid reward and (optionally) zero-variance groups. `shaping`
    (`overlong_shaping`'s reward change and row weight) applies before the normalization."""
    r = np.asarray(result.rewards, np.float32)
    w = np.repeat(prompt_weight, n) * np.asarray(result.reward_valid, np.float32)
    if shaping is not None:
        r, w = r + shaping[0], w * shaping[1]
    adv = np.asarray(grpo.group_advantages(r, group_size=n, std=std, eps=eps), np.float32)
    if filter_zero_variance:
        w = w * np.asarray(grpo.zero_variance_weights(r, group_size=n))
    return adv, w


def select_groups(
    sampled: Sampled, result: rewards.RewardResult, *, n: int, keep: int
) -> tuple[Sampled, rewards.RewardResult, dict]:
    """Dynamic sampling (DAPO): of the sampled groups, keeps `keep` whose rewards differ (the
    informative ones, in batch order), topped up in order with uniform ones when too few.

    Returns:
      (the kept Sampled, their RewardResult, metrics): `rollout/zero_var_frac_sampled` (uniform
      groups among all sampled ones) and `rollout/informative_frac` (among the kept ones).
      Batch-level counts (truncated/dropped prompts, verifier timeouts, RM agreement) stay
      those of everything sampled.
    """
    groups = len(sampled.records) // n
    r = np.asarray(result.rewards, np.float32).reshape(groups, n)
    valid = np.asarray(result.reward_valid).reshape(groups, n)
    hi, lo = np.where(valid, r, -np.inf).max(1), np.where(valid, r, np.inf).min(1)
    informative = (hi > lo) & (sampled.prompt_weight > 0)  # valid rewards that differ
    order = np.concatenate([np.flatnonzero(informative), np.flatnonzero(~informative)])
    kept = np.sort(order[:keep])
    rows = (kept[:, None] * n + np.arange(n)[None, :]).reshape(-1)
    pick = lambda xs: [xs[i] for i in rows]
    sub = dataclasses.replace(
        sampled, records=pick(sampled.records), texts=pick(sampled.texts),
        rows={k: v[rows] for k, v in sampled.rows.items()}, lengths=sampled.lengths[rows],
        finished=sampled.finished[rows], prompt_weight=sampled.prompt_weight[kept],
    )  # fmt: skip
    res = dataclasses.replace(
        result, rewards=result.rewards[rows], scores=result.scores[rows],
        valid=result.valid[rows], reward_valid=result.reward_valid[rows],
        ids=pick(result.ids), levels=result.levels[rows],
    )  # fmt: skip
    m = {
        "rollout/zero_var_frac_sampled": float(1.0 - informative.mean()),
        "rollout/informative_frac": float(informative[kept].mean()),
    }
    return sub, res, m


def _oracle_counts(texts, result: rewards.RewardResult) -> dict[str, tuple[int, int]]:
    """Per soft id with a hidden oracle: (slots where the scored decision agrees with it,
    slots), over the slots that counted in the reward (scored by the RM)."""
    out: dict[str, tuple[int, int]] = {}
    if not result.soft_scored:
        return out
    for i, row_ids in enumerate(result.ids):
        for k, cid in enumerate(row_ids):
            if result.valid[i, k] and oracle.has_oracle(cid):
                a, t = out.get(cid, (0, 0))
                agree = (result.scores[i, k] > 0.5) == oracle.check(cid, texts[i])
                out[cid] = (a + int(agree), t + 1)
    return out


class AgreementGuard:
    """Reward-hacking guard: on each step's fresh rollouts, the RM's agreement with the rules
    on the slots it scores in their place and with the hidden oracle on soft slots that have
    one (``reward/rm_agreement``, from `batch_metrics`). Below ``floor`` the row
    gets ``reward/rm_agreement_low`` = 1 (else 0) and the console one warning, so that a policy
    that learns to fool the RM is seen rather than rewarded in silence."""

    def __init__(self, floor: float):
        self.floor, self.warned = floor, False

    def check(self, step: int, row: dict) -> None:
        agreement = row.get("reward/rm_agreement")
        if agreement is None or not self.floor:
            return
        row["reward/rm_agreement_low"] = int(agreement < self.floor)
        if agreement < self.floor and not self.warned:
            self.warned = True
            worst = min(
                ((k.rsplit("/", 1)[-1], v) for k, v in row.items()
                 if k.startswith("reward/rm_agreement/")),
                key=lambda kv: kv[1], default=("?", agreement),
            )  # fmt: skip
            logging.warning(
                "step %d: the RM agrees with the rules/oracle on %.2f of the slots it scores, "
                "below reward.rm_agreement_floor=%.2f (lowest: %s at %.2f); the policy may be "
                "learning to fool the RM (warned once; reward/rm_agreement_low marks every such "
                "step)",
                step, agreement, self.floor, *worst,
            )  # fmt: skip


def batch_metrics(sampled: Sampled, result: rewards.RewardResult, *, n: int) -> dict:
    """Reward statistics, pass rates per id and level, and response lengths of one batch."""
    r = np.asarray(result.rewards, np.float32)
    stats = jax.device_get(grpo.reward_stats(r, group_size=n))
    row = {f"reward/{k.removeprefix('reward_')}": float(v) for k, v in stats.items()}
    row.update({f"rate/{k}": v for k, v in rewards.pass_rates(result, sampled.records).items()})
    # The RM's decision (p > 0.5) against the rule verdict on reward.rm_ids slots and against
    # the hidden oracle on soft slots that have one (measured only; the reward-hacking guard).
    # (rm_ids are hard ids and the oracles' soft ones: the two never share a key.)
    counts = {**result.rm_agreement_counts, **_oracle_counts(sampled.texts, result)}
    if counts:
        row["reward/rm_agreement"] = rewards.agreement(counts)
        row.update({f"reward/rm_agreement/{k}": a / t for k, (a, t) in sorted(counts.items())})
    row["reward/verifier_timeouts"] = result.verifier_timeouts  # checks cut by the time limit
    soft_count, soft_mean = rewards.soft_stats(result)  # soft constraints in the reward
    row["reward/soft_count"] = soft_count
    if soft_mean is not None:
        row["reward/soft_mean"] = soft_mean
    row.update({
        "response/length_mean": float(np.mean(sampled.lengths)),
        "response/finished_frac": float(np.mean(sampled.finished)),
        "prompts/truncated": sampled.num_truncated, "prompts/dropped": sampled.num_dropped,
    })  # fmt: skip
    return row
