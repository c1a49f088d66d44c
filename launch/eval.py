r"""Evaluates a policy with the jitted sampler on IFEval's 541 prompts and held-out records.

Writes responses.jsonl ({"prompt", "response"}, what google's IFEval tools read),
eval_results_strict.jsonl / eval_results_loose.jsonl, samples.jsonl (--n > 1),
records_results.jsonl (--records) and summary.json to --output_dir; prints the four accuracies,
the per-id table, pass@k, the per-level table of the records, then one JSON line.

  python launch/eval.py --hf_path=/ckpts/Qwen2.5-7B-Instruct --output_dir=/tmp/ifeval
  python launch/eval.py --checkpoint=/tmp/ifrl_jax/run --records=heldout.jsonl \
    --temperature=1.0 --n=8 --output_dir=/tmp/eval_run
"""

import json
import sys

from absl import app, flags

from ifrl_jax import evaluate, host_memory, planner
from ifrl_jax.verifiers import SpecError

_HF = flags.DEFINE_string("hf_path", "", "HF Qwen2 directory of the policy.")
_CKPT = flags.DEFINE_string("checkpoint", "", "GRPO workdir (latest ckpt/<step>) or ckpt/<step>.")
_PRESET = flags.DEFINE_string("preset", "", "--checkpoint: model preset (default: its config).")
_OVERRIDES = flags.DEFINE_string("overrides", "", "--checkpoint: ModelConfig fields, k=v,k=v.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Tokenizer dir (default: next to the model).")
_PROMPTS = flags.DEFINE_string("prompts", evaluate.IFEVAL_PROMPTS, "IFEval prompts; '' = none.")
_RECORDS = flags.DEFINE_string("records", "", "Held-out records (JSONL/Parquet, reference schema).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Directory for the result files.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N prompts and records (0 = all).")
_MESH = flags.DEFINE_string("mesh", "data:1,fsdp:-1,tp:1", "Mesh shape, axis:size pairs.")
_SHARDING = flags.DEFINE_string("sharding", "fsdp", "Sharding preset (ifrl_jax.sharding.RULES).")
_TEMP = flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass (1 = off).")
_N = flags.DEFINE_integer("n", 1, "Samples per prompt (pass@k); > 1 needs --temperature > 0.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 1024, "Response length limit.")
_MAX_PROMPT = flags.DEFINE_integer("max_prompt_len", 2048, "Longer prompts keep their end.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Prompts per sampler call.")
_THINK = flags.DEFINE_string("think_mode", "none", "none | required | optional (reasoning).")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "float32", "Param dtype.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
_CACHE_DTYPE = flags.DEFINE_string("cache_dtype", "bfloat16", "KV cache dtype.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flag_as_required("output_dir")
_MALLOC = host_memory.define_flag()


def _overrides(spec: str) -> dict:
    out = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--overrides={spec!r}: {item!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)  # numbers, true/false
        except ValueError:
            out[key.strip()] = value  # strings such as remat=full
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(host_memory.configure(_MALLOC.value), file=sys.stderr)  # before JAX makes its backend
    try:
        text, summary = evaluate.run(
            output_dir=_OUTPUT.value, hf_path=_HF.value, checkpoint=_CKPT.value,
            preset=_PRESET.value, overrides=_overrides(_OVERRIDES.value),
            tokenizer_path=_TOKENIZER.value, prompts_path=_PROMPTS.value,
            records_path=_RECORDS.value, limit=_LIMIT.value,
            mesh_shape=planner.parse_mesh(_MESH.value, flag="mesh"),
            sharding_preset=_SHARDING.value, temperature=_TEMP.value, top_p=_TOP_P.value,
            n=_N.value, max_new_tokens=_MAX_NEW.value, max_prompt_len=_MAX_PROMPT.value,
            batch_size=_BATCH.value, think_mode=_THINK.value, param_dtype=_PARAM_DTYPE.value,
            dtype=_DTYPE.value, cache_dtype=_CACHE_DTYPE.value, seed=_SEED.value,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, SpecError) as e:  # messages name the flag or file
        sys.exit(f"error: {e}")
    print(text)
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
