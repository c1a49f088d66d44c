"""benchmarks/gpu_check.sh: its --dry path end to end on CPU (every stage at toy size, one JSON
file), the report's handling of a stage that timed out or died, and the one-line refusal without
nvidia-smi."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _env(**kw) -> dict[str, str]:
    """A user's shell: one CPU device (no conftest XLA_FLAGS), this interpreter as PYTHON."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update({"JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, **kw})
    return env


def test_dry_run_fills_every_stage(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry", "--out=check.json"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "check.json"  # relative to the caller's directory
    assert f"{out}:" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["mode"] == "dry" and doc["backend"] == "cpu"
    assert doc["jax_version"] and doc["device_kind"]
    stages = doc["stages"]
    assert list(stages) == ["install", "parity", "train_step", "decode", "grpo"]
    assert all(s["ok"] and "error" not in s for s in stages.values()), stages
    assert stages["install"]["note"] == "skipped (--dry)"
    for name in ("parity", "train_step", "decode", "grpo"):
        assert 0 < stages[name]["seconds"] <= stages[name]["limit_s"], name
        assert f"\n{name} " in proc.stdout  # its row in the table

    p = stages["parity"]
    assert 0 <= p["fp32_max_abs_diff"] < p["fp32_tol"] == 1e-4
    assert 0 < p["bf16_max_abs_diff"] < p["bf16_tol"] == 2 * p["hf_bf16_max_abs_diff"]
    assert p["fp32_max_abs_diff"] < p["bf16_max_abs_diff"]  # bf16 really ran in bf16

    t = stages["train_step"]
    assert 0 < t["mfu"] <= 1.5 and t["tokens_per_s"] > 0 and t["best_s"] > 0
    assert t["peak_source"].startswith("measured")  # no spec-sheet peak for a CPU
    assert abs(t["mfu"] - t["achieved_flops_s"] / t["peak_flops_s"]) < 1e-3 * t["mfu"]
    assert t["executed_matmul_flops"] > t["model_flops"] > 0  # full remat recomputes the forward

    d = stages["decode"]
    assert d["tokens_per_s"] > 0 and d["decode_tokens_per_s"] > 0

    g = stages["grpo"]
    assert g["summary"]["steps"] == 1 and 0 <= g["summary"]["pass_rate_after"] <= 1
    assert g["step_seconds"] > 0 and "train/loss" in g["step_metrics"]
    assert g["overrides"]["train.steps"] == 1


def test_report_records_timeouts_crashes_and_stages_never_run(tmp_path):
    out = str(tmp_path / "check.json")
    gpu_check.save(out, {"stages": {
        "parity": {"ok": True, "fp32_max_abs_diff": 1e-6, "seconds": 3.0},
        "train_step": {"ok": False, "error": "ValueError: bad", "seconds": 1.0},
    }})  # fmt: skip
    results = "install:0:40:150,parity:0:3:60,train_step:1:1:90,decode:124:60:60,grpo:137:9:9"
    assert gpu_check.report(out, results, install_note="pip install x") == 1
    doc = json.loads(Path(out).read_text())
    s = doc["stages"]
    assert doc["ok"] is False and list(s) == ["install", *gpu_check.STAGES]
    assert s["install"] == {"ok": True, "seconds": 40.0, "note": "pip install x", "limit_s": 150.0}
    assert s["parity"]["ok"] and s["parity"]["seconds"] == 3.0  # the stage's own figures kept
    assert s["train_step"]["error"] == "ValueError: bad"  # the stage's own error kept
    assert s["decode"] == {"ok": False, "error": "timed out after 60 s", "seconds": 60.0,
                           "limit_s": 60.0}  # fmt: skip
    assert s["grpo"]["error"] == "timed out after 9 s"

    os.remove(out)  # a stage that died before writing anything; the others never ran
    assert gpu_check.report(out, "install:0:0:0,parity:139:3:60") == 1
    s = json.loads(Path(out).read_text())["stages"]
    assert s["parity"]["error"] == "exited with status 139 without recording its result"
    assert s["grpo"] == {"ok": False, "error": "not run"}


def test_a_failing_stage_does_not_stop_the_others(tmp_path):
    """With a stand-in interpreter whose stages record nothing: train_step exits 3, decode dies of
    SIGKILL, the others exit 0. Every stage still runs, then the report, which names each
    failure; exit status 1."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/bash
echo "$*" >> {tmp_path}/calls
case "$*" in
  *--stage=report*) exec {sys.executable} "$@" ;;
  *--stage=train_step*) exit 3 ;;
  *--stage=decode*) kill -9 $$ ;;
esac
""")
    fake.chmod(0o755)
    cmd = ["bash", str(SCRIPT), "--dry", "--out=check.json"]
    env = _env(PYTHON=str(fake))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[2] for c in calls] == [f"--stage={s}" for s in (*gpu_check.STAGES, "report")]
    s = json.loads((tmp_path / "check.json").read_text())["stages"]
    for name, rc in (("parity", 0), ("train_step", 3), ("decode", 137), ("grpo", 0)):
        assert s[name]["error"] == f"exited with status {rc} without recording its result"
    assert s["install"]["ok"] and "exit status 1" in proc.stdout


def test_without_nvidia_smi_it_exits_2_with_one_line(tmp_path):
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not os.path.exists(f"{d}/nvidia-smi")
    )
    out = tmp_path / "check.json"
    cmd = [shutil.which("bash"), str(SCRIPT), f"--out={out}"]
    proc = subprocess.run(cmd, env=_env(PATH=path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "nvidia-smi not found" in proc.stderr and "--dry" in proc.stderr
    assert not out.exists()
