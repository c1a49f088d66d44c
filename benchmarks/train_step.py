r"""GRPO step tokens/s: ours vs transformers + torch AdamW, and vs XLA's own matmul rate.

A Qwen2.5-0.5B-shaped model (preset `qwen2_5_0_5b`, `--layers` overriding its depth) with random
weights, fp32, on CPU (one device), measured in one process:

  ours grpo step    old log-probs + reference log-probs (`grpo_step.make_logprob_fn`, two
                    forward passes, chunked log-probs) + one update (`grpo_step.make_step`:
                    forward, backward, clipped loss with k3 KL, global-norm clip, AdamW,
                    donated state).
  ours update       the update alone (old/ref log-probs precomputed).
  hf grpo step      transformers `Qwen2ForCausalLM` on the same config: two `torch.no_grad()`
                    forwards (old, ref) + forward/backward of the same clipped GRPO loss (full
                    [B, T, V] logits, log_softmax + gather, as verl does) + clip_grad_norm_ +
                    `torch.optim.AdamW` step.
  hf update         the same without the two no-grad forwards (forward+backward+AdamW).
  XLA matmuls       FLOP/s XLA reaches on each matmul shape of the step (forward and the dX/dW
                    shapes) at its best operand layout (`common.best_matmul_layouts`).

Ours and the XLA matmuls are timed round-robin (`common.time_interleaved`), so that a drifting
load hits them alike and "of XLA" stays meaningful; transformers runs after them, alone (memory:
both frameworks at once need ~13 GB at 4 layers). Peak memory ~8 GB at the default shape.

FLOPs: one forward pass F = 2 x (every matmul's m*k*n) (= 2 * N_matmul_params * tokens, the tied
LM head counted once) + attention at the full T x T scores. The LM head is counted on the
response positions only (the log-probs a GRPO step needs; `StepConfig.response_len`, which
ours uses; transformers computes it on every position, as verl does), or on all positions with
--noresponse_only (then ours does too). A GRPO step is 3F (forward+backward
of the update, i.e. 6 N tokens) + 2F (old and reference forwards, 2 N tokens each) = 5F; the
update alone is 3F. "of XLA" = matmul bound / measured time, where the matmul bound is the sum
over the step's executed matmuls of flops_i / rate_i (1.0 = running at XLA's matmul rate; the
chunked log-probs recompute the LM head's forward in the backward pass, which the bound counts
and the model-FLOP rate does not). "of peak" = model FLOP/s / the best single-shape XLA rate.

Run it with nothing else on the cores (see benchmarks/README.md):

  python -m benchmarks.train_step --layers=4 --batch=4 --seq=256 --repeats=3
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import grpo, grpo_step, host_memory, models, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.grpo_step import StepConfig
from ifrl_jax.models import ModelConfig
from ifrl_jax.train_step import OptimConfig

_LAYERS = flags.DEFINE_integer("layers", 4, "Decoder layers (the preset's widths are kept).")
_BATCH = flags.DEFINE_integer("batch", 4, "Sequences per batch.")
_SEQ = flags.DEFINE_integer("seq", 256, "Tokens per sequence (prompt + response).")
_PROMPT = flags.DEFINE_integer("prompt", 128, "Prompt tokens per sequence (not trained).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (best is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls before timing (compile, allocator).")
_CHUNK = flags.DEFINE_integer("chunk_size", 0, "Log-prob chunk (positions); 0 = balanced default.")
_RESPONSE_ONLY = flags.DEFINE_bool(
    "response_only", True, "Ours: LM head on response positions only (StepConfig.response_len)."
)
_ENTROPY = flags.DEFINE_bool("entropy", True, "Compute the entropy metric (the default config).")
_TORCH_ATTN = flags.DEFINE_enum("torch_attn", "sdpa", ["sdpa", "eager"], "transformers attention.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip the transformers measurements.")
_PRESET = flags.DEFINE_string("preset", "qwen2_5_0_5b", "Model preset whose widths are used.")
_MALLOC = host_memory.define_flag()

# Targets of issue 6.
TARGET_VS_HF = 2.0
TARGET_OF_XLA = 0.6


def make_batch(cfg: ModelConfig, b: int, t: int, prompt: int) -> dict[str, np.ndarray]:
    """A random rollout batch: full-length rows, the last t - prompt tokens are the response."""
    rng = np.random.default_rng(0)
    rewards = rng.uniform(0, 5, b).astype(np.float32)
    group = 2 if b % 2 == 0 else b
    adv = np.asarray(grpo.group_advantages(jnp.asarray(rewards), group_size=group))
    resp = np.zeros((b, t), np.float32)
    resp[:, prompt:] = 1.0
    return dict(
        input_ids=rng.integers(0, cfg.vocab_size, (b, t), dtype=np.int32),
        attention_mask=np.ones((b, t), np.int32),
        response_mask=resp,
        advantages=adv,
    )


def ours_fns(cfg: StepConfig, optim: OptimConfig, batch: dict) -> dict[str, Callable[[], Any]]:
    """Callables for our GRPO step (2 log-prob passes + update), update alone, one log-prob pass."""
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    step_fn = grpo_step.make_step(cfg, optim, mesh, "replicated")
    logprob_fn = grpo_step.make_logprob_fn(cfg, mesh, "replicated")
    params = models.init_params(cfg.model, jax.random.key(0), mesh=mesh, rules="replicated")
    ref_params = models.init_params(cfg.model, jax.random.key(1), mesh=mesh, rules="replicated")
    holder = {"state": ts.init_state(params, optim=optim, shardings=step_fn.state_shardings)}
    device_batch = jax.device_put(batch, sharding.data_sharding(mesh))
    fixed = dict(device_batch)
    fixed["old_logp"] = logprob_fn(params, fixed)
    fixed["ref_logp"] = logprob_fn(ref_params, fixed)

    def full_step():
        state = holder["state"]
        b = dict(device_batch)
        b["old_logp"] = logprob_fn(state.params, b)  # once per rollout batch upstream
        b["ref_logp"] = logprob_fn(ref_params, b)
        holder["state"], metrics = step_fn(state, b)
        return metrics

    def update():
        holder["state"], metrics = step_fn(holder["state"], fixed)
        return metrics

    return {
        "grpo step": full_step,
        "update": update,
        "logprobs (1 pass)": lambda: logprob_fn(ref_params, fixed),
    }


def transformers_fns(cfg: StepConfig, optim: OptimConfig, batch: dict, *, attn: str):
    """The same three callables with transformers' Qwen2ForCausalLM + torch.optim.AdamW."""
    import torch
    import transformers

    hf_cfg = models.config_to_hf(cfg.model, dtype="float32")
    hf_cfg.pop("torch_dtype")
    config = transformers.Qwen2Config(**hf_cfg, attn_implementation=attn)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).to(torch.float32).train()
    ref = transformers.Qwen2ForCausalLM(config).to(torch.float32).eval()
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=optim.learning_rate,
        betas=(optim.b1, optim.b2),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    x = torch.from_numpy(batch["input_ids"].copy()).long()
    m = torch.from_numpy(batch["attention_mask"].copy()).long()
    mask = torch.from_numpy(batch["response_mask"].copy())[:, 1:]
    adv = torch.from_numpy(batch["advantages"].copy())[:, None]
    lc = cfg.loss

    def logp_of(logits):  # [B, T-1], verl's logprobs_from_logits (log_softmax + gather)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        return torch.gather(logp, -1, x[:, 1:, None])[..., 0]

    def no_grad_logp(net):
        with torch.no_grad():
            return logp_of(net(input_ids=x, attention_mask=m).logits)

    def update(old, ref_lp):
        opt.zero_grad(set_to_none=True)
        logp = logp_of(model(input_ids=x, attention_mask=m).logits)
        ratio = torch.exp(torch.clamp(logp - old, -20, 20))
        pg = torch.maximum(
            -adv * ratio, -adv * torch.clamp(ratio, 1 - lc.clip_low, 1 + lc.clip_high)
        )
        kl = torch.clamp(ref_lp - logp, -20, 20)
        kl = torch.clamp(torch.exp(kl) - kl - 1, -10, 10)
        loss = ((pg + lc.kl_coef * kl) * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        return loss.detach()

    old, ref_lp = no_grad_logp(model), no_grad_logp(ref)
    return {
        "grpo step": lambda: update(no_grad_logp(model), no_grad_logp(ref)),
        "update": lambda: update(old, ref_lp),
        "logprobs (1 pass)": lambda: no_grad_logp(ref),
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    malloc_line = host_memory.configure(_MALLOC.value)  # before JAX makes its backend
    import torch

    threads = common.num_cores()
    torch.set_num_threads(threads)
    b, t = _BATCH.value, _SEQ.value
    mcfg = models.get_preset(_PRESET.value, num_layers=_LAYERS.value, dtype="float32")
    head_positions = t - _PROMPT.value if _RESPONSE_ONLY.value else t
    cfg = StepConfig(
        model=mcfg, logprob_chunk_size=_CHUNK.value or None, compute_entropy=_ENTROPY.value,
        response_len=head_positions if _RESPONSE_ONLY.value else None,
    )  # fmt: skip
    optim = OptimConfig()  # upstream AdamW, lr 1e-6, clip 1.0; torch gets the same below
    tokens = b * t
    print(common.machine_line())
    print(f"{malloc_line}; it applies to torch in this process too")
    print(
        f"threads: XLA:CPU {threads}, torch {torch.get_num_threads()} (torch {torch.__version__}); "
        f"model {_PRESET.value} x {mcfg.num_layers} layers, {mcfg.num_params() / 1e6:.1f}M "
        f"params, fp32; batch {b} x {t} = {tokens} tokens ({t - _PROMPT.value} response); "
        f"log-prob chunk {grpo_step.logprob_chunk_size(cfg, b, head_positions)}; entropy "
        f"{cfg.compute_entropy}; ours' LM head on {head_positions} positions per row"
    )

    fwd_mms = common.model_matmuls(mcfg, b, t, head_positions)
    fwd_flops = sum(mm.flops for mm in fwd_mms)
    chunk = grpo_step.logprob_chunk_size(cfg, b, head_positions)
    chunked = chunk < head_positions
    update_mms = common.train_matmuls(fwd_mms, recompute_head=chunked)
    step_mms = update_mms + fwd_mms + fwd_mms  # + old and reference forwards
    flops = {"grpo step": 5 * fwd_flops, "update": 3 * fwd_flops, "logprobs (1 pass)": fwd_flops}
    t0 = time.perf_counter()
    layouts = common.best_matmul_layouts([mm.shape for mm in update_mms])
    print(f"matmul layouts picked in {time.perf_counter() - t0:.0f}s")
    # Phase 1: XLA matmuls and ours, interleaved. Phase 2: transformers alone (holding both
    # frameworks' params, optimizer states and activations at once needs ~13 GB at 4 layers).
    operands: dict = {}
    fns = {
        f"mm {mm_shape}": common.matmul_call(mm_shape, layout, operands=operands)
        for mm_shape, (_, layout) in layouts.items()
    }
    batch = make_batch(mcfg, b, t, _PROMPT.value)
    fns.update({f"ours {k}": v for k, v in ours_fns(cfg, optim, batch).items()})
    t0 = time.perf_counter()
    timings = common.time_interleaved(fns, warmup=_WARMUP.value, repeats=_REPEATS.value)
    print(
        f"timed {len(fns)} callables interleaved, {_REPEATS.value} rounds, "
        f"{time.perf_counter() - t0:.0f}s"
    )
    del fns, operands
    gc.collect()
    if not _SKIP_TORCH.value:
        hf_fns = transformers_fns(cfg, optim, batch, attn=_TORCH_ATTN.value)
        t0 = time.perf_counter()
        hf_t = common.time_interleaved(hf_fns, warmup=_WARMUP.value, repeats=_REPEATS.value)
        timings.update({f"hf {k}": v for k, v in hf_t.items()})
        print(f"timed transformers, {time.perf_counter() - t0:.0f}s")
        del hf_fns
        gc.collect()
    seconds = {s_: timings[f"mm {s_}"].best for s_ in layouts}
    rates = {s_: 2 * math.prod(s_) / sec for s_, sec in seconds.items()}
    shown = {}
    for mm in update_mms:
        shown.setdefault(mm.shape, mm.name)
    print("\nXLA matmul rates (best layout, timed in the same rounds as our steps):")
    common.print_table(
        ["matmul", "batch x m x k x n", "GFLOP/s", "layout"],
        [(n, "x".join(map(str, s_)), rates[s_] / 1e9, layouts[s_][1]) for s_, n in shown.items()],
    )
    peak = max(rates.values())
    bound = {
        "grpo step": common.matmul_bound_seconds(step_mms, seconds),
        "update": common.matmul_bound_seconds(update_mms, seconds),
        "logprobs (1 pass)": common.matmul_bound_seconds(fwd_mms, seconds),
    }
    ours = {k[5:]: v for k, v in timings.items() if k.startswith("ours ")}
    hf = {k[3:]: v for k, v in timings.items() if k.startswith("hf ")}

    rows, figures = [], {}
    for who, timings in (("ours", ours), (f"hf({_TORCH_ATTN.value})", hf)):
        for label, timing in timings.items():
            row = {
                "tok_s": tokens / timing.best,
                "best_s": timing.best,
                "median_s": timing.median,
                "model_gflop_s": flops[label] / timing.best / 1e9,
                "of_peak": flops[label] / timing.best / peak,
                "of_xla": bound[label] / timing.best,
                "vs_hf": hf[label].best / timing.best if hf else float("nan"),
            }
            figures[f"{who.split('(')[0]} {label}"] = row
            rows.append([f"{who} {label}", *row.values()])
    print(
        f"\nforward pass {fwd_flops / 1e9:.1f} GFLOP; GRPO step 5x = {5 * fwd_flops / 1e9:.1f} "
        f"GFLOP; best XLA matmul rate {peak / 1e9:.1f} GFLOP/s; matmul bound: step "
        f"{bound['grpo step']:.3f}s, update {bound['update']:.3f}s"
    )
    common.print_table(
        ["step", "tokens/s", "best s", "median s", "GFLOP/s", "of peak", "of XLA", "vs hf"], rows
    )
    if hf:
        step = figures["ours grpo step"]
        for name, value, target in (
            ("grpo step vs transformers", step["vs_hf"], TARGET_VS_HF),
            ("grpo step of XLA matmul bound", step["of_xla"], TARGET_OF_XLA),
        ):
            verdict = "ok" if value >= target else "BELOW TARGET"
            print(f"target {name}: {value:.2f} (>= {target}) {verdict}")
    common.emit_json(
        "train_step",
        {
            "preset": _PRESET.value,
            "layers": mcfg.num_layers,
            "batch": b,
            "seq": t,
            "threads": threads,
            "chunk_size": chunk,
            "entropy": cfg.compute_entropy,
            "xla_peak_gflop_s": peak / 1e9,
            "results": figures,
        },
    )


if __name__ == "__main__":
    app.run(main)
