"""IFBench `words` checks that need nltk's sentences, word tokens or POS tags (see `words`).

Sentences are `nlp.sentences` (English Punkt, as `nltk.sent_tokenize`); word tokens are what
`nltk.word_tokenize` gives (`nlp.sentences`, each split by nltk's `NLTKWordTokenizer`). Only the
tokens a check looks at are computed: the first three for the POS tag, the first two and last
three for `words:words_position`.

POS tags (`words:start_verb`): the reference tags with nltk's `averaged_perceptron_tagger_eng`,
which cannot be downloaded here and ships in no PyPI package we could find. We use the same
averaged-perceptron algorithm and feature set with the model of the MIT-licensed PyPI package
`textblob-aptagger` 0.2.0 (Matthew Honnibal's tagger, of which nltk's is a port, trained on the
same Penn Treebank WSJ tags), cut down to the features that can fire for the first token of a
text: `ifrl_jax/assets/ifbench/first_token_tagger.tsv.gz` (see the README beside it). Verdicts
agree with nltk's on the usual cases but are not bit-identical; SEMANTICS_words.md says more.
"""

from __future__ import annotations

import functools
import gzip
import string
from collections import defaultdict
from pathlib import Path

from ifrl_jax.verifiers import nlp

TAGGER_PATH = Path(__file__).resolve().parents[2] / "assets/ifbench/first_token_tagger.tsv.gz"

_PUNCT_SPACE = string.punctuation + " "
_START = ("-START-", "-START2-")
_END = ("-END-", "-END2-")
# Features of the first token that do not depend on the text (the previous tags and words are
# the start symbols), in nltk's `_get_features` naming.
_START_FEATURES = (
    "bias",
    "i-1 tag -START-",
    "i-2 tag -START2-",
    "i tag+i-2 tag -START- -START2-",
    "i-1 word -START2-",
    "i-1 suffix T2-",
    "i-2 word -START-",
)


def _tokens(sentence_list) -> list[str]:
    """nltk's word tokens of the given Punkt sentences, concatenated."""
    tokenize = nlp._word_tokenizer()
    return [tok for sent in sentence_list for tok in tokenize(sent)]


def word_tokenize(text: str) -> list[str]:
    """Returns `nltk.word_tokenize(text)` (offline, see `nlp`)."""
    return _tokens(nlp.sentences(text))


def _head_tokens(text: str, k: int) -> list[str]:
    """The first `k` tokens of `word_tokenize(text)` (fewer if it has fewer)."""
    tokenize = nlp._word_tokenizer()
    out: list[str] = []
    for sent in nlp.sentences(text):
        out.extend(tokenize(sent))
        if len(out) >= k:
            break
    return out[:k]


# --- the tagger ----------------------------------------------------------------------------


@functools.cache
def _tagger() -> tuple[tuple[str, ...], dict[str, str], dict[str, tuple[tuple[str, int], ...]]]:
    """Loads (classes, tag dictionary, first-token weights in thousandths) from `TAGGER_PATH`."""
    classes: tuple[str, ...] = ()
    tagdict: dict[str, str] = {}
    weights: dict[str, tuple[tuple[str, int], ...]] = {}
    with gzip.open(TAGGER_PATH, "rt", encoding="utf-8") as f:
        for line in f:
            kind, _, rest = line.rstrip("\n").partition("\t")
            if kind == "w":
                feature, _, cells = rest.partition("\t")
                row = []
                for cell in cells.split(" "):
                    tag, _, value = cell.rpartition("=")
                    row.append((tag, int(value)))
                weights[feature] = tuple(row)
            elif kind == "tag":
                word, _, tag = rest.partition("\t")
                tagdict[word] = tag
            elif kind == "classes":
                classes = tuple(rest.split(" "))
    return classes, tagdict, weights


def _normalize(word: str) -> str:
    """nltk `PerceptronTagger.normalize`: hyphenated words, years and numbers are classes."""
    if "-" in word and word[0] != "-":
        return "!HYPHEN"
    if word.isdigit() and len(word) == 4:
        return "!YEAR"
    if word and word[0].isdigit():
        return "!DIGITS"
    return word.lower()


def first_token_tag(tokens: list[str]) -> str:
    """The Penn Treebank tag the averaged perceptron gives `tokens[0]` in `tokens`.

    As nltk's `PerceptronTagger.tag(tokens)[0][1]`: a word in the tag dictionary gets its tag;
    otherwise the best-scoring class (ties to the larger tag string) over the first token's
    features, which see only the token, the next two tokens and the start symbols.

    Args:
      tokens: word tokens, at least one (only the first three are read).

    Returns:
      A tag such as "VB", "NNP" or "DT".
    """
    classes, tagdict, weights = _tagger()
    word = tokens[0]
    tag = tagdict.get(word)
    if tag:
        return tag
    context = [_normalize(t) for t in tokens[:3]] + list(_END)
    features = (
        *_START_FEATURES,
        "i suffix " + word[-3:],
        "i pref1 " + word[:1],
        "i word " + context[0],
        f"i-1 tag+i word {_START[0]} " + context[0],
        "i+1 word " + context[1],
        "i+1 suffix " + context[1][-3:],
        "i+2 word " + context[2],
    )
    scores: dict[str, int] = defaultdict(int)
    for feature in features:
        for label, weight in weights.get(feature, ()):
            scores[label] += weight
    return max(classes, key=lambda label: (scores[label], label))


# --- checks --------------------------------------------------------------------------------


def start_verb(text: str, kw: dict) -> bool:
    """The first `word_tokenize` token is tagged VB* by the (shipped) perceptron tagger."""
    tokens = _head_tokens(text, 3)
    return bool(tokens) and "VB" in first_token_tag(tokens)


def last_first(text: str, kw: dict) -> bool:
    """Each Punkt sentence's last word is the next one's first word (case-insensitive).

    Words are whitespace-split after stripping ASCII punctuation and spaces from the sentence's
    end (last word) or start (first word); a sentence left without words fails.
    """
    sents = nlp.sentences(text)
    for prev, nxt in zip(sents, sents[1:]):
        last_words = prev.rstrip(_PUNCT_SPACE).split()
        first_words = nxt.lstrip(_PUNCT_SPACE).split()
        if not last_words or not first_words:
            return False
        if last_words[-1].lower() != first_words[0].lower():
            return False
    return True


def keywords_specific_position(text: str, kw: dict) -> bool:
    """The m-th word token (tokens with a letter or digit) of the n-th sentence is `keyword`."""
    n, m = int(kw["n"]), int(kw["m"])
    if n < 1 or m < 1:  # the reference draws a random position for 0; we never pass
        return False
    sents = nlp.sentences(text)
    if len(sents) < n:
        return False
    words = [t for t in word_tokenize(sents[n - 1]) if any(ch.isalnum() for ch in t)]
    return len(words) >= m and words[m - 1].lower() == kw["keyword"].strip().lower()


def words_position(text: str, kw: dict) -> bool:
    """The 2nd token and the 2nd-to-last token (3rd-to-last after a final punctuation token)
    of `word_tokenize(text)` are both `keyword` (case-insensitive).

    "Punctuation token" is the reference's `token in string.punctuation`, a substring test:
    "." and "!" are, "..." and the closing-quote token "''" are not.
    """
    sents = nlp.sentences(text)
    if len(sents) > 5:  # every sentence has a token: the ends suffice, in order
        words = _tokens(sents[:2]) + _tokens(sents[-3:])
    else:
        words = _tokens(sents)
    if len(words) < 2:
        return False
    keyword = kw["keyword"].strip().lower()
    if words[-1] in string.punctuation:
        if len(words) < 3:
            return False
        return words[1].lower() == words[-3].lower() == keyword
    return words[1].lower() == words[-2].lower() == keyword


CHECKS = {
    "words:start_verb": start_verb,
    "words:last_first": last_first,
    "words:keywords_specific_position": keywords_specific_position,
    "words:words_position": words_position,
}
SPECS: dict[str, dict[str, str]] = {
    "words:start_verb": {},
    "words:last_first": {},
    "words:keywords_specific_position": {"keyword": "str", "n": "int", "m": "int"},
    "words:words_position": {"keyword": "str"},
}
