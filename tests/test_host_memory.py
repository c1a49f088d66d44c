"""host_memory: glibc reuses XLA:CPU's freed buffers, and refuses to apply too late."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ifrl_jax import host_memory

# Runs in a fresh process (the settings must precede JAX's backend): a jitted op whose 256 MB
# output is dropped every call; prints configure()'s line and each call's page faults.
_FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    from ifrl_jax import host_memory
    line = host_memory.configure(sys.argv[1])
    import jax, jax.numpy as jnp
    x = jnp.ones((64 * 1024 * 1024,), jnp.float32)
    f = jax.jit(lambda a: a * 2.0)
    faults = []
    for i in range(int(sys.argv[2])):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    try:
        host_memory.configure("reuse")  # too late now: the backend exists
        late = "applied"
    except RuntimeError as e:
        late = str(e)
    print(json.dumps({"line": line, "faults": faults, "late": late,
                      "late_auto": host_memory.configure("auto")}))
    """
)


def _run(mode: str, calls: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode, str(calls)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._libc() is None, reason="mallopt settings are glibc's")
def test_reuse_stops_page_faults_and_system_keeps_them():
    pages = 256 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")  # one output buffer's pages
    reuse, system = _run("auto", 32), _run("system", 8)
    assert reuse["line"].startswith("host malloc: reuse"), reuse["line"]
    assert system["line"].startswith("host malloc: system"), system["line"]
    # glibc defaults: every call maps and faults in a new buffer.
    assert min(system["faults"]) > pages // 2, system
    # Reuse: calls run without faults once the heap has settled. glibc 2.36's aligned allocation
    # cannot reuse a freed block of exactly the requested size, so the heap grows for a while
    # first: in 16 runs of 40 calls here, 4-12 calls faulted, none after the 25th.
    clean = sum(n < pages // 50 for n in reuse["faults"])
    assert clean >= 16, reuse["faults"]
    # Too late once JAX has its backend: an error for "reuse", a logged no-op for "auto".
    assert "--host_malloc=reuse cannot apply" in reuse["late"] and "before" in reuse["late"]
    assert reuse["late_auto"].startswith("host malloc: system defaults (JAX's backend")


def test_auto_applies_only_where_jax_runs_on_cpu_alone(monkeypatch):
    assert not host_memory.cpu_only("cuda,cpu") and not host_memory.cpu_only("tpu")
    assert host_memory.cpu_only("cpu") and host_memory.cpu_only(" cpu ")
    monkeypatch.setattr(host_memory, "_accelerator_plugins", lambda: [])
    assert host_memory.cpu_only("")  # nothing named, nothing installed: CPU
    monkeypatch.setattr(host_memory, "_accelerator_plugins", lambda: ["xla_cuda12"])
    assert not host_memory.cpu_only("")


def test_unknown_mode_names_the_flag():
    with pytest.raises(ValueError, match=r"--host_malloc='fast': expected one of auto, reuse"):
        host_memory.configure("fast")
