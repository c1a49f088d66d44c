"""What several jobs share: config sections into dataclasses, stage outputs on disk."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from ifrl_jax import models
from ifrl_jax.errors import ConfigError, UserError
from ifrl_jax.models import lora


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


def with_lora(cfg, section, key: str):
    """cfg with the LoRA of a config section ({rank, alpha, dropout, targets}; rank 0 = none);
    a bad setting is a ConfigError naming `<key>.<field>`."""
    try:
        return lora.configure(cfg, rank=section.rank, alpha=section.alpha,
                              dropout=section.dropout, targets=tuple(section.targets))  # fmt: skip
    except ValueError as e:
        field = next((f for f in ("targets", "rank", "dropout", "alpha") if f"lora_{f}" in str(e)),
                     "rank")  # fmt: skip
        raise ConfigError(f"{key}.{field}", section[field], str(e).split(": ", 1)[-1]) from None


def check_backend(section, key: str) -> None:
    """models.check_backend of a model section's param_dtype and dtype, as a ConfigError
    naming `<key>.dtype` or `<key>.param_dtype`."""
    for field in ("param_dtype", "dtype"):
        try:
            models.check_backend([section[field]])
        except ValueError as e:
            raise ConfigError(f"{key}.{field}", section[field], str(e)) from None


def flat_settings(config, *, may_change: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config's values as JSON, keyed by dotted name (`grpo.learning_rate`), without the
    keys that a resumed run may change: those equal to or under an entry of `may_change`."""
    out: dict[str, Any] = {}

    def walk(d, prefix):
        for k, v in d.items():
            name = prefix + k
            if any(name == m or name.startswith(m + ".") for m in may_change):
                continue
            if isinstance(v, dict):
                walk(v, name + ".")
            else:
                out[name] = v

    walk(config.to_dict() if hasattr(config, "to_dict") else dict(config), "")
    return json.loads(json.dumps(out))


def check_resume(saved: dict | None, settings: dict, workdir: str, *, what: str) -> None:
    """A UserError naming config.workdir and each differing key when the checkpoint in `workdir`
    (`what`: "a reward model", "a GRPO run") was trained with other settings; a checkpoint
    without saved settings (written before they were saved) passes."""
    if saved is None:
        return
    diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if diff:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        now = ", ".join(f"{k}={settings.get(k)!r}" for k in diff)
        raise UserError(f"config.workdir={workdir} holds {what} trained with {was}; this run "
                        f"has {now}: give another config.workdir, or the same settings to "
                        "resume")  # fmt: skip
