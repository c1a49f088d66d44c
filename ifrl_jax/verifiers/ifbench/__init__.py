"""IFBench's out-of-domain constraints (Pyatkin et al., 2025; allenai/IFBench): 58 rule checks.

The 57 ids of IFBench's 294 test prompts, plus `custom:character_reverse` (in the reference's
registry; its prompt is missing from the shipped file, see assets/ifbench/README.md).

Interface (every family module: count, ratio, sentence, words, fmt, repeat, custom):
  * `CHECKS: dict[str, Check]`: bare IFBench id (as in IFBench's files, e.g.
    "count:conjunctions") -> `check(text, kwargs) -> bool`. `kwargs` holds only the id's
    kwargs, None values dropped, validated against SPECS (so a check never sees a missing or
    ill-typed kwarg). A check never raises and never hangs on any text (fuzz-tested); the
    verifier stage's time limit bounds it anyway.
  * `SPECS: dict[str, dict[str, str]]`: bare id -> {required kwarg: kind}, with kinds from
    `KINDS`: "int" (int >= 0, bools refused), "float", "str" (non-empty), "str_list" (non-empty
    list of non-empty str), "relation" (IFEval's "less than" / "at least"), "any".
  * Optionally `warmup() -> None`: loads what the family's checks load lazily (data files,
    taggers), so that no check pays for it inside its time limit. `warmup()` here calls them
    all once per process; the verifier stage calls it before the first IFBench check.
A family module imports only `ifrl_jax.verifiers.nlp`, `ifrl_jax.verifiers.checks` and its
siblings here, never `spec`, `core` or the batch stage (they import this package).

The semantics are IFBench's reference `instructions.py`; each place where the reference
behaves surprisingly, and what we do there, is written in the SEMANTICS_*.md files in this
folder, indexed by IFBENCH_SEMANTICS.md. The registry (ids joining IFEval's, the "ifbench/"
namespace, kwarg validation) is `spec.py`'s.
"""

from __future__ import annotations

import logging
import threading

from ifrl_jax.verifiers.ifbench import count, custom, fmt, ratio, repeat, sentence, words

logger = logging.getLogger("ifrl_jax.verifiers")

KINDS = ("int", "float", "str", "str_list", "relation", "any")
_FAMILIES = (count, ratio, sentence, words, fmt, repeat, custom)


def _merged(name: str) -> dict:
    """One family attribute (CHECKS or SPECS) merged; an id in two families is an error."""
    out: dict = {}
    for family in _FAMILIES:
        for cid, value in getattr(family, name).items():
            if cid in out:
                raise RuntimeError(f"IFBench id {cid!r} is defined by two family modules")
            out[cid] = value
    return out


CHECKS = _merged("CHECKS")
SPECS = _merged("SPECS")

_warm = False
_warm_lock = threading.Lock()


def warmup() -> None:
    """Runs every family's `warmup()` once per process (a no-op after the first call).

    Never raises: a family whose warmup fails is logged once, and its checks then fail where
    they run (status "error", counted by the batch stage) instead of failing the whole batch.
    """
    global _warm
    if _warm:
        return
    with _warm_lock:
        if not _warm:
            for family in _FAMILIES:
                hook = getattr(family, "warmup", None)
                try:
                    if hook is not None:
                        hook()
                except Exception as e:  # reported where the checks run, as errors
                    logger.warning("IFBench %s.warmup() failed: %r", family.__name__, e)
            _warm = True
