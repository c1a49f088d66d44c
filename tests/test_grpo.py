"""GRPO loss pieces against a short numpy reference (float64 numpy vs float32 JAX)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifrl_jax import grpo
from ifrl_jax import train_step as ts

AGGS = sorted(grpo.AGGREGATIONS)
KLS = sorted(grpo.KL_ESTIMATORS)


# ------------------------------------------------------------------ numpy reference


def np_advantages(r, n, std, eps=1e-6):
    g = np.asarray(r, np.float64).reshape(-1, n)
    c = g - g.mean(-1, keepdims=True)
    if std != "none":
        c = c / (g.std(-1, ddof=1 if std == "unbiased" else 0, keepdims=True) + eps)
    c[g.max(-1) == g.min(-1)] = 0.0
    return c.reshape(-1)


def np_kl(logp, ref, est):
    if est == "k1":
        return logp - ref
    if est == "k2":
        return 0.5 * (logp - ref) ** 2
    kl = np.clip(ref - logp, -20, 20)
    return np.clip(np.exp(kl) - kl - 1, -10, 10)


def np_agg(loss, m, agg, norm_len):
    s = (loss * m).sum(-1)
    cnt = m.sum(-1)
    ne = cnt > 0
    if agg == "token-mean":
        return s.sum() / m.sum()
    if agg == "seq-mean-token-mean":
        return np.mean(s[ne] / cnt[ne])
    if agg == "seq-mean-token-sum":
        return np.mean(s[ne])
    assert agg == "seq-mean-token-sum-norm"
    return np.mean(s / norm_len)


def np_token_loss(logp, old, adv, clip_low, clip_high, dual_clip):
    ratio = np.exp(np.clip(logp - old, -20, 20))
    a = adv[:, None]
    pg = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        pg = np.where(a < 0, np.minimum(pg, -a * dual_clip), pg)
    return pg, ratio


def make_batch(seed=0, b=8, t=12, empty_rows=(2, 5)):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 4.0, (b, t))
    old = logp + rng.normal(0, 0.4, (b, t))  # ratios well outside [0.8, 1.2] for some tokens
    ref = logp + rng.normal(0, 0.6, (b, t))
    adv = rng.normal(0, 1.0, b)
    lengths = rng.integers(1, t + 1, b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
    for i in empty_rows:
        mask[i] = 0.0
    return logp, old, ref, adv, mask


def f32(*xs):
    return [None if x is None else jnp.asarray(x, jnp.float32) for x in xs]


# ------------------------------------------------------------------ advantages


@pytest.mark.parametrize("std", ["unbiased", "biased", "none"])
def test_group_advantages_match_numpy(std):
    rng = np.random.default_rng(1)
    r = rng.uniform(0, 5, 20)
    r[5:10] = 2.5  # a zero-variance group
    got = grpo.group_advantages(jnp.asarray(r, jnp.float32), group_size=5, std=std)
    np.testing.assert_allclose(np.asarray(got), np_advantages(r, 5, std), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got)[5:10] == 0.0)


def test_unbiased_std_differs_from_biased():
    r = jnp.array([0.0, 1.0, 3.0, 5.0])
    a_u = grpo.group_advantages(r, group_size=4, std="unbiased")
    a_b = grpo.group_advantages(r, group_size=4, std="biased")
    np.testing.assert_allclose(np.asarray(a_b / a_u), np.sqrt(4 / 3), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grpo.group_advantages(r, group_size=4, std="none")), [-2.25, -1.25, 0.75, 2.75]
    )


def test_zero_variance_groups_counted_zeroed_and_filtered():
    # float32 mean of 5 x 0.1 is not exactly 0.1: the explicit zeroing is what gives 0 here.
    r = jnp.array([0.1] * 5 + [0.0, 1.0, 0.0, 1.0, 1.0] + [3.0] * 5, jnp.float32)
    adv = grpo.group_advantages(r, group_size=5, std="unbiased")
    assert np.all(np.asarray(adv)[:5] == 0.0) and np.all(np.asarray(adv)[10:] == 0.0)
    assert np.all(np.asarray(adv)[5:10] != 0.0)
    zero, count = grpo.zero_variance_groups(r, group_size=5)
    assert zero.tolist() == [True, False, True] and int(count) == 2
    w = grpo.zero_variance_weights(r, group_size=5)
    assert w.tolist() == [0.0] * 5 + [1.0] * 5 + [0.0] * 5
    stats = grpo.reward_stats(r, group_size=5)
    assert int(stats["zero_var_groups"]) == 2
    np.testing.assert_allclose(float(stats["zero_var_frac"]), 2 / 3, rtol=1e-6)


def test_group_advantages_rejects_bad_shapes():
    with pytest.raises(ValueError, match="whole number of groups"):
        grpo.group_advantages(jnp.zeros(7), group_size=5)
    with pytest.raises(ValueError, match="group_size"):
        grpo.group_advantages(jnp.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="unknown advantage std"):
        grpo.group_advantages(jnp.zeros(4), group_size=2, std="ddof2")


# ------------------------------------------------------------------ KL and aggregation


@pytest.mark.parametrize("est", KLS)
def test_kl_estimators_match_numpy(est):
    logp, _, ref, _, _ = make_batch()
    ref = ref.copy()
    ref[0, :3] = [30.0, -30.0, 12.0]  # exercise both clamps of k3
    got = grpo.KL_ESTIMATORS[est](*f32(logp, ref))
    ref_est = "k3" if est == "low_var_kl" else est
    np.testing.assert_allclose(np.asarray(got), np_kl(logp, ref, ref_est), rtol=2e-5, atol=1e-5)
    if ref_est == "k3":
        assert float(jnp.max(got)) == 10.0


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("est", KLS)
def test_policy_loss_matches_numpy(agg, est):
    logp, old, ref, adv, mask = make_batch()
    loss, aux = grpo.policy_loss(
        *f32(logp, old, ref, adv, mask), kl_coef=0.05, kl_estimator=est, agg=agg, norm_len=16
    )
    pg, ratio = np_token_loss(logp, old, adv, 0.2, 0.2, None)
    kl = np_kl(logp, ref, "k3" if est == "low_var_kl" else est)
    want = np_agg(pg + 0.05 * kl, mask, agg, 16)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(aux["pg_loss"]), np_agg(pg, mask, agg, 16), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        float(aux["kl_loss"]), np_agg(kl, mask, agg, 16), rtol=1e-5, atol=1e-6
    )
    m = mask.astype(bool)
    np.testing.assert_allclose(float(aux["kl_mean"]), kl[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["ratio_mean"]), ratio[m].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["ratio_max"]), ratio[m].max(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["ratio_min"]), ratio[m].min(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["approx_kl"]), (old - logp)[m].mean(), rtol=1e-4)
    a = np.broadcast_to(adv[:, None], mask.shape)
    np.testing.assert_allclose(float(aux["clipfrac_high"]), ((a > 0) & (ratio > 1.2))[m].mean())
    np.testing.assert_allclose(float(aux["clipfrac_low"]), ((a < 0) & (ratio < 0.8))[m].mean())
    assert 0.0 < float(aux["clipfrac"]) < 1.0
    np.testing.assert_allclose(float(aux["adv_mean"]), adv.mean(), rtol=1e-5, atol=1e-7)


def test_empty_rows_are_excluded_from_sequence_counts():
    """Documented choice: fully masked rows are not sequences for the seq-mean modes."""
    loss = jnp.ones((4, 3))
    mask = jnp.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], jnp.float32)
    for agg, want in [
        ("token-mean", 1.0),
        ("seq-mean-token-mean", 1.0),  # mean over the 2 non-empty rows of 1.0
        ("seq-mean-token-sum", 1.5),  # (2 + 1) / 2
        ("seq-mean-token-sum-norm", 3 / (4 * 3)),  # constant normalizer: all 4 rows x T=3
    ]:
        num, den = grpo.AGGREGATIONS[agg](loss, mask, norm_len=3)
        assert float(num / den) == pytest.approx(want), agg
    # An all-empty batch is a zero loss, not NaN.
    l0, _ = grpo.policy_loss(
        *f32(np.zeros((2, 3)), np.zeros((2, 3)), None, np.ones(2)),
        jnp.zeros((2, 3)),
        kl_coef=0.0,
        agg="seq-mean-token-mean",
    )
    assert float(l0) == 0.0


def test_dual_clip_caps_negative_advantages():
    logp = np.log(np.array([[5.0, 1.0, 0.5]]))
    old = np.zeros((1, 3))
    for a, c in [(-1.0, 3.0), (1.0, 3.0)]:
        adv = np.array([a])
        loss, aux = grpo.policy_loss(
            *f32(logp, old, None, adv, np.ones((1, 3))), kl_coef=0.0, dual_clip=c
        )
        pg, _ = np_token_loss(logp, old, adv, 0.2, 0.2, c)
        np.testing.assert_allclose(float(loss), pg.mean(), rtol=1e-6)
        # ratio 5 with A = -1: unclipped loss 5, capped at 3.
        assert float(aux["dualclip_frac"]) == pytest.approx(1 / 3 if a < 0 else 0.0)
    pg_plain, _ = np_token_loss(logp, old, np.array([-1.0]), 0.2, 0.2, None)
    pg_dual, _ = np_token_loss(logp, old, np.array([-1.0]), 0.2, 0.2, 3.0)
    assert (pg_plain[0, 0], pg_dual[0, 0]) == pytest.approx((5.0, 3.0))
    with pytest.raises(ValueError, match="dual_clip"):
        grpo.policy_loss(
            *f32(logp, old, None, np.ones(1), np.ones((1, 3))), kl_coef=0.0, dual_clip=0.5
        )


def test_log_ratio_is_clamped_before_exp():
    logp = jnp.array([[0.0, -1.0]])
    old = jnp.array([[-200.0, -1.0]])  # log-ratio 200 would overflow float32 exp
    loss, aux = grpo.policy_loss(logp, old, None, jnp.array([-1.0]), jnp.ones((1, 2)), kl_coef=0.0)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(float(aux["ratio_max"]), np.exp(np.float32(20.0)), rtol=1e-5)
    g = jax.grad(
        lambda lp: grpo.policy_loss(
            lp, old, None, jnp.array([-1.0]), jnp.ones((1, 2)), kl_coef=0.0
        )[0]
    )(logp)
    assert np.all(np.isfinite(np.asarray(g)))


def test_asymmetric_clip_and_gradient():
    """Clip-higher: the positive-advantage gradient stops at 1 + clip_high, not 1 + clip_low."""
    old = jnp.zeros((1, 1))
    fn = lambda lp, a: grpo.policy_loss(
        lp, old, None, a, jnp.ones((1, 1)), kl_coef=0.0, clip_low=0.2, clip_high=0.28
    )[0]
    g_in = jax.grad(fn)(jnp.log(jnp.full((1, 1), 1.25)), jnp.ones(1))
    g_out = jax.grad(fn)(jnp.log(jnp.full((1, 1), 1.3)), jnp.ones(1))
    assert float(g_in[0, 0]) == pytest.approx(-1.25, rel=1e-5)  # d(-r)/dlogp = -r
    assert float(g_out[0, 0]) == 0.0


def test_kl_coef_zero_needs_no_reference_and_entropy_metrics():
    logp, old, _, adv, mask = make_batch()
    loss, aux = grpo.policy_loss(*f32(logp, old), None, *f32(adv, mask), kl_coef=0.0)
    assert float(aux["kl_loss"]) == 0.0 and np.isfinite(float(loss))
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.policy_loss(*f32(logp, old), None, *f32(adv, mask), kl_coef=0.01)
    ent = np.abs(logp)
    loss_e, aux_e = grpo.policy_loss(
        *f32(logp, old),
        None,
        *f32(adv, mask),
        kl_coef=0.0,
        entropy=jnp.asarray(ent, jnp.float32),
        entropy_coef=0.1,
    )
    np.testing.assert_allclose(
        float(aux_e["entropy_mean"]), ent[mask.astype(bool)].mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(loss_e), float(loss) - 0.1 * float(aux_e["entropy_loss"]), rtol=1e-5
    )


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batches_sum_to_full_batch(agg):
    """Numerators over micro-batches / full-batch denominators == full-batch loss, grad, aux."""
    logp, old, ref, adv, mask = f32(*make_batch(seed=3, b=8, t=10, empty_rows=(1, 6)))
    kw = dict(kl_coef=0.01, agg=agg, dual_clip=3.0)

    def full(lp):
        return grpo.policy_loss(lp, old, ref, adv, mask, **kw)

    (loss, aux), grad = jax.value_and_grad(full, has_aux=True)(logp)
    dens = grpo.loss_denominators(mask, agg=agg)
    tot, aux_tot, grads = 0.0, None, []
    for s in np.split(np.arange(8), 4):

        def part(lp, s=s):
            return grpo.policy_loss(lp, old[s], ref[s], adv[s], mask[s], denominators=dens, **kw)

        (part_loss, a), g = jax.value_and_grad(part, has_aux=True)(logp[s])
        tot += part_loss
        grads.append(g)
        aux_tot = a if aux_tot is None else ts.merge_aux(aux_tot, a)
    np.testing.assert_allclose(float(tot), float(loss), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grads), np.asarray(grad), rtol=1e-6, atol=1e-8)
    for k in aux:
        np.testing.assert_allclose(
            float(aux_tot[k]), float(aux[k]), rtol=1e-5, atol=1e-7, err_msg=k
        )


def test_on_policy_old_logp_none():
    """old_logp=None: ratio 1 (stop-gradient of logp), gradient -A / tokens per token."""
    logp = jnp.asarray([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]])
    adv, mask = jnp.asarray([2.0, -1.0]), jnp.asarray([[1, 1, 0], [1, 1, 1]], jnp.float32)
    fn = lambda lp: grpo.policy_loss(lp, None, None, adv, mask, kl_coef=0.0)
    (loss, aux), g = jax.value_and_grad(fn, has_aux=True)(logp)
    assert float(aux["ratio_mean"]) == 1.0 and float(aux["clipfrac"]) == 0.0
    np.testing.assert_allclose(float(loss), -(2 * 2 - 1 * 3) / 5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g), -np.asarray(adv)[:, None] * np.asarray(mask) / 5)


def test_unknown_variants_raise():
    x = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="kl_estimator"):
        grpo.policy_loss(x, x, x, jnp.zeros(1), x, kl_estimator="k4")
    with pytest.raises(ValueError, match="aggregation"):
        grpo.policy_loss(x, x, x, jnp.zeros(1), x, agg="sum")
