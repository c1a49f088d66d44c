"""Our fast NLP paths equal the libraries they replace: langdetect, Punkt, nltk.word_tokenize."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import nlp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"
CHARS = (
    "aAbBnNtTiIwWsSeE'’\".,!?;:-—()[]{}<>*#@$%&/ \n\n\t0123éÉǅΣσςЖжДд中文ひカ한ئيهहि\u0300\u0301"
    "\u1ea0ẞ«»“”`\0"
)
WORDS = (
    "can not Can CAN gonna Gon na 't is 'Tis n't N'T don't DON'T X Xn't 'twas I A. U.S. "
    "wanna d'ye D'ye more'n lemme Gimme gotta e.g. Dr. Mr. ... http://x.io a@b.com "
    "Привет мир नमस्ते Tiếng Việt ΟΔΟΣ COVID-19"
).split()
TEXTS = st.text(alphabet=st.sampled_from(CHARS), max_size=120) | st.lists(
    st.sampled_from(WORDS + list(CHARS)), max_size=25
).map(" ".join)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _real_texts(n: int = 60) -> list[str]:
    if not SHARED.exists():
        return []
    with open(SHARED / "train_from_parquet.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(n))]
    return [r["chosen"] for r in rows] + [r["prompt"] for r in rows]


def _langdetect_probabilities(text: str):
    detector = nlp._language_factory().create()
    detector.append(text)
    try:
        detector._detect_block()
    except nlp.lang_detect_exception():
        return "no features"
    return np.array(detector.langprob)


def _fast_probabilities(text: str):
    try:
        return nlp._fast_detector().probabilities(text)
    except nlp.lang_detect_exception():
        return "no features"


def _assert_same_probabilities(text: str):
    ours, ref = _fast_probabilities(text), _langdetect_probabilities(text)
    if isinstance(ref, str) or isinstance(ours, str):
        assert ours == ref
    else:
        np.testing.assert_array_equal(ours, ref)  # bit-identical, not approximately


@FUZZ
@given(text=TEXTS)
def test_fast_langdetect_is_bit_identical_on_fuzz(text):
    _assert_same_probabilities(text)


@pytest.mark.skipif(not SHARED.exists(), reason=f"reference data not present at {SHARED}")
def test_fast_langdetect_is_bit_identical_on_real_text():
    texts = _real_texts(25)
    texts += [t.upper() for t in texts[:5]] + ["x" * 12000, "中文文本测试" * 50, "مرحبا " * 40]
    for text in texts:
        _assert_same_probabilities(text)


@FUZZ
@given(text=TEXTS)
def test_sentences_equal_nltk_punkt(text):
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    reference = PunktSentenceTokenizer(nlp.sentence_tokenizer()._params)
    assert nlp.sentences(text) == tuple(reference.tokenize(text))


def _nltk_upper_count(text: str) -> int:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return sum(t.isupper() for s in nlp.sentences(text) for t in tokenizer.tokenize(s))


@FUZZ
@given(text=TEXTS)
def test_upper_token_count_equals_nltk_word_tokenize(text):
    assert nlp.count_upper_tokens(text) == _nltk_upper_count(text)


def test_upper_token_count_on_real_and_adversarial_text():
    rng = random.Random(0)
    texts = _real_texts(40)
    texts += [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)]
    texts += ["Xn't stop", "'Tis true", "CANnot", "caN'T", "Gimme A. B", "I.", "DON’T"]
    skipped = 0
    for text in texts:
        assert nlp.count_upper_tokens(text) == _nltk_upper_count(text), text
        skipped += sum(not nlp.may_have_upper_token(s) for s in nlp.sentences(text))
    assert skipped > 0  # the shortcut is exercised


def test_shortcut_cases():
    assert not nlp.may_have_upper_token("The quick brown fox, Alice and Bob.")
    for sentence in ["Xn't stop", "'Tis so", "I went", "NASA rocks", "End A", "Ƀ!"]:
        assert nlp.may_have_upper_token(sentence), sentence
