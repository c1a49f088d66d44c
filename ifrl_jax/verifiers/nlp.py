"""Offline NLP helpers for the checks: Punkt sentences, nltk word tokens, seeded langdetect.

Everything is loaded lazily on first use (importing nltk costs about a second) and cached per
process; `warmup()` loads it all up front (pool workers call it once at start).

* Sentences: nltk's `PunktSentenceTokenizer` with the English `punkt_tab` parameters shipped in
  `ifrl_jax/assets/nltk_data` (read directly from the files: no `nltk.data` lookup, no
  download). Its regexes are nltk's own patterns compiled with the stdlib `re` engine instead
  of nltk 3.10's timed `regex` wrapper (as nltk <= 3.9 did): the same patterns, ~40% faster.
* Words (`change_case:capital_word_frequency`): what `nltk.word_tokenize` does, i.e. the Punkt
  sentences above each split by nltk's `NLTKWordTokenizer` (its patterns, stdlib `re`).
* Language: `langdetect` with its 55 profiles loaded in sorted file order into a private
  `DetectorFactory` whose seed is 0, so the same text always gets the same answer (the
  reference leaves langdetect unseeded, and borderline texts flip between runs). The global
  `langdetect.DetectorFactory` is left untouched. Detection runs in `langid.FastDetector`,
  bit-identical to langdetect's `Detector` and ~4x faster. Results are cached by text.
"""

from __future__ import annotations

import functools
import itertools
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


def _stdlib(pattern) -> re.Pattern:
    """Recompiles one of nltk's (timed `regex`) patterns with the stdlib `re` engine."""
    flags = getattr(pattern, "flags", 0) & (re.I | re.M | re.S | re.X | re.A)
    return re.compile(getattr(pattern, "pattern", pattern), flags)


@functools.cache
def sentence_tokenizer():
    """Returns the cached English Punkt sentence tokenizer, built offline from `PUNKT_DIR`.

    nltk's `PunktSentenceTokenizer` with nltk's own regexes recompiled by stdlib `re` (its
    language vars and token class are subclassed for that; the algorithm is untouched).

    Returns:
      An `nltk.tokenize.punkt.PunktSentenceTokenizer`.
    """
    from nltk.tokenize import punkt

    class _StdlibReVars(punkt.PunktLanguageVars):
        """nltk's English language vars, their regexes compiled by stdlib `re`."""

        re_boundary_realignment = _stdlib(punkt.PunktLanguageVars.re_boundary_realignment)
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

    non_punct = _stdlib(punkt._re_non_punct)

    class _StdlibReToken(punkt.PunktToken):
        """nltk's Punkt token, its regexes compiled by stdlib `re`."""

        __slots__ = ()
        _RE_ELLIPSIS = _stdlib(punkt.PunktToken._RE_ELLIPSIS)
        _RE_NUMERIC = _stdlib(punkt.PunktToken._RE_NUMERIC)
        _RE_INITIAL = _stdlib(punkt.PunktToken._RE_INITIAL)
        _RE_ALPHA = _stdlib(punkt.PunktToken._RE_ALPHA)

        @property
        def is_non_punct(self):
            return non_punct.search(self.type)

    params = punkt.PunktParameters()
    params.collocations = {tuple(line.split("\t")) for line in _read_lines("collocations.tab")}
    params.sent_starters = set(_read_lines("sent_starters.txt"))
    params.abbrev_types = set(_read_lines("abbrev_types.txt"))
    params.ortho_context = defaultdict(
        int, {k: int(v) for k, v in (line.split("\t") for line in _read_lines("ortho_context.tab"))}
    )
    return punkt.PunktSentenceTokenizer(params, lang_vars=_StdlibReVars(), token_cls=_StdlibReToken)


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
    """`NLTKWordTokenizer().tokenize` with nltk's own patterns compiled by stdlib `re`.

    The same substitutions in the same order as nltk's `tokenize` (parentheses not converted);
    about twice as fast as nltk 3.10's timed `regex` wrapper. Tested equal to nltk's tokenizer.
    """
    from nltk.tokenize.destructive import NLTKWordTokenizer as W

    starting = [(_stdlib(p), r) for p, r in W.STARTING_QUOTES]
    punctuation = [(_stdlib(p), r) for p, r in W.PUNCTUATION]
    parens = (_stdlib(W.PARENS_BRACKETS[0]), W.PARENS_BRACKETS[1])
    dashes = (_stdlib(W.DOUBLE_DASHES[0]), W.DOUBLE_DASHES[1])
    ending = [(_stdlib(p), r) for p, r in W.ENDING_QUOTES]
    contractions = [_stdlib(p) for p in (*W.CONTRACTIONS2, *W.CONTRACTIONS3)]

    def tokenize(text: str) -> list[str]:
        for rx, repl in starting:
            text = rx.sub(repl, text)
        for rx, repl in punctuation:
            text = rx.sub(repl, text)
        text = parens[0].sub(parens[1], text)
        text = dashes[0].sub(dashes[1], text)
        text = " " + text + " "
        for rx, repl in ending:
            text = rx.sub(repl, text)
        for rx in contractions:
            text = rx.sub(r" \1 \2 ", text)
        return text.split()

    return tokenize


_ASCII_UPPER_NOT_BEFORE_LOWER = re.compile(r"[A-Z](?![a-z])")


def may_have_upper_token(sentence: str) -> bool:
    """False only if no token of `sentence` can be all caps (then it need not be tokenized).

    A token `t` has `t.isupper()` only if it holds a character `u` with `u.isupper()` and no
    lowercase one. The tokenizer never changes case and never deletes letters; it splits two
    adjacent letters only in its contraction rules: after a prefix of 3+ letters ("can|not",
    "gon|na", ...), or next to an apostrophe ("n't", "'t|is"). So if the sentence has no ASCII
    apostrophe and every uppercase character is directly followed by a lowercase one, each
    uppercase character shares its token with a lowercase one (or with a whole 3-letter prefix
    that then has a lowercase letter), and no token is all caps.

    Args:
      sentence: one Punkt sentence.

    Returns:
      Whether the sentence must be tokenized to count its all-caps tokens.
    """
    if sentence.isascii():
        if "'" in sentence:
            return not sentence.islower() and any("A" <= c <= "Z" for c in sentence)
        return _ASCII_UPPER_NOT_BEFORE_LOWER.search(sentence) is not None
    if "'" in sentence:
        return any(c.isupper() for c in sentence)
    following = itertools.chain(itertools.islice(sentence, 1, None), " ")
    return any(c.isupper() and not n.islower() for c, n in zip(sentence, following))


def count_upper_tokens(text: str) -> int:
    """Counts the tokens `t` of `nltk.word_tokenize(text)` with `t.isupper()`.

    Sentences for which `may_have_upper_token` is False are not tokenized (exact, see there).

    Args:
      text: any string.

    Returns:
      The number of all-caps tokens ("I", "U.S.", "COVID-19" count).
    """
    tokenize = _word_tokenizer()
    count = 0
    for sent in sentences(text):
        if may_have_upper_token(sent):
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


@functools.cache
def _fast_detector():
    from ifrl_jax.verifiers.langid import FastDetector

    return FastDetector(_language_factory(), seed=0)


@functools.lru_cache(maxsize=512)
def detect_language(text: str) -> str:
    """Detects the language of `text` as seeded langdetect does (cached by text).

    Args:
      text: any string.

    Returns:
      An ISO 639-1 code as langdetect spells it ("en", "zh-cn", ...).

    Raises:
      LangDetectException: no features in the text (for example no letters at all).
    """
    return _fast_detector().detect(text)


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
        _fast_detector()
        lang_detect_exception()
        _warm = True
