"""Fuzzing: no check raises (or stalls), whatever the response text or kwargs.

`verify` never raises by design (a crashing check scores False), so these tests look at the
error channel instead: `verify_outcome(...).status` and `BatchReport.errors`/`timeouts` must
show that every check ran to a verdict ("ok"), or rejected the kwargs up front ("bad_spec").
"""

import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import HARD_IDS, verify_batch_report, verify_outcome

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
    outcome = verify_outcome(cid, VALID[cid], text, loose=loose)
    assert outcome.status == "ok", outcome.messages
    assert isinstance(outcome.passed, bool)


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
    outcome = verify_outcome(cid, odd_kwargs, text)
    assert outcome.status in ("ok", "bad_spec"), outcome.messages
    assert isinstance(outcome.passed, bool)
    assert outcome.status == "ok" or not outcome.passed


@pytest.mark.parametrize("cid", sorted(HARD_IDS))
def test_big_inputs(cid):
    rng = random.Random(cid)
    big = "".join(rng.choice(MARKUP + "abcdefghij      \u0915\u093f") for _ in range(100_000))
    for text in [big, "*" * 50_000, "\n" * 50_000, "[" * 20_000 + "]" * 20_000, "a" * 100_000]:
        outcome = verify_outcome(cid, VALID[cid], text, loose=True)
        assert outcome.status == "ok", outcome.messages


@FUZZ
@given(
    texts=st.lists(TEXT | st.none() | st.integers(), min_size=1, max_size=4),
    think_mode=st.sampled_from(["none", "required", "optional"]),
)
def test_batch_never_raises_on_responses(texts, think_mode):
    ids = sorted(HARD_IDS)  # row 0 gets all 25 ids, the others fewer (ragged lists)
    constraints = [[(cid, VALID[cid]) for cid in ids[: len(ids) - i * 7]] for i in range(4)]
    report = verify_batch_report(
        texts, constraints[: len(texts)], modes=("strict", "loose"), think_mode=think_mode
    )
    assert (report.errors, report.timeouts, report.bad_specs) == (0, 0, 0), report.messages
    width = max(len(c) for c in constraints[: len(texts)])
    for scores in report.scores.values():
        assert scores.shape == report.valid.shape == (len(texts), width)
        assert set(scores.ravel().tolist()) <= {0.0, 1.0}
