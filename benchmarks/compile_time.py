r"""Compile time of forward and forward+backward, scanned vs unrolled layers, as depth grows.

For a Qwen2.5-0.5B-width model (preset `qwen2_5_0_5b`) at each of `--layers` depths, with
`scan_layers` True and False, measures on abstract params (`models.abstract_params`, no memory):

  lower     trace + lower to StableHLO: `jax.jit(f).lower(*ShapeDtypeStructs)`.
  compile   XLA compilation of that: `lowered.compile()`.

each in wall seconds and in CPU seconds of this process (all threads), which other processes on
a shared machine barely disturb; and, at the depths in `--first_call_layers` (real random params
then exist in memory), the wall time of the first call of a fresh `jax.jit(f)` (trace + lower +
compile + one run) and of a second call (the run alone). Caches are cleared
(`jax.clear_caches()`) before every measurement.

  forward   logits of `models.forward(cfg, params, ids, mask)`.
  fwd+bwd   grad of -mean `models.sequence_logprobs` (default chunked log-probs).
  generate  the sampler's program (`sampling.generate_program`): prefill of the --seq-token
            prompts + the while-loop decode of --new tokens, greedy.

A scanned stack compiles one layer body whatever the depth, so its time stays flat; an unrolled
stack compiles every layer, so its time grows with depth. Run with nothing else on the cores:

  python -m benchmarks.compile_time --layers=4,14,28 --batch=1 --seq=128
  python -m benchmarks.compile_time --layers=4,24,28 --first_call_layers= --batch=8 --seq=64
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import models, sampling
from ifrl_jax.models.config import ModelConfig

_LAYERS = flags.DEFINE_list("layers", ["4", "14", "28"], "Depths to compile.")
_FIRST_CALL_LAYERS = flags.DEFINE_list(
    "first_call_layers", ["28"], "Depths at which the first call is also timed (needs memory)."
)
_BATCH = flags.DEFINE_integer("batch", 1, "Sequences per batch.")
_SEQ = flags.DEFINE_integer("seq", 128, "Tokens per sequence.")
_PRESET = flags.DEFINE_string("preset", "qwen2_5_0_5b", "Model preset whose widths are used.")
_NEW = flags.DEFINE_integer("new", 64, "generate: new tokens (the prompt is --seq tokens).")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "ModelConfig.remat.")


def step_fns(cfg: ModelConfig) -> dict[str, Callable]:
    """The two functions compiled: forward logits and the grad of the mean token log-prob."""

    def fwd(params, ids, mask):
        return models.forward(cfg, params, ids, mask)  # [B, T, V]

    def loss(params, ids, mask):
        return -jnp.mean(models.sequence_logprobs(cfg, params, ids, mask)[:, 1:])

    prog = sampling.generate_program(cfg, max_new_tokens=_NEW.value)

    def generate(params, ids, mask):  # the sampler: prefill + the while-loop decode, greedy
        eos = jnp.array([cfg.vocab_size - 1], jnp.int32)
        key = jax.random.key(0)
        return prog(params, ids, mask, key, eos, jnp.float32(0), jnp.float32(1), jnp.int32(0))

    return {"forward": fwd, "fwd+bwd": jax.grad(loss), "generate": generate}


def compile_seconds(fn: Callable, *args) -> dict[str, float]:
    """Wall and CPU seconds of lowering and compiling a fresh jax.jit(fn) on abstract args.

    CPU seconds (this process, all threads) barely move when other processes load the cores,
    so they are the figure to compare on a shared machine; wall seconds are what a user waits.
    """
    jax.clear_caches()
    w0, c0 = time.perf_counter(), time.process_time()
    lowered = jax.jit(fn).lower(*args)
    w1, c1 = time.perf_counter(), time.process_time()
    lowered.compile()
    w2, c2 = time.perf_counter(), time.process_time()
    return {
        "lower_s": w1 - w0,
        "compile_s": w2 - w1,
        "lower_cpu_s": c1 - c0,
        "compile_cpu_s": c2 - c1,
    }


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


def measure(cfg: ModelConfig, batch: int, seq: int, *, first_call: bool) -> list[dict]:
    """Compile (and optionally first-call) figures of both steps for one config."""
    ids_abs = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    params_abs = models.abstract_params(cfg)
    real = None
    if first_call:
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)
        real = (
            models.init_params(cfg, jax.random.key(0)),
            jnp.asarray(ids),
            jnp.ones((batch, seq), jnp.int32),
        )
        jax.block_until_ready(real)  # else the async init runs inside the compile timings
    out = []
    for name, fn in step_fns(cfg).items():
        sec = compile_seconds(fn, params_abs, ids_abs, ids_abs)
        first_s, second_s = first_call_seconds(fn, *real) if real else (None, None)
        rec = {
            "step": name,
            "layers": cfg.num_layers,
            "scan": cfg.scan_layers,
            **sec,
            "total_s": sec["lower_s"] + sec["compile_s"],
            "total_cpu_s": sec["lower_cpu_s"] + sec["compile_cpu_s"],
            "first_call_s": first_s,
            "second_call_s": second_s,
        }
        first = f", first call {first_s:.2f}s, second {second_s:.2f}s" if real else ""
        print(
            f"  {name:8s} {cfg.num_layers:3d} layers {'scan' if cfg.scan_layers else 'unrolled':8s}"
            f" lower {sec['lower_s']:6.2f}s compile {sec['compile_s']:6.2f}s"
            f" (CPU {rec['total_cpu_s']:6.2f}s){first}",
            flush=True,
        )
        out.append(rec)
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    b, t = _BATCH.value, _SEQ.value
    depths = sorted(int(x) for x in _LAYERS.value)
    first_call = {int(x) for x in _FIRST_CALL_LAYERS.value}
    print(common.machine_line())
    print(f"{_PRESET.value} widths, fp32, remat={_REMAT.value}, batch {b} x {t}", flush=True)
    figures = []
    for depth in depths:
        for scan in (True, False):
            cfg = models.get_preset(
                _PRESET.value, num_layers=depth, scan_layers=scan, remat=_REMAT.value
            )
            figures += measure(cfg, b, t, first_call=depth in first_call)
    print()
    figures.sort(key=lambda r: (r["step"], not r["scan"], r["layers"]))
    dash = lambda v: "-" if v is None else v
    common.print_table(
        ["step", "layers", "layers as", "lower s", "compile s", "total s", "total CPU s"]
        + ["1st call s", "2nd s"],
        [
            [r["step"], r["layers"], "scan" if r["scan"] else "unrolled"]
            + [r[k] for k in ("lower_s", "compile_s", "total_s", "total_cpu_s")]
            + [dash(r[k]) for k in ("first_call_s", "second_call_s")]
            for r in figures
        ],
    )
    lo, hi = depths[0], depths[-1]
    summary = {}
    for measure_key in ("total_cpu_s", "total_s"):
        total = {(r["step"], r["scan"], r["layers"]): r[measure_key] for r in figures}
        what = "CPU" if measure_key == "total_cpu_s" else "wall"
        for name in ("forward", "fwd+bwd", "generate"):
            for scan in (True, False):
                key = f"{name} {'scan' if scan else 'unrolled'} {what} growth {lo}->{hi} layers"
                summary[key] = total[(name, scan, hi)] / total[(name, scan, lo)]
            summary[f"{name} unrolled/scan {what} at {hi} layers"] = (
                total[(name, False, hi)] / total[(name, True, hi)]
            )
    print()
    for k, v in summary.items():
        print(f"{k}: {v:.2f}x")
    common.emit_json(
        "compile_time",
        {
            "preset": _PRESET.value,
            "batch": b,
            "seq": t,
            "remat": _REMAT.value,
            "summary": summary,
            "results": figures,
        },
    )


if __name__ == "__main__":
    app.run(main)
