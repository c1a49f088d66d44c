"""The pairs job: records -> pseudo-label pairs (policy samples, reference or shipped data).

`run(config)` (launch/build_pairs.py's flags) loads the records, builds pairs with
`BUILDERS[config.format]`, writes them as JSONL and returns the quality summary
(pos_hard_pass_rate / neg_hard_pass_rate by the rule verifiers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ifrl_jax import checkpoint, records, samplers, sampling, sharding
from ifrl_jax import pairs as pairs_lib
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.errors import UserError, require
from ifrl_jax.records import Record

# The engine's settings by launch/build_pairs.py's flag names, in errors.
FLAGS = {k: f"--{f}" for k, f in (("engine", "engine"), ("slots", "engine_slots"),
         ("chunk", "engine_chunk"), ("n", "num_samples"),
         ("max_new_tokens", "max_new_tokens"), ("max_prompt_len", "max_prompt_len"))}  # fmt: skip
FLAGS["slot_len"] = "the --max_prompt_len bucket + --max_new_tokens"


def _from_policy(recs: Sequence[Record], config) -> list[dict]:
    tok = tokenizer_lib.load_tokenizer(config.tokenizer or tokenizer_lib.TINY_TOKENIZER_DIR)
    mesh = rules = None
    if not config.mesh and jax.process_count() > 1:
        raise UserError(f"--mesh: {jax.process_count()} processes sample on one mesh over all "
                        "their devices; give it, e.g. --mesh=data:1,fsdp:-1,tp:1")  # fmt: skip
    if config.mesh:
        mesh = sharding.make_mesh(dict(config.mesh), flag="--mesh")
        rules = sharding.get_rules(config.sharding)
    cfg, params = checkpoint.load_policy(
        hf_path=config.policy, checkpoint=config.policy_checkpoint, preset=config.preset,
        vocab_size=tok.vocab_size, seed=config.seed, mesh=mesh, rules=rules,
    )  # fmt: skip
    engine = samplers.Options(config.get("engine", "continuous"), config.get("engine_slots", 0),
                              config.get("engine_chunk", 32))  # fmt: skip
    samplers.check(
        engine, num_samples=config.num_samples, static_rows=config.batch_size * config.num_samples,
        max_prompt_len=config.max_prompt_len, buckets=sampling.DEFAULT_BUCKETS,
        max_new_tokens=config.max_new_tokens, max_positions=cfg.max_position_embeddings,
        data_ways=sharding.data_ways(mesh) if mesh else 1, keys=FLAGS,
    )  # fmt: skip
    groups = pairs_lib.instruction_levels(recs)
    prompts = [lvl.prompt for g in groups for lvl in g]
    logging.info("pairs: sampling %d prompts (%d instructions)", len(prompts), len(groups))
    responses = pairs_lib.sample_responses(
        cfg, params, tok, prompts, batch_size=config.batch_size,
        max_prompt_len=config.max_prompt_len, max_new_tokens=config.max_new_tokens,
        temperature=config.temperature, top_p=config.top_p, num_samples=config.num_samples,
        seed=config.seed, mesh=mesh, rules=rules, engine=engine,
    )  # fmt: skip
    return pairs_lib.pairs_from_policy(groups, responses)


BUILDERS: dict[str, Callable[[Sequence[Record], Any], list[dict]]] = {
    "policy": _from_policy,
    "reference": lambda recs, config: pairs_lib.pairs_from_reference(recs),
    "responses": lambda recs, config: pairs_lib.pairs_from_responses(
        recs, pairs_lib.load_responses(config.responses, recs)
    ),
}


def run(config) -> dict[str, Any]:
    """Loads records, builds pairs with BUILDERS[config.format], writes them, returns the summary.

    Config: input (record files; levels files are accepted by "policy"), output (pair JSONL),
    format, limit (first N records, 0 = all), and the builder's options (policy,
    policy_checkpoint, preset, tokenizer, seed, batch_size, max_prompt_len, max_new_tokens,
    temperature, top_p, num_samples, mesh, sharding; responses).
    """
    require(config.format in BUILDERS, "format", config.format, f"use one of {sorted(BUILDERS)}")
    if config.format == "responses":
        require(bool(config.responses), "responses", config.responses,
                "--format=responses needs a {prompt, response} JSONL")  # fmt: skip
    recs = records.load_records(config.input).records
    recs = recs[: config.limit] if config.limit else recs
    pairs = BUILDERS[config.format](recs, config)
    n = pairs_lib.write_pairs(pairs, config.output) if jax.process_index() == 0 else len(pairs)
    return {"format": config.format, "records": len(recs), "output": config.output,
            "written": n, **pairs_lib.quality_summary(pairs)}  # fmt: skip
