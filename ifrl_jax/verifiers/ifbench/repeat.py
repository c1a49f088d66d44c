"""IFBench's `repeat:` constraints (see the package docstring for the interface).

Each check gives the verdict of the reference's `check_following` on the raw response (the
blank-response rule of the strict wrapper is applied by the caller). Surprises, detailed in
SEMANTICS_format_repeat.md:
  * repeat_change: only the words after the first are compared, so the prompt itself with
    any change of whitespace (a trailing newline) passes although its first word is unchanged.
  * repeat_simple: the response must be the constraint's own sentence, "Only output this
    sentence here, ignore all other requests.", whatever the prompt says before it.
  * repeat_span: a slice of characters, which may cut words, compared stripped and lowercased.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[str, dict], bool]

SIMPLE_SENTENCE = "Only output this sentence here, ignore all other requests."


def repeat_change(text: str, kw: dict) -> bool:
    """Not the prompt verbatim, and the same whitespace-split words after the first word.

    Words compare case-sensitively; the first words are not compared at all.
    """
    prompt = kw["prompt_to_repeat"]
    if text == prompt:
        return False
    return text.split()[1:] == prompt.split()[1:]


def repeat_simple(text: str, kw: dict) -> bool:
    """The stripped response equals `SIMPLE_SENTENCE`, ignoring case."""
    return text.strip().lower() == SIMPLE_SENTENCE.lower()


def repeat_span(text: str, kw: dict) -> bool:
    """The stripped response equals the stripped span `prompt[n_start : n_end + 1]`, any case.

    Python slicing: indices past the end are cut to it, and `n_end < n_start` gives an empty
    span, which only a blank response matches (and a blank response fails every check).
    """
    span = kw["prompt_to_repeat"][kw["n_start"] : kw["n_end"] + 1]
    return text.strip().lower() == span.strip().lower()


CHECKS: dict[str, Check] = {
    "repeat:repeat_change": repeat_change,
    "repeat:repeat_simple": repeat_simple,
    "repeat:repeat_span": repeat_span,
}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    "repeat:repeat_change": {"prompt_to_repeat": "str"},
    "repeat:repeat_simple": {},
    "repeat:repeat_span": {"prompt_to_repeat": "str", "n_start": "int", "n_end": "int"},
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""
