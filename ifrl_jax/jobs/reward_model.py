"""The reward-model job: pairs -> the constraint-wise binary RM -> held-out metrics.

`run(config)` (configs/rm_tiny.py's fields; launch/train_rm.py) trains with
`reward_model.loss` through `train_step.make_update`, checkpoints with orbax (a restart resumes
from the latest step), evaluates held-out accuracy per id and agreement with the rule verifiers,
and returns the summary. Multi-process: every process builds the same global batch from the same
seed and feeds its own contiguous block of rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import jax
import numpy as np

from ifrl_jax import checkpoint, metrics, records, reward_model, sharding
from ifrl_jax import pairs as pairs_lib
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError, require
from ifrl_jax.jobs import common
from ifrl_jax.models import lora


def batch_order(n: int, *, batch_size: int, num_steps: int, seed: int) -> np.ndarray:
    """[num_steps, batch_size] row indices: consecutive epochs of seeded permutations."""
    rng = np.random.default_rng(seed)
    need = num_steps * batch_size
    if need == 0:  # num_steps=0: evaluate the initial model
        return np.zeros((0, batch_size), np.int64)
    perms = [rng.permutation(n) for _ in range(-(-need // max(n, 1)))]
    return np.concatenate(perms)[:need].reshape(num_steps, batch_size)


# What a resumed run must share with the run that wrote the checkpoint; the rest may change
# (more num_steps, other logging, another mesh or sharding).
RESUME_KEYS = ("pairs", "reference_data", "heldout_pairs", "heldout_fraction", "model",
               "init_from", "tokenizer", "lora", "max_len", "truncation", "chat_template",
               "batch_size", "learning_rate", "schedule", "warmup_steps", "weight_decay",
               "grad_clip", "pairwise", "seed")  # fmt: skip


def resume_settings(config) -> dict[str, Any]:
    """The RESUME_KEYS of `config` as JSON values (saved in each checkpoint's meta)."""
    raw = {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
           for k in RESUME_KEYS if k in config}  # fmt: skip
    return json.loads(json.dumps(raw))


def pair_rows(rows: list[dict], *, flag: str = "pairwise") -> np.ndarray:
    """[K, 2] (positive, negative) row indices: every pair source (`ifrl_jax.pairs`) writes a
    pair's positive then its negative, for the same constraint; a file that does not is a
    UserError naming `flag` (the pairwise loss needs the pairs)."""
    if len(rows) % 2:
        raise UserError(f"{flag}: {len(rows)} pair rows, an odd count; set {flag}=0 for "
                        "rows that do not come in (positive, negative) pairs")  # fmt: skip
    key = lambda r: (r.get("source"), r.get("constraint_id"), r.get("level"), r.get("sample"))
    for k in range(0, len(rows), 2):
        pos, neg = rows[k], rows[k + 1]
        if (int(pos["label"]), int(neg["label"])) != (1, 0) or key(pos) != key(neg):
            raise UserError(
                f"{flag}: rows {k + 1} and {k + 2} ({pos.get('source')}) are not one pair's "
                f"positive then negative; set {flag}=0 for rows that do not come in pairs"
            )
    return np.arange(len(rows)).reshape(-1, 2)


def make_batch(
    enc: reward_model.EncodedInputs, labels: np.ndarray, idx: np.ndarray, *, buckets, pad_id: int
) -> dict[str, np.ndarray]:
    """A training batch of rows `idx`, padded to the length bucket of its longest row."""
    seqs = [enc.seqs[i] for i in idx]
    length = tokenizer_lib.bucket_length(max(len(s) for s in seqs), buckets)
    ids, mask = reward_model.pad_rows(seqs, length=length, rows=len(idx), pad_id=pad_id)
    weight = np.ones(len(idx), np.float32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels[idx], "weight": weight}


def training_pairs(config) -> tuple[list[dict], list[dict]]:
    """(train, held-out) pairs: config.pairs (pair JSONL), else config.reference_data
    (chosen/rejected records), else the shipped tiny instruction set with its responses; held
    out: config.heldout_pairs, else a split by task group."""
    if config.pairs:
        rows = pairs_lib.load_pairs(config.pairs)
    elif config.reference_data:
        rows = pairs_lib.pairs_from_reference(records.load_records(config.reference_data).records)
    else:
        recs = records.load_records(str(pairs_lib.ASSETS / "train.jsonl")).records
        responses = pairs_lib.load_responses(str(pairs_lib.ASSETS / "train_responses.jsonl"), recs)
        rows = pairs_lib.pairs_from_responses(recs, responses)
    if config.heldout_pairs:
        return rows, pairs_lib.load_pairs(config.heldout_pairs)
    return pairs_lib.split_heldout(rows, fraction=config.heldout_fraction, seed=config.seed)


def _local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's contiguous block of a global batch (all of it with one process)."""
    p, i = jax.process_count(), jax.process_index()
    return {k: np.array_split(v, p)[i] for k, v in batch.items()}


def run(config, *, init: tuple | None = None) -> dict[str, Any]:
    """Trains the reward model as `config` says (configs/rm_tiny.py), checkpoints and
    evaluates it; returns the summary (heldout_accuracy, verifier_agreement, ...).

    Args:
      init: (cfg, params) of the classifier to start from (placed on config.mesh), instead of
        config.init_from / config.model (the pipeline passes the warm-started policy's).
    """
    t0 = time.time()
    tok = tokenizer_lib.load_tokenizer(config.tokenizer or tokenizer_lib.TINY_TOKENIZER_DIR)
    devices = jax.devices()[: config.num_devices or None]  # 0 = all
    mesh = sharding.make_mesh(dict(config.mesh), devices=devices, flag="config.mesh")
    rules = sharding.get_rules(config.sharding)
    ways = sharding.data_ways(mesh)
    require(config.batch_size % ways == 0, "batch_size", config.batch_size,
            f"not a multiple of the {ways} data-parallel devices")  # fmt: skip
    require(config.schedule in ts.SCHEDULES, "schedule", config.schedule,
            f"use one of {sorted(ts.SCHEDULES)}")  # fmt: skip
    require(config.num_steps >= 0, "num_steps", config.num_steps, "must be >= 0")
    train_rows, heldout_rows = training_pairs(config)
    cfg, params = init or reward_model.init_model(
        config.init_from,
        tokenizer=tok,
        preset=config.model,
        seed=config.seed,
        mesh=mesh,
        rules=rules,
    )
    if "lora" in config and config.lora.rank:  # adapters + the new score head train
        cfg = common.with_lora(cfg, config.lora, "lora")
        params = lora.attach(cfg, params, jax.random.key(config.seed), mesh=mesh, rules=rules)
    optim = common.from_section(ts.OptimConfig, config, total_steps=config.num_steps)
    pairwise = float(config.get("pairwise", 0.0))
    require(pairwise >= 0, "pairwise", pairwise, "must be >= 0")
    require(not pairwise or config.batch_size % 2 == 0, "batch_size", config.batch_size,
            "must be even with pairwise > 0 (each batch holds whole pairs)")  # fmt: skip
    step_fn = ts.make_update(
        lambda p, b, d: reward_model.loss(p, b, d, cfg=cfg, pairwise=pairwise), model=cfg,
        optim=optim, mesh=mesh, rules=rules, denominators_fn=reward_model.denominators,
    )  # fmt: skip
    state = ts.init_state(params, optim=optim, shardings=step_fn.state_shardings, model=cfg)
    encode_kw = dict(max_len=config.max_len, truncation=config.truncation,
                     chat_template=config.chat_template)  # fmt: skip
    meta = {
        "model": dataclasses.asdict(cfg),
        "input": {**encode_kw, "template": reward_model.TEMPLATE},
        "tokenizer": str(tok.path),
        "settings": resume_settings(config),
    }
    mngr = config.workdir and reward_model.checkpoint_manager(
        config.workdir, keep=config.keep_checkpoints
    )
    if mngr and mngr.latest_step() is not None:
        saved = reward_model.latest_meta(mngr).get("settings")
        common.check_resume(saved, meta["settings"], config.workdir, what="a reward model")
        state, _ = reward_model.restore_checkpoint(mngr, checkpoint.abstract_like(state))
        logging.info("reward model: resumed from %s at step %d", config.workdir, int(state.step))
    texts = ([p["response"] for p in train_rows], [p["constraint"] for p in train_rows])
    enc = reward_model.encode_inputs(tok, *texts, **encode_kw)
    labels = np.array([int(p["label"]) for p in train_rows], np.int32)
    if pairwise:  # whole pairs per batch, positive then negative (reward_model.loss)
        pairs = pair_rows(train_rows, flag="config.pairwise")
        order = pairs[batch_order(len(pairs), batch_size=config.batch_size // 2,
                                  num_steps=config.num_steps, seed=config.seed)]  # fmt: skip
        order = order.reshape(config.num_steps, config.batch_size)
    else:
        order = batch_order(len(train_rows), batch_size=config.batch_size,
                            num_steps=config.num_steps, seed=config.seed)  # fmt: skip
    buckets = reward_model.length_buckets(config.max_len)
    history = []
    progress = metrics.progress(config.num_steps, "reward model", start=int(state.step))
    for step in range(int(jax.device_get(state.step)), config.num_steps):
        batch = make_batch(enc, labels, order[step], buckets=buckets, pad_id=tok.pad_id)
        state, m = step_fn(state, sharding.host_to_global(_local_rows(batch), mesh))
        progress.update(1)
        last = step + 1 == config.num_steps
        if step % config.log_every == 0 or last:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            history.append((step, m["loss"], m["accuracy"]))
            progress.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}")
        if mngr and (last or (step + 1) % config.checkpoint_every == 0):
            reward_model.save_checkpoint(mngr, state, meta)
    progress.close()
    if mngr:
        mngr.wait_until_finished()
        mngr.close()
    scorer = reward_model.RewardModelScorer(
        cfg,
        state.params,
        tok,
        mesh=mesh,
        rules=rules,
        batch_size=config.eval_batch_size,
        **encode_kw,
    )
    summary = pairs_lib.evaluate_scorer(scorer, heldout_rows)
    if config.export_hf:
        from ifrl_jax import models

        models.save_hf(*lora.merge(cfg, state.params), config.export_hf)
    summary.update(train_pairs=len(train_rows), train_truncated=int(enc.truncated.sum()),
                   steps=config.num_steps, first_loss=history[0][1] if history else None,
                   last_loss=history[-1][1] if history else None,
                   seconds=round(time.time() - t0, 1))  # fmt: skip
    return summary
