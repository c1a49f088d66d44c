"""The synthesis job: seed tasks + a constraint taxonomy -> training (and held-out) JSONL records.

`run` loads the seeds and the taxonomy (`ifrl_jax.synthesis`), splits off a held-out share of
the seed tasks, synthesizes records for both parts from one random stream (train, then
held-out, then the shuffle of the training records, as the tiny set does), and writes the files
only when everything is valid: each is written to a temporary file beside it and renamed into
place, so a bad input (an error naming file:line) leaves nothing behind. It prints one
`<path>: <n> rows` line per file written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ifrl_jax import synthesis
from ifrl_jax.errors import UserError


def _constraints(value: Sequence[str | int]) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise UserError(
            f"--constraints={','.join(map(str, value))}: expected MIN,MAX, 1 <= MIN <= MAX"
        )
    return lo, hi


def heldout_path(output: str) -> str:
    """The default held-out file beside `output`: train.jsonl -> train.heldout.jsonl."""
    return output[: -len(".jsonl")] + ".heldout.jsonl"


def _write(files: dict[str, list[dict[str, Any]]]) -> None:
    """Writes every file to a temporary file beside it, then renames them all into place."""
    temps = {path: f"{path}.{os.getpid()}.tmp" for path in files}
    try:
        for path, rows in files.items():
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(temps[path], "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def run(
    seeds: str,
    taxonomy: str,
    output: str,
    *,
    per_seed: int = 2,
    constraints: Sequence[str | int] = (1, 5),
    weights: Sequence[str | float] = (),
    seed: int = 0,
    heldout_fraction: float = 0.0,
    heldout_output: str = "",
) -> dict[str, Any]:
    """Synthesizes the records and writes them (the flags of launch/synthesize.py).

    Args:
      seeds: seed-task JSONL (``{"instruction", "input", "output"}`` per line).
      taxonomy: taxonomy JSON (format: ifrl_jax/synthesis.py).
      output: the training records' JSONL path.
      per_seed: records per seed task.
      constraints: (min, max) constraints per record.
      weights: relative odds of each count min..max (empty: uniform).
      seed: random seed.
      heldout_fraction: share of the seed tasks (rounded, at least one when > 0) whose records
        go to `heldout_output` instead; 0 writes no held-out file.
      heldout_output: the held-out JSONL path ('' = `heldout_path(output)`).

    Returns:
      The summary: `rows` (rows per written path), `seeds` (train, held-out task counts), `seed`.
    """
    lo, hi = _constraints(constraints)
    heldout_output = heldout_output or (heldout_path(output) if output.endswith(".jsonl") else "")
    for flag, path in (("output", output), ("heldout_output", heldout_output)):
        if not path.endswith(".jsonl"):
            raise UserError(f"--{flag}={path}: the records are JSONL; name the file *.jsonl")
    if not 0 <= heldout_fraction < 1 or (heldout_fraction and output == heldout_output):
        raise UserError(f"--heldout_fraction={heldout_fraction}: must be in [0, 1), written to a "
                        "file other than --output")  # fmt: skip
    try:
        count_weights = [float(w) for w in weights] or None
    except ValueError:
        raise UserError(f"--weights={','.join(map(str, weights))}: expected numbers") from None
    tasks = synthesis.load_seeds(seeds)
    tax = synthesis.load_taxonomy(taxonomy)
    rng = np.random.default_rng(seed)
    n_heldout = max(1, round(heldout_fraction * len(tasks))) if heldout_fraction else 0
    if n_heldout >= len(tasks):
        raise UserError(f"--heldout_fraction={heldout_fraction}: leaves no training task of "
                        f"{len(tasks)} in {seeds}")  # fmt: skip
    held = set(rng.permutation(len(tasks))[:n_heldout].tolist())
    options = dict(per_seed=per_seed, min_constraints=lo, max_constraints=hi, seed=rng,
                   weights=count_weights)  # fmt: skip
    train_tasks = [t for i, t in enumerate(tasks) if i not in held]
    train = synthesis.synthesize(train_tasks, tax, **options)
    files = {output: train}
    if held:
        heldout_tasks = [t for i, t in enumerate(tasks) if i in held]
        files[heldout_output] = synthesis.synthesize(heldout_tasks, tax, **options)
    files[output] = [train[i] for i in rng.permutation(len(train))]
    _write(files)
    for path, rows in files.items():
        print(f"{path}: {len(rows)} rows", flush=True)
    return {
        "rows": {path: len(rows) for path, rows in files.items()},
        "seeds": [len(tasks) - len(held), len(held)],
        "seed": seed,
    }
