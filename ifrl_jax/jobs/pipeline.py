"""The self-supervised reward model before GRPO (config.pipeline.enabled): levels -> pairs
sampled from the warm-started policy -> the constraint-wise RM trained from its backbone.

Outputs in the workdir, each reused when complete (a restart skips finished stages):
levels.jsonl, pairs.jsonl + pairs_summary.json (the pseudo-label quality check), rm/ (orbax
RM, DONE marker) + rm_summary.json. The same stages run alone as launch/build_data.py,
launch/build_pairs.py and launch/train_rm.py.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import ml_collections

from ifrl_jax import pairs as pairs_lib
from ifrl_jax import records, reward_model, rollout, sharding
from ifrl_jax.jobs import common
from ifrl_jax.jobs import reward_model as rm_job
from ifrl_jax.models import ModelConfig


def _pairs(config, cfg, params, tokenizer, train_records, mesh, rules, paths) -> dict:
    """Samples the policy on every level of the first pipeline.limit instructions."""
    p = config.pipeline
    groups = pairs_lib.instruction_levels(train_records)[: p.limit or None]
    if jax.process_index() == 0:
        records.write_jsonl([lvl for g in groups for lvl in g[1:]], paths["levels"])
    t0 = time.time()
    prompts = [lvl.prompt for g in groups for lvl in g]
    engine = common.from_section(rollout.Options, config.rollout).engine_options
    responses = pairs_lib.sample_responses(
        cfg, params, tokenizer, prompts, batch_size=p.batch_size,
        max_prompt_len=config.data.max_prompt_len,
        max_new_tokens=p.max_new_tokens or config.rollout.max_new_tokens,
        temperature=p.temperature, num_samples=p.num_samples, seed=config.seed,
        mesh=mesh, rules=rules, engine=engine,
    )  # fmt: skip
    pairs = pairs_lib.pairs_from_policy(groups, responses)
    summary = {**pairs_lib.quality_summary(pairs), "seconds": round(time.time() - t0, 1)}
    if jax.process_index() == 0:
        pairs_lib.write_pairs(pairs, paths["pairs"])
    common.write_json(paths["pairs_summary"], summary)
    sharding.barrier("pipeline: pairs written")  # every process's RM job reads them
    logging.info("pairs: %d from %d prompts; hard positives pass %.3f, negatives %.3f",
                 len(pairs), len(prompts), summary["pos_hard_pass_rate"] or 0,
                 summary["neg_hard_pass_rate"] or 0)  # fmt: skip
    return summary


def stage(
    config, cfg: ModelConfig, params: dict, tokenizer, train_records, mesh, rules, workdir: str
) -> tuple[str, dict]:
    """Runs the stages that are not complete yet.

    Returns:
      (the RM directory, for the GRPO reward; {"pairs": ..., "rm": ...} summaries).
    """
    p = config.pipeline
    rm_dir = os.path.join(workdir, "rm")
    paths = {k: os.path.join(workdir, f"{k}.jsonl") for k in ("levels", "pairs")}
    paths.update(
        {f"{k}_summary": os.path.join(workdir, f"{k}_summary.json") for k in ("pairs", "rm")}
    )
    if not common.is_done(rm_dir):
        if not os.path.exists(paths["pairs_summary"]):  # a restart after the pairs keeps them
            _pairs(config, cfg, params, tokenizer, train_records, mesh, rules, paths)
        rm_config = ml_collections.ConfigDict(p.rm.to_dict())
        rm_config.pairs, rm_config.workdir = paths["pairs"], rm_dir
        rm_config.tokenizer = str(tokenizer.path)
        rm_config.mesh, rm_config.sharding = dict(config.mesh), config.sharding
        init = None
        if p.rm_init == "policy":  # the warm-started policy's backbone and a new 2-class head
            init = reward_model.classifier_from_policy(
                cfg, jax.tree.map(jax.numpy.copy, params), rng=jax.random.key(rm_config.seed),
                pad_token_id=tokenizer.pad_id, mesh=mesh, rules=rules,
            )  # fmt: skip
        summary = rm_job.run(rm_config, init=init)
        logging.info("reward model: held-out accuracy %.3f, verifier agreement %s",
                     summary["heldout_accuracy"], summary["verifier_agreement"])  # fmt: skip
        common.write_json(paths["rm_summary"], summary)
        common.mark_done(rm_dir)
    sharding.barrier("pipeline: summaries written")
    names = {"pairs": paths["pairs_summary"], "rm": paths["rm_summary"]}
    return rm_dir, {k: common.read_json(v) for k, v in names.items() if os.path.exists(v)}
