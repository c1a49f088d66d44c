"""The evaluation job: a saved policy on IFEval's 541 prompts and held-out records, files written.

The policy is a HF directory or an orbax GRPO checkpoint (`load_policy`); responses come from the
jitted sampler (`evaluate.generate_texts`) and are scored by `evaluate.evaluate_ifeval` /
`evaluate.evaluate_records`. `run` writes to `output_dir`: responses.jsonl,
eval_results_{strict,loose}.jsonl (IFEval, sample 0), samples.jsonl (n > 1),
records_results.jsonl (records) and summary.json; launch/eval.py prints its summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh

from ifrl_jax import checkpoint as ckpt_lib
from ifrl_jax import evaluate, models, records, sharding, verifiers
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.errors import UserError
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.verifiers import ifeval

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; field names are launch/eval.py's flags (errors name them)."""

    output_dir: str  # where the result files go (created)
    hf_path: str = ""  # a HF Qwen2 directory, or:
    checkpoint: str = ""  # a GRPO workdir (latest ckpt/<step>) or <workdir>/ckpt/<step>
    preset: str = ""  # checkpoint: model preset (default: the workdir's exported config.json)
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ModelConfig fields
    tokenizer: str = ""  # default: next to the model, else the shipped tiny tokenizer
    # ifeval | ifbench | ifeval,ifbench (both in one run: one generation pass, a subdirectory of
    # output_dir and "<benchmark>/"-prefixed summary keys each); which ids --prompts holds
    benchmark: str = "ifeval"
    prompts: str | None = None  # prompts JSONL; None = the benchmark's shipped ones; "" = none
    records: str = ""  # held-out records (JSONL/Parquet, reference schema); "" = none
    limit: int = 0  # only the first `limit` prompts and records (0 = all)
    mesh: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"data": 1, "fsdp": -1, "tp": 1}
    )
    sharding: str = "fsdp"  # rules preset
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # samples per prompt (pass@k); > 1 needs temperature > 0
    max_new_tokens: int = 1024
    max_prompt_len: int = 2048  # longer prompts keep their end
    batch_size: int = 64  # prompts per sampler call
    think_mode: str = "none"  # none | required | optional (`verifiers.strip_think`)
    param_dtype: str = "float32"
    dtype: str = "bfloat16"  # compute dtype
    cache_dtype: str = "bfloat16"
    seed: int = 0  # sampling seed


def parse_overrides(spec: str, *, flag: str = "overrides") -> dict[str, Any]:
    """Parses "vocab_size=2048,remat=full" into ModelConfig fields (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--{flag}={spec!r}: {item!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)  # numbers, true/false
        except ValueError:
            out[key.strip()] = value  # strings such as remat=full
    return out


def check(config: EvalConfig) -> None:
    """Raises UserError naming the flag for settings that cannot work (before any file is read)."""

    def bad(flag: str, message: str):
        raise UserError(f"--{flag}={getattr(config, flag)!r}: {message}")

    if bool(config.hf_path) == bool(config.checkpoint):
        raise UserError("give exactly one of --hf_path and --checkpoint")
    if config.prompts == "" and not config.records:
        raise UserError("nothing to evaluate: set --prompts and/or --records")
    if config.n < 1 or (config.n > 1 and config.temperature <= 0):
        bad("n", "use n >= 1, and n > 1 only with --temperature > 0 (greedy samples are identical)")
    benches = benchmarks(config)
    if (
        not benches
        or any(b not in ifeval.BENCHMARKS for b in benches)
        or len(set(benches)) < len(benches)
    ):
        bad("benchmark", f"use one or more of {ifeval.BENCHMARKS}, comma-separated")
    if len(benches) > 1 and config.prompts:
        bad("prompts", "a prompts file goes with one --benchmark (several use the shipped ones)")
    if config.think_mode not in verifiers.THINK_MODES:
        bad("think_mode", f"use one of {verifiers.THINK_MODES}")
    if config.preset and config.preset not in models.PRESETS:
        bad("preset", f"unknown preset; use one of {sorted(models.PRESETS)}")
    unknown = set(config.overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise UserError(f"--overrides: {sorted(unknown)} are not ModelConfig fields")
    for name in ("param_dtype", "dtype", "cache_dtype"):
        if getattr(config, name) not in DTYPES:
            bad(name, f"use one of {DTYPES}")
    for name in ("max_new_tokens", "max_prompt_len", "batch_size"):
        if getattr(config, name) < 1:
            bad(name, "must be at least 1")
    if config.limit < 0:
        bad("limit", "must be 0 (all) or positive")
    if config.temperature < 0:
        bad("temperature", "must be >= 0 (0 = greedy)")
    if not 0 < config.top_p <= 1:
        bad("top_p", "must be in (0, 1]")
    sharding.get_rules(config.sharding, flag="sharding")


def benchmarks(config: EvalConfig) -> list[str]:
    """The benchmarks to score, in order (`--benchmark=ifeval,ifbench`)."""
    return [b.strip() for b in config.benchmark.split(",") if b.strip()]


def run(config: EvalConfig) -> dict[str, Any]:
    """Generates with the jitted sampler, scores IFEval prompts and/or held-out records, writes
    the result files and prints the report (process 0).

    Args:
      config: the evaluation (see `EvalConfig`).
    Returns:
      The summary (also written to `output_dir/summary.json`): the four IFEval accuracies,
      pass@k, records/... rates, timings.
    """
    t0 = time.time()
    check(config)
    sets = {}  # benchmark -> its prompts
    for bench in benchmarks(config) if config.prompts != "" else ():
        path = config.prompts or ifeval.DEFAULT_PROMPTS[bench]
        sets[bench] = ifeval.read_prompts(path, benchmark=bench)[: config.limit or None]
    recs = records.load_records(config.records).records if config.records else []
    recs = recs[: config.limit or None]
    prompts = [p for ps in sets.values() for p in ps]
    mesh = sharding.make_mesh(config.mesh, flag="mesh")
    rules = sharding.get_rules(config.sharding, flag="sharding")
    cfg, params, source = load_policy(
        hf_path=config.hf_path, checkpoint=config.checkpoint, preset=config.preset,
        overrides=dict(config.overrides), param_dtype=config.param_dtype, dtype=config.dtype,
        mesh=mesh, rules=rules,
    )  # fmt: skip
    tok = tokenizer_lib.load_tokenizer(config.tokenizer or _default_tokenizer(config))
    if cfg.vocab_size < tok.vocab_size:
        raise UserError(f"--tokenizer={tok.path} has {tok.vocab_size} ids, more than the model's "
                        f"vocab_size {cfg.vocab_size}")  # fmt: skip
    n = config.n
    texts = evaluate.generate_texts(
        cfg, params, tok, evaluate.ifeval_records(prompts) + list(recs),
        max_new_tokens=config.max_new_tokens, max_prompt_len=config.max_prompt_len,
        batch_size=config.batch_size, mesh=mesh, rules=rules, temperature=config.temperature,
        top_p=config.top_p, num_samples=n, rng=jax.random.key(config.seed),
        cache_dtype=config.cache_dtype,
    )  # fmt: skip
    t_gen = time.time() - t0
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    summary: dict = {}
    counts = ", ".join(f"{len(ps)} {b} prompts" for b, ps in sets.items())
    parts = [
        f"policy: {source}; {counts or 'no prompts'}, {len(recs)} records, n={n}, "
        f"temperature={config.temperature}, top_p={config.top_p}, "
        f"max_new_tokens={config.max_new_tokens}"
    ]
    start = 0
    for bench, ps in sets.items():
        sub = out if len(sets) == 1 else os.path.join(out, bench)
        s, text = evaluate.evaluate_ifeval(
            ps, texts[start : start + len(ps) * n], n=n, output_dir=sub,
            think_mode=config.think_mode, benchmark=bench,
        )  # fmt: skip
        start += len(ps) * n
        summary.update(s if len(sets) == 1 else {f"{bench}/{k}": v for k, v in s.items()})
        parts.append(text if len(sets) == 1 else f"[{bench}]\n{text}")
    cut = start
    if recs:
        s, text = evaluate.evaluate_records(recs, texts[cut:], n=n, output_dir=out,
                                            think_mode=config.think_mode)  # fmt: skip
        summary.update(s)
        parts.append(text)
    summary.update(
        n=n, temperature=config.temperature, generate_seconds=round(t_gen, 1),
        seconds=round(time.time() - t0, 1), output_dir=os.path.abspath(out),
    )  # fmt: skip
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    if jax.process_index() == 0:
        print("\n".join(parts), flush=True)
    return summary


def _default_tokenizer(config: EvalConfig) -> str:
    candidates = [config.hf_path] if config.hf_path else []
    if config.checkpoint:
        state_dir = ckpt_lib.run_state_dir(config.checkpoint)
        candidates.append(os.path.join(ckpt_lib.run_workdir(state_dir), "hf_final"))
    for path in candidates:
        if os.path.exists(os.path.join(path, "tokenizer.json")):
            return path
    return tokenizer_lib.TINY_TOKENIZER_DIR


def load_policy(
    *, hf_path: str = "", checkpoint: str = "", preset: str = "", overrides: dict | None = None,
    param_dtype: str = "float32", dtype: str = "bfloat16", mesh: Mesh, rules,
) -> tuple[ModelConfig, dict, str]:  # fmt: skip
    """(cfg, params, a description of the source) of the policy to evaluate: exactly one of a
    HF directory (--hf_path) or a GRPO checkpoint (--checkpoint), via `checkpoint.load_policy`."""
    if bool(hf_path) == bool(checkpoint):
        raise UserError("give exactly one of --hf_path and --checkpoint")
    if checkpoint:
        ckpt_lib.run_state_dir(checkpoint)  # a GRPO run, or an error naming --checkpoint
    cfg, params = ckpt_lib.load_policy(
        hf_path=hf_path, checkpoint=checkpoint, preset=preset, overrides=overrides,
        param_dtype=param_dtype, dtype=dtype, mesh=mesh, rules=rules,
    )  # fmt: skip
    source = hf_path or ckpt_lib.run_state_dir(checkpoint)
    return cfg, params, os.path.abspath(source)
