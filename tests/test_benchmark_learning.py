"""benchmarks/learning.py's verdict on the learning goal (the runs themselves are benchmarks)."""

from __future__ import annotations

import pytest

from benchmarks import learning


def _runs(*pairs, wall=480.0):
    return [{"pass_rate_before": b, "pass_rate_after": a, "wall_s": wall} for b, a in pairs]


GOAL = dict(min_seed_gain=0.20, min_mean_gain=0.25, max_seconds=600.0)


def test_goal_met_only_when_every_seed_the_mean_and_the_time_hold():
    g = learning.goal(_runs((0.5, 0.8), (0.4, 0.62), (0.5, 0.8)), **GOAL)
    assert g["gains"] == pytest.approx([0.3, 0.22, 0.3])
    assert g["mean_gain"] == pytest.approx(0.82 / 3) and g["met"]
    weak = learning.goal(_runs((0.5, 0.8), (0.5, 0.69), (0.5, 0.9)), **GOAL)  # one seed +0.19
    assert weak["mean_ok"] and not weak["every_seed_ok"] and not weak["met"]
    low = learning.goal(_runs((0.5, 0.72), (0.5, 0.72)), **GOAL)  # each +0.22, mean +0.22
    assert low["every_seed_ok"] and not low["mean_ok"] and not low["met"]
    slow = learning.goal(_runs((0.5, 0.8), wall=601.0), **GOAL)
    assert not slow["time_ok"] and not slow["met"]


def test_a_loss_is_a_negative_gain():
    g = learning.goal(_runs((0.6, 0.5)), **GOAL)
    assert g["gains"] == pytest.approx([-0.1]) and not g["met"]
