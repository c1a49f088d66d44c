"""Scale-study planner: per-device memory and FLOPs of GRPO on a mesh, from the real programs.

For a model preset, a mesh shape and a sharding preset, everything is derived from the programs
the training run executes, lowered and compiled ahead of time on fake CPU devices
(`--xla_force_host_platform_device_count`) with abstract (ShapeDtypeStruct) inputs:

* params, Adam moments, the reference policy: the real shardings (`train_step.state_shardings`),
  `sharding.shard_shape(global shape) x itemsize` summed per leaf. Exact.
* gradients: float32 and sharded like the params (what `loss_and_grads` returns and the
  partitioner keeps under these shardings). An estimate; they live inside the train step's
  temporaries, so they are shown but not added again.
* train-step temporaries (gradients, activations, gathered weights, log-prob chunks): XLA's
  buffer assignment of the compiled `train_step.make_train_step(...).jitted` program, i.e.
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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp

from ifrl_jax import models, sampling, sharding
from ifrl_jax import train_step as ts

GiB = 1 << 30
# Device memory and dense bf16 peak FLOP/s per accelerator.
ACCELERATORS: dict[str, tuple[int, float]] = {
    "a100-40gb": (40 * GiB, 312e12),
    "a100-80gb": (80 * GiB, 312e12),
    "h100-80gb": (80 * GiB, 989e12),
    "tpu-v5e": (16 * GiB, 197e12),
    "tpu-v5p": (95 * GiB, 459e12),
}
_SHORT = (8, 4)  # the flash estimate compiles the train step at T/8 and T/4


# --------------------------------------------------------------------------------------------
# Flags.
# --------------------------------------------------------------------------------------------


def parse_mesh(spec: str, *, flag: str = "mesh") -> dict[str, int]:
    """Parses "fsdp:8" / "data:1,fsdp:-1,tp:2" into {axis: size}; errors name the flag.

    Args:
      spec: comma-separated axis:size pairs over the axes data, fsdp, tp (absent axes are 1).
      flag: the flag named in errors.
    Returns:
      {axis: size} for the axes given.
    """
    out: dict[str, int] = {}
    if not spec or not spec.strip():
        raise ValueError(f"--{flag} is empty; give axis:size pairs, e.g. --{flag}=fsdp:8")
    for part in spec.split(","):
        name, sep, size = part.strip().partition(":")
        if not sep:
            raise ValueError(f"--{flag}={spec!r}: {part!r} is not axis:size (e.g. fsdp:8)")
        if name not in sharding.MESH_AXES:
            raise ValueError(f"--{flag}={spec!r}: unknown axis {name!r}; use {sharding.MESH_AXES}")
        if name in out:
            raise ValueError(f"--{flag}={spec!r}: axis {name!r} is given twice")
        try:
            out[name] = int(size)
        except ValueError:
            raise ValueError(
                f"--{flag}={spec!r}: size {size!r} of {name!r} is not an integer"
            ) from None
        if out[name] == 0 or out[name] < -1:
            raise ValueError(f"--{flag}={spec!r}: sizes must be positive (or -1 = the rest)")
    return out


def parse_meshes(spec: str, *, flag: str = "meshes") -> list[dict[str, int]]:
    """Parses "fsdp:8;fsdp:16;fsdp:4,tp:2" (meshes separated by ';')."""
    meshes = [parse_mesh(m, flag=flag) for m in spec.split(";") if m.strip()]
    if not meshes:
        raise ValueError(f"--{flag} is empty; e.g. --{flag}='fsdp:8;fsdp:16;fsdp:4,tp:2'")
    return meshes


def mesh_name(shape: dict[str, int]) -> str:
    return ",".join(f"{a}:{shape[a]}" for a in sharding.MESH_AXES if shape.get(a, 1) != 1) or "1"


# --------------------------------------------------------------------------------------------
# The plan's configuration.
# --------------------------------------------------------------------------------------------


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
    remat: str = "full"
    param_dtype: str = "float32"
    dtype: str = "bfloat16"
    cache_dtype: str = "bfloat16"
    kl_coef: float = 0.01  # > 0: a reference copy of the params lives on the devices
    attention: str = "xla"  # "xla": measured only | "flash": also the flash-attention estimate
    headroom: float = 0.9  # usable fraction of device memory (allocator, fragmentation, runtime)
    compile: bool = True  # False: lower only; temporaries are then not measured

    @property
    def mesh_shape(self) -> dict[str, int]:
        return dict(self.mesh)

    @property
    def flash(self) -> bool:
        if self.attention not in ("xla", "flash"):
            raise ValueError(f"--attention={self.attention!r}: use xla or flash")
        return self.attention == "flash"

    def model_config(self, **kw) -> models.ModelConfig:
        return models.get_preset(
            self.model, param_dtype=self.param_dtype, dtype=self.dtype, remat=self.remat,
            scan_layers=True, attention_impl="xla", **kw,
        )  # fmt: skip


def _check(pc: PlanConfig, ways: int) -> tuple[int, int]:
    """(mini-batch rows, micro-batches), with errors naming the flag."""
    fits(0, pc.accelerator, headroom=pc.headroom)  # checks both flags
    if pc.prompts_per_batch % pc.minibatch_prompts:
        raise ValueError(
            f"--minibatch_prompts={pc.minibatch_prompts} must divide "
            f"--prompts_per_batch={pc.prompts_per_batch}"
        )
    rows = pc.minibatch_prompts * pc.n
    if rows % ways:
        raise ValueError(
            f"the mini-batch of {rows} rows (--minibatch_prompts x --n) does not split over the "
            f"{ways} data-parallel devices (data x fsdp)"
        )
    per_shard = rows // ways
    if per_shard % pc.micro_batch_rows:
        raise ValueError(
            f"--micro_batch_rows={pc.micro_batch_rows} must divide the {per_shard} rows per "
            "data-parallel shard"
        )
    prompts = pc.sample_prompts or pc.prompts_per_batch
    if pc.prompts_per_batch % prompts:
        raise ValueError(
            f"--sample_prompts={prompts} must divide --prompts_per_batch={pc.prompts_per_batch}"
        )
    if prompts % ways:
        raise ValueError(f"{prompts} sampler prompts do not split over {ways} devices")
    return rows, per_shard // pc.micro_batch_rows


# --------------------------------------------------------------------------------------------
# Bytes from shardings, FLOPs from jaxprs.
# --------------------------------------------------------------------------------------------


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of ShapeDtypeStructs/arrays with NamedShardings.

    Every device holds the same amount under these (evenly dividing) shardings.
    """
    leaves = jax.tree.leaves(tree)
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)


def _with_shardings(abstract, shardings):
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def abstract_state(tcfg: ts.TrainConfig, mesh, rules) -> ts.TrainState:
    """The TrainState as ShapeDtypeStructs carrying the real shardings."""
    params = models.abstract_params(tcfg.model)
    opt = jax.eval_shape(ts.make_optimizer(tcfg).init, params)
    state = ts.TrainState(params=params, opt_state=opt, step=jax.ShapeDtypeStruct((), jnp.int32))
    return _with_shardings(state, ts.state_shardings(tcfg, mesh, rules))


def abstract_batch(rows: int, seq: int, mesh, *, old_logp: bool, ref_logp: bool) -> dict:
    """A GRPO mini-batch [rows, seq] as ShapeDtypeStructs split over the data axes."""
    sh = ts.batch_sharding(mesh)
    spec = {"input_ids": jnp.int32, "attention_mask": jnp.int32, "response_mask": jnp.int32}
    if old_logp:
        spec["old_logp"] = jnp.float32
    if ref_logp:
        spec["ref_logp"] = jnp.float32
    batch = {k: jax.ShapeDtypeStruct((rows, seq), v, sharding=sh) for k, v in spec.items()}
    batch["advantages"] = jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=sh)
    return batch


def state_bytes(tcfg: ts.TrainConfig, mesh, rules) -> dict[str, int]:
    """Per-device bytes of the params, the optimizer state (+ step) and float32 gradients."""
    state = abstract_state(tcfg, mesh, rules)
    grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding),
                         state.params)  # fmt: skip
    return {
        "params": bytes_per_device(state.params),
        "optimizer": bytes_per_device((state.opt_state, state.step)),
        "gradients": bytes_per_device(grads),
    }


def fits(total_bytes: int, accelerator: str, *, headroom: float = 0.9) -> bool:
    """Whether a per-device peak fits `headroom` x the accelerator's memory."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"--accelerator={accelerator!r}: use one of {sorted(ACCELERATORS)}")
    if not 0 < headroom <= 1:
        raise ValueError(f"--headroom={headroom}: must be in (0, 1]")
    return total_bytes <= int(headroom * ACCELERATORS[accelerator][0])


def kv_cache_bytes(cfg, mesh, rules, *, rows: int, slots: int, cache_dtype: str) -> int:
    """Per-device bytes of the sampler's k and v caches [L, R, S, K, H] under `rules`."""
    shape = (cfg.num_layers, rows, slots, cfg.num_kv_heads, cfg.head_dim)
    spec = sharding.logical_to_spec(sampling._CACHE_AXES, rules)
    shard = jax.sharding.NamedSharding(mesh, spec).shard_shape(shape)
    return 2 * math.prod(shard) * jnp.dtype(cache_dtype).itemsize


def _sub_jaxprs(value) -> list:
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jax.extend.core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def matmul_flops(jaxpr, *, while_trips: int = 1) -> int:
    """FLOPs of every dot_general in a (closed) jaxpr, scan bodies times their length.

    Args:
      jaxpr: a Jaxpr or ClosedJaxpr.
      while_trips: iterations assumed for each while loop (unknown statically).
    Returns:
      2 x (batch x contracting x free-lhs x free-rhs) summed over the program.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lc, _), (lb, _) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            contract = math.prod(lhs[i] for i in lc)
            batch = math.prod(lhs[i] for i in lb)
            total += 2 * math.prod(lhs) * math.prod(rhs) // max(1, contract * batch)
            continue
        name = eqn.primitive.name
        subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
        costs = [matmul_flops(j, while_trips=while_trips) for j in subs]
        if name == "cond":
            total += max(costs, default=0)
        else:
            times = (
                eqn.params["length"] if name == "scan" else while_trips if name == "while" else 1
            )
            total += times * sum(costs)
    return total


# --------------------------------------------------------------------------------------------
# Compiling the real programs.
# --------------------------------------------------------------------------------------------


def _memory(lowered) -> dict[str, int]:
    """Compiles and returns XLA's per-device argument and temporary bytes."""
    stats = lowered.compile().memory_analysis()
    return {"argument": int(stats.argument_size_in_bytes), "temp": int(stats.temp_size_in_bytes)}


def _train_program(pc: PlanConfig, mesh, rules, rows: int, micro: int, seq: int):
    # As the GRPO loop runs it: the LM head on the response positions only (response_len), in
    # proportion when seq is a scaled-down length (temporaries extrapolation).
    full = pc.prompt_len + pc.response_len
    response = min(seq - 1, max(1, pc.response_len * seq // full))
    tcfg = ts.TrainConfig(model=pc.model_config(), micro_batches=micro, kl_coef=pc.kl_coef,
                          response_len=response)  # fmt: skip
    step = ts.make_train_step(tcfg, mesh, rules)
    updates = pc.ppo_epochs * (pc.prompts_per_batch // pc.minibatch_prompts)
    batch = abstract_batch(rows, seq, mesh, old_logp=updates > 1, ref_logp=pc.kl_coef != 0)
    return batch, step.jitted.trace(abstract_state(tcfg, mesh, rules), batch)


def _sampler_program(pc: PlanConfig, cfg, mesh, rules, prompts: int, prompt_len: int, new: int):
    params = _with_shardings(models.abstract_params(cfg), models.param_shardings(cfg, mesh, rules))
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


def _extrapolate(t8: int, t4: int, seq: int, ceiling: int) -> int:
    """Temporaries at T from those at T/8 and T/4 (linear), at most the measured `ceiling`."""
    slope = (t4 - t8) / (seq / 4 - seq / 8)
    return int(min(ceiling, max(t4, t4 + slope * (seq - seq / 4))))


def _train_memory(pc: PlanConfig, mesh, rules, rows, micro, seq, *, measure: bool) -> dict:
    """FLOPs, batch bytes and temporaries of the train step (+ the flash estimate)."""
    batch, traced = _train_program(pc, mesh, rules, rows, micro, seq)
    out = {"flops": matmul_flops(traced.jaxpr), "batch": bytes_per_device(batch), "temp": None}
    if not measure:
        return out
    mem = _memory(traced.lower())
    out.update(argument=mem["argument"], temp=mem["temp"])
    if pc.flash:
        t8, t4 = (_memory(_train_program(pc, mesh, rules, rows, micro, seq // k)[1].lower())
                  for k in _SHORT)  # fmt: skip
        out["flash"] = _extrapolate(t8["temp"], t4["temp"], seq, mem["temp"])
    return out


def _sampler_memory(pc: PlanConfig, cfg, mesh, rules, prompts: int, *, measure: bool) -> dict:
    """Worst-case FLOPs and temporaries (KV cache included) of one sampler call."""
    traced = _sampler_program(pc, cfg, mesh, rules, prompts, pc.prompt_len, pc.response_len)
    out = {"flops": matmul_flops(traced.jaxpr, while_trips=pc.response_len - 1), "temp": None}
    if not measure:
        return out
    out["temp"] = _memory(traced.lower())["temp"]
    if pc.flash:  # a 32-token prompt bucket, same cache length: negligible prefill scores
        seq = pc.prompt_len + pc.response_len
        short = _sampler_program(pc, cfg, mesh, rules, prompts, 32, seq - 32)
        out["flash"] = min(out["temp"], _memory(short.lower())["temp"])
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
        raise ValueError(f"--mesh={mesh_name(shape)}: give every axis size (no -1) to plan")
    need = math.prod(shape.values())
    pool = list(jax.devices() if devices is None else devices)
    if need > len(pool):
        raise ValueError(
            f"--mesh={mesh_name(shape)} needs {need} devices but {len(pool)} exist; set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={need} before importing jax "
            "(launch/plan.py does)"
        )
    mesh = sharding.make_mesh(shape, devices=pool[:need], flag="mesh")
    rules = sharding.get_rules(pc.sharding)
    ways = sharding.data_ways(mesh)
    rows, micro = _check(pc, ways)
    capacity, peak = ACCELERATORS[pc.accelerator]
    cfg = pc.model_config()
    seq = pc.prompt_len + pc.response_len
    sources: dict[str, str] = {}

    # Persistent state: params, Adam moments, the reference policy (exact, from shardings).
    tcfg = ts.TrainConfig(model=cfg, micro_batches=micro, kl_coef=pc.kl_coef)
    state_b = state_bytes(tcfg, mesh, rules)  # also checks divisibility under the preset
    params_b, opt_b, grads_b = state_b["params"], state_b["optimizer"], state_b["gradients"]
    ref_b = params_b if pc.kl_coef else 0
    persistent = params_b + opt_b + ref_b
    sources.update(params="shardings", optimizer="shardings", reference="shardings",
                   gradients="estimate: float32, sharded like the params")  # fmt: skip
    usable = int(pc.headroom * capacity)
    out: dict[str, Any] = {
        "model": pc.model, "num_params": cfg.num_params(), "mesh": mesh_name(shape),
        "devices": need, "sharding": pc.sharding, "accelerator": pc.accelerator,
        "seq_len": seq, "minibatch_rows": rows, "micro_batches": micro,
        "rows_per_micro_batch": rows // micro, "attention": pc.attention,
        "params_bytes_per_device": params_b, "gradients_bytes_per_device": grads_b,
        "optimizer_bytes_per_device": opt_b, "reference_bytes_per_device": ref_b,
        "capacity_bytes": capacity, "usable_bytes": usable,
    }  # fmt: skip

    # The programs: traced for FLOPs, compiled for their temporaries (not when hopeless).
    skip = persistent > usable
    measure = pc.compile and not skip
    train = _train_memory(pc, mesh, rules, rows, micro, seq, measure=measure)
    prompts = pc.sample_prompts or pc.prompts_per_batch
    sampler = _sampler_memory(pc, cfg, mesh, rules, prompts, measure=measure)
    kv_b = kv_cache_bytes(
        cfg, mesh, rules, rows=prompts * pc.n, slots=seq, cache_dtype=pc.cache_dtype
    )
    ids_b = 2 * prompts * pc.prompt_len * 4 // ways
    sources.update(
        activations="train_temp - gradients",
        kv_cache="shardings of the sampler's cache [L, R, S, K, H]",
        train_temp="measured: XLA CPU memory_analysis of the compiled train step",
        sampler_temp="measured: XLA CPU memory_analysis of the compiled sampler",
    )  # fmt: skip
    if measure:
        out["argument_bytes_measured"] = train["argument"]
        out["argument_bytes_planned"] = params_b + opt_b + train["batch"]  # equal: a check
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
        "fits": fits(total, pc.accelerator, headroom=pc.headroom),
    }


# --------------------------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------------------------


def _gib(b) -> str:
    return "-" if b is None else f"{b / GiB:8.2f}"


def format_plan(p: dict[str, Any]) -> str:
    """A readable table of one plan (GiB per device)."""
    rows = [
        ("params", "params_bytes_per_device", "params"),
        ("optimizer (Adam mu, nu)", "optimizer_bytes_per_device", "optimizer"),
        ("reference params", "reference_bytes_per_device", "reference"),
        ("gradients (in train temp)", "gradients_bytes_per_device", "gradients"),
        ("activations (in train temp)", "activations_bytes_per_device", "activations"),
        ("train-step temporaries", "train_temp_bytes_per_device", "train_temp"),
        ("KV cache (in sampler temp)", "kv_cache_bytes_per_device", "kv_cache"),
        ("sampler temporaries", "sampler_temp_bytes_per_device", "sampler_temp"),
        ("train phase peak", "train_phase_bytes_per_device", None),
        ("rollout phase peak", "rollout_phase_bytes_per_device", None),
        ("total (peak)", "total_bytes_per_device", None),
        (
            "train temporaries, flash",
            "train_temp_bytes_per_device_flash_estimate",
            "flash_estimate",
        ),
        ("sampler temporaries, flash", "sampler_temp_bytes_per_device_flash_estimate", None),
        ("total (peak), flash", "total_bytes_per_device_flash_estimate", None),
    ]
    head = (
        f"{p['model']} ({p['num_params'] / 1e9:.2f}B) on {p['mesh']} ({p['devices']} devices), "
        f"sharding={p['sharding']}, attention={p['attention']}, T={p['seq_len']}, "
        f"{p['minibatch_rows']} rows/update in {p['micro_batches']} micro-batches"
    )
    lines = [head, f"{'per device':<30} {'GiB':>8}  source", "-" * 78]
    for label, key, src in rows:
        if key not in p:
            continue
        lines.append(f"{label:<30} {_gib(p.get(key))}  {p['sources'].get(src, '') if src else ''}")
    if "argument_bytes_measured" in p:
        lines.append(
            f"XLA's argument bytes {_gib(p['argument_bytes_measured']).strip()} GiB = planned "
            f"params + optimizer + batch {_gib(p['argument_bytes_planned']).strip()} GiB"
        )
    verdict = {True: "fits", False: "does NOT fit", None: "not decided"}[p["fits"]]
    lines += [
        "-" * 78,
        f"{p['accelerator']}: {_gib(p['usable_bytes']).strip()} GiB usable of "
        f"{_gib(p['capacity_bytes']).strip()} -> {verdict} (XLA attention, measured)"
        + (f" ({p['note']})" if "note" in p else ""),
        f"FLOPs per update {p['flops_per_update']:.3e} (jaxpr matmuls; 6NT "
        f"{p['flops_per_update_6nt']:.3e}), {p['updates_per_rollout_batch']} updates per rollout "
        f"batch; rollout <= {p['rollout_flops_max']:.3e} per sampler call",
        *([f"with flash attention (estimate): "
           f"{'fits' if p['fits_flash_estimate'] else 'does NOT fit'}"]
          if "fits_flash_estimate" in p else []),
        f"at peak bf16 FLOP/s: {p['update_seconds_at_peak']:.1f} s per update, "
        f"{p['rollout_seconds_at_peak']:.1f} s per rollout batch (lower bounds)",
    ]  # fmt: skip
    return "\n".join(lines)


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
            except ValueError as e:
                result = {"mesh": mesh_name(shape), "sharding": preset, "fits": False,
                          "error": str(e)}  # fmt: skip
            out.append(result)
            if progress is not None:
                progress(result)
    return out


def format_sweep(results: Sequence[dict[str, Any]]) -> str:
    """One line per (mesh, preset): the main per-device terms in GiB and the verdicts."""
    keys = ("params_bytes_per_device", "optimizer_bytes_per_device", "reference_bytes_per_device",
            "train_temp_bytes_per_device", "kv_cache_bytes_per_device",
            "sampler_temp_bytes_per_device", "total_bytes_per_device",
            "total_bytes_per_device_flash_estimate")  # fmt: skip
    yes = {True: "yes", False: "no", None: "-"}
    lines = [
        f"{'mesh':<20} {'sharding':<10} {'params':>8} {'optim':>8} {'ref':>8} {'train':>8} "
        f"{'kv':>8} {'sampler':>8} {'total':>8} {'flash':>8}  fits  fits(flash)",
        "-" * 118,
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{r['mesh']:<20} {r['sharding']:<10} n/a: {r['error'][:86]}")
            continue
        cells = " ".join(_gib(r.get(k)) for k in keys)
        lines.append(
            f"{r['mesh']:<20} {r['sharding']:<10} {cells}  {yes[r['fits']]:<4}  "
            f"{yes[r.get('fits_flash_estimate')]}"
        )
    return "\n".join(lines)
