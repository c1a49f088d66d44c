"""The one training stack: optimizer, TrainState, and one sharded, donated, jitted update.

SFT (`sft.loss`), the reward model (`reward_model.loss`) and GRPO (`grpo_step.loss`) are loss
functions; `make_update` turns any of them into a step function:

    step_fn = make_update(loss_fn, model=cfg, optim=OptimConfig(...), mesh=mesh, rules=rules,
                          denominators_fn=den_fn, micro_batches=4)
    state = init_state(params, optim=optim, shardings=step_fn.state_shardings)
    state, metrics = step_fn(state, batch)   # batch: dict of [B, ...] arrays

Loss contract (what makes micro-batching exact): `loss_fn(params, batch, denominators)` returns
`(loss, aux)` where `loss` and every aux scalar are *sums over rows divided by full-batch
denominators* (`denominators_fn(batch)`, computed once on the whole mini-batch). Summing them
over any split of the rows gives the full-batch values; aux keys ending in `_max`/`_min` merge
by max/min instead. Micro-batch j takes rows j, j + m, ... (strided, so each keeps rows on every
data-parallel device).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ifrl_jax import models, sharding
from ifrl_jax.models import ModelConfig

Array = jax.Array
Batch = Mapping[str, Array]
LossFn = Callable[[dict, Batch, Any], tuple[Array, dict[str, Array]]]


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Global-norm clipping then AdamW under a learning-rate schedule. Hashable."""

    learning_rate: float = 1e-6
    schedule: str = "constant"  # key of SCHEDULES
    warmup_steps: int = 0  # linear warmup from 0 (every schedule)
    total_steps: int = 0  # cosine: decay horizon (including warmup)
    min_lr_ratio: float = 0.0  # cosine: final lr / peak lr
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01  # on every parameter, as torch.optim.AdamW upstream
    grad_clip: float = 1.0

    def replace(self, **kw) -> OptimConfig:
        return dataclasses.replace(self, **kw)


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


def _constant(c: OptimConfig) -> optax.Schedule:
    """Linear warmup from 0 over warmup_steps (none if 0), then constant."""
    if not c.warmup_steps:
        return optax.constant_schedule(c.learning_rate)
    return optax.warmup_constant_schedule(0.0, c.learning_rate, c.warmup_steps)


def _cosine(c: OptimConfig) -> optax.Schedule:
    if c.total_steps <= c.warmup_steps:
        raise ValueError(
            f"schedule='cosine' needs total_steps > warmup_steps, got {c.total_steps} <= "
            f"{c.warmup_steps}"
        )
    return optax.warmup_cosine_decay_schedule(
        0.0 if c.warmup_steps else c.learning_rate,
        c.learning_rate,
        c.warmup_steps,
        c.total_steps,
        end_value=c.learning_rate * c.min_lr_ratio,
    )


SCHEDULES: dict[str, Callable[[OptimConfig], optax.Schedule]] = {
    "constant": _constant,
    "warmup": _constant,  # the name verl's configs use for warmup-then-constant
    "cosine": _cosine,
}


def make_schedule(c: OptimConfig) -> optax.Schedule:
    """The learning-rate schedule named by `c.schedule` (a key of `SCHEDULES`)."""
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {c.schedule!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[c.schedule](c)


def make_optimizer(c: OptimConfig) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decay on every param, as torch.optim.AdamW upstream)."""
    return optax.chain(
        optax.clip_by_global_norm(c.grad_clip),
        optax.adamw(make_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay),
    )


def state_shardings(
    model: ModelConfig, optim: OptimConfig, mesh: Mesh, rules: str | sharding.Rules
) -> TrainState:
    """NamedShardings of a TrainState: the params' shardings for params and Adam moments."""
    param_sh = models.param_shardings(model, mesh, rules)
    optimizer = make_optimizer(optim)
    abstract_opt = jax.eval_shape(optimizer.init, models.abstract_params(model))
    rep = sharding.replicated(mesh)
    opt_sh = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, param_sh, transform_non_params=lambda _: rep
    )
    return TrainState(params=param_sh, opt_state=opt_sh, step=rep)


def init_state(
    params: dict, *, optim: OptimConfig, shardings: TrainState | None = None
) -> TrainState:
    """Wraps params into a TrainState with fresh optimizer state and step 0.

    Args:
      params: the params (their shardings are kept).
      optim: the optimizer config.
      shardings: `step_fn.state_shardings` to place the optimizer state like the params; None:
        default placement (single device).
    """
    optimizer = make_optimizer(optim)
    fn = lambda p: TrainState(params=p, opt_state=optimizer.init(p), step=jnp.zeros((), jnp.int32))
    if shardings is None:
        return jax.jit(fn)(params)
    return jax.jit(fn, in_shardings=(shardings.params,), out_shardings=shardings)(params)


# --------------------------------------------------------------------------------------------
# Micro-batching.
# --------------------------------------------------------------------------------------------


def split_micro(batch: Batch, m: int) -> dict[str, Array]:
    """[B, ...] -> [m, B/m, ...] taking rows strided (micro-batch j = rows j, j+m, ...)."""

    def one(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)

    return {k: one(v) for k, v in batch.items()}


def unsplit_micro(x: Array) -> Array:
    """Inverse of `split_micro` for one [m, B/m, ...] array."""
    m, bm = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape(m * bm, *x.shape[2:])


def check_micro_batches(b: int, m: int) -> None:
    if m < 1 or b % m:
        raise ValueError(f"micro_batches={m} must divide the mini-batch size {b}")


def merge_aux(a: Mapping[str, Array], b: Mapping[str, Array]) -> dict[str, Array]:
    """Combines two micro-batches' aux scalars: max/min for `*_max`/`*_min`, else sum."""
    merge = {"_max": jnp.maximum, "_min": jnp.minimum}
    return {k: merge.get(k[-4:], jnp.add)(a[k], b[k]) for k in a}


_AUX_INIT = {"_max": -jnp.inf, "_min": jnp.inf}  # identities of merge_aux's max/min keys


def loss_and_grads(
    loss_fn: LossFn, params: dict, batch: Batch, *, micro_batches: int = 1,
    denominators_fn: Callable[[Batch], Any] | None = None,
) -> tuple[Array, dict[str, Array], dict]:  # fmt: skip
    """Full-batch loss, aux and float32 gradients, accumulated over `micro_batches`.

    Returns:
      (loss [], aux dict of scalars, grads with the params' structure in float32).
    """
    m = micro_batches
    check_micro_batches(jax.tree.leaves(batch)[0].shape[0], m)
    dens = denominators_fn(batch) if denominators_fn is not None else None
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, dens), has_aux=True)
    f32 = lambda g: jax.tree.map(lambda x: x.astype(jnp.float32), g)
    if m == 1:
        (loss, aux), grads = grad_fn(params, batch)
        return loss, aux, f32(grads)

    def body(carry, mb):
        loss_acc, aux_acc, g_acc = carry
        (loss_i, aux_i), g = grad_fn(params, mb)
        g_acc = jax.tree.map(jnp.add, g_acc, f32(g))
        return (loss_acc + loss_i, merge_aux(aux_acc, aux_i), g_acc), None

    mbs = split_micro(batch, m)
    first = jax.tree.map(lambda x: x[0], mbs)
    aux_keys = jax.eval_shape(grad_fn, params, first)[0][1]
    aux0 = {k: jnp.full((), _AUX_INIT.get(k[-4:], 0.0)) for k in aux_keys}
    g0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    (loss, aux, grads), _ = jax.lax.scan(body, (jnp.zeros(()), aux0, g0), mbs)
    return loss, aux, grads


# --------------------------------------------------------------------------------------------
# The update.
# --------------------------------------------------------------------------------------------


def update(
    state: TrainState, batch: Batch, *, loss_fn: LossFn, optim: OptimConfig,
    micro_batches: int = 1, denominators_fn: Callable[[Batch], Any] | None = None,
) -> tuple[TrainState, dict]:  # fmt: skip
    """One optimizer update; a non-finite loss or gradient leaves the state unchanged.

    Returns:
      (new state, metrics: the loss's aux plus loss, grad_norm, lr, is_finite, step).
    """
    loss, aux, grads = loss_and_grads(
        loss_fn, state.params, batch, micro_batches=micro_batches, denominators_fn=denominators_fn
    )
    grad_norm = optax.tree.norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = make_optimizer(optim).update(grads, state.opt_state, state.params)
    new = TrainState(
        params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1
    )
    new = jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, state)
    metrics = dict(
        aux, loss=loss, grad_norm=grad_norm, lr=make_schedule(optim)(state.step),
        is_finite=is_finite, step=state.step,
    )  # fmt: skip
    return new, metrics


def make_update(
    loss_fn: LossFn, *, model: ModelConfig, optim: OptimConfig, mesh: Mesh,
    rules: str | sharding.Rules, micro_batches: int = 1,
    denominators_fn: Callable[[Batch], Any] | None = None, check_finite: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:  # fmt: skip
    """Jits `update` once with explicit shardings (batch rows over data x fsdp), state donated.

    Args:
      loss_fn: `(params, batch, denominators) -> (loss, aux)` (the module docstring's contract).
      model: the params' model config (their shardings); optim: the optimizer.
      mesh, rules: the device mesh and a sharding preset name or rules table.
      micro_batches: gradient accumulation steps per update; denominators_fn: the full batch's
        denominators for loss_fn (None: loss_fn gets None; then micro_batches must be 1 for
        an exact full-batch gradient).
      check_finite: raise `NonFiniteLossError` (carrying the unchanged state) after a
        non-finite step; this reads one scalar per step on the host.

    Returns:
      step_fn(state, batch) -> (state, metrics); `step_fn.jitted` is the jitted function and
      `step_fn.state_shardings` places a state. The input state is donated.
    """
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    state_sh = state_shardings(model, optim, mesh, rules)
    kw = dict(loss_fn=loss_fn, optim=optim, micro_batches=micro_batches,
              denominators_fn=denominators_fn)  # fmt: skip

    def fn(state, batch):
        with sharding.activation_sharding(mesh, rules):  # tracing happens inside
            return update(state, batch, **kw)

    jitted = jax.jit(
        fn,
        in_shardings=(state_sh, sharding.data_sharding(mesh)),
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
