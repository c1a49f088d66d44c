"""Orbax checkpoints of the training run: state pytree + a small JSON of host-side state.

A checkpoint is written to a temporary directory and renamed when complete (orbax's commit
protocol), so a process killed mid-save leaves the previous checkpoint as the latest complete
one; `restore_latest` only ever sees complete checkpoints.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


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

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
