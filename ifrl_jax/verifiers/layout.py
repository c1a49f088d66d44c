"""The batch layout shared by the in-process batch stage (batch.py) and the pool (pool.py).

`plan_batch` validates a batch and lays it out as tasks (one per response with hard
constraints), `run_tasks` scores tasks in this process (pool workers call it too), and `assemble`
writes the verdicts and statuses into a `BatchReport`. Both batch.py and pool.py import this
module; it imports neither.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ifrl_jax.verifiers.core import (
    BAD_SPEC,
    ERROR,
    OK,
    TIMEOUT,
    TimeLimit,
    score_task,
    strip_think,
)
from ifrl_jax.verifiers.spec import SpecError, check_spec, is_hard, is_soft

logger = logging.getLogger("ifrl_jax.verifiers")

DEFAULT_TIMEOUT_S = 2.0
MODES = ("strict", "loose")

Constraint = tuple[str, dict]
Task = tuple[int, "str | None", list]  # (row, text, [(col, hard id, kwargs)])


@dataclass
class Plan:
    """A batch laid out for scoring: the tasks to run, the [B, K] validity and status."""

    shape: tuple[int, int]
    valid: np.ndarray  # [B, K] bool
    status: np.ndarray  # [B, K] int8 status codes (core.OK, ...); BAD_SPEC set here
    tasks: list[Task] = field(default_factory=list)


@dataclass
class BatchReport:
    """Verdicts of a batch in one or more modes, and what went wrong where.

    Attributes:
      scores: {mode: [B, K] float32 of 0/1}.
      valid: [B, K] bool, True for hard constraints (False for soft ids and padding).
      status: [B, K] int8 status codes (`core.STATUS_NAMES`): OK, ERROR (the check raised),
        TIMEOUT (it outlived its time limit) or BAD_SPEC (invalid id or kwargs); every non-OK
        slot scores 0. Soft and padding slots are OK.
      messages: the warnings behind the non-OK slots (also logged).
    """

    scores: dict[str, np.ndarray]
    valid: np.ndarray
    status: np.ndarray
    messages: list[str] = field(default_factory=list)

    @property
    def timeouts(self) -> int:
        """Number of checks that outlived their time limit."""
        return int((self.status == TIMEOUT).sum())

    @property
    def errors(self) -> int:
        """Number of checks that raised (or whose worker process died)."""
        return int((self.status == ERROR).sum())

    @property
    def bad_specs(self) -> int:
        """Number of hard slots with an id or kwargs that cannot be checked."""
        return int((self.status == BAD_SPEC).sum())

    def by_mode(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{mode: (scores [B, K], valid [B, K])}, as `verify_batch_modes` returns them."""
        return {m: (s, self.valid.copy()) for m, s in self.scores.items()}


def plan_batch(
    responses: Sequence[str],
    constraints: Sequence[Sequence[Constraint]],
    *,
    think_mode: str,
    width: int | None,
    messages: list[str] | None = None,
) -> Plan:
    """Validates the batch and lays it out; bad specs and responses score 0 with a warning.

    Args:
      responses: B model outputs.
      constraints: B lists of (instruction id, kwargs).
      think_mode: see `strip_think`.
      width: K; default the longest list.
      messages: if given, spec warnings are appended here too.

    Returns:
      The Plan.
    """
    if len(responses) != len(constraints):
        raise ValueError(f"{len(responses)} responses but {len(constraints)} constraint lists")
    longest = max((len(c) for c in constraints), default=0)
    if width is None:
        width = longest
    elif longest > width:
        raise ValueError(f"a constraint list has {longest} entries, more than width={width}")
    shape = (len(responses), width)
    plan = Plan(shape, np.zeros(shape, dtype=bool), np.full(shape, OK, dtype=np.int8))
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
                plan.status[b, j] = BAD_SPEC
                msg = f"response {b} constraint {j} scored 0: {e}"
                logger.warning("verify_batch: %s", msg)
                if messages is not None:
                    messages.append(msg)
        if checks:
            plan.tasks.append((b, text, checks))
    return plan


def run_tasks(tasks: Sequence[Task], modes: Sequence[bool], timeout_s: float | None):
    """Scores tasks in this process under `TimeLimit(timeout_s)`.

    Bounded only where `core.alarm_usable()` (the main thread); batch.py sends the work to a
    worker process elsewhere.

    Returns:
      (per task, per check (verdicts per mode, status code); warnings).
    """
    warnings: list[str] = []
    results = []
    with TimeLimit(timeout_s) as limit:
        for _, text, checks in tasks:
            pairs = [(cid, kw) for _, cid, kw in checks]
            results.append(score_task(text, pairs, modes=modes, limit=limit, warnings=warnings))
    return results, warnings


def assemble(plan: Plan, results, modes: Sequence[str], messages=()) -> BatchReport:
    """Writes per-task verdicts and statuses into a BatchReport (one [B, K] array per mode)."""
    scores = {m: np.zeros(plan.shape, dtype=np.float32) for m in modes}
    status = plan.status.copy()
    for (b, _, checks), task_results in zip(plan.tasks, results):
        for (j, _, _), (verdicts, code) in zip(checks, task_results):
            status[b, j] = code
            for m, passed in zip(modes, verdicts):
                scores[m][b, j] = 1.0 if passed else 0.0
    return BatchReport(scores, plan.valid.copy(), status, list(messages))


def mode_flags(modes: Sequence[str]) -> tuple[bool, ...]:
    """One flag per mode name: False for "strict", True for "loose"."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {list(modes)}")
    return tuple(m == "loose" for m in modes)
