"""Verifying one response: the strict/loose wrappers, think-tag stripping and time limits.

`score_task` is the unit of work of the batch stage (in-process or in a pool worker): one
response text against its hard constraints, in one or more modes (strict, loose), each
(response, constraint) check bounded by a wall-clock limit.

Time limits use `SIGALRM` (`signal.setitimer`), which interrupts pure-Python code and the
stdlib `re` engine (a catastrophic-backtracking keyword is stopped). They apply only in a
process's main thread on POSIX; elsewhere checks run without a limit (the pool's parent-side
deadline still bounds pool work). A check that times out or raises counts as not followed and
is reported as a warning.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Sequence

from ifrl_jax.verifiers import nlp
from ifrl_jax.verifiers.checks import CHECKS, loose_variants
from ifrl_jax.verifiers.spec import SpecError, check_spec, is_hard

logger = logging.getLogger("ifrl_jax.verifiers")

THINK_MODES = ("none", "required", "optional")
_THINK = re.compile(r"</think>\n\n(.*)", re.DOTALL)
_MAX_WARNING_CHARS = 300


def strip_think(response: str, *, mode: str) -> str | None:
    """Returns the part of a response that constraints are judged on.

    Args:
      response: the full model output.
      mode: "none": the whole response. "required": the text after the first
        "</think>\\n\\n" (the upstream regex `</think>\\n\\n(.*)`, DOTALL); None if it does not
        match, meaning every constraint fails. "optional": that text if the regex matches,
        else the text after the first "</think>" if there is one, else the whole response.

    Returns:
      The text to verify, or None.

    Raises:
      ValueError: unknown mode.
    """
    if mode == "none":
        return response
    if mode not in THINK_MODES:
        raise ValueError(f"think mode must be one of {THINK_MODES}, got {mode!r}")
    match = _THINK.search(response)
    if match is not None:
        return match.group(1)
    if mode == "required":
        return None
    _, tag, after = response.partition("</think>")
    return after if tag else response


class VerifierTimeout(BaseException):
    """Raised inside a check by the alarm; a BaseException so no `except Exception` eats it."""


class TimeLimit:
    """Installs a SIGALRM handler for a scope; `call` runs one function under a time limit.

    Usage: `with TimeLimit(2.0) as limit: limit.call(fn, *args)`. Where SIGALRM cannot be used
    (not the main thread, no SIGALRM, seconds is None or <= 0), `call` runs `fn` unbounded.
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.active = False
        self._armed = False
        self._previous = None

    def __enter__(self) -> TimeLimit:
        self.active = (
            self.seconds is not None
            and self.seconds > 0
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if self.active:
            nlp.warmup()  # never time out a one-off load of nltk or langdetect
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            self.active = False

    def _on_alarm(self, signum, frame) -> None:
        if self._armed:
            self._armed = False
            raise VerifierTimeout

    def call(self, fn, *args):
        """Runs `fn(*args)`; raises VerifierTimeout if it outlives the limit."""
        if not self.active:
            return fn(*args)
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            return fn(*args)
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def _describe(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def _judge(check, kw: dict, text: str, modes, warnings: list[str], cid: str, variants: list):
    """Verdicts of one check on one text for each mode (False = strict, True = loose).

    `variants` is a per-text cache: empty until the loose variants are first needed.
    """

    def run(t: str) -> bool:
        try:
            return bool(check(t, kw))
        except Exception as e:  # a crash is a fail: the reference would abort the whole run
            msg = f"{cid}: check raised {type(e).__name__}: {e}"[:_MAX_WARNING_CHARS]
            warnings.append(f"{msg} (response {_describe(t)})")
            return False

    strict = bool(text.strip()) and run(text)
    loose = None
    out = []
    for is_loose in modes:
        if not is_loose:
            out.append(strict)
            continue
        if loose is None:
            loose = strict
            if not loose and text.strip():
                if not variants:
                    variants.append(loose_variants(text))
                loose = any(run(v) for v in variants[0])
        out.append(loose)
    return tuple(out)


def score_task(
    text: str | None,
    checks: Sequence[tuple[str, dict]],
    *,
    modes: Sequence[bool],
    limit: TimeLimit,
    warnings: list[str],
) -> list[tuple[bool, ...]]:
    """Judges one response text against its hard constraints.

    Args:
      text: the (think-stripped) response; None fails everything.
      checks: (hard id, kwargs normalised by `check_spec`) pairs.
      modes: one flag per mode wanted, False for strict and True for loose.
      limit: an entered `TimeLimit`; each check (all its modes and variants) runs under it.
      warnings: messages for timeouts and crashes are appended here.

    Returns:
      One tuple of verdicts (one per mode) per check.
    """
    fail = tuple(False for _ in modes)
    if text is None:
        return [fail for _ in checks]
    out = []
    variants: list = []
    for cid, kw in checks:
        try:
            out.append(limit.call(_judge, CHECKS[cid], kw, text, modes, warnings, cid, variants))
        except VerifierTimeout:
            warnings.append(
                f"{cid}: check exceeded the {limit.seconds}s time limit, scored 0 "
                f"(kwargs {str(kw)[:120]}, response {_describe(text)})"
            )
            out.append(fail)
    return out


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
    all give False with a logged warning. An empty or whitespace response is False.

    Args:
      instruction_id: one of the 25 hard ids.
      kwargs: its kwargs (validated with `check_spec`; None values dropped).
      response: the text to judge (already think-stripped, see `strip_think`).
      loose: IFEval's loose mode (any of the 8 response variants passes).
      timeout_s: optional wall-clock limit (main thread only); None for no limit.

    Returns:
      Whether the constraint is followed.
    """
    try:
        if not is_hard(instruction_id):
            raise SpecError(f"{instruction_id!r} is not a hard instruction id")
        kw = check_spec(instruction_id, kwargs)
        if not isinstance(response, str):
            raise SpecError(f"response must be a str, got {type(response).__name__}")
    except SpecError as e:
        logger.warning("verify: %s", e)
        return False
    warnings: list[str] = []
    with TimeLimit(timeout_s) as limit:
        (verdict,) = score_task(
            response, [(instruction_id, kw)], modes=(loose,), limit=limit, warnings=warnings
        )
    for w in warnings:
        logger.warning("verify: %s", w)
    return verdict[0]
