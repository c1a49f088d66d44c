"""rollout.overlap: batch i+1 is sampled, in the rollout thread, with the params of before
update i while update i runs; without it, each batch is sampled with the current params.

The tiny GRPO run (no warm start, 4 steps, checkpoints at 2 and 4) is recorded by spies on
`samplers.sample` (the params each call got, its arguments and tokens) and on the update
(the params before each optimizer update and the input_ids it trained on)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifrl_jax import grpo_step, samplers
from ifrl_jax.jobs import grpo, grpo_loop
from tests.tiny_train_config import tiny_config

REPO = Path(__file__).resolve().parents[1]
OVERLAP = {"rollout.overlap": True, "grpo.tis_cap": 2.0}
SHORT = {"sft.steps": 0, "train.eval_every": 4}  # steps 4, checkpoint_every 2 (tiny_config)


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _same(a, b) -> bool:
    """Bitwise equality of two params pytrees."""
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))


class _StepSpy:
    """The update, recording (params before it, input_ids it trains on, the params' devices)."""

    def __init__(self, fn, log):
        self.fn, self.log = fn, log

    def __getattr__(self, name):
        return getattr(self.fn, name)

    def __call__(self, state, batch):
        devices = {d for x in jax.tree.leaves(state.params) for d in x.devices()}
        self.log.append((_host(state.params), np.asarray(jax.device_get(batch["input_ids"])),
                         devices))  # fmt: skip
        return self.fn(state, batch)


def _recorded_run(workdir, **overrides):
    """grpo.run of the tiny config; returns (config, rollout sampler calls, updates, rows)."""
    config = tiny_config(workdir, **{**SHORT, **overrides})
    calls, updates = [], []
    real_generate, real_make_step = samplers.sample, grpo_step.make_step

    def generate(cfg, params, ids, mask, **kw):
        copy = jax.tree.map(jnp.copy, params)  # kept for the reference re-run
        out = real_generate(cfg, params, ids, mask, **kw)
        if kw["num_samples"] == config.rollout.n:  # not evaluation (1 sample per prompt)
            name = threading.current_thread().name
            calls.append(dict(thread=name, params=copy, args=(cfg, ids, mask), kw=kw,
                              tokens=np.asarray(out.tokens)))  # fmt: skip
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(samplers, "sample", generate)
        mp.setattr(
            grpo_step, "make_step", lambda *a, **k: _StepSpy(real_make_step(*a, **k), updates)
        )
        grpo.run(config)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return config, calls, updates, rows


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.fixture(scope="module")
def overlap_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("overlap")
    return (workdir, *_recorded_run(workdir, **OVERLAP))


def test_overlap_trains_batch_i_plus_1_sampled_with_the_params_before_update_i(overlap_run):
    _, config, calls, updates, rows = overlap_run
    u = grpo_loop.updates_per_batch(config)  # 2 epochs x 2 mini-batches
    assert u == 4 and len(calls) == 4 and len(updates) == 4 * u
    before = [updates[i * u][0] for i in range(4)]  # the params before step i's updates
    assert not _same(before[0], before[1])  # the updates change the params
    # Step 0 and step 2 (after the checkpoint at 2: a sync point) sample on-policy in the loop's
    # thread; steps 1 and 3 were sampled in the rollout thread with the params before update
    # 0 and 2, bitwise.
    sampled_with = [0, 0, 2, 2]
    for step, call in enumerate(calls):
        assert _same(_host(call["params"]), before[sampled_with[step]]), step
        assert call["thread"].startswith("rollout" if step % 2 else "MainThread"), call["thread"]
    # The reference: sampling again with the stale params gives the tokens each step trained.
    m = config.rollout.max_new_tokens
    num_mb = config.rollout.prompts_per_batch // config.grpo.minibatch_prompts
    for step, call in enumerate(calls):
        cfg, ids, mask = call["args"]
        ref = samplers.sample(cfg, call["params"], ids, mask, **call["kw"])
        first_epoch = updates[step * u : step * u + num_mb]
        trained = np.concatenate([ids_ for _, ids_, _ in first_epoch])
        np.testing.assert_array_equal(np.asarray(ref.tokens), call["tokens"])
        np.testing.assert_array_equal(trained[:, -m:], call["tokens"])
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["rollout/staleness"] for r in steps] == [0, u, 0, u]
    assert all(r["time/sample_wait"] >= 0 and "train/tis_weight_mean" in r for r in steps)


def test_without_overlap_each_batch_is_sampled_with_the_current_params(tmp_path):
    config, calls, updates, rows = _recorded_run(tmp_path, **{"train.steps": 3})
    u = grpo_loop.updates_per_batch(config)
    assert len(calls) == 3 and len(updates) == 3 * u
    for step, call in enumerate(calls):
        assert _same(_host(call["params"]), updates[step * u][0]), step
        assert call["thread"] == "MainThread"
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["rollout/staleness"] for r in steps] == [0, 0, 0]
    for r in steps:  # the loop waited for the whole sampling
        assert r["time/sample_wait"] == r["time/sample"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"rollout.overlap": True, "grpo.tis_cap": 0.0}, r"config.grpo.tis_cap=0.0: rollout.ov"),
        ({"rollout.overlap_devices": "split"}, r"overlap_devices='split': .*set rollout.overlap"),
        ({**OVERLAP, "rollout.overlap_devices": "split"}, r"config.rollout.sampler_mesh={}: "),
        ({"rollout.overlap_devices": "other"}, r"config.rollout.overlap_devices='other': use"),
    ],
)
def test_overlap_config_errors_name_the_key(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        grpo.validate(tiny_config(tmp_path, **overrides))


def test_a_sampler_mesh_that_leaves_no_training_device_names_the_key(tmp_path):
    split = {**OVERLAP, "rollout.overlap_devices": "split", "rollout.sampler_mesh": {"data": 8}}
    with pytest.raises(ValueError, match=r"config.rollout.sampler_mesh=.*none are left"):
        grpo.meshes(tiny_config(tmp_path, **split))


def test_split_overlap_samples_on_its_own_devices_with_the_stale_params(tmp_path):
    """overlap_devices="split": the sampler's mesh is the last 4 devices, training the first 4;
    every batch is sampled there (step 0 too), batch 1 from the params before update 0."""
    split = {**OVERLAP, "rollout.overlap_devices": "split", "rollout.sampler_mesh": {"data": 4},
             "mesh": {"data": 2, "fsdp": 2, "tp": 1}, "train.steps": 2}  # fmt: skip
    config, calls, updates, rows = _recorded_run(tmp_path, **split)
    u = grpo_loop.updates_per_batch(config)
    assert len(calls) == 2 and len(updates) == 2 * u
    sampler_devices, train_devices = set(jax.devices()[4:]), set(jax.devices()[:4])
    for step, call in enumerate(calls):
        assert {d for x in jax.tree.leaves(call["params"]) for d in x.devices()} == sampler_devices
        assert _same(_host(call["params"]), updates[0][0]), step  # both from params_0
        cfg, ids, mask = call["args"]
        ref = samplers.sample(cfg, call["params"], ids, mask, **call["kw"])
        np.testing.assert_array_equal(np.asarray(ref.tokens), call["tokens"])
    assert calls[1]["thread"].startswith("rollout") and calls[1]["kw"]["mesh"].devices.size == 4
    assert not _same(_host(calls[0]["params"]), updates[u][0])  # update 0 moved the params
    assert all(devices == train_devices for _, _, devices in updates)
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["rollout/staleness"] for r in steps] == [0, u]


def test_overlap_is_refused_with_several_processes(tmp_path, monkeypatch):
    grpo.validate(tiny_config(tmp_path, **OVERLAP))  # one process: fine
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match=r"config.rollout.overlap=True: is not implemented"):
        grpo.validate(tiny_config(tmp_path, **OVERLAP))


def test_overlap_run_killed_during_a_save_resumes_with_the_same_metrics(
    overlap_run, tmp_path, caplog
):
    """Killed right after step 4's save started: the rerun resumes from step 2's checkpoint
    (nothing was in flight at it), redoes steps 3-4 with their overlap, and every metric
    (timings aside) equals the uninterrupted run's."""
    workdir = overlap_run[0]
    flags = [f"--config.{k}={v}" for k, v in {**SHORT, **OVERLAP}.items()]
    crash = (  # the launcher, killed right after step 4's (asynchronous) save has started
        "import os, runpy, sys; from ifrl_jax.jobs import grpo; run = grpo.run; "
        "grpo.run = lambda c: run(c, on_checkpoint=lambda s: s == 4 and os._exit(17)); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    cmd = [sys.executable, "-c", crash, str(REPO / "launch" / "train_grpo.py"),
           f"--config={REPO / 'tests' / 'tiny_train_config.py'}", f"--config.workdir={tmp_path}",
           *flags]  # fmt: skip
    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 17, proc.stderr[-2000:]
    caplog.set_level(logging.INFO)
    summary = grpo.run(tiny_config(tmp_path, **SHORT, **OVERLAP))  # resumed in this process
    assert summary["steps"] == 4 and "resuming at step 2" in caplog.text
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        ref = [json.loads(line) for line in f]
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert _comparable(rows) == _comparable(ref)
