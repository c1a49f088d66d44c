"""The GRPO job: warm start, the RM pipeline, then rollouts, rewards and updates with
periodic held-out evaluation, orbax checkpoints (a restart resumes) and a HF export.

Per step (one rollout batch):
  records (grain, curriculum schedule) -> `rollout.sample` (n per prompt) -> `Scorer.submit`
  (verifiers + RM in a host thread), overlapped with the old/reference log-prob passes on the
  devices (with grpo.oversample > 1: scored first, then `rollout.select_groups` keeps the
  informative groups) -> `rollout.overlong_shaping` + `rollout.advantages` -> ppo_epochs x
  mini-batch updates (`grpo_step.make_step`)
  -> metrics -> periodic held-out eval and checkpoint.
With rollout.overlap (one step off-policy; `grpo_loop.Rollouts`), batch i+1 is sampled in a
thread, from a copy of the params before update i, while update i runs: on the same devices,
interleaved by JAX's async dispatch (rollout.overlap_devices="same"), or on a device group of
its own (rollout.overlap_devices="split": rollout.sampler_mesh on the last devices, config.mesh
on the others; the params are copied across after each step's updates); the loss weighs it by
truncated importance sampling against the sampler's log-probs (grpo.tis_cap > 0 required) and
rollout/staleness logs the updates in between. The step after a checkpoint samples on-policy
(nothing is in flight at a save), so a resumed run equals an uninterrupted one.
Everything that can break the run on bad input is checked in `validate` before compiling.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import (
    checkpoint,
    curriculum,
    data,
    evaluate,
    grpo,
    grpo_step,
    metrics,
    models,
    records,
    reward_model,
    rollout,
    samplers,
    sharding,
    verifiers,
)
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax import train_step as ts
from ifrl_jax.errors import ConfigError, require
from ifrl_jax.jobs import common, grpo_loop, pipeline, warm_start
from ifrl_jax.models import config as model_config
from ifrl_jax.models import hf, lora

ASSETS = warm_start.ASSETS

# Config keys a resumed run may change (a key, or everything under it): more steps, the
# evaluation and checkpoint cadence, the mesh and sharding, how the same computation is split
# (micro-batches, log-prob chunks, sampler engine and slots, verifier processes). Any other
# difference from the checkpoint's run is a UserError (`common.check_resume`).
RESUME_MAY_CHANGE = (
    "workdir", "train.steps", "train.eval_every", "train.eval_batch_size", "train.eval_init",
    "train.checkpoint_every", "train.keep_checkpoints", "train.export_hf", "mesh", "sharding",
    "model.remat", "model.attention_impl", "grpo.micro_batches", "grpo.logprob_chunk_size",
    "rollout.engine", "rollout.engine_chunk", "rollout.engine_slot_len", "rollout.engine_slots",
    "rollout.sample_prompts", "rollout.sampler_mesh", "data.prompt_buckets",
    "reward.verifier_processes", "reward.rm_batch_size", "reward.rm_agreement_floor",
    "pipeline.batch_size", "pipeline.rm.log_every", "pipeline.rm.eval_batch_size",
    "pipeline.rm.mesh", "pipeline.rm.num_devices", "pipeline.rm.sharding",
    "pipeline.rm.checkpoint_every", "pipeline.rm.keep_checkpoints", "pipeline.rm.workdir",
)  # fmt: skip


def validate(config) -> None:
    """Raises ConfigError naming the config key for settings that cannot work."""
    r, g = config.rollout, config.grpo
    need = lambda ok, key, msg: require(ok, key, _get(config, key), msg)
    need(r.n >= 2, "rollout.n", "GRPO needs at least 2 responses per prompt")
    need(r.prompts_per_batch >= 1, "rollout.prompts_per_batch", "must be >= 1")
    need(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
    local_prompts = r.prompts_per_batch // max(1, jax.process_count())
    need(r.sample_prompts == 0 or local_prompts % r.sample_prompts == 0, "rollout.sample_prompts",
         "must divide the prompts per batch of each process (0 = the whole batch)")  # fmt: skip
    need(r.temperature >= 0, "rollout.temperature", "must be >= 0")
    need(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    need(r.prompts_per_batch % g.minibatch_prompts == 0, "grpo.minibatch_prompts",
         f"must divide rollout.prompts_per_batch={r.prompts_per_batch}")  # fmt: skip
    need(g.ppo_epochs >= 1, "grpo.ppo_epochs", "must be >= 1")
    need(g.tis_cap >= 0, "grpo.tis_cap", "must be >= 0 (0 = off)")
    need(r.overlap_devices in ("same", "split"), "rollout.overlap_devices", "use 'same' (the "
         "sampler interleaved with the update on config.mesh's devices) or 'split' (the sampler "
         "on its own devices, rollout.sampler_mesh)")  # fmt: skip
    split = r.overlap_devices == "split"
    need(not split or r.overlap, "rollout.overlap_devices", "'split' runs the sampler beside "
         "the update: set rollout.overlap=True")  # fmt: skip
    require(not split or (bool(r.sampler_mesh) and all(v >= 1 for v in r.sampler_mesh.values())),
            "rollout.sampler_mesh", dict(r.sampler_mesh), "'split' needs the sampler's mesh, "
            "e.g. {'fsdp': 2}: sizes >= 1 (no -1), taken from the last devices")  # fmt: skip
    need(not r.overlap or g.tis_cap > 0, "grpo.tis_cap", "rollout.overlap samples with params "
         "one step stale: set a truncated importance sampling cap > 0 (e.g. 2.0) so that the "
         "loss corrects for the sampler's policy")  # fmt: skip
    need(not r.overlap or jax.process_count() == 1, "rollout.overlap", "is not implemented for "
         "several processes (the sampler thread's cross-process collectives could run in a "
         "different order on each host)")  # fmt: skip
    need(isinstance(g.oversample, int) and g.oversample >= 1, "grpo.oversample",
         "must be an integer >= 1 (1 = off)")  # fmt: skip
    need(g.overlong in rollout.OVERLONG, "grpo.overlong", f"use one of {list(rollout.OVERLONG)}")
    need(g.overlong != "penalty" or 0 < g.overlong_buffer <= r.max_new_tokens,
         "grpo.overlong_buffer", "must be in 1..rollout.max_new_tokens")  # fmt: skip
    lo = config.model.lora
    need(isinstance(lo.rank, int) and lo.rank >= 0, "model.lora.rank", "must be an integer >= 0")
    bad = [t for t in lo.targets if t != "all" and t not in model_config.LORA_TARGETS]
    need(not (lo.rank and bad), "model.lora.targets",
         f"{bad} name no module; use {list(model_config.LORA_TARGETS)} or 'all'")  # fmt: skip
    common.check_backend(config.model, "model")
    need(config.train.eval_ifbench >= -1, "train.eval_ifbench", "use -1 (all), 0 (off) or N")
    rows = g.minibatch_prompts * r.n
    need(rows % g.micro_batches == 0, "grpo.micro_batches",
         f"must divide the mini-batch rows minibatch_prompts*n={rows}")  # fmt: skip
    for key, table in (("grpo.std", grpo.STD_ESTIMATORS), ("grpo.kl_estimator", grpo.KL_ESTIMATORS),
                       ("grpo.agg", grpo.AGGREGATIONS), ("grpo.schedule", ts.SCHEDULES),
                       ("data.schedule", data.SCHEDULES), ("data.overlong", data.OVERLONG),
                       ("reward.think_mode", verifiers.THINK_MODES),
                       ("reward.soft", ("exclude", "zero", "error")),
                       ("sharding", sharding.RULES)):  # fmt: skip
        need(_get(config, key) in table, key, f"use one of {sorted(table)}")
    if config.reward.rm_path:
        need(os.path.isdir(config.reward.rm_path), "reward.rm_path",
             "is not a directory (a launch/train_rm.py workdir)")  # fmt: skip
        need(not config.pipeline.enabled, "reward.rm_path",
             "set either reward.rm_path or pipeline.enabled (which trains its own RM)")  # fmt: skip
    for cid in config.reward.rm_ids:
        need(verifiers.is_hard(cid), "reward.rm_ids", f"{cid!r} is not a hard constraint id")
    need(not config.reward.rm_ids or bool(config.reward.rm_path or config.pipeline.enabled),
         "reward.rm_ids", "needs a reward model: reward.rm_path or pipeline.enabled")  # fmt: skip
    need(0.0 <= config.reward.rm_agreement_floor <= 1.0, "reward.rm_agreement_floor",
         "must be in [0, 1] (0 turns the reward-hacking warning off)")  # fmt: skip
    p = config.pipeline
    need(
        p.rm_init in ("policy", "config"),
        "pipeline.rm_init",
        "use policy (the warm-started policy's backbone) or config (pipeline.rm's own)",
    )
    need(
        not p.enabled or p.rm_init != "policy" or config.sft.steps,
        "pipeline.rm_init",
        "'policy' starts the RM from the warm start: needs sft.steps > 0",
    )
    if not config.model.hf_path:
        need(config.model.preset in model_config.PRESETS, "model.preset",
             f"use one of {sorted(model_config.PRESETS)} or set model.hf_path")  # fmt: skip
    else:
        need(os.path.isdir(config.model.hf_path), "model.hf_path", "is not a directory")
    need(r.prompts_per_batch % max(1, jax.process_count()) == 0, "rollout.prompts_per_batch",
         f"must be a multiple of the {jax.process_count()} processes")  # fmt: skip
    for key in ("train", "heldout"):
        for path in common.split_paths(config.data[key]):
            need(os.path.exists(path), f"data.{key}", f"{path} does not exist")


def meshes(config) -> tuple[Mesh, Mesh]:
    """(training mesh, sampler mesh): the same mesh, or with rollout.overlap_devices="split" the
    last prod(rollout.sampler_mesh) devices for the sampler and the others for config.mesh."""
    r = config.rollout
    devices = jax.devices()
    if not (r.overlap and r.overlap_devices == "split"):
        mesh = sharding.make_mesh(dict(config.mesh), flag="config.mesh")
        return mesh, mesh
    n = math.prod(dict(r.sampler_mesh).values())
    if n >= len(devices):
        raise ConfigError("rollout.sampler_mesh", dict(r.sampler_mesh), f"takes {n} of the "
                          f"{len(devices)} devices: none are left for training")  # fmt: skip
    rest = len(devices) - n
    train = sharding.make_mesh(dict(config.mesh), devices=devices[:rest], flag="config.mesh")
    sampler = sharding.make_mesh(dict(r.sampler_mesh), devices=devices[rest:],
                                 flag="config.rollout.sampler_mesh")  # fmt: skip
    return train, sampler


def _check_rollout_fits_mesh(config, mesh, opts: rollout.Options, max_positions: int) -> None:
    """Each sampler call's prompts must split over the data-parallel devices, and the engine's
    slots must hold the longest prompt and response (before compiling)."""
    r = config.rollout
    ways = sharding.data_ways(mesh)
    per_call = r.sample_prompts * jax.process_count() if r.sample_prompts else r.prompts_per_batch
    if per_call % ways:
        key = "sample_prompts" if r.sample_prompts else "prompts_per_batch"
        raise ConfigError(f"rollout.{key}", r[key], f"each sampler call's {per_call} prompts do "
                          f"not split over the {ways} data-parallel devices (config.mesh data x "
                          "fsdp); use a multiple")  # fmt: skip
    local = r.prompts_per_batch // jax.process_count()
    samplers.check(
        opts.engine_options, num_samples=r.n, static_rows=(r.sample_prompts or local) * r.n,
        max_prompt_len=opts.max_prompt_len, buckets=opts.buckets,
        max_new_tokens=r.max_new_tokens, max_positions=max_positions, data_ways=ways,
    )  # fmt: skip
    p = config.pipeline
    if p.enabled:  # the pairs stage samples with the same engine settings
        keys = {"n": "pipeline.num_samples", "max_new_tokens": "pipeline.max_new_tokens"}
        samplers.check(
            opts.engine_options, num_samples=p.num_samples, max_prompt_len=opts.max_prompt_len,
            static_rows=p.batch_size * p.num_samples, buckets=opts.buckets,
            max_new_tokens=p.max_new_tokens or r.max_new_tokens, max_positions=max_positions,
            data_ways=ways, keys=keys,
        )  # fmt: skip


def _get(config, dotted: str):
    for k in dotted.split("."):
        config = config[k]
    return config


def load_data(config) -> tuple[list[records.Record], list[records.Record]]:
    """(training records, decomposed into levels if configured; held-out records)."""
    paths = {k: common.split_paths(config.data[k]) or [os.path.join(ASSETS, f"{k}.jsonl")]
             for k in ("train", "heldout")}  # fmt: skip
    train = records.load_records(paths["train"], on_error=config.data.on_error).records
    if config.data.levels:
        train = curriculum.decompose_all(train, on_error=config.data.on_error).records
    heldout = records.load_records(paths["heldout"], on_error=config.data.on_error).records
    logging.info("data: %d training records, %d held out", len(train), len(heldout))
    return train, heldout


def _soft_scorer(config, rm_path: str, mesh, rules):
    """The reward model in rm_path (an RM workdir) as the soft-constraint scorer, or None."""
    if not rm_path:
        return None
    cfg, params, meta = reward_model.load_reward_model(rm_path, mesh=mesh, rules=rules)
    tok = tokenizer_lib.load_tokenizer(meta.get("tokenizer") or tokenizer_lib.TINY_TOKENIZER_DIR)
    encode = {k: v for k, v in meta.get("input", {}).items() if k != "template"}
    encode.setdefault("max_len", config.reward.rm_max_len)
    return reward_model.RewardModelScorer(
        cfg, params, tok, batch_size=config.reward.rm_batch_size, mesh=mesh, rules=rules, **encode
    )


def run(config, *, on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """Runs (or resumes) the whole job; returns the summary printed by the launcher.

    Each step takes its batch from `grpo_loop.Rollouts` (sampled now with the current params,
    or, with rollout.overlap, the one prefetched during the previous update) and starts the
    next one's sampling before `grpo_loop.update` runs.

    Args:
      on_checkpoint: called with the step right after each checkpoint save is started (the
        save is asynchronous); tests use it to kill the process mid-save.
    """
    t_start = time.time()
    validate(config)
    workdir = os.path.abspath(config.workdir)
    os.makedirs(workdir, exist_ok=True)
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "ckpt"), keep=config.train.keep_checkpoints
    )
    settings = common.flat_settings(config, may_change=RESUME_MAY_CHANGE)
    saved = ckpt.latest_host()
    common.check_resume(saved and saved.get("settings"), settings, config.workdir,
                        what="a GRPO run")  # fmt: skip
    mesh, sampler_mesh = meshes(config)
    rules = sharding.get_rules(config.sharding)
    tokenizer = tokenizer_lib.load_tokenizer(config.tokenizer or tokenizer_lib.TINY_TOKENIZER_DIR)
    train_records, heldout = load_data(config)
    m = config.model
    cfg, params = checkpoint.load_policy(
        hf_path=m.hf_path, preset=m.preset, overrides=dict(m.overrides), seed=config.seed,
        param_dtype=m.param_dtype, dtype=m.dtype, mesh=mesh, rules=rules,
        runtime=dict(remat=m.remat, scan_layers=m.scan_layers, attention_impl=m.attention_impl),
    )  # fmt: skip
    lora_cfg = common.with_lora(cfg, m.lora, "model.lora")  # checked before any compiling
    if cfg.vocab_size < tokenizer.vocab_size:
        raise ConfigError("model", m.preset, f"vocab_size {cfg.vocab_size} is smaller than the "
                          f"tokenizer's {tokenizer.vocab_size} ids ({tokenizer.path})")  # fmt: skip
    opts = common.from_section(rollout.Options, {**config.rollout, **config.data})
    _check_rollout_fits_mesh(config, sampler_mesh, opts, cfg.max_position_embeddings)
    if opts.engine == "continuous" and not opts.engine_options.continuous():
        logging.info("rollout.engine=continuous runs in one process: %d processes sample with "
                     "the static sampler", jax.process_count())  # fmt: skip
    eval_kw = dict(
        max_new_tokens=opts.max_new_tokens, max_prompt_len=opts.max_prompt_len,
        batch_size=config.train.eval_batch_size, mesh=mesh, rules=rules,
        cache_dtype=opts.cache_dtype, buckets=opts.buckets,
    )  # fmt: skip
    ifbench = _ifbench_records(config.train.eval_ifbench)

    def evaluate_now(p) -> dict:
        """Held-out pass rates; with train.eval_ifbench, IFBench's too (out of domain)."""
        texts = evaluate.generate_texts(cfg, p, tokenizer, heldout + ifbench, **eval_kw)
        think = config.reward.think_mode
        out = evaluate.hard_pass_rates(heldout, texts[: len(heldout)], think_mode=think)
        # Soft ids with a hidden oracle (the tiny set's): measured, never rewarded.
        out.update(evaluate.soft_pass_rates(heldout, texts[: len(heldout)], think_mode=think))
        if ifbench:
            rates = evaluate.hard_pass_rates(ifbench, texts[len(heldout) :], think_mode=think)
            out.update({f"ifbench/{k}": rates[k] for k in _RATES})
        return out

    host: dict = {"settings": settings}
    if config.sft.steps and config.train.eval_init and ckpt.latest_step() is None:
        host["pass_rate_init"] = evaluate_now(params)["constraint_pass_rate"]
    if config.sft.steps:
        params = warm_start.stage(config, cfg, params, tokenizer, mesh, rules, workdir)
    rm_path, stage_summaries = config.reward.rm_path, {}
    if config.pipeline.enabled:
        rm_path, stage_summaries = pipeline.stage(
            config, cfg, params, tokenizer, train_records, mesh, rules, workdir
        )
    g = config.grpo
    if lora_cfg.lora_rank:  # adapters on the warm-started policy; the reference: the base
        cfg = lora_cfg
        params = lora.attach(cfg, params, jax.random.fold_in(jax.random.key(config.seed), 2),
                             mesh=mesh, rules=rules)  # fmt: skip
        common.write_json(os.path.join(workdir, lora.SETTINGS_FILE), lora.settings(cfg))
        reference = lambda st: lora.disable(st.params)
    else:
        ref_params = jax.tree.map(jax.numpy.copy, params) if g.kl_coef else None
        reference = lambda st: ref_params
    step_cfg = grpo_step.StepConfig(
        model=cfg, loss=common.from_section(grpo_step.LossConfig, g),
        micro_batches=g.micro_batches, logprob_chunk_size=g.logprob_chunk_size or None,
        response_len=opts.max_new_tokens,  # the LM head on response positions only
        temperature=opts.temperature or 1.0,  # log-probs of the distribution sampled from
    )  # fmt: skip
    total = config.train.steps * grpo_loop.updates_per_batch(config)
    # grpo.eps is the advantages' epsilon, not Adam's.
    optim = common.from_section(ts.OptimConfig, g, skip=("eps",), total_steps=total)
    step_fn = grpo_step.make_step(step_cfg, optim, mesh, rules)
    logprob_fn = grpo_step.make_logprob_fn(step_cfg, mesh, rules)
    state = ts.init_state(params, optim=optim, shardings=step_fn.state_shardings, model=cfg)
    del params
    start = 0
    restored = ckpt.restore_latest(checkpoint.abstract_like(state))
    if restored is not None:
        start, state, host = restored
        host["settings"] = settings  # a checkpoint from before settings were saved gains them
        logging.info("resuming at step %d", start)
    else:
        before = evaluate_now(state.params)
        host.update(pass_rate_before=before["constraint_pass_rate"],
                    prompt_pass_rate_before=before["prompt_pass_rate"])  # fmt: skip
        if ifbench:
            host["ifbench_pass_rate_before"] = before["ifbench/constraint_pass_rate"]
        if "soft_pass_rate" in before:
            host["soft_pass_rate_before"] = before["soft_pass_rate"]
    it = data.make_iterator(
        train_records, batch_size=config.rollout.prompts_per_batch,
        schedule=config.data.schedule, seed=config.seed, state=host.get("data"),
    )  # fmt: skip
    writer = metrics.MetricsWriter(workdir, total_steps=config.train.steps, resume_step=start)
    if start == 0:
        writer.write(0, {f"eval/{k}": v for k, v in _before(host).items()})
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    reward_opts = common.from_section(rollout.RewardOptions, config.reward)
    soft_scorer = _soft_scorer(config, rm_path, mesh, rules)
    sample = lambda p, batch, step: rollout.sample(
        cfg, p, tokenizer, batch, opts=opts, rng=jax.random.fold_in(key, step),
        mesh=sampler_mesh, rules=rules,
    )  # fmt: skip
    to_sampler = None  # "split": the params are copied to the sampler's devices
    if sampler_mesh is not mesh:
        shardings = models.param_shardings(cfg, sampler_mesh, rules)
        to_sampler = lambda p: jax.device_put(p, shardings)
    batches = grpo_loop.Rollouts(
        sample, lambda: [rec for _ in range(g.oversample) for rec in next(it)],
        overlap=config.rollout.overlap, steps=config.train.steps,
        sync_every=config.train.checkpoint_every, staleness=grpo_loop.updates_per_batch(config),
        to_sampler=to_sampler,
    )  # fmt: skip
    guard = rollout.AgreementGuard(config.reward.rm_agreement_floor)
    with rollout.Scorer(reward_opts, soft_scorer) as scorer, batches:
        for step in range(start, config.train.steps):
            sampled, timing = batches.take(step, state.params)
            batches.prefetch(step + 1, state.params)  # overlap: sampled while this update runs
            state, row = grpo_loop.update(
                config, state, reference, sampled, scorer, step_fn, logprob_fn, mesh,
                sample_wait=timing["time/sample_wait"],
            )  # fmt: skip
            row.update(timing)
            done = step + 1
            guard.check(done, row)
            if done % config.train.eval_every == 0 or done == config.train.steps:
                row.update({f"eval/{k}": v for k, v in evaluate_now(state.params).items()})
            writer.write(done, row)
            if done % config.train.checkpoint_every == 0 or done == config.train.steps:
                host["data"] = it.get_state()
                host["rng"] = np.asarray(jax.random.key_data(key)).tolist()
                ckpt.save(done, state, host)
                if on_checkpoint is not None:
                    on_checkpoint(done)
    ckpt.close()
    writer.close()
    final = metrics.read_jsonl(writer.path)[-1] if writer.enabled else {}
    plot = metrics.plot(workdir)
    if config.train.export_hf:
        export = os.path.join(workdir, "hf_final")
        hf.save_hf(*lora.merge(cfg, state.params), export)  # adapters folded in (if any)
        if cfg.lora_rank:
            lora.save_peft(cfg, state.params, os.path.join(workdir, "lora_adapter"),
                           base_model=m.hf_path)  # fmt: skip
        if jax.process_index() == 0:
            for name in os.listdir(tokenizer.path):
                shutil.copy(os.path.join(tokenizer.path, name), export)
    return {
        "pass_rate_init": host.get("pass_rate_init"),
        "pass_rate_before": host.get("pass_rate_before"),
        "pass_rate_after": final.get("eval/constraint_pass_rate"),
        "prompt_pass_rate_before": host.get("prompt_pass_rate_before"),
        "prompt_pass_rate_after": final.get("eval/prompt_pass_rate"),
        **(
            {
                "ifbench_pass_rate_before": host.get("ifbench_pass_rate_before"),
                "ifbench_pass_rate_after": final.get("eval/ifbench/constraint_pass_rate"),
            }
            if ifbench
            else {}
        ),  # fmt: skip
        **(
            {
                "soft_pass_rate_before": host["soft_pass_rate_before"],
                "soft_pass_rate_after": final.get("eval/soft_pass_rate"),
            }
            if "soft_pass_rate_before" in host
            else {}
        ),  # fmt: skip
        "steps": config.train.steps,
        "seconds": round(time.time() - t_start, 1),
        "workdir": workdir,
        "plot": plot,
        **_stage_figures(stage_summaries),
    }


def _stage_figures(summaries: dict) -> dict:
    """The pipeline's headline figures for the final JSON line."""
    pairs, rm = summaries.get("pairs", {}), summaries.get("rm", {})
    out = {k: pairs[k] for k in ("pairs", "pos_hard_pass_rate", "neg_hard_pass_rate") if k in pairs}
    out.update({f"rm_{k}": rm[k] for k in ("heldout_accuracy", "verifier_agreement") if k in rm})
    if rm.get("oracle_agreement") is not None:  # the RM against the soft ids' hidden oracle
        out["rm_soft_agreement"] = rm["oracle_agreement"]
    return out


_RATES = ("constraint_pass_rate", "prompt_pass_rate", "verifier_timeouts")


def _ifbench_records(n: int) -> list[records.Record]:
    """The first n of IFBench's 294 shipped test prompts (-1: all; 0: none) as records."""
    if not n:
        return []
    from ifrl_jax.verifiers import ifeval

    path = ifeval.DEFAULT_PROMPTS["ifbench"]
    return evaluate.ifeval_records(ifeval.read_prompts(path, benchmark="ifbench"))[
        : max(n, 0) or None
    ]


def _before(host: dict) -> dict:
    """The pre-GRPO eval figures kept in the checkpoint's host state."""
    keys = {"pass_rate_before": "constraint_pass_rate",
            "prompt_pass_rate_before": "prompt_pass_rate",
            "ifbench_pass_rate_before": "ifbench/constraint_pass_rate",
            "soft_pass_rate_before": "soft_pass_rate"}  # fmt: skip
    return {v: host[k] for k, v in keys.items() if k in host}
