"""Orbax checkpoints: a run's state pytree + host JSON, and params restore targets.

A checkpoint is written to a temporary directory and renamed when complete (orbax's commit
protocol), so a process killed mid-save leaves the previous checkpoint as the latest complete
one; `restore_latest` only ever sees complete checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ifrl_jax import models, sharding
from ifrl_jax.errors import UserError
from ifrl_jax.models import ModelConfig, lora


def latest_json(mngr: ocp.CheckpointManager, item: str) -> dict | None:
    """The JSON item `item` of `mngr`'s latest complete checkpoint (no arrays are read), or None
    when there is no checkpoint."""
    step = mngr.latest_step()
    if step is None:
        return None
    return mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


class Checkpointer:
    """Keeps the last `keep` checkpoints under `directory`; resumes from the latest complete."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self._mngr = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "host")
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, host: dict) -> None:
        """Saves the state pytree (sharded arrays written by their owners) and host JSON."""
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)
            ),
        )

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, host) of the latest complete checkpoint, or None if there is none.

        Args:
          abstract_state: pytree of jax.ShapeDtypeStruct with shardings (the restore target).
        """
        step = self._mngr.latest_step()
        if step is None:
            return None
        try:
            out = self._mngr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:
            raise RuntimeError(
                f"{self.directory}/{step}: cannot restore this checkpoint ({e}); move it away to "
                "resume from an earlier one"
            ) from e
        logging.info("restored checkpoint %s/%d", self.directory, step)
        return step, out["state"], out["host"]

    def latest_host(self) -> dict | None:
        """The host JSON of the latest complete checkpoint (no arrays are read), or None."""
        return latest_json(self._mngr, "host")

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def param_targets(cfg: ModelConfig, mesh: Mesh | None = None, rules=None) -> dict:
    """The params' ShapeDtypeStructs with their shardings (the first device without a mesh):
    the restore target of every params checkpoint."""
    shapes = models.abstract_params(cfg)
    if mesh is not None:
        return sharding.with_shardings(shapes, models.param_shardings(cfg, mesh, rules))
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return sharding.with_shardings(shapes, jax.tree.map(lambda _: dev, shapes))


def restore_params(directory: str, *, cfg: ModelConfig, mesh: Mesh | None = None, rules=None):
    """Params from an orbax checkpoint: a CheckpointManager directory (latest step) with an
    item `params` or `state` (whose `params` subtree is read), or a bare params pytree dir."""
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())
    root = path / str(steps[-1]) if steps else path
    target = param_targets(cfg, mesh, rules)
    wrap = (lambda t: {"params": t}) if (root / "state").is_dir() else (lambda t: t)
    item = root / "state" if (root / "state").is_dir() else root / "params"
    item = item if item.is_dir() else root
    restored = ocp.PyTreeCheckpointer().restore(
        str(item.resolve()),
        args=ocp.args.PyTreeRestore(
            item=wrap(target),
            restore_args=ocp.checkpoint_utils.construct_restore_args(wrap(target)),
            partial_restore=True,
        ),
    )
    return restored["params"] if item.name == "state" else restored


# --------------------------------------------------------------------------------------------
# The one policy loader: a HF directory, a GRPO run's checkpoint, an orbax params dir, a preset.
# --------------------------------------------------------------------------------------------


def run_workdir(state_dir: str) -> str:
    """The GRPO workdir of a checkpoint's state item (`<workdir>/ckpt/<N>/state`)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(state_dir)))


def _latest_complete(ckpt_dir: str) -> int:
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()]
    steps = [s for s in steps if os.path.isdir(os.path.join(ckpt_dir, str(s), "state"))]
    if not steps:
        raise FileNotFoundError(
            f"--checkpoint: no complete checkpoint (<step>/state) in {ckpt_dir}"
        )
    return max(steps)


def is_run_checkpoint(path: str) -> bool:
    """Whether `path` is a GRPO workdir (with ckpt/) or one of its `ckpt/<N>` directories."""
    return os.path.isdir(os.path.join(path, "state")) or os.path.isdir(os.path.join(path, "ckpt"))


def run_state_dir(path: str) -> str:
    """The `state` item of a GRPO checkpoint: `<workdir>` (latest step) or `<workdir>/ckpt/<N>`."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return os.path.join(path, "state")
    ckpt_dir = os.path.join(path, "ckpt")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"--checkpoint={path}: no ckpt/ directory; pass a GRPO workdir or <workdir>/ckpt/<step>"
        )
    return os.path.join(ckpt_dir, str(_latest_complete(ckpt_dir)), "state")


def _saved_param_shapes(state_dir: str) -> dict:
    meta = ocp.PyTreeCheckpointer().metadata(state_dir).item_metadata
    tree = getattr(meta, "tree", meta)
    if not isinstance(tree, dict) or "params" not in tree:
        raise UserError(f"--checkpoint: {state_dir} holds no 'params' (not a TrainState)")
    return jax.tree.map(lambda m: tuple(m.shape), tree["params"])


def _run_model_config(workdir: str, preset: str | None, **fields) -> ModelConfig:
    """The run's ModelConfig: `preset`, else its exported HF config.json (hf_final or sft)."""
    if preset:
        return models.get_preset(preset, **fields)
    from ifrl_jax.models import hf

    for sub in ("hf_final", "sft"):
        path = os.path.join(workdir, sub, "config.json")
        if os.path.exists(path):
            with open(path) as f:
                return hf.config_from_hf(json.load(f), where=path, **fields)
    raise FileNotFoundError(
        f"--checkpoint={workdir}: no hf_final/config.json or sft/config.json to rebuild the model "
        "from; pass --preset (and --overrides, e.g. vocab_size=2048) as in the run's config"
    )


def _restore_run_params(path: str, preset: str, fields: dict, mesh, rules):
    """(cfg, params) of a GRPO checkpoint; the layer layout comes from its metadata, and a
    config that does not match the saved params names the first differing one."""
    state_dir = run_state_dir(path)
    shapes = _saved_param_shapes(state_dir)
    fields["scan_layers"] = "layers" in shapes
    cfg = _run_model_config(run_workdir(state_dir), preset, **fields)
    if lora.has_adapters(shapes):  # a LoRA run: its settings sit beside the checkpoints
        settings = os.path.join(run_workdir(state_dir), lora.SETTINGS_FILE)
        if not os.path.exists(settings):
            raise UserError(f"--checkpoint={path}: the params hold LoRA adapters but "
                            f"{settings} (their rank, alpha, targets) is missing")  # fmt: skip
        with open(settings) as f:
            cfg = lora.configure(cfg, **json.load(f))
    abstract = models.abstract_params(cfg)
    want = {k: tuple(a.shape) for k, a in jax.tree_util.tree_leaves_with_path(abstract)}
    saved = dict(jax.tree_util.tree_leaves_with_path(shapes, is_leaf=lambda x: type(x) is tuple))
    if want != saved:
        key = min(set(want) ^ set(saved) or {k for k in want if want[k] != saved[k]}, key=str)
        raise UserError(
            f"--checkpoint={path}: the model config does not match the saved params at "
            f"{jax.tree_util.keystr(key)} (config {want.get(key)}, checkpoint {saved.get(key)}); "
            "fix --preset/--overrides"
        )
    item = {"params": param_targets(cfg, mesh, rules)}
    args = ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True,
    )  # fmt: skip
    return cfg, ocp.PyTreeCheckpointer().restore(state_dir, args=args)["params"]


def load_policy(
    *, hf_path: str = "", checkpoint: str = "", preset: str = "", overrides: dict | None = None,
    vocab_size: int = 0, seed: int = 0, param_dtype: str | None = None, dtype: str | None = None,
    runtime: dict | None = None, mesh: Mesh | None = None, rules=None,
) -> tuple[ModelConfig, dict]:  # fmt: skip
    """The one policy loader, placed in the rules' shardings (the first device without a mesh).

    Sources, in order: `hf_path` (a HF directory); `checkpoint` holding config.json (HF); a GRPO
    workdir or `<workdir>/ckpt/<N>` (the run's params; the model from `preset` or the run's
    exported config.json); another orbax directory with `preset`'s params; else `preset`
    initialized from `seed`. `overrides`: ModelConfig fields; `vocab_size`: at least this many
    ids (presets); param_dtype, dtype: param and compute dtypes (None: the source's own);
    runtime: how it runs (remat, scan_layers, attention_impl).
    """
    runtime = dict(runtime or {}, **dict(overrides or {}))
    for path in (hf_path, checkpoint):
        if path and os.path.exists(os.path.join(path, "config.json")):
            from ifrl_jax.models import hf

            if dtype is not None:
                runtime["compute_dtype"] = dtype
            return hf.load_hf(path, dtype=param_dtype or "float32", mesh=mesh, rules=rules,
                              **runtime)  # fmt: skip
    if hf_path:
        raise FileNotFoundError(f"{hf_path}: no config.json there (not a HF model directory)")
    runtime.update({k: v for k, v in (("param_dtype", param_dtype), ("dtype", dtype)) if v})
    if checkpoint and is_run_checkpoint(checkpoint):
        return _restore_run_params(checkpoint, preset, runtime, mesh, rules)
    cfg = models.get_preset(preset or "tiny", **runtime)
    cfg = cfg.replace(vocab_size=max(cfg.vocab_size, vocab_size))
    if checkpoint:
        return cfg, restore_params(checkpoint, cfg=cfg, mesh=mesh, rules=rules)
    return cfg, models.init_params(cfg, jax.random.key(seed), mesh=mesh, rules=rules)
