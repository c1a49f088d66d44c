"""GRPO training: `python launch/train_grpo.py [--config=configs/<experiment>.py] [--config.k=v]`.

With no flags it runs the CPU default (configs/default_cpu.py): the method's whole pipeline.
Multi-host: pass --coordinator_address/--num_processes/--process_id, or --distributed=auto on
clusters JAX detects (TPU pods, SLURM, Open MPI); see WORKSPACE.md.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # configs/ is importable

from ifrl_jax import cli

_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "configs", "default_cpu.py")
_CONFIG = cli.define_config(_DEFAULT, "experiment config file")


def main() -> None:
    from ifrl_jax.jobs import grpo

    summary = grpo.run(cli.config_value(_CONFIG))
    if cli.is_main_process() and summary["pass_rate_after"] is not None:
        print(f"held-out hard-constraint pass rate: before GRPO {summary['pass_rate_before']:.3f}"
              f", after {summary['pass_rate_after']:.3f}")  # fmt: skip
        if summary.get("soft_pass_rate_after") is not None:  # by the soft ids' hidden oracle
            print(f"held-out soft-constraint pass rate: before GRPO "
                  f"{summary['soft_pass_rate_before']:.3f}, after "
                  f"{summary['soft_pass_rate_after']:.3f}")  # fmt: skip
    cli.print_summary(summary)


if __name__ == "__main__":
    cli.run(main, model=True, distributed=True)
