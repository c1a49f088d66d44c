"""What several jobs share: config sections into dataclasses, stage outputs on disk."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax


def from_section(cls, section, *, skip: tuple[str, ...] = (), **overrides):
    """`cls(...)` (a dataclass) from the config keys named like its fields (but `skip`), plus
    overrides."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    kw = {k: section[k] for k in names if k in section}
    kw.update(overrides)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


def split_paths(spec: str) -> list[str]:
    """Comma-separated paths (config values such as data.train) as a list."""
    return [p for p in spec.split(",") if p]


def write_json(path: str, obj: Any) -> None:
    """Writes `obj` as JSON from process 0 only."""
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(obj, f)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def mark_done(directory: str) -> None:
    """Marks a stage's output directory complete (process 0 writes the DONE file)."""
    if jax.process_index() == 0:
        open(os.path.join(directory, "DONE"), "w").close()


def is_done(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, "DONE"))
