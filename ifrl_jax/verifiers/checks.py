r"""The 25 IFEval checks, strict and loose, as plain functions keyed by instruction id.

Each check is `check(text, kw) -> bool` on kwargs already normalised by `spec.check_spec`.
IFBench's checks, the same kind of function, live in `ifbench/` (`ifbench.CHECKS`, bare ids);
`core.resolve_check` finds either, and `CHECKS` here stays IFEval's 25.
The semantics are IFEval's (see ../shared/IFEVAL_SEMANTICS.md), quirks included: keyword
checks are unanchored, case-insensitive regex searches of the raw kwarg; "don't" is two words;
`***x***` is two highlights; a `---` rule is a bullet; a leading blank paragraph shifts
`nth_paragraph_first_word`; only the ASCII comma is a comma.

Strict wrapper: a response that is empty or whitespace fails every check. Loose wrapper: any of
the 8 IFEval variants passes (the response; without its first line; without its last line;
without both; each of these with every `*` deleted; the line-dropped variants are stripped);
blank variants are skipped, duplicates are checked once, the first pass short-circuits.

Deliberate differences from the reference, all deterministic where it is random:
  * langdetect is seeded (see `nlp.py`); the reference is unseeded.
  * `keywords:letter_frequency` with a `letter` outside a-z/A-Z ("#" and "!" in IFEval's
    prompts): the reference counts a *random* ASCII letter; we count that character itself
    (lowercased), which is what those prompts ask for.
  * Falsy kwargs, which the reference replaces by random values, are rejected by
    `check_spec`; see `spec.py`.
  * `detectable_format:json_format` on JSON nested deeper than Python's parser allows (it
    raises RecursionError, which would crash the reference's whole evaluation) is not followed.
  * A check that raises counts as not followed, with a logged warning and status "error"; one
    that exceeds the batch stage's time limit is not followed, with status "timeout". No check
    is known to raise: the fuzz tests fail if one does.
  * Tokenisers pinned to the stdlib `re` engine, as nltk <= 3.9 ran them (the nltk the
    reference used): `number_words` counts `re.findall(r"\w+")`, in which Devanagari vowel
    signs split words (nltk 3.10's `regex`-based `RegexpTokenizer` keeps them); Punkt and
    `word_tokenize` use nltk's own patterns and algorithm (tested equal to nltk's output).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

from ifrl_jax.verifiers import nlp

Check = Callable[[str, dict], bool]

_LESS = "less than"


def _compare(count: int, threshold: int, relation: str) -> bool:
    """IFEval's N/rel comparison: "less than" is `<`, "at least" is `>=`."""
    return count < threshold if relation == _LESS else count >= threshold


@functools.lru_cache(maxsize=8192)
def _rx(pattern: str, flags: int = 0) -> re.Pattern:
    """Compiles and caches `pattern` (the `re` module's own cache holds only 512)."""
    return re.compile(pattern, flags)


_I = re.IGNORECASE
_WORDS = re.compile(r"\w+")
_PARAGRAPH_SPLIT = re.compile(r"\s?\*\*\*\s?")
_PLACEHOLDER = re.compile(r"\[.*?\]")
_BULLET_STAR = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_BULLET_DASH = re.compile(r"^\s*-.*$", re.MULTILINE)
_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_HIGHLIGHT_DOUBLE = re.compile(r"\*\*[^\n\*]*\*\*")
_TITLE = re.compile(r"<<[^\n]+>>")
_PPS = re.compile(r"\s*p\.\s?p\.\s?s.*$", re.MULTILINE)
_PS = re.compile(r"\s*p\.\s?s\..*$", re.MULTILINE)
_CONSTRAINED = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
_FIRST_WORD_STOP = frozenset(".,?!'\"")


# --- keywords -----------------------------------------------------------------------------


def keywords_existence(text: str, kw: dict) -> bool:
    """Every keyword is found by `re.search(keyword, text, IGNORECASE)`."""
    return all(_rx(k, _I).search(text) for k in kw["keywords"])


def keywords_frequency(text: str, kw: dict) -> bool:
    """Counts non-overlapping matches of the stripped keyword regex, case-insensitively."""
    count = len(_rx(kw["keyword"].strip(), _I).findall(text))
    return _compare(count, kw["frequency"], kw["relation"])


def keywords_forbidden_words(text: str, kw: dict) -> bool:
    """No forbidden word matches `\\b<word>\\b`, case-insensitively."""
    return not any(_rx(r"\b" + w + r"\b", _I).search(text) for w in kw["forbidden_words"])


def keywords_letter_frequency(text: str, kw: dict) -> bool:
    """Counts the (lowercased) letter in the lowercased text; see the module note on "#"."""
    count = text.lower().count(kw["letter"].lower())
    return _compare(count, kw["let_frequency"], kw["let_relation"])


# --- language and case ----------------------------------------------------------------------


def language_response_language(text: str, kw: dict) -> bool:
    """langdetect's answer equals `language`; undetectable text (no features) passes."""
    try:
        return nlp.detect_language(text) == kw["language"]
    except nlp.lang_detect_exception():
        return True


def _english(text: str) -> bool:
    try:
        return nlp.detect_language(text) == "en"
    except nlp.lang_detect_exception():
        return True


def change_case_english_capital(text: str, kw: dict) -> bool:
    """`text.isupper()` and detected as English (detection only runs if all caps)."""
    return text.isupper() and _english(text)


def change_case_english_lowercase(text: str, kw: dict) -> bool:
    """`text.islower()` and detected as English (detection only runs if all lowercase)."""
    return text.islower() and _english(text)


def change_case_capital_word_frequency(text: str, kw: dict) -> bool:
    """Counts `nltk.word_tokenize` tokens with `isupper()`."""
    count = nlp.count_upper_tokens(text)
    return _compare(count, kw["capital_frequency"], kw["capital_relation"])


# --- length ---------------------------------------------------------------------------------


def length_number_sentences(text: str, kw: dict) -> bool:
    """Counts English Punkt sentences."""
    return _compare(len(nlp.sentences(text)), kw["num_sentences"], kw["relation"])


def length_number_paragraphs(text: str, kw: dict) -> bool:
    """Splits on `\\s?***\\s?`; blank first/last pieces drop, a blank middle piece fails."""
    pieces = _PARAGRAPH_SPLIT.split(text)
    count = len(pieces)
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        if not piece.strip():
            if i == 0 or i == last:
                count -= 1
            else:
                return False
    return count == kw["num_paragraphs"]


def length_number_words(text: str, kw: dict) -> bool:
    """Counts `\\w+` runs (stdlib `re`, as nltk's `RegexpTokenizer` did up to nltk 3.9)."""
    return _compare(len(_WORDS.findall(text)), kw["num_words"], kw["relation"])


def length_nth_paragraph_first_word(text: str, kw: dict) -> bool:
    """Paragraphs split on "\\n\\n"; the nth raw piece's first word must be `first_word`."""
    pieces = text.split("\n\n")
    count = sum(1 for p in pieces if p.strip())
    nth = kw["nth_paragraph"]
    if nth > count:
        return False
    paragraph = pieces[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = []
    for ch in word:
        if ch in _FIRST_WORD_STOP:
            break
        first.append(ch.lower())  # per character, as the reference does (no final sigma)
    return count == kw["num_paragraphs"] and "".join(first) == kw["first_word"].lower()


# --- detectable content and format ------------------------------------------------------------


def content_number_placeholders(text: str, kw: dict) -> bool:
    """At least N matches of `\\[.*?\\]` (single-line brackets, `[]` included)."""
    return len(_PLACEHOLDER.findall(text)) >= kw["num_placeholders"]


def content_postscript(text: str, kw: dict) -> bool:
    """The marker pattern matches the lowercased text anywhere (MULTILINE, no `^`)."""
    marker = kw["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = _PPS
    elif marker == "P.S.":
        pattern = _PS
    else:
        pattern = _rx(r"\s*" + marker.lower() + r".*$", re.MULTILINE)
    return pattern.search(text.lower()) is not None


def format_number_bullet_lists(text: str, kw: dict) -> bool:
    """Exactly N lines matching `^\\s*\\*[^\\*].*$` or `^\\s*-.*$`."""
    count = len(_BULLET_STAR.findall(text)) + len(_BULLET_DASH.findall(text))
    return count == kw["num_bullets"]


def format_constrained_response(text: str, kw: dict) -> bool:
    """One of the three "My answer is ..." sentences is a substring of the stripped text."""
    value = text.strip()
    return any(option in value for option in _CONSTRAINED)


def format_number_highlighted_sections(text: str, kw: dict) -> bool:
    """Non-blank `*x*` plus non-blank `**x**` matches, at least N (`***x***` counts twice)."""
    count = sum(1 for h in _HIGHLIGHT.findall(text) if h.strip("*").strip())
    count += sum(
        1
        for h in _HIGHLIGHT_DOUBLE.findall(text)
        if h.removeprefix("**").removesuffix("**").strip()
    )
    return count >= kw["num_highlights"]


def format_multiple_sections(text: str, kw: dict) -> bool:
    """Splits on `\\s?<splitter>\\s?\\d+\\s?` (case-sensitive regex); pieces - 1 >= N."""
    pattern = _rx(r"\s?" + kw["section_spliter"].strip() + r"\s?\d+\s?")
    return len(pattern.split(text)) - 1 >= kw["num_sections"]


def format_json(text: str, kw: dict) -> bool:
    """Parses as JSON after stripping and removing the ``` fences, in IFEval's order."""
    value = (
        text.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )
    try:
        json.loads(value)
    except (ValueError, RecursionError):  # too deeply nested for the parser: not followed
        return False
    return True


def format_title(text: str, kw: dict) -> bool:
    """Some `<<[^\\n]+>>` match is non-blank once its angle brackets are stripped."""
    return any(t.lstrip("<").rstrip(">").strip() for t in _TITLE.findall(text))


def combination_two_responses(text: str, kw: dict) -> bool:
    """Split on "******": exactly 2 non-blank pieces that differ; blanks only at the ends."""
    pieces = text.split("******")
    last = len(pieces) - 1
    kept = []
    for i, piece in enumerate(pieces):
        if piece.strip():
            kept.append(piece)
        elif i != 0 and i != last:
            return False
    return len(kept) == 2 and kept[0].strip() != kept[1].strip()


def combination_repeat_prompt(text: str, kw: dict) -> bool:
    """The stripped, lowercased text starts with the stripped, lowercased prompt."""
    return text.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower())


def startend_end_checker(text: str, kw: dict) -> bool:
    """After strip() and strip('"'), the lowercased text ends with the end phrase."""
    return text.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower())


def startend_quotation(text: str, kw: dict) -> bool:
    """The stripped text has length > 1 and starts and ends with '"'."""
    value = text.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


def punctuation_no_comma(text: str, kw: dict) -> bool:
    """No ASCII comma (the full-width and Arabic commas pass)."""
    return "," not in text


CHECKS: dict[str, Check] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_number_sentences,
    "length_constraints:number_paragraphs": length_number_paragraphs,
    "length_constraints:number_words": length_number_words,
    "length_constraints:nth_paragraph_first_word": length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": content_number_placeholders,
    "detectable_content:postscript": content_postscript,
    "detectable_format:number_bullet_lists": format_number_bullet_lists,
    "detectable_format:constrained_response": format_constrained_response,
    "detectable_format:number_highlighted_sections": format_number_highlighted_sections,
    "detectable_format:multiple_sections": format_multiple_sections,
    "detectable_format:json_format": format_json,
    "detectable_format:title": format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "change_case:capital_word_frequency": change_case_capital_word_frequency,
    "change_case:english_capital": change_case_english_capital,
    "change_case:english_lowercase": change_case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
    "startend:quotation": startend_quotation,
}
"""Instruction id -> check(text, normalised kwargs) -> bool, without the strict/loose wrapper."""


def loose_variants(response: str) -> list[str]:
    """The loose-mode texts after the response itself: distinct, non-blank, cheapest first.

    Args:
      response: the full response.

    Returns:
      IFEval's 7 other variants (first line removed, last removed, both, and the `*`-free
      versions of all four), without blanks, duplicates or copies of `response`.
    """
    lines = response.split("\n")
    drop_first = "\n".join(lines[1:]).strip()
    drop_last = "\n".join(lines[:-1]).strip()
    drop_both = "\n".join(lines[1:-1]).strip()
    candidates = (drop_both, drop_first, drop_last, response)
    out: list[str] = []
    seen = {response}
    for base in candidates:
        for text in (base, base.replace("*", "")):
            if text not in seen and text.strip():
                seen.add(text)
                out.append(text)
    return out
