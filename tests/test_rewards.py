"""The reward: hard verdicts, soft scorer, think tags, math items, pass rates, reference pairs."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from ifrl_jax import records, rewards
from ifrl_jax.records import Constraint, Record

SHARED = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"
# Measured by this code (strict verification) on the 1,319 reference pairs: 999 records whose
# added (5th) constraint is hard; chosen meets it in 799 (80.0%), rejected in 154 (15.4%).
N_HARD_LAST, MET_CHOSEN, MET_REJECTED = 999, 799, 154

NO_COMMA = Constraint("punctuation:no_comma", {}, "Do not use commas")
LOWER = Constraint("change_case:english_lowercase", {}, "Answer in lowercase")
TITLE = Constraint("detectable_format:title", {}, "Add a title")
ROLE = Constraint("situation:role_play", {}, "Answer as a pirate")
STORY = Constraint("situation:story_generation", {}, "Tell a story")


def _rec(*constraints: Constraint, level: int | None = None) -> Record:
    return Record("task", tuple(constraints), seed="task ", level=level, source="t:1")


def _math(answer: str) -> Record:
    return Record("what is it?", (), kind="math", answer=answer, source="m:1")


class FakeScorer:
    """Records its calls; P(satisfied) = 0.8 when the text is in the response, else 0.2."""

    def __init__(self):
        self.calls = []

    def __call__(self, responses, constraint_texts):
        self.calls.append((list(responses), list(constraint_texts)))
        return np.array([0.8 if t in r else 0.2 for r, t in zip(responses, constraint_texts)])


# ----------------------------------------------------------------------------- math


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{a{b{c}}d} end", "a{b{c}}d"),
        (r"\boxed{7} and \boxed{8", "7"),  # the last one never closes: ignored
        (r"\boxed{ {} }", " {} "),
        ("no box here", None),
        (r"\boxed{", None),
    ],
)
def test_last_boxed(text, expected):
    assert rewards.last_boxed(text) == expected


def test_math_items_score_scale_on_exact_match():
    recs = [_math(r"\frac{1}{2}"), _math("3"), _math("3"), _math("3")]
    responses = [r"thus \boxed{\frac{1}{2}}", r"\boxed{3} no wait \boxed{4}", r"\boxed{ 3 }", ""]
    result = rewards.score(recs, responses, scale=5.0)
    np.testing.assert_array_equal(result.rewards, [5.0, 0.0, 5.0, 0.0])
    assert result.ids == [("math",)] * 4 and result.levels.tolist() == [0] * 4


# ----------------------------------------------------------------------------- hard constraints


def test_reward_is_scale_times_mean_of_hard_verdicts():
    recs = [_rec(NO_COMMA, LOWER, TITLE)] * 4
    responses = [
        "<<t>>\nall lowercase and no commas here at all",
        "<<t>>\nall lowercase, but with a comma here",
        "No Title, Capitals, Commas in this sentence",
        "<<t>>\nNo commas but Capitals in this sentence",
    ]
    result = rewards.score(recs, responses, scale=5.0)
    np.testing.assert_allclose(result.rewards, [5.0, 5.0 * 2 / 3, 0.0, 5.0 * 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(result.scores[1], [0.0, 1.0, 1.0])
    assert result.valid.all() and result.reward_valid.all()
    assert result.scores.dtype == np.float32 and result.rewards.dtype == np.float32


def test_empty_response_fails_everything():
    scorer = FakeScorer()
    result = rewards.score([_rec(NO_COMMA, ROLE)] * 2, ["", "   \n"], soft_scorer=scorer)
    np.testing.assert_array_equal(result.rewards, [0.0, 0.0])
    np.testing.assert_array_equal(result.scores, np.zeros((2, 2)))
    assert result.valid.all()  # soft slots count, as failures
    assert scorer.calls == [([], [])]  # asked about no empty response, yet called (collective)


def test_think_mode_required_judges_only_the_answer():
    recs = [_rec(NO_COMMA)] * 3
    responses = [
        "<think>\nhmm, commas, here\n</think>\n\nclean answer",
        "clean answer without a think block",
        "<think>\nplan\n</think>\n\n",
    ]
    result = rewards.score(recs, responses, think_mode="required")
    np.testing.assert_array_equal(result.rewards, [5.0, 0.0, 0.0])
    plain = rewards.score(recs, responses, think_mode="none")
    assert plain.rewards[0] == 0.0  # without stripping, the think block's commas count


def test_variable_constraint_counts_are_padded():
    recs = [_rec(NO_COMMA), _rec(NO_COMMA, LOWER, TITLE), _math("1")]
    result = rewards.score(
        recs, ["a, b", "<<x>>\nthis is a short answer in plain english", r"\boxed{1}"]
    )
    assert result.scores.shape == (3, 3)
    np.testing.assert_array_equal(result.valid, [[1, 0, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(result.rewards, [0.0, 5.0, 5.0])
    assert result.levels.tolist() == [1, 3, 0]


def test_pool_gives_the_same_scores():
    from ifrl_jax import verifiers

    recs = [_rec(NO_COMMA, LOWER, TITLE), _rec(NO_COMMA), _math("2")]
    responses = ["<<t>>\nthis is a short answer in plain english", "a, b", r"\boxed{2}"]
    here = rewards.score(recs, responses)
    with verifiers.VerifierPool(1) as pool:
        there = rewards.score(recs, responses, pool=pool)
    np.testing.assert_array_equal(here.scores, there.scores)
    np.testing.assert_array_equal(here.rewards, there.rewards)


# ----------------------------------------------------------------------------- time limits

# A catastrophic regex kwarg (2^n backtracking paths without a "~"): it never ends by itself.
STALL = Constraint("keywords:existence", {"keywords": ["(.|.)*~"]}, "Use the word ~")
STALL_TEXT = "x" * 60


def _score_in_thread(*args, **kwargs) -> tuple[rewards.RewardResult, float]:
    """rewards.score in a non-main thread (as the training loop's reward thread runs it)."""
    ex = concurrent.futures.ThreadPoolExecutor(1)
    try:
        start = time.monotonic()
        result = ex.submit(rewards.score, *args, **kwargs).result(timeout=30)
    finally:
        ex.shutdown(wait=False)  # a stalled thread must not hold up the failure
    return result, time.monotonic() - start


@pytest.mark.parametrize("where", ["thread", "pool"])
def test_a_stalled_check_scores_zero_and_is_counted(where):
    recs = [_rec(NO_COMMA, STALL), _rec(NO_COMMA), _rec(STALL)]
    texts = [STALL_TEXT, STALL_TEXT + ", y", "x" * 61]
    if where == "thread":  # verifier_processes=0: checks would run in the reward thread
        result, seconds = _score_in_thread(recs, texts, timeout_s=0.5)
    else:
        from ifrl_jax import verifiers

        with verifiers.VerifierPool(1, timeout_s=0.5) as pool:
            start = time.monotonic()
            result = rewards.score(recs, texts, pool=pool)
            seconds = time.monotonic() - start
    assert seconds < 15
    np.testing.assert_array_equal(result.scores, [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(result.rewards, [2.5, 0.0, 0.0])
    assert (result.verifier_timeouts, result.verifier_errors) == (2, 0)


def test_no_time_limit_still_has_the_ceiling(monkeypatch):
    from ifrl_jax.verifiers import core

    monkeypatch.setattr(core, "MAX_TIMEOUT_S", 0.5)
    result, seconds = _score_in_thread([_rec(STALL, NO_COMMA)], [STALL_TEXT], timeout_s=None)
    assert seconds < 15
    assert result.verifier_timeouts == 1 and result.scores.tolist() == [[0.0, 1.0]]


def test_crashing_checks_are_counted(monkeypatch):
    from ifrl_jax import verifiers

    def crash(text, kw):
        raise RuntimeError("boom")

    monkeypatch.setitem(verifiers.CHECKS, "detectable_format:title", crash)
    result = rewards.score([_rec(TITLE, NO_COMMA), _rec(TITLE)], ["<<t>> x", "<<t>>"])
    assert (result.verifier_errors, result.verifier_timeouts) == (2, 0)
    assert result.scores.tolist() == [[0.0, 1.0], [0.0, 0.0]]
    monkeypatch.undo()
    fine = rewards.score([_rec(TITLE, NO_COMMA)], ["<<t>> x"])
    assert (fine.verifier_errors, fine.verifier_timeouts) == (0, 0)
    assert fine.scores.tolist() == [[1.0, 1.0]]


# ----------------------------------------------------------------------------- soft constraints


def test_soft_excluded_without_scorer(caplog):
    rewards._logged_exclusion = False
    recs = [_rec(NO_COMMA, ROLE), _rec(ROLE, STORY)]
    with caplog.at_level(logging.INFO):
        result = rewards.score(recs, ["no commas", "anything"])
        rewards.score(recs, ["no commas", "anything"])
    assert caplog.text.count("soft constraints are excluded") == 1  # logged once
    np.testing.assert_array_equal(result.valid, [[True, False], [False, False]])
    np.testing.assert_array_equal(result.rewards, [5.0, 0.0])
    np.testing.assert_array_equal(result.reward_valid, [True, False])  # all-soft: masked
    assert rewards.soft_stats(result) == (0, None)  # excluded soft slots did not count


def test_soft_scorer_is_called_once_for_all_pairs():
    scorer = FakeScorer()
    recs = [_rec(NO_COMMA, ROLE), _rec(ROLE, STORY), _rec(NO_COMMA)]
    responses = ["a pirate, yes", "Answer as a pirate", "plain"]
    result = rewards.score(recs, responses, soft_scorer=scorer)
    assert len(scorer.calls) == 1
    assert scorer.calls[0] == (
        ["a pirate, yes", "Answer as a pirate", "Answer as a pirate"],
        ["Answer as a pirate", "Answer as a pirate", "Tell a story"],
    )
    np.testing.assert_allclose(result.scores[:2], [[0.0, 0.2], [0.8, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(result.rewards, [5 * 0.1, 5 * 0.5, 5.0], rtol=1e-6)
    assert result.valid[:2].all() and result.reward_valid.all()
    # The three soft slots reached the reward: (0.2 + 0.8 + 0.2) / 3.
    count, mean = rewards.soft_stats(result)
    assert count == 3 and mean == pytest.approx(0.4)


def test_rm_ids_route_a_hard_id_to_the_scorer_and_report_agreement():
    """reward.rm_ids: the RM scores a hard id in the reward; the rule verdict is kept aside."""
    scorer = FakeScorer()
    recs = [_rec(NO_COMMA, TITLE)] * 3
    # Rule verdicts on TITLE: 0, 0, 1. Fake RM: 0.8 iff "Add a title" is in the text.
    responses = ["Add a title here", "no title", "<<Title>> Add a title"]
    result = rewards.score(recs, responses, soft_scorer=scorer, rm_ids=(TITLE.id,))
    assert scorer.calls == [(responses, ["Add a title"] * 3)]  # only the rm id is asked
    np.testing.assert_allclose(result.scores[:, 1], [0.8, 0.2, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(result.scores[:, 0], [1.0, 1.0, 1.0])  # rules: no comma
    np.testing.assert_allclose(result.rewards, 5 * (1 + np.array([0.8, 0.2, 0.8])) / 2, rtol=1e-6)
    assert result.rm_agreement == pytest.approx(2 / 3)  # RM says yes to the first, rules no
    assert result.rm_agreement_counts == {TITLE.id: (2, 3)}
    assert rewards.soft_stats(result) == (0, None)  # an rm_ids slot is hard, not soft
    # Without a scorer rm_ids are ignored: the rules decide and there is no agreement figure.
    plain = rewards.score(recs, responses, rm_ids=(TITLE.id,))
    np.testing.assert_array_equal(plain.scores[:, 1], [0.0, 0.0, 1.0])
    assert plain.rm_agreement is None
    assert rewards.score(recs, responses, soft_scorer=scorer).rm_agreement is None


def test_soft_scorer_sees_think_stripped_text():
    scorer = FakeScorer()
    response = "<think>\nAnswer as a pirate\n</think>\n\nahoy"
    rewards.score([_rec(ROLE)], [response], soft_scorer=scorer, think_mode="required")
    assert scorer.calls == [(["ahoy"], ["Answer as a pirate"])]


def test_soft_modes_zero_and_error():
    recs = [_rec(NO_COMMA, ROLE)]
    zero = rewards.score(recs, ["no commas"], soft="zero")
    assert rewards.soft_stats(zero) == (1, 0.0)
    np.testing.assert_allclose(zero.rewards, [2.5])
    with pytest.raises(ValueError, match="no soft scorer"):
        rewards.score(recs, ["no commas"], soft="error")
    with pytest.raises(ValueError, match="soft="):
        rewards.score(recs, ["x"], soft="drop")
    with pytest.raises(ValueError, match="1 records but 2 responses"):
        rewards.score(recs, ["x", "y"])


# ----------------------------------------------------------------------------- pass rates


def test_pass_rates_per_id_and_level():
    recs = [_rec(NO_COMMA, level=1), _rec(NO_COMMA, LOWER, level=2), _rec(NO_COMMA, LOWER, level=2)]
    eng = "this is a short answer in plain english"
    result = rewards.score(recs, ["a, b", eng, eng.capitalize()])
    rates = rewards.pass_rates(result, recs)
    assert rates["pass/id/punctuation:no_comma"] == pytest.approx(2 / 3)
    assert rates["pass/id/change_case:english_lowercase"] == pytest.approx(1 / 2)
    assert rates["pass/level/L1"] == 0.0 and rates["pass/level/L2"] == pytest.approx(3 / 4)
    assert rates["reward/level/L2"] == pytest.approx(3.75)
    assert rates["all_pass/level/L2"] == pytest.approx(0.5)
    assert rates["pass/all"] == pytest.approx(3 / 5)


# ----------------------------------------------------------------------------- reference pairs


@pytest.mark.skipif(
    not (SHARED / "train_from_parquet.jsonl").exists(),
    reason=f"reference data not found at {SHARED} (the ../shared checkout of the project)",
)
def test_added_constraint_is_met_by_chosen_far_more_than_rejected():
    """The pseudo-label pairs: chosen answers L5, rejected answers L4 (without the 5th)."""
    path = SHARED / "train_from_parquet.jsonl"
    raw = [json.loads(line) for line in open(path, encoding="utf-8")]
    recs = records.load_records(str(path)).records
    last = [dataclasses.replace(r, constraints=r.constraints[4:]) for r in recs]  # c_5 only
    chosen = rewards.score(last, [r["chosen"] for r in raw], timeout_s=None)
    rejected = rewards.score(last, [r["rejected"] for r in raw], timeout_s=None)
    hard = chosen.valid[:, 0]  # soft ids are excluded (no scorer): valid=False
    n, met_chosen, met_rejected = (
        int(hard.sum()),
        int(chosen.scores[hard, 0].sum()),
        int(rejected.scores[hard, 0].sum()),
    )
    assert (n, met_chosen, met_rejected) == (N_HARD_LAST, MET_CHOSEN, MET_REJECTED)
    assert met_chosen / n > 0.75 and met_rejected / n < 0.2
    # The same figures through the rewards of the single-constraint records.
    assert int((chosen.rewards[hard] == 5.0).sum()) == met_chosen


def test_agreement_guard_marks_low_steps_and_warns_once(caplog):
    """reward.rm_agreement_floor: every step below it is marked, the console warned once."""
    from ifrl_jax import rollout

    guard = rollout.AgreementGuard(0.6)
    rows = [
        {"reward/rm_agreement": 0.9, f"reward/rm_agreement/{TITLE.id}": 0.9},
        {"reward/rm_agreement": 0.5, f"reward/rm_agreement/{TITLE.id}": 0.3,
         "reward/rm_agreement/punctuation:no_comma": 0.7},
        {"reward/rm_agreement": 0.4},
        {"reward/mean": 1.0},  # no RM-scored slot on this step: nothing to judge
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        for step, row in enumerate(rows, 1):
            guard.check(step, row)
    assert [r.get("reward/rm_agreement_low") for r in rows] == [0, 1, 1, None]
    assert len(caplog.records) == 1
    assert "step 2" in caplog.text and f"lowest: {TITLE.id} at 0.30" in caplog.text
    off = {"reward/rm_agreement": 0.1}
    rollout.AgreementGuard(0.0).check(1, off)
    assert "reward/rm_agreement_low" not in off
