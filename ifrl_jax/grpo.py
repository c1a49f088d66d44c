"""GRPO loss pieces: group advantages, KL estimators, clipped surrogate, loss aggregations.

Pure functions of arrays, no model code. Every variant is an entry in a plain dict keyed by
the config string (`STD_ESTIMATORS`, `KL_ESTIMATORS`, `AGGREGATIONS`).

Shapes: `B` sequences (rows), `T` token positions, `G` groups of `n = group_size` rollouts.

Micro-batching contract: every aggregation returns a `(numerator, denominator)` pair. The
numerator is a sum over rows, so it splits exactly over any partition of the batch; the
denominator is computed once for the full batch (`loss_denominators`) and passed to
`policy_loss(..., denominators=...)` for each micro-batch. Summing the micro-batch losses (and
their gradients) then gives exactly the full-batch loss (and gradient). The aux metrics follow
the same contract: sum them over micro-batches, except keys ending in `_max`/`_min`, which merge
by max/min (`train_step.merge_aux`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

LOG_RATIO_CLAMP = 20.0  # |log(pi/pi_old)| and |log(pi_ref/pi)| are clamped to this before exp.
K3_CLAMP = 10.0  # low_var_kl is clamped to [-10, 10], as in verl.


# --------------------------------------------------------------------------------------------
# Group advantages.
# --------------------------------------------------------------------------------------------

STD_ESTIMATORS: dict[str, Callable[[Array], Array] | None] = {
    # [G, n] -> [G]
    "unbiased": lambda r: jnp.std(r, axis=-1, ddof=1),  # upstream (torch.std default)
    "biased": lambda r: jnp.std(r, axis=-1, ddof=0),
    "none": None,  # Dr.GRPO: r - mean, no division at all (and no eps)
}


def _groups(rewards: Array, group_size: int) -> Array:
    """Reshapes rewards [B] ordered group by group into [G, n] (float32)."""
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [B], got shape {rewards.shape}")
    if group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 (GRPO needs rollouts to compare), got {group_size}"
        )
    if rewards.shape[0] % group_size:
        raise ValueError(
            f"batch of {rewards.shape[0]} rewards is not a whole number of groups of {group_size}"
        )
    return rewards.astype(jnp.float32).reshape(-1, group_size)


def zero_variance_groups(rewards: Array, *, group_size: int) -> tuple[Array, Array]:
    """Finds groups whose rewards are all equal (they carry no GRPO learning signal).

    Args:
      rewards: [B] rewards ordered group by group (rows g*n .. g*n+n-1 are group g).
      group_size: n, rollouts per prompt.

    Returns:
      (is_zero_var [G] bool, count [] int32).
    """
    r = _groups(rewards, group_size)  # [G, n]
    zero = jnp.max(r, axis=-1) == jnp.min(r, axis=-1)  # [G]
    return zero, jnp.sum(zero.astype(jnp.int32))


def zero_variance_weights(rewards: Array, *, group_size: int) -> Array:
    """Per-row weights that filter zero-variance groups: 0 for their rows, 1 otherwise.

    Multiply into the response mask (`mask * w[:, None]`) before computing the denominators, so
    filtered rows leave the loss, the KL term and the token/sequence counts.

    Args:
      rewards: [B] rewards ordered group by group.
      group_size: n.

    Returns:
      [B] float32 weights in {0, 1}.
    """
    zero, _ = zero_variance_groups(rewards, group_size=group_size)
    return jnp.repeat(jnp.where(zero, 0.0, 1.0), group_size).astype(jnp.float32)


def group_advantages(
    rewards: Array, *, group_size: int, std: str = "unbiased", eps: float = 1e-6
) -> Array:
    """GRPO outcome advantages `(r - mean_group) / (std_group + eps)`.

    Groups whose rewards are all equal get exactly 0 (without this, float rounding of the mean
    divided by `eps` can leave values of order 1e-2 in float32).

    Args:
      rewards: [B] rewards ordered group by group.
      group_size: n, rollouts per prompt (>= 2).
      std: key of `STD_ESTIMATORS`: "unbiased" (ddof 1, upstream default), "biased" (ddof 0)
        or "none" (Dr.GRPO: `r - mean` only).
      eps: added to the std.

    Returns:
      [B] float32 advantages.
    """
    if std not in STD_ESTIMATORS:
        raise ValueError(f"unknown advantage std {std!r}; choose from {sorted(STD_ESTIMATORS)}")
    r = _groups(rewards, group_size)  # [G, n]
    centered = r - jnp.mean(r, axis=-1, keepdims=True)  # [G, n]
    std_fn = STD_ESTIMATORS[std]
    adv = centered if std_fn is None else centered / (std_fn(r)[:, None] + eps)
    zero, _ = zero_variance_groups(rewards, group_size=group_size)
    adv = jnp.where(zero[:, None], 0.0, adv)
    return adv.reshape(-1)


def reward_stats(rewards: Array, *, group_size: int) -> dict[str, Array]:
    """Host-loggable reward/group statistics for one rollout batch.

    Args:
      rewards: [B] rewards ordered group by group.
      group_size: n.

    Returns:
      dict of scalars: reward mean/std/max/min, zero-variance group count and fraction.
    """
    zero, count = zero_variance_groups(rewards, group_size=group_size)
    r = rewards.astype(jnp.float32)
    return {
        "reward_mean": jnp.mean(r),
        "reward_std": jnp.std(r),
        "reward_max": jnp.max(r),
        "reward_min": jnp.min(r),
        "zero_var_groups": count,
        "zero_var_frac": count / zero.shape[0],
    }


# --------------------------------------------------------------------------------------------
# KL estimators: per-token estimates of KL(pi || pi_ref) from samples of pi.
# --------------------------------------------------------------------------------------------


def _kl_k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


def _kl_k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


def _kl_k3(logp: Array, ref_logp: Array) -> Array:
    """verl's low_var_kl: exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]."""
    kl = jnp.clip(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.clip(jnp.exp(kl) - kl - 1.0, -K3_CLAMP, K3_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[Array, Array], Array]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
    "low_var_kl": _kl_k3,
}


# --------------------------------------------------------------------------------------------
# Aggregations: (token_loss [B, T], mask [B, T], *, norm_len) -> (numerator, denominator).
# Numerators are sums over rows; denominators are the full-batch normalizers.
# Empty rows (no masked token) are excluded from the sequence counts of the seq-mean modes
# (they contribute 0 to the numerator and do not count as sequences); seq-mean-token-sum-norm
# uses the constant normalizer rows * norm_len and counts every row.
# --------------------------------------------------------------------------------------------


def _row_counts(mask: Array) -> tuple[Array, Array]:
    tokens = jnp.sum(mask, axis=-1)  # [B]
    return tokens, jnp.sum((tokens > 0).astype(jnp.float32))


def _agg_token_mean(loss: Array, mask: Array, *, norm_len: int) -> tuple[Array, Array]:
    del norm_len
    return jnp.sum(loss * mask), jnp.sum(mask)


def _agg_seq_mean_token_mean(loss: Array, mask: Array, *, norm_len: int) -> tuple[Array, Array]:
    del norm_len
    tokens, nonempty = _row_counts(mask)
    per_seq = jnp.sum(loss * mask, axis=-1) / jnp.maximum(tokens, 1.0)  # [B], 0 for empty rows
    return jnp.sum(per_seq), nonempty


def _agg_seq_mean_token_sum(loss: Array, mask: Array, *, norm_len: int) -> tuple[Array, Array]:
    del norm_len
    _, nonempty = _row_counts(mask)
    return jnp.sum(loss * mask), nonempty


def _agg_seq_mean_token_sum_norm(loss: Array, mask: Array, *, norm_len: int) -> tuple[Array, Array]:
    rows = jnp.asarray(mask.shape[0], jnp.float32)
    return jnp.sum(loss * mask) / norm_len, rows


AGGREGATIONS: dict[str, Callable[..., tuple[Array, Array]]] = {
    "token-mean": _agg_token_mean,
    "seq-mean-token-mean": _agg_seq_mean_token_mean,
    "seq-mean-token-sum": _agg_seq_mean_token_sum,
    "seq-mean-token-sum-norm": _agg_seq_mean_token_sum_norm,
}


def loss_denominators(
    mask: Array, *, agg: str = "token-mean", norm_len: int | None = None
) -> dict[str, Array]:
    """Full-batch denominators, to be passed to every micro-batch's `policy_loss`.

    Args:
      mask: [B, T] response mask of the whole (mini-)batch.
      agg: key of `AGGREGATIONS`.
      norm_len: constant normalizer of `seq-mean-token-sum-norm` (default T).

    Returns:
      dict of float32 scalars: `loss` (the aggregation's denominator, at least 1), `tokens`
      (masked-token count, at least 1) and `rows` (B).
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {agg!r}; choose from {sorted(AGGREGATIONS)}")
    mask = mask.astype(jnp.float32)
    norm_len = mask.shape[-1] if norm_len is None else norm_len
    _, den = AGGREGATIONS[agg](jnp.zeros_like(mask), mask, norm_len=norm_len)
    return {
        "loss": jnp.maximum(den, 1.0),
        "tokens": jnp.maximum(jnp.sum(mask), 1.0),
        "rows": jnp.asarray(mask.shape[0], jnp.float32),
    }


# --------------------------------------------------------------------------------------------
# The clipped policy loss.
# --------------------------------------------------------------------------------------------


def policy_loss(
    logp: Array,
    old_logp: Array | None,
    ref_logp: Array | None,
    advantages: Array,
    mask: Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.01,
    kl_estimator: str = "k3",
    agg: str = "token-mean",
    dual_clip: float | None = None,
    entropy: Array | None = None,
    entropy_coef: float = 0.0,
    norm_len: int | None = None,
    denominators: Mapping[str, Array] | None = None,
    rollout_logp: Array | None = None,
    tis_cap: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """GRPO/PPO clipped surrogate plus KL-to-reference loss, aggregated by `agg`.

    Per token (verl's `compute_policy_loss`): `r = exp(clamp(logp - old_logp, -20, 20))`,
    `pg = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))`; with `dual_clip = c > 1`, for
    `A < 0` the loss is further capped at `-A c`. The token loss is
    `pg + kl_coef * KL_ESTIMATORS[kl_estimator](logp, ref_logp) - entropy_coef * entropy`, and
    the scalar loss is `numerator / denominators["loss"]`.

    Args:
      logp: [B, T] log-probs of the sampled tokens under the policy being trained.
      old_logp: [B, T] log-probs under the rollout policy; None means on-policy
        (`stop_gradient(logp)`, ratio 1).
      ref_logp: [B, T] log-probs under the reference policy; unused (may be None) if
        `kl_coef == 0`.
      advantages: [B] per-sequence advantages, broadcast over tokens.
      mask: [B, T] 1 on the response tokens that are trained.
      clip_low, clip_high: ratio clip range [1 - clip_low, 1 + clip_high].
      kl_coef: beta of the KL loss term.
      kl_estimator: key of `KL_ESTIMATORS`.
      agg: key of `AGGREGATIONS`.
      dual_clip: c > 1 of dual-clip PPO, or None.
      entropy: optional [B, T] per-token policy entropy (metrics; loss term if entropy_coef).
      entropy_coef: entropy bonus coefficient (0: none, as upstream).
      norm_len: constant normalizer of `seq-mean-token-sum-norm` (default T).
      denominators: full-batch `loss_denominators(...)` when this is one micro-batch; default:
        this batch's own.
      rollout_logp: [B, T] the sampler's own log-probs of the tokens (the behaviour policy as
        the rollout engine computed it). Adds the sampler/trainer mismatch metrics
        (`mismatch_abs` = mean |old - rollout|, `mismatch_kl` = mean k3 estimate of
        KL(sampler || trainer)) and enables truncated importance sampling.
      tis_cap: C of truncated importance sampling (verl's `tis_imp_ratio_cap`): each token's
        policy-gradient term is multiplied by stop_gradient(min(exp(old - rollout), C)),
        correcting for the sampler/trainer mismatch; None or 0: off.

    Returns:
      (loss [], aux) with aux a dict of float32 scalars (`train_step.merge_aux` merges them):
      pg_loss, kl_loss, entropy_loss (aggregated like the loss; kl_loss is before kl_coef),
      kl_mean, approx_kl, clipfrac, clipfrac_low, clipfrac_high, dualclip_frac, ratio_mean,
      entropy_mean (token means), adv_mean, adv_abs_mean (row means), ratio_max, ratio_min,
      adv_max, adv_min.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown kl_estimator {kl_estimator!r}; choose from {sorted(KL_ESTIMATORS)}"
        )
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {agg!r}; choose from {sorted(AGGREGATIONS)}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (verl's clip_ratio_c), got {dual_clip}")
    if tis_cap and rollout_logp is None:
        raise ValueError("tis_cap needs rollout_logp (the sampler's log-probs)")
    if tis_cap is not None and tis_cap < 0:
        raise ValueError(f"tis_cap must be > 0 (0 or None: off), got {tis_cap}")
    if kl_coef != 0.0 and ref_logp is None:
        raise ValueError("kl_coef != 0 needs ref_logp; set kl_coef=0 to train without a reference")

    f32 = jnp.float32
    logp = logp.astype(f32)
    old_logp = jax.lax.stop_gradient(logp) if old_logp is None else old_logp.astype(f32)
    valid = mask.astype(bool)
    maskf = valid.astype(f32)
    norm_len = mask.shape[-1] if norm_len is None else norm_len
    dens = (
        loss_denominators(mask, agg=agg, norm_len=norm_len)
        if denominators is None
        else denominators
    )
    aggregate = AGGREGATIONS[agg]

    def agg_loss(token_loss: Array) -> Array:
        # jnp.where (not *mask) so garbage at padded positions never leaks into the sums.
        num, _ = aggregate(jnp.where(valid, token_loss, 0.0), maskf, norm_len=norm_len)
        return num / dens["loss"]

    def token_mean(x: Array) -> Array:
        return jnp.sum(jnp.where(valid, x, 0.0)) / dens["tokens"]

    adv = advantages.astype(f32)[:, None]  # [B, 1]
    log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    ratio = jnp.exp(log_ratio)
    pg1 = -adv * ratio
    pg2 = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = jnp.maximum(pg1, pg2)
    dual_active = jnp.zeros_like(valid)
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        dual_active = (adv < 0) & (pg > pg3)
        pg = jnp.where(adv < 0, jnp.minimum(pg, pg3), pg)

    aux: dict[str, Array] = {}
    if rollout_logp is not None:
        d = old_logp - rollout_logp.astype(f32)  # log pi_trainer(old) - log pi_sampler
        aux["mismatch_abs"] = token_mean(jnp.abs(d))
        d = jnp.clip(d, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        aux["mismatch_kl"] = token_mean(jnp.exp(d) - 1.0 - d)  # k3 of KL(sampler || trainer)
        if tis_cap:
            w = jax.lax.stop_gradient(jnp.minimum(jnp.exp(d), tis_cap))
            aux["tis_weight_mean"] = token_mean(w)
            aux["tis_capped_frac"] = token_mean((jnp.exp(d) > tis_cap).astype(f32))
            pg = pg * w
    token_loss = pg
    aux["pg_loss"] = agg_loss(pg)
    if kl_coef != 0.0:
        kl = KL_ESTIMATORS[kl_estimator](logp, ref_logp.astype(f32))
        token_loss = token_loss + kl_coef * kl
        aux["kl_loss"] = agg_loss(kl)
        aux["kl_mean"] = token_mean(kl)
    else:
        aux["kl_loss"] = aux["kl_mean"] = jnp.zeros((), f32)
    if entropy is not None:
        entropy = entropy.astype(f32)
        aux["entropy_loss"] = agg_loss(entropy)
        aux["entropy_mean"] = token_mean(entropy)
        if entropy_coef != 0.0:
            token_loss = token_loss - entropy_coef * entropy
    elif entropy_coef != 0.0:
        raise ValueError("entropy_coef != 0 needs the per-token entropy")

    loss = agg_loss(token_loss)
    sg = jax.lax.stop_gradient
    ratio_sg, adv_row = sg(ratio), advantages.astype(f32)
    aux.update(
        approx_kl=token_mean(sg(-log_ratio)),
        clipfrac=token_mean((sg(pg2) > sg(pg1)).astype(f32)),
        clipfrac_high=token_mean(((adv > 0) & (ratio_sg > 1.0 + clip_high)).astype(f32)),
        clipfrac_low=token_mean(((adv < 0) & (ratio_sg < 1.0 - clip_low)).astype(f32)),
        dualclip_frac=token_mean(sg(dual_active).astype(f32)),
        ratio_mean=token_mean(ratio_sg),
        ratio_max=jnp.max(jnp.where(valid, ratio_sg, -jnp.inf)),
        ratio_min=jnp.min(jnp.where(valid, ratio_sg, jnp.inf)),
        adv_mean=jnp.sum(adv_row) / dens["rows"],
        adv_abs_mean=jnp.sum(jnp.abs(adv_row)) / dens["rows"],
        adv_max=jnp.max(adv_row),
        adv_min=jnp.min(adv_row),
    )
    return loss, {k: sg(v) for k, v in aux.items()}
