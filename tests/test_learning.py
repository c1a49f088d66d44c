"""Learning, not just running: GRPO raises held-out pass rates and the RM reaches held-out
accuracy on toy tasks whose right answer is known, at thresholds a non-learning stub cannot meet.

Both runs start from random weights (no warm start) with the `tiny` preset, train on one set of
texts and are scored on texts never trained on. The calibration numbers below were measured with
this file's configs on a 2-core machine shared with other jobs; the stubs (learning rate 0) were
run once each and fail the assertions.
"""

from __future__ import annotations

import hashlib
import json
import re

from configs import rm_tiny
from ifrl_jax import pairs as pairs_lib
from ifrl_jax import records
from ifrl_jax.jobs import grpo
from ifrl_jax.jobs import reward_model as rm_job
from tests.tiny_train_config import tiny_config

# --------------------------------------------------------------------------------------------
# GRPO: answer in fewer than N words.
# --------------------------------------------------------------------------------------------

WORD_LIMITS = (2, 4, 6)  # "Answer with less than N words", N per record
GRPO_STEPS = 60
GRPO_LR = 5e-3
# Held-out thresholds: the final greedy pass rate, and its gain over the pass rate at step 0.
MIN_PASS_AFTER = 0.8
MIN_GAIN = 0.5
MIN_FINAL_REWARD = 4.0  # mean training reward of the last 5 steps (reward.scale = 5)


def _seed_tasks(split: str) -> list[str]:
    """The distinct seed tasks of a shipped instruction file (train: 40, heldout: 10)."""
    recs = records.load_records(str(pairs_lib.ASSETS / f"{split}.jsonl")).records
    return sorted({r.seed for r in recs})


def _write_brevity_records(path, seeds: list[str]) -> None:
    """One record per (seed task, N) whose only constraint is "less than N words"."""
    with open(path, "w") as f:
        for seed in seeds:
            for n in WORD_LIMITS:
                text = f"Answer with less than {n} words"
                row = {
                    "prompt": records.build_prompt(seed, [text]),
                    "instruction_id_list": ["length_constraints:number_words"],
                    "kwargs": [{"relation": "less than", "num_words": n}],
                    "constraint": [text],
                }
                f.write(json.dumps(row) + "\n")


def brevity_config(tmp_path, *, seed: int = 0, learning_rate: float = GRPO_LR):
    """The GRPO toy run: 40 training seed tasks, 10 held-out ones (30 held-out constraints)."""
    _write_brevity_records(tmp_path / "train.jsonl", _seed_tasks("train"))
    _write_brevity_records(tmp_path / "heldout.jsonl", _seed_tasks("heldout"))
    return tiny_config(
        tmp_path / "run",
        **{
            "seed": seed,
            "mesh": {"data": -1, "fsdp": 1, "tp": 1},  # 8 prompts, one per fake device
            "sharding": "replicated",
            "data.train": str(tmp_path / "train.jsonl"),
            "data.heldout": str(tmp_path / "heldout.jsonl"),
            "data.max_prompt_len": 64,
            "data.prompt_buckets": (64,),
            "rollout.n": 8,
            "rollout.prompts_per_batch": 8,
            "rollout.max_new_tokens": 16,
            "grpo.minibatch_prompts": 8,  # one on-policy update per rollout batch
            "grpo.kl_coef": 0.0,
            "grpo.learning_rate": learning_rate,
            "sft.steps": 0,
            "train.steps": GRPO_STEPS,
            "train.eval_every": GRPO_STEPS,  # held-out eval at step 0 and at the end only
            "train.eval_batch_size": 32,
            "train.checkpoint_every": GRPO_STEPS,
            "train.export_hf": False,
            "reward.verifier_processes": 0,
        },
    )


def _rewards(workdir) -> list[float]:
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [r["reward/mean"] for r in rows if "reward/mean" in r]


def test_grpo_learns_to_answer_briefly_on_held_out_prompts(tmp_path):
    """GRPO from random weights learns to end its answer early (EOS within the first tokens) when
    every prompt asks for "less than N words" (N = 2, 4 or 6; 16 new tokens at most).

    A random policy writes ~9 words in 16 tokens and almost never samples EOS (1 in 2,048 ids),
    so it fails; greedy decoding of the untrained policy passes at most 1 of the 30 held-out
    constraints. Learning moves the whole held-out set (10 seed tasks never trained on) to 1.0.
    A stub that does not learn keeps its step-0 policy: after == before, so it cannot gain
    MIN_GAIN, and its training reward stays near 0.1 (of 5).

    Calibration (60 steps, lr 5e-3; held-out constraint pass rate before -> after, mean reward
    of the last 5 steps, the step at which that 5-step mean first reached 4; 40-65 s a run on 2
    cores at load average 5-8, 123 s for this test at load average 9):
      seed 0: 0.000 -> 1.000, reward 4.97    seed 1: 0.000 -> 1.000, reward 5.00
      seed 2: 0.033 -> 1.000, reward 5.00    seed 3: 0.000 -> 1.000, reward 4.98
      seed 4: 0.033 -> 1.000, reward 4.97 (step 30)
      seed 5: 0.033 -> 1.000, reward 4.77 (step 36)
    Stub, learning_rate=0 (seed 0): 0.000 -> 0.000, reward 0.06: fails all three assertions.
    """
    config = brevity_config(tmp_path)
    summary = grpo.run(config)
    before, after = summary["pass_rate_before"], summary["pass_rate_after"]
    rewards = _rewards(tmp_path / "run")
    final_reward = sum(rewards[-5:]) / 5
    assert len(rewards) == GRPO_STEPS
    assert after >= MIN_PASS_AFTER, summary
    assert after - before >= MIN_GAIN, summary
    assert final_reward >= MIN_FINAL_REWARD, rewards


# --------------------------------------------------------------------------------------------
# Reward model: all lowercase vs all capitals, conditioned on the constraint.
# --------------------------------------------------------------------------------------------

LOWERCASE = (
    "change_case:english_lowercase",
    "Your entire response should be in English, and in all lowercase letters. "
    "No capital letters are allowed",
)
CAPITALS = (
    "change_case:english_capital",
    "Your entire response should be in English, and in all capital letters",
)
RM_STEPS = 60
MIN_RM_ACCURACY = 0.9  # held-out; 0.5 exactly for any RM that ignores the constraint


def _sentences() -> list[str]:
    """Distinct short sentences (3-16 words, letters and plain punctuation) of the shipped
    responses, without the template's "Well, " opener, deduplicated case-insensitively (163)."""
    out: dict[str, str] = {}
    with open(pairs_lib.ASSETS / "train_responses.jsonl") as f:
        for line in f:
            for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["response"]):
                s = re.sub(r"^well, ", "", s.strip(), flags=re.I)  # the template's opener
                if 3 <= len(s.split()) <= 16 and re.fullmatch(r"[A-Za-z ,.'!?]+", s):
                    out.setdefault(s.lower(), s)
    return [out[k] for k in sorted(out)]


def _case_pairs(sentence: str) -> list[dict]:
    """Four pairs per sentence: each case version is the positive of one constraint and the
    negative of the other, so neither the response nor the constraint alone predicts the label."""
    low, up = sentence.lower(), sentence.upper()
    rows = [(LOWERCASE, low, 1), (LOWERCASE, up, 0), (CAPITALS, up, 1), (CAPITALS, low, 0)]
    return [
        {"constraint": text, "constraint_id": cid, "kwargs": {}, "response": response,
         "label": label, "level": 1, "source": "tests/test_learning.py", "group": low}
        for (cid, text), response, label in rows
    ]  # fmt: skip


def case_rm_config(tmp_path, *, seed: int = 0, learning_rate: float | None = None):
    """The RM toy run: ~80% of the sentences train, the other ~20% are held out (by a hash)."""
    files = {"train": [], "heldout": []}
    for s in _sentences():
        held = int(hashlib.sha1(s.lower().encode()).hexdigest(), 16) % 5 == 0
        files["heldout" if held else "train"] += _case_pairs(s)
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = rm_tiny.get_config()
    c.pairs, c.heldout_pairs = str(tmp_path / "train.jsonl"), str(tmp_path / "heldout.jsonl")
    c.workdir = ""  # no checkpoints
    c.num_devices, c.mesh = 1, {"data": 1, "fsdp": 1, "tp": 1}
    c.max_len, c.num_steps, c.seed = 128, RM_STEPS, seed
    if learning_rate is not None:
        c.learning_rate = learning_rate
    return c


def test_reward_model_learns_case_constraints_on_held_out_sentences(tmp_path):
    """The RM learns which case each constraint asks for, and checks it on sentences it never
    saw: 124 training sentences (496 pairs), 39 held out (156 pairs), labels balanced per
    constraint and per response.

    Every held-out response appears once as a positive and once as a negative (under the other
    constraint), so an RM that does not learn, or learns only the response or only the
    constraint, is right on half the pairs; MIN_RM_ACCURACY = 0.9 is 10 binomial standard
    deviations (0.040 at 156 pairs) above that.

    Calibration (60 steps, lr 1e-3, batch 32; 20-32 s a run on 2 shared cores, 43 s for this
    test at load average 9): held-out accuracy 1.000 on seeds 0, 1 and 2 (final training loss
    0.005), both ids 1.000.
    Stub, learning_rate=0 (seed 0): 0.527 (lowercase 0.500, capital 0.553): fails.
    """
    summary = rm_job.run(case_rm_config(tmp_path))
    assert summary["heldout_pairs"] == 156 and summary["train_pairs"] == 496
    assert summary["heldout_accuracy"] >= MIN_RM_ACCURACY, summary
    for cid, acc in summary["heldout_accuracy_per_id"].items():
        assert acc >= MIN_RM_ACCURACY, (cid, summary)
