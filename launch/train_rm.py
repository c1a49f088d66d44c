r"""Train the constraint-wise reward model on pseudo-label pairs; print a one-line JSON summary.

  python launch/train_rm.py                      # the CPU default: configs/rm_tiny.py
  python launch/train_rm.py --config=configs/rm_tiny.py --config.pairs=/tmp/pairs.jsonl

The summary holds heldout_accuracy (RM decision P > 0.5 vs the pseudo-label), its per-id
breakdown, and verifier_agreement (RM decision vs the rule verifier on hard constraints of the
held-out instructions). See configs/rm_tiny.py for the data, model and sharding options.
Multi-host: the same flags as launch/train_grpo.py.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # configs/ is importable

from ifrl_jax import cli

_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "configs", "rm_tiny.py")
_CONFIG = cli.define_config(_DEFAULT, "Config file (configs/rm_*.py).")


def main() -> None:
    from ifrl_jax.jobs import reward_model

    cli.print_summary(reward_model.run(cli.config_value(_CONFIG)))


if __name__ == "__main__":
    cli.run(main, model=True, distributed=True)
