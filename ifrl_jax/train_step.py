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
from ifrl_jax.models import ModelConfig, lora

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
    """Params, optimizer state and the update counter: a plain pytree.

    With LoRA (`models.lora`) only the adapters (and a classifier's head) train: `opt_state`
    and `master` cover those; the base weights in `params` pass through each update unchanged.
    When the trainable params are held in a 16-bit dtype (model.param_dtype="bfloat16"),
    `master` is their float32 copy: the optimizer updates it and `params` is its rounding, so
    updates below bf16's resolution accumulate instead of vanishing.
    """

    params: dict
    opt_state: optax.OptState
    step: Array  # [] int32, number of updates applied
    master: dict | None = None  # float32 copy of the trainable params, or None (they are fp32)


def trainable(model: ModelConfig | None, tree: dict) -> tuple[dict, dict]:
    """(trainable, frozen) parts of a param-shaped tree: everything trains without LoRA."""
    return (tree, {}) if model is None else lora.split(model, tree)


def needs_master(tree) -> bool:
    """Whether a float32 master copy is kept: some trainable param is not float32."""
    return any(x.dtype != jnp.float32 for x in jax.tree.leaves(tree))


def _as_f32(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), tree)


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
    """NamedShardings of a TrainState: Adam moments and the master copy are sharded like the
    (trainable) params they belong to."""
    param_sh = models.param_shardings(model, mesh, rules)
    train_sh, _ = trainable(model, param_sh)
    train_abs, _ = trainable(model, models.abstract_params(model))
    master = needs_master(train_abs)
    optimizer = make_optimizer(optim)
    abstract_opt = jax.eval_shape(optimizer.init, _as_f32(train_abs) if master else train_abs)
    rep = sharding.replicated(mesh)
    opt_sh = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, train_sh, transform_non_params=lambda _: rep
    )
    return TrainState(params=param_sh, opt_state=opt_sh, step=rep,
                      master=train_sh if master else None)  # fmt: skip


def init_state(
    params: dict, *, optim: OptimConfig, shardings: TrainState | None = None,
    model: ModelConfig | None = None,
) -> TrainState:  # fmt: skip
    """Wraps params into a TrainState with fresh optimizer state and step 0.

    Args:
      params: the params (their shardings are kept).
      optim: the optimizer config.
      shardings: `step_fn.state_shardings` to place the optimizer state like the params; None:
        default placement (single device).
      model: the params' config; needed with LoRA (only the adapters get optimizer state).
    """
    optimizer = make_optimizer(optim)

    def fn(p):
        train, _ = trainable(model, p)
        master = (
            jax.tree.map(lambda x: x.astype(jnp.float32), train) if needs_master(train) else None
        )
        opt_state = optimizer.init(train if master is None else master)
        return TrainState(params=p, opt_state=opt_state, step=jnp.zeros((), jnp.int32),
                          master=master)  # fmt: skip

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
    denominators_fn: Callable[[Batch], Any] | None = None, dropout_key: Array | None = None,
) -> tuple[Array, dict[str, Array], dict]:  # fmt: skip
    """Full-batch loss, aux and float32 gradients, accumulated over `micro_batches`.

    dropout_key: when given, the loss runs with it as the model's dropout rng (folded with the
    micro-batch index).

    Returns:
      (loss [], aux dict of scalars, grads with the params' structure in float32).
    """
    m = micro_batches
    check_micro_batches(jax.tree.leaves(batch)[0].shape[0], m)
    dens = denominators_fn(batch) if denominators_fn is not None else None

    def loss_of(p, b, i):
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
        with models.dropout_rng(key):
            return loss_fn(p, b, dens)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    f32 = lambda g: jax.tree.map(lambda x: x.astype(jnp.float32), g)
    if m == 1:
        (loss, aux), grads = grad_fn(params, batch, 0)
        return loss, aux, f32(grads)

    def body(carry, xs):
        loss_acc, aux_acc, g_acc = carry
        mb, i = xs
        (loss_i, aux_i), g = grad_fn(params, mb, i)
        g_acc = jax.tree.map(jnp.add, g_acc, f32(g))
        return (loss_acc + loss_i, merge_aux(aux_acc, aux_i), g_acc), None

    mbs = split_micro(batch, m)
    first = jax.tree.map(lambda x: x[0], mbs)
    aux_keys = jax.eval_shape(grad_fn, params, first, 0)[0][1]
    aux0 = {k: jnp.full((), _AUX_INIT.get(k[-4:], 0.0)) for k in aux_keys}
    g0 = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    xs = (mbs, jnp.arange(m))
    (loss, aux, grads), _ = jax.lax.scan(body, (jnp.zeros(()), aux0, g0), xs)
    return loss, aux, grads


# --------------------------------------------------------------------------------------------
# The update.
# --------------------------------------------------------------------------------------------


def update(
    state: TrainState, batch: Batch, *, loss_fn: LossFn, optim: OptimConfig,
    micro_batches: int = 1, denominators_fn: Callable[[Batch], Any] | None = None,
    model: ModelConfig | None = None,
) -> tuple[TrainState, dict]:  # fmt: skip
    """One optimizer update; a non-finite loss or gradient leaves the state unchanged.

    Gradients are taken of the trainable params only (with LoRA: the adapters; the frozen base
    is closed over). With `state.master`, the optimizer steps the float32 master and the params
    are its rounding. With model.lora_dropout, the loss runs with a dropout rng derived from
    the step (deterministic, so a resumed run draws the same masks).

    Returns:
      (new state, metrics: the loss's aux plus loss, grad_norm, lr, is_finite, step).
    """
    train, frozen = trainable(model, state.params)
    dropout = model is not None and model.lora_dropout > 0
    key = jax.random.fold_in(jax.random.key(0), state.step) if dropout else None
    loss, aux, grads = loss_and_grads(
        lambda p, b, d: loss_fn(lora.combine(p, frozen), b, d), train, batch,
        micro_batches=micro_batches, denominators_fn=denominators_fn, dropout_key=key,
    )  # fmt: skip
    grad_norm = optax.tree.norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    ref = train if state.master is None else state.master
    updates, opt_state = make_optimizer(optim).update(grads, state.opt_state, ref)
    new_ref = optax.apply_updates(ref, updates)
    new_train = jax.tree.map(lambda n, o: n.astype(o.dtype), new_ref, train)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, old)
    new = TrainState(
        params=lora.combine(keep(new_train, train), frozen),
        opt_state=keep(opt_state, state.opt_state),
        step=jnp.where(is_finite, state.step + 1, state.step),
        master=None if state.master is None else keep(new_ref, state.master),
    )  # fmt: skip
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
              denominators_fn=denominators_fn, model=model)  # fmt: skip

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
