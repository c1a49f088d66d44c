"""The learning levers of one rollout batch: overlong shaping and dynamic sampling (DAPO)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ifrl_jax import metrics, rewards, rollout
from ifrl_jax.jobs import grpo
from tests.tiny_train_config import tiny_config


def test_overlong_penalty_is_linear_over_the_buffer_and_filter_drops_truncated_rows():
    lengths, finished = np.array([2, 5, 7, 8, 8]), np.array([1, 1, 1, 1, 0], bool)
    kw = dict(max_new_tokens=8, buffer=4, penalty=2.0)
    delta, w = rollout.overlong_shaping(lengths, finished, mode="penalty", **kw)
    # (length - (8 - 4)) / 4 clipped to [0, 1], times -2: a truncated row pays all of it.
    np.testing.assert_allclose(delta, [0.0, -0.5, -1.5, -2.0, -2.0])
    np.testing.assert_array_equal(w, np.ones(5))
    delta, w = rollout.overlong_shaping(lengths, finished, mode="filter", **kw)
    np.testing.assert_array_equal(delta, np.zeros(5))
    np.testing.assert_array_equal(w, [1, 1, 1, 1, 0])
    delta, w = rollout.overlong_shaping(lengths, finished, mode="keep", **kw)
    assert not delta.any() and w.all()
    with pytest.raises(ValueError, match="overlong mode 'cut'"):
        rollout.overlong_shaping(lengths, finished, mode="cut", **kw)


def _result(r, valid=None):
    r = np.asarray(r, np.float32)
    valid = np.ones(len(r), bool) if valid is None else np.asarray(valid, bool)
    return rewards.RewardResult(
        rewards=r, scores=(r / 5.0)[:, None], valid=valid[:, None], reward_valid=valid,
        ids=[(f"id{i}",) for i in range(len(r))], levels=np.arange(len(r), dtype=np.int32),
    )  # fmt: skip


def test_shaping_applies_before_group_normalization_and_the_zero_variance_filter():
    result = _result([5.0, 5.0, 0.0, 5.0])
    shaping = (np.array([0.0, -1.0, 0.0, 0.0], np.float32), np.array([1, 1, 1, 0], np.float32))
    kw = dict(n=2, std="unbiased", eps=1e-6, filter_zero_variance=True)
    adv, w = rollout.advantages(result, np.ones(2, np.float32), **kw)
    np.testing.assert_allclose(adv, [0, 0, -0.7071, 0.7071], atol=1e-4)
    np.testing.assert_array_equal(w, [0, 0, 1, 1])  # group 0 is uniform: filtered
    adv, w = rollout.advantages(result, np.ones(2, np.float32), shaping=shaping, **kw)
    # The penalty makes group 0 informative (5 vs 4); the filter's weight drops row 3.
    np.testing.assert_allclose(adv, [0.7071, -0.7071, -0.7071, 0.7071], atol=1e-4)
    np.testing.assert_array_equal(w, [1, 1, 1, 0])


def _sampled(groups, n, prompt_weight=None):
    rows = groups * n
    return rollout.Sampled(
        records=[f"rec{i // n}" for i in range(rows)], texts=[f"text{i}" for i in range(rows)],
        rows={"input_ids": np.arange(rows * 3).reshape(rows, 3)},
        lengths=np.arange(rows), finished=np.arange(rows) % 2 == 0,
        prompt_weight=np.ones(groups, np.float32) if prompt_weight is None else prompt_weight,
        num_truncated=1, num_dropped=0, seconds=1.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "keep, groups_kept, informative",
    [(2, [1, 3], 1.0), (3, [0, 1, 3], 2 / 3), (1, [1], 1.0)],
)
def test_dynamic_sampling_keeps_informative_groups_in_batch_order(keep, groups_kept, informative):
    # Group rewards: [1, 1] uniform, [0, 5], [2, 2] uniform, [3, 4]; then a filler prompt whose
    # rewards differ (weight 0) and a group whose differing reward is invalid.
    r = [1, 1, 0, 5, 2, 2, 3, 4, 0, 5, 5, 0]
    valid = [1] * 11 + [0]
    weight = np.array([1, 1, 1, 1, 0, 1], np.float32)
    sampled, result = _sampled(6, 2, weight), _result(r, valid)
    sub, res, m = rollout.select_groups(sampled, result, n=2, keep=keep)
    rows = [g * 2 + j for g in groups_kept for j in range(2)]
    assert sub.records == [f"rec{g}" for g in groups_kept for _ in range(2)]
    assert sub.texts == [f"text{i}" for i in rows] and res.ids == [(f"id{i}",) for i in rows]
    np.testing.assert_array_equal(sub.rows["input_ids"], sampled.rows["input_ids"][rows])
    np.testing.assert_array_equal(res.rewards, np.asarray(r, np.float32)[rows])
    np.testing.assert_array_equal(res.levels, rows)
    np.testing.assert_array_equal(sub.lengths, rows)
    np.testing.assert_array_equal(sub.prompt_weight, weight[groups_kept])
    assert m["rollout/zero_var_frac_sampled"] == pytest.approx(4 / 6)
    assert m["rollout/informative_frac"] == pytest.approx(informative)


def test_oversample_samples_more_prompts_and_trains_on_the_batch_size(tmp_path, sampler_calls):
    overrides = {"train.steps": 1, "sft.steps": 0, "grpo.oversample": 3,
                 "grpo.overlong": "penalty", "grpo.overlong_buffer": 4,
                 "grpo.overlong_penalty": 2.0}  # fmt: skip
    grpo.run(tiny_config(tmp_path, **overrides))
    # 3 x 4 prompts, 2 responses each: one call of the continuous engine on 12 x 2 slots
    assert [c for c in sampler_calls if c[1] == 2] == [(12, 2, 24)]
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        (row,) = [r for r in map(json.loads, f) if "reward/mean" in r]
    # Each update saw a mini-batch of 2 kept prompts x 2 responses x at most 8 tokens.
    assert 0 < row["train/num_tokens"] <= 2 * 2 * 8
    zero = row["rollout/zero_var_frac_sampled"]
    assert row["rollout/informative_frac"] == pytest.approx(min(1.0, (1 - zero) * 12 / 4))
    # The tiny random model rarely stops within 8 tokens: most rows pay some penalty.
    assert -2.0 <= row["reward/overlong_penalty"] < 0


@pytest.mark.parametrize(
    "key, value, match",
    [("grpo.oversample", 0, "grpo.oversample=0"), ("grpo.overlong", "cut", "grpo.overlong='cut'"),
     ("grpo.overlong_buffer", 0, "grpo.overlong_buffer=0")],
)  # fmt: skip
def test_lever_settings_that_cannot_work_name_their_key(tmp_path, key, value, match):
    overrides = {"grpo.overlong": "penalty", "grpo.overlong_buffer": 4, key: value}
    with pytest.raises(ValueError, match=match):
        grpo.validate(tiny_config(tmp_path, **overrides))


def test_the_plot_shows_smoothed_reward_per_level_and_held_out_rates():
    rows = [{"step": 0, "eval/constraint_pass_rate": 0.5}]
    rows += [{"step": s, "rate/reward/level/L1": float(s), "rate/reward/level/L2": 1.0,
              "reward/zero_var_frac": 0.25} for s in range(1, 8)]  # fmt: skip
    rows += [{"step": 7, "eval/constraint_pass_rate": 0.75, "eval/prompt_pass_rate": 0.5}]
    panels = list(metrics.plot_series(rows, smooth=3).values())
    xs, ys = panels[0]["rate/reward/level/L1"]
    np.testing.assert_array_equal(xs, range(1, 8))
    np.testing.assert_allclose(ys, [1, 1.5, 2, 3, 4, 5, 6])  # trailing mean of 3 steps
    np.testing.assert_allclose(panels[0]["rate/reward/level/L2"][1], np.ones(7))
    assert sorted(panels[1]) == ["eval/constraint_pass_rate", "eval/prompt_pass_rate"]
    np.testing.assert_allclose(panels[1]["eval/constraint_pass_rate"][1], [0.5, 0.75])  # raw
    assert list(panels[2]) == ["reward/zero_var_frac"]
