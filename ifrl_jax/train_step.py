"""The sharded GRPO train step: TrainState, optimizer, one jitted update, jitted log-probs.

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
Log-probs are aligned with `input_ids`: `logp[:, t] = log p(x_t | x_<t)` (0 at t = 0).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from ifrl_jax import grpo, models, sharding
from ifrl_jax.models import ModelConfig

Array = jax.Array
Batch = Mapping[str, Array]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything the train step needs; hashable (a static jit argument). Defaults: upstream."""

    model: ModelConfig
    # Loss (see grpo.policy_loss).
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    kl_coef: float = 0.01
    kl_estimator: str = "k3"
    agg: str = "token-mean"
    norm_len: int | None = None  # seq-mean-token-sum-norm normalizer; None = T of the batch
    entropy_coef: float = 0.0
    compute_entropy: bool = True  # the entropy metric (chunked, no [B, T, V] materialized)
    # Optimizer (see make_optimizer).
    learning_rate: float = 1e-6
    schedule: str = "constant"  # key of SCHEDULES
    warmup_steps: int = 0
    total_steps: int = 0  # cosine: decay horizon (including warmup)
    min_lr_ratio: float = 0.0  # cosine: final lr / peak lr
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Memory.
    micro_batches: int = 1  # gradient accumulation steps per optimizer update
    logprob_chunk_size: int | None = None  # positions per chunk; None: balanced, <=1 GiB
    # Log-probs (and the LM head) only for the last `response_len` positions of each row (the
    # rollout's responses; prompt positions get 0, which response_mask excludes anyway).
    # None: every position.
    response_len: int | None = None

    def replace(self, **kw) -> TrainConfig:
        return dataclasses.replace(self, **kw)

    def loss_kwargs(self) -> dict:
        """The keyword arguments of `grpo.policy_loss`."""
        return dict(
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            dual_clip=self.dual_clip,
            kl_coef=self.kl_coef,
            kl_estimator=self.kl_estimator,
            agg=self.agg,
            norm_len=self.norm_len,
            entropy_coef=self.entropy_coef,
        )


@flax.struct.dataclass
class TrainState:
    """Params, optimizer state and the update counter: a plain pytree."""

    params: dict
    opt_state: optax.OptState
    step: Array  # [] int32, number of updates applied


class NonFiniteLossError(FloatingPointError):
    """A step produced a non-finite loss or gradient; `state` is the unchanged input state."""

    def __init__(self, step: int, state: TrainState, metrics: dict):
        super().__init__(
            f"non-finite loss/gradient at step {step} (loss={metrics.get('loss')}, "
            f"grad_norm={metrics.get('grad_norm')}); the update was not applied"
        )
        self.step, self.state, self.metrics = step, state, metrics


# --------------------------------------------------------------------------------------------
# Optimizer.
# --------------------------------------------------------------------------------------------


def _constant(cfg: TrainConfig) -> optax.Schedule:
    return optax.constant_schedule(cfg.learning_rate)


def _warmup(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 over warmup_steps, then constant (verl's lr_warmup_steps)."""
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1)),
            optax.constant_schedule(cfg.learning_rate),
        ],
        [max(cfg.warmup_steps, 1)],
    )


def _cosine(cfg: TrainConfig) -> optax.Schedule:
    if cfg.total_steps <= cfg.warmup_steps:
        raise ValueError(
            f"schedule='cosine' needs total_steps > warmup_steps, got {cfg.total_steps} <= "
            f"{cfg.warmup_steps}; set config.total_steps"
        )
    return optax.warmup_cosine_decay_schedule(
        0.0 if cfg.warmup_steps else cfg.learning_rate,
        cfg.learning_rate,
        cfg.warmup_steps,
        cfg.total_steps,
        end_value=cfg.learning_rate * cfg.min_lr_ratio,
    )


SCHEDULES: dict[str, Callable[[TrainConfig], optax.Schedule]] = {
    "constant": _constant,
    "warmup": _warmup,
    "cosine": _cosine,
}


def make_schedule(cfg: TrainConfig) -> optax.Schedule:
    """The learning-rate schedule named by `cfg.schedule` (a key of `SCHEDULES`)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {cfg.schedule!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[cfg.schedule](cfg)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decay on every param, as torch.optim.AdamW upstream).

    Args:
      cfg: learning_rate, schedule, warmup_steps, total_steps, b1, b2, eps, weight_decay,
        grad_clip.

    Returns:
      An optax transformation.
    """
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(
            make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
        ),
    )


def init_state(
    params: dict, *, cfg: TrainConfig, shardings: TrainState | None = None
) -> TrainState:
    """Wraps params into a TrainState with fresh optimizer state and step 0.

    Args:
      params: the policy params (their shardings are kept).
      cfg: the train config (optimizer).
      shardings: `state_shardings(...)` (or `step_fn.state_shardings`) to place the optimizer
        state like the params; None: default placement (single device).

    Returns:
      TrainState.
    """
    optimizer = make_optimizer(cfg)
    fn = lambda p: TrainState(params=p, opt_state=optimizer.init(p), step=jnp.zeros((), jnp.int32))
    if shardings is None:
        return jax.jit(fn)(params)
    return jax.jit(fn, in_shardings=(shardings.params,), out_shardings=shardings)(params)


# --------------------------------------------------------------------------------------------
# Log-probs and the loss.
# --------------------------------------------------------------------------------------------


def logprob_chunk_size(cfg: TrainConfig, b: int, t: int) -> int:
    """Positions per log-prob chunk: the configured one, else `models.balanced_chunk`."""
    return cfg.logprob_chunk_size or models.balanced_chunk(b, t, cfg.model.vocab_size)


def sequence_logprobs(
    params: dict, batch: Batch, *, cfg: TrainConfig, with_entropy: bool = False
) -> Array | tuple[Array, Array]:
    """Per-token log-probs [B, T] (and entropies [B, T]) via the chunked log-prob path; with
    cfg.response_len, only the last response_len positions (0 before them)."""
    b, t = batch["input_ids"].shape
    first = t - cfg.response_len if cfg.response_len else 1
    if first < 1:
        raise ValueError(f"response_len={cfg.response_len} leaves no prompt in rows of {t}")
    return models.sequence_logprobs(
        cfg.model,
        params,
        batch["input_ids"],
        batch["attention_mask"],
        first=first,
        chunk_size=logprob_chunk_size(cfg, b, t - first),
        with_entropy=with_entropy,
    )


def _split(batch: Batch, m: int) -> dict[str, Array]:
    """[B, ...] -> [m, B/m, ...] taking rows strided (micro-batch j = rows j, j+m, ...).

    Strided, so each micro-batch keeps rows on every data-parallel device (B is split over
    devices in contiguous blocks); any row partition gives the same loss (global denominators).
    """

    def one(x):
        b = x.shape[0]
        return jnp.swapaxes(x.reshape(b // m, m, *x.shape[1:]), 0, 1)

    return {k: one(v) for k, v in batch.items()}


def _unsplit(x: Array) -> Array:
    """Inverse of `_split` for one [m, B/m, ...] array."""
    m, bm = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape(m * bm, *x.shape[2:])


def _check_micro_batches(b: int, m: int) -> None:
    if m < 1 or b % m:
        raise ValueError(f"config.micro_batches={m} must divide the mini-batch size {b}")


def compute_logprobs(params: dict, batch: Batch, *, cfg: TrainConfig) -> Array:
    """Log-probs [B, T] of `batch` under `params` (old or reference policy), no gradient.

    Runs micro-batch by micro-batch (`cfg.micro_batches`) to bound activation memory.

    Args:
      params: policy or reference params.
      batch: needs input_ids and attention_mask [B, T].

    Returns:
      [B, T] float32, aligned with input_ids.
    """
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    m = cfg.micro_batches
    _check_micro_batches(batch["input_ids"].shape[0], m)
    fn = lambda mb: sequence_logprobs(params, mb, cfg=cfg)
    if m == 1:
        return fn(batch)
    return _unsplit(jax.lax.map(fn, _split(batch, m)))


def grpo_loss(
    params: dict,
    batch: Batch,
    *,
    cfg: TrainConfig,
    denominators: Mapping[str, Array] | None = None,
) -> tuple[Array, dict[str, Array]]:
    """The GRPO loss of one (micro-)batch, normalized by the full batch's denominators.

    Args:
      params: policy params.
      batch: see the module docstring ([b, T] arrays, [b] advantages).
      cfg: the train config (loss fields, log-prob chunking).
      denominators: `grpo.loss_denominators` of the whole mini-batch; None: this batch's.

    Returns:
      (loss [], aux) as in `grpo.policy_loss`; summing over micro-batches gives the full loss.
    """
    out = sequence_logprobs(params, batch, cfg=cfg, with_entropy=cfg.compute_entropy)
    logp, entropy = out if cfg.compute_entropy else (out, None)
    ref = batch.get("ref_logp") if cfg.kl_coef != 0.0 else None
    return grpo.policy_loss(
        logp,
        batch.get("old_logp"),
        ref,
        batch["advantages"],
        batch["response_mask"],
        entropy=entropy,
        denominators=denominators,
        **cfg.loss_kwargs(),
    )


# --------------------------------------------------------------------------------------------
# The train step.
# --------------------------------------------------------------------------------------------


def loss_and_grads(
    params: dict, batch: Batch, *, cfg: TrainConfig
) -> tuple[Array, dict[str, Array], dict]:
    """Full-batch loss, aux and float32 gradients, accumulated over `cfg.micro_batches`.

    Each micro-batch contributes numerator / full-batch denominator, so the sum over
    micro-batches equals the full-batch loss and gradient for every aggregation.

    Args:
      params: policy params.
      batch: see the module docstring; B divisible by cfg.micro_batches.

    Returns:
      (loss [], aux dict of scalars, grads with the params' structure in float32).
    """
    if cfg.kl_coef != 0.0 and "ref_logp" not in batch:
        raise ValueError("kl_coef != 0 needs batch['ref_logp'] (from compute_logprobs)")
    m = cfg.micro_batches
    _check_micro_batches(batch["input_ids"].shape[0], m)
    batch = dict(batch)
    batch["response_mask"] = batch["response_mask"].astype(jnp.float32)
    dens = grpo.loss_denominators(batch["response_mask"], agg=cfg.agg, norm_len=cfg.norm_len)
    grad_fn = jax.value_and_grad(functools.partial(grpo_loss, cfg=cfg), has_aux=True)
    f32_grads = lambda g: jax.tree.map(lambda x: x.astype(jnp.float32), g)
    if m == 1:
        (loss, aux), grads = grad_fn(params, batch, denominators=dens)
        return loss, aux, f32_grads(grads)

    def body(carry, mb):
        loss_acc, aux_acc, g_acc = carry
        (loss_i, aux_i), g = grad_fn(params, mb, denominators=dens)
        g_acc = jax.tree.map(jnp.add, g_acc, f32_grads(g))
        return (loss_acc + loss_i, grpo.merge_aux(aux_acc, aux_i), g_acc), None

    mbs = _split(batch, m)
    first = jax.tree.map(lambda x: x[0], mbs)
    aux_keys = jax.eval_shape(lambda p, b: grad_fn(p, b, denominators=dens), params, first)[0][1]
    aux0 = {k: jnp.full((), _AUX_INIT.get(k[-4:], 0.0)) for k in aux_keys}
    g0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    (loss, aux, grads), _ = jax.lax.scan(body, (jnp.zeros(()), aux0, g0), mbs)
    return loss, aux, grads


_AUX_INIT = {"_max": -jnp.inf, "_min": jnp.inf}  # identities of merge_aux's max/min keys


def train_step(state: TrainState, batch: Batch, *, cfg: TrainConfig) -> tuple[TrainState, dict]:
    """One optimizer update over a mini-batch, accumulating gradients over micro-batches.

    A non-finite loss or gradient norm leaves the state unchanged and sets
    `metrics["is_finite"] = False` (the host wrapper of `make_train_step` raises).

    Args:
      state: TrainState.
      batch: see the module docstring; B divisible by cfg.micro_batches.

    Returns:
      (new state, metrics dict of scalars).
    """
    loss, aux, grads = loss_and_grads(state.params, batch, cfg=cfg)
    params = state.params
    grad_norm = optax.tree.norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    optimizer = make_optimizer(cfg)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    new = TrainState(
        params=optax.apply_updates(params, updates), opt_state=opt_state, step=state.step + 1
    )
    new = jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, state)
    metrics = dict(
        aux,
        loss=loss,
        grad_norm=grad_norm,
        lr=make_schedule(cfg)(state.step),
        is_finite=is_finite,
        step=state.step,
        num_tokens=jnp.sum(batch["response_mask"].astype(jnp.float32)),
    )
    return new, metrics


# --------------------------------------------------------------------------------------------
# Jitting with explicit shardings.
# --------------------------------------------------------------------------------------------


def state_shardings(cfg: TrainConfig, mesh: Mesh, rules: str | sharding.Rules):
    """NamedShardings of a TrainState: param shardings for params and Adam moments."""
    param_sh = models.param_shardings(cfg.model, mesh, rules)
    optimizer = make_optimizer(cfg)
    abstract_opt = jax.eval_shape(optimizer.init, models.abstract_params(cfg.model))
    rep = sharding.replicated(mesh)
    opt_sh = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, param_sh, transform_non_params=lambda _: rep
    )
    return TrainState(params=param_sh, opt_state=opt_sh, step=rep)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """One sharding for every [B, ...] batch array (a pytree prefix): B over (data, fsdp)."""
    return sharding.data_sharding(mesh)


def make_train_step(
    cfg: TrainConfig, mesh: Mesh, rules: str | sharding.Rules, *, check_finite: bool = True
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
    """Jits `train_step` once with explicit shardings and the state donated.

    Args:
      cfg: the train config (static).
      mesh: the device mesh; rules: a sharding preset name or rules table.
      check_finite: raise `NonFiniteLossError` (carrying the unchanged state) after a
        non-finite step; this reads one scalar per step on the host.

    Returns:
      step_fn(state, batch) -> (state, metrics); `step_fn.jitted` is the jitted function.
      The input state is donated: use only the returned one.
    """
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    state_sh = state_shardings(cfg, mesh, rules)

    def fn(state, batch):
        with sharding.activation_sharding(mesh, rules):  # tracing happens inside
            return train_step(state, batch, cfg=cfg)

    jitted = jax.jit(
        fn,
        in_shardings=(state_sh, batch_sharding(mesh)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )

    def step_fn(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        state, metrics = jitted(state, batch)
        if check_finite and not bool(metrics["is_finite"]):
            raise NonFiniteLossError(int(metrics["step"]), state, metrics)
        return state, metrics

    step_fn.jitted = jitted
    step_fn.state_shardings = state_sh
    return step_fn


def make_logprob_fn(
    cfg: TrainConfig, mesh: Mesh, rules: str | sharding.Rules
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

    jitted = jax.jit(
        fn, in_shardings=(param_sh, batch_sharding(mesh)), out_shardings=batch_sharding(mesh)
    )
    return lambda params, batch: jitted(
        params, {k: batch[k] for k in ("input_ids", "attention_mask")}
    )
