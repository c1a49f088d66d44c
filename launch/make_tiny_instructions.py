r"""Generate the small instruction set shipped for the CPU default job (deterministic, seeded).

Writes `train.jsonl` (280 records, 1-3 constraints each, reference schema), `heldout.jsonl`
(200 records on seed tasks never trained on) and `train_responses.jsonl` (one verified template
response per training record, for the warm-start SFT) into ifrl_jax/assets/instructions/, and
prints one `<path>: <n> rows` line per file. The generator is ifrl_jax/jobs/tiny_instructions.py:
the records come from ifrl_jax.synthesis (the stage launch/synthesize.py runs) on the shipped
tiny_seeds_{train,heldout}.jsonl and tiny_taxonomy.json; the job adds the template responses.

  python launch/make_tiny_instructions.py            # rewrite the files
  python launch/make_tiny_instructions.py --check    # fail if the shipped files differ
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

from absl import flags

from ifrl_jax import cli

_OUT_DIR = flags.DEFINE_string(
    "out_dir",
    os.path.join(os.path.dirname(__file__), "..", "ifrl_jax", "assets", "instructions"),
    "Where to write the files.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_CHECK = flags.DEFINE_bool("check", False, "Compare with the files on disk instead of writing.")


def main() -> None:
    from ifrl_jax.jobs import tiny_instructions

    tiny_instructions.run(_OUT_DIR.value, seed=_SEED.value, check=_CHECK.value)


if __name__ == "__main__":
    cli.run(main, model=False)
