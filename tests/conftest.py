"""Test setup: 8 fake CPU devices, set once before JAX is imported anywhere; per-test limits."""

import faulthandler
import os
import shutil
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent XLA compilation cache for the session, inherited by the launcher subprocesses:
# most job tests compile the same programs again (a run and its resume, one-process and
# two-process runs, the same tiny config in several tests). Compile time dominates the suite on
# CPU; an executable is keyed by its HLO and flags, so a hit runs the same program. Removed at
# the end of the session; JAX_COMPILATION_CACHE_DIR set outside is kept and used as is.
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="ifrl_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# Tests allowed more than pytest.ini's default per-test limit (pytest-timeout): their own
# subprocess timeouts plus 300 s. A node id, or a file whose module fixture (charged to the first
# test that uses it) does the long work. A @pytest.mark.timeout on the test itself wins.
LONG_TESTS = {
    "tests/test_default_job.py": 900 + 300,
    "tests/test_train.py::test_two_processes_with_a_loopback_coordinator_match_one_process": 2 * 900
    + 300,
    "tests/test_tokenizer.py::test_shipped_tiny_tokenizer_matches_rebuild": 600 + 300,
    "tests/test_host_memory.py::test_reuse_stops_page_faults_and_system_keeps_them": 2 * 300 + 300,
}
# After a test's limit, pytest-timeout's SIGALRM fails it; if the test is stuck where no signal
# handler can run, this much later faulthandler (a C thread) dumps every stack and exits.
HARD_EXIT_GRACE_S = 60.0
_stderr_fd: int | None = None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        for key, seconds in LONG_TESTS.items():
            if item.nodeid == key or item.nodeid.startswith((key + "::", key + "[")):
                item.add_marker(pytest.mark.timeout(seconds))


def pytest_configure(config):
    global _stderr_fd
    _stderr_fd = os.dup(2)  # the real stderr: output capture is not active during configure


def pytest_unconfigure(config):
    if _stderr_fd is not None:
        os.close(_stderr_fd)
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    if settings.timeout and settings.timeout > 0 and _stderr_fd is not None:
        faulthandler.dump_traceback_later(
            settings.timeout + HARD_EXIT_GRACE_S, exit=True, file=_stderr_fd
        )
    # None: pytest-timeout sets its own timer as well


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item):
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def sampler_calls(monkeypatch):
    """Records every sampler call of the test: (prompts, num_samples) of `sampling.generate`,
    (prompts, num_samples, num_slots) of the continuous `engine.generate`."""
    from ifrl_jax import engine, sampling

    calls = []
    for module in (sampling, engine):
        real = module.generate

        def spy(cfg, params, ids, mask, _real=real, **kw):
            slots = (kw["num_slots"],) if "num_slots" in kw else ()
            calls.append((ids.shape[0], kw["num_samples"], *slots))
            return _real(cfg, params, ids, mask, **kw)

        monkeypatch.setattr(module, "generate", spy)
    return calls
