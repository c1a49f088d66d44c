"""IFBench's 9 `count:` constraints (see the package docstring for the interface).

The semantics are those of IFBench's `instructions.py`, quirks included;
SEMANTICS_count_ratio_sentence.md in this folder lists each quirk and what we decided. In short:
  * "Words" are what each reference check uses: `str.split()` pieces stripped of ASCII
    punctuation (`string.punctuation`), `\\w+` runs (stdlib `re`, as in IFEval's
    `number_words`), or nltk word tokens (`count:pronouns`, offline via `nlp`).
  * As in the reference's strict and loose evaluation, a blank response (empty or whitespace)
    follows no instruction, not even one that would hold vacuously.
  * Where the reference raises (`count:words_japanese` with N = 0 divides by zero) the check
    does not hold: the verifier scores a crashing check as not followed, too.

`nonblank`, `WORDS` and `PUNCT_SPACE` are shared with the sibling modules `ratio` and
`sentence`.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable

from ifrl_jax.verifiers import nlp

Check = Callable[[str, dict], bool]

WORDS = re.compile(r"\w+")
"""IFBench's `count_words` tokens (nltk `RegexpTokenizer(r"\\w+")`, stdlib `re` engine)."""

PUNCT_SPACE = string.punctuation + " "
"""What the reference strips from each `split()` piece: ASCII punctuation and the space."""

_NO_PUNCT = str.maketrans("", "", string.punctuation)
_DIGITS = re.compile(r"\d+")
_CONJUNCTIONS = frozenset(("and", "but", "for", "nor", "or", "so", "yet"))
_NAMES = (
    "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte Alexander "
    "Amelia Benjamin Harper Leo Zoe Daniel Chloe Samuel Lily Matthew Grace Owen Abigail Gabriel "
    "Ella Jacob Scarlett Nathan Victoria Elijah Layla Nicholas Audrey David Hannah Christopher "
    "Penelope Thomas Nora Andrew Aria Joseph Claire Ryan Stella Jonathan"
).split()
# One pass finds every name: no name is a prefix of another followed by a word boundary, and
# no word boundary falls inside a name, so matches never hide one another.
_NAME_PATTERN = re.compile(r"\b(?:" + "|".join(map(re.escape, _NAMES)) + r")\b")
_PRONOUNS = frozenset(
    (
        "i me we us you he him she her it they them "  # personal
        "my mine our ours your yours his hers its their theirs "  # possessive
        "myself ourselves yourself yourselves himself herself itself themselves "  # reflexive
        "this that these those who whom whose which what "  # demonstrative, interrogative
        "whoever whomever whatever whichever "  # relative
        "anybody anyone anything everybody everyone everything nobody nothing somebody "
        "someone something each either neither both all some any none"  # indefinite
    ).split()
)
# A pronoun token of nltk's tokenizer is a run of letters a-z in the (lowercased) sentence that
# the tokenizer splits off: no letter borders it on the left, and on the right comes the end,
# or a character before which the tokenizer may put a space (whitespace, quotes, brackets,
# ":,;@#$%&?!*", dashes, "--", "n't", or a period that starts ".." or ends the sentence); the
# one other split between letters that yields a pronoun is "gim|me" / "lem|me". A sentence
# with no such run has no pronoun token and is not tokenized (exact, fuzz-tested).
_PRONOUN_HINT = re.compile(
    r"(?<![a-z])(?:"
    + "|".join(sorted(_PRONOUNS))
    + r")(?=$|[\s«“‘„`\"':,;@#$%&\u2012-\u2015?!*\[\](){}<>»”’]|--|n't|\.(?:\.|\W*$))"
    + r"|gimme|lemme"
)
_JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")  # hiragana, katakana, CJK ideographs
_KEYWORD_TIMES = (1, 2, 3, 5, 7)
_PUNCTUATION_MARKS = frozenset(".,!?;:")


def nonblank(check: Check) -> Check:
    """Wraps `check` so that a blank text (empty or whitespace only) never follows it."""

    @functools.wraps(check)
    def wrapped(text: str, kw: dict) -> bool:
        return bool(text.strip()) and check(text, kw)

    return wrapped


def conjunctions(text: str, kw: dict) -> bool:
    """At least `small_n` distinct raw `split()` pieces that are coordinating conjunctions.

    A piece is a conjunction if, stripped of ASCII punctuation and lowercased, it is one of
    and/but/for/nor/or/so/yet. Distinctness is on the raw piece (the reference's quirk): "and",
    "And" and "and," are three different conjunctions.
    """
    found = {w for w in text.split() if w.strip(PUNCT_SPACE).lower() in _CONJUNCTIONS}
    return len(found) >= kw["small_n"]


def keywords_multiple(text: str, kw: dict) -> bool:
    """keyword1..keyword5 occur exactly 1, 2, 3, 5 and 7 times.

    Occurrences are non-overlapping substrings of the lowercased text (`str.count`), so
    "door" is found in "indoors"; each keyword is stripped and lowercased.
    """
    lowered = text.lower()
    for i, times in enumerate(_KEYWORD_TIMES, start=1):
        if lowered.count(kw[f"keyword{i}"].strip().lower()) != times:
            return False
    return True


def numbers(text: str, kw: dict) -> bool:
    """Exactly `N` runs of digits once ASCII punctuation is deleted.

    "3.14", "1,000", "-5" and "2024-25" (-> "202425") are one number each; any Unicode decimal
    digit counts (`\\d`).
    """
    return len(_DIGITS.findall(text.translate(_NO_PUNCT))) == kw["N"]


def person_names(text: str, kw: dict) -> bool:
    """At least `N` of the reference's 50 first names occur as whole words (case-sensitive)."""
    return len(set(_NAME_PATTERN.findall(text))) >= kw["N"]


def pronouns(text: str, kw: dict) -> bool:
    """At least `N` nltk word tokens of the lowercased text (with "/" as a space) are pronouns.

    The reference's 63-word list: personal, possessive, reflexive, demonstrative,
    interrogative, relative and indefinite pronouns ("it's" gives "it", "'s"). Only sentences
    that `_PRONOUN_HINT` finds are tokenized, and counting stops at `N` (same verdicts).
    """
    need = kw["N"]
    if need <= 0:
        return True
    tokenize = nlp._word_tokenizer()
    found = 0
    for sent in nlp.sentences(text.replace("/", " ").lower()):
        if _PRONOUN_HINT.search(sent):
            found += sum(1 for tok in tokenize(sent) if tok in _PRONOUNS)
            if found >= need:
                return True
    return False


def punctuation(text: str, kw: dict) -> bool:
    """An interrobang ("?!", "!?" or "‽") and each of . , ! ? ; : outside it.

    As the reference: the first "?!" is removed (else the first "!?"), then each of the six
    marks must occur in what is left; "‽" itself stands for neither "!" nor "?".
    """
    if "?!" in text:
        rest = text.replace("?!", "", 1)
    elif "!?" in text:
        rest = text.replace("!?", "", 1)
    elif "‽" in text:
        rest = text
    else:
        return False
    return _PUNCTUATION_MARKS.issubset(rest)


def unique_word_count(text: str, kw: dict) -> bool:
    """At least `N` distinct lowercased `split()` pieces stripped of ASCII punctuation.

    As in the reference, a piece made only of ASCII punctuation (" - ") strips to "" and counts
    as one more distinct word.
    """
    return len({w.strip(PUNCT_SPACE) for w in text.lower().split()}) >= kw["N"]


def word_count_range(text: str, kw: dict) -> bool:
    """`min_words` <= number of `\\w+` runs <= `max_words` ("don't" is two words)."""
    return kw["min_words"] <= len(WORDS.findall(text)) <= kw["max_words"]


def words_japanese(text: str, kw: dict) -> bool:
    """Every `N`-th `split()` piece holds a hiragana, katakana or CJK character.

    Pieces are stripped of ASCII punctuation; a piece that strips to "" or is all digits is
    exempt, and a text with fewer than `N` pieces holds vacuously (both as the reference).
    Japanese written without spaces is one piece. N = 0 (the reference divides by zero) fails.
    """
    n = kw["N"]
    if n <= 0:
        return False
    for word in text.split()[n - 1 :: n]:
        word = word.strip(PUNCT_SPACE)
        if word and not word.isdigit() and not _JAPANESE.search(word):
            return False
    return True


_CHECKS: dict[str, Check] = {
    "count:conjunctions": conjunctions,
    "count:keywords_multiple": keywords_multiple,
    "count:numbers": numbers,
    "count:person_names": person_names,
    "count:pronouns": pronouns,
    "count:punctuation": punctuation,
    "count:unique_word_count": unique_word_count,
    "count:word_count_range": word_count_range,
    "count:words_japanese": words_japanese,
}

CHECKS: dict[str, Check] = {cid: nonblank(check) for cid, check in _CHECKS.items()}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    "count:conjunctions": {"small_n": "int"},
    "count:keywords_multiple": {f"keyword{i}": "str" for i in range(1, 6)},
    "count:numbers": {"N": "int"},
    "count:person_names": {"N": "int"},
    "count:pronouns": {"N": "int"},
    "count:punctuation": {},
    "count:unique_word_count": {"N": "int"},
    "count:word_count_range": {"min_words": "int", "max_words": "int"},
    "count:words_japanese": {"N": "int"},
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""


def warmup() -> None:
    """Loads Punkt and nltk's word tokenizer (`count:pronouns`) now rather than on first use."""
    nlp.warmup()
