"""IFBench's 13 `words:` constraints (see the package docstring for the interface).

The semantics are those of IFBench's `instructions.py`, quirks included; SEMANTICS_words.md
in this folder lists each quirk and what we decided. In short:
  * "Words" are mostly `str.split()` pieces after deleting ASCII punctuation
    (`string.punctuation`): "don't" is "dont", "X-ray" is "Xray", and a lone "—" or "…" (not
    ASCII) is a word of its own. Which checks lowercase, and whether before or after deleting,
    follows the reference exactly.
  * Checks that need nltk (sentences, word tokens, POS tags) live in `words2.py`.
  * As in the reference's strict and loose evaluation, a blank response (empty or whitespace)
    follows no instruction, not even one that would hold vacuously ("no word repeats").
  * `words:odd_even_syllables` counts syllables with the PyPI package `syllapy`, as the
    reference does (imported on first use).
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable

from ifrl_jax.verifiers.ifbench import words2

Check = Callable[[str, dict], bool]

_NO_PUNCT = str.maketrans("", "", string.punctuation)
_PUNCT_SPACE = string.punctuation + " "
_ALPHABET = string.ascii_lowercase
_VOWELS = frozenset("aeiou")
_CONSONANT_PAIR = re.compile(r"[bcdfghjklmnpqrstvwxyz]{2}")  # "y" and "w" are consonants
_PRIMES = frozenset((2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47))
_PRIMES |= frozenset((53, 59, 61, 67, 71, 73, 79, 83, 89, 97))  # the reference's list ends here


def alphabet(text: str, kw: dict) -> bool:
    """Word i+1 starts with the letter after word i's, looping z -> a.

    Words are whitespace pieces after deleting ASCII punctuation. The first word must start
    with a letter a-z (after `lower()`); each later word's lowercased first character must be
    the next letter, so a digit or a non-ASCII letter anywhere fails.
    """
    words = text.translate(_NO_PUNCT).split()
    if not words:
        return False
    letter = words[0][0].lower()
    if len(letter) != 1 or letter not in _ALPHABET:
        return False
    index = _ALPHABET.index(letter)
    for word in words[1:]:
        index = (index + 1) % 26
        if word.lower()[0] != _ALPHABET[index]:
            return False
    return True


def vowel(text: str, kw: dict) -> bool:
    """One paragraph (no "\\n" once stripped) using at most 3 of the letters a, e, i, o, u.

    Case-insensitive; "y" and accented vowels ("é") are not vowels.
    """
    paragraph = text.strip()
    if "\n" in paragraph:
        return False
    return len(_VOWELS.intersection(paragraph.lower())) <= 3


def consonants(text: str, kw: dict) -> bool:
    """Every whitespace-split word (punctuation kept) has two adjacent ASCII consonants.

    Lowercased; "y" and "w" count as consonants; a word without letters ("42", "-") fails.
    """
    return all(_CONSONANT_PAIR.search(word) for word in text.lower().split())


def palindrome(text: str, kw: dict) -> bool:
    """At least 10 words (repeats count) that read the same reversed and have 5+ characters.

    Words: ASCII punctuation deleted, then lowercased and whitespace-split; "12321" counts.
    """
    count = 0
    for word in text.translate(_NO_PUNCT).lower().split():
        if len(word) >= 5 and word == word[::-1]:
            count += 1
            if count >= 10:
                return True
    return False


def prime_lengths(text: str, kw: dict) -> bool:
    """Every word (ASCII punctuation deleted, whitespace-split) has a prime length <= 97.

    Lengths are in code points; "a" and "I" (1) fail, as does a word of 101 characters (the
    reference's list of primes stops at 97).
    """
    return all(len(word) in _PRIMES for word in text.translate(_NO_PUNCT).split())


def repeats(text: str, kw: dict) -> bool:
    """No word (lowercased, ASCII punctuation deleted, whitespace-split) occurs > small_n times."""
    counts = Counter(text.lower().translate(_NO_PUNCT).split())
    return not counts or max(counts.values()) <= kw["small_n"]


def no_consecutive(text: str, kw: dict) -> bool:
    """No two consecutive words share their first character.

    Words: lowercased, ASCII punctuation deleted, whitespace-split; the first character need not
    be a letter ("1" and "10" clash).
    """
    words = text.lower().translate(_NO_PUNCT).split()
    return all(a[0] != b[0] for a, b in zip(words, words[1:]))


@functools.cache
def _syllable_count() -> Callable[[str], int]:
    import syllapy  # loads its word list (about 6,400 entries) once

    return syllapy.count


def odd_even_syllables(text: str, kw: dict) -> bool:
    """Consecutive words alternate between odd and even `syllapy.count` syllables.

    Words: ASCII punctuation deleted, lowercased, whitespace-split. syllapy counts 0 for a word
    with a digit (even) and uses a vowel-group rule for words outside its list.
    """
    count = _syllable_count()
    prev = None
    for word in text.translate(_NO_PUNCT).lower().split():
        parity = count(word) % 2
        if parity == prev:
            return False
        prev = parity
    return True


def paragraph_last_first(text: str, kw: dict) -> bool:
    """Each non-blank line starts and ends with the same word (lowercased).

    A line's words are whitespace pieces after stripping ASCII punctuation and spaces from its
    ends; punctuation inside stays ("hello," differs from "hello"). One-word lines pass; lines
    of only punctuation ("---") are skipped.
    """
    for line in text.split("\n"):
        words = line.strip().lower().strip(_PUNCT_SPACE).split()
        if words and words[0] != words[-1]:
            return False
    return True


def _nonblank(check: Check) -> Check:
    """`check`, made to fail on a blank response, as the reference's evaluation does."""

    @functools.wraps(check)
    def wrapped(text: str, kw: dict) -> bool:
        return bool(text.strip()) and bool(check(text, kw))

    return wrapped


_CHECKS: dict[str, Check] = {
    "words:alphabet": alphabet,
    "words:vowel": vowel,
    "words:consonants": consonants,
    "words:palindrome": palindrome,
    "words:prime_lengths": prime_lengths,
    "words:repeats": repeats,
    "words:no_consecutive": no_consecutive,
    "words:odd_even_syllables": odd_even_syllables,
    "words:paragraph_last_first": paragraph_last_first,
    **words2.CHECKS,
}

CHECKS: dict[str, Check] = {k: _nonblank(v) for k, v in _CHECKS.items()}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    **{k: {} for k in _CHECKS if k not in words2.SPECS},
    "words:repeats": {"small_n": "int"},
    **words2.SPECS,
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""
