r"""Scale-study planner: per-device memory and FLOPs of GRPO on a mesh, and whether it fits.

The train step and the sampler are lowered and compiled for fake CPU devices (as many as the
mesh needs); see ifrl_jax/planner.py for what is measured and what is estimated. Prints a table,
then one JSON line (params/optimizer/total bytes per device, fits, ...).

  python launch/plan.py --model=qwen2_5_7b --mesh=fsdp:8 --sharding=fsdp --accelerator=a100-80gb
  python launch/plan.py --model=qwen2_5_7b --sweep --meshes='fsdp:8;fsdp:16;fsdp:24;fsdp:4,tp:2'

One GPU: 7B LoRA GRPO on 1 x A100-80GB, 0.5B bf16 full fine-tuning on one 24 GB GPU (the
settings of planner.ONE_GPU and configs/; each table ends with the train command):

  python launch/plan.py --one_gpu
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli

_MESH = flags.DEFINE_string("mesh", "fsdp:8", "Mesh shape, axis:size pairs over data,fsdp,tp.")
_SWEEP = flags.DEFINE_boolean("sweep", False, "Plan every --presets entry over --meshes.")
_ONE_GPU = flags.DEFINE_boolean("one_gpu", False, "Plan the one-GPU runs (planner.ONE_GPU).")
_PRESETS = flags.DEFINE_list("presets", "replicated,fsdp,tp,fsdp_tp", "Presets for --sweep.")
_MESHES = flags.DEFINE_string(
    "meshes",
    "fsdp:8;fsdp:16;fsdp:24;fsdp:4,tp:2;fsdp:8,tp:2;fsdp:12,tp:2",
    "Meshes for --sweep, separated by ';'.",
)
_FLAGS = {  # planner.PlanConfig fields: (define, default, help)
    "model": (flags.DEFINE_string, "qwen2_5_7b", "Model preset (ifrl_jax.models.PRESETS)."),
    "sharding": (flags.DEFINE_string, "fsdp", "Sharding preset (ifrl_jax.sharding.RULES)."),
    "accelerator": (
        flags.DEFINE_string,
        "a100-80gb",
        "a100-40gb|a100-80gb|h100-80gb|h200-141gb|l4-24gb|a10-24gb|tpu-v5e|tpu-v5p",
    ),
    "prompt_len": (flags.DEFINE_integer, 2048, "Prompt bucket P."),
    "response_len": (flags.DEFINE_integer, 8192, "max_new_tokens M (train rows are P + M tokens)."),
    "n": (flags.DEFINE_integer, 5, "Rollouts per prompt."),
    "prompts_per_batch": (flags.DEFINE_integer, 384, "Prompts per rollout batch."),
    "minibatch_prompts": (flags.DEFINE_integer, 96, "Prompts per optimizer update."),
    "ppo_epochs": (flags.DEFINE_integer, 1, "Passes over each rollout batch."),
    "micro_batch_rows": (flags.DEFINE_integer, 1, "Rows per data-parallel shard per micro-batch."),
    "sample_prompts": (flags.DEFINE_integer, 0, "Prompts per sampler call; 0 = the whole batch."),
    "engine": (flags.DEFINE_string, "continuous", "Sampler: continuous (slots) | static."),
    "engine_slots": (flags.DEFINE_integer, 0, "Continuous engine slots; 0 = sample_prompts x n."),
    "remat": (flags.DEFINE_string, "full", "none|full|dots"),
    "param_dtype": (flags.DEFINE_string, "float32", "Param dtype (bfloat16: + fp32 master)."),
    "lora_rank": (flags.DEFINE_integer, 0, "LoRA rank; 0 = full fine-tuning."),
    "lora_targets": (flags.DEFINE_string, "all", "LoRA projections, comma-separated, or all."),
    "dtype": (flags.DEFINE_string, "bfloat16", "Compute dtype."),
    "cache_dtype": (flags.DEFINE_string, "bfloat16", "KV cache dtype."),
    "attention": (flags.DEFINE_string, "xla", "xla: measured only | flash: also the estimate."),
    "kl_coef": (flags.DEFINE_float, 0.01, "> 0 keeps a reference copy of the params on devices."),
    "headroom": (flags.DEFINE_float, 0.9, "Usable fraction of device memory."),
    "compile": (flags.DEFINE_boolean, True, "Compile (measure temporaries); --nocompile lowers."),
}
for _name, (_define, _default, _help) in _FLAGS.items():
    _define(_name, _default, _help)


def main() -> None:
    from ifrl_jax import planner, sharding
    from ifrl_jax.jobs import plan

    mesh = sharding.parse_mesh(_MESH.value, flag="mesh")
    values = {name: flags.FLAGS[name].value for name in _FLAGS}
    config = planner.PlanConfig(mesh=tuple(mesh.items()), **values)
    sweep = planner.parse_meshes(_MESHES.value, flag="meshes") if _SWEEP.value else []
    named = list(planner.ONE_GPU) if _ONE_GPU.value else []
    cli.print_summary(plan.run(config, sweep=sweep, presets=_PRESETS.value, named=named))


if __name__ == "__main__":
    cli.run(main, model=False)
