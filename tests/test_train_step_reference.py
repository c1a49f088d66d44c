"""One jitted, sharded GRPO update against an independent float64 reference.

The update (`run_update`: the tiny preset, float32, 8 fake devices as data 2 x fsdp 4 under the
"fsdp" rules) is held against `tests/reference_grpo.py`, which restates the objective from its
definitions and never calls `grpo.py`. Its log-probs come from another path too: the full
logits of the unsharded `models.forward`, log-softmaxed in float64 (the step uses its chunked
log-prob head). The old, reference and current policies are three different parameter sets
(the params, and two perturbed copies of them at different scales), the KL coefficient is not
zero and the advantages have both signs, so ratios are far outside the clip range and a step that
took the KL against the old log-probs, or swapped old and ref, gives another loss and KL metric
(`test_reference_tells_the_bugs_apart` checks that these differences are far above the
tolerances) and, except for the KL-against-old bug under k1 (whose gradient, 1 per token, does
not depend on ref), another gradient.

What is compared, per case: the loss (rtol 1e-5), every metric the reference defines (token
fractions and counts exactly: one token is 1/135; the rest rtol 1e-5), grad_norm (rtol 1e-5),
and the gradient of every param leaf, recovered from the update itself (see ADAM_EPS), against
`jax.grad` of the reference loss pulled back through the unsharded forward (abs error <= 2e-5
x the leaf's largest reference entry; leaf scales span 3e-4..0.3). Observed errors are 25-40x
below these bounds.

The cases are a Latin square: every aggregation and every KL estimator once, with and without
dual-clip, with 1 and 2 micro-batches, with and without truncated importance sampling (the
sampler's log-probs come from a fourth parameter set, so sampler/trainer mismatch metrics are
compared in every case and TIS weights fall on both sides of the cap). The variant strings only
reach `grpo.policy_loss`, whose full (aggregation x estimator) product is in tests/test_grpo.py;
a case here costs a compile of the whole update (~5 s on 2 cores), so all 16 would take ~80 s
more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifrl_jax import grpo, grpo_step, models, sharding
from ifrl_jax import train_step as ts
from tests import reference_grpo as ref

MODEL = models.get_preset("tiny")  # float32 params and compute
B, T, PROMPT = 16, 24, 10
MESH = {"data": 2, "fsdp": 4, "tp": 1}
RULES = "fsdp"
CLIP_LOW, CLIP_HIGH, KL_COEF = 0.2, 0.28, 0.1
SIGMA_OLD, SIGMA_REF = 0.06, 0.12  # std of the noise added to every param for old / ref
SIGMA_ROLLOUT = 0.03  # the sampler's log-probs: old's params perturbed again (a mismatch)
TIS_CAP = 1.2
# Adam's first step is -lr * g / (|g| + eps) (bias-corrected moments g and g^2). With eps = 1e6
# >> |g| it is -(lr / eps) g to a relative 1e-6, and lr / eps = 1e3 makes the step much larger
# than the params' float32 rounding: the update's own gradient comes back from one step.
ADAM_EPS, LR = 1e6, 1e9
LOSS_RTOL = 1e-5  # loss, aggregated metrics, grad_norm (observed <= 3e-7)
GRAD_ATOL = 2e-5  # x each leaf's largest reference gradient entry (observed <= 9e-7)


def run_update(params, batch, *, micro_batches, **loss_kw):
    """The code under test: ONE jitted, sharded, donated GRPO update from fresh optimizer state.

    Args:
      params: host params; batch: the step's batch dict (see `grpo_step`).
      micro_batches: gradient accumulation steps; loss_kw: `grpo_step.LossConfig` fields.

    Returns:
      (loss, grads, metrics): floats, the float64 gradient pytree, host metrics.
    """
    cfg = grpo_step.StepConfig(
        model=MODEL, loss=grpo_step.LossConfig(**loss_kw), micro_batches=micro_batches
    )
    optim = ts.OptimConfig(learning_rate=LR, eps=ADAM_EPS, weight_decay=0.0, grad_clip=1e30)
    step_fn = grpo_step.make_step(cfg, optim, sharding.make_mesh(MESH), RULES)
    state = ts.init_state(params, optim=optim, shardings=step_fn.state_shardings)
    new, metrics = step_fn(state, batch)
    metrics = jax.device_get(metrics)
    grads = jax.tree.map(
        lambda p1, p0: (np.float64(p0) - np.asarray(p1, np.float64)) * (ADAM_EPS / LR),
        jax.device_get(new.params),
        params,
    )
    return float(metrics["loss"]), grads, metrics


CASES = [  # (agg, kl_estimator, dual_clip, micro_batches, tis_cap): see the docstring
    ("token-mean", "k1", 3.0, 2, None),
    ("seq-mean-token-mean", "k2", None, 1, TIS_CAP),
    ("seq-mean-token-sum", "k3", 3.0, 1, None),
    ("seq-mean-token-sum-norm", "low_var_kl", 3.0, 2, TIS_CAP),
]


def loss_kw(agg, kl_estimator, dual_clip, tis_cap=None):
    return dict(
        agg=agg, kl_estimator=kl_estimator, kl_coef=KL_COEF, clip_low=CLIP_LOW,
        clip_high=CLIP_HIGH, dual_clip=dual_clip, tis_cap=tis_cap,
    )  # fmt: skip


def perturbed(params, seed, sigma):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: (x + sigma * rng.standard_normal(x.shape)).astype(np.float32), params
    )


def make_batch(seed=0):
    """Left-padded rows [pad | prompt | response | pad]; row 5's response is empty."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, MODEL.vocab_size, (B, T)).astype(np.int32)
    pos = np.arange(T)[None]
    start = rng.integers(0, 4, (B, 1))
    end = rng.integers(PROMPT + 3, T + 1, (B, 1))
    resp = ((pos >= PROMPT) & (pos < end)).astype(np.float32)
    resp[5] = 0.0
    adv = rng.normal(0.0, 1.0, B).astype(np.float32)
    adv[::2] = -np.abs(adv[::2])  # both signs in every micro-batch
    adv[1::2] = np.abs(adv[1::2])
    attn = ((pos >= start) & (pos < end)).astype(np.int32)
    return dict(input_ids=ids, attention_mask=attn, response_mask=resp, advantages=adv)


def build_world():
    """Params, batch (with old/ref log-probs), and the reference's float64 inputs."""
    params = jax.device_get(models.init_params(MODEL, jax.random.key(0)))
    batch = make_batch()
    ids, attn = batch["input_ids"], batch["attention_mask"]
    forward = lambda p: models.forward(MODEL, p, ids, attn)  # [B, T, V], unsharded, unchunked

    def logprobs64(p):
        return ref.token_logprobs(np, np.asarray(forward(p), np.float64), ids)

    logits, pullback = jax.vjp(forward, params)
    logp, entropy = logprobs64(params)
    batch["old_logp"] = logprobs64(perturbed(params, 1, SIGMA_OLD))[0].astype(np.float32)
    batch["ref_logp"] = logprobs64(perturbed(params, 2, SIGMA_REF))[0].astype(np.float32)
    sampler = perturbed(perturbed(params, 1, SIGMA_OLD), 3, SIGMA_ROLLOUT)
    batch["rollout_logp"] = logprobs64(sampler)[0].astype(np.float32)
    inputs64 = dict(
        logp=logp, old=np.float64(batch["old_logp"]), ref=np.float64(batch["ref_logp"]),
        adv=np.float64(batch["advantages"]), mask=np.float64(batch["response_mask"]),
        entropy=entropy, rollout=np.float64(batch["rollout_logp"]),
    )  # fmt: skip
    return dict(params=params, batch=batch, logits=logits, pullback=pullback, x=inputs64)


@pytest.fixture(scope="module")
def world():
    return build_world()


def reference(world, **kw):
    """The reference loss and metrics in float64 numpy."""
    return ref.grpo_objective(np, **world["x"], norm_len=T, **kw)


def reference_grads(world, **kw):
    """jax.grad of the reference loss (jnp, float32) w.r.t. the params, via the logits."""
    x, ids = world["x"], world["batch"]["input_ids"]
    f32 = lambda a: jnp.asarray(a, jnp.float32)

    def loss_of_logits(z):
        logp, _ = ref.token_logprobs(jnp, z, ids)
        return ref.grpo_objective(
            jnp, logp, f32(x["old"]), f32(x["ref"]), f32(x["adv"]), x["mask"],
            rollout=f32(x["rollout"]), norm_len=T, **kw,
        )[0]  # fmt: skip

    (grads,) = world["pullback"](jax.jit(jax.grad(loss_of_logits))(world["logits"]))
    return jax.device_get(grads)


def test_cases_cover_every_aggregation_and_kl_estimator():
    assert sorted(c[0] for c in CASES) == sorted(grpo.AGGREGATIONS)
    assert sorted(c[1] for c in CASES) == sorted(grpo.KL_ESTIMATORS)


@pytest.mark.parametrize("agg,kl_estimator,dual_clip,micro_batches,tis_cap", CASES)
def test_update_matches_reference(world, agg, kl_estimator, dual_clip, micro_batches, tis_cap):
    """The update's loss, metrics and gradient equal the float64 / jax.grad reference."""
    kw = loss_kw(agg, kl_estimator, dual_clip, tis_cap)
    want_loss, want = reference(world, **kw)
    x, m = world["x"], world["x"]["mask"] > 0
    # The regime the test needs: clipping active, and no token within 1e-4 of a clip edge
    # (where float32 rounding could flip a token's branch and so its gradient).
    ratio = np.exp(x["logp"] - x["old"])[m]
    assert np.mean((ratio < 1 - CLIP_LOW) | (ratio > 1 + CLIP_HIGH)) > 0.3
    assert want["clipfrac"] > 0.1 and want["clipfrac_low"] > 0 and want["clipfrac_high"] > 0
    edges = [1 - CLIP_LOW, 1 + CLIP_HIGH] + ([dual_clip] if dual_clip else [])
    assert min(np.abs(ratio / e - 1).min() for e in edges) > 1e-4
    if dual_clip is not None:
        assert want["dualclip_frac"] > 0
    if tis_cap:  # both sides of the cap, and the weights really change the loss
        assert 0.05 < want["tis_capped_frac"] < 0.95
        assert abs(reference(world, **dict(kw, tis_cap=None))[0] / want_loss - 1) > 0.01

    loss, grads, metrics = run_update(
        world["params"], world["batch"], micro_batches=micro_batches, **kw
    )

    np.testing.assert_allclose(loss, want_loss, rtol=LOSS_RTOL)
    for k, v in want.items():
        if k.startswith("clipfrac") or k.endswith("_frac") or k == "num_tokens":  # counts
            np.testing.assert_allclose(metrics[k], v, rtol=1e-6, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_allclose(metrics[k], v, rtol=LOSS_RTOL, atol=1e-7, err_msg=k)
    g_ref = reference_grads(world, **kw)
    flat_ref = jax.tree.leaves(g_ref)
    want_norm = np.sqrt(sum(np.sum(np.float64(g) ** 2) for g in flat_ref))
    np.testing.assert_allclose(metrics["grad_norm"], want_norm, rtol=LOSS_RTOL)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(g_ref)]
    for path, got, exp in zip(paths, jax.tree.leaves(grads), flat_ref):
        scale = np.abs(exp).max()
        assert scale > 0, path  # every param gets a gradient
        np.testing.assert_allclose(got, exp, rtol=0, atol=GRAD_ATOL * scale, err_msg=path)


def test_reference_tells_the_bugs_apart(world):
    """The data keep their power: a KL against old_logp, or old and ref swapped, moves the loss
    (by > 100x its tolerance; the step's own errors are ~1e-7) and the KL metric by > 10%."""
    x = world["x"]
    bugs = {
        "KL against old": dict(x, ref=x["old"]),
        "old and ref swapped": dict(x, old=x["ref"], ref=x["old"]),
    }
    for case in CASES:
        kw = loss_kw(*case[:3], case[4])
        loss, metrics = reference(world, **kw)
        for name, inputs in bugs.items():
            bad_loss, bad = ref.grpo_objective(np, **inputs, norm_len=T, **kw)
            assert abs(bad_loss - loss) > 1e2 * LOSS_RTOL * abs(loss), (case, name)
            assert abs(bad["kl_mean"] - metrics["kl_mean"]) > 0.1 * metrics["kl_mean"], (case, name)
