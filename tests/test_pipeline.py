"""The self-supervised RM pipeline in the GRPO job, on the reference's training format with its
soft constraints: levels -> policy pairs -> RM -> GRPO, and restarts that reuse the stages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ifrl_jax import verifiers
from ifrl_jax.jobs import grpo
from tests.tiny_train_config import tiny_config

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"


def _rows(workdir):
    return [json.loads(x) for x in open(workdir / "metrics.jsonl")]


@pytest.mark.skipif(
    not (UPSTREAM / "train.parquet").exists(), reason="../shared/upstream-verl-if-data is absent"
)
def test_upstream_parquet_through_the_pipeline_and_restarts(tmp_path):
    """A slice of upstream train.parquet (five constraints per prompt, soft ones given only as
    text beside IFEval ids) through pipeline.enabled: curriculum levels -> pairs sampled from the
    policy -> the RM trained on them -> GRPO, whose reward has the RM score every soft
    constraint from its text (and reward.rm_ids' hard id, its rule verdict kept aside) while
    the rules score the other hard ones."""
    table = pq.read_table(UPSTREAM / "train.parquet").slice(0, 2)
    data = tmp_path / "slice.parquet"
    pq.write_table(table, data)
    # Row 1's constraints start with no_comma: each of its 5 levels has a slot the RM scores.
    rm_id = "punctuation:no_comma"
    assert table["instruction_id_list"][1].as_py()[0] == rm_id
    kw = {
        "data.train": str(data), "data.heldout": str(data),  # a short held-out evaluation
        "data.max_prompt_len": 512, "data.prompt_buckets": (512,),
        "sft.steps": 0, "pipeline.rm_init": "config",  # no reference responses to warm start on
        "pipeline.enabled": True, "pipeline.limit": 2, "pipeline.max_new_tokens": 8,
        "pipeline.num_samples": 2,
        "pipeline.batch_size": 8, "pipeline.rm.num_steps": 2, "pipeline.rm.batch_size": 8,
        "pipeline.rm.max_len": 96, "pipeline.rm.checkpoint_every": 2, "reward.rm_max_len": 96,
        "reward.rm_ids": (rm_id,), "rollout.prompts_per_batch": 4,
        "train.steps": 1, "train.checkpoint_every": 1,
    }  # fmt: skip
    run = tmp_path / "run"
    summary = grpo.run(tiny_config(run, **kw))

    # Every level of the two instructions, and pairs for their soft constraints too.
    levels = [json.loads(x) for x in open(run / "levels.jsonl")]
    assert sorted(len(r["instruction_id_list"]) for r in levels) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    pairs = [json.loads(x) for x in open(run / "pairs.jsonl")]
    # One positive and one negative per (instruction, level, sample): 2 x 2 samples x levels.
    assert len(pairs) == 2 * 2 * len(levels) == summary["pairs"]
    assert sorted({p["sample"] for p in pairs}) == [0, 1]
    assert {p["label"] for p in pairs} == {0, 1}
    soft = [p for p in pairs if not verifiers.is_hard(p["constraint_id"])]
    assert soft and all(p["constraint"].strip() for p in soft)  # the upstream texts
    assert (run / "rm" / "DONE").exists()
    assert 0.0 <= summary["rm_heldout_accuracy"] <= 1.0
    assert 0.0 <= summary["pos_hard_pass_rate"] <= 1.0

    rows = _rows(run)
    steps = [r for r in rows if r["step"] > 0]
    assert len(steps) == 1
    for r in steps:
        assert r["reward/soft_count"] > 0, r  # soft constraints reached the reward
        assert 0.0 < r["reward/soft_mean"] < 1.0  # RM probabilities, not verdicts
        # The reward-hacking guard's figures: overall, per id, and below the floor or not.
        assert 0.0 <= r["reward/rm_agreement"] == r[f"reward/rm_agreement/{rm_id}"] <= 1.0
        assert r["reward/rm_agreement_low"] == int(r["reward/rm_agreement"] < 0.5)

    # A restart with more steps reuses the finished stages (the pair file is not rewritten).
    mtime = os.path.getmtime(run / "pairs.jsonl")
    again = grpo.run(tiny_config(run, **{**kw, "train.steps": 2}))
    assert os.path.getmtime(run / "pairs.jsonl") == mtime
    assert again["rm_heldout_accuracy"] == summary["rm_heldout_accuracy"]
    assert len(_rows(run)) == len(rows) + 1
    # A restart while the RM was unfinished (no DONE) finishes it from its checkpoint and
    # keeps the levels and pairs as they are.
    os.remove(run / "rm" / "DONE")
    stamps = {f: os.path.getmtime(run / f) for f in ("levels.jsonl", "pairs.jsonl")}
    third = grpo.run(tiny_config(run, **{**kw, "train.steps": 2}))
    assert (run / "rm" / "DONE").exists()
    assert {f: os.path.getmtime(run / f) for f in stamps} == stamps
    assert third["pairs"] == summary["pairs"]
