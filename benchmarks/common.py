"""Shared benchmark helpers: timing, XLA matmul rate, memory bandwidth, table and JSON output.

Every benchmark times with warmup and best-of-N (the minimum is the least noisy estimate of what
the code can do; the median is printed next to it so that a noisy machine shows), measures the
machine's own ceilings in the same process (XLA's matmul FLOP/s on the shapes the model uses, and
read bandwidth), prints a table, and ends with one JSON line that scripts can parse.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# torch's OpenMP workers busy-wait after each parallel region by default; with both frameworks in
# one process on 2 cores, that spinning took the cores from XLA's threads in the next timed call
# (forward.py, 4 layers: ours fwd+bwd 5.5-5.9 s next to torch vs 5.0 s without torch in the
# process). Passive waiting (read when torch loads OpenMP, so set before any benchmark imports
# torch) removes that, and left transformers' own times where they were (within run-to-run noise).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# jax's backend probe logs "Unable to initialize backend 'tpu'" at INFO on every CPU machine,
# as the first line of every benchmark's output: not a figure, so not shown.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def num_cores() -> int:
    """CPU cores this process may run on (its affinity mask; XLA's CPU thread pool uses these)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_line() -> str:
    """One line naming the backend, devices, cores and the load average (noise indicator)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    dev = jax.devices()[0]
    return (
        f"jax {jax.__version__} on {jax.default_backend()} ({dev.device_kind}, "
        f"{jax.device_count()} device(s)); {num_cores()} cores; load average {load}"
    )


def block(x: Any) -> Any:
    """Blocks until every jax array in the pytree x is computed; returns x."""
    return jax.block_until_ready(x)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls."""

    times: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_fn(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> Timing:
    """Times fn() after `warmup` untimed calls; jax outputs are blocked on inside the timing.

    Args:
      fn: a no-argument callable (jitted call or eager torch code); its result is blocked on.
      warmup: untimed calls first (compilation, allocator warm-up).
      repeats: timed calls.
    Returns:
      Timing of the `repeats` calls.
    """
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


Shape = tuple[int, int, int, int]  # a matmul's (batch, m, k, n)


@dataclasses.dataclass(frozen=True)
class Matmul:
    """A (batched) matmul [batch, m, k] x [batch, k, n] that a model step runs `count` times."""

    name: str
    m: int
    k: int
    n: int
    batch: int = 1
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n * self.count

    @property
    def shape(self) -> Shape:
        return (self.batch, self.m, self.k, self.n)

    def backward(self) -> list[Matmul]:
        """Its backward matmuls: dX = dY W^T ([m, n] x [n, k]), dW = X^T dY ([k, m] x [m, n])."""
        return [
            Matmul(f"{self.name}.dX", self.m, self.n, self.k, self.batch, self.count),
            Matmul(f"{self.name}.dW", self.k, self.m, self.n, self.batch, self.count),
        ]


def model_matmuls(cfg, batch: int, seq: int, head_positions: int | None = None) -> list[Matmul]:
    """The forward pass's matmuls (shapes as our model runs them; GQA scores grouped per kv head).

    Args:
      cfg: the ModelConfig; batch, seq: B and T.
      head_positions: positions per row the LM head runs on (default: all T).
    Returns:
      Matmuls with per-step counts; their flops sum to the forward FLOPs.
    """
    m, d, f, v = batch * seq, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    n, kh, h, layers = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
    g = n // kh
    return [
        Matmul("q_proj", m, d, n * h, count=layers),
        Matmul("k_proj,v_proj", m, d, kh * h, count=2 * layers),
        Matmul("o_proj", m, n * h, d, count=layers),
        Matmul("gate_proj,up_proj", m, d, f, count=2 * layers),
        Matmul("down_proj", m, f, d, count=layers),
        Matmul("attn_scores", g * seq, h, seq, batch=batch * kh, count=layers),
        Matmul("attn_values", g * seq, seq, h, batch=batch * kh, count=layers),
        Matmul("lm_head", batch * (head_positions or seq), d, v),
    ]


def train_matmuls(fwd: Sequence[Matmul], *, recompute_head: bool) -> list[Matmul]:
    """Forward + backward matmuls (+ the LM head's forward again when chunks are rematerialised)."""
    out = list(fwd)
    for mm in fwd:
        out.extend(mm.backward())
    if recompute_head:
        out.extend(
            dataclasses.replace(mm, name="lm_head.remat") for mm in fwd if mm.name == "lm_head"
        )
    return out


LAYOUTS = ("mk,kn", "mk,nk", "km,kn", "km,nk")  # operand layouts tried; the output is [m, n]


def matmul_call(
    shape: Shape, layout: str, *, dtype=jnp.float32, operands: dict | None = None
) -> Callable[[], jax.Array]:
    """A no-argument callable running one jitted [batch, m, k] x [batch, k, n] dot_general.

    Args:
      shape: (batch, m, k, n).
      layout: "mk,kn" etc.: how each operand is stored ("km" = the contracted dim first, as an
        activation is in a weight gradient X^T dY; "nk" = a weight stored [out, in], as the tied
        LM head's embedding [V, D]).
      operands: a dict shared between calls to reuse same-shaped operand arrays (memory).
    """
    batch, m, k, n = shape
    la, lb = layout.split(",")
    a_shape = (batch, m, k) if la == "mk" else (batch, k, m)
    b_shape = (batch, k, n) if lb == "kn" else (batch, n, k)
    operands = {} if operands is None else operands
    for s in (a_shape, b_shape):
        if s not in operands:  # jit arguments, so nothing is constant-folded
            operands[s] = jnp.full(s, 0.5, dtype)
    a, b = operands[a_shape], operands[b_shape]
    dims = (((1 + la.index("k"),), (1 + lb.index("k"),)), ((0,), (0,)))
    fn = jax.jit(lambda x, y: jax.lax.dot_general(x, y, dims))
    return lambda: fn(a, b)


def matmul_rate(
    shape: Shape, *, dtype=jnp.float32, warmup: int = 1, repeats: int = 3
) -> tuple[float, str]:
    """Best FLOP/s XLA reaches on one [batch, m, k] x [batch, k, n] matmul, over operand layouts.

    Each operand may be stored either way round (see `matmul_call`); taking the best layout makes
    the rate what XLA can do on this contraction, whatever the model's storage.

    Returns:
      (FLOP/s, the layout that reached it, e.g. "mk,nk").
    """
    batch, m, k, n = shape
    operands: dict = {}
    best = (0.0, "")
    for layout in LAYOUTS:
        call = matmul_call(shape, layout, dtype=dtype, operands=operands)
        rate = 2 * batch * m * k * n / time_fn(call, warmup=warmup, repeats=repeats).best
        if rate > best[0]:
            best = (rate, layout)
    return best


def best_matmul_layouts(
    shapes: Sequence[Shape], *, dtype=jnp.float32, warmup: int = 1, repeats: int = 1
) -> dict[Shape, tuple[float, str]]:
    """`matmul_rate` of each distinct shape: {shape: (FLOP/s, fastest layout)}.

    A quick first pass (one timed call per layout by default); time the chosen layouts again
    with `time_interleaved`, next to the steps they bound.
    """
    return {
        shape: matmul_rate(shape, dtype=dtype, warmup=warmup, repeats=repeats)
        for shape in dict.fromkeys(shapes)
    }


def matmul_bound_seconds(mms: Sequence[Matmul], seconds: dict[Shape, float]) -> float:
    """Seconds the matmuls alone take at XLA's measured speed: sum of count_i * seconds[shape_i].

    Args:
      mms: the step's matmuls; seconds: measured seconds of one matmul of each shape.
    """
    return sum(mm.count * seconds[mm.shape] for mm in mms)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 3
) -> dict[str, Timing]:
    """Times several callables round-robin (one call of each per round) after warmup rounds.

    On a machine whose load drifts, interleaving gives every callable the same conditions, so
    their ratios stay meaningful even where the absolute times do not. The untimed warmup rounds
    run in the same order, so the process's heap reaches the state that the timed rounds see.
    """
    for _ in range(warmup):
        for fn in fns.values():
            block(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(tuple(ts)) for name, ts in times.items()}


def read_bandwidth(*, nbytes: int = 512 << 20, warmup: int = 1, repeats: int = 5) -> float:
    """Bytes/s of a jitted fp32 sum over an nbytes array (streaming read, far larger than cache)."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    fn = jax.jit(jnp.sum)
    t = time_fn(lambda: fn(x), warmup=warmup, repeats=repeats)
    return x.size * 4 / t.best


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Prints rows as an aligned plain-text table (floats with 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
    )
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))


def emit_json(name: str, figures: dict[str, Any]) -> None:
    """Prints the final line: a JSON object {"benchmark": name, ...figures} (numbers rounded)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (float, np.floating)):
            return float(f"{float(v):.5g}") if np.isfinite(v) else None  # strict JSON: no NaN
        if isinstance(v, np.integer):
            return int(v)
        return v

    print(json.dumps({"benchmark": name, **clean(figures)}, sort_keys=False))
