"""Constraint specs: the hard ids, their kwargs, and validation at data-load time.

A constraint is an instruction id plus a kwargs dict. Hard ids are rule-checked: IFEval's 25
(`HARD_IDS`) and IFBench's (`IFBENCH_IDS`, from `ifbench.SPECS`); soft ids are scored by the
reward model and only need to be recognised here.

IFBench ids live in their own namespace: each is accepted bare, as in IFBench's files
(``"count:numbers"``), or qualified, ``"ifbench/count:numbers"``; both name the same check.
None of them is an IFEval id, a soft id or itself prefixed (checked at import: an IFBench id can
never shadow another). ``"ifbench/"`` before an IFEval id is an unknown id.

Soft ids accepted (anything else that is not hard is an error):
  * exactly ``"soft"``;
  * any id starting with one of ``SOFT_PREFIXES``: ``style:``, ``situation:``,
    ``soft_content:``, ``soft:`` (the data has ``style:open_ended``, ``situation:role_play``,
    ``situation:suggestion``, ``situation:story_generation``, ``soft_content:open_ended``,
    ``soft_content:language``).
Soft kwargs must be a dict (or None); their None values are dropped, nothing else is checked.

Hard kwargs follow IFEval's strict wrapper, made deterministic:
  * None values are dropped (Parquet adds them for absent keys), as IFEval does.
  * IFEval also drops every *falsy* value (0, "", []) and then draws that kwarg at random.
    We never draw: a falsy or missing kwarg is a ``SpecError`` ("missing"). The one kwarg that
    IFEval does not randomise, ``prompt_to_repeat``, makes IFEval raise; so do we.
  * IFEval draws a random value for a negative count and for ``nth_paragraph`` outside
    ``1..num_paragraphs``; both are ``SpecError`` here.
  * An unknown relation (IFEval raises) and an unexpected kwarg (IFEval's ``build_description``
    raises ``TypeError``) are ``SpecError``.
  * Kwargs used as regular expressions (``keywords``, ``keyword``, ``forbidden_words``,
    ``section_spliter``, a non-standard ``postscript_marker``) must compile; IFEval would crash
    on them at check time.
  * ``letter`` must be one character. IFEval replaces a letter outside a-z/A-Z (the IFEval data
    has "#" and "!") by a random letter; we count that character itself (see ``checks.py``).
  * Counts may be ints or integral floats (pandas turns nullable int columns into floats) and
    are returned as ints; bools are rejected.

IFBench kwargs follow IFBench's wrapper (`evaluation_lib.py`), which drops only None values
(so a 0 is a value, e.g. ``n_start``), then `ifbench.SPECS`: every listed kwarg is required, of
its kind (`_check_ifbench_value`), and any other kwarg is a ``SpecError``. The reference draws
a missing kwarg at random, and an unexpected one makes most of its ``build_description``s raise
``TypeError`` (12 ignore it); here both are load-time errors naming where.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from ifrl_jax.verifiers import ifbench

RELATIONS = ("less than", "at least")

# Kinds of kwarg value; see `_check_value`.
_COUNT = "count"  # int >= 1
_REL = "relation"  # one of RELATIONS
_STR = "str"  # non-empty str
_CHAR = "char"  # str of length 1
_REGEX = "regex"  # non-empty str, a valid regex after strip() (keywords:frequency)
_REGEX_LIST = "regex_list"  # non-empty list of str, each a valid regex
_WORD_LIST = "word_list"  # non-empty list of str, each valid inside r"\b...\b"
_MARKER = "marker"  # non-empty str; a valid regex unless "P.S." or "P.P.S"
_SPLITTER = "splitter"  # non-empty str; valid inside the section-split regex

HARD_SPECS: dict[str, dict[str, str]] = {
    "keywords:existence": {"keywords": _REGEX_LIST},
    "keywords:frequency": {"keyword": _REGEX, "frequency": _COUNT, "relation": _REL},
    "keywords:forbidden_words": {"forbidden_words": _WORD_LIST},
    "keywords:letter_frequency": {"letter": _CHAR, "let_frequency": _COUNT, "let_relation": _REL},
    "language:response_language": {"language": _STR},
    "length_constraints:number_sentences": {"num_sentences": _COUNT, "relation": _REL},
    "length_constraints:number_paragraphs": {"num_paragraphs": _COUNT},
    "length_constraints:number_words": {"num_words": _COUNT, "relation": _REL},
    "length_constraints:nth_paragraph_first_word": {
        "num_paragraphs": _COUNT,
        "nth_paragraph": _COUNT,
        "first_word": _STR,
    },
    "detectable_content:number_placeholders": {"num_placeholders": _COUNT},
    "detectable_content:postscript": {"postscript_marker": _MARKER},
    "detectable_format:number_bullet_lists": {"num_bullets": _COUNT},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": _COUNT},
    "detectable_format:multiple_sections": {"section_spliter": _SPLITTER, "num_sections": _COUNT},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": _STR},
    "startend:end_checker": {"end_phrase": _STR},
    "change_case:capital_word_frequency": {"capital_frequency": _COUNT, "capital_relation": _REL},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
    "startend:quotation": {},
}
"""Hard id -> {kwarg name: kind}. Every listed kwarg is required."""

HARD_IDS: frozenset[str] = frozenset(HARD_SPECS)
"""IFEval's 25 ids (the IFBench ids are `IFBENCH_IDS`; `is_hard` covers both)."""
SOFT_PREFIXES: tuple[str, ...] = ("style:", "situation:", "soft_content:", "soft:")
SOFT_IDS: frozenset[str] = frozenset({"soft"})
IFBENCH_PREFIX = "ifbench/"
IFBENCH_IDS: frozenset[str] = frozenset(ifbench.SPECS)
"""IFBench's ids, bare (as in IFBench's files); each is also accepted as "ifbench/<id>"."""


def _check_registry() -> None:
    """Refuses, at import, an IFBench id that could shadow or be mistaken for another id."""
    problems = []
    if set(ifbench.CHECKS) != IFBENCH_IDS:
        problems.append(f"CHECKS and SPECS differ on {sorted(set(ifbench.CHECKS) ^ IFBENCH_IDS)}")
    for cid in sorted(IFBENCH_IDS):
        if cid in HARD_IDS:
            problems.append(f"{cid!r} is also an IFEval id")
        if cid in SOFT_IDS or cid.startswith(SOFT_PREFIXES + (IFBENCH_PREFIX,)):
            problems.append(f"{cid!r} looks like a soft or qualified id")
        unknown = {k for k in ifbench.SPECS[cid].values() if k not in ifbench.KINDS}
        if unknown:
            problems.append(f"{cid!r} has kwarg kinds {sorted(unknown)} not in {ifbench.KINDS}")
    if problems:
        raise RuntimeError("IFBench registry: " + "; ".join(problems))


_check_registry()


class SpecError(ValueError):
    """A constraint spec (id or kwargs) that cannot be checked; the message names where."""


def ifbench_id(instruction_id: str) -> str | None:
    """The bare IFBench id that `instruction_id` names, bare or "ifbench/"-qualified.

    Args:
      instruction_id: a constraint id such as "count:numbers" or "ifbench/count:numbers".

    Returns:
      The bare id ("count:numbers"), or None if it is not an IFBench id.
    """
    if not isinstance(instruction_id, str):
        return None
    if instruction_id.startswith(IFBENCH_PREFIX):
        instruction_id = instruction_id[len(IFBENCH_PREFIX) :]
    return instruction_id if instruction_id in IFBENCH_IDS else None


def is_hard(instruction_id: str) -> bool:
    """Whether `instruction_id` is rule-checked: an IFEval id or an IFBench id (either form).

    Args:
      instruction_id: a constraint id such as "punctuation:no_comma" or "count:numbers".

    Returns:
      True for the 25 IFEval ids and the IFBench ids, bare or "ifbench/"-qualified.
    """
    return instruction_id in HARD_IDS or ifbench_id(instruction_id) is not None


def is_soft(instruction_id: str) -> bool:
    """Whether `instruction_id` is a recognised soft (reward-model scored) id.

    Args:
      instruction_id: a constraint id such as "style:open_ended".

    Returns:
      True for "soft" and ids starting with one of `SOFT_PREFIXES` (never a hard id).
    """
    if not isinstance(instruction_id, str) or is_hard(instruction_id):
        return False
    return instruction_id in SOFT_IDS or instruction_id.startswith(SOFT_PREFIXES)


@functools.lru_cache(maxsize=4096)
def _compiles(pattern: str, flags: int) -> str | None:
    """Returns None if `pattern` compiles, else the compiler's message."""
    try:
        re.compile(pattern, flags)
    except (re.error, RecursionError, OverflowError, ValueError) as e:
        return str(e) or type(e).__name__
    return None


def _as_count(value: Any) -> int | None:
    """Returns `value` as an int if it is an int or an integral float (not a bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _check_value(kind: str, name: str, value: Any, fail) -> Any:
    """Validates one present, non-None kwarg value; returns it normalised."""
    if kind == _COUNT:
        n = _as_count(value)
        if n is None:
            fail(f"kwarg {name!r} must be an integer, got {value!r}")
        if n <= 0:
            why = "0 is dropped by IFEval and drawn at random" if n == 0 else "negative"
            fail(f"kwarg {name!r} must be >= 1, got {value!r} ({why})")
        return n
    if kind == _REL:
        if value not in RELATIONS:
            fail(f"kwarg {name!r} must be one of {list(RELATIONS)}, got {value!r}")
        return value
    if kind in (_REGEX_LIST, _WORD_LIST):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            fail(f"kwarg {name!r} must be a list of strings, got {value!r}")
        if not value:
            fail(f"kwarg {name!r} is empty (IFEval would draw random words)")
        for v in value:
            pattern = r"\b" + v + r"\b" if kind == _WORD_LIST else v
            err = _compiles(pattern, re.IGNORECASE)
            if err is not None:
                fail(f"kwarg {name!r} item {v!r} is not a valid regular expression: {err}")
        return list(value)
    if not isinstance(value, str):
        fail(f"kwarg {name!r} must be a string, got {value!r}")
    if not value:
        fail(f"kwarg {name!r} is empty (IFEval would drop it and draw a random value)")
    if kind == _CHAR and len(value) != 1:
        fail(f"kwarg {name!r} must be a single character, got {value!r}")
    pattern = None
    if kind == _REGEX:
        pattern = value.strip()
    elif kind == _MARKER and value.strip() not in ("P.S.", "P.P.S"):
        pattern = r"\s*" + value.strip().lower() + r".*$"
    elif kind == _SPLITTER:
        pattern = r"\s?" + value.strip() + r"\s?\d+\s?"
    if pattern is not None:
        err = _compiles(pattern, re.IGNORECASE if kind == _REGEX else 0)
        if err is not None:
            fail(f"kwarg {name!r} = {value!r} is not a valid regular expression: {err}")
    return value


def _check_ifbench_value(kind: str, name: str, value: Any, fail) -> Any:
    """Validates one present, non-None IFBench kwarg of kind `kind` (`ifbench.KINDS`)."""
    if kind == "int":
        n = _as_count(value)
        if n is None or n < 0:
            fail(f"kwarg {name!r} must be an integer >= 0, got {value!r}")
        return n
    if kind == "float":
        try:
            number = float(value) if isinstance(value, int | float) else math.nan
        except OverflowError:  # an int too large for a float
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            fail(f"kwarg {name!r} must be a finite number, got {value!r}")
        return number
    if kind == "str":
        if not isinstance(value, str) or not value:
            fail(f"kwarg {name!r} must be a non-empty string, got {value!r}")
        return value
    if kind == "str_list":
        ok = isinstance(value, list | tuple) and value
        if not ok or not all(isinstance(v, str) and v for v in value):
            fail(f"kwarg {name!r} must be a non-empty list of non-empty strings, got {value!r}")
        return list(value)
    if kind == "relation":
        if value not in RELATIONS:
            fail(f"kwarg {name!r} must be one of {list(RELATIONS)}, got {value!r}")
        return value
    return value  # "any"


def check_spec(instruction_id: str, kwargs: dict | None, *, where: str = "") -> dict:
    """Validates one constraint spec and returns its normalised kwargs.

    Args:
      instruction_id: a hard id (IFEval's `HARD_IDS`, or an IFBench id, bare or
        "ifbench/"-qualified; see `is_hard`) or a soft id (see `is_soft`).
      kwargs: the verifier kwargs; None is {}. None values are dropped.
      where: prefix for error messages, e.g. "data.jsonl:17: instruction_id_list[2]".

    Returns:
      A new dict: for hard ids exactly the id's kwargs (counts as int); for soft ids the
      given kwargs without None values.

    Raises:
      SpecError: unknown id, kwargs not a dict, missing/ill-typed/unexpected kwarg (for IFEval
        ids also a falsy one), unknown relation, invalid regex, nth_paragraph > num_paragraphs.
    """
    prefix = f"{where}: " if where else ""

    def fail(msg: str):
        raise SpecError(f"{prefix}{instruction_id!r}: {msg}")

    if not isinstance(instruction_id, str):
        raise SpecError(f"{prefix}instruction id must be a string, got {instruction_id!r}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        fail(f"kwargs must be a dict, got {type(kwargs).__name__}")
    present = {k: v for k, v in kwargs.items() if v is not None}
    bench = ifbench_id(instruction_id)
    spec = HARD_SPECS.get(instruction_id) if bench is None else ifbench.SPECS[bench]
    if spec is None:
        if is_soft(instruction_id):
            return present
        if instruction_id.startswith(IFBENCH_PREFIX):
            fail(f"unknown instruction id (not one of IFBench's {len(IFBENCH_IDS)} ids)")
        fail(
            "unknown instruction id (not one of the 25 IFEval ids, not an IFBench id (bare or "
            f"{IFBENCH_PREFIX!r}-prefixed), not 'soft' and not prefixed by one of "
            f"{list(SOFT_PREFIXES)})"
        )
    extra = sorted(set(present) - set(spec), key=str)
    if extra:
        fail(f"unexpected kwarg {extra[0]!r} (expected only {sorted(spec)})")
    check = _check_value if bench is None else _check_ifbench_value
    out = {}
    for name, kind in spec.items():
        if name not in present:
            fail(f"missing kwarg {name!r}")
        out[name] = check(kind, name, present[name], fail)
    if "nth_paragraph" in out and out["nth_paragraph"] > out["num_paragraphs"]:
        fail(
            f"kwarg 'nth_paragraph' = {out['nth_paragraph']} exceeds 'num_paragraphs' = "
            f"{out['num_paragraphs']} (IFEval would draw it at random)"
        )
    return out
