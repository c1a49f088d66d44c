"""Fuzzing: `verify` never raises, whatever the response text or kwargs."""

import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import HARD_IDS, verify, verify_batch

# A valid kwargs example per id (from IFEval's prompts).
VALID = {
    "keywords:existence": {"keywords": ["cat", "dog"]},
    "keywords:frequency": {"keyword": "the", "frequency": 2, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["bad", "#tag"]},
    "keywords:letter_frequency": {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
    "language:response_language": {"language": "hi"},
    "length_constraints:number_sentences": {"num_sentences": 3, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 2},
    "length_constraints:number_words": {"num_words": 5, "relation": "less than"},
    "length_constraints:nth_paragraph_first_word": {
        "num_paragraphs": 2,
        "nth_paragraph": 2,
        "first_word": "so",
    },
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.P.S"},
    "detectable_format:number_bullet_lists": {"num_bullets": 2},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 2},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "combination:two_responses": {},
    "combination:repeat_prompt": {"prompt_to_repeat": "Write a story."},
    "startend:end_checker": {"end_phrase": "Bye."},
    "change_case:capital_word_frequency": {"capital_frequency": 2, "capital_relation": "at least"},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "punctuation:no_comma": {},
    "startend:quotation": {},
}
assert set(VALID) == HARD_IDS

MARKUP = "*-#\n\n \t\"'[]<>{},.!?:;0123456789ABCxyzéß\u00a0\u2028\u3000，"
TEXT = st.text(alphabet=st.sampled_from(MARKUP), max_size=200) | st.text(max_size=200)
ODD = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _quiet_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="ifrl_jax.verifiers")


@pytest.mark.parametrize("cid", sorted(HARD_IDS))
@FUZZ
@given(text=TEXT, loose=st.booleans())
def test_any_text(cid, text, loose):
    assert isinstance(verify(cid, VALID[cid], text, loose=loose), bool)


@FUZZ
@given(
    cid=st.sampled_from(sorted(HARD_IDS)),
    data=st.data(),
    text=TEXT,
)
def test_odd_kwargs(cid, data, text):
    kwargs = dict(VALID[cid])
    for name in list(kwargs) + ["extra"]:
        if data.draw(st.booleans()):
            kwargs[name] = data.draw(ODD)
    odd_kwargs = data.draw(st.sampled_from([kwargs, None, [], "x", {1: 2}]))
    assert isinstance(verify(cid, odd_kwargs, text), bool)


@pytest.mark.parametrize("cid", sorted(HARD_IDS))
def test_big_inputs(cid):
    rng = random.Random(cid)
    big = "".join(rng.choice(MARKUP + "abcdefghij      \u0915\u093f") for _ in range(100_000))
    for text in [big, "*" * 50_000, "\n" * 50_000, "[" * 20_000 + "]" * 20_000, "a" * 100_000]:
        assert isinstance(verify(cid, VALID[cid], text, loose=True), bool)


@FUZZ
@given(
    texts=st.lists(TEXT | st.none() | st.integers(), min_size=1, max_size=4),
    think_mode=st.sampled_from(["none", "required", "optional"]),
)
def test_batch_never_raises_on_responses(texts, think_mode):
    constraints = [[(cid, VALID[cid]) for cid in sorted(HARD_IDS)[: 1 + i * 7]] for i in range(4)]
    scores, valid = verify_batch(texts, constraints[: len(texts)], think_mode=think_mode)
    assert (
        scores.shape == valid.shape == (len(texts), max(len(c) for c in constraints[: len(texts)]))
    )
    assert set(scores.ravel().tolist()) <= {0.0, 1.0}
