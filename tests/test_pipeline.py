"""The reference's training format, soft constraints included, end to end through the jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ifrl_jax import verifiers
from ifrl_jax.jobs import grpo
from tests.tiny_train_config import tiny_config

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"


@pytest.mark.skipif(
    not (UPSTREAM / "train.parquet").exists(), reason="../shared/upstream-verl-if-data is absent"
)
def test_upstream_parquet_soft_constraints_reach_the_grpo_reward(tmp_path):
    """A slice of upstream train.parquet (five constraints per prompt, soft ones given only as
    text beside IFEval ids) through the pipeline: curriculum levels -> pairs sampled from the
    policy -> the RM trained on them -> GRPO, whose reward has the RM score every soft
    constraint from its text while the rules score the hard ones."""
    table = pq.read_table(UPSTREAM / "train.parquet").slice(0, 2)
    data = tmp_path / "slice.parquet"
    pq.write_table(table, data)
    kw = {
        "data.train": str(data), "data.max_prompt_len": 512, "data.prompt_buckets": (512,),
        "pipeline.enabled": True, "pipeline.limit": 2, "pipeline.max_new_tokens": 8,
        "pipeline.batch_size": 8, "pipeline.rm.num_steps": 2, "pipeline.rm.batch_size": 8,
        "pipeline.rm.max_len": 96, "pipeline.rm.checkpoint_every": 2, "reward.rm_max_len": 96,
        "rollout.prompts_per_batch": 4, "train.steps": 2, "train.checkpoint_every": 2,
    }  # fmt: skip
    summary = grpo.run(tiny_config(tmp_path / "run", **kw))

    # Every level of the two instructions, and pairs for their soft constraints too.
    levels = [json.loads(x) for x in open(tmp_path / "run" / "levels.jsonl")]
    assert sorted(len(r["instruction_id_list"]) for r in levels) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    pairs = [json.loads(x) for x in open(tmp_path / "run" / "pairs.jsonl")]
    soft = [p for p in pairs if not verifiers.is_hard(p["constraint_id"])]
    assert soft and len(pairs) == summary["pairs"] == 2 * len(levels)
    assert all(p["constraint"].strip() for p in soft)  # scored from the upstream text

    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    steps = [r for r in rows if r["step"] > 0]
    assert len(steps) == 2
    for r in steps:
        assert r["reward/soft_count"] > 0, r
        assert 0.0 < r["reward/soft_mean"] < 1.0  # RM probabilities, not verdicts
