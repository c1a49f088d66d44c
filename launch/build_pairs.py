r"""Build the reward model's pseudo-label pairs; end with a one-line JSON quality summary.

--format=policy (default): sample the policy on every level L_0..L_K of each instruction; its
response to L_k is a positive and to L_{k-1} a negative for c_k. --format=reference: upstream
chosen/rejected pair data. --format=responses: one known response per record (--responses).
The summary holds pos_hard_pass_rate / neg_hard_pass_rate: how often positives and negatives of
hard constraints satisfy them by the rule verifiers (the pseudo-label quality check).

  # the tiny random policy on the shipped instruction set (CPU, a minute):
  python launch/build_pairs.py --input=ifrl_jax/assets/instructions/train.jsonl \
    --output=/tmp/pairs.jsonl --limit=40 --max_new_tokens=32
  # a real policy on GPU:
  python launch/build_pairs.py --input=/data/train.parquet --output=/data/pairs.jsonl \
    --policy=/ckpt/qwen2.5-7b-instruct --tokenizer=/ckpt/qwen2.5-7b-instruct \
    --max_new_tokens=2048 --batch_size=64 --mesh=data:1,fsdp:-1,tp:1 --sharding=fsdp
  # upstream's pairs:
  python launch/build_pairs.py --format=reference \
    --input=../shared/upstream-verl-if-data/train_from_parquet.jsonl --output=/tmp/ref.jsonl
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

import ml_collections
from absl import flags

from ifrl_jax import cli

F = flags.FLAGS
flags.DEFINE_list("input", None, "Record JSONL/Parquet file(s), comma-separated.")
flags.DEFINE_string("output", None, "Output pair JSONL.")
flags.DEFINE_enum("format", "policy", ["policy", "reference", "responses"], "Label source.")
flags.DEFINE_string("responses", "", "--format=responses: {prompt, response} JSONL.")
flags.DEFINE_integer("limit", 0, "Use only the first N records (0 = all).")
flags.DEFINE_string("policy", "", "HF directory of the policy (else --preset).")
flags.DEFINE_string("policy_checkpoint", "", "Params for --preset: HF or orbax dir.")
flags.DEFINE_string("preset", "tiny", "Model preset when --policy is empty.")
flags.DEFINE_string("tokenizer", "", "Tokenizer directory ('' = the tiny one).")
flags.DEFINE_integer("seed", 0, "Sampling seed (and random-init seed).")
flags.DEFINE_integer("batch_size", 32, "Prompts per sampler call.")
flags.DEFINE_integer("max_prompt_len", 512, "Longest prompt (tokens, left-cut).")
flags.DEFINE_integer("max_new_tokens", 256, "Longest response in tokens.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (0 = greedy).")
flags.DEFINE_float("top_p", 1.0, "Nucleus mass (1 = off).")
flags.DEFINE_integer("num_samples", 1, "Responses per prompt (pairs per level).")
flags.DEFINE_enum("engine", "continuous", ["continuous", "static"], "Sampler (samplers.py).")
flags.DEFINE_integer("engine_slots", 0, "Continuous engine's slots (0 = batch_size x num_samples).")
flags.DEFINE_integer("engine_chunk", 32, "Continuous engine's prefill chunk (tokens).")
flags.DEFINE_string("mesh", "", "Mesh shape as axis:size pairs, e.g. data:1,fsdp:-1 ('' = none).")
flags.DEFINE_string("sharding", "fsdp", "Sharding rules preset.")
flags.mark_flags_as_required(["input", "output"])
_KEYS = ("input", "output", "format", "responses", "limit", "policy", "policy_checkpoint",
         "preset", "tokenizer", "seed", "batch_size", "max_prompt_len", "max_new_tokens",
         "temperature", "top_p", "num_samples", "sharding", "engine", "engine_slots",
         "engine_chunk")  # fmt: skip


def main() -> None:
    from ifrl_jax import sharding
    from ifrl_jax.jobs import pairs

    config = ml_collections.ConfigDict({k: F[k].value for k in _KEYS})
    config.mesh = sharding.parse_mesh(F.mesh, flag="--mesh") if F.mesh else {}
    cli.print_summary(pairs.run(config))


if __name__ == "__main__":
    cli.run(main, model=True, distributed=True)
