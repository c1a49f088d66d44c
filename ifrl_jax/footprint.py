"""Per-device bytes of sharded pytrees and programs, matmul FLOPs of jaxprs, device capacities.

The planner's measuring instruments (`planner.plan` puts them together):

* `bytes_per_device`: `shard_shape(global shape) x itemsize` summed over the leaves of a pytree
  of arrays or ShapeDtypeStructs carrying NamedShardings. Exact under evenly dividing shardings.
* `abstract_state` / `state_bytes`: the GRPO TrainState as ShapeDtypeStructs with the real
  shardings (`train_step.state_shardings`), and its params / optimizer / float32-gradient bytes.
* `kv_cache_bytes`: the sampler's cache layout ([L, R, S, K, H], `sampling._CACHE_AXES`);
  `engine_cache_bytes`: the continuous engine's slots [L, S, C, K, H] + lanes [L, W, P, K, H].
* `compiled_memory`: XLA's buffer assignment of a lowered program (argument and temporary bytes
  per device of the SPMD-partitioned program).
* `matmul_flops`: every `dot_general` of a jaxpr, scan bodies times their length (XLA's
  `cost_analysis()` counts a loop body once).
"""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.numpy as jnp

from ifrl_jax import engine, models, sampling, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError

GiB = 1 << 30
# Device memory and dense bf16 peak FLOP/s per accelerator.
ACCELERATORS: dict[str, tuple[int, float]] = {
    "a100-40gb": (40 * GiB, 312e12),
    "a100-80gb": (80 * GiB, 312e12),
    "h100-80gb": (80 * GiB, 989e12),
    "h200-141gb": (141 * GiB, 989e12),
    "l4-24gb": (24 * GiB, 121e12),
    "a10-24gb": (24 * GiB, 125e12),
    "tpu-v5e": (16 * GiB, 197e12),
    "tpu-v5p": (95 * GiB, 459e12),
}


def check_accelerator(accelerator: str, headroom: float) -> None:
    """Raises UserError naming --accelerator or --headroom unless both are usable."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator={accelerator!r}: use one of {sorted(ACCELERATORS)}")
    if not 0 < headroom <= 1:
        raise UserError(f"--headroom={headroom}: must be in (0, 1]")


def fits(total_bytes: int, accelerator: str, *, headroom: float = 0.9) -> bool:
    """Whether a per-device peak fits `headroom` x the accelerator's memory."""
    check_accelerator(accelerator, headroom)
    return total_bytes <= int(headroom * ACCELERATORS[accelerator][0])


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a pytree of ShapeDtypeStructs/arrays with NamedShardings.

    Every device holds the same amount under these (evenly dividing) shardings.
    """
    leaves = jax.tree.leaves(tree)
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)


def abstract_state(
    model: models.ModelConfig, mesh, rules, *, optim: ts.OptimConfig | None = None
) -> ts.TrainState:
    """The TrainState as ShapeDtypeStructs carrying the real shardings (default: AdamW): with
    LoRA, optimizer state for the adapters only; with 16-bit params, their float32 master."""
    optim = optim or ts.OptimConfig()  # the optimizer's state layout; its numbers do not matter
    params = models.abstract_params(model)
    state = jax.eval_shape(lambda p: ts.init_state(p, optim=optim, model=model), params)
    return sharding.with_shardings(state, ts.state_shardings(model, optim, mesh, rules))


def abstract_batch(rows: int, seq: int, mesh, *, old_logp: bool, ref_logp: bool) -> dict:
    """A GRPO mini-batch [rows, seq] as ShapeDtypeStructs split over the data axes."""
    sh = sharding.data_sharding(mesh)
    spec = {"input_ids": jnp.int32, "attention_mask": jnp.int32, "response_mask": jnp.int32}
    if old_logp:
        spec["old_logp"] = jnp.float32
    if ref_logp:
        spec["ref_logp"] = jnp.float32
    batch = {k: jax.ShapeDtypeStruct((rows, seq), v, sharding=sh) for k, v in spec.items()}
    batch["advantages"] = jax.ShapeDtypeStruct((rows,), jnp.float32, sharding=sh)
    return batch


def state_bytes(
    model: models.ModelConfig, mesh, rules, *, optim: ts.OptimConfig | None = None
) -> dict[str, int]:
    """Per-device bytes of the params, the optimizer state (+ step), the float32 master copy
    (16-bit params) and the float32 gradients (of the trainable params: with LoRA, adapters)."""
    state = abstract_state(model, mesh, rules, optim=optim)
    train, _ = ts.trainable(model, state.params)
    grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding),
                         train)  # fmt: skip
    return {
        "params": bytes_per_device(state.params),
        "optimizer": bytes_per_device((state.opt_state, state.step)),
        "master": bytes_per_device(state.master),
        "gradients": bytes_per_device(grads),
    }


def kv_cache_bytes(cfg, mesh, rules, *, rows: int, slots: int, cache_dtype: str) -> int:
    """Per-device bytes of the sampler's k and v caches [L, R, S, K, H] under `rules`."""
    shape = (cfg.num_layers, rows, slots, cfg.num_kv_heads, cfg.head_dim)
    spec = sharding.logical_to_spec(sampling._CACHE_AXES, rules)
    shard = jax.sharding.NamedSharding(mesh, spec).shard_shape(shape)
    return 2 * math.prod(shard) * jnp.dtype(cache_dtype).itemsize


def engine_cache_bytes(
    cfg, mesh, rules, *, slots: int, slot_len: int, lanes: int, prompt_len: int, cache_dtype: str
) -> int:
    """Per-device bytes of the continuous engine's k and v caches under `rules`: slots
    [L, slots, slot_len, K, H] (split like the sampler's rows) + prefill lanes
    [L, lanes, prompt_len, K, H] (replicated over the data axes); `engine.py`."""
    total = 0
    for rows, length, axes in ((slots, slot_len, sampling._CACHE_AXES),
                               (lanes, prompt_len, engine._LANE_AXES)):  # fmt: skip
        shape = (cfg.num_layers, rows, length, cfg.num_kv_heads, cfg.head_dim)
        spec = sharding.logical_to_spec(axes, rules)
        shard = jax.sharding.NamedSharding(mesh, spec).shard_shape(shape)
        total += 2 * math.prod(shard) * jnp.dtype(cache_dtype).itemsize
    return total


def compiled_memory(lowered) -> dict[str, int]:
    """Compiles a lowered program; XLA's per-device argument and temporary bytes."""
    stats = lowered.compile().memory_analysis()
    return {"argument": int(stats.argument_size_in_bytes), "temp": int(stats.temp_size_in_bytes)}


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
