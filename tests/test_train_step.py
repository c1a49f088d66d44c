"""The sharded GRPO train step on the tiny preset and the 8-device fake CPU mesh."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifrl_jax import grpo, grpo_step, models, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.models import get_preset

B, T, PROMPT = 16, 24, 10
MESHES = {  # preset -> mesh shape (8 devices)
    "replicated": {"data": 2, "fsdp": 4, "tp": 1},
    "fsdp": {"data": 1, "fsdp": 8, "tp": 1},
    "tp": {"data": 4, "fsdp": 1, "tp": 2},
    "fsdp_tp": {"data": 1, "fsdp": 4, "tp": 2},
}


def make_batch(seed=0, b=B, t=T):
    """[pad.. prompt | response .. pad] rows; row 3 has an empty response."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 256, (b, t)).astype(np.int32)
    pos = np.arange(t)[None]
    prompt_start = rng.integers(0, 4, (b, 1))
    resp_end = rng.integers(PROMPT + 2, t + 1, (b, 1))
    attn = ((pos >= prompt_start) & (pos < resp_end)).astype(np.int32)
    resp = ((pos >= PROMPT) & (pos < resp_end)).astype(np.float32)
    resp[3] = 0.0
    rewards = rng.uniform(0, 5, b).astype(np.float32)
    rewards[:4] = 1.0  # one zero-variance group
    adv = np.asarray(grpo.group_advantages(jnp.asarray(rewards), group_size=4))
    return dict(input_ids=ids, attention_mask=attn, response_mask=resp, advantages=adv)


_FIELDS = {c: {f.name for f in dataclasses.fields(c)} for c in (grpo_step.LossConfig,
                                                                 ts.OptimConfig)}  # fmt: skip


def configs(**kw):
    """(StepConfig, OptimConfig) of the tiny model; kw: fields of either (or of LossConfig)."""
    kw = {"micro_batches": 2, "learning_rate": 1e-3, "kl_coef": 0.01, **kw}
    part = {c: {k: kw.pop(k) for k in list(kw) if k in names} for c, names in _FIELDS.items()}
    loss = grpo_step.LossConfig(**part[grpo_step.LossConfig])
    return (grpo_step.StepConfig(model=kw.pop("model", get_preset("tiny")), loss=loss, **kw),
            ts.OptimConfig(**part[ts.OptimConfig]))  # fmt: skip


def cfg_for(**kw):
    return configs(**kw)[0]


def loss_and_grads(params, batch, *, cfg):
    """train_step.loss_and_grads of the GRPO loss (the step's own micro-batching)."""
    dens = lambda b: grpo_step.denominators(b, cfg=cfg)
    return ts.loss_and_grads(
        lambda p, b, d: grpo_step.loss(p, b, d, cfg=cfg), params, batch,
        micro_batches=cfg.micro_batches, denominators_fn=dens,
    )  # fmt: skip


# ------------------------------------------------------------------ optimizer


def test_schedules():
    c = ts.OptimConfig(learning_rate=1.0, warmup_steps=4, total_steps=12, min_lr_ratio=0.1)
    const = ts.make_schedule(c.replace(warmup_steps=0))
    warm = ts.make_schedule(c.replace(schedule="warmup"))
    cos = ts.make_schedule(c.replace(schedule="cosine"))
    assert [float(const(s)) for s in (0, 10)] == [1.0, 1.0]
    np.testing.assert_allclose([float(warm(s)) for s in (0, 2, 4, 100)], [0, 0.5, 1, 1])
    # "constant" warms up too when warmup_steps > 0 (the RM's and verl's meaning).
    constant_warm = ts.make_schedule(c)
    np.testing.assert_allclose([float(constant_warm(s)) for s in (0, 2, 4, 100)], [0, 0.5, 1, 1])
    np.testing.assert_allclose(
        [float(cos(s)) for s in (0, 2, 4, 8, 12)], [0, 0.5, 1, 0.55, 0.1], atol=1e-6
    )
    with pytest.raises(ValueError, match="unknown lr schedule"):
        ts.make_schedule(c.replace(schedule="linear"))
    with pytest.raises(ValueError, match="total_steps"):
        ts.make_schedule(c.replace(schedule="cosine", total_steps=0))


def test_optimizer_clips_global_norm_and_decays_weights():
    opt = ts.make_optimizer(ts.OptimConfig(learning_rate=0.1, weight_decay=0.5, grad_clip=1.0))
    p = {"w": jnp.full((4,), 2.0)}
    g = {"w": jnp.full((4,), 100.0)}
    upd, _ = opt.update(g, opt.init(p), p)
    # First Adam step moves by lr * sign(g) (clipping rescales g only); decay adds lr * wd * p.
    np.testing.assert_allclose(np.asarray(upd["w"]), -0.1 * (1.0 + 0.5 * 2.0), rtol=1e-4)


def test_balanced_logprob_chunks():
    c = grpo_step.StepConfig(model=get_preset("qwen2_5_0_5b"))
    # 1 GiB of fp32 logits allow 441 positions at B=4 (one chunk, nothing recomputed) and 110
    # at B=16: 3 chunks of 86, not 110 + padding.
    assert grpo_step.logprob_chunk_size(c, 4, 256) == 256
    assert grpo_step.logprob_chunk_size(c, 16, 256) == 86
    assert grpo_step.logprob_chunk_size(c.replace(logprob_chunk_size=64), 4, 256) == 64


# ------------------------------------------------------------------ gradient accumulation


@pytest.fixture(scope="module")
def accumulated():
    """loss_and_grads for every aggregation with 1 and 4 micro-batches (one compiled program)."""
    batch = make_batch(seed=1, b=8)
    rng = np.random.default_rng(2)
    batch["old_logp"] = rng.normal(-3, 0.3, (8, T)).astype(np.float32)
    batch["ref_logp"] = rng.normal(-3, 0.3, (8, T)).astype(np.float32)
    params = models.init_params(get_preset("tiny"), jax.random.key(0))

    kw = dict(dual_clip=3.0, compute_entropy=False)  # entropy merging: tests/test_grpo.py

    def all_variants(p, b):
        return {
            (agg, m): loss_and_grads(p, b, cfg=cfg_for(agg=agg, micro_batches=m, **kw))
            for agg in grpo.AGGREGATIONS
            for m in (1, 4)
        }

    return jax.device_get(jax.jit(all_variants)(params, batch))


@pytest.mark.parametrize("agg", sorted(grpo.AGGREGATIONS))
def test_micro_batches_give_full_batch_gradient(agg, accumulated):
    (l1, a1, g1), (l4, a4, g4) = accumulated[agg, 1], accumulated[agg, 4]
    np.testing.assert_allclose(l4, l1, rtol=1e-5, atol=1e-7)
    for k in a1:
        np.testing.assert_allclose(a4[k], a1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    flat1, flat4 = jax.tree.leaves(g1), jax.tree.leaves(g4)
    scale = max(np.abs(g).max() for g in flat1)
    assert scale > 0
    for x, y in zip(flat1, flat4):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6 * scale)
    if agg != "token-mean":  # the variants really differ (the test can fail)
        assert not np.allclose(l1, accumulated["token-mean", 1][0])


def test_response_len_runs_the_head_on_responses_only_with_the_same_loss_and_gradient():
    """response_len = T - PROMPT: the same loss, metrics and gradient (prompt positions are
    masked), and the compiled program's logits cover only the response positions."""
    batch = make_batch(seed=3, b=8)
    rng = np.random.default_rng(4)
    batch["ref_logp"] = rng.normal(-3, 0.3, (8, T)).astype(np.float32)
    params = models.init_params(get_preset("tiny"), jax.random.key(0))
    full, resp = cfg_for(), cfg_for(response_len=T - PROMPT)
    f = lambda cfg: jax.jit(lambda p, b: loss_and_grads(p, b, cfg=cfg))
    (l1, a1, g1), (l2, a2, g2) = f(full)(params, batch), f(resp)(params, batch)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    for k in a1:
        np.testing.assert_allclose(a2[k], a1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-7)
    logp = grpo_step.compute_logprobs(params, batch, cfg=resp)
    np.testing.assert_allclose(
        logp[:, PROMPT:], grpo_step.compute_logprobs(params, batch, cfg=full)[:, PROMPT:], rtol=1e-5
    )
    assert not np.asarray(logp[:, :PROMPT]).any()
    vocab = full.model.vocab_size
    hlo = f(resp).lower(params, batch).as_text()
    assert f"x{T - PROMPT}x{vocab}xf32>" in hlo  # [rows, response positions, V] logits
    assert f"x{T}x{vocab}xf32>" not in hlo and f"x{T - 1}x{vocab}xf32>" not in hlo
    with pytest.raises(ValueError, match="response_len=24 leaves no prompt"):
        grpo_step.compute_logprobs(params, batch, cfg=cfg_for(response_len=T))


def test_micro_batches_must_divide_batch():
    cfg = cfg_for(micro_batches=3, kl_coef=0.0)
    params = models.abstract_params(cfg.model)
    batch = make_batch()
    with pytest.raises(ValueError, match="micro_batches=3"):
        jax.eval_shape(lambda p, b: loss_and_grads(p, b, cfg=cfg), params, batch)


# ------------------------------------------------------------------ the jitted, sharded step


@pytest.fixture(scope="module")
def fsdp_run():
    """One compiled fsdp step shared by the tests below; every trace of train_step counted."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ts, "update", chex.assert_max_traces(ts.update, n=1))
        cfg, optim = configs()
        mesh = sharding.make_mesh(MESHES["fsdp"])
        step_fn = grpo_step.make_step(cfg, optim, mesh, "fsdp")
        logprob_fn = grpo_step.make_logprob_fn(cfg, mesh, "fsdp")
        yield cfg, mesh, step_fn, logprob_fn


@functools.cache
def host_state(cfg):
    """The initial TrainState on the host (initialised once, on one device)."""
    params = models.init_params(cfg.model, jax.random.key(0))
    return jax.device_get(ts.init_state(params, optim=ts.OptimConfig(learning_rate=1e-3)))


def fresh_state(cfg, step_fn):
    """A new initial TrainState placed in the step's shardings (the step donates its input)."""
    return jax.device_put(host_state(cfg), step_fn.state_shardings)


def run_two_steps(cfg, mesh, preset, step_fn, logprob_fn):
    state = fresh_state(cfg, step_fn)
    before = jax.device_get(state.params)
    batch = make_batch()
    batch["old_logp"] = logprob_fn(state.params, batch)
    batch["ref_logp"] = batch["old_logp"]
    metrics = []
    for _ in range(2):
        state, m = step_fn(state, batch)
        metrics.append(jax.device_get(m))
    # First update: old == current policy, so ratio 1 and KL 0 (train-step log-probs agree
    # with compute_logprobs under this sharding).
    assert abs(metrics[0]["approx_kl"]) < 1e-5 and abs(metrics[0]["kl_mean"]) < 1e-5
    assert abs(metrics[0]["ratio_mean"] - 1.0) < 1e-5
    assert all(np.isfinite(m["loss"]) and m["is_finite"] for m in metrics)
    assert int(state.step) == 2 and [int(m["step"]) for m in metrics] == [0, 1]
    want = models.param_shardings(cfg.model, mesh, preset)
    for got, exp, p in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(want), jax.tree.leaves(before)
    ):
        assert got.sharding.is_equivalent_to(exp, got.ndim), (got.sharding, exp)
        assert got.shape == p.shape
    moved = [
        np.abs(np.asarray(x) - y).max()
        for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(before))
    ]
    assert min(moved) > 0  # every param got an update (lm_head, norms, biases included)
    return state


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_two_steps_under_every_sharding_preset(preset, fsdp_run, monkeypatch):
    if preset == "fsdp":
        cfg, mesh, step_fn, logprob_fn = fsdp_run
    else:  # unwrap fsdp_run's trace counter (it counts the fsdp step only); check the cache
        monkeypatch.setattr(ts, "update", ts.update.__wrapped__)
        cfg, optim = configs()
        mesh = sharding.make_mesh(MESHES[preset])
        step_fn = grpo_step.make_step(cfg, optim, mesh, preset)
        logprob_fn = grpo_step.make_logprob_fn(cfg, mesh, preset)
    run_two_steps(cfg, mesh, preset, step_fn, logprob_fn)
    assert step_fn.jitted._cache_size() == 1


def test_loss_decreases_and_compiles_once(fsdp_run):
    cfg, mesh, step_fn, logprob_fn = fsdp_run
    state = fresh_state(cfg, step_fn)
    batch = make_batch(seed=5)
    batch["old_logp"] = logprob_fn(state.params, batch)
    batch["ref_logp"] = batch["old_logp"]

    def weighted_logp(params):  # sum_i A_i * mean_t logp_it over response tokens
        lp = np.asarray(logprob_fn(params, batch))
        m = batch["response_mask"]
        return float(np.sum(batch["advantages"] * (lp * m).sum(1) / np.maximum(m.sum(1), 1)))

    w0 = weighted_logp(state.params)
    losses = []
    for _ in range(4):  # mu = 4 updates on one rollout batch, as upstream
        state, m = step_fn(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0] - 1e-3, losses
    assert weighted_logp(state.params) > w0 + 1e-2
    assert step_fn.jitted._cache_size() == 1  # and assert_max_traces(n=1) did not fire


def test_non_finite_loss_raises_with_step_and_keeps_state(fsdp_run):
    cfg, mesh, step_fn, logprob_fn = fsdp_run
    state = fresh_state(cfg, step_fn)
    batch = make_batch(seed=6)
    batch["old_logp"] = logprob_fn(state.params, batch)
    batch["ref_logp"] = batch["old_logp"]
    state, _ = step_fn(state, batch)  # step 0 is fine
    before = jax.device_get(state)
    bad = dict(batch, advantages=np.where(np.arange(B) == 5, np.nan, batch["advantages"]))
    with pytest.raises(ts.NonFiniteLossError, match="at step 1") as err:
        step_fn(state, bad)
    kept = err.value.state
    chex.assert_trees_all_equal(jax.device_get(kept), before)
    assert int(kept.step) == 1
    state, m = step_fn(kept, batch)  # the kept state is usable: training continues
    assert int(m["step"]) == 1 and bool(m["is_finite"])
