"""Judging one response in this process: strict/loose wrappers, think tags, time limits, status.

`score_task` is the unit of work of the batch stage (in this process or in a pool worker): one
response text against its hard constraints, in one or more modes (strict, loose), each
(response, constraint) check bounded by a wall-clock limit, each with a status (`STATUS_NAMES`):
"ok", "error" (the check raised; verdict False), "timeout" (it outlived its limit; verdict False)
or "bad_spec" (set by the batch layout for a spec that cannot be checked; verdict False).

Time limits: how every check is bounded, in every mode and for every caller.

* There is always a limit. `resolve_timeout` turns the caller's `timeout_s` into the limit
  applied: `timeout_s` capped at `MAX_TIMEOUT_S` (30 s); None (or <= 0) means "no tight limit",
  i.e. `MAX_TIMEOUT_S`. Every check (IFEval's 25 and IFBench's) finishes in well under a
  second on the 100k-character texts the tests throw at it, so the ceiling never changes a verdict
  that would have come, and evaluation (which passes None) stays deterministic; it only stops a
  check that would run for minutes or forever (a catastrophic regex kwarg such as
  `keywords:existence` with `(.|.)*~`) and counts it as a timeout.
* Where a check runs, the limit is enforced as follows:
  - In a process's main thread (POSIX): `SIGALRM` (`signal.setitimer`), which interrupts
    Python bytecode and the stdlib `re` engine (it polls for signals while matching). That is
    where all the checks spend their time: the rest is C code that is linear in the response
    (`json.loads`, str methods). An enclosing interval timer (e.g. pytest-timeout's signal
    method) is kept: it still fires at its time, and it is re-armed afterwards.
  - Anywhere else (a non-main thread, such as the training loop's reward thread with
    `verifier_processes=0`, or a platform without SIGALRM), `SIGALRM` cannot be used and a
    thread cannot be stopped, so the batch stage sends the work to a shared one-worker
    `VerifierPool` (pool.py, started on first use), whose worker runs the checks in its own
    main thread under `SIGALRM`.
  - In a `VerifierPool`, the parent also gives each chunk a deadline and kills a worker that
    misses it (a check stuck in C code that never polls for signals included), so process mode
    bounds every check whatever it does.
* A check that times out scores 0 and is counted (`BatchReport.timeouts`,
  `rewards.RewardResult.verifier_timeouts`); one that raises scores 0 and is counted as an error.

Rejected alternatives: the `regex` package's `timeout=` bounds only regexes (not Punkt, language
detection or JSON parsing), and its engine is not the stdlib `re` that IFEval's verdicts come from
(`\\w`, case folding and set syntax differ); a watchdog thread cannot stop a thread that is
inside `re`'s C loop; running every check in a worker process costs IPC where SIGALRM works.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Sequence

from ifrl_jax.verifiers import ifbench, nlp
from ifrl_jax.verifiers.checks import CHECKS, loose_variants
from ifrl_jax.verifiers.spec import ifbench_id

THINK_MODES = ("none", "required", "optional")
_THINK = re.compile(r"</think>\n\n(.*)", re.DOTALL)
_MAX_WARNING_CHARS = 300

MAX_TIMEOUT_S = 30.0
"""The ceiling of every check's time limit (seconds); `timeout_s=None` means this."""

# Status of one (response, constraint) check; `STATUS_NAMES[code]` is its name.
OK, ERROR, TIMEOUT, BAD_SPEC = 0, 1, 2, 3
STATUS_NAMES = ("ok", "error", "timeout", "bad_spec")


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


def resolve_timeout(timeout_s: float | None) -> float:
    """The per-check limit actually applied: `timeout_s` capped at `MAX_TIMEOUT_S`.

    Args:
      timeout_s: seconds; None, a non-positive or a non-finite value mean `MAX_TIMEOUT_S`.

    Returns:
      A limit in (0, MAX_TIMEOUT_S].
    """
    if timeout_s is None or not math.isfinite(timeout_s) or timeout_s <= 0:
        return MAX_TIMEOUT_S
    return min(float(timeout_s), MAX_TIMEOUT_S)


def alarm_usable() -> bool:
    """Whether `TimeLimit` can bound checks here: SIGALRM exists and this is the main thread."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


class VerifierTimeout(BaseException):
    """Raised inside a check by the alarm; a BaseException so no `except Exception` eats it."""


class TimeLimit:
    """Installs a SIGALRM handler for a scope; `call` runs one function under a time limit.

    Usage: `with TimeLimit(2.0) as limit: limit.call(fn, *args)`. The limit is
    `resolve_timeout(seconds)`, never unbounded. Where SIGALRM cannot be used (see
    `alarm_usable`), `active` is False and `call` runs `fn` unbounded: callers (the batch stage)
    must then send the work to a worker process instead.

    An interval timer already running when the scope is entered keeps its time: if it is due
    during a check, its handler runs then; when the scope exits it is re-armed for the rest.
    """

    def __init__(self, seconds: float | None):
        self.seconds = resolve_timeout(seconds)
        self.active = False
        self._deadline = math.inf  # of the running call
        self._outer: tuple[float, float] | None = None  # (deadline, interval) of a prior timer
        self._previous = None

    def __enter__(self) -> TimeLimit:
        self.active = alarm_usable()
        if self.active:
            nlp.warmup()  # never time out a one-off load of nltk or langdetect
            delay, interval = signal.getitimer(signal.ITIMER_REAL)
            self._outer = (time.monotonic() + delay, interval) if delay > 0 else None
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        return self

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        self.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if self._outer is not None:
            deadline, interval = self._outer
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-4), interval)

    def _arm(self) -> None:
        """Sets the timer for whichever comes first: this call's deadline or the prior timer's."""
        due = self._deadline if self._outer is None else min(self._deadline, self._outer[0])
        signal.setitimer(signal.ITIMER_REAL, max(due - time.monotonic(), 1e-4))

    def _on_alarm(self, signum, frame) -> None:
        now = time.monotonic()
        if self._outer is not None and now >= self._outer[0]:
            deadline, interval = self._outer
            self._outer = (now + interval, interval) if interval > 0 else None
            previous = self._previous
            if callable(previous):
                previous(signum, frame)  # may raise (e.g. pytest-timeout's failure)
            elif previous == signal.SIG_DFL:  # the default action: terminate the process
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGALRM)
        if now >= self._deadline:
            self._deadline = math.inf
            raise VerifierTimeout
        if self._deadline < math.inf or self._outer is not None:
            self._arm()

    def call(self, fn, *args):
        """Runs `fn(*args)`; raises VerifierTimeout if it outlives the limit."""
        if not self.active:
            return fn(*args)
        self._deadline = time.monotonic() + self.seconds
        self._arm()
        try:
            return fn(*args)
        finally:
            self._deadline = math.inf
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self._outer is not None:
                self._arm()


def resolve_check(instruction_id: str):
    """The check function of a hard id: IFEval's (`checks.CHECKS`) or IFBench's (either form).

    Looked up at each call, so a test that replaces an entry of either dict is seen.

    Raises:
      KeyError: not a hard id.
    """
    check = CHECKS.get(instruction_id)
    if check is None:
        check = ifbench.CHECKS.get(ifbench_id(instruction_id))
    if check is None:
        raise KeyError(f"{instruction_id!r} is not a hard instruction id")
    return check


def describe(text: str) -> str:
    """A short repr of a response for a warning."""
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def _judge(check, kw: dict, text: str, modes, warnings: list[str], cid: str, variants: list):
    """Verdicts of one check on one text for each mode (False = strict, True = loose).

    `variants` is a per-text cache: empty until the loose variants are first needed.

    Returns:
      (one verdict per mode, whether the check raised on any text it was given).
    """
    raised = False

    def run(t: str) -> bool:
        nonlocal raised
        try:
            return bool(check(t, kw))
        except Exception as e:  # a crash is a fail: the reference would abort the whole run
            raised = True
            msg = f"{cid}: check raised {type(e).__name__}: {e}"[:_MAX_WARNING_CHARS]
            warnings.append(f"{msg} (response {describe(t)})")
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
    return tuple(out), raised


def score_task(
    text: str | None,
    checks: Sequence[tuple[str, dict]],
    *,
    modes: Sequence[bool],
    limit: TimeLimit,
    warnings: list[str],
) -> list[tuple[tuple[bool, ...], int]]:
    """Judges one response text against its hard constraints.

    Args:
      text: the (think-stripped) response; None fails everything.
      checks: (hard id, kwargs normalised by `check_spec`) pairs.
      modes: one flag per mode wanted, False for strict and True for loose.
      limit: an entered `TimeLimit`; each check (all its modes and variants) runs under it.
      warnings: messages for timeouts and crashes are appended here.

    Returns:
      Per check: (one verdict per mode, status code: OK, ERROR or TIMEOUT).
    """
    fail = tuple(False for _ in modes)
    if text is None:
        return [(fail, OK) for _ in checks]
    out = []
    variants: list = []
    for cid, kw in checks:
        check = resolve_check(cid)
        if cid not in CHECKS:
            ifbench.warmup()  # one-off loads (once per process) are not timed
        try:
            verdicts, raised = limit.call(_judge, check, kw, text, modes, warnings, cid, variants)
            out.append((verdicts, ERROR if raised else OK))
        except VerifierTimeout:
            warnings.append(
                f"{cid}: check exceeded the {limit.seconds}s time limit, scored 0 "
                f"(kwargs {str(kw)[:120]}, response {describe(text)})"
            )
            out.append((fail, TIMEOUT))
    return out
