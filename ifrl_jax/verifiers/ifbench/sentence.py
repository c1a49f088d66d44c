"""IFBench's 3 `sentence:` constraints (see the package docstring for the interface).

The semantics are those of IFBench's `instructions.py`, quirks included;
SEMANTICS_count_ratio_sentence.md in this folder lists each quirk and what we decided. In short:
  * Sentences are `nlp.sentences` (English Punkt, as `nltk.sent_tokenize`).
  * A blank response (empty or whitespace) follows no instruction (`count.nonblank`).
  * Where the reference raises or reads a sentence by accident, the check does not hold:
    `sentence:increment` on a text without sentences (the reference indexes `sentences[0]`),
    `sentence:keyword` with N = 0 (the reference reads `sentences[-1]`, the last one).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

from ifrl_jax.verifiers import nlp
from ifrl_jax.verifiers.ifbench.count import PUNCT_SPACE, nonblank

Check = Callable[[str, dict], bool]

_NO_PUNCT = str.maketrans("", "", string.punctuation)


def _alliteration(sentence: str) -> int:
    """Words in runs of consecutive words sharing a first character (a run of k gives k).

    Words are the lowercased `split()` pieces with leading ASCII punctuation stripped (pieces
    that strip to "" are dropped); the "first letter" is the first remaining character, which
    may be a digit or a non-ASCII symbol.
    """
    firsts = [w[0] for w in (p.lstrip(PUNCT_SPACE) for p in sentence.lower().split()) if w]
    score = 0
    in_run = False
    for a, b in zip(firsts, firsts[1:]):
        if a == b:
            score += 1 if in_run else 2
            in_run = True
        else:
            in_run = False
    return score


def alliteration_increment(text: str, kw: dict) -> bool:
    """Each sentence has strictly more alliterative words than the one before.

    A sentence's score is the total number of words in alliterative runs (`_alliteration`),
    not the length of its longest run; the first sentence may score 0 (a single sentence
    always holds).
    """
    prev = -1
    for sent in nlp.sentences(text):
        score = _alliteration(sent)
        if score <= prev:
            return False
        prev = score
    return True


def _word_count(sentence: str) -> int:
    """`split()` pieces once ASCII punctuation is deleted ("don't" is one word, " - " none)."""
    return len(sentence.translate(_NO_PUNCT).split())


def increment(text: str, kw: dict) -> bool:
    """Each sentence has exactly `small_n` more words than the one before (see `_word_count`).

    A single sentence holds; a text with no Punkt sentence fails (the reference raises).
    """
    sents = nlp.sentences(text)
    if not sents:
        return False
    step = kw["small_n"]
    counts = [_word_count(s) for s in sents]
    return all(b == a + step for a, b in zip(counts, counts[1:]))


def keyword(text: str, kw: dict) -> bool:
    """The `N`-th Punkt sentence (1-based) contains `word` as a whole word, ignoring case.

    Matched by `re.search(r"\\b" + re.escape(word) + r"\\b", sentence, re.IGNORECASE)`, so a
    word that begins or ends with a non-word character ("C++") needs a word character beside
    it. Fewer than `N` sentences, or N = 0, fails.
    """
    n = kw["N"]
    if n <= 0:
        return False
    sents = nlp.sentences(text)
    if len(sents) < n:
        return False
    pattern = r"\b" + re.escape(kw["word"]) + r"\b"
    return re.search(pattern, sents[n - 1], re.IGNORECASE) is not None


_CHECKS: dict[str, Check] = {
    "sentence:alliteration_increment": alliteration_increment,
    "sentence:increment": increment,
    "sentence:keyword": keyword,
}

CHECKS: dict[str, Check] = {cid: nonblank(check) for cid, check in _CHECKS.items()}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    "sentence:alliteration_increment": {},
    "sentence:increment": {"small_n": "int"},
    "sentence:keyword": {"word": "str", "N": "int"},
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""


def warmup() -> None:
    """Loads Punkt now rather than on first use."""
    nlp.warmup()
