"""The GRPO run: end to end on a tiny model, resume after a crash, bad configs, two processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

from ifrl_jax.errors import UserError
from ifrl_jax.jobs import common, grpo
from tests.tiny_train_config import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _comparable(row):
    return {k: v for k, v in row.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    summary = grpo.run(tiny_config(workdir))
    return workdir, summary


def test_run_writes_metrics_checkpoints_plot_and_hf_export(full_run):
    workdir, summary = full_run
    assert summary["steps"] == 4 and summary["workdir"] == str(workdir)
    for key in ("pass_rate_before", "pass_rate_after"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["pass_rate_init"] is None  # config.train.eval_init = False
    rows = _rows(workdir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    step = rows[1]
    for key in ("reward/mean", "reward/std", "train/kl_mean", "train/grad_norm",
                "train/entropy_mean", "train/clipfrac_low", "reward/zero_var_groups",
                "response/length_mean", "time/sample", "time/verify", "time/score",
                "time/update",
                "rate/pass/all"):  # fmt: skip
        assert key in step, key
    assert any(k.startswith("rate/pass/id/") for k in step)
    assert any(k.startswith("rate/pass/level/L") for k in step)
    assert "eval/constraint_pass_rate" in rows[2] and "eval/prompt_pass_rate" in rows[4]
    assert os.path.exists(workdir / "metrics.png")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tb"))
    assert sorted(os.listdir(workdir / "ckpt")) == ["2", "4"]  # keep_checkpoints=2
    model = transformers.AutoModelForCausalLM.from_pretrained(workdir / "hf_final")
    assert model.config.vocab_size == 2048
    assert os.path.exists(workdir / "hf_final" / "tokenizer.json")


def test_kill_during_save_resumes_with_the_same_metrics(full_run, tmp_path):
    """Killed while step 4's checkpoint is written: the rerun resumes from step 2's, redoes
    steps 3-4, and every metric (timings aside) equals the uninterrupted run's."""
    workdir, _ = full_run
    env = dict(os.environ, PYTHONPATH=str(REPO))
    config = REPO / "tests" / "tiny_train_config.py"
    cmd = [sys.executable, str(REPO / "launch" / "train_grpo.py"), f"--config={config}",
           f"--config.workdir={tmp_path}"]  # fmt: skip
    crash = (  # the launcher, killed right after step 4's (asynchronous) save has started
        "import os, runpy, sys; from ifrl_jax.jobs import grpo; run = grpo.run; "
        "grpo.run = lambda c: run(c, on_checkpoint=lambda s: s == 4 and os._exit(17)); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", crash, *cmd[1:]], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert [r["step"] for r in _rows(tmp_path)] == [0, 1, 2, 3, 4]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 4 and "resuming at step 2" in proc.stderr
    ref = [_comparable(r) for r in _rows(workdir)]
    assert [_comparable(r) for r in _rows(tmp_path)] == ref


def test_resume_with_other_settings_is_one_error_and_writes_nothing(full_run, tmp_path):
    """A finished run's workdir, rerun with another learning rate: a UserError naming
    config.workdir and the key, before any model is loaded; the checkpoints and metrics stay."""
    workdir = tmp_path / "w"
    shutil.copytree(full_run[0], workdir)
    before = (workdir / "metrics.jsonl").read_text(), sorted(os.listdir(workdir / "ckpt"))
    with pytest.raises(UserError, match=r"config.workdir=\S+ holds a GRPO run trained with "
                       r"grpo.learning_rate=.*this run has grpo.learning_rate=0.123"):  # fmt: skip
        grpo.run(tiny_config(workdir, **{"grpo.learning_rate": 0.123}))
    assert ((workdir / "metrics.jsonl").read_text(), sorted(os.listdir(workdir / "ckpt"))) == before


def test_resume_settings_ignore_what_may_change():
    """More steps, another eval cadence or mesh resume; a changed seed or reward does not."""
    flat = lambda **kw: common.flat_settings(tiny_config("/a", **kw),
                                             may_change=grpo.RESUME_MAY_CHANGE)  # fmt: skip
    base = flat()
    assert "grpo.learning_rate" in base and "seed" in base and "workdir" not in base
    same = {"train.steps": 99, "train.eval_every": 3, "mesh": {"data": 2, "fsdp": 4, "tp": 1},
            "grpo.micro_batches": 2, "rollout.engine": "static"}  # fmt: skip
    for key, value in same.items():
        assert flat(**{key: value}) == base, key
    for key, value in {"seed": 5, "reward.scale": 2.0, "rollout.temperature": 0.7}.items():
        changed = flat(**{key: value})
        assert [k for k in base if base[k] != changed[k]] == [key], key
    common.check_resume(base, flat(**{"train.steps": 99}), "/a", what="a GRPO run")
    common.check_resume(None, base, "/a", what="a GRPO run")  # saved before settings were kept


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("rollout.n", 1, r"config.rollout.n=1: GRPO needs at least 2"),
        ("grpo.minibatch_prompts", 3, r"config.grpo.minibatch_prompts=3: must divide"),
        ("grpo.kl_estimator", "k9", r"config.grpo.kl_estimator='k9'"),
        ("sharding", "zero3", r"config.sharding='zero3'"),
        ("data.train", "/nonexistent.jsonl", r"config.data.train=.*does not exist"),
        ("model.preset", "qwen9", r"config.model.preset='qwen9'"),
        ("reward.rm_ids", ("situation:role_play",), r"config.reward.rm_ids=.*not a hard"),
        ("reward.rm_ids", ("punctuation:no_comma",), r"config.reward.rm_ids=.*needs a reward"),
        ("pipeline.rm_init", "other", r"config.pipeline.rm_init='other'"),
        ("reward.rm_agreement_floor", 1.5, r"config.reward.rm_agreement_floor=1.5: must be"),
        ("rollout.sample_prompts", 3, r"config.rollout.sample_prompts=3: must divide"),
    ],
)
def test_bad_config_fails_before_compiling_and_names_the_key(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        grpo.validate(tiny_config(tmp_path, **{key: value}))


def test_mesh_that_does_not_fit_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"--config.mesh=.*needs 24 devices, but 8"):
        grpo.run(tiny_config(tmp_path, mesh={"data": 3, "fsdp": 8, "tp": 1}))


def test_sample_prompts_that_do_not_split_over_the_mesh_names_both(tmp_path):
    # 2 prompts per sampler call cannot split over data x fsdp = 4 devices.
    with pytest.raises(ValueError, match=r"config.rollout.sample_prompts=2: .* 4 data-parallel"):
        grpo.run(tiny_config(tmp_path, **{"rollout.sample_prompts": 2}))


def test_sample_prompts_splits_each_rollout_batch_into_sampler_calls(tmp_path, sampler_calls):
    # The static sampler. Sampled at temperature 0.7 with top-p: the trainer's old log-probs
    # (the same params) are those of the distribution the sampler recorded: mismatch ~0.
    overrides = {"rollout.prompts_per_batch": 8, "rollout.sample_prompts": 4,
                 "rollout.engine": "static",
                 "grpo.minibatch_prompts": 4, "train.steps": 1, "sft.steps": 0,
                 "rollout.temperature": 0.7, "rollout.top_p": 0.9, "grpo.tis_cap": 2.0,
                 "train.eval_ifbench": 6}  # fmt: skip
    summary = grpo.run(tiny_config(tmp_path, **overrides))
    rollout_calls = [c for c in sampler_calls if c[1] == 2]  # evaluation: 1 response a prompt
    assert rollout_calls == [(4, 2), (4, 2)]  # 8 prompts -> two calls of 4, 2 responses each
    (row,) = [r for r in _rows(tmp_path) if "reward/mean" in r]
    assert summary["steps"] == 1 and np.isfinite(row["reward/mean"])
    assert row["rollout/logprob_mismatch"] < 1e-3 and row["rollout/mismatch_kl"] < 1e-5
    assert 0.99 < row["train/tis_weight_mean"] <= 1.0 + 1e-3
    # IFBench's out-of-domain prompts are evaluated beside the held-out set.
    assert 0.0 <= row["eval/ifbench/constraint_pass_rate"] <= 1.0
    assert summary["ifbench_pass_rate_after"] == row["eval/ifbench/constraint_pass_rate"]
    assert summary["ifbench_pass_rate_before"] is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_a_loopback_coordinator_match_one_process(tmp_path):
    """Two processes of 2 CPU devices each train like one process of 4 devices on the same data:
    each host feeds its contiguous block of every global batch, so the global rows, the sampler's
    draws and the updates are the same; the first step's update metrics (computed on the global
    batch) agree to float32 summation-order noise (cross-process vs in-process reductions: 1e-3
    relative, or 1e-5 absolute for metrics that are ~0 such as approx_kl) and the held-out
    evaluation before GRPO exactly; the RM stage (pairs, RM, its soft scores in the reward) runs
    on both hosts (pairs sampled over them, written by process 0) and trains the same RM as one
    process on those pairs. (reward/*, rate/* and response/* describe process 0's rows.)"""
    port = _free_port()
    common = [
        str(REPO / "launch" / "train_grpo.py"),
        f"--config={REPO / 'tests' / 'tiny_train_config.py'}",
        "--config.train.steps=2", "--config.mesh.data=1", "--config.mesh.fsdp=-1",
        "--config.mesh.tp=1", "--config.sharding=fsdp",
        # One mini-batch (the whole rollout batch, two PPO passes): a mini-batch of a
        # multi-process run takes each host's share, which equals a one-process mini-batch
        # only when it is the whole batch.
        "--config.grpo.minibatch_prompts=4",
        # The RM stage too: pairs sampled on both hosts' devices, the RM trained over them and
        # scoring the soft constraints of GRPO's reward (collectives that every host enters).
        "--config.pipeline.enabled=True", "--config.pipeline.limit=2",
        "--config.pipeline.max_new_tokens=8", "--config.pipeline.batch_size=8",
        "--config.pipeline.rm.num_steps=2", "--config.pipeline.rm.batch_size=8",
        "--config.pipeline.rm.max_len=96", "--config.pipeline.rm.checkpoint_every=2",
        "--config.reward.rm_max_len=96",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    two = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [sys.executable, *common, f"--config.workdir={tmp_path / 'two'}",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*cmd, f"--process_id={i}"],
            env=two,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads(outs[0][0].strip().splitlines()[-1])  # process 0 prints and logs
    assert summary["steps"] == 2
    assert not any(line.startswith("{") for line in outs[1][0].splitlines())  # (gloo chatter)
    rows = _rows(tmp_path / "two")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "two" / "ckpt")) == ["2"]
    # The RM scored soft constraints (process 0's rows of step 1 happen to have none).
    assert sum(r["reward/soft_count"] for r in rows[1:]) > 0

    # The one-process run starts its RM stage from the pairs the two processes sampled (a
    # pipeline that finds pairs_summary.json keeps them): the sampled text of the tiny random
    # policy (near-uniform) can differ in a token by float summation order, which would make the
    # RM and GRPO comparisons below compare different data. Sharded sampling equals one device
    # in test_engine.py; test_pairs.py checks how pair sampling fills a mesh.
    (tmp_path / "one").mkdir()
    for name in ("levels.jsonl", "pairs.jsonl", "pairs_summary.json"):
        shutil.copy(tmp_path / "two" / name, tmp_path / "one" / name)
    one = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, *common, f"--config.workdir={tmp_path / 'one'}"],
                          env=one, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("pass_rate_before", "prompt_pass_rate_before"):  # ("pairs": the copied file)
        assert summary[key] == single[key], key
    assert summary["pairs"] > 0
    # Pairs sampled over both hosts, written once by process 0: the rows of both levels of
    # each instruction, a positive and a negative per constraint; and the same RM from them.
    pairs = [json.loads(line) for line in (tmp_path / "two" / "pairs.jsonl").open()]
    assert len(pairs) == summary["pairs"] and [p["label"] for p in pairs[:2]] == [1, 0]
    assert all(p["response"].strip() for p in pairs)
    rm = [json.loads((tmp_path / d / "rm_summary.json").read_text()) for d in ("two", "one")]
    for key in ("heldout_accuracy", "verifier_agreement", "ece"):
        assert rm[0][key] == pytest.approx(rm[1][key], rel=1e-5, abs=1e-6), key
    # Step 1 starts from the same params: the same prompts, draws and updates. Later steps
    # start from params that differ by float noise, which can flip a sampled token of the
    # tiny random model (near-uniform), so only the first step is compared.
    r2, r1 = rows[1], _rows(tmp_path / "one")[1]
    keys = [k for k in r1 if k.startswith("train/")]
    assert len(keys) > 10 and keys == [k for k in r2 if k.startswith("train/")]
    for k in keys:
        assert r2[k] == pytest.approx(r1[k], rel=1e-3, abs=1e-5), k
    assert np.isfinite(rows[-1]["train/loss"]) and rows[-1]["train/grad_norm"] > 0


def test_reward_model_scores_the_soft_constraints(tmp_path):
    """An RM trained by launch/train_rm.py's job plugs into the GRPO reward."""
    from configs import rm_tiny
    from ifrl_jax import records, rewards, sharding
    from ifrl_jax.jobs import reward_model as rm_job

    rm = rm_tiny.get_config()
    rm.workdir, rm.num_steps, rm.checkpoint_every = str(tmp_path / "rm"), 2, 2
    rm_job.run(rm)
    config = tiny_config(tmp_path / "grpo", **{"reward.rm_path": str(tmp_path / "rm")})
    grpo.validate(config)
    mesh = sharding.make_mesh(dict(config.mesh))
    scorer = grpo._soft_scorer(
        config, config.reward.rm_path, mesh, sharding.get_rules(config.sharding)
    )
    soft = records.Constraint("situation:role_play", {}, "Respond as a pirate")
    hard = records.Constraint("punctuation:no_comma", {}, "Do not use commas")
    rec = records.Record(
        prompt="Hi. Respond as a pirate. Do not use commas. ", constraints=(soft, hard)
    )
    texts = ["Arr matey I be sailing", "Hello, friend"]
    probs = scorer(texts, [soft.text, soft.text])
    assert probs.shape == (2,) and np.all((probs > 0) & (probs < 1))
    result = rewards.score([rec, rec], texts, soft_scorer=scorer)
    np.testing.assert_allclose(result.scores[:, 0], probs, rtol=1e-6)
    np.testing.assert_array_equal(result.scores[:, 1], [1.0, 0.0])
    np.testing.assert_allclose(result.rewards, 5.0 * (probs + np.array([1.0, 0.0])) / 2, rtol=1e-6)
