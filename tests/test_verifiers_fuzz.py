"""Fuzzing: no check raises (or stalls), whatever the response text or kwargs.

`verify` never raises by design (a crashing check scores False), so these tests look at the
error channel instead: `verify_outcome(...).status` and `BatchReport.errors`/`timeouts` must
show that every check ran to a verdict ("ok"), or rejected the kwargs up front ("bad_spec").
IFEval's 25 ids and every IFBench id (kwargs from the shipped IFBench prompts) are fuzzed alike,
IFBench's also on 1 MB responses and with their checks called directly (no wrapper).
"""

import json
import logging
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import (
    HARD_IDS,
    IFBENCH_IDS,
    check_spec,
    ifbench,
    verify_batch_report,
    verify_outcome,
)

IFBENCH_PROMPTS = Path(__file__).resolve().parents[1] / "ifrl_jax/assets/ifbench/IFBench_test.jsonl"

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


def _ifbench_valid() -> dict[str, dict]:
    """IFBench id -> the kwargs of its first prompt in the shipped file, nulls dropped."""
    out = {"custom:character_reverse": {}}  # in the registry, not in the 294 prompts
    with open(IFBENCH_PROMPTS, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for cid, kw in zip(row["instruction_id_list"], row["kwargs"]):
                out.setdefault(cid, {k: v for k, v in kw.items() if v is not None})
    return out


IFBENCH_VALID = _ifbench_valid()
assert set(IFBENCH_VALID) == IFBENCH_IDS
ALL_VALID = {**VALID, **IFBENCH_VALID}

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


@pytest.mark.parametrize("cid", sorted(ALL_VALID))
@FUZZ
@given(text=TEXT, loose=st.booleans())
def test_any_text(cid, text, loose):
    outcome = verify_outcome(cid, ALL_VALID[cid], text, loose=loose)
    assert outcome.status == "ok", outcome.messages
    assert isinstance(outcome.passed, bool)


@FUZZ
@given(
    cid=st.sampled_from(sorted(ALL_VALID)),
    data=st.data(),
    text=TEXT,
)
def test_odd_kwargs(cid, data, text):
    kwargs = dict(ALL_VALID[cid])
    for name in list(kwargs) + ["extra"]:
        if data.draw(st.booleans()):
            kwargs[name] = data.draw(ODD)
    odd_kwargs = data.draw(st.sampled_from([kwargs, None, [], "x", {1: 2}]))
    outcome = verify_outcome(cid, odd_kwargs, text)
    assert outcome.status in ("ok", "bad_spec"), outcome.messages
    assert isinstance(outcome.passed, bool)
    assert outcome.status == "ok" or not outcome.passed


@pytest.mark.parametrize("cid", sorted(ALL_VALID))
def test_big_inputs(cid):
    rng = random.Random(cid)
    big = "".join(rng.choice(MARKUP + "abcdefghij      \u0915\u093f") for _ in range(100_000))
    for text in [big, "*" * 50_000, "\n" * 50_000, "[" * 20_000 + "]" * 20_000, "a" * 100_000]:
        outcome = verify_outcome(cid, ALL_VALID[cid], text, loose=True)
        assert outcome.status == "ok", outcome.messages


def _huge_texts() -> list[str]:
    """1 MB responses: markup and words, random code points (surrogates excluded), one char."""
    rng = random.Random(1)
    words = MARKUP + "abcdefghij      \u0915\u093f"
    mixed = "".join(rng.choice(words) for _ in range(1_000_000))
    points = [rng.randrange(0x110000) for _ in range(1_000_000)]
    unicode = "".join(chr(c) for c in points if not 0xD800 <= c < 0xE000)
    return [mixed, unicode, "a" * 1_000_000]


@pytest.fixture(scope="module")
def huge():
    return _huge_texts()


@pytest.mark.parametrize("cid", sorted(IFBENCH_IDS))
def test_ifbench_huge_and_empty_responses(cid, huge):
    """1 MB (strict: the loose variants only repeat it) and empty texts give a verdict."""
    check, kw = ifbench.CHECKS[cid], check_spec(cid, IFBENCH_VALID[cid])
    for text in ["", " ", "\n", "\x00", "\ud800", "\U0010ffff"]:
        assert isinstance(check(text, kw), bool)  # the check itself, without the wrapper
        outcome = verify_outcome(cid, kw, text, loose=True)
        assert outcome.status == "ok" and not (outcome.passed and not text.strip())
    start = time.perf_counter()
    for text in huge:
        outcome = verify_outcome(cid, kw, text)
        assert outcome.status == "ok", outcome.messages
    assert time.perf_counter() - start < 25  # each check has 30 s; none should come close


@FUZZ
@given(
    texts=st.lists(TEXT | st.none() | st.integers(), min_size=1, max_size=4),
    think_mode=st.sampled_from(["none", "required", "optional"]),
)
def test_batch_never_raises_on_responses(texts, think_mode):
    ids = sorted(ALL_VALID)  # row 0 gets all ids, the others fewer (ragged lists)
    step = len(ids) // 4
    constraints = [[(cid, ALL_VALID[cid]) for cid in ids[i * step :]] for i in range(4)]
    report = verify_batch_report(
        texts, constraints[: len(texts)], modes=("strict", "loose"), think_mode=think_mode
    )
    assert (report.errors, report.timeouts, report.bad_specs) == (0, 0, 0), report.messages
    width = max(len(c) for c in constraints[: len(texts)])
    for scores in report.scores.values():
        assert scores.shape == report.valid.shape == (len(texts), width)
        assert set(scores.ravel().tolist()) <= {0.0, 1.0}
