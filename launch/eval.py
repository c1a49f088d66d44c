r"""Evaluates a policy with the jitted sampler on IFEval's 541 (or IFBench's 294) prompts and
held-out records.

Writes responses.jsonl ({"prompt", "response"}, what google's IFEval tools read),
eval_results_strict.jsonl / eval_results_loose.jsonl, samples.jsonl (--n > 1),
records_results.jsonl (--records) and summary.json to --output_dir; prints the four accuracies,
the per-id table, pass@k, the per-level table of the records, then one JSON line.

  python launch/eval.py --hf_path=/ckpts/Qwen2.5-7B-Instruct --output_dir=/tmp/ifeval
  python launch/eval.py --hf_path=/ckpts/Qwen2.5-7B-Instruct --benchmark=ifbench \
    --output_dir=/tmp/ifbench
  python launch/eval.py --checkpoint=/tmp/ifrl_jax/run --records=heldout.jsonl \
    --temperature=1.0 --n=8 --output_dir=/tmp/eval_run
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli

_MESH = flags.DEFINE_string("mesh", "data:1,fsdp:-1,tp:1", "Mesh shape, axis:size pairs.")
_OVERRIDES = flags.DEFINE_string("overrides", "", "--checkpoint: ModelConfig fields, k=v,k=v.")
_S, _I, _F = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float
_FLAGS = {  # jobs.evaluate.EvalConfig fields: (define, default, help)
    "output_dir": (_S, None, "Directory for the result files."),
    "hf_path": (_S, "", "HF Qwen2 directory of the policy."),
    "checkpoint": (_S, "", "GRPO workdir (latest ckpt/<step>) or ckpt/<step>."),
    "preset": (_S, "", "--checkpoint: model preset (default: its config)."),
    "tokenizer": (_S, "", "Tokenizer dir (default: next to the model)."),
    "benchmark": (_S, "ifeval", "ifeval, ifbench, or both: ifeval,ifbench (one run)."),
    "prompts": (_S, None, "Prompts JSONL (default: the benchmark's shipped ones); '' = none."),
    "records": (_S, "", "Held-out records (JSONL/Parquet, reference schema)."),
    "limit": (_I, 0, "Only the first N prompts and records (0 = all)."),
    "sharding": (_S, "fsdp", "Sharding preset (ifrl_jax.sharding.RULES)."),
    "temperature": (_F, 0.0, "0 = greedy."),
    "top_p": (_F, 1.0, "Nucleus mass (1 = off)."),
    "n": (_I, 1, "Samples per prompt (pass@k); > 1 needs --temperature > 0."),
    "max_new_tokens": (_I, 1024, "Response length limit."),
    "max_prompt_len": (_I, 2048, "Longer prompts keep their end."),
    "batch_size": (_I, 64, "Prompts per sampler call."),
    "think_mode": (_S, "none", "none | required | optional (reasoning)."),
    "param_dtype": (_S, "float32", "Param dtype."),
    "dtype": (_S, "bfloat16", "Compute dtype."),
    "cache_dtype": (_S, "bfloat16", "KV cache dtype."),
    "seed": (_I, 0, "Sampling seed."),
}
for _name, (_define, _default, _help) in _FLAGS.items():
    _define(_name, _default, _help)
flags.mark_flag_as_required("output_dir")


def main() -> None:
    from ifrl_jax import sharding
    from ifrl_jax.jobs import evaluate

    values = {name: flags.FLAGS[name].value for name in _FLAGS}
    config = evaluate.EvalConfig(
        mesh=sharding.parse_mesh(_MESH.value, flag="mesh"),
        overrides=evaluate.parse_overrides(_OVERRIDES.value, flag="overrides"),
        **{name: value for name, value in values.items() if value is not None},
    )
    cli.print_summary(evaluate.run(config))


if __name__ == "__main__":
    cli.run(main, model=True, distributed=True)
