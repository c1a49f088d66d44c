"""The plan job: per-device memory and FLOPs of GRPO on one mesh or a sweep, printed as tables.

`run` makes the fake CPU devices the meshes need (before JAX starts its backend), plans with
`planner.plan` / `planner.sweep`, prints a readable table and returns the JSON summary that
launch/plan.py prints last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax

from ifrl_jax import footprint, planner, sharding


def run(
    config: planner.PlanConfig,
    *,
    sweep: Sequence[dict[str, int]] = (),
    presets: Sequence[str] = tuple(sharding.RULES),
    named: Sequence[str] = (),
) -> dict[str, Any]:
    """Plans `config`, or every (mesh, preset) pair of a sweep, and prints the table(s).

    Args:
      config: what to plan (model, mesh, sharding preset, batch shape, accelerator, ...).
      sweep: meshes to sweep over (empty: plan `config` alone); their pairs with `presets` that
        cannot work get an "error" entry.
      presets: sharding presets of the sweep.
      named: keys of `planner.ONE_GPU` to plan instead of `config` (each table ends with the
        train command of its settings).
    Returns:
      The plan (a flat dict), {"sweep": [one plan per (mesh, preset)]}, or {name: plan}.
    """
    if named:
        _make_cpu_devices(1)
        out = {}
        for name in named:
            out[name] = planner.plan(planner.ONE_GPU[name])
            conf = planner.ONE_GPU_CONFIGS[name]
            print(f"== {name}\n{format_plan(out[name])}\nthe same as a config file: python "
                  f"launch/train_grpo.py --config={conf} (its docstring: weights, data)\n",
                  flush=True)  # fmt: skip
        return out
    for preset in presets if sweep else ():
        sharding.get_rules(preset, flag="presets")
    _make_cpu_devices(max(_size(m) for m in [config.mesh_shape, *sweep]))
    if not sweep:
        result = planner.plan(config)
        print(format_plan(result), flush=True)
        return result
    show = lambda r: print(format_sweep([r]).splitlines()[-1], flush=True)
    results = planner.sweep(config, sweep, presets, progress=show)
    print(format_sweep(results), flush=True)
    return {"sweep": results}


def _size(shape: dict[str, int]) -> int:
    return math.prod(max(s, 1) for s in shape.values())


def _make_cpu_devices(n: int) -> None:
    """Plans compile for fake CPU devices: n of them, unless JAX's backend already runs."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():  # e.g. under pytest: plan() says if too few
        return
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", max(n, 1))


# --------------------------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------------------------


def _gib(b) -> str:
    return "-" if b is None else f"{b / footprint.GiB:8.2f}"


def format_plan(p: dict[str, Any]) -> str:
    """A readable table of one plan (GiB per device)."""
    rows = [
        ("params", "params_bytes_per_device", "params"),
        ("optimizer (Adam mu, nu)", "optimizer_bytes_per_device", "optimizer"),
        ("float32 master copy", "master_bytes_per_device", "master"),
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
    tuning = (f"LoRA rank {p['lora_rank']}, {p['trainable_params'] / 1e6:.1f}M trainable"
              if p["lora_rank"] else "full fine-tuning")  # fmt: skip
    head = (
        f"{p['model']} ({p['num_params'] / 1e9:.2f}B) on {p['mesh']} ({p['devices']} devices), "
        f"sharding={p['sharding']}, attention={p['attention']}, T={p['seq_len']}, "
        f"{p['minibatch_rows']} rows/update in {p['micro_batches']} micro-batches, "
        f"{tuning}, {p['param_dtype']} params"
    )
    lines = [head, f"{'per device':<30} {'GiB':>8}  source", "-" * 78]
    for label, key, src in rows:
        if key not in p:
            continue
        lines.append(f"{label:<30} {_gib(p.get(key))}  {p['sources'].get(src, '') if src else ''}")
    if "argument_bytes_measured" in p:
        lines.append(
            f"XLA's argument bytes {_gib(p['argument_bytes_measured']).strip()} GiB = planned "
            f"params + optimizer + master + batch {_gib(p['argument_bytes_planned']).strip()} GiB"
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
        f"run it: {p['command']}",
    ]  # fmt: skip
    return "\n".join(lines)


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
