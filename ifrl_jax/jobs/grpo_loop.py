"""The GRPO loop's two halves: where each step's sampled batch comes from (`Rollouts`: sampled
now, or prefetched one step ahead with rollout.overlap) and what one batch does to the state
(`update`: rewards, advantages, the ppo_epochs x mini-batch updates, the metrics row).

With rollout.overlap, batch i+1 is sampled in a thread while update i runs:

    step i:  take(i) -> batch i          prefetch(i+1, params_i) -----> [thread] sample batch i+1
             update i (donates params_i)                                 with the snapshot of
    step i+1: take(i+1) -> batch i+1 (waits for the thread)              params_i
             update i+1 on params_{i+1}: the batch is `updates_per_batch` updates stale

The sampler gets a copy of the params (one params copy of device memory, freed when the batch
is sampled) because the update donates the state's buffers. With rollout.overlap_devices
"split" that copy is on the sampler's own devices (`to_sampler`), where every batch is sampled,
so on a GPU/TPU mesh sampling and updating run at the same time on different chips. The
trainer's old log-probs are computed on the current params as always; the sampler's own
log-probs (`rollout_logp`) are the behaviour policy, corrected by truncated importance sampling
(grpo.tis_cap, required > 0).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ifrl_jax import rollout, sharding


def updates_per_batch(config) -> int:
    """Optimizer updates per rollout batch: ppo_epochs x mini-batches."""
    return config.grpo.ppo_epochs * (
        config.rollout.prompts_per_batch // config.grpo.minibatch_prompts
    )


class Rollouts:
    """The sampled batch of each step, in the order the data iterator gives the records.

    `take(step, params)` returns the batch trained at `step`: the one `prefetch` started at the
    previous step, or (none in flight) one sampled now with `params`. `prefetch(step, params)`
    draws the next records (in the caller's thread: the iterator's order, and so its saved
    state, stay those of the loop without overlap) and samples them in a one-worker thread
    from a copy of `params`. It does nothing without overlap, after the last step, or when
    `step` follows a checkpoint (`step % sync_every == 0`): a checkpoint is a sync point, with
    nothing in flight, so the saved data position is that of the batches trained and a resumed
    run samples the same batches, with the same params, as an uninterrupted one.

    Args:
      sample: (params, records, step) -> rollout.Sampled; records: () -> the next step's records.
      overlap: config.rollout.overlap; steps: config.train.steps; sync_every: checkpoint_every.
      staleness: updates between the prefetching params and the trained ones (updates_per_batch).
      to_sampler: params -> their copy on the sampler's devices ("split"); None: the same
        devices (a jnp.copy snapshot for the thread, the params themselves otherwise).
    """

    def __init__(
        self, sample: Callable, records: Callable, *, overlap: bool, steps: int, sync_every: int,
        staleness: int, to_sampler: Callable | None = None,
    ):  # fmt: skip
        self.sample, self.records, self.to_sampler = sample, records, to_sampler
        self.overlap, self.steps, self.sync_every, self.staleness = (
            overlap, steps, sync_every, staleness,
        )  # fmt: skip
        self.pending: tuple[int, concurrent.futures.Future] | None = None
        self.executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rollout")
            if overlap
            else None
        )

    def take(self, step: int, params) -> tuple[rollout.Sampled, dict]:
        """(the batch trained at `step`, its rollout/staleness and time/sample_wait metrics)."""
        if self.pending is None:
            placed = params if self.to_sampler is None else self.to_sampler(params)
            sampled = self.sample(placed, self.records(), step)
            return sampled, {"rollout/staleness": 0, "time/sample_wait": sampled.seconds}
        pending_step, future = self.pending
        self.pending = None
        assert pending_step == step, (pending_step, step)
        t0 = time.time()
        sampled = future.result()
        return sampled, {"rollout/staleness": self.staleness, "time/sample_wait": time.time() - t0}

    def prefetch(self, step: int, params) -> None:
        """Starts sampling `step`'s batch from a copy of `params` (see the class docstring)."""
        if not self.overlap or step >= self.steps or step % self.sync_every == 0:
            return
        copy = self.to_sampler or (lambda p: jax.tree.map(jnp.copy, p))
        snapshot = copy(params)  # the update donates params' buffers
        self.pending = (step, self.executor.submit(self.sample, snapshot, self.records(), step))

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def update(config, state, reference, sampled, scorer, step_fn, logprob_fn, mesh, *,
           sample_wait: float | None = None):  # fmt: skip
    """Rewards (in the scorer's thread, overlapped with the log-prob passes), advantages and
    the ppo_epochs x mini-batch updates of one sampled batch; returns (state, metrics row).
    reference(state): the KL reference's params (with LoRA: the state's with adapters off).
    sample_wait: seconds the loop waited for the batch (time/step counts these, not the
    sampler's own time/sample, which overlapped the previous update); None: sampled.seconds."""
    g, n = config.grpo, config.rollout.n
    t_reward0 = time.time()
    scored = scorer.submit(sampled.records, sampled.texts).result  # awaited after the passes
    extra_metrics = {}
    if g.oversample > 1:  # dynamic sampling: rewards first, then the informative groups
        result, t_score, t_reward = scored()
        keep = len(sampled.records) // n // g.oversample
        sampled, result, extra_metrics = rollout.select_groups(sampled, result, n=n, keep=keep)
        scored = lambda: (result, t_score, t_reward)
    rows = sampled.rows
    num_mb = config.rollout.prompts_per_batch // g.minibatch_prompts
    mb_rows = len(sampled.records) // num_mb
    minibatches = []
    for j in range(num_mb):
        sl = slice(j * mb_rows, (j + 1) * mb_rows)
        mb = sharding.host_to_global({k: v[sl] for k, v in rows.items()}, mesh)
        if updates_per_batch(config) > 1:  # off-policy updates: ratio against the sampler
            mb["old_logp"] = logprob_fn(state.params, mb)
        if g.kl_coef:
            mb["ref_logp"] = logprob_fn(reference(state), mb)
        minibatches.append((sl, mb))
    result, t_score, t_reward = scored()
    t_wait = time.time()
    shaping = rollout.overlong_shaping(
        sampled.lengths, sampled.finished, mode=g.overlong,
        max_new_tokens=config.rollout.max_new_tokens, buffer=g.overlong_buffer,
        penalty=g.overlong_penalty,
    )  # fmt: skip
    adv, row_w = rollout.advantages(result, sampled.prompt_weight, n=n, std=g.std, eps=g.eps,
                                    filter_zero_variance=g.filter_zero_variance,
                                    shaping=shaping)  # fmt: skip
    step_metrics = []
    for _ in range(g.ppo_epochs):
        for sl, mb in minibatches:
            extra = sharding.host_to_global(
                {"advantages": adv[sl],
                 "response_mask": (rows["response_mask"][sl] * row_w[sl, None]).astype(np.int32)},
                mesh,
            )  # fmt: skip
            state, m = step_fn(state, {**mb, **extra})
            step_metrics.append(m)
    t_update = time.time()
    upd = {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in step_metrics[0]}
    # The sampler's log-probs against the trainer's (old) ones, on every step.
    renamed = {"mismatch_abs": "rollout/logprob_mismatch", "mismatch_kl": "rollout/mismatch_kl"}
    row = {
        renamed.get(k, f"train/{k}"): v for k, v in upd.items() if k not in ("step", "is_finite")
    }
    row.update(rollout.batch_metrics(sampled, result, n=n))
    row.update(extra_metrics)
    row["reward/overlong_penalty"] = float(np.mean(shaping[0]))  # 0 unless grpo.overlong=penalty
    waited = sampled.seconds if sample_wait is None else sample_wait
    row.update({
        "time/sample": sampled.seconds, "time/reward": t_reward,
        "time/verify": t_reward - t_score, "time/score": t_score,
        "time/reward_wait": t_wait - t_reward0, "time/update": t_update - t_wait,
        "time/step": waited + t_update - t_reward0,
    })  # fmt: skip
    return state, row
