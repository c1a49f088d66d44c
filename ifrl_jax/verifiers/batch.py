"""The verifier batch stage: a batch of responses and constraint lists -> [B, K] 0/1 scores.

`verify_batch_report` runs in this process, or on a `VerifierPool` (pool.py) when one is given.
Each (response, constraint) check, all its loose variants included, runs under a wall-clock
limit (`timeout_s`, capped at `core.MAX_TIMEOUT_S`; None means the cap). One that exceeds it,
crashes, or has a bad spec scores 0 with a logged warning and is counted in the report
(`timeouts`, `errors`, `bad_specs`). Called where SIGALRM cannot bound a check (a non-main
thread), the work goes to `pool.shared_pool()` instead of running here; see `core.py` for the
time-limit design. `verify` and `verify_outcome` judge a single response the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ifrl_jax.verifiers.core import BAD_SPEC, STATUS_NAMES, alarm_usable, resolve_timeout
from ifrl_jax.verifiers.layout import (
    DEFAULT_TIMEOUT_S,
    MODES,
    BatchReport,
    Constraint,
    assemble,
    mode_flags,
    plan_batch,
    run_tasks,
)
from ifrl_jax.verifiers.pool import VerifierPool, shared_pool
from ifrl_jax.verifiers.spec import SpecError, check_spec, is_hard

logger = logging.getLogger("ifrl_jax.verifiers")


def verify_batch_report(
    responses: Sequence[str],
    constraints: Sequence[Sequence[Constraint]],
    *,
    modes: Sequence[str] = MODES,
    think_mode: str = "none",
    pool: VerifierPool | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    width: int | None = None,
) -> BatchReport:
    """Scores a batch in one or more modes and reports timeouts, errors and bad specs.

    Args:
      responses: B model outputs.
      constraints: B lists of (instruction id, kwargs); lists may differ in length.
      modes: any of "strict", "loose" (loose reuses the strict verdict).
      think_mode: "none", "required" or "optional"; see `strip_think`.
      pool: a `VerifierPool` to run on; None runs in this process (in the main thread) or on
        `shared_pool()` (anywhere else), so the time limit always holds.
      timeout_s: per-check wall-clock limit, capped at `core.MAX_TIMEOUT_S`; None for the cap.
        With a pool, None uses the pool's own limit.
      width: K, the padded number of constraints; default the longest list.

    Returns:
      A `BatchReport`: scores per mode [B, K], valid [B, K], status [B, K] and the counts.
    """
    if pool is None and not alarm_usable():
        pool, timeout_s = shared_pool(), resolve_timeout(timeout_s)
    if pool is not None:
        return pool.submit_report(
            responses,
            constraints,
            modes=modes,
            think_mode=think_mode,
            timeout_s=timeout_s,
            width=width,
        ).result()
    flags = mode_flags(modes)
    messages: list[str] = []
    plan = plan_batch(responses, constraints, think_mode=think_mode, width=width, messages=messages)
    results, warnings = run_tasks(plan.tasks, flags, timeout_s)
    for w in warnings:
        logger.warning("verify_batch: %s", w)
    return assemble(plan, results, modes, messages + warnings)


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

    Args: as `verify_batch_report`.

    Returns:
      {mode: (scores [B, K] float32 0/1, valid [B, K] bool)}.
    """
    return verify_batch_report(
        responses,
        constraints,
        modes=modes,
        think_mode=think_mode,
        pool=pool,
        timeout_s=timeout_s,
        width=width,
    ).by_mode()


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
    crash or a timeout score 0 with a logged warning (`verify_batch_report` also counts them).
    Never raises on response text.

    Args:
      responses: B model outputs.
      constraints: B lists of (instruction id, kwargs); lists may differ in length.
      loose: IFEval's loose mode instead of strict.
      think_mode: "none", "required" or "optional"; see `strip_think`.
      pool: a `VerifierPool` to run on; None runs in this process (or on `shared_pool()`
        outside the main thread).
      timeout_s: per-check wall-clock limit, capped at `core.MAX_TIMEOUT_S`; None for the cap.
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


@dataclass(frozen=True)
class Outcome:
    """The verdict on one (response, constraint) and how it was reached.

    Attributes:
      passed: whether the constraint is followed (False unless status is "ok").
      status: "ok", "error" (the check raised), "timeout" (it outlived its limit) or
        "bad_spec" (unknown id, bad kwargs or a non-string response).
      messages: the warnings behind a non-"ok" status (also logged).
    """

    passed: bool
    status: str
    messages: tuple[str, ...] = ()


def verify_outcome(
    instruction_id: str,
    kwargs: dict | None,
    response: str,
    *,
    loose: bool = False,
    timeout_s: float | None = None,
) -> Outcome:
    """Judges one response against one hard constraint and says whether the check went wrong.

    Never raises. Time-limited like `verify_batch_report` (in this process in the main thread,
    on `shared_pool()` elsewhere).

    Args:
      instruction_id: a hard id (IFEval's 25 or IFBench's, bare or "ifbench/"-qualified).
      kwargs: its kwargs (validated with `check_spec`; None values dropped).
      response: the text to judge (already think-stripped, see `strip_think`).
      loose: IFEval's loose mode (any of the 8 response variants passes).
      timeout_s: wall-clock limit, capped at `core.MAX_TIMEOUT_S`; None for the cap.

    Returns:
      An Outcome.
    """
    try:
        if not isinstance(instruction_id, str) or not is_hard(instruction_id):
            raise SpecError(f"{instruction_id!r} is not a hard instruction id")
        kw = check_spec(instruction_id, kwargs)
        if not isinstance(response, str):
            raise SpecError(f"response must be a str, got {type(response).__name__}")
    except SpecError as e:
        logger.warning("verify: %s", e)
        return Outcome(False, STATUS_NAMES[BAD_SPEC], (str(e),))
    mode = "loose" if loose else "strict"
    report = verify_batch_report(
        [response], [[(instruction_id, kw)]], modes=(mode,), timeout_s=resolve_timeout(timeout_s)
    )
    return Outcome(
        bool(report.scores[mode][0, 0]),
        STATUS_NAMES[int(report.status[0, 0])],
        tuple(report.messages),
    )


def verify(
    instruction_id: str,
    kwargs: dict | None,
    response: str,
    *,
    loose: bool = False,
    timeout_s: float | None = None,
) -> bool:
    """Judges one response against one hard constraint, like IFEval's strict/loose wrapper.

    Never raises: an invalid spec, a non-string response, a check that crashes or times out
    all give False with a logged warning (`verify_outcome` tells them apart). An empty or
    whitespace response is False.

    Args:
      instruction_id: a hard id (IFEval's 25 or IFBench's, bare or "ifbench/"-qualified).
      kwargs: its kwargs (validated with `check_spec`; None values dropped).
      response: the text to judge (already think-stripped, see `strip_think`).
      loose: IFEval's loose mode (any of the 8 response variants passes).
      timeout_s: wall-clock limit, capped at `core.MAX_TIMEOUT_S`; None for the cap.

    Returns:
      Whether the constraint is followed.
    """
    return verify_outcome(instruction_id, kwargs, response, loose=loose, timeout_s=timeout_s).passed
