"""Pass rates on hand-made responses with known verdicts: `evaluate.hard_pass_rates` (the held-out
evaluation) and `rewards.pass_rates` (the training log), with exact expected numbers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ifrl_jax import evaluate, rewards
from ifrl_jax.records import Constraint, Record
from ifrl_jax.verifiers import core

NO_COMMA = Constraint("punctuation:no_comma", {}, "Do not use commas")
TITLE = Constraint("detectable_format:title", {}, "Add a title in <<>>")
QUOTE = Constraint("startend:quotation", {}, "Wrap the answer in quotes")
FEW_WORDS = Constraint(
    "length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "Be brief"
)
ROLE = Constraint("situation:role_play", {}, "Answer as a pirate")
STORY = Constraint("situation:story_generation", {}, "Tell a story")
# A catastrophic regex kwarg (2^n backtracking paths without a "~"): it never ends by itself.
STALL = Constraint("keywords:existence", {"keywords": ["(.|.)*~"]}, "Use the word ~")

NC_ID, TITLE_ID, QUOTE_ID, WORDS_ID = (c.id for c in (NO_COMMA, TITLE, QUOTE, FEW_WORDS))


def _rec(*constraints: Constraint, level: int | None = None) -> Record:
    return Record("task", tuple(constraints), seed="task ", level=level, source="t:1")


def _math(answer: str) -> Record:
    return Record("what is it?", (), kind="math", answer=answer, source="m:1")


# (record, response, verdict of each hard constraint in order; soft ones are excluded)
HELD_OUT = [
    (_rec(NO_COMMA, TITLE), "<<t>> a, b", [False, True]),
    (_rec(NO_COMMA, TITLE, QUOTE), '"<<t>> all fine"', [True, True, True]),
    (_rec(ROLE, NO_COMMA), "ahoy there", [True]),  # one hard constraint, one soft
    (_rec(ROLE, STORY), "once upon a time", []),  # soft only: not a prompt of the hard rates
    (_rec(TITLE), "", [False]),  # an empty response fails everything
    (_rec(FEW_WORDS, NO_COMMA), "one two three four", [False, True]),
]


def test_hard_pass_rates_constraint_and_prompt_level():
    recs, texts, verdicts = zip(*HELD_OUT)
    rates = evaluate.hard_pass_rates(list(recs), list(texts))
    # 9 hard constraints, 6 met; 5 prompts with hard constraints, 2 meet all of theirs.
    assert rates["constraints"] == sum(map(len, verdicts)) == 9
    assert rates["prompts"] == 5
    assert rates["constraint_pass_rate"] == pytest.approx(6 / 9)
    assert rates["prompt_pass_rate"] == pytest.approx(2 / 5)
    assert rates[f"pass/id/{NC_ID}"] == pytest.approx(3 / 4)  # prompts 1, 2, 3, 6
    assert rates[f"pass/id/{TITLE_ID}"] == pytest.approx(2 / 3)  # prompts 1, 2, 5
    assert rates[f"pass/id/{QUOTE_ID}"] == 1.0
    assert rates[f"pass/id/{WORDS_ID}"] == 0.0
    assert not [k for k in rates if k.startswith("pass/id/situation")]  # soft ids excluded
    expected_keys = {"constraint_pass_rate", "prompt_pass_rate", "constraints", "prompts"}
    expected_keys |= {f"pass/id/{i}" for i in (NC_ID, TITLE_ID, QUOTE_ID, WORDS_ID)}
    assert expected_keys <= set(rates)


def test_hard_pass_rates_follow_the_verdicts_not_the_records():
    recs, texts, _ = zip(*HELD_OUT)
    fixed = list(texts)
    fixed[0] = "<<t>> a b"  # prompt 1 now meets both
    fixed[5] = "one two"  # prompt 6 now meets both
    rates = evaluate.hard_pass_rates(list(recs), fixed)
    assert rates["constraint_pass_rate"] == pytest.approx(8 / 9)
    assert rates["prompt_pass_rate"] == pytest.approx(4 / 5)
    assert rates[f"pass/id/{NC_ID}"] == 1.0 and rates[f"pass/id/{WORDS_ID}"] == 1.0
    # Only prompt 5 (empty response) fails: per-constraint 8/9 but prompt-level 4/5.
    none = evaluate.hard_pass_rates(list(recs), ["a, b"] * len(recs))
    assert none["prompt_pass_rate"] == 0.0
    assert none["constraint_pass_rate"] == pytest.approx(1 / 9)  # only "less than 3 words"


def test_hard_pass_rates_pass_options_through():
    recs = [_rec(QUOTE), _rec(QUOTE, NO_COMMA)]
    texts = ['Here you go:\n"quoted"', '<think>a, b</think>\n\n"no commas"']
    strict = evaluate.hard_pass_rates(recs, texts)  # judged on the whole text: all fail
    assert (strict["constraint_pass_rate"], strict["prompt_pass_rate"]) == (0.0, 0.0)
    loose = evaluate.hard_pass_rates(recs, texts, loose=True)  # the first line may be dropped
    assert (loose["constraint_pass_rate"], loose["prompt_pass_rate"]) == (1.0, 1.0)
    think = evaluate.hard_pass_rates(recs, texts, think_mode="required")  # 1st has no tag
    assert think["constraint_pass_rate"] == pytest.approx(2 / 3)
    assert think["prompt_pass_rate"] == pytest.approx(1 / 2)
    assert think[f"pass/id/{QUOTE_ID}"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_hard_pass_rates_survive_a_stalled_check(monkeypatch, where):
    """Evaluation passes timeout_s=None: the ceiling still stops a check that never ends."""
    monkeypatch.setattr(core, "MAX_TIMEOUT_S", 0.5)
    recs = [_rec(STALL, NO_COMMA), _rec(NO_COMMA)]
    texts = ["x" * 60, "fine"]
    out: dict = {}
    start = time.monotonic()
    if where == "main":
        out["rates"] = evaluate.hard_pass_rates(recs, texts)
    else:
        thread = threading.Thread(
            target=lambda: out.update(rates=evaluate.hard_pass_rates(recs, texts)), daemon=True
        )
        thread.start()
        thread.join(timeout=30)
    assert time.monotonic() - start < 15 and "rates" in out
    rates = out["rates"]
    assert rates["constraint_pass_rate"] == pytest.approx(2 / 3)
    assert rates["prompt_pass_rate"] == pytest.approx(1 / 2)
    assert rates["pass/id/keywords:existence"] == 0.0
    assert rates["verifier_timeouts"] == 1


class FakeScorer:
    """P(satisfied) = 0.8 when the constraint text occurs in the response, else 0.2."""

    def __call__(self, responses, constraint_texts):
        return np.array([0.8 if t in r else 0.2 for r, t in zip(responses, constraint_texts)])


TRAIN = [
    (_rec(NO_COMMA, level=1), "a, b"),  # [0]
    (_rec(NO_COMMA, TITLE, level=2), "<<t>> ok"),  # [1, 1]
    (_rec(NO_COMMA, TITLE, level=2), "<<t>> a, b"),  # [0, 1]
    (_rec(NO_COMMA, ROLE, level=2), "fine"),  # [1, soft]
    (_math("2"), r"so \boxed{2}"),  # level 0: [1]
    (_rec(ROLE, STORY, level=2), "x"),  # [soft, soft]
]


def test_reward_pass_rates_soft_excluded():
    recs, texts = map(list, zip(*TRAIN))
    rates = rewards.pass_rates(rewards.score(recs, texts), recs)
    assert rates == pytest.approx(
        {
            f"pass/id/{NC_ID}": 2 / 4,
            f"pass/id/{TITLE_ID}": 1.0,
            "pass/id/math": 1.0,
            "pass/level/L0": 1.0,
            "pass/level/L1": 0.0,
            "pass/level/L2": 4 / 5,
            "reward/level/L0": 5.0,
            "reward/level/L1": 0.0,
            "reward/level/L2": (5.0 + 2.5 + 5.0) / 3,  # the soft-only record has no reward
            "all_pass/level/L0": 1.0,
            "all_pass/level/L1": 0.0,
            "all_pass/level/L2": 2 / 3,
            "pass/all": 5 / 7,
        }
    )


def test_reward_pass_rates_with_a_soft_scorer():
    recs, texts = map(list, zip(*TRAIN))
    texts[5] = "Tell a story"  # STORY's text occurs: 0.8; ROLE's does not: 0.2
    result = rewards.score(recs, texts, soft_scorer=FakeScorer())
    rates = rewards.pass_rates(result, recs)
    assert rates["pass/id/situation:role_play"] == pytest.approx(0.2)
    assert rates["pass/id/situation:story_generation"] == pytest.approx(0.8)
    # Level 2 scores: [1, 1], [0, 1], [1, 0.2], [0.2, 0.8] -> 5.2 / 8.
    assert rates["pass/level/L2"] == pytest.approx(5.2 / 8)
    # Every valid score > 0.5 only in the first of the four level-2 records.
    assert rates["all_pass/level/L2"] == pytest.approx(1 / 4)
    assert rates["reward/level/L2"] == pytest.approx((5.0 + 2.5 + 3.0 + 2.5) / 4)
    assert rates["pass/all"] == pytest.approx((0 + 2 + 1 + 1.2 + 1 + 1.0) / 10)


def test_reward_pass_rates_reject_mismatched_records():
    recs, texts = map(list, zip(*TRAIN))
    with pytest.raises(ValueError, match="records"):
        rewards.pass_rates(rewards.score(recs, texts), recs[:-1])


def test_soft_pass_rates_by_the_hidden_oracle():
    """Soft ids with an oracle (the tiny set's) are measured by it; others are not counted."""
    cheer = Constraint("style:enthusiastic", {}, "Write with enthusiasm")
    weather = Constraint("soft_content:weather", {}, "Mention the weather")
    recs = [_rec(cheer, NO_COMMA), _rec(weather, cheer), _rec(weather), _rec(ROLE, TITLE)]
    texts = ["What fun!", "Rainy days, sadly.", "<think>rain</think>\n\nIt is Sunny", "ahoy"]
    rates = evaluate.soft_pass_rates(recs, texts, think_mode="optional")
    # cheer: yes, no ("!" missing); weather: yes ("rainy"), yes ("sunny" after the think part).
    assert rates == {
        "soft_pass_rate": pytest.approx(3 / 4), "soft_constraints": 4,
        "soft/id/soft_content:weather": 1.0, "soft/id/style:enthusiastic": 0.5,
    }  # fmt: skip
    # The oracle sees the judged text only: "rain" inside the think part does not count.
    assert evaluate.soft_pass_rates([_rec(weather)], ["<think>rain</think>\n\nno"],
                                    think_mode="optional")["soft_pass_rate"] == 0.0  # fmt: skip
    assert evaluate.soft_pass_rates([_rec(ROLE, TITLE)], ["ahoy"]) == {}
