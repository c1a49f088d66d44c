r"""Train the constraint-wise reward model on pseudo-label pairs; print a one-line JSON summary.

  python launch/train_rm.py --config=configs/rm_tiny.py

The summary holds heldout_accuracy (RM decision P > 0.5 vs the pseudo-label), its per-id
breakdown, and verifier_agreement (RM decision vs the rule verifier on hard constraints of the
held-out instructions). See configs/rm_tiny.py for the data, model and sharding options.
"""

import json
import logging
import sys

from absl import app
from ml_collections import config_flags

from ifrl_jax import host_memory, reward_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/rm_*.py).")
_MALLOC = host_memory.define_flag()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(host_memory.configure(_MALLOC.value), file=sys.stderr)  # before JAX makes its backend
    # orbax logs every checkpoint step at INFO through absl; keep its warnings only.
    quiet = lambda r: r.levelno >= logging.WARNING or "orbax" not in r.pathname
    logging.getLogger("absl").addFilter(quiet)
    summary = reward_model.train(_CONFIG.value)
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
