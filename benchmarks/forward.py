r"""Forward and forward+backward tokens/s: ours vs transformers, and vs XLA's own matmul rate.

A Qwen2.5-0.5B-shaped model (preset `qwen2_5_0_5b`, `--layers` overriding its depth) with random
weights, fp32, on CPU, measured in one process:

  ours fwd        `models.forward` (jitted; full [B, T, V] logits), tokens/s.
  ours fwd+bwd    value_and_grad of -mean log p(x_t | x_<t) through `models.sequence_logprobs`,
                  once in 3 equal chunks (chunk_size=ceil(T/3): what the default 1 GiB budget
                  gives at 4x the batch; each chunk's logits recomputed in the backward pass)
                  and once with one whole-sequence chunk (what the default gives at this
                  shape); both are reported and the faster one named.
  hf fwd          transformers `Qwen2ForCausalLM` on the same config, torch.no_grad().
  hf fwd+bwd      the same model, loss = its own causal-LM cross-entropy (= -mean token
                  log-prob), `loss.backward()`.
  tunix fwd       Google tunix's Qwen2 (flax NNX) on the same config, jitted, full logits;
                  where `tunix` is importable (see benchmarks/README.md) or --tunix=on.
  tunix fwd+bwd   value_and_grad of -mean `tunix.rl.common.selective_log_softmax` (tunix's
                  token log-probs over the full logits).
  XLA matmuls     the FLOP/s XLA reaches on each matmul shape the model runs (forward, and the
                  dX/dW shapes of the backward pass), best over operand layouts. The "matmul
                  bound" of a step is sum(flops_i / rate_i): the time the matmuls alone would
                  take. "of XLA" = matmul bound / measured time (1.0 = at the machine's limit).

FLOPs counted: forward = 2 x (every matmul's m*k*n) = 2*N_matmul_params*tokens (the tied LM head
counted once, the embedding gather not at all) + attention 4*B*T*T*N*H per layer (the full T x T
score matrix, which both implementations compute). fwd+bwd "model FLOPs" = 3 x forward; with
chunked log-probs the LM-head forward runs a second time in the backward pass, which the
matmul bound counts (executed work) but the model-FLOP rate does not.

All of these are timed round-robin, one call of each per round (`common.time_interleaved`), so
that a drifting machine load hits every figure alike; the best round is reported. glibc's malloc
is set first (`--host_malloc`, as the launchers do; it applies to torch in this process too).

JAX (XLA:CPU) and torch use the same number of threads: the cores in this process's affinity
(restrict both with `taskset -c`). Run it with nothing else on the cores:

  python -m benchmarks.forward --layers=4 --batch=4 --seq=256 --repeats=3
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import host_memory, models
from ifrl_jax.models.config import ModelConfig

_LAYERS = flags.DEFINE_integer("layers", 4, "Decoder layers (the preset's widths are kept).")
_BATCH = flags.DEFINE_integer("batch", 4, "Sequences per batch.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (best is reported).")
_WARMUP = flags.DEFINE_integer(
    "warmup", 3, "Untimed rounds before timing (compile; the heap settles, host_memory.py)."
)
_TORCH_ATTN = flags.DEFINE_enum("torch_attn", "sdpa", ["sdpa", "eager"], "transformers attention.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip the transformers measurements.")
_TUNIX = flags.DEFINE_enum(
    "tunix", "auto", ["auto", "on", "off"], "Google tunix's Qwen2 too (auto = if importable)."
)
_PRESET = flags.DEFINE_string("preset", "qwen2_5_0_5b", "Model preset whose widths are used.")
_MALLOC = host_memory.define_flag()

# Targets of issue 2: forward at least tunix's speed (2.1x transformers there) and >= 90% of
# XLA's matmul rate; forward+backward at least 2x transformers.
TARGET_FWD_VS_HF = 2.1
TARGET_FWD_OF_XLA = 0.9
TARGET_BWD_VS_HF = 2.0
TARGET_FWD_VS_TUNIX = 1.0


def _inputs(cfg: ModelConfig, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)
    return ids, np.ones((batch, seq), np.int32)


def ours_calls(cfg: ModelConfig, ids: np.ndarray, mask: np.ndarray) -> dict[str, Callable]:
    """Our forward, and fwd+bwd in 3 chunks and in one chunk (chunk_size = T)."""
    params = models.init_params(cfg, jax.random.key(0))
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)

    def loss(p, x, m, chunk_size):
        logp = models.sequence_logprobs(cfg, p, x, m, chunk_size=chunk_size)  # [B, T], 0 at t=0
        return -jnp.mean(logp[:, 1:])

    step = jax.jit(jax.value_and_grad(loss), static_argnums=3)
    t = ids.shape[1]
    return {
        "ours fwd": lambda: models.forward(cfg, params, ids_j, mask_j),
        "ours fwd+bwd chunked": lambda: step(params, ids_j, mask_j, -(-t // 3)),
        "ours fwd+bwd one chunk": lambda: step(params, ids_j, mask_j, t),
    }


def transformers_calls(
    cfg: ModelConfig, ids: np.ndarray, mask: np.ndarray, *, attn: str
) -> dict[str, Callable]:
    """transformers' Qwen2ForCausalLM (same config) forward under no_grad, and fwd+bwd."""
    import torch
    import transformers

    hf_cfg = models.config_to_hf(cfg, dtype="float32")
    hf_cfg.pop("torch_dtype")
    config = transformers.Qwen2Config(**hf_cfg, attn_implementation=attn)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).to(torch.float32).eval()
    x, m = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

    def fwd() -> None:
        with torch.no_grad():
            model(input_ids=x, attention_mask=m)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=x, attention_mask=m, labels=x).loss.backward()  # mean token NLL

    return {"hf fwd": fwd, "hf fwd+bwd": fwd_bwd}


def tunix_calls(cfg: ModelConfig, ids: np.ndarray, mask: np.ndarray) -> dict[str, Callable]:
    """Google tunix's Qwen2 (flax NNX) on the same config, the way tunix's RL code runs it:
    forward to full logits, and fwd+bwd of -mean `rl.common.selective_log_softmax` (its token
    log-probs, log-softmax over full logits) with respect to the params."""
    import dataclasses

    from flax import nnx
    from tunix.generate import utils as tunix_utils
    from tunix.models.qwen2 import model as tunix_qwen2
    from tunix.rl import common as tunix_rl

    config = dataclasses.replace(
        tunix_qwen2.ModelConfig.qwen2p5_0p5b(), num_layers=cfg.num_layers,
        vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size, hidden_dim=cfg.intermediate_size,
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, num_kv_heads=cfg.num_kv_heads,
        rope_theta=cfg.rope_theta, norm_eps=cfg.rms_norm_eps,
        use_tied_embedding=cfg.tie_word_embeddings,
    )  # fmt: skip
    graphdef, params, rest = nnx.split(tunix_qwen2.Qwen2(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    x, m = jnp.asarray(ids), jnp.asarray(mask, jnp.bool_)
    positions = tunix_utils.build_positions_from_mask(m)
    attn = tunix_utils.make_causal_attn_mask(m, m.shape[1])  # [B, T, T]

    def logits(p):
        return nnx.merge(graphdef, p, rest)(x, positions, None, attn)[0]

    def loss(p):
        return -jnp.mean(tunix_rl.selective_log_softmax(logits(p)[:, :-1], x[:, 1:]))

    fwd, step = jax.jit(logits), jax.jit(jax.value_and_grad(loss))
    return {"tunix fwd": lambda: fwd(params), "tunix fwd+bwd": lambda: step(params)}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    malloc_line = host_memory.configure(_MALLOC.value)  # before JAX makes its backend
    import torch

    threads = common.num_cores()
    torch.set_num_threads(threads)
    b, t = _BATCH.value, _SEQ.value
    cfg = models.get_preset(_PRESET.value, num_layers=_LAYERS.value, dtype="float32")
    tokens = b * t
    print(common.machine_line())
    print(f"{malloc_line}; it applies to torch in this process too")
    print(
        f"threads: XLA:CPU {threads} (cores in affinity), torch {torch.get_num_threads()} "
        f"(torch {torch.__version__}); model {_PRESET.value} x {cfg.num_layers} layers, "
        f"{cfg.num_params() / 1e6:.1f}M params, fp32; batch {b} x {t} = {tokens} tokens",
        flush=True,
    )

    fwd_mms = common.model_matmuls(cfg, b, t)
    fwd_flops = sum(mm.flops for mm in fwd_mms)
    train_flops = 3 * fwd_flops
    mms = {
        "fwd": fwd_mms,
        "fwd+bwd chunked": common.train_matmuls(fwd_mms, recompute_head=True),
        "fwd+bwd one chunk": common.train_matmuls(fwd_mms, recompute_head=False),
    }
    names = {}  # shape -> the first matmul name with that shape
    for mm in mms["fwd+bwd chunked"]:
        names.setdefault(mm.shape, mm.name)

    # Pass 1: the fastest operand layout of every matmul shape (one timed call per layout).
    t0 = time.perf_counter()
    layouts = common.best_matmul_layouts(list(names))
    print(f"matmul layouts chosen in {time.perf_counter() - t0:.0f}s", flush=True)

    # Pass 2: every step and every matmul (at its best layout), timed round-robin.
    ids, mask = _inputs(cfg, b, t)
    calls = ours_calls(cfg, ids, mask)
    if not _SKIP_TORCH.value:
        calls.update(transformers_calls(cfg, ids, mask, attn=_TORCH_ATTN.value))
    use_tunix = _TUNIX.value == "on" or (
        _TUNIX.value == "auto" and importlib.util.find_spec("tunix") is not None
    )
    if use_tunix:
        calls.update(tunix_calls(cfg, ids, mask))  # --tunix=on without tunix: ImportError
    operands: dict = {}
    for shape, (_, layout) in layouts.items():
        calls[f"matmul {shape}"] = common.matmul_call(shape, layout, operands=operands)
    t0 = time.perf_counter()
    timings = common.time_interleaved(calls, warmup=_WARMUP.value, repeats=_REPEATS.value)
    print(f"timed in {time.perf_counter() - t0:.0f}s", flush=True)
    seconds = {shape: timings[f"matmul {shape}"].best for shape in layouts}
    rates = {shape: 2 * math.prod(shape) / sec for shape, sec in seconds.items()}
    bw = common.read_bandwidth()

    print(f"\nXLA matmul rates (best layout, best of {_REPEATS.value}):")
    common.print_table(
        ["matmul", "batch x m x k x n", "GFLOP/s", "layout"],
        [(name, "x".join(map(str, s)), rates[s] / 1e9, layouts[s][1]) for s, name in names.items()],
    )
    print(f"read bandwidth (jitted fp32 sum over 512 MiB): {bw / 1e9:.1f} GB/s")

    bound = {k: common.matmul_bound_seconds(v, seconds) for k, v in mms.items()}
    # The peers keep their full logits for the backward pass: their bound is the one-chunk one.
    peer_step = {"fwd+bwd": "fwd+bwd one chunk"}
    peer = lambda name, label: timings.get(
        f"{name} {'fwd' if label.endswith('fwd') else 'fwd+bwd'}"
    )
    rows, figures = [], {}
    for label in [k for k in calls if not k.startswith("matmul")]:
        timing = timings[label]
        name = label.split(" ", 1)[1]
        step = peer_step.get(name, name)
        hf, tunix = peer("hf", label), peer("tunix", label)
        row = {
            "tok_s": tokens / timing.best,
            "best_s": timing.best,
            "median_s": timing.median,
            "model_gflop_s": (fwd_flops if step == "fwd" else train_flops) / timing.best / 1e9,
            "of_xla": bound[step] / timing.best if not label.startswith("hf") else float("nan"),
            "vs_hf": hf.best / timing.best if hf else float("nan"),
            "vs_tunix": tunix.best / timing.best if tunix else float("nan"),
        }
        figures[label] = row
        rows.append([label, *row.values()])
    best_bwd = min(
        ("ours fwd+bwd chunked", "ours fwd+bwd one chunk"), key=lambda k: timings[k].best
    )
    print(
        f"\nforward {fwd_flops / 1e9:.1f} GFLOP, fwd+bwd {train_flops / 1e9:.1f} GFLOP (3x); "
        f"matmul bound: fwd {bound['fwd']:.3f}s, fwd+bwd {bound['fwd+bwd one chunk']:.3f}s "
        f"(one chunk) / {bound['fwd+bwd chunked']:.3f}s (chunked, LM head recomputed); "
        f"hf attention: {_TORCH_ATTN.value}"
    )
    common.print_table(
        ["step", "tokens/s", "best s", "median s", "GFLOP/s", "of XLA", "vs hf", "vs tunix"], rows
    )
    print(f"faster fwd+bwd variant: {best_bwd}")
    checks = [("fwd of XLA matmul bound", figures["ours fwd"]["of_xla"], TARGET_FWD_OF_XLA)]
    if not _SKIP_TORCH.value:
        checks += [
            ("fwd vs transformers", figures["ours fwd"]["vs_hf"], TARGET_FWD_VS_HF),
            ("fwd+bwd vs transformers", figures[best_bwd]["vs_hf"], TARGET_BWD_VS_HF),
        ]
    if use_tunix:
        checks += [("fwd vs tunix", figures["ours fwd"]["vs_tunix"], TARGET_FWD_VS_TUNIX)]
    for name, value, target in checks:
        verdict = "ok" if value >= target else "BELOW TARGET"
        print(f"target {name}: {value:.2f} (>= {target}) {verdict}")
    common.emit_json(
        "forward",
        {
            "preset": _PRESET.value,
            "layers": cfg.num_layers,
            "batch": b,
            "seq": t,
            "threads": threads,
            "torch_attn": None if _SKIP_TORCH.value else _TORCH_ATTN.value,
            "tunix": use_tunix,
            "load_avg_1m": os.getloadavg()[0],
            "lm_head_xla_gflop_s": rates[fwd_mms[-1].shape] / 1e9,
            "read_gb_s": bw / 1e9,
            "fwd_gflop": fwd_flops / 1e9,
            "matmul_bound_s": bound,
            "fastest_fwd_bwd": best_bwd,
            "results": figures,
        },
    )


if __name__ == "__main__":
    app.run(main)
