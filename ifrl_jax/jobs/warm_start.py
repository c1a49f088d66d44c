"""The warm-start job: supervised fine-tuning on reference responses, exported as a HF dir.

`stage(...)` trains (config.sft) from the given params with `sft.loss` through
`train_step.make_update` and writes `workdir/sft` (HF layout, a DONE marker); when that
directory is complete it is loaded instead (a restart skips the stage).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax

from ifrl_jax import checkpoint, metrics, records, sft, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import common
from ifrl_jax.models import ModelConfig, hf

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "instructions")


def load_examples(config, tokenizer) -> list:
    """(token ids, prompt length) of every training record with a reference response."""
    path = config.sft.responses or os.path.join(ASSETS, "train_responses.jsonl")
    by_prompt = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                by_prompt[row["prompt"]] = row["response"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(
                    f"{path}:{i}: bad SFT record ({e}); need prompt and response"
                ) from None
    train_paths = common.split_paths(config.data.train) or [os.path.join(ASSETS, "train.jsonl")]
    train = records.load_records(train_paths).records
    pairs = [(r, by_prompt[r.prompt]) for r in train if r.prompt in by_prompt]
    if not pairs:
        raise UserError(f"config.sft.responses={path!r}: no response matches a training prompt")
    return sft.encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
                            max_len=config.sft.max_len)  # fmt: skip


def stage(config, cfg: ModelConfig, params: dict, tokenizer, mesh, rules, workdir: str) -> dict:
    """The warm-started params (trained now, or loaded from a complete workdir/sft)."""
    out_dir = os.path.join(workdir, "sft")
    if common.is_done(out_dir):
        logging.info("warm start: reusing %s", out_dir)
        runtime = dict(remat=cfg.remat, scan_layers=cfg.scan_layers,
                       attention_impl=cfg.attention_impl)  # fmt: skip
        return checkpoint.load_policy(
            hf_path=out_dir, param_dtype=cfg.param_dtype, dtype=cfg.dtype, runtime=runtime,
            mesh=mesh, rules=rules,
        )[1]  # fmt: skip
    s = config.sft
    examples = load_examples(config, tokenizer)
    optim = ts.OptimConfig(
        learning_rate=s.learning_rate, schedule="cosine", warmup_steps=s.steps // 10,
        total_steps=s.steps, weight_decay=0.0,
    )  # fmt: skip
    step_fn = ts.make_update(
        lambda p, b, d: sft.loss(p, b, d, model=cfg), model=cfg, optim=optim, mesh=mesh,
        rules=rules, denominators_fn=sft.denominators,
    )  # fmt: skip
    state = ts.init_state(jax.tree.map(jax.numpy.copy, params), optim=optim,
                          shardings=step_fn.state_shardings)  # fmt: skip
    it = sft.batches(examples, batch_size=s.batch_size, seed=config.seed, pad_id=tokenizer.pad_id)
    t0, loss = time.time(), None
    progress = metrics.progress(s.steps, "warm start")
    for i in range(s.steps):
        state, m = step_fn(state, sharding.host_to_global(next(it), mesh))
        progress.update(1)
        if (i + 1) % max(1, s.steps // 5) == 0 or i + 1 == s.steps:
            loss = float(m["loss"])
            progress.set_postfix(loss=f"{loss:.4f}")
    progress.close()
    logging.info("warm start: %d steps in %.1fs, final loss %.4f", s.steps, time.time() - t0, loss)
    hf.save_hf(cfg, state.params, out_dir)
    common.mark_done(out_dir)
    return state.params
