"""An independent reference of the GRPO objective, written from the method's definitions.

Nothing here calls `ifrl_jax.grpo` or `ifrl_jax.grpo_step`: it is the PPO clipped surrogate
(with dual-clip), verl's KL penalties and loss aggregations, restated row by row, so that a
test can hold the train step against it. Every function takes `xp`, the array module: numpy
(float64 inputs) for values and metrics, `jax.numpy` for `jax.grad` of the same expression.

Definitions (verl's `core_algos.py`: `compute_policy_loss`, `kl_penalty`, `agg_loss`), per
response token t of row i, with advantage A_i and log-probs logp (trained policy), old (the
behaviour policy that sampled the tokens) and ref (the frozen reference):

    r      = exp(clamp(logp - old, -20, 20))
    pg     = max(-A r, -A clamp(r, 1 - clip_low, 1 + clip_high))
    pg     = min(pg, -A c)  where A < 0, when dual-clip c is configured
    pg     = pg * min(exp(old - rollout), C)    truncated importance sampling with cap C (verl:
             tis_imp_ratio on pg_losses; a constant: no gradient), rollout = the sampler's logp
    loss_t = pg + beta * KL(logp, ref)          (the KL penalty is added per token)

    KL: k1 = logp - ref;  k2 = (logp - ref)^2 / 2;
        k3 = low_var_kl = clamp(exp(d) - d - 1, -10, 10) with d = clamp(ref - logp, -20, 20)

Aggregations, over the batch's rows (n_i = response tokens of row i; S = rows with n_i > 0;
an empty row is no sequence, the repo's documented convention, as recent verl's seq_mask):

    token-mean               sum_i sum_t loss / sum_i n_i
    seq-mean-token-mean      mean_{i in S} (sum_t loss / n_i)
    seq-mean-token-sum       mean_{i in S} sum_t loss
    seq-mean-token-sum-norm  mean_i (sum_t loss / norm_len)   (every row; Dr. GRPO)
"""

from __future__ import annotations

LOG_RATIO_CLAMP = 20.0
LOW_VAR_KL_CLAMP = 10.0


def log_softmax(xp, z):
    """log softmax over the last axis (max-shifted)."""
    z = z - xp.max(z, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def token_logprobs(xp, logits, input_ids):
    """log p(x_t | x_<t) [B, T] from logits [B, T, V] (position t - 1 predicts x_t); 0 at t=0.

    Returns:
      (logp [B, T], entropy [B, T]) where entropy[:, t] is that of the distribution over x_t.
    """
    ls = log_softmax(xp, logits[:, :-1])  # [B, T-1, V]
    picked = xp.take_along_axis(ls, input_ids[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    ent = -xp.sum(xp.exp(ls) * ls, axis=-1)  # [B, T-1]
    zero = xp.zeros_like(picked[:, :1])
    return xp.concatenate([zero, picked], axis=1), xp.concatenate([zero, ent], axis=1)


def kl_penalty(xp, logp, ref, estimator):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (verl's kl_penalty)."""
    if estimator == "k1":
        return logp - ref
    if estimator == "k2":
        return 0.5 * (logp - ref) ** 2
    if estimator in ("k3", "low_var_kl"):
        d = xp.clip(ref - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return xp.clip(xp.exp(d) - d - 1.0, -LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)
    raise ValueError(f"no reference for KL estimator {estimator!r}")


def aggregate(xp, token_values, mask, agg, *, norm_len):
    """One scalar from [B, T] per-token values over the masked tokens, row by row."""
    rows = mask.shape[0]
    row_sums = [xp.sum(token_values[i] * mask[i]) for i in range(rows)]
    row_tokens = [float(mask[i].sum()) for i in range(rows)]
    seqs = [i for i in range(rows) if row_tokens[i] > 0]
    if agg == "token-mean":
        return sum(row_sums) / sum(row_tokens)
    if agg == "seq-mean-token-mean":
        return sum(row_sums[i] / row_tokens[i] for i in seqs) / len(seqs)
    if agg == "seq-mean-token-sum":
        return sum(row_sums[i] for i in seqs) / len(seqs)
    if agg == "seq-mean-token-sum-norm":
        return sum(s / norm_len for s in row_sums) / rows
    raise ValueError(f"no reference for aggregation {agg!r}")


def grpo_objective(
    xp, logp, old, ref, adv, mask, entropy=None, rollout=None, *, agg, kl_estimator, kl_coef,
    clip_low, clip_high, dual_clip, norm_len, tis_cap=None,
):  # fmt: skip
    """The GRPO loss and the metrics a train step reports.

    Args:
      xp: numpy or jax.numpy.
      logp, old, ref: [B, T] log-probs of the sampled tokens under the trained, behaviour and
        reference policies; adv: [B] advantages; mask: [B, T] numpy 0/1 response mask.
      entropy: optional [B, T] per-token entropy of the trained policy (metrics only).
      rollout: optional [B, T] the sampler's log-probs (mismatch metrics; TIS with tis_cap).

    Returns:
      (loss, metrics): metrics by the names `grpo.policy_loss` documents, each defined here.
    """
    a = adv[:, None]  # [B, 1]
    log_ratio = xp.clip(logp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = xp.exp(log_ratio)
    pg_unclipped = -a * ratio
    pg_clipped = -a * xp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = xp.maximum(pg_unclipped, pg_clipped)
    dual_active = xp.zeros_like(pg) > 0
    if dual_clip is not None:
        dual_active = (a < 0) & (pg > -a * dual_clip)
        pg = xp.where(a < 0, xp.minimum(pg, -a * dual_clip), pg)
    if tis_cap:  # numpy or jnp constants (old and rollout are inputs): no gradient through it
        pg = pg * xp.minimum(xp.exp(old - rollout), tis_cap)
    kl = kl_penalty(xp, logp, ref, kl_estimator)
    agg_kw = dict(agg=agg, norm_len=norm_len)
    loss = aggregate(xp, pg + kl_coef * kl, mask, **agg_kw)

    m = mask > 0
    n_tokens = float(mask.sum())
    token_mean = lambda x: xp.sum(xp.where(m, x, 0.0)) / n_tokens
    frac = lambda b: token_mean(xp.where(b, 1.0, 0.0))
    metrics = dict(
        loss=loss,
        pg_loss=aggregate(xp, pg, mask, **agg_kw),
        kl_loss=aggregate(xp, kl, mask, **agg_kw),
        kl_mean=token_mean(kl),
        approx_kl=token_mean(old - logp),  # verl's ppo_kl: mean of -(logp - old)
        clipfrac=frac(pg_clipped > pg_unclipped),  # verl's pg_clipfrac
        clipfrac_high=frac((a > 0) & (ratio > 1.0 + clip_high)),
        clipfrac_low=frac((a < 0) & (ratio < 1.0 - clip_low)),
        dualclip_frac=frac(dual_active),  # verl's pg_clipfrac_lower
        ratio_mean=token_mean(ratio),
        ratio_max=xp.max(xp.where(m, ratio, -xp.inf)),
        ratio_min=xp.min(xp.where(m, ratio, xp.inf)),
        adv_mean=xp.mean(adv),
        adv_abs_mean=xp.mean(xp.abs(adv)),
        adv_max=xp.max(adv),
        adv_min=xp.min(adv),
        num_tokens=n_tokens,
    )
    if rollout is not None:
        d = old - rollout  # log pi_trainer(behaviour) - log pi_sampler, per token
        metrics.update(
            mismatch_abs=token_mean(xp.abs(d)), mismatch_kl=token_mean(xp.exp(d) - 1 - d)
        )
        if tis_cap:
            metrics.update(
                tis_weight_mean=token_mean(xp.minimum(xp.exp(d), tis_cap)),
                tis_capped_frac=frac(xp.exp(d) > tis_cap),
            )
    if entropy is not None:
        metrics.update(
            entropy_loss=aggregate(xp, entropy, mask, **agg_kw), entropy_mean=token_mean(entropy)
        )
    return loss, metrics
