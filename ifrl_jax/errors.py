"""The one exception type for mistakes a user can make (bad file, record, flag or config value).

Library code raises `UserError` (or a subclass: `records.RecordError`, `verifiers.SpecError`,
...) with a message that names the file and line, the flag or the config key, and what to do.
Launchers (`ifrl_jax.cli`) print such errors as one line and exit with status 2; every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json


class UserError(ValueError):
    """Bad input: the message names the file:line, flag or config key."""


class ConfigError(UserError):
    """A config value that cannot work; the message starts with `config.<key>=<value>`."""

    def __init__(self, key: str, value, message: str):
        super().__init__(f"config.{key}={value!r}: {message}")
        self.key = key


def json_object_line(line: str, path: str, n: int, error: type[UserError] = UserError) -> dict:
    """Line n of a JSONL file as a dict; `error` ("path:n: ...") if it is not a JSON object."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{n}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise error(f"{path}:{n}: expected a JSON object")
    return row


def require(ok: bool, key: str, value, message: str) -> None:
    """Raises ConfigError(key, value, message) unless `ok`."""
    if not ok:
        raise ConfigError(key, value, message)
