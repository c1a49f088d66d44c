"""Which sampler a job runs: the continuous engine (`engine`) or the static one (`sampling`).

opts = samplers.Options("continuous", slots=32)      # config.rollout.engine*
samplers.check(opts, num_samples=8, ...)             # its errors, before loading anything
out = samplers.sample(cfg, params, ids, mask, opts=opts, static_rows=128, **generate_kwargs)
"""

from __future__ import annotations

import dataclasses

import jax

from ifrl_jax import engine, sampling
from ifrl_jax.errors import UserError
from ifrl_jax.models.config import ModelConfig

ENGINES = ("continuous", "static")


@dataclasses.dataclass(frozen=True)
class Options:
    """Which sampler a job runs (config.rollout.engine*; pairs' --engine*).

    engine: "continuous" (`engine.generate`, one call over a process's whole batch on `slots` slots)
      or "static" (`sampling.generate`, one fixed batch per call). Jobs run the static sampler
      when there are several processes: the engine's slots are per process.
    slots: S; 0 = the rows the static sampler decodes at once (its prompts per call x n).
    chunk: Q, the prefill chunk. slot_len: C; 0 = prompt bucket + max_new_tokens.
    """

    engine: str = "continuous"
    slots: int = 0
    chunk: int = 32
    slot_len: int = 0

    def continuous(self) -> bool:
        return self.engine == "continuous" and jax.process_count() == 1


def check(
    opts: Options, *, num_samples: int, static_rows: int, max_prompt_len: int, buckets,
    max_new_tokens: int, max_positions: int, data_ways: int = 1, keys: dict | None = None,
) -> None:  # fmt: skip
    """A job's engine settings against its longest prompt (max_prompt_len), before loading or
    compiling anything: `engine.check_engine_args`' errors."""
    k = {**engine.KEYS, **(keys or {})}
    if opts.engine not in ENGINES:
        raise UserError(f"{k['engine']}={opts.engine!r}: use one of {list(ENGINES)}")
    if opts.slots < 0 or opts.slot_len < 0:
        raise UserError(f"{k['slots']} and {k['slot_len']} must be >= 0 (0 = default), not "
                        f"{opts.slots} and {opts.slot_len}")  # fmt: skip
    if not opts.continuous():
        return
    slot_len = opts.slot_len or sampling.bucket(max_prompt_len, buckets) + max_new_tokens
    engine.check_engine_args(
        num_slots=opts.slots or static_rows, num_samples=num_samples, prefill_chunk=opts.chunk,
        prompt_len=max_prompt_len, max_new_tokens=max_new_tokens, slot_len=slot_len,
        max_positions=max_positions, data_ways=data_ways, keys=keys,
    )  # fmt: skip


def sample(cfg: ModelConfig, params, input_ids, attention_mask_, *, opts: Options,
           static_rows: int, **kwargs) -> sampling.SampleOutput:  # fmt: skip
    """`engine.generate` on opts.slots slots (0 = `static_rows`) or `sampling.generate`, per opts;
    `kwargs` are the two engines' shared arguments."""
    if not opts.continuous():
        return sampling.generate(cfg, params, input_ids, attention_mask_, **kwargs)
    rows = input_ids.shape[0] * kwargs.get("num_samples", 1)
    return engine.generate(
        cfg, params, input_ids, attention_mask_, num_slots=min(opts.slots or static_rows, rows),
        prefill_chunk=opts.chunk, slot_len=opts.slot_len or None, **kwargs,
    )  # fmt: skip
