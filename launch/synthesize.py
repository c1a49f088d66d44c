r"""Synthesize multi-constraint instructions from your seed tasks and a constraint taxonomy.

Reads seed tasks (JSONL, `{"instruction", "input", "output"}` per line, as upstream's
seed_data.jsonl) and a taxonomy (JSON: hard ids with kwargs draws and phrasings, soft ids with
texts, conflicting pairs; format in ifrl_jax/synthesis.py), and writes `per_seed` records per
task in the training schema, each with a conflict-free list of MIN..MAX constraints; with
--heldout_fraction, the records of that share of the tasks go to a held-out file. Deterministic
for --seed; a bad input is one `error: file:line: ...` line (exit status 2) and writes nothing.
Prints one `<path>: <n> rows` line per file. The job is ifrl_jax/jobs/synthesize.py.

  python launch/synthesize.py --seeds=../shared/upstream-verl-if-data/seed_data.jsonl \
    --output=/tmp/if/train.jsonl --per_seed=2 --constraints=1,5 --heldout_fraction=0.05
  # the shipped tiny set's inputs (launch/make_tiny_instructions.py adds its responses):
  python launch/synthesize.py --seeds=ifrl_jax/assets/instructions/tiny_seeds_train.jsonl \
    --taxonomy=ifrl_jax/assets/instructions/tiny_taxonomy.json --output=/tmp/tiny.jsonl \
    --per_seed=7 --constraints=1,3 --weights=0.25,0.4,0.35
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli

_ASSETS = os.path.join(os.path.dirname(__file__), "..", "ifrl_jax", "assets", "instructions")
_SEEDS = flags.DEFINE_string("seeds", None, "Seed tasks, JSONL (instruction, input, output).")
_TAXONOMY = flags.DEFINE_string(
    "taxonomy", os.path.join(_ASSETS, "ifeval_taxonomy.json"), "Constraint taxonomy, JSON."
)
_OUTPUT = flags.DEFINE_string("output", None, "Training records, JSONL.")
_PER_SEED = flags.DEFINE_integer("per_seed", 2, "Records per seed task.")
_CONSTRAINTS = flags.DEFINE_list("constraints", ["1", "5"], "MIN,MAX constraints per record.")
_WEIGHTS = flags.DEFINE_list("weights", [], "Relative odds of MIN..MAX constraints ('' = even).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_HELDOUT = flags.DEFINE_float("heldout_fraction", 0.0, "Share of seed tasks held out.")
_HELDOUT_OUTPUT = flags.DEFINE_string(
    "heldout_output", "", "Held-out records, JSONL ('' = <output>.heldout.jsonl)."
)
flags.mark_flags_as_required(["seeds", "output"])


def main() -> None:
    from ifrl_jax.jobs import synthesize

    synthesize.run(
        _SEEDS.value,
        _TAXONOMY.value,
        _OUTPUT.value,
        per_seed=_PER_SEED.value,
        constraints=_CONSTRAINTS.value,
        weights=_WEIGHTS.value,
        seed=_SEED.value,
        heldout_fraction=_HELDOUT.value,
        heldout_output=_HELDOUT_OUTPUT.value,
    )


if __name__ == "__main__":
    cli.run(main, model=False)
