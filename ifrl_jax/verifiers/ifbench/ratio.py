"""IFBench's 5 `ratio:` constraints (see the package docstring for the interface).

The semantics are those of IFBench's `instructions.py`, quirks included;
SEMANTICS_count_ratio_sentence.md in this folder lists each quirk and what we decided. In short:
  * Sentences are `nlp.sentences` (English Punkt, as `nltk.sent_tokenize`). A sentence's type
    is its last character: "." declarative, "?" interrogative, "!" exclamatory; one ending in
    anything else (a quote, a bracket, no punctuation) is of no type.
  * `ratio:overlap` compares CHARACTER trigrams (the reference applies `nltk.ngrams` to the
    string itself), not word trigrams.
  * `ratio:stop_words` uses nltk's English stop word list (198 words), shipped in
    `ifrl_jax/assets/nltk_data/corpora/stopwords/english`, over `\\w+` tokens.
  * A blank response (empty or whitespace) follows no instruction (`count.nonblank`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from ifrl_jax.verifiers import nlp
from ifrl_jax.verifiers.ifbench.count import WORDS, nonblank

Check = Callable[[str, dict], bool]

STOPWORDS_FILE = Path(__file__).resolve().parents[2] / "assets/nltk_data/corpora/stopwords/english"


@functools.cache
def stopwords() -> frozenset[str]:
    """nltk's English stop words (`nltk.corpus.stopwords.words("english")`), read offline."""
    with open(STOPWORDS_FILE, encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def _sentence_types(text: str) -> tuple[int, int, int]:
    """(declarative, interrogative, exclamatory) Punkt sentences: those ending ".", "?", "!"."""
    ends = [s[-1:] for s in nlp.sentences(text)]
    return ends.count("."), ends.count("?"), ends.count("!")


def overlap(text: str, kw: dict) -> bool:
    """The share of the text's distinct character trigrams found in `reference_text` is
    within `percentage` +- 2 (inclusive, in percent).

    A text shorter than 3 characters has no trigrams and fails. The arithmetic is the
    reference's (`shared / total * 100`), so boundary cases round the same way.
    """
    grams = {text[i : i + 3] for i in range(len(text) - 2)}
    if not grams:
        return False
    ref = kw["reference_text"]
    ref_grams = {ref[i : i + 3] for i in range(len(ref) - 2)}
    share = len(grams & ref_grams) / len(grams) * 100
    pct = kw["percentage"]
    return pct - 2 <= share <= pct + 2


def sentence_balance(text: str, kw: dict) -> bool:
    """As many declarative as interrogative as exclamatory sentences (all 0 holds)."""
    declarative, interrogative, exclamatory = _sentence_types(text)
    return declarative == interrogative == exclamatory


def sentence_type(text: str, kw: dict) -> bool:
    """Exactly twice as many declarative as interrogative sentences (0 and 0 holds)."""
    declarative, interrogative, _ = _sentence_types(text)
    return declarative == 2 * interrogative


def sentence_words(text: str, kw: dict) -> bool:
    """Exactly 3 Punkt sentences, all of the same length once stripped.

    The instruction also asks for "all different words"; the reference does not check that
    and neither do we.
    """
    sents = nlp.sentences(text)
    return len(sents) == 3 and len({len(s.strip()) for s in sents}) == 1


def stop_words(text: str, kw: dict) -> bool:
    """Stop words are at most `percentage` percent of the `\\w+` tokens (none: fails)."""
    tokens = WORDS.findall(text)
    if not tokens:
        return False
    words = stopwords()
    share = sum(1 for t in tokens if t.lower() in words) / len(tokens) * 100
    return share <= kw["percentage"]


_CHECKS: dict[str, Check] = {
    "ratio:overlap": overlap,
    "ratio:sentence_balance": sentence_balance,
    "ratio:sentence_type": sentence_type,
    "ratio:sentence_words": sentence_words,
    "ratio:stop_words": stop_words,
}

CHECKS: dict[str, Check] = {cid: nonblank(check) for cid, check in _CHECKS.items()}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    "ratio:overlap": {"reference_text": "str", "percentage": "float"},
    "ratio:sentence_balance": {},
    "ratio:sentence_type": {},
    "ratio:sentence_words": {},
    "ratio:stop_words": {"percentage": "float"},
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""


def warmup() -> None:
    """Loads Punkt and the stop word list now rather than on first use."""
    nlp.warmup()
    stopwords()
