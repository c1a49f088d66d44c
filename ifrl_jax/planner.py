"""Scale-study planner: per-device memory and FLOPs of GRPO on a mesh, from the real programs.

For a model preset, a mesh shape and a sharding preset, everything is derived from the programs
the training run executes, lowered and compiled ahead of time on fake CPU devices
(`jobs.plan` makes as many as the meshes need) with abstract (ShapeDtypeStruct) inputs:

* params, Adam moments, the reference policy: the real shardings (`train_step.state_shardings`),
  `shard_shape(global shape) x itemsize` summed per leaf. Exact.
* gradients: float32 and sharded like the params (what `loss_and_grads` returns and the
  partitioner keeps under these shardings). An estimate; they live inside the train step's
  temporaries, so they are shown but not added again.
* train-step temporaries (gradients, activations, gathered weights, log-prob chunks): XLA's
  buffer assignment of the compiled `grpo_step.make_step(...).jitted` program, i.e.
  `compiled.memory_analysis().temp_size_in_bytes`, which is per device (the SPMD-partitioned
  program). Measured, for the XLA CPU backend; GPU/TPU backends fuse and schedule differently.
* KV cache: the sampler's cache layout ([L, R, S, K, H], `sampling._CACHE_AXES`) under the
  rules, from shard shapes. Exact. The sampler itself is compiled too (its temporaries hold the
  cache, the prefill and the decode state).
* Attention: compiled on CPU, the program runs XLA attention, which materialises the [N, T, S]
  scores (as it does on TPU); on GPU `attention_impl="auto"` runs cuDNN flash attention, which
  does not. The headline numbers (`total_bytes_per_device`, `fits`) are the measured XLA-attention
  ones, an upper bound for GPUs. With `attention="flash"` a second, labelled estimate is added:
  train-step temporaries extrapolated linearly to T from compiles at T/8 and T/4 (where the
  scores are small), sampler temporaries from a compile with a 32-token prompt bucket and the
  same cache length, and `fits_flash_estimate` from those.
* FLOPs: XLA's `cost_analysis()` counts a while/scan body once (layers, micro-batches and
  log-prob chunks are loops here), so FLOPs are counted on the jaxpr of the real programs
  instead: every `dot_general`, multiplied by its enclosing scan lengths (matmul FLOPs only;
  remat recomputation included because it is in the program). The sampler's decode loop is
  counted at its worst case, max_new_tokens - 1 steps. 6 N tokens is shown for comparison.

The instruments (bytes from shardings, FLOPs from jaxprs, XLA's buffer assignment) live in
`footprint`; `jobs.plan` prints the tables (launch/plan.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifrl_jax import engine, footprint, grpo_step, models, samplers, sampling, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError
from ifrl_jax.models import lora

_SHORT = (8, 4)  # the flash estimate compiles the train step at T/8 and T/4


def parse_meshes(spec: str, *, flag: str = "meshes") -> list[dict[str, int]]:
    """Parses "fsdp:8;fsdp:16;fsdp:4,tp:2" (meshes separated by ';', each `sharding.parse_mesh`)."""
    meshes = [sharding.parse_mesh(m, flag=flag) for m in spec.split(";") if m.strip()]
    if not meshes:
        raise UserError(f"--{flag} is empty; e.g. --{flag}='fsdp:8;fsdp:16;fsdp:4,tp:2'")
    return meshes


def mesh_name(shape: dict[str, int]) -> str:
    """{"fsdp": 4, "tp": 2} -> "fsdp:4,tp:2" (the mesh flag syntax; size-1 axes left out)."""
    return ",".join(f"{a}:{shape[a]}" for a in sharding.MESH_AXES if shape.get(a, 1) != 1) or "1"


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What to plan; defaults are the upstream GRPO setup (../shared/DESIGN.md, point 6)."""

    model: str = "qwen2_5_7b"
    mesh: tuple[tuple[str, int], ...] = (("fsdp", 8),)
    sharding: str = "fsdp"
    accelerator: str = "a100-80gb"
    prompt_len: int = 2048  # prompt bucket P
    response_len: int = 8192  # max_new_tokens M; train rows are T = P + M tokens
    n: int = 5  # rollouts per prompt
    prompts_per_batch: int = 384  # rollout batch
    minibatch_prompts: int = 96  # prompts per optimizer update
    ppo_epochs: int = 1
    micro_batch_rows: int = 1  # rows per data-parallel shard per micro-batch
    sample_prompts: int = 0  # prompts per sampler call; 0 = the whole rollout batch (train.py)
    engine: str = "continuous"  # the sampler (samplers.py): continuous engine or static
    engine_slots: int = 0  # the engine's slots; 0 = sample_prompts x n
    remat: str = "full"
    param_dtype: str = "float32"  # bfloat16: 16-bit params with a float32 master copy
    dtype: str = "bfloat16"
    cache_dtype: str = "bfloat16"
    lora_rank: int = 0  # > 0: LoRA adapters train, the base is frozen and is the KL reference
    lora_targets: str = "all"  # comma-separated projections (models.config.LORA_TARGETS), or all
    kl_coef: float = 0.01  # > 0: a reference copy of the params lives on the devices
    attention: str = "xla"  # "xla": measured only | "flash": also the flash-attention estimate
    headroom: float = 0.9  # usable fraction of device memory (allocator, fragmentation, runtime)
    compile: bool = True  # False: lower only; temporaries are then not measured

    def __post_init__(self):  # every field is a flag of launch/plan.py: errors name it
        def bad(flag: str, message: str):
            raise UserError(f"--{flag}={getattr(self, flag)!r}: {message}")

        if self.model not in models.PRESETS:
            bad("model", f"unknown preset; use one of {sorted(models.PRESETS)}")
        footprint.check_accelerator(self.accelerator, self.headroom)
        if self.attention not in ("xla", "flash"):
            bad("attention", "use xla or flash")
        for name in ("prompt_len", "response_len", "n", "prompts_per_batch", "minibatch_prompts",
                     "ppo_epochs", "micro_batch_rows"):  # fmt: skip
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.sample_prompts < 0:
            bad("sample_prompts", "must be 0 (the whole rollout batch) or positive")
        if self.engine not in samplers.ENGINES:
            bad("engine", f"use one of {list(samplers.ENGINES)}")
        if self.engine_slots and self.engine_slots < self.n:
            bad("engine_slots", f"must be 0 (sample_prompts x n) or at least --n={self.n}")
        try:
            jnp.dtype(self.cache_dtype)
        except TypeError:
            bad("cache_dtype", "not a dtype (e.g. bfloat16)")
        try:
            self.model_config()
        except ValueError as e:  # ModelConfig names the field: --remat, --param_dtype, --dtype
            raise UserError(f"{e} (flags --remat, --param_dtype, --dtype, --lora_rank, "
                            "--lora_targets)") from None  # fmt: skip

    @property
    def mesh_shape(self) -> dict[str, int]:
        return dict(self.mesh)

    @property
    def flash(self) -> bool:
        return self.attention == "flash"

    def model_config(self, **kw) -> models.ModelConfig:
        cfg = models.get_preset(
            self.model, param_dtype=self.param_dtype, dtype=self.dtype, remat=self.remat,
            scan_layers=True, attention_impl="xla", **kw,
        )  # fmt: skip
        targets = tuple(t for t in self.lora_targets.split(",") if t)
        return lora.configure(cfg, rank=self.lora_rank, targets=targets)

    def train_command(self, micro_batches: int) -> str:
        """The launch/train_grpo.py command of this plan's settings (weights and data paths
        still to add: --config.model.hf_path, --config.tokenizer, --config.data.train)."""
        mesh = ",".join(f"{a}:{self.mesh_shape.get(a, 1)}" for a in sharding.MESH_AXES)
        flags = {
            "model.preset": self.model, "model.param_dtype": self.param_dtype,
            "model.dtype": self.dtype, "model.remat": self.remat, "model.scan_layers": True,
            "sharding": self.sharding, "data.max_prompt_len": self.prompt_len,
            "data.prompt_buckets": f"({self.prompt_len},)",
            "rollout.max_new_tokens": self.response_len, "rollout.n": self.n,
            "rollout.prompts_per_batch": self.prompts_per_batch,
            "rollout.sample_prompts": self.sample_prompts, "rollout.cache_dtype": self.cache_dtype,
            "rollout.engine": self.engine, "rollout.engine_slots": self.engine_slots,
            "grpo.minibatch_prompts": self.minibatch_prompts, "grpo.ppo_epochs": self.ppo_epochs,
            "grpo.micro_batches": micro_batches,
            "grpo.kl_coef": self.kl_coef,
        }  # fmt: skip
        if self.lora_rank:
            flags["model.lora.rank"] = self.lora_rank
            flags["model.lora.targets"] = (
                f"({','.join(repr(t) for t in self.lora_targets.split(','))},)"
            )
        parts = [f"--config.mesh.{a}={self.mesh_shape.get(a, 1)}" for a in sharding.MESH_AXES]
        parts += [shlex.quote(f"--config.{k}={v}") for k, v in flags.items()]
        return "python launch/train_grpo.py " + " ".join(parts) + f"  # mesh {mesh}"


# Runs that fit one GPU (launch/plan.py --one_gpu; configs/qwen2_5_7b_lora_1gpu.py and
# configs/qwen2_5_0_5b_24gb.py train with these settings).
_ONE_GPU_SHAPE = dict(mesh=(("fsdp", 1),), param_dtype="bfloat16", prompt_len=1024,
                      response_len=2048, prompts_per_batch=64, minibatch_prompts=16,
                      sample_prompts=16, micro_batch_rows=2)  # fmt: skip
ONE_GPU: dict[str, PlanConfig] = {
    "7b_lora_a100_80gb": PlanConfig(
        model="qwen2_5_7b", accelerator="a100-80gb", lora_rank=64, **_ONE_GPU_SHAPE
    ),  # fmt: skip
    "0_5b_full_24gb": PlanConfig(model="qwen2_5_0_5b", accelerator="l4-24gb", **_ONE_GPU_SHAPE),
}
ONE_GPU_CONFIGS = {"7b_lora_a100_80gb": "configs/qwen2_5_7b_lora_1gpu.py",
                   "0_5b_full_24gb": "configs/qwen2_5_0_5b_24gb.py"}  # fmt: skip


def _check(pc: PlanConfig, ways: int) -> tuple[int, int]:
    """(mini-batch rows, micro-batches), with errors naming the flag."""
    if pc.prompts_per_batch % pc.minibatch_prompts:
        raise UserError(
            f"--minibatch_prompts={pc.minibatch_prompts} must divide "
            f"--prompts_per_batch={pc.prompts_per_batch}"
        )
    rows = pc.minibatch_prompts * pc.n
    if rows % ways:
        raise UserError(
            f"the mini-batch of {rows} rows (--minibatch_prompts x --n) does not split over the "
            f"{ways} data-parallel devices (data x fsdp)"
        )
    per_shard = rows // ways
    if per_shard % pc.micro_batch_rows:
        raise UserError(
            f"--micro_batch_rows={pc.micro_batch_rows} must divide the {per_shard} rows per "
            "data-parallel shard"
        )
    prompts = pc.sample_prompts or pc.prompts_per_batch
    if pc.prompts_per_batch % prompts:
        raise UserError(
            f"--sample_prompts={prompts} must divide --prompts_per_batch={pc.prompts_per_batch}"
        )
    if prompts % ways:
        raise UserError(
            f"--sample_prompts={prompts}: the sampler's prompts do not split over the {ways} "
            "data-parallel devices (data x fsdp)"
        )
    return rows, per_shard // pc.micro_batch_rows


def _train_program(pc: PlanConfig, mesh, rules, rows: int, micro: int, seq: int):
    # As the GRPO loop runs it: the LM head on the response positions only (response_len), in
    # proportion when seq is a scaled-down length (temporaries extrapolation).
    full = pc.prompt_len + pc.response_len
    response = min(seq - 1, max(1, pc.response_len * seq // full))
    cfg = pc.model_config()
    loss = grpo_step.LossConfig(kl_coef=pc.kl_coef)
    step_cfg = grpo_step.StepConfig(model=cfg, loss=loss, micro_batches=micro,
                                    response_len=response)  # fmt: skip
    step = grpo_step.make_step(step_cfg, ts.OptimConfig(), mesh, rules)
    updates = pc.ppo_epochs * (pc.prompts_per_batch // pc.minibatch_prompts)
    batch = footprint.abstract_batch(
        rows, seq, mesh, old_logp=updates > 1, ref_logp=pc.kl_coef != 0
    )
    return batch, step.jitted.trace(footprint.abstract_state(cfg, mesh, rules), batch)


def _sampler_program(pc: PlanConfig, cfg, mesh, rules, prompts: int, prompt_len: int, new: int):
    shardings = models.param_shardings(cfg, mesh, rules)
    params = sharding.with_shardings(models.abstract_params(cfg), shardings)
    ds = sharding.data_sharding(mesh)
    ids = jax.ShapeDtypeStruct((prompts, prompt_len), jnp.int32, sharding=ds)
    scalar = lambda dt: jax.ShapeDtypeStruct((), dt)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    eos = jax.ShapeDtypeStruct((2,), jnp.int32)
    return sampling._generate.trace(
        params, ids, ids, key, eos, scalar(jnp.float32), scalar(jnp.float32), scalar(jnp.int32),
        cfg=cfg, max_new_tokens=new, num_samples=pc.n, top_k=0, use_top_p=False,
        cache_dtype=pc.cache_dtype, mesh=mesh, rules=rules,
    )  # fmt: skip


def _engine_program(pc: PlanConfig, cfg, mesh, rules, prompts: int, slots: int):
    """The continuous engine's loop on one call's prompts (`engine._run`), traced."""
    shardings = models.param_shardings(cfg, mesh, rules)
    params = sharding.with_shardings(models.abstract_params(cfg), shardings)
    ids = jax.ShapeDtypeStruct((prompts, pc.prompt_len), jnp.int32)
    lanes = engine.prefill_lanes_for(prompts, slots, pc.n, sharding.data_ways(mesh), chunk=32)
    static = dict(cfg=cfg, num_samples=pc.n, lanes=lanes, chunk=32, mesh=mesh, rules=rules)
    consts, state = jax.eval_shape(
        functools.partial(engine._init, num_slots=slots, slot_len=pc.prompt_len + pc.response_len,
                          max_new_tokens=pc.response_len, cache_dtype=pc.cache_dtype, **static),
        ids, ids, jax.random.key(0), None, None, np.zeros(2, np.int32), 1.0, 1.0, 0,
    )  # fmt: skip
    return engine._run.trace(params, consts, state, top_k=0, use_top_p=False, min_slots=8,
                             **static)  # fmt: skip


def _extrapolate(t8: int, t4: int, seq: int, ceiling: int) -> int:
    """Temporaries at T from those at T/8 and T/4 (linear), at most the measured `ceiling`."""
    slope = (t4 - t8) / (seq / 4 - seq / 8)
    return int(min(ceiling, max(t4, t4 + slope * (seq - seq / 4))))


def _train_memory(pc: PlanConfig, mesh, rules, rows, micro, seq, *, measure: bool) -> dict:
    """FLOPs, batch bytes and temporaries of the train step (+ the flash estimate)."""
    batch, traced = _train_program(pc, mesh, rules, rows, micro, seq)
    flops = footprint.matmul_flops(traced.jaxpr)
    out = {"flops": flops, "batch": footprint.bytes_per_device(batch), "temp": None}
    if not measure:
        return out
    mem = footprint.compiled_memory(traced.lower())
    out.update(argument=mem["argument"], temp=mem["temp"])
    if pc.flash:
        short = (_train_program(pc, mesh, rules, rows, micro, seq // k)[1] for k in _SHORT)
        t8, t4 = (footprint.compiled_memory(traced.lower()) for traced in short)
        out["flash"] = _extrapolate(t8["temp"], t4["temp"], seq, mem["temp"])
    return out


def _sampler_memory(pc: PlanConfig, cfg, mesh, rules, prompts: int, *, measure: bool) -> dict:
    """Worst-case FLOPs and temporaries (KV cache included) of one sampler call."""
    traced = _sampler_program(pc, cfg, mesh, rules, prompts, pc.prompt_len, pc.response_len)
    flops = footprint.matmul_flops(traced.jaxpr, while_trips=pc.response_len - 1)
    out = {"flops": flops, "temp": None}
    if not measure:
        return out
    out["temp"] = footprint.compiled_memory(traced.lower())["temp"]
    if pc.flash:  # a 32-token prompt bucket, same cache length: negligible prefill scores
        seq = pc.prompt_len + pc.response_len
        short = _sampler_program(pc, cfg, mesh, rules, prompts, 32, seq - 32)
        out["flash"] = min(out["temp"], footprint.compiled_memory(short.lower())["temp"])
    return out


def plan(pc: PlanConfig, *, devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
    """Per-device memory, FLOPs and fit of the GRPO job described by `pc`.

    Args:
      pc: the plan configuration.
      devices: devices to build the mesh on (default: the first mesh-size of jax.devices()).
    Returns:
      A flat dict (the launcher's JSON line); `sources` says which entries are measured.
    """
    t0 = time.time()
    shape = pc.mesh_shape
    if any(s == -1 for s in shape.values()):
        raise UserError(f"--mesh={mesh_name(shape)}: give every axis size (no -1) to plan")
    need = math.prod(shape.values())
    pool = list(jax.devices() if devices is None else devices)
    if need > len(pool):
        raise UserError(
            f"--mesh={mesh_name(shape)} needs {need} devices but {len(pool)} exist; run "
            "jobs.plan (launch/plan.py), which makes as many CPU devices as the meshes need, or "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={need} before JAX starts"
        )
    mesh = sharding.make_mesh(shape, devices=pool[:need], flag="mesh")
    rules = sharding.get_rules(pc.sharding, flag="sharding")
    ways = sharding.data_ways(mesh)
    rows, micro = _check(pc, ways)
    capacity, peak = footprint.ACCELERATORS[pc.accelerator]
    cfg = pc.model_config()
    seq = pc.prompt_len + pc.response_len
    sources: dict[str, str] = {}

    # Persistent state: params, Adam moments, the reference policy (exact, from shardings).
    state_b = footprint.state_bytes(cfg, mesh, rules)  # also checks divisibility under the preset
    params_b, opt_b, grads_b = state_b["params"], state_b["optimizer"], state_b["gradients"]
    master_b = state_b["master"]
    # The KL reference: a copy of the params, except with LoRA (the base, adapters off).
    ref_b = params_b if pc.kl_coef and not cfg.lora_rank else 0
    persistent = params_b + opt_b + master_b + ref_b
    sources.update(params="shardings", optimizer="shardings", reference="shardings",
                   master="shardings",
                   gradients="estimate: float32, sharded like the params")  # fmt: skip
    usable = int(pc.headroom * capacity)
    out: dict[str, Any] = {
        "model": pc.model, "num_params": cfg.num_params(), "mesh": mesh_name(shape),
        "devices": need, "sharding": pc.sharding, "accelerator": pc.accelerator,
        "seq_len": seq, "minibatch_rows": rows, "micro_batches": micro,
        "rows_per_micro_batch": rows // micro, "attention": pc.attention,
        "params_bytes_per_device": params_b, "gradients_bytes_per_device": grads_b,
        "optimizer_bytes_per_device": opt_b, "reference_bytes_per_device": ref_b,
        "master_bytes_per_device": master_b, "lora_rank": cfg.lora_rank,
        "trainable_params": lora.num_adapter_params(cfg) if cfg.lora_rank else cfg.num_params(),
        "param_dtype": pc.param_dtype, "command": pc.train_command(micro),
        "capacity_bytes": capacity, "usable_bytes": usable,
    }  # fmt: skip

    # The programs: traced for FLOPs, compiled for their temporaries (not when hopeless).
    skip = persistent > usable
    measure = pc.compile and not skip
    train = _train_memory(pc, mesh, rules, rows, micro, seq, measure=measure)
    prompts = pc.sample_prompts or pc.prompts_per_batch
    continuous = pc.engine == "continuous"
    sampler = _sampler_memory(pc, cfg, mesh, rules, prompts, measure=measure and not continuous)
    kv_b = footprint.kv_cache_bytes(
        cfg, mesh, rules, rows=prompts * pc.n, slots=seq, cache_dtype=pc.cache_dtype
    )
    ids_b = 2 * prompts * pc.prompt_len * 4 // ways
    sources.update(
        activations="train_temp - gradients",
        kv_cache="shardings of the sampler's cache [L, R, S, K, H]",
        train_temp="measured: XLA CPU memory_analysis of the compiled train step",
        sampler_temp="measured: XLA CPU memory_analysis of the compiled sampler",
    )  # fmt: skip
    if continuous:  # one call over the batch: slots + lanes + the [R, M] outputs, no [R, T] cache
        slots = pc.engine_slots or prompts * pc.n
        kv_b = footprint.engine_cache_bytes(
            cfg, mesh, rules, slots=slots, slot_len=seq, cache_dtype=pc.cache_dtype,
            lanes=engine.prefill_lanes_for(pc.prompts_per_batch, slots, pc.n, ways, chunk=32),
            prompt_len=pc.prompt_len,
        )  # fmt: skip
        ids_b = 2 * pc.prompts_per_batch * pc.prompt_len * 4 // ways
        out["engine_slots"] = slots
        sampler["temp"] = sampler["flash"] = None
        if measure:  # its state (caches, outputs) and prompts are arguments (donated), + temps
            mem = footprint.compiled_memory(
                _engine_program(pc, cfg, mesh, rules, pc.prompts_per_batch, slots).lower()
            )
            sampler["temp"] = sampler["flash"] = mem["argument"] - params_b + mem["temp"]
        sources.update(
            kv_cache="shardings of the engine's slots [L, S, C, K, H] + lanes [L, W, P, K, H]",
            sampler_temp="measured: XLA CPU memory_analysis of the compiled engine loop "
            "(arguments but the params, + temporaries)",
        )  # fmt: skip
    if measure:
        out["argument_bytes_measured"] = train["argument"]
        out["argument_bytes_planned"] = params_b + opt_b + master_b + train["batch"]  # a check
    out.update(_totals(persistent, train["batch"] + (train["temp"] or 0),
                       ids_b + (sampler["temp"] or kv_b), pc))  # fmt: skip
    out.update({
        "train_temp_bytes_per_device": train["temp"],
        "activations_bytes_per_device": None if train["temp"] is None
        else max(0, train["temp"] - grads_b),
        "kv_cache_bytes_per_device": kv_b,
        "sampler_temp_bytes_per_device": sampler["temp"],
    })  # fmt: skip
    if "flash" in train:
        flash = _totals(persistent, train["batch"] + train["flash"], ids_b + sampler["flash"], pc)
        out.update({f"{k}_flash_estimate": v for k, v in flash.items()})
        out["train_temp_bytes_per_device_flash_estimate"] = train["flash"]
        out["sampler_temp_bytes_per_device_flash_estimate"] = sampler["flash"]
        sources["flash_estimate"] = (
            "estimate: train temporaries extrapolated from T/8 and T/4; sampler compiled with a "
            "32-token prompt"
        )
    updates = pc.ppo_epochs * (pc.prompts_per_batch // pc.minibatch_prompts)
    out.update({
        "fits": out["fits"] if measure or skip else None, "measured": measure,
        "flops_per_update": train["flops"],
        "flops_per_update_6nt": 6 * cfg.num_params() * rows * seq,
        "rollout_flops_max": sampler["flops"], "updates_per_rollout_batch": updates,
        "update_seconds_at_peak": train["flops"] / (need * peak),
        "rollout_seconds_at_peak": sampler["flops"] * (pc.prompts_per_batch // prompts)
        / (need * peak),
        "seconds": round(time.time() - t0, 1), "sources": sources,
    })  # fmt: skip
    if skip:
        out["note"] = "params + optimizer + reference alone exceed the usable memory"
        out.update({"fits_flash_estimate": False} if pc.flash else {})
    elif not pc.compile:
        out["note"] = "--nocompile: temporaries not measured, fits is not decided"
    return out


def _totals(persistent: int, train_phase: int, rollout_phase: int, pc: PlanConfig) -> dict:
    """The phases' peaks, the job's peak (the larger phase) and whether it fits."""
    total = persistent + max(train_phase, rollout_phase)
    return {
        "train_phase_bytes_per_device": persistent + train_phase,
        "rollout_phase_bytes_per_device": persistent + rollout_phase,
        "total_bytes_per_device": total,
        "fits": footprint.fits(total, pc.accelerator, headroom=pc.headroom),
    }


def sweep(
    pc: PlanConfig,
    meshes: Sequence[dict[str, int]],
    presets: Sequence[str] = tuple(sharding.RULES),
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Plans every (mesh, sharding preset) pair; a pair that cannot work gets an "error".

    Args:
      pc: the plan configuration (its mesh and sharding are replaced).
      meshes: mesh shapes; presets: sharding presets.
      progress: called with each result as it is ready.
    Returns:
      One result per pair, meshes outer.
    """
    out = []
    for shape in meshes:
        for preset in presets:
            one = dataclasses.replace(pc, mesh=tuple(shape.items()), sharding=preset)
            try:
                result = plan(one)
            except UserError as e:  # this pair cannot work (devices, divisibility)
                result = {"mesh": mesh_name(shape), "sharding": preset, "fits": False,
                          "error": str(e)}  # fmt: skip
            out.append(result)
            if progress is not None:
                progress(result)
    return out
