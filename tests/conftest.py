"""Test setup: 8 fake CPU devices, set once before JAX is imported anywhere; per-test limits."""

import faulthandler
import json
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
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Scheduling(), "ifrl_jax_scheduling")


def pytest_unconfigure(config):
    if _stderr_fd is not None:
        os.close(_stderr_fd)
    if _XLA_CACHE is not None:
        shutil.rmtree(_XLA_CACHE, ignore_errors=True)


# Seconds each test file took in a `-n 2` run (2-core Xeon, 2026-12-06; files under 2 s left
# out). With `-n 2 --dist loadfile` the workers take whole files, longest
# first, so neither is left with a long file at the end (xdist's own order is by test count).
# Refresh: `IFRL_RECORD_FILE_SECONDS=out.json python -m pytest -q -n 2 --dist loadfile tests`.
FILE_SECONDS = {
    "test_train.py": 246, "test_models.py": 96, "test_default_job.py": 93, "test_learning.py": 84,
    "test_sampling.py": 71, "test_gpu_check.py": 71, "test_overlap.py": 68, "test_planner.py": 56,
    "test_engine.py": 52, "test_train_step.py": 51, "test_lora_jobs.py": 44,
    "test_pipeline.py": 43, "test_launchers_train.py": 41, "test_precision.py": 37,
    "test_lora.py": 26, "test_train_step_reference.py": 23, "test_verifiers_fuzz.py": 21,
    "test_reward_model.py": 20, "test_launchers_eval.py": 19, "test_grpo.py": 17,
    "test_host_memory.py": 14, "test_rollout_levers.py": 14, "test_logprob_mismatch.py": 13,
    "test_sharding.py": 10, "test_hf_memory.py": 10, "test_pairs.py": 10, "test_eval.py": 8,
    "test_verifiers_batch.py": 7, "test_rewards.py": 6, "test_sampling_dist.py": 5,
    "test_tokenizer.py": 4, "test_verifiers_nlp.py": 4, "test_synthesis.py": 3,
}  # fmt: skip


def _file_seconds(scope: str) -> float:
    return FILE_SECONDS.get(os.path.basename(scope.split("::", 1)[0]), 1.0)


class _Scheduling:
    """Registered in pytest_configure when pytest-xdist is active (its hook is unknown without)."""

    @staticmethod
    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") != "loadfile":
            return None  # xdist's own scheduler
        from xdist.scheduler import LoadFileScheduling

        class LongestFilesFirst(LoadFileScheduling):
            """`--dist loadfile` with the files handed out longest first (FILE_SECONDS)."""

            def _assign_work_unit(self, node):
                if not getattr(self, "_ordered", False):
                    order = sorted(self.workqueue.items(), key=lambda kv: -_file_seconds(kv[0]))
                    self.workqueue.clear()
                    self.workqueue.update(order)
                    self._ordered = True
                super()._assign_work_unit(node)

        return LongestFilesFirst(config, log)


_recorded: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if os.environ.get("IFRL_RECORD_FILE_SECONDS"):
        name = os.path.basename(report.nodeid.split("::", 1)[0])
        _recorded[name] = _recorded.get(name, 0.0) + report.duration


def pytest_sessionfinish(session):
    out = os.environ.get("IFRL_RECORD_FILE_SECONDS")
    if out and _recorded and not hasattr(session.config, "workerinput"):
        with open(out, "w") as f:
            json.dump(dict(sorted(_recorded.items(), key=lambda kv: -kv[1])), f, indent=1)


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
