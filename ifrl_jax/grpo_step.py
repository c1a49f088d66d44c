"""The GRPO update: the policy's log-probs and `grpo.policy_loss` as a `train_step` loss.

Data flow for one rollout batch (upstream: 384 prompts x 5 rollouts, 4 updates per batch):

    old_logp = logprob_fn(state.params, batch)       # once per rollout batch, reused over mu
    ref_logp = logprob_fn(ref_params, batch)         # only when kl_coef > 0
    for each mini-batch, mu times:
        state, metrics = step_fn(state, mini_batch)  # one optimizer update, micro-batched

Batch (a dict of [B, ...] arrays, rows ordered arbitrarily; B is split over (data, fsdp)):
    input_ids [B, T] int32      prompt + response, left-padded
    attention_mask [B, T] int32 1 on real tokens
    response_mask [B, T]        1 on the response tokens that are trained
    advantages [B] float32      `grpo.group_advantages` of the rows' rewards
    old_logp [B, T] float32     optional: absent means on-policy (ratio 1, one update per batch)
    ref_logp [B, T] float32     required iff kl_coef > 0
    rollout_logp [B, T] float32 optional: the sampler's log-probs (mismatch metrics, TIS)
Log-probs are aligned with `input_ids`: `logp[:, t] = log p(x_t | x_<t)` (0 at t = 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from ifrl_jax import grpo, models, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.models import ModelConfig

Array = jax.Array
Batch = Mapping[str, Array]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """`grpo.policy_loss`'s options; field names are the config.grpo keys. Hashable."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.01
    kl_estimator: str = "k3"
    agg: str = "token-mean"
    norm_len: int | None = None  # seq-mean-token-sum-norm normalizer; None = T of the batch
    entropy_coef: float = 0.0
    tis_cap: float | None = None  # truncated importance sampling cap C; None or 0: off


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the GRPO loss and log-prob functions need besides the params. Hashable."""

    model: ModelConfig
    loss: LossConfig = LossConfig()
    compute_entropy: bool = True  # the entropy metric (chunked, no [B, T, V] materialized)
    # The sampler's temperature: log-probs (old, reference, current) are those of
    # softmax(logits / temperature), the distribution that was sampled (0 = greedy: 1).
    temperature: float = 1.0
    micro_batches: int = 1  # gradient accumulation steps per optimizer update
    logprob_chunk_size: int | None = None  # positions per chunk; None: balanced, <=1 GiB
    # Log-probs (and the LM head) only for the last `response_len` positions of each row (the
    # rollout's responses; prompt positions get 0, which response_mask excludes anyway).
    # None: every position.
    response_len: int | None = None

    def replace(self, **kw) -> StepConfig:
        return dataclasses.replace(self, **kw)


def logprob_chunk_size(cfg: StepConfig, b: int, t: int) -> int:
    """Positions per log-prob chunk: the configured one, else `models.balanced_chunk`."""
    return cfg.logprob_chunk_size or models.balanced_chunk(b, t, cfg.model.vocab_size)


def sequence_logprobs(
    params: dict, batch: Batch, *, cfg: StepConfig, with_entropy: bool = False
) -> Array | tuple[Array, Array]:
    """Per-token log-probs [B, T] (and entropies [B, T]) via the chunked log-prob path; with
    cfg.response_len, only the last response_len positions (0 before them)."""
    b, t = batch["input_ids"].shape
    first = t - cfg.response_len if cfg.response_len else 1
    if first < 1:
        raise ValueError(f"response_len={cfg.response_len} leaves no prompt in rows of {t}")
    return models.sequence_logprobs(
        cfg.model, params, batch["input_ids"], batch["attention_mask"], first=first,
        chunk_size=logprob_chunk_size(cfg, b, t - first), with_entropy=with_entropy,
        temperature=cfg.temperature or 1.0,
    )  # fmt: skip


def compute_logprobs(params: dict, batch: Batch, *, cfg: StepConfig) -> Array:
    """Log-probs [B, T] float32 of `batch` (input_ids, attention_mask) under `params`, no
    gradient; micro-batch by micro-batch (`cfg.micro_batches`) to bound activation memory."""
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    m = cfg.micro_batches
    ts.check_micro_batches(batch["input_ids"].shape[0], m)
    fn = lambda mb: sequence_logprobs(params, mb, cfg=cfg)
    if m == 1:
        return fn(batch)
    return ts.unsplit_micro(jax.lax.map(fn, ts.split_micro(batch, m)))


def denominators(batch: Batch, *, cfg: StepConfig) -> dict[str, Array]:
    """The full mini-batch's `grpo.loss_denominators` (computed once, before micro-batching)."""
    mask = batch["response_mask"].astype(jnp.float32)
    return grpo.loss_denominators(mask, agg=cfg.loss.agg, norm_len=cfg.loss.norm_len)


def loss(
    params: dict, batch: Batch, dens: Mapping[str, Array] | None, *, cfg: StepConfig
) -> tuple[Array, dict[str, Array]]:
    """The GRPO loss of one (micro-)batch, normalized by the full batch's denominators.

    Returns:
      (loss [], aux) as in `grpo.policy_loss`, plus num_tokens (the trained tokens).
    """
    kl_coef = cfg.loss.kl_coef
    if kl_coef != 0.0 and "ref_logp" not in batch:
        raise ValueError("kl_coef != 0 needs batch['ref_logp'] (from compute_logprobs)")
    out = sequence_logprobs(params, batch, cfg=cfg, with_entropy=cfg.compute_entropy)
    logp, entropy = out if cfg.compute_entropy else (out, None)
    mask = batch["response_mask"].astype(jnp.float32)
    value, aux = grpo.policy_loss(
        logp, batch.get("old_logp"), batch.get("ref_logp") if kl_coef != 0.0 else None,
        batch["advantages"], mask, entropy=entropy, denominators=dens,
        rollout_logp=batch.get("rollout_logp"), **dataclasses.asdict(cfg.loss),
    )  # fmt: skip
    return value, {**aux, "num_tokens": jnp.sum(mask)}


def make_step(
    cfg: StepConfig, optim: ts.OptimConfig, mesh: Mesh, rules: str | sharding.Rules, *,
    check_finite: bool = True,
) -> Callable[[ts.TrainState, Batch], tuple[ts.TrainState, dict]]:  # fmt: skip
    """The jitted, sharded, donated GRPO update (`train_step.make_update` of `loss`)."""
    return ts.make_update(
        lambda p, b, d: loss(p, b, d, cfg=cfg), model=cfg.model, optim=optim, mesh=mesh,
        rules=rules, micro_batches=cfg.micro_batches,
        denominators_fn=lambda b: denominators(b, cfg=cfg), check_finite=check_finite,
    )  # fmt: skip


def make_logprob_fn(
    cfg: StepConfig, mesh: Mesh, rules: str | sharding.Rules
) -> Callable[[dict, Batch], Array]:
    """Jits `compute_logprobs` (old and reference log-probs share one compiled program).

    Returns:
      logprob_fn(params, batch) -> [B, T] float32, B split over (data, fsdp).
    """
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    param_sh = models.param_shardings(cfg.model, mesh, rules)

    def fn(params, batch):
        with sharding.activation_sharding(mesh, rules):
            return compute_logprobs(params, batch, cfg=cfg)

    data = sharding.data_sharding(mesh)
    jitted = jax.jit(fn, in_shardings=(param_sh, data), out_shardings=data)
    return lambda params, batch: jitted(
        params, {k: batch[k] for k in ("input_ids", "attention_mask")}
    )
