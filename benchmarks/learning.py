r"""What the default job teaches, on several seeds: held-out pass rates before and after GRPO.

Runs `launch/train_grpo.py` once per seed, each in its own process and its own fresh workdir
(`--root`/s<seed>), one after the other: each run uses every core, so run this with nothing else
on the machine. Prints, per seed, the held-out hard-constraint pass rate before and after GRPO,
the gain, the prompt level, the soft pass rate (hidden oracle), the RM's agreement with the
rules and with the oracle, and the wall time; then the learning goal of issue 18: every seed
gains at least --min_seed_gain, the mean gain is at least --min_mean_gain, every run within
--max_seconds. Each run's console goes to `--root`/s<seed>.log.

  python -m benchmarks.learning                                # seeds 0,1,2: ~25 min, 2 cores
  python -m benchmarks.learning --seeds=0 --root=/tmp/lever -- --config.grpo.oversample=2

Arguments after `--` go to every run (a lever to measure, another config file).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from benchmarks import common

LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "launch", "train_grpo.py")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, one run each.")
_ROOT = flags.DEFINE_string("root", "/tmp/ifrl_jax/learning", "Workdirs: ROOT/s<seed> (fresh).")
_MIN_SEED = flags.DEFINE_float("min_seed_gain", 0.20, "Smallest gain each seed must reach.")
_MIN_MEAN = flags.DEFINE_float("min_mean_gain", 0.25, "Smallest mean gain over the seeds.")
_MAX_S = flags.DEFINE_float("max_seconds", 600.0, "Longest wall time of one run.")


def run_seed(seed: int, workdir: str, extra: Sequence[str]) -> dict:
    """One whole default job in a subprocess; its final JSON line plus wall_s."""
    cmd = [sys.executable, LAUNCHER, *extra, f"--config.workdir={workdir}",
           f"--config.seed={seed}"]  # fmt: skip
    t0 = time.time()
    with open(workdir + ".log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode:
        raise SystemExit(f"seed {seed}: exit status {proc.returncode}; see {workdir}.log")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": time.time() - t0}


def goal(summaries: Sequence[dict], *, min_seed_gain: float, min_mean_gain: float,
         max_seconds: float) -> dict:  # fmt: skip
    """The learning goal over the runs' summaries: per-seed gains, their mean, and whether
    every seed, the mean and every run's time meet it."""
    gains = [s["pass_rate_after"] - s["pass_rate_before"] for s in summaries]
    out = {"gains": gains, "mean_gain": statistics.fmean(gains),
           "every_seed_ok": min(gains) >= min_seed_gain,
           "time_ok": max(s["wall_s"] for s in summaries) <= max_seconds}  # fmt: skip
    out["mean_ok"] = out["mean_gain"] >= min_mean_gain
    out["met"] = out["every_seed_ok"] and out["mean_ok"] and out["time_ok"]
    return out


def main(argv: list[str]) -> None:
    extra = argv[1:]
    seeds = [int(s) for s in _SEEDS.value]
    print(common.machine_line())
    os.makedirs(_ROOT.value, exist_ok=True)
    summaries = []
    for seed in seeds:
        workdir = os.path.join(_ROOT.value, f"s{seed}")
        if os.path.exists(workdir):
            raise SystemExit(f"error: {workdir} exists: give another --root (runs start fresh)")
        summaries.append(run_seed(seed, workdir, extra))
        s = summaries[-1]
        print(f"seed {seed}: {s['pass_rate_before']:.3f} -> {s['pass_rate_after']:.3f} "
              f"in {s['wall_s']:.0f} s", flush=True)  # fmt: skip
    g = goal(summaries, min_seed_gain=_MIN_SEED.value, min_mean_gain=_MIN_MEAN.value,
             max_seconds=_MAX_S.value)  # fmt: skip
    rows = [[seed, s["pass_rate_before"], s["pass_rate_after"], gain,
             s.get("prompt_pass_rate_before"), s.get("prompt_pass_rate_after"),
             s.get("soft_pass_rate_before"), s.get("soft_pass_rate_after"),
             s.get("rm_verifier_agreement"), s.get("rm_soft_agreement"), s["wall_s"]]
            for seed, s, gain in zip(seeds, summaries, g["gains"])]  # fmt: skip
    common.print_table(["seed", "before", "after", "gain", "prompt bef", "prompt aft",
                        "soft bef", "soft aft", "rm vs rules", "rm vs oracle", "wall s"],
                       rows)  # fmt: skip
    print(f"mean gain {g['mean_gain']:+.3f}; goal (each seed >= {_MIN_SEED.value:+.2f}, mean >= "
          f"{_MIN_MEAN.value:+.2f}, each run <= {_MAX_S.value:.0f} s): "
          f"{'met' if g['met'] else 'not met'}")  # fmt: skip
    common.emit_json("learning", {"seeds": seeds, "extra": extra, **g,
                                  "summaries": summaries})  # fmt: skip


if __name__ == "__main__":
    app.run(main)
