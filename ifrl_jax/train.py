"""The GRPO training run: warm start, rollouts, rewards, updates, evaluation, checkpoints.

Per step (one rollout batch):
  records (grain, curriculum schedule) -> chat template + tokens -> sampler (n per prompt)
  -> decode -> rewards.score in a host thread (verifier pool + soft scorer), overlapped with
  the old/reference log-prob passes on the devices -> group advantages -> the mini-batch
  updates (ppo_epochs x minibatches) -> metrics -> periodic held-out eval and checkpoint.
Everything that can break the run on bad input is checked in `validate` before compiling.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ifrl_jax import (
    checkpoint,
    data,
    evaluate,
    grpo,
    metrics,
    records,
    rewards,
    sampling,
    sft,
    sharding,
    verifiers,
)
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax import train_step as ts
from ifrl_jax.models import api as model_api
from ifrl_jax.models import config as model_config
from ifrl_jax.models import hf

ASSETS = os.path.join(os.path.dirname(__file__), "assets", "instructions")


# --------------------------------------------------------------------------------------------
# Config checks (before anything compiles).
# --------------------------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the config key for settings that cannot work."""

    def need(ok: bool, key: str, msg: str):
        if not ok:
            raise ValueError(f"config.{key}={_get(config, key)!r}: {msg}")

    r, g = config.rollout, config.grpo
    need(r.n >= 2, "rollout.n", "GRPO needs at least 2 responses per prompt")
    need(r.prompts_per_batch >= 1, "rollout.prompts_per_batch", "must be >= 1")
    need(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
    local_prompts = r.prompts_per_batch // max(1, jax.process_count())
    need(r.sample_prompts == 0 or local_prompts % r.sample_prompts == 0, "rollout.sample_prompts",
         "must divide the prompts per batch of each process (0 = the whole batch)")  # fmt: skip
    need(r.temperature >= 0, "rollout.temperature", "must be >= 0")
    need(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    need(
        r.prompts_per_batch % g.minibatch_prompts == 0, "grpo.minibatch_prompts",
        f"must divide rollout.prompts_per_batch={r.prompts_per_batch}",
    )  # fmt: skip
    need(g.ppo_epochs >= 1, "grpo.ppo_epochs", "must be >= 1")
    need(
        (g.minibatch_prompts * r.n) % g.micro_batches == 0, "grpo.micro_batches",
        f"must divide the mini-batch rows minibatch_prompts*n={g.minibatch_prompts * r.n}",
    )  # fmt: skip
    need(g.std in grpo.STD_ESTIMATORS, "grpo.std", f"use one of {sorted(grpo.STD_ESTIMATORS)}")
    need(g.kl_estimator in grpo.KL_ESTIMATORS, "grpo.kl_estimator",
         f"use one of {sorted(grpo.KL_ESTIMATORS)}")  # fmt: skip
    need(g.agg in grpo.AGGREGATIONS, "grpo.agg", f"use one of {sorted(grpo.AGGREGATIONS)}")
    need(g.schedule in ts.SCHEDULES, "grpo.schedule", f"use one of {sorted(ts.SCHEDULES)}")
    need(config.data.schedule in data.SCHEDULES, "data.schedule",
         f"use one of {sorted(data.SCHEDULES)}")  # fmt: skip
    need(config.data.overlong in data.OVERLONG, "data.overlong", f"use one of {data.OVERLONG}")
    need(config.reward.think_mode in verifiers.THINK_MODES, "reward.think_mode",
         f"use one of {verifiers.THINK_MODES}")  # fmt: skip
    need(config.reward.soft in ("exclude", "zero", "error"), "reward.soft",
         "use exclude, zero or error (applies when reward.rm_path is empty)")  # fmt: skip
    if config.reward.rm_path:
        need(os.path.isdir(config.reward.rm_path), "reward.rm_path",
             "is not a directory (a launch/train_rm.py workdir)")  # fmt: skip
        need(not config.pipeline.enabled, "reward.rm_path",
             "set either reward.rm_path or pipeline.enabled (which trains its own RM)")  # fmt: skip
    for cid in config.reward.rm_ids:
        need(verifiers.is_hard(cid), "reward.rm_ids", f"{cid!r} is not a hard constraint id")
    need(not config.reward.rm_ids or bool(config.reward.rm_path or config.pipeline.enabled),
         "reward.rm_ids", "needs a reward model: reward.rm_path or pipeline.enabled")  # fmt: skip
    need(
        config.pipeline.rm_init in ("policy", "config"),
        "pipeline.rm_init",
        "use policy (the warm-started policy's backbone) or config (pipeline.rm's own)",
    )
    need(
        not config.pipeline.enabled or config.pipeline.rm_init != "policy" or config.sft.steps,
        "pipeline.rm_init",
        "'policy' starts the RM from the warm start: needs sft.steps > 0",
    )
    need(config.sharding in sharding.RULES, "sharding", f"use one of {sorted(sharding.RULES)}")
    if not config.model.hf_path:
        need(config.model.preset in model_config.PRESETS, "model.preset",
             f"use one of {sorted(model_config.PRESETS)} or set model.hf_path")  # fmt: skip
    elif not os.path.isdir(config.model.hf_path):
        need(False, "model.hf_path", "is not a directory")
    ways = config.mesh.get("data", 1) * config.mesh.get("fsdp", 1)
    if ways > 0:  # -1 resolves with the device count; checked again by the mesh
        need(r.prompts_per_batch % max(1, jax.process_count()) == 0, "rollout.prompts_per_batch",
             f"must be a multiple of the {jax.process_count()} processes")  # fmt: skip
    for key in ("train", "heldout"):
        for path in _split_paths(config.data[key]):
            need(os.path.exists(path), f"data.{key}", f"{path} does not exist")


def _check_rollout_fits_mesh(config, mesh) -> None:
    """Each sampler call's prompts must split over the data-parallel devices (before compiling)."""
    r = config.rollout
    ways = sharding.data_ways(mesh)
    per_call = r.sample_prompts * jax.process_count() if r.sample_prompts else r.prompts_per_batch
    if per_call % ways:
        key = "sample_prompts" if r.sample_prompts else "prompts_per_batch"
        raise ValueError(
            f"config.rollout.{key}={r[key]}: each sampler call's {per_call} prompts do not split "
            f"over the {ways} data-parallel devices (config.mesh data x fsdp); use a multiple"
        )


def _get(config, dotted: str):
    for k in dotted.split("."):
        config = config[k]
    return config


def _split_paths(spec: str) -> list[str]:
    return [p for p in spec.split(",") if p]


# --------------------------------------------------------------------------------------------
# Building blocks.
# --------------------------------------------------------------------------------------------


def build_policy(config, mesh, rules) -> tuple[model_config.ModelConfig, dict]:
    """The initial policy: a local HF directory, or a preset with random weights."""
    m = config.model
    runtime = dict(remat=m.remat, scan_layers=m.scan_layers, attention_impl=m.attention_impl)
    if m.hf_path:
        return hf.load_hf(
            m.hf_path, dtype=m.param_dtype, mesh=mesh, rules=rules, compute_dtype=m.dtype,
            **runtime,
        )  # fmt: skip
    cfg = model_config.get_preset(
        m.preset, param_dtype=m.param_dtype, dtype=m.dtype, **runtime, **dict(m.overrides)
    )
    return cfg, model_api.init_params(cfg, jax.random.key(config.seed), mesh=mesh, rules=rules)


def load_data(config) -> tuple[list[records.Record], list[records.Record]]:
    """(training records, decomposed into levels if configured; held-out records)."""
    train_paths = _split_paths(config.data.train) or [os.path.join(ASSETS, "train.jsonl")]
    heldout_paths = _split_paths(config.data.heldout) or [os.path.join(ASSETS, "heldout.jsonl")]
    train = records.load_records(train_paths, on_error=config.data.on_error).records
    if config.data.levels:
        train = records.decompose_all(train, on_error=config.data.on_error).records
    heldout = records.load_records(heldout_paths, on_error=config.data.on_error).records
    logging.info("data: %d training records, %d held out", len(train), len(heldout))
    return train, heldout


def rollout_batch(
    prompt_ids: np.ndarray, prompt_mask: np.ndarray, tokens: np.ndarray, lengths: np.ndarray,
    n: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Prompt + response rows [R, P + M] for the train step (left-padded prompt, right-padded
    response); response_mask marks the sampled tokens (the EOS included)."""
    m = tokens.shape[1]
    resp = (np.arange(m)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.concatenate([np.repeat(prompt_ids, n, 0), tokens], axis=1).astype(np.int32)
    mask = np.concatenate([np.repeat(prompt_mask, n, 0), resp], axis=1).astype(np.int32)
    response_mask = np.concatenate([np.zeros_like(np.repeat(prompt_mask, n, 0)), resp], axis=1)
    return {"input_ids": ids, "attention_mask": mask, "response_mask": response_mask}


def _train_config(config, cfg) -> ts.TrainConfig:
    g = config.grpo
    return ts.TrainConfig(
        model=cfg, clip_low=g.clip_low, clip_high=g.clip_high, dual_clip=g.dual_clip,
        kl_coef=g.kl_coef, kl_estimator=g.kl_estimator, agg=g.agg, entropy_coef=g.entropy_coef,
        learning_rate=g.learning_rate, schedule=g.schedule, warmup_steps=g.warmup_steps,
        total_steps=config.train.steps * _updates_per_batch(config), b1=g.b1, b2=g.b2,
        weight_decay=g.weight_decay, grad_clip=g.grad_clip, micro_batches=g.micro_batches,
        logprob_chunk_size=g.logprob_chunk_size or None,
        response_len=config.rollout.max_new_tokens,  # the LM head on response positions only
    )  # fmt: skip


def _updates_per_batch(config) -> int:
    return config.grpo.ppo_epochs * (
        config.rollout.prompts_per_batch // config.grpo.minibatch_prompts
    )


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


# --------------------------------------------------------------------------------------------
# Stages.
# --------------------------------------------------------------------------------------------


def warm_start(config, cfg, params, tokenizer, mesh, rules, workdir: str):
    """Supervised stage on shipped (or given) reference responses; exported to workdir/sft.

    Skipped when config.sft.steps == 0; reused (not re-run) when workdir/sft is complete.
    """
    out_dir = os.path.join(workdir, "sft")
    done = os.path.join(out_dir, "DONE")
    if os.path.exists(done):
        logging.info("warm start: reusing %s", out_dir)
        runtime = dict(
            remat=cfg.remat, scan_layers=cfg.scan_layers, attention_impl=cfg.attention_impl
        )
        return hf.load_hf(out_dir, dtype=cfg.param_dtype, mesh=mesh, rules=rules,
                          compute_dtype=cfg.dtype, **runtime)[1]  # fmt: skip
    s = config.sft
    path = s.responses or os.path.join(ASSETS, "train_responses.jsonl")
    by_prompt = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                by_prompt[row["prompt"]] = row["response"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(
                    f"{path}:{i}: bad SFT record ({e}); need prompt and response"
                ) from None
    train = records.load_records([os.path.join(ASSETS, "train.jsonl")] if not config.data.train
                                 else _split_paths(config.data.train)).records  # fmt: skip
    pairs = [(r, by_prompt[r.prompt]) for r in train if r.prompt in by_prompt]
    if not pairs:
        raise ValueError(f"config.sft.responses={path}: no response matches a training prompt")
    examples = sft.encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
                                max_len=s.max_len)  # fmt: skip
    tcfg = ts.TrainConfig(
        model=cfg, learning_rate=s.learning_rate, schedule="cosine", warmup_steps=s.steps // 10,
        total_steps=s.steps, weight_decay=0.0, grad_clip=1.0,
    )  # fmt: skip
    step = sft.make_sft_step(tcfg, mesh, rules)
    state = ts.init_state(_copy(params), cfg=tcfg, shardings=ts.state_shardings(tcfg, mesh, rules))
    it = sft.batches(examples, batch_size=s.batch_size, seed=config.seed, pad_id=tokenizer.pad_id)
    t0, loss = time.time(), None
    for i in range(s.steps):
        state, m = step(state, sharding.host_to_global(next(it), mesh))
        if (i + 1) % max(1, s.steps // 5) == 0 or i + 1 == s.steps:
            loss = float(m["sft/loss"])
            logging.info("sft step %d/%d loss %.4f", i + 1, s.steps, loss)
    logging.info("warm start: %d steps in %.1fs, final loss %.4f", s.steps, time.time() - t0, loss)
    hf.save_hf(cfg, state.params, out_dir)
    if jax.process_index() == 0:
        open(done, "w").close()
    return state.params


def reward_model_stage(config, cfg, params, tokenizer, train_records, mesh, rules, workdir):
    """The self-supervised reward model before GRPO (config.pipeline.enabled).

    levels -> pairs sampled from the (warm-started) policy: its response to L_k is a positive
    and to L_{k-1} a negative for c_k -> the constraint-wise binary RM trained on them. Outputs
    in workdir, each reused when complete (a restart skips finished stages): levels.jsonl,
    pairs.jsonl + pairs_summary.json (the pseudo-label quality check), rm/ (orbax RM, DONE
    marker) + rm_summary.json. The same stages run alone as launch/build_data.py,
    launch/build_pairs.py and launch/train_rm.py.

    Returns:
      (the RM directory, for reward.rm_path; {"pairs": ..., "rm": ...} summaries).
    """
    from ifrl_jax import pairs as pairs_lib
    from ifrl_jax import reward_model

    p = config.pipeline
    rm_dir = os.path.join(workdir, "rm")
    paths = {k: os.path.join(workdir, f"{k}.jsonl") for k in ("levels", "pairs")}
    summaries = {k: os.path.join(workdir, f"{k}_summary.json") for k in ("pairs", "rm")}
    write = jax.process_index() == 0
    if not os.path.exists(os.path.join(rm_dir, "DONE")):
        if not os.path.exists(summaries["pairs"]):  # a restart after the pairs keeps them
            groups = pairs_lib.instruction_levels(train_records)[: p.limit or None]
            if write:
                records.write_jsonl([lvl for g in groups for lvl in g[1:]], paths["levels"])
            t0 = time.time()
            prompts = [lvl.prompt for g in groups for lvl in g]
            responses = pairs_lib.sample_responses(
                cfg, params, tokenizer, prompts, batch_size=p.batch_size,
                max_prompt_len=config.data.max_prompt_len,
                max_new_tokens=p.max_new_tokens or config.rollout.max_new_tokens,
                temperature=p.temperature, num_samples=p.num_samples, seed=config.seed,
                mesh=mesh, rules=rules,
            )  # fmt: skip
            pairs = pairs_lib.pairs_from_policy(groups, responses)
            summary = {**pairs_lib.quality_summary(pairs), "seconds": round(time.time() - t0, 1)}
            if write:
                pairs_lib.write_pairs(pairs, paths["pairs"])
                _write_json(summaries["pairs"], summary)
            logging.info("pairs: %d from %d prompts; hard positives pass %.3f, negatives %.3f",
                         len(pairs), len(prompts), summary["pos_hard_pass_rate"] or 0,
                         summary["neg_hard_pass_rate"] or 0)  # fmt: skip
        rm_config = ml_collections.ConfigDict(p.rm.to_dict())
        rm_config.pairs, rm_config.workdir = paths["pairs"], rm_dir
        rm_config.tokenizer = str(tokenizer.path)
        rm_config.mesh, rm_config.sharding = dict(config.mesh), config.sharding
        if p.rm_init == "policy":  # the warm-started policy's backbone and a new 2-class head
            rm_config.init_from = os.path.join(workdir, "sft")
        summary = reward_model.train(rm_config)
        logging.info("reward model: %s", json.dumps(summary))
        if write:
            _write_json(summaries["rm"], summary)
            open(os.path.join(rm_dir, "DONE"), "w").close()
    return rm_dir, {k: _read_json(v) for k, v in summaries.items() if os.path.exists(v)}


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _soft_scorer(config, rm_path: str, mesh, rules):
    """The reward model in rm_path (a train_rm workdir) as the soft-constraint scorer, or None
    when rm_path is empty."""
    if not rm_path:
        return None
    from ifrl_jax import reward_model

    cfg, params, meta = reward_model.load_reward_model(rm_path, mesh=mesh, rules=rules)
    tok = tokenizer_lib.load_tokenizer(meta.get("tokenizer") or tokenizer_lib.TINY_TOKENIZER_DIR)
    encode = {k: v for k, v in meta.get("input", {}).items() if k != "template"}
    encode.setdefault("max_len", config.reward.rm_max_len)
    return reward_model.RewardModelScorer(
        cfg, params, tok, batch_size=config.reward.rm_batch_size, mesh=mesh, rules=rules, **encode
    )


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict) -> dict:
    """Runs (or resumes) the whole job; returns the summary printed by the launcher."""
    t_start = time.time()
    validate(config)
    workdir = os.path.abspath(config.workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(dict(config.mesh), flag="config.mesh")
    rules = sharding.get_rules(config.sharding)
    _check_rollout_fits_mesh(config, mesh)
    tokenizer = tokenizer_lib.load_tokenizer(config.tokenizer or tokenizer_lib.TINY_TOKENIZER_DIR)
    train_records, heldout = load_data(config)
    cfg, params = build_policy(config, mesh, rules)
    if cfg.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"config.model: vocab_size {cfg.vocab_size} is smaller than the "
                         f"tokenizer's {tokenizer.vocab_size} ids ({tokenizer.path})")  # fmt: skip
    r, g = config.rollout, config.grpo
    eval_kw = dict(
        max_new_tokens=r.max_new_tokens, max_prompt_len=config.data.max_prompt_len,
        batch_size=config.train.eval_batch_size, mesh=mesh, rules=rules,
        cache_dtype=r.cache_dtype, buckets=_buckets(config),
    )  # fmt: skip
    evaluate_now = lambda p: evaluate.hard_pass_rates(
        heldout, evaluate.generate_texts(cfg, p, tokenizer, heldout, **eval_kw),
        think_mode=config.reward.think_mode,
    )  # fmt: skip

    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "ckpt"), keep=config.train.keep_checkpoints
    )
    host: dict = {}
    if config.sft.steps and config.train.eval_init and ckpt.latest_step() is None:
        host["pass_rate_init"] = evaluate_now(params)["constraint_pass_rate"]
    if config.sft.steps:
        params = warm_start(config, cfg, params, tokenizer, mesh, rules, workdir)
    rm_path, stage_summaries = config.reward.rm_path, {}
    if config.pipeline.enabled:
        rm_path, stage_summaries = reward_model_stage(
            config, cfg, params, tokenizer, train_records, mesh, rules, workdir
        )
    ref_params = _copy(params) if g.kl_coef else None

    tcfg = _train_config(config, cfg)
    step_fn = ts.make_train_step(tcfg, mesh, rules)
    logprob_fn = ts.make_logprob_fn(tcfg, mesh, rules)
    state = ts.init_state(params, cfg=tcfg, shardings=step_fn.state_shardings)
    del params
    start = 0
    restored = ckpt.restore_latest(checkpoint.abstract_like(state))
    if restored is not None:
        start, state, host = restored
        logging.info("resuming at step %d", start)
    else:
        before = evaluate_now(state.params)
        host.update(pass_rate_before=before["constraint_pass_rate"],
                    prompt_pass_rate_before=before["prompt_pass_rate"])  # fmt: skip
    it = data.make_iterator(
        train_records, batch_size=r.prompts_per_batch, schedule=config.data.schedule,
        seed=config.seed, state=host.get("data"),
    )  # fmt: skip
    writer = metrics.MetricsWriter(workdir, total_steps=config.train.steps, resume_step=start)
    if start == 0:
        writer.write(0, {f"eval/{k}": v for k, v in evaluate_now_cached(host).items()})
    pool = (verifiers.VerifierPool(config.reward.verifier_processes)
            if config.reward.verifier_processes else None)  # fmt: skip
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reward")
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    soft_scorer = _soft_scorer(config, rm_path, mesh, rules)
    timed = _Timed(soft_scorer) if soft_scorer is not None else None

    def score(recs, texts):
        """(rewards.RewardResult, seconds spent in the soft scorer)."""
        if timed is not None:
            timed.seconds = 0.0
        result = rewards.score(
            recs, texts, think_mode=config.reward.think_mode, scale=config.reward.scale,
            soft_scorer=timed, soft=config.reward.soft, pool=pool,
            timeout_s=config.reward.timeout_s, rm_ids=tuple(config.reward.rm_ids),
        )  # fmt: skip
        return result, timed.seconds if timed is not None else 0.0

    try:
        for step in range(start, config.train.steps):
            batch_records = next(it)
            state, row = _grpo_step(
                config, cfg, state, ref_params, batch_records, tokenizer, mesh, rules, step_fn,
                logprob_fn, jax.random.fold_in(key, step), score, executor,
            )  # fmt: skip
            done = step + 1
            if done % config.train.eval_every == 0 or done == config.train.steps:
                row.update({f"eval/{k}": v for k, v in evaluate_now(state.params).items()})
            writer.write(done, row)
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                host["data"] = it.get_state()
                host["rng"] = np.asarray(jax.random.key_data(key)).tolist()
                ckpt.save(done, state, host)
                if config.debug.crash_during_save == done:
                    os._exit(17)  # simulates a kill while the async save is in flight
    finally:
        executor.shutdown(wait=False)
        if pool is not None:
            pool.close()
    ckpt.close()
    writer.close()
    final = metrics.read_jsonl(writer.path)[-1] if writer.enabled else {}
    plot = metrics.plot(workdir)
    if config.train.export_hf:
        export = os.path.join(workdir, "hf_final")
        hf.save_hf(cfg, state.params, export)
        if jax.process_index() == 0:
            for name in os.listdir(tokenizer.path):
                shutil.copy(os.path.join(tokenizer.path, name), export)
    return {
        "pass_rate_init": host.get("pass_rate_init"),
        "pass_rate_before": host.get("pass_rate_before"),
        "pass_rate_after": final.get("eval/constraint_pass_rate"),
        "prompt_pass_rate_before": host.get("prompt_pass_rate_before"),
        "prompt_pass_rate_after": final.get("eval/prompt_pass_rate"),
        "steps": config.train.steps,
        "seconds": round(time.time() - t_start, 1),
        "workdir": workdir,
        "plot": plot,
        **_stage_figures(stage_summaries),
    }


def _stage_figures(summaries: dict) -> dict:
    """The pipeline's headline figures for the final JSON line."""
    pairs, rm = summaries.get("pairs", {}), summaries.get("rm", {})
    keys = {"pairs": ("pairs", "pos_hard_pass_rate", "neg_hard_pass_rate"),
            "rm": ("heldout_accuracy", "verifier_agreement")}  # fmt: skip
    out = {k: pairs[k] for k in keys["pairs"] if k in pairs}
    out.update({f"rm_{k}": rm[k] for k in keys["rm"] if k in rm})
    return out


def evaluate_now_cached(host: dict) -> dict:
    """The pre-GRPO eval figures kept in the checkpoint's host state."""
    keys = {
        "pass_rate_before": "constraint_pass_rate",
        "prompt_pass_rate_before": "prompt_pass_rate",
    }
    return {v: host[k] for k, v in keys.items() if k in host}


def _grpo_step(
    config, cfg, state, ref_params, batch_records, tokenizer, mesh, rules, step_fn, logprob_fn,
    rng, score: Callable, executor,
):  # fmt: skip
    """One rollout batch: sample, reward (overlapped with log-prob passes), updates."""
    r, g = config.rollout, config.grpo
    n = r.n
    t0 = time.time()
    enc = data.encode_prompts(
        tokenizer, batch_records, max_prompt_len=config.data.max_prompt_len,
        overlong=config.data.overlong, buckets=_buckets(config),
    )  # fmt: skip
    recs, ids, mask, weight = _fill(enc, len(batch_records))
    p = sharding.agree_max(ids.shape[1])  # hosts bucket their own prompts: use one length
    ids = np.pad(ids, ((0, 0), (p - ids.shape[1], 0)), constant_values=tokenizer.pad_id)
    mask = np.pad(mask, ((0, 0), (p - mask.shape[1], 0)))
    chunk = r.sample_prompts or ids.shape[0]  # this process's prompts per sampler call
    outs = []
    for lo in range(0, ids.shape[0], chunk):  # bounds the KV cache: [L, chunk * n, P + M, K, H]
        prompts = (ids[lo : lo + chunk], mask[lo : lo + chunk])
        if jax.process_count() > 1:  # global arrays; one process passes its numpy rows directly
            prompts = sharding.host_to_global(prompts, mesh)
        sample = sampling.generate(
            cfg, state.params, *prompts, max_new_tokens=r.max_new_tokens,
            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, num_samples=n,
            eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
            rng=jax.random.fold_in(rng, lo) if lo else rng, cache_dtype=r.cache_dtype,
            mesh=mesh, rules=rules, buckets=_buckets(config),
        )  # fmt: skip
        outs.append(sharding.global_to_host((sample.tokens, sample.lengths, sample.finished), mesh))
    tokens, lengths, finished = (np.concatenate(x) for x in zip(*outs))
    ids = np.pad(
        ids, ((0, 0), (sample.prompt_len - ids.shape[1], 0)), constant_values=tokenizer.pad_id
    )
    mask = np.pad(mask, ((0, 0), (sample.prompt_len - mask.shape[1], 0)))
    t_sample = time.time()
    texts = tokenizer.decode_batch(tokens, lengths)
    recs_rep = [rec for rec in recs for _ in range(n)]
    t_reward0 = time.time()
    future = executor.submit(lambda: (*score(recs_rep, texts), time.time()))

    rows = rollout_batch(ids, mask, tokens, lengths, n)
    num_mb = r.prompts_per_batch // g.minibatch_prompts
    mb_rows = len(recs_rep) // num_mb
    minibatches = []
    for j in range(num_mb):
        sl = slice(j * mb_rows, (j + 1) * mb_rows)
        mb = sharding.host_to_global({k: v[sl] for k, v in rows.items()}, mesh)
        if _updates_per_batch(config) > 1:  # off-policy updates: ratio against the sampler
            mb["old_logp"] = logprob_fn(state.params, mb)
        if g.kl_coef:
            mb["ref_logp"] = logprob_fn(ref_params, mb)
        minibatches.append((sl, mb))
    result, t_score, t_reward1 = future.result()
    t_wait = time.time()

    rewards_np = np.asarray(result.rewards, np.float32)
    adv = np.asarray(grpo.group_advantages(rewards_np, group_size=n, std=g.std, eps=g.eps))
    row_w = np.repeat(weight, n) * np.asarray(result.reward_valid, np.float32)
    if g.filter_zero_variance:
        row_w = row_w * np.asarray(grpo.zero_variance_weights(rewards_np, group_size=n))
    step_metrics = []
    for _ in range(g.ppo_epochs):
        for sl, mb in minibatches:
            extra = sharding.host_to_global(
                {"advantages": adv[sl].astype(np.float32),
                 "response_mask": (rows["response_mask"][sl] * row_w[sl, None]).astype(np.int32)},
                mesh,
            )  # fmt: skip
            state, m = step_fn(state, {**mb, **extra})
            step_metrics.append(m)
    t_update = time.time()

    upd = {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in step_metrics[0]}
    stats = jax.device_get(grpo.reward_stats(jnp.asarray(rewards_np), group_size=n))
    row = {f"train/{k}": v for k, v in upd.items() if k not in ("step", "is_finite")}
    row.update({f"reward/{k.removeprefix('reward_')}": float(v) for k, v in stats.items()})
    row.update({f"rate/{k}": v for k, v in rewards.pass_rates(result, recs_rep).items()})
    if result.rm_agreement is not None:  # RM decision == rule verdict on reward.rm_ids slots
        row["reward/rm_agreement"] = result.rm_agreement
    row.update({
        "response/length_mean": float(np.mean(lengths)),
        "response/finished_frac": float(np.mean(finished)),
        "prompts/truncated": enc.num_truncated, "prompts/dropped": enc.num_dropped,
        "time/sample": t_sample - t0, "time/reward": t_reward1 - t_reward0,
        "time/verify": t_reward1 - t_reward0 - t_score, "time/score": t_score,
        "time/reward_wait": t_wait - max(t_reward0, 0), "time/update": t_update - t_wait,
        "time/step": t_update - t0,
    })  # fmt: skip
    return state, row


class _Timed:
    """Wraps the soft scorer to measure its share of the reward stage (time/score)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args):
        t0 = time.time()
        out = self.fn(*args)
        self.seconds += time.time() - t0
        return out


def _buckets(config) -> tuple[int, ...]:
    """Prompt length buckets (one compiled sampler/train program each)."""
    return tuple(config.data.prompt_buckets) or sampling.DEFAULT_BUCKETS


def _fill(enc: data.EncodedPrompts, size: int):
    """Keeps the batch shape when prompts were dropped: repeats kept rows with weight 0."""
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
