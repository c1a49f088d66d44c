"""Offline NLP helpers for the checks: Punkt sentences, nltk word tokens, seeded langdetect.

Everything is loaded lazily on first use (importing nltk costs about a second) and cached per
process; `warmup()` loads it all up front (pool workers call it once at start).

* Sentences: nltk's `PunktSentenceTokenizer` with the English `punkt_tab` parameters shipped in
  `ifrl_jax/assets/nltk_data` (read directly from the files: no `nltk.data` lookup, no
  download). The two regexes that dominate its run time (word split and period context) are
  nltk's own patterns compiled with the stdlib `re` engine instead of nltk's timed `regex`
  wrapper: the same patterns, about 30% faster.
* Words (`change_case:capital_word_frequency`): what `nltk.word_tokenize` does, i.e. the Punkt
  sentences above each split by nltk's `NLTKWordTokenizer`.
* Language: `langdetect` with its 55 profiles loaded in sorted file order into a private
  `DetectorFactory` whose seed is 0, so the same text always gets the same answer (the
  reference leaves langdetect unseeded, and borderline texts flip between runs). The global
  `langdetect.DetectorFactory` is left untouched. Results are cached by text.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections import defaultdict
from pathlib import Path

PUNKT_DIR = Path(__file__).resolve().parents[1] / "assets/nltk_data/tokenizers/punkt_tab/english"

_lock = threading.Lock()


def _read_lines(name: str) -> list[str]:
    with open(PUNKT_DIR / name, encoding="utf-8") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


@functools.cache
def sentence_tokenizer():
    """Returns the cached English Punkt sentence tokenizer, built offline from `PUNKT_DIR`.

    Returns:
      An `nltk.tokenize.punkt.PunktSentenceTokenizer`.
    """
    from nltk.tokenize.punkt import PunktLanguageVars, PunktParameters, PunktSentenceTokenizer

    class _StdlibReVars(PunktLanguageVars):
        """nltk's English language vars, with its two hot regexes compiled by stdlib `re`."""

        _word_re = None
        _period_re = None

        def _word_tokenizer_re(self):
            if self._word_re is None:
                self._word_re = re.compile(
                    self._word_tokenize_fmt
                    % {
                        "NonWord": self._re_non_word_chars,
                        "MultiChar": self._re_multi_char_punct,
                        "WordStart": self._re_word_start,
                    },
                    re.UNICODE | re.VERBOSE,
                )
            return self._word_re

        def period_context_re(self):
            if self._period_re is None:
                self._period_re = re.compile(
                    self._period_context_fmt
                    % {
                        "NonWord": self._re_non_word_chars,
                        "SentEndChars": self._re_sent_end_chars,
                    },
                    re.UNICODE | re.VERBOSE,
                )
            return self._period_re

    params = PunktParameters()
    params.collocations = {tuple(line.split("\t")) for line in _read_lines("collocations.tab")}
    params.sent_starters = set(_read_lines("sent_starters.txt"))
    params.abbrev_types = set(_read_lines("abbrev_types.txt"))
    params.ortho_context = defaultdict(
        int, {k: int(v) for k, v in (line.split("\t") for line in _read_lines("ortho_context.tab"))}
    )
    return PunktSentenceTokenizer(params, lang_vars=_StdlibReVars())


@functools.lru_cache(maxsize=256)
def sentences(text: str) -> tuple[str, ...]:
    """Splits `text` into English Punkt sentences (cached by text).

    Args:
      text: any string.

    Returns:
      The sentences, as `nltk.sent_tokenize(text)` returns them.
    """
    return tuple(sentence_tokenizer().tokenize(text))


@functools.cache
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def count_upper_tokens(text: str) -> int:
    """Counts the tokens `t` of `nltk.word_tokenize(text)` with `t.isupper()`.

    A token is a substring of one sentence (its case never changes), so sentences without an
    uppercase character are not word-tokenized at all.

    Args:
      text: any string.

    Returns:
      The number of all-caps tokens ("I", "U.S.", "COVID-19" count).
    """
    tokenize = _word_tokenizer().tokenize
    count = 0
    for sent in sentences(text):
        if sent.islower() or not any(c.isupper() for c in sent):
            continue
        count += sum(1 for tok in tokenize(sent) if tok.isupper())
    return count


@functools.cache
def _language_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    names = sorted(n for n in os.listdir(PROFILES_DIRECTORY) if not n.startswith("."))
    profiles = []
    for name in names:
        with open(os.path.join(PROFILES_DIRECTORY, name), encoding="utf-8") as f:
            profiles.append(f.read())
    factory = DetectorFactory()
    factory.load_json_profile(profiles)
    factory.seed = 0
    return factory


def lang_detect_exception() -> type[Exception]:
    """Returns langdetect's `LangDetectException` class (imported lazily)."""
    from langdetect.lang_detect_exception import LangDetectException

    return LangDetectException


@functools.lru_cache(maxsize=512)
def detect_language(text: str) -> str:
    """Detects the language of `text` with seeded langdetect (cached by text).

    Args:
      text: any string.

    Returns:
      An ISO 639-1 code as langdetect spells it ("en", "zh-cn", ...).

    Raises:
      LangDetectException: no features in the text (for example no letters at all).
    """
    detector = _language_factory().create()
    detector.append(text)
    return detector.detect()


_warm = False


def warmup() -> None:
    """Loads Punkt, the word tokenizer and langdetect's profiles now rather than on first use.

    Checks run under a time limit call this first, so that a one-off load of a second or more
    is never charged to (and timed out in) the first check that needs it.
    """
    global _warm
    if _warm:
        return
    with _lock:
        sentence_tokenizer().tokenize("Warm up. Done.")
        _word_tokenizer()
        _language_factory()
        lang_detect_exception()
        _warm = True
