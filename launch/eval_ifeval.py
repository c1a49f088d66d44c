r"""IFEval (or IFBench) evaluation of responses, compatible with instruction_following_eval.

Writes eval_results_strict.jsonl and eval_results_loose.jsonl to --output_dir, prints prompt- and
instruction-level accuracy for both modes and a per-id table (IFBench: also per category), and
ends with one JSON line holding the four accuracies. --input_data defaults to the benchmark's
prompts shipped in ifrl_jax/assets (IFEval's 541, IFBench's 294).

  python launch/eval_ifeval.py \
    --input_data=../shared/upstream-verl-if-data/val_set.jsonl \
    --input_response_data=/tmp/responses.jsonl --output_dir=/tmp/ifeval
  python launch/eval_ifeval.py --benchmark=ifbench \
    --input_response_data=/tmp/ifbench_responses.jsonl --output_dir=/tmp/ifbench
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli
from ifrl_jax.verifiers import DEFAULT_TIMEOUT_S

_BENCHMARK = flags.DEFINE_enum("benchmark", "ifeval", ["ifeval", "ifbench"], "Which ids to score.")
_INPUT_DATA = flags.DEFINE_string(
    "input_data", None, "Prompts JSONL (key, prompt, ids, kwargs); default the shipped prompts."
)
_RESPONSES = flags.DEFINE_string("input_response_data", None, "Responses JSONL (prompt, response).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the two result files.")
_PROCESSES = flags.DEFINE_integer("processes", 0, "Verifier worker processes; 0 = in-process.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", DEFAULT_TIMEOUT_S, "Per-check time limit in seconds.")
flags.mark_flags_as_required(["input_response_data", "output_dir"])


def main() -> None:
    from ifrl_jax.verifiers import ifeval  # no JAX: the report's last line is the JSON summary

    print(
        ifeval.run(
            _INPUT_DATA.value,
            _RESPONSES.value,
            _OUTPUT_DIR.value,
            processes=_PROCESSES.value,
            timeout_s=_TIMEOUT_S.value,
            benchmark=_BENCHMARK.value,
        ),
        flush=True,
    )


if __name__ == "__main__":
    cli.run(main, model=False)
