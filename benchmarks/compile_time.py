r"""Compile time of forward and forward+backward, scanned vs unrolled layers, as depth grows.

For a Qwen2.5-0.5B-width model (preset `qwen2_5_0_5b`) at each of `--layers` depths, with
`scan_layers` True and False, measures on abstract params (`models.abstract_params`, no memory):

  lower     trace + lower to StableHLO: `jax.jit(f).lower(*ShapeDtypeStructs)`.
  compile   XLA compilation of that: `lowered.compile()`.

and, at the depths in `--first_call_layers` (real random params then exist in memory), the wall
time of the first call of a fresh `jax.jit(f)` (trace + lower + compile + one run) and of a
second call (the run alone). Caches are cleared (`jax.clear_caches()`) before every measurement.

  forward   logits of `models.forward(cfg, params, ids, mask)`.
  fwd+bwd   grad of -mean `models.sequence_logprobs` (default chunked log-probs).

A scanned stack compiles one layer body whatever the depth, so its time stays flat; an unrolled
stack compiles every layer, so its time grows with depth. Run with nothing else on the cores:

  python -m benchmarks.compile_time --layers=4,14,28 --batch=1 --seq=128
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import models
from ifrl_jax.models.config import ModelConfig

_LAYERS = flags.DEFINE_list("layers", ["4", "14", "28"], "Depths to compile.")
_FIRST_CALL_LAYERS = flags.DEFINE_list(
    "first_call_layers", ["28"], "Depths at which the first call is also timed (needs memory)."
)
_BATCH = flags.DEFINE_integer("batch", 1, "Sequences per batch.")
_SEQ = flags.DEFINE_integer("seq", 128, "Tokens per sequence.")
_PRESET = flags.DEFINE_string("preset", "qwen2_5_0_5b", "Model preset whose widths are used.")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "ModelConfig.remat.")


def step_fns(cfg: ModelConfig) -> dict[str, Callable]:
    """The two functions compiled: forward logits and the grad of the mean token log-prob."""

    def fwd(params, ids, mask):
        return models.forward(cfg, params, ids, mask)  # [B, T, V]

    def loss(params, ids, mask):
        return -jnp.mean(models.sequence_logprobs(cfg, params, ids, mask)[:, 1:])

    return {"forward": fwd, "fwd+bwd": jax.grad(loss)}


def compile_seconds(fn: Callable, *args) -> tuple[float, float]:
    """(lower seconds, compile seconds) of a fresh jax.jit(fn) on abstract args."""
    jax.clear_caches()
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def first_call_seconds(fn: Callable, *args) -> tuple[float, float]:
    """(first call, second call) wall seconds of a fresh jax.jit(fn) on real args."""
    jax.clear_caches()
    jitted = jax.jit(fn)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    b, t = _BATCH.value, _SEQ.value
    depths = [int(x) for x in _LAYERS.value]
    first_call = {int(x) for x in _FIRST_CALL_LAYERS.value}
    print(common.machine_line())
    print(f"{_PRESET.value} widths, fp32, remat={_REMAT.value}, batch {b} x {t}")
    ids_abs = jax.ShapeDtypeStruct((b, t), jnp.int32)
    rng = np.random.default_rng(0)
    headers = ["step", "layers", "scan", "lower s", "compile s", "total s", "1st call s", "2nd s"]
    rows, figures = [], []
    for depth in depths:
        for scan in (True, False):
            cfg = models.get_preset(
                _PRESET.value, num_layers=depth, scan_layers=scan, remat=_REMAT.value
            )
            params_abs = models.abstract_params(cfg)
            params = None
            if depth in first_call:
                params = models.init_params(cfg, jax.random.key(0))
                ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t), dtype=np.int32))
                mask = jnp.ones((b, t), jnp.int32)
            for name, fn in step_fns(cfg).items():
                lower_s, compile_s = compile_seconds(fn, params_abs, ids_abs, ids_abs)
                first_s = second_s = None
                if params is not None:
                    first_s, second_s = first_call_seconds(fn, params, ids, mask)
                rec = {
                    "step": name,
                    "layers": depth,
                    "scan": scan,
                    "lower_s": lower_s,
                    "compile_s": compile_s,
                    "total_s": lower_s + compile_s,
                    "first_call_s": first_s,
                    "second_call_s": second_s,
                }
                figures.append(rec)
                cells = [v if v is not None else "-" for v in rec.values()]
                print(
                    "  "
                    + "  ".join(str(c if not isinstance(c, float) else f"{c:.2f}") for c in cells),
                    flush=True,
                )
                rows.append(cells)
            del params
    print()
    rows.sort(key=lambda r: (r[0], r[2], r[1]))
    common.print_table(headers, rows)
    summary = {}
    for name in ("forward", "fwd+bwd"):
        for scan in (True, False):
            total = {
                r["layers"]: r["total_s"] for r in figures if (r["step"], r["scan"]) == (name, scan)
            }
            lo, hi = min(total), max(total)
            summary[f"{name} {'scan' if scan else 'unrolled'} {hi}/{lo} layers"] = (
                total[hi] / total[lo]
            )
    for k, v in summary.items():
        print(f"compile-time growth, {k}: {v:.2f}x")
    common.emit_json(
        "compile_time",
        {
            "preset": _PRESET.value,
            "batch": b,
            "seq": t,
            "remat": _REMAT.value,
            "growth": summary,
            "results": figures,
        },
    )


if __name__ == "__main__":
    app.run(main)
