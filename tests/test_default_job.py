"""The CPU default job as a user runs it: `python launch/train_grpo.py` with only its step
counts shrunk, in a fresh process on one CPU device, and what its console shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The default config's own settings; only how much work each stage does is cut.
SHRINK = {
    "sft.steps": 3, "pipeline.limit": 4, "pipeline.rm.num_steps": 2, "train.steps": 1,
    "train.eval_every": 1, "train.checkpoint_every": 1, "pipeline.rm.log_every": 1,
}  # fmt: skip


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("default")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    # The held-out evaluation (three of them) on the first 20 of the 200 shipped records.
    heldout = workdir.parent / "heldout20.jsonl"
    shipped = REPO / "ifrl_jax" / "assets" / "instructions" / "heldout.jsonl"
    heldout.write_text("".join(open(shipped).readlines()[:20]))
    cmd = [sys.executable, str(REPO / "launch" / "train_grpo.py"), f"--config.workdir={workdir}"]
    cmd += [f"--config.{k}={v}" for k, v in {**SHRINK, "data.heldout": heldout}.items()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_default_config_runs_its_own_path(default_run):
    """The shared verifier worker (verifier_processes=0), no KL (no reference pass), two PPO passes
    (old log-probs), the pipeline's RM scoring the soft constraints (judged against their hidden
    oracle): each shows in the metrics."""
    workdir, proc = default_run
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("pass_rate_init", "pass_rate_before", "pass_rate_after", "rm_heldout_accuracy",
                "soft_pass_rate_before", "soft_pass_rate_after"):  # fmt: skip
        assert 0.0 <= summary[key] <= 1.0, key
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1]
    step = rows[1]
    assert step["train/kl_mean"] == 0.0 and step["train/kl_loss"] == 0.0  # kl_coef = 0
    assert step["train/ratio_max"] != 1.0 or step["train/ratio_min"] != 1.0  # 2 passes: ratios
    assert step["reward/soft_count"] > 0 and 0.0 < step["reward/soft_mean"] < 1.0  # the RM
    assert 0.0 <= step["reward/rm_agreement"] <= 1.0  # the RM against the soft ids' oracle
    assert 0.0 <= step["eval/soft_pass_rate"] <= 1.0
    assert step["time/verify"] >= 0.0 and "eval/constraint_pass_rate" in step
    for stage in ("sft/DONE", "rm/DONE", "pairs.jsonl", "levels.jsonl", "hf_final/config.json"):
        assert (workdir / stage).exists(), stage


def test_console_fits_on_one_screen(default_run):
    """Stages, progress bars (a bar counted once), results and the JSON line; no third-party
    INFO (orbax's checkpoint steps) and no transformers advisory."""
    _, proc = default_run
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) <= 80, "\n".join(lines)
    text = proc.stdout + proc.stderr
    for noise in ("orbax", "PyTorch was not found", "checkpoint_manager", "Traceback"):
        assert noise not in text, noise
    assert "held-out hard-constraint pass rate: before GRPO" in proc.stdout
