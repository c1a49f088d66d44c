"""Device mesh, logical-axis rule presets, and sharding constraints that always take effect.

Model code names logical axes only (params: `vocab`, `embed`, `q_heads`, `kv_heads`,
`head_dim`, `mlp`, `layers`; activations: `act_batch`, `act_seq`, `act_embed`, `act_heads`,
`act_vocab`). A rules preset maps each logical axis to mesh axes (`data`, `fsdp`, `tp`) or to
None (replicated). Swapping FSDP for TP is choosing another preset; model code never changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifrl_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tp")
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

_BATCH = ("data", "fsdp")  # activations' batch dim is split over every data-parallel axis


def _rules(**kw) -> Rules:
    base = {
        "vocab": None,
        "embed": None,
        "q_heads": None,
        "kv_heads": None,
        "head_dim": None,
        "mlp": None,
        "layers": None,
        "labels": None,
        "lora": None,  # a LoRA adapter's rank axis (its other axis follows the base weight's)
        "act_batch": _BATCH,
        "act_seq": None,
        "act_embed": None,
        "act_heads": None,
        "act_kv_heads": None,
        "act_mlp": None,
        "act_vocab": None,
    }
    base.update(kw)
    return tuple(base.items())


_TP = dict.fromkeys(
    ("q_heads", "kv_heads", "mlp", "vocab", "act_heads", "act_kv_heads", "act_mlp", "act_vocab"),
    "tp",
)  # heads, MLP and vocab split over `tp`, the activations that carry them too

RULES: dict[str, Rules] = {
    # Everything replicated; batch split over data+fsdp (plain data parallelism).
    "replicated": _rules(),
    # ZeRO-3 style: every weight split along the model dim over `fsdp`.
    "fsdp": _rules(embed="fsdp"),
    # Megatron style: heads, MLP and vocab split over `tp`, activations follow.
    "tp": _rules(**_TP),
    # 2-D: weights over fsdp along the model dim and over tp along heads/mlp/vocab.
    "fsdp_tp": _rules(embed="fsdp", **_TP),
}


def get_rules(preset: str, *, flag: str = "config.sharding") -> Rules:
    """Returns the rules table of a named preset; an unknown name is a UserError naming `flag`."""
    if preset not in RULES:
        raise UserError(
            f"unknown sharding preset {preset!r} (flag --{flag}); known: {sorted(RULES)}"
        )
    return RULES[preset]


_MESH_EXAMPLE = "use axis:size pairs such as data:1,fsdp:-1,tp:1"


def parse_mesh(spec: str, *, flag: str) -> dict[str, int]:
    """Parses a mesh flag, "fsdp:8" or "data:1,fsdp:-1,tp:2", into {axis: size}.

    The one mesh syntax of every launcher; `make_mesh` takes the result.

    Args:
      spec: comma-separated axis:size pairs over the axes data, fsdp, tp (absent axes are 1;
        one size may be -1 = the remaining devices).
      flag: the flag named in errors, without dashes (e.g. "mesh").
    Returns:
      {axis: size} for the axes given.
    Raises:
      UserError: naming `--flag` and the value, e.g. for "fsdp=2" or an unknown axis.
    """
    if not spec or not spec.strip():
        raise UserError(f"--{flag} is empty; {_MESH_EXAMPLE}")
    bad = f"--{flag}={spec!r}:"
    out: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, size = part.strip().partition(":")
        name = name.strip()
        if not sep:
            raise UserError(f"{bad} {part.strip()!r} is not axis:size; {_MESH_EXAMPLE}")
        if name not in MESH_AXES:
            raise UserError(f"{bad} unknown axis {name!r}; use {', '.join(MESH_AXES)}")
        if name in out:
            raise UserError(f"{bad} axis {name!r} is given twice")
        try:
            out[name] = int(size)
        except ValueError:
            raise UserError(f"{bad} size {size!r} of {name!r} is not an integer") from None
        if out[name] == 0 or out[name] < -1:
            raise UserError(f"{bad} sizes must be positive (or -1 = the remaining devices)")
    if list(out.values()).count(-1) > 1:
        raise UserError(f"{bad} at most one axis may be -1")
    return out


def _show_mesh(sizes: Sequence[int], flag: str) -> str:
    """A mesh shape as the user wrote it: axis:size pairs for a flag, a dict for a config key."""
    if flag.startswith("config."):
        return str(dict(zip(MESH_AXES, sizes)))
    return ",".join(f"{a}:{n}" for a, n in zip(MESH_AXES, sizes))


def make_mesh(
    shape: Mapping[str, int], *, devices: Sequence[jax.Device] | None = None, flag: str = "mesh"
) -> Mesh:
    """Builds a (data, fsdp, tp) mesh; one entry may be -1 (= the remaining devices).

    Args:
      shape: sizes by axis name, e.g. {"data": 1, "fsdp": -1, "tp": 2}; absent axes are 1.
      devices: defaults to jax.devices().
      flag: the flag/config key named in errors.
    Returns:
      A Mesh with axes ("data", "fsdp", "tp").
    Raises:
      UserError: a shape that does not fit the devices (the message names `--flag`).
    """
    devices = list(jax.devices() if devices is None else devices)
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise UserError(f"--{flag}: unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    show = lambda sz: _show_mesh(sz, flag)
    if sizes.count(-1) > 1:
        raise UserError(f"--{flag}={show(sizes)}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise UserError(f"--{flag}={show(sizes)}: sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise UserError(
                f"--{flag}={show(sizes)}: the fixed axes multiply to {known}, which does not "
                f"divide the {len(devices)} devices"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise UserError(
            f"--{flag}={show(sizes)} needs {math.prod(sizes)} devices, "
            f"but {len(devices)} are available"
        )
    try:
        auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)  # GSPMD propagation + constraints
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)
    except Exception:
        return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], rules: Rules) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec under `rules` (each mesh axis used once)."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in axes:
        target = table.get(name) if name is not None else None
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; rules know {sorted(table)}")
        names = (target,) if isinstance(target, str) else tuple(target or ())
        names = tuple(n for n in names if n not in used)
        used.update(names)
        out.append(names[0] if len(names) == 1 else (names or None))
    return PartitionSpec(*out)


def _check_divisible(shape, spec: PartitionSpec, mesh: Mesh, what: str, flag: str) -> None:
    for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        n = math.prod(mesh.shape[a] for a in axes)
        if size % n:
            raise UserError(
                f"{what}: dimension {dim} has size {size}, which mesh axes {axes} (size {n}) do "
                f"not divide; choose another --{flag} preset or mesh shape"
            )


def with_shardings(abstract, shardings):
    """ShapeDtypeStructs of `abstract` carrying the matching leaves of `shardings`."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def param_logical_axes(boxed_abstract) -> object:
    """Logical axis names for every leaf of an (abstract) boxed param tree."""
    return nn.get_partition_spec(boxed_abstract)


def shardings_from_logical(
    logical, shapes, mesh: Mesh, rules: Rules, *, flag: str = "config.sharding"
):
    """NamedShardings for a pytree of logical PartitionSpecs, checking divisibility.

    Args:
      logical: pytree of PartitionSpec holding logical axis names.
      shapes: matching pytree of arrays or ShapeDtypeStructs.
      mesh, rules: the mesh and rules table.
    Returns:
      pytree of NamedSharding.
    """

    def one(path, spec, x):
        mesh_spec = logical_to_spec(tuple(spec), rules)
        _check_divisible(x.shape, mesh_spec, mesh, f"param {jax.tree_util.keystr(path)}", flag)
        return NamedSharding(mesh, mesh_spec)

    return jax.tree_util.tree_map_with_path(
        one, logical, shapes, is_leaf=lambda s: isinstance(s, PartitionSpec)
    )


# --- activation constraints -------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "ifrl_jax_sharding", default=None
)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None, rules: Rules | None) -> Iterator[None]:
    """Within this context, `constrain` pins activations to `mesh` under `rules`.

    Tracing (the first call of a jitted function) must happen inside the context.
    """
    token = _ACTIVE.set(None if mesh is None else (mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Applies a sharding constraint by logical axes; identity outside `activation_sharding`."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = logical_to_spec(axes, rules)
    _check_divisible(x.shape, spec, mesh, f"activation {tuple(axes)}", "config.sharding")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding for [B, ...] batch arrays of any rank: B over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(_BATCH))


def data_ways(mesh: Mesh) -> int:
    """Devices a batch is split over by `data_sharding` (mesh axes data x fsdp)."""
    return math.prod(mesh.shape[a] for a in _BATCH)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def host_to_global(tree, mesh: Mesh):
    """This process's rows of a [B_local, ...] numpy pytree -> global arrays split over data axes.

    With one process this is a device_put; with several, each host contributes its own rows.
    """
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: jax.device_put(x, data_sharding(mesh)), tree)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(data_sharding(mesh), x), tree
    )


def global_to_host(tree, mesh: Mesh):
    """Inverse of `host_to_global`: this process's rows of global [B, ...] arrays, as numpy."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
    from jax.experimental import multihost_utils

    spec = PartitionSpec(_BATCH)
    return jax.tree.map(
        lambda x: np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec)), tree
    )


def agree_max(n: int) -> int:
    """The maximum of `n` over all processes (e.g. a prompt length every host must pad to)."""
    if jax.process_count() == 1:
        return n
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray(n, np.int32))))


def barrier(name: str) -> None:
    """Waits until every process gets here (e.g. until process 0 has written a file that all
    read next); nothing with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather_to_all(tree):
    """Full global arrays on every process (for small outputs such as eval tokens)."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree
    )
