r"""Split instruction records into curriculum levels L1..LK and write them as JSONL.

Reads the reference schema (JSONL or Parquet), validates every record, writes every level of every
record (L_k keeps the first k constraints; its prompt is the seed task plus c_1..c_k) and prints a
one-line JSON summary (records_in, records_out, per_level, skipped).

  python launch/build_data.py \
    --input=../shared/upstream-verl-if-data/train.parquet --output=/tmp/levels.jsonl
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli

_INPUT = flags.DEFINE_list("input", None, "Input JSONL/Parquet file(s), comma-separated.")
_OUTPUT = flags.DEFINE_string("output", None, "Output JSONL file.")
_ON_ERROR = flags.DEFINE_enum(
    "on_error", "strict", ["strict", "skip"], "Raise on the first bad record, or skip and count."
)
flags.mark_flags_as_required(["input", "output"])


def main() -> None:
    from ifrl_jax.jobs import levels

    cli.print_summary(levels.run(_INPUT.value, _OUTPUT.value, on_error=_ON_ERROR.value))


if __name__ == "__main__":
    cli.run(main, model=False)
