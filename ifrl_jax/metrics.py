"""Metrics: JSONL + TensorBoard event files (tensorboardX, no TensorFlow), a console progress
bar, and a PNG plot at the end. Only process 0 writes; other processes get a no-op writer."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import jax
import numpy as np


def _scalar(v) -> float | None:
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def to_floats(metrics: Mapping) -> dict[str, float]:
    """Host floats of a metrics dict (device scalars fetched once, here)."""
    host = jax.device_get(dict(metrics))
    return {k: f for k, v in host.items() if (f := _scalar(v)) is not None}


def progress(total: int, desc: str, *, start: int = 0):
    """A console progress bar (tqdm) on process 0; a silent one elsewhere."""
    from tqdm.auto import tqdm

    disable = jax.process_index() != 0
    return tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, disable=disable)


class MetricsWriter:
    """Appends one JSON line per step to `workdir/metrics.jsonl` and to TensorBoard."""

    def __init__(self, workdir: str, *, total_steps: int, resume_step: int = 0, enabled=None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = self._bar = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        self._bar = progress(total_steps, "grpo", start=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drops lines of steps > `step`: they were written after the checkpoint we resume."""
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **metrics}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        for k, v in metrics.items():
            self._tb.add_scalar(k.replace(":", "_"), v, step)
        self._tb.flush()
        if "reward/mean" in metrics:
            self._bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._bar.close()


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# The PNG's panels: (title, metric keys (a trailing "*" takes every key with that prefix),
# smoothed: a trailing moving mean, for the noisy per-batch rollout figures).
PANELS = (
    ("rollout reward per curriculum level (moving mean of 5 steps)", ("rate/reward/level/*",),
     True),
    ("held-out pass rate", ("eval/constraint_pass_rate", "eval/prompt_pass_rate"), False),
    ("uniform groups and entropy", ("reward/zero_var_frac", "train/entropy_mean"), False),
)  # fmt: skip
SMOOTH = 5


def plot_series(rows: list[dict], panels=PANELS, smooth: int = SMOOTH) -> dict:
    """{panel title: {key: (steps, values)}}: what `plot` draws. Smoothed panels' keys are a
    trailing moving mean over `smooth` logged steps, so a rising curve shows through the
    batch-to-batch noise; the others (held-out rates) are drawn as logged."""
    out = {}
    for title, keys, smoothed in panels:
        names = sorted({k for r in rows for k in r if any(
            k.startswith(p[:-1]) if p.endswith("*") else k == p for p in keys)})  # fmt: skip
        series = {}
        for name in names:
            pts = [(r["step"], r[name]) for r in rows if name in r]
            xs, ys = map(np.asarray, zip(*pts))
            if smoothed and smooth > 1:
                c = np.cumsum(np.insert(ys.astype(np.float64), 0, 0.0))
                lo = np.maximum(np.arange(1, len(ys) + 1) - smooth, 0)
                ys = (c[1:] - c[lo]) / (np.arange(1, len(ys) + 1) - lo)
            series[name] = (xs, ys)
        out[title] = series
    return out


def plot(workdir: str) -> str | None:
    """PNG of `plot_series` (reward per level, held-out pass rate, uniform groups and entropy)
    over steps; returns its path."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = plot_series(read_jsonl(path))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8))
    for ax, (title, series) in zip(np.atleast_1d(axes), panels.items()):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=name.split("/")[-1])
        if series:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = os.path.join(workdir, "metrics.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
