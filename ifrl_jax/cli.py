"""What every launcher shares: flag parsing, host memory, multi-host start, quiet logs, and
user errors as one line.

    from ifrl_jax import cli

    def main():
        from ifrl_jax.jobs import grpo  # imports JAX: after cli.run has set up the process

        cli.print_summary(grpo.run(_CONFIG.value))

    if __name__ == "__main__":
        cli.run(main, model=True, distributed=True)

A `errors.UserError` (or a missing file) prints `error: <message>` on stderr and exits with
status 2; so does a bad flag or config override. `--verbosity=1` (absl's flag) shows the full
traceback instead, and third-party INFO logs (orbax, grain, transformers).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable

from absl import app, flags

from ifrl_jax import errors, host_memory

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_LAUNCH = os.path.join(os.path.dirname(_PACKAGE), "launch")

# Every launcher runs the process, so every launcher may reuse freed host memory (host_memory).
_MALLOC = host_memory.define_flag()
_DIST = flags.DEFINE_enum(
    "distributed", "off", ["off", "auto"], "jax.distributed from the cluster's environment"
)
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host)")
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes (multi-host)")
_PID = flags.DEFINE_integer("process_id", None, "this process's index (multi-host)")

USER_ERRORS = (errors.UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError)
_STATE = {"multi_process": False}  # set when jax.distributed was initialized


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types printed as one line: UserError and the library's own input errors."""
    from ifrl_jax.records import RecordError
    from ifrl_jax.verifiers import SpecError
    from ifrl_jax.verifiers.ifeval import EvalInputError

    return (*USER_ERRORS, RecordError, SpecError, EvalInputError)


def verbose() -> bool:
    """Whether --verbosity asks for more than the default (full tracebacks, library INFO)."""
    if "verbose" not in _STATE and flags.FLAGS.is_parsed():
        _STATE["verbose"] = flags.FLAGS.verbosity >= 1  # read once: quiet_logs resets it
    return _STATE.get("verbose", False)


def fail(message: str) -> None:
    """Prints `error: message` on stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class _OursOnly(logging.Filter):
    """Keeps our INFO records and everybody's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        path = os.path.abspath(record.pathname)
        return path.startswith(_PACKAGE) or path.startswith(_LAUNCH)


def quiet_logs() -> None:
    """INFO logs of ifrl_jax and the launchers only; third-party INFO (orbax's checkpoint steps,
    grain) is dropped unless --verbosity >= 1. Call after flags are parsed."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # "PyTorch was not found"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from absl import logging as absl_logging

    if verbose():
        return
    absl_logging.set_verbosity(absl_logging.INFO)
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _OursOnly) for f in handler.filters):
        handler.addFilter(_OursOnly())
    for name in ("jax", "orbax", "grain", "absl"):
        logging.getLogger(name).addFilter(_OursOnly())


def _bad_override(e: Exception) -> str:
    """One line naming the --config.<key> override that names no config key."""
    key = str(e).strip("\"'")
    args = [a for a in sys.argv[1:] if a.startswith("--config.")]
    arg = next((a for a in args if f".{key}=" in a or a.endswith(f".{key}")), ", ".join(args))
    return f"{arg.split('=')[0]}: no such config key ({key!r}); see the config file's keys"


def _bad_config_file(e: OSError) -> str:
    """One line for a config file that cannot load (ml_collections explains over many)."""
    path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
    return f"--config={path}: cannot load the config file ({str(e).splitlines()[-1].strip()})"


def define_config(default: str, help_text: str):
    """--config (an ml_collections config file, default `default`) with --config.key=value
    overrides. Read it with `config_value`: a missing file or unknown key is a one-line error."""
    from ml_collections import config_flags

    try:
        return config_flags.DEFINE_config_file("config", default, help_text)
    except (AttributeError, KeyError) as e:  # an override is applied while defining
        _STATE["config_error"] = _bad_override(e)
        return None


def config_value(flag):
    """The config of a `define_config` flag (after its overrides)."""
    try:
        value = flag.value
        value.keys()  # a file that failed to load raises only when the config is first used
        return value
    except OSError as e:
        fail(_bad_config_file(e))
    except (AttributeError, KeyError) as e:
        fail(_bad_override(e))


def _parse(argv: list[str]) -> list[str]:
    """absl's parser, with flag errors as one line and exit status 2."""
    if "config_error" in _STATE:
        fail(_STATE["config_error"])
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --helpshort)")
    except errors.UserError as e:  # e.g. a config file that raises on bad arguments
        fail(str(e))
    except OSError as e:  # --config's file, loaded while its overrides are parsed
        fail(_bad_config_file(e))
    return []


def _start(model: bool, distributed: bool) -> None:
    if model:  # before JAX makes its backend
        message = host_memory.configure(_MALLOC.value)
        if verbose():
            print(message, file=sys.stderr)
    if not distributed:
        if _COORD.value or _DIST.value != "off":
            fail("--coordinator_address/--distributed: this launcher runs in one process")
        return
    import jax

    if _COORD.value:
        if _NPROC.value is None or _PID.value is None:
            fail("--coordinator_address needs --num_processes and --process_id")
        jax.distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
        _STATE["multi_process"] = True
    elif _DIST.value == "auto":
        jax.distributed.initialize()
        _STATE["multi_process"] = True


def run(main: Callable[[], None], *, model: bool = True, distributed: bool = False) -> None:
    """Runs `main()` as a launcher: parses flags, sets up the process, prints user errors.

    Args:
      main: the launcher's body (reads its flags; calls one job).
      model: the launcher runs a model (host memory is configured before JAX starts).
      distributed: the job runs on a multi-host mesh (--coordinator_address, --distributed).
    """

    def body(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
        quiet_logs()
        _start(model, distributed)
        try:
            main()
        except Exception as e:
            if verbose() or not isinstance(e, user_error_types()):
                raise
            fail(str(e))

    app.run(body, flags_parser=_parse)


def is_main_process() -> bool:
    """Process 0 of a multi-process run, or the only process (without starting JAX)."""
    if not _STATE["multi_process"]:
        return True
    import jax

    return jax.process_index() == 0


def print_summary(summary: dict) -> None:
    """The job's summary as the last line of stdout: one JSON object (process 0 only)."""
    if is_main_process():
        print(json.dumps(summary), flush=True)
