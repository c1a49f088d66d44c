"""The verifier batch stage: a batch of responses and constraint lists -> [B, K] 0/1 scores.

`verify_batch` runs in this process, or on a `VerifierPool` (pool.py) when one is given. Each
(response, constraint) check, all its loose variants included, runs under a wall-clock limit
(`timeout_s`); one that exceeds it, crashes, or has a bad spec scores 0 with a logged warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ifrl_jax.verifiers.core import TimeLimit, score_task, strip_think
from ifrl_jax.verifiers.spec import SpecError, check_spec, is_hard, is_soft

if TYPE_CHECKING:
    from ifrl_jax.verifiers.pool import VerifierPool

logger = logging.getLogger("ifrl_jax.verifiers")

DEFAULT_TIMEOUT_S = 2.0
MODES = ("strict", "loose")

Constraint = tuple[str, dict]
Task = tuple[int, "str | None", list]  # (row, text, [(col, hard id, kwargs)])


@dataclass
class Plan:
    """A batch laid out for scoring: the tasks to run and the [B, K] validity mask."""

    shape: tuple[int, int]
    valid: np.ndarray  # [B, K] bool
    tasks: list[Task] = field(default_factory=list)


def plan_batch(
    responses: Sequence[str],
    constraints: Sequence[Sequence[Constraint]],
    *,
    think_mode: str,
    width: int | None,
) -> Plan:
    """Validates the batch and lays it out; bad specs and responses score 0 with a warning."""
    if len(responses) != len(constraints):
        raise ValueError(f"{len(responses)} responses but {len(constraints)} constraint lists")
    longest = max((len(c) for c in constraints), default=0)
    if width is None:
        width = longest
    elif longest > width:
        raise ValueError(f"a constraint list has {longest} entries, more than width={width}")
    plan = Plan((len(responses), width), np.zeros((len(responses), width), dtype=bool))
    for b, (response, items) in enumerate(zip(responses, constraints)):
        if isinstance(response, str):
            text = strip_think(response, mode=think_mode)
        else:
            logger.warning("verify_batch: response %d is %s, not str", b, type(response).__name__)
            text = None
        checks = []
        for j, item in enumerate(items):
            try:
                cid, kwargs = item
            except (TypeError, ValueError):
                cid, kwargs = item, None
            if isinstance(cid, str) and is_soft(cid):
                continue  # scored by the reward model; valid stays False
            plan.valid[b, j] = True
            try:
                if not is_hard(cid):
                    raise SpecError(f"{cid!r} is neither a hard nor a soft instruction id")
                checks.append((j, cid, check_spec(cid, kwargs)))
            except SpecError as e:
                logger.warning("verify_batch: response %d constraint %d scored 0: %s", b, j, e)
        if checks:
            plan.tasks.append((b, text, checks))
    return plan


def run_tasks(tasks: Sequence[Task], modes: Sequence[bool], timeout_s: float | None):
    """Scores tasks in this process; returns (per-task verdict lists, warnings)."""
    warnings: list[str] = []
    results = []
    with TimeLimit(timeout_s) as limit:
        for _, text, checks in tasks:
            pairs = [(cid, kw) for _, cid, kw in checks]
            results.append(score_task(text, pairs, modes=modes, limit=limit, warnings=warnings))
    return results, warnings


def assemble(plan: Plan, results, modes: Sequence[bool]) -> list[np.ndarray]:
    """Writes per-task verdicts into one [B, K] float32 array per mode."""
    scores = [np.zeros(plan.shape, dtype=np.float32) for _ in modes]
    for (b, _, checks), verdicts in zip(plan.tasks, results):
        for (j, _, _), verdict in zip(checks, verdicts):
            for m, passed in enumerate(verdict):
                scores[m][b, j] = 1.0 if passed else 0.0
    return scores


def mode_flags(modes: Sequence[str]) -> tuple[bool, ...]:
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {list(modes)}")
    return tuple(m == "loose" for m in modes)


def verify_batch_modes(
    responses: Sequence[str],
    constraints: Sequence[Sequence[Constraint]],
    *,
    modes: Sequence[str] = MODES,
    think_mode: str = "none",
    pool: VerifierPool | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    width: int | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Like `verify_batch`, for several modes in one pass (loose reuses the strict verdict).

    Args:
      responses: B model outputs.
      constraints: B lists of (instruction id, kwargs).
      modes: any of "strict", "loose".
      think_mode: see `strip_think`.
      pool: a `VerifierPool` to run on; None runs in this process.
      timeout_s: per-check wall-clock limit (in-process: main thread only).
      width: K, the padded number of constraints; default the longest list.

    Returns:
      {mode: (scores [B, K] float32 0/1, valid [B, K] bool)}.
    """
    if pool is not None:
        return pool.submit_modes(
            responses,
            constraints,
            modes=modes,
            think_mode=think_mode,
            timeout_s=timeout_s,
            width=width,
        ).result()
    flags = mode_flags(modes)
    plan = plan_batch(responses, constraints, think_mode=think_mode, width=width)
    results, warnings = run_tasks(plan.tasks, flags, timeout_s)
    for w in warnings:
        logger.warning("verify_batch: %s", w)
    scores = assemble(plan, results, flags)
    return {m: (s, plan.valid.copy()) for m, s in zip(modes, scores)}


def verify_batch(
    responses: Sequence[str],
    constraints: Sequence[Sequence[Constraint]],
    *,
    loose: bool = False,
    think_mode: str = "none",
    pool: VerifierPool | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores a batch of responses against their hard constraints.

    Soft ids get valid=False and score 0 (the reward model scores them); padding too. Hard
    constraints are always valid; a bad spec, a missing think tag (think_mode="required"), a
    crash or a timeout score 0 with a logged warning. Never raises on response text.

    Args:
      responses: B model outputs.
      constraints: B lists of (instruction id, kwargs); lists may differ in length.
      loose: IFEval's loose mode instead of strict.
      think_mode: "none", "required" or "optional"; see `strip_think`.
      pool: a `VerifierPool` to run on; None runs in this process.
      timeout_s: per-check wall-clock limit (in-process: main thread only).
      width: K, the padded number of constraints; default the longest list.

    Returns:
      (scores [B, K] float32 of 0/1, valid [B, K] bool).
    """
    mode = "loose" if loose else "strict"
    out = verify_batch_modes(
        responses,
        constraints,
        modes=(mode,),
        think_mode=think_mode,
        pool=pool,
        timeout_s=timeout_s,
        width=width,
    )
    return out[mode]
