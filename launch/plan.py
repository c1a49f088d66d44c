r"""Scale-study planner: per-device memory and FLOPs of GRPO on a mesh, and whether it fits.

The train step and the sampler are lowered and compiled for fake CPU devices (as many as the
mesh needs); see ifrl_jax/planner.py for what is measured and what is estimated. Prints a table,
then one JSON line (params/optimizer/total bytes per device, fits, ...).

  python launch/plan.py --model=qwen2_5_7b --mesh=fsdp:8 --sharding=fsdp --accelerator=a100-80gb
  python launch/plan.py --model=qwen2_5_7b --sweep --meshes='fsdp:8;fsdp:16;fsdp:24;fsdp:4,tp:2'
"""

import json
import math
import os
import re
import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", "qwen2_5_7b", "Model preset (ifrl_jax.models.PRESETS).")
_MESH = flags.DEFINE_string("mesh", "fsdp:8", "Mesh shape, axis:size pairs over data,fsdp,tp.")
_SHARDING = flags.DEFINE_string("sharding", "fsdp", "Sharding preset (ifrl_jax.sharding.RULES).")
_ACCEL = flags.DEFINE_string(
    "accelerator", "a100-80gb", "a100-40gb|a100-80gb|h100-80gb|tpu-v5e|tpu-v5p"
)
_SWEEP = flags.DEFINE_boolean("sweep", False, "Plan every --presets entry over --meshes.")
_PRESETS = flags.DEFINE_string("presets", "replicated,fsdp,tp,fsdp_tp", "Presets for --sweep.")
_MESHES = flags.DEFINE_string(
    "meshes",
    "fsdp:8;fsdp:16;fsdp:24;fsdp:4,tp:2;fsdp:8,tp:2;fsdp:12,tp:2",
    "Meshes for --sweep, separated by ';'.",
)
_INT = {  # PlanConfig integer fields: (default, help)
    "prompt_len": (2048, "Prompt bucket P."),
    "response_len": (8192, "max_new_tokens M (train rows are P + M tokens)."),
    "n": (5, "Rollouts per prompt."),
    "prompts_per_batch": (384, "Prompts per rollout batch."),
    "minibatch_prompts": (96, "Prompts per optimizer update."),
    "ppo_epochs": (1, "Passes over each rollout batch."),
    "micro_batch_rows": (1, "Rows per data-parallel shard per micro-batch."),
    "sample_prompts": (0, "Prompts per sampler call; 0 = the whole rollout batch (as train.py)."),
}
for _name, (_default, _help) in _INT.items():
    flags.DEFINE_integer(_name, _default, _help)
_STR = {
    "remat": ("full", "none|full|dots"),
    "param_dtype": ("float32", "Param (and Adam moment) dtype."),
    "dtype": ("bfloat16", "Compute dtype."),
    "cache_dtype": ("bfloat16", "KV cache dtype."),
    "attention": ("xla", "xla: measured only | flash: also the cuDNN flash-attention estimate."),
}
for _name, (_default, _help) in _STR.items():
    flags.DEFINE_string(_name, _default, _help)
flags.DEFINE_float("kl_coef", 0.01, "> 0 keeps a reference copy of the params on the devices.")
flags.DEFINE_float("headroom", 0.9, "Usable fraction of device memory.")
flags.DEFINE_boolean("compile", True, "Compile (measure temporaries); --nocompile only lowers.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    specs = _MESHES.value.split(";") if _SWEEP.value else [_MESH.value]
    sizes = [math.prod(int(s) for s in re.findall(r":\s*(\d+)", m)) for m in specs]
    os.environ["JAX_PLATFORMS"] = "cpu"  # fake devices, set before jax is imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={max(sizes + [1])}"
    )
    from ifrl_jax import planner

    f = flags.FLAGS
    try:
        pc = planner.PlanConfig(
            model=_MODEL.value, mesh=tuple(planner.parse_mesh(_MESH.value).items()),
            sharding=_SHARDING.value, accelerator=_ACCEL.value, kl_coef=f.kl_coef,
            headroom=f.headroom, compile=f.compile,
            **{k: f[k].value for k in (*_INT, *_STR)},
        )  # fmt: skip
        if _SWEEP.value:
            show = lambda r: print(planner.format_sweep([r]).splitlines()[-1], flush=True)
            presets = _PRESETS.value.split(",")
            meshes = planner.parse_meshes(_MESHES.value)
            results = planner.sweep(pc, meshes, presets, progress=show)
            print(planner.format_sweep(results))
            print(json.dumps({"sweep": results}))
        else:
            result = planner.plan(pc)
            print(planner.format_plan(result))
            print(json.dumps(result))
    except ValueError as e:  # bad flag combination: the message names the flag
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
