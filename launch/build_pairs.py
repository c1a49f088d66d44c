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
    --max_new_tokens=2048 --batch_size=64 --mesh=data=1,fsdp=-1,tp=1 --sharding=fsdp
  # upstream's pairs:
  python launch/build_pairs.py --format=reference \
    --input=../shared/upstream-verl-if-data/train_from_parquet.jsonl --output=/tmp/ref.jsonl
"""

import json
import sys

from absl import app, flags

from ifrl_jax import host_memory, pairs

_INPUT = flags.DEFINE_list("input", None, "Record JSONL/Parquet file(s), comma-separated.")
_OUTPUT = flags.DEFINE_string("output", None, "Output pair JSONL.")
_FORMAT = flags.DEFINE_enum("format", "policy", sorted(pairs.BUILDERS), "Where labels come from.")
_RESPONSES = flags.DEFINE_string("responses", "", "--format=responses: {prompt, response} JSONL.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Use only the first N records (0 = all).")
_POLICY = flags.DEFINE_string("policy", "", "HF directory of the policy (else --preset).")
_CHECKPOINT = flags.DEFINE_string("policy_checkpoint", "", "Params for --preset: HF or orbax dir.")
_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset when --policy is empty.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "", "Tokenizer directory ('' = the tiny one).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and random-init seed).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Prompts per sampler call.")
_PROMPT_LEN = flags.DEFINE_integer("max_prompt_len", 512, "Longest prompt (tokens, left-cut).")
_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Longest response in tokens.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (0 = greedy).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass (1 = off).")
_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Responses per prompt (pairs per level).")
_MESH = flags.DEFINE_string("mesh", "", "Mesh shape, e.g. data=1,fsdp=-1,tp=1 ('' = no mesh).")
_SHARDING = flags.DEFINE_string("sharding", "fsdp", "Sharding rules preset.")
_MALLOC = host_memory.define_flag()
flags.mark_flags_as_required(["input", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(host_memory.configure(_MALLOC.value), file=sys.stderr)  # before JAX makes its backend
    mesh = {k: int(v) for k, v in (kv.split("=") for kv in _MESH.value.split(",") if kv)}
    summary = pairs.build(
        _INPUT.value, _OUTPUT.value, fmt=_FORMAT.value, limit=_LIMIT.value,
        responses=_RESPONSES.value, policy=_POLICY.value, policy_checkpoint=_CHECKPOINT.value,
        preset=_PRESET.value, tokenizer=_TOKENIZER.value, seed=_SEED.value,
        batch_size=_BATCH.value, max_prompt_len=_PROMPT_LEN.value,
        max_new_tokens=_NEW_TOKENS.value, temperature=_TEMPERATURE.value, top_p=_TOP_P.value,
        num_samples=_SAMPLES.value, mesh=mesh, sharding=_SHARDING.value,
    )  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
