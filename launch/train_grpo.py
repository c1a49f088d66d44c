"""GRPO training: `python launch/train_grpo.py --config=configs/<experiment>.py [--config.k=v]`.

Multi-host: pass --coordinator_address/--num_processes/--process_id, or --distributed=auto
on clusters JAX detects (TPU pods, SLURM, Open MPI); see WORKSPACE.md.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ifrl_jax import host_memory

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # configs/ is importable

_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "configs", "default_cpu.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT, "experiment config file")
_DIST = flags.DEFINE_enum("distributed", "off", ["off", "auto"], "jax.distributed from env")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes")
_PID = flags.DEFINE_integer("process_id", None, "this process's index")
_MALLOC = host_memory.define_flag()


def main(argv):
    del argv
    print(host_memory.configure(_MALLOC.value), file=sys.stderr)  # before JAX makes its backend
    import jax

    if _COORD.value:
        jax.distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
    elif _DIST.value == "auto":
        jax.distributed.initialize()
    from ifrl_jax import train

    logging.set_verbosity(logging.INFO)
    summary = train.train(_CONFIG.value)
    if jax.process_index() == 0:
        print(f"held-out hard-constraint pass rate: before GRPO {summary['pass_rate_before']:.3f}"
              f", after {summary['pass_rate_after']:.3f}")  # fmt: skip
        print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
