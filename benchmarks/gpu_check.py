r"""One GPU check: HF parity, train-step MFU, decode tokens/s and one GRPO step, into one JSON file.

`benchmarks/gpu_check.sh` runs each stage as its own process under a time limit (so that a hang
or a crash in one stage cannot take the others with it) and ends with `--stage=report`; see
benchmarks/README.md. Every stage reads the JSON file, adds its entry under "stages" and writes
it back:

  parity      a random transformers Qwen2 (the 0.5B widths, 2 layers; weights rounded to bf16 so
              that the bf16 load holds the same numbers) saved with `save_pretrained`, loaded with
              `models.load_hf`; max |logits - transformers' logits| (torch, CPU, fp32) over the
              valid positions of a left-padded batch, with fp32 params/compute at matmul precision
              "highest" and with bf16 params/compute. Tolerances: fp32 1e-4 (tests/test_models.py);
              bf16 2 x transformers' own bf16 error (the same model cast to bf16, CPU). The fp32
              difference at JAX's default matmul precision (TF32 on recent NVIDIA GPUs) is
              recorded as well.
  train_step  the GRPO update as the job builds it (`grpo_step.make_step` = `train_step.make_update`
              of the GRPO loss; the old and reference log-probs given) on the `qwen2_5_0_5b`
              preset, bf16 params and compute, full remat, scanned layers; best of a few steps
              after warmup. MFU = model FLOPs / step time / the device's dense bf16 peak (the
              spec-sheet table below by device kind; other kinds, CPUs included, fall back to the
              measured rate of one large bf16 matmul, named in "peak_source"). Model FLOPs =
              3 x forward, forward = 2 x every matmul's m*k*n (= 2 x matmul params x tokens, the LM
              head on the response positions only) + attention at the full T x T scores
              (`common.model_matmuls`). The matmul FLOPs the compiled step executes (remat
              recomputes the forward) are counted from its jaxpr (`footprint.matmul_flops`).
  decode      `sampling.generate` on the same preset in bf16 (bf16 KV cache), temperature 1, no
              EOS (every row decodes every token): tokens/s of the whole call, and of the decode
              loop alone (whole - a max_new_tokens=1 call).
  grpo        `jobs.grpo.run` of configs/qwen2_5_0_5b_gpu.py with train.steps=1, a small rollout
              (prompts_per_batch, max_new_tokens), a held-out set of a few prompts, no HF export:
              the job's summary, its step's time/* figures and the wall time of the whole job
              (compiles, the two evaluations and the checkpoint included).

`--dry` runs every stage at toy size (preset "tiny", a few tokens) on whatever jax sees, CPU
included; without it, a stage refuses to run unless jax's backend is "gpu".

  python -m benchmarks.gpu_check --stage=parity --out=gpu_check.json [--dry]
  python -m benchmarks.gpu_check --stage=report --out=gpu_check.json --results=parity:0:21:60,...
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common

STAGES = ("parity", "train_step", "decode", "grpo")

_STAGE = flags.DEFINE_enum("stage", None, [*STAGES, "report"], "The stage to run.")
_OUT = flags.DEFINE_string("out", "gpu_check.json", "The JSON file (created or updated).")
_DRY = flags.DEFINE_bool("dry", False, "Toy sizes on any backend (CPU included).")
_RESULTS = flags.DEFINE_string(
    "results", "", "report: name:exit_status:seconds:limit_s of each stage, comma-separated."
)
_INSTALL_NOTE = flags.DEFINE_string("install_note", "", "report: what the install step did.")

# The dry GRPO job: the tiny preset (the shipped tokenizer's vocabulary; 2,048 positions, so
# prompts of at most 512 tokens), 2 responses per prompt, no micro-batching, the verifiers in the
# one shared worker process.
DRY_JOB = {
    "model.preset": "tiny", "model.overrides": {"vocab_size": 2048}, "rollout.n": 2,
    "data.max_prompt_len": 160, "data.prompt_buckets": (160,),  # the CPU default's prompts
    "grpo.micro_batches": 1, "reward.verifier_processes": 0,
}  # fmt: skip

# Sizes per mode. "gpu": the 0.5B shape (limits in gpu_check.sh); "dry": the same code at toy size.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "parity": dict(preset="qwen2_5_0_5b", layers=2, lengths=(64, 41, 9, 64)),
        "train_step": dict(
            preset="qwen2_5_0_5b", batch=16, seq=1024, prompt=256, warmup=2, repeats=5, matmul=8192
        ),
        "decode": dict(preset="qwen2_5_0_5b", batch=64, prompt=128, new=128, repeats=3),
        "grpo": dict(prompts=8, max_new_tokens=128, heldout=8, overrides={}),
    },
    "dry": {
        "parity": dict(preset="tiny", layers=2, lengths=(9, 5, 2, 9)),
        "train_step": dict(
            preset="tiny", batch=2, seq=32, prompt=16, warmup=1, repeats=2, matmul=256
        ),
        "decode": dict(preset="tiny", batch=4, prompt=16, new=8, repeats=2),
        "grpo": dict(prompts=2, max_new_tokens=8, heldout=2, overrides=DRY_JOB),
    },
}

FP32_TOL = 1e-4  # max |logits diff|, fp32 (tests/test_models.py's)
# bf16: at most this times transformers' own bf16 error (the same model cast to bf16, on CPU)
# against the fp32 logits. tests/test_models.py's 4 bf16 roundings of max|logits| fit the tiny
# fixtures (transformers: 2.1 roundings there), not the 0.5B widths: on CPU, 2 layers,
# transformers' bf16 error was 0.27 = 8.6 roundings of max|logits| (8.1), ours 0.17.
BF16_TOL_VS_HF = 2.0

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's spec sheets, FLOP/s, matched in order
# against jax's device_kind (e.g. "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB").
PEAK_BF16: tuple[tuple[str, str, float], ...] = (
    (r"H100.*PCIe", "H100 PCIe", 756e12),
    (r"H100.*NVL", "H100 NVL", 835e12),
    (r"H100|GH200", "H100 SXM", 989e12),
    (r"H200", "H200", 989e12),
    (r"A100", "A100", 312e12),
    (r"\bL4\b", "L4", 121e12),
    (r"\bA10\b", "A10", 125e12),
)


def spec_peak(device_kind: str) -> tuple[str, float] | None:
    """(name, dense bf16 FLOP/s) of a device kind in PEAK_BF16, or None."""
    for pattern, name, peak in PEAK_BF16:
        if re.search(pattern, device_kind):
            return name, peak
    return None


# ------------------------------------------------------------------------------------------------
# Stages. Each returns its figures (a dict with "ok"); an exception is recorded as the error.
# ------------------------------------------------------------------------------------------------


def _random_bf16_exact_hf(cfg, seed: int = 0):
    """A transformers Qwen2ForCausalLM of cfg's shape, every weight random (biases and norms too,
    as tests/hf_fixtures.py) and rounded to bf16, in fp32."""
    import torch
    import transformers

    from ifrl_jax import models

    hf_cfg = models.config_to_hf(cfg, dtype="float32")
    hf_cfg.pop("torch_dtype")
    model = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**hf_cfg, attn_implementation="eager")
    ).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = torch.randn(p.shape, generator=gen)
            x = 1.0 + 0.1 * x if "norm" in name else 0.05 * x
            p.copy_(x.to(torch.bfloat16).float())
    return model


def stage_parity(size: dict) -> dict:
    import torch

    from ifrl_jax import models

    torch.set_num_threads(common.num_cores())
    cfg = models.get_preset(size["preset"], num_layers=size["layers"])
    hf = _random_bf16_exact_hf(cfg)
    rng = np.random.default_rng(0)
    lengths, t = size["lengths"], max(size["lengths"])
    ids = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):  # left-padded rows
        ids[i, t - n :] = rng.integers(1, cfg.vocab_size, n)
        mask[i, t - n :] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    valid = mask.astype(bool)
    inputs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  position_ids=torch.tensor(pos))  # fmt: skip
    with torch.no_grad():
        ref = hf(**inputs).logits.float().numpy()[valid]  # [valid positions, V]
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        with torch.no_grad():  # transformers' own bf16 error: the yardstick for ours
            hf_bf16 = hf.to(torch.bfloat16)(**inputs).logits.float().numpy()[valid]
        hf_bf16 = float(np.abs(hf_bf16 - ref).max())
        del hf
        diff = lambda out: float(np.abs(np.asarray(out, np.float32)[valid] - ref).max())
        cfg32, p32 = models.load_hf(tmp)
        with jax.default_matmul_precision("highest"):
            fp32 = diff(models.forward(cfg32, p32, ids, mask))
        fp32_default = diff(models.forward(cfg32, p32, ids, mask))
        del p32
        cfg16, p16 = models.load_hf(tmp, dtype="bfloat16", compute_dtype="bfloat16")
        bf16 = diff(models.forward(cfg16, p16, ids, mask))
    max_logit = float(np.abs(ref).max())
    bf16_tol = BF16_TOL_VS_HF * hf_bf16
    return {
        "ok": fp32 < FP32_TOL and bf16 < bf16_tol,
        "shape": f"{size['preset']} x {cfg.num_layers} layers, batch {len(lengths)} x {t}",
        "max_abs_logit": max_logit,
        "fp32_max_abs_diff": fp32,
        "fp32_tol": FP32_TOL,
        "fp32_default_precision_max_abs_diff": fp32_default,
        "bf16_max_abs_diff": bf16,
        "bf16_tol": bf16_tol,
        "hf_bf16_max_abs_diff": hf_bf16,
    }


def stage_train_step(size: dict) -> dict:
    from benchmarks.train_step import make_batch
    from ifrl_jax import footprint, grpo_step, models, sharding
    from ifrl_jax import train_step as ts

    cfg = models.get_preset(size["preset"], param_dtype="bfloat16", dtype="bfloat16",
                            remat="full", scan_layers=True)  # fmt: skip
    b, t, prompt = size["batch"], size["seq"], size["prompt"]
    step_cfg = grpo_step.StepConfig(model=cfg, response_len=t - prompt)
    optim = ts.OptimConfig()
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tp": 1}, devices=jax.devices()[:1])
    step_fn = grpo_step.make_step(step_cfg, optim, mesh, "replicated")
    params = models.init_params(cfg, jax.random.key(0), mesh=mesh, rules="replicated")
    holder = {"state": ts.init_state(params, optim=optim, shardings=step_fn.state_shardings)}
    del params
    batch = make_batch(cfg, b, t, prompt)
    # Old and reference log-probs as given inputs: about log(1/V), what random weights give.
    batch["old_logp"] = batch["ref_logp"] = np.full((b, t), -np.log(cfg.vocab_size), np.float32)
    batch = jax.device_put(batch, sharding.data_sharding(mesh))
    executed = footprint.matmul_flops(jax.make_jaxpr(step_fn.jitted)(holder["state"], batch))

    def update():
        holder["state"], metrics = step_fn(holder["state"], batch)
        return metrics

    timing = common.time_fn(update, warmup=size["warmup"], repeats=size["repeats"])
    n = size["matmul"]
    matmul_rate, _ = common.matmul_rate((1, n, n, n), dtype=jnp.bfloat16)
    model_flops = 3 * sum(mm.flops for mm in common.model_matmuls(cfg, b, t, t - prompt))
    achieved = model_flops / timing.best
    kind = jax.devices()[0].device_kind
    spec = spec_peak(kind)
    peak, source = (spec[1], f"spec sheet: {spec[0]}") if spec else (
        matmul_rate, f"measured: one {n}^3 bf16 matmul")  # fmt: skip
    return {
        "ok": True,
        "shape": f"{size['preset']} bf16, remat full, scan; {b} x {t} ({t - prompt} response)",
        "params": cfg.num_params(),
        "tokens": b * t,
        "best_s": timing.best,
        "median_s": timing.median,
        "tokens_per_s": b * t / timing.best,
        "model_flops": model_flops,
        "executed_matmul_flops": executed,
        "achieved_flops_s": achieved,
        "peak_flops_s": peak,
        "peak_source": source,
        "mfu": achieved / peak,
        "hfu": executed / timing.best / peak,
        "matmul_flops_s": matmul_rate,
        "of_matmul_rate": achieved / matmul_rate,
        "loss": float(update()["loss"]),
    }


def stage_decode(size: dict) -> dict:
    from ifrl_jax import models, sampling

    cfg = models.get_preset(size["preset"], param_dtype="bfloat16", dtype="bfloat16",
                            scan_layers=True)  # fmt: skip
    params = models.init_params(cfg, jax.random.key(0))
    b, p, m = size["batch"], size["prompt"], size["new"]
    ids = np.random.default_rng(0).integers(1, cfg.vocab_size, (b, p)).astype(np.int32)
    mask = np.ones_like(ids)
    gen = lambda new: sampling.generate(
        cfg, params, ids, mask, max_new_tokens=new, temperature=1.0, eos_ids=[-1],
        cache_dtype="bfloat16", buckets=(p,),
    ).tokens  # fmt: skip
    whole = common.time_fn(lambda: gen(m), repeats=size["repeats"])
    prefill = common.time_fn(lambda: gen(1), repeats=size["repeats"])
    decode_s = max(whole.best - prefill.best, 1e-9)
    return {
        "ok": True,
        "shape": f"{size['preset']} bf16, bf16 KV cache; {b} prompts x {p} tokens, {m} new",
        "best_s": whole.best,
        "median_s": whole.median,
        "tokens_per_s": b * m / whole.best,
        "prefill_s": prefill.best,
        "decode_tokens_per_s": b * (m - 1) / decode_s,
        "decode_step_ms": 1e3 * decode_s / (m - 1),
    }


def _set(config, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for key in path:
        config = config[key]
    config[last] = value


def stage_grpo(size: dict) -> dict:
    from configs import qwen2_5_0_5b_gpu
    from ifrl_jax import cli, metrics
    from ifrl_jax.jobs import grpo

    # The launchers' console: no third-party INFO (orbax's checkpoint steps). cli and
    # benchmarks.train_step both define --host_malloc, so one process imports one of them; each
    # stage runs in its own process (gpu_check.sh).
    cli.quiet_logs()
    config = qwen2_5_0_5b_gpu.get_config()
    with tempfile.TemporaryDirectory() as tmp:
        heldout = os.path.join(tmp, "heldout.jsonl")
        with open(os.path.join(grpo.ASSETS, "heldout.jsonl")) as f:
            lines = f.readlines()[: size["heldout"]]
        with open(heldout, "w") as f:
            f.writelines(lines)
        overrides = {
            "workdir": os.path.join(tmp, "run"), "train.steps": 1, "train.export_hf": False,
            "rollout.prompts_per_batch": size["prompts"], "grpo.minibatch_prompts": size["prompts"],
            "rollout.max_new_tokens": size["max_new_tokens"], "data.heldout": heldout,
            "train.eval_batch_size": size["heldout"], **size["overrides"],
        }  # fmt: skip
        for key, value in overrides.items():
            _set(config, key, value)
        t0 = time.perf_counter()
        summary = grpo.run(config)
        seconds = time.perf_counter() - t0
        row = metrics.read_jsonl(os.path.join(config.workdir, "metrics.jsonl"))[-1]
    keep = ("time/", "train/loss", "train/grad_norm", "reward/mean", "rollout/")
    return {
        "ok": summary["steps"] == 1 and "train/loss" in row,
        "shape": f"configs/qwen2_5_0_5b_gpu.py, {size['prompts']} prompts x "
        f"{config.rollout.n}, {size['max_new_tokens']} new tokens, 1 step",
        "overrides": {k: v for k, v in overrides.items() if k not in ("workdir", "data.heldout")},
        "job_seconds": seconds,
        "step_seconds": row.get("time/step"),
        "summary": {k: v for k, v in summary.items() if k not in ("workdir", "plot")},
        "step_metrics": {k: v for k, v in row.items() if k.startswith(keep)},
    }


STAGE_FNS = {"parity": stage_parity, "train_step": stage_train_step, "decode": stage_decode,
             "grpo": stage_grpo}  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The JSON file, the report.
# ------------------------------------------------------------------------------------------------


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None, floats to 5 digits."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.5g}") if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"benchmark": "gpu_check", "stages": {}}


def save(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(doc), f, indent=1)
    os.replace(tmp, path)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, cwd=os.path.dirname(__file__))  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_stage(name: str, *, out: str, dry: bool) -> int:
    """Runs one stage and records its figures (or its error) in `out`; returns the exit status."""
    print(common.machine_line(), flush=True)
    doc = load(out)
    dev = jax.devices()[0]
    doc.update(mode="dry" if dry else "gpu", jax_version=jax.__version__,
               backend=jax.default_backend(), device_kind=dev.device_kind,
               device_count=jax.device_count(), commit=_git_commit())  # fmt: skip
    t0 = time.perf_counter()
    try:
        if not dry and jax.default_backend() != "gpu":
            raise RuntimeError(
                f"jax sees no GPU (backend {jax.default_backend()!r}, jax {jax.__version__}): "
                "the jax[cuda12] install failed or CUDA is unusable"
            )
        result = STAGE_FNS[name](SIZES["dry" if dry else "gpu"][name])
        if not result["ok"]:
            result["error"] = "figures outside their bounds (see this entry)"
    except Exception as e:  # recorded in the JSON; the script goes on with the next stage
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    result["seconds"] = time.perf_counter() - t0
    doc = {**load(out), **{k: v for k, v in doc.items() if k != "stages"}}
    doc.setdefault("stages", {})[name] = result
    save(out, doc)
    print(json.dumps({name: _clean(result)}), flush=True)
    return 0 if result["ok"] else 1


def _headline(name: str, r: dict) -> str:
    if not r.get("ok") and "error" in r:
        return r["error"].splitlines()[0][:100]
    fmt = lambda x: "n/a" if x is None else f"{x:.3g}"
    if name == "parity":
        fp32, bf16 = fmt(r.get("fp32_max_abs_diff")), fmt(r.get("bf16_max_abs_diff"))
        tols = fmt(r.get("fp32_tol")), fmt(r.get("bf16_tol"))
        return f"fp32 diff {fp32} (tol {tols[0]}), bf16 diff {bf16} (tol {tols[1]})"
    if name == "train_step":
        return (f"MFU {fmt(r.get('mfu'))}, {fmt(r.get('tokens_per_s'))} tokens/s, step "
                f"{fmt(r.get('best_s'))} s")  # fmt: skip
    if name == "decode":
        return (f"{fmt(r.get('tokens_per_s'))} tokens/s (decode loop "
                f"{fmt(r.get('decode_tokens_per_s'))})")  # fmt: skip
    if name == "grpo":
        return f"step {fmt(r.get('step_seconds'))} s, job {fmt(r.get('job_seconds'))} s"
    return r.get("note", "")


def report(out: str, results: str, *, install_note: str = "") -> int:
    """Fills in what the stage processes could not record (a timeout, a crash), writes the overall
    verdict, prints the file's path and a table; returns 0 iff every stage passed."""
    doc = load(out)
    stages = doc.setdefault("stages", {})
    limits = {}
    for item in filter(None, results.split(",")):
        name, rc, seconds, limit = item.split(":")
        rc, seconds, limits[name] = int(rc), float(seconds), limit
        entry = stages.setdefault(name, {})
        if name == "install":
            entry.update(ok=rc == 0, seconds=seconds, note=install_note)
        if rc == 200:  # gpu_check.sh: the budget had no time left for it
            entry.update(ok=False, error="not run: the 8-minute budget was spent")
        elif rc == 124 or (rc == 137 and seconds >= int(limit)):  # timeout(1): TERM, then KILL
            entry.update(ok=False, error=f"timed out after {limit} s")
        elif "ok" not in entry or (rc and "error" not in entry):  # a signal, an OOM kill
            entry.update(ok=False, error=f"exited with status {rc} without recording its result")
        elif rc:
            entry["ok"] = False
        entry.setdefault("seconds", seconds)
        entry["limit_s"] = float(limit)
    for name in STAGES:  # a stage the script never reached
        stages.setdefault(name, {"ok": False, "error": "not run"})
    order = ["install", *STAGES]
    doc["stages"] = stages = dict(sorted(stages.items(), key=lambda kv: order.index(kv[0])
                                         if kv[0] in order else len(order)))  # fmt: skip
    doc["ok"] = all(s.get("ok") for s in stages.values())
    doc["stage_seconds"] = sum(s.get("seconds", 0.0) for s in stages.values())
    save(out, doc)
    print(f"\n{os.path.abspath(out)}: {doc.get('device_kind')} ({doc.get('backend')}), jax "
          f"{doc.get('jax_version')}, mode {doc.get('mode')}")  # fmt: skip
    rows = [
        [name, "ok" if s.get("ok") else "FAIL", f"{s.get('seconds', 0.0):.1f}",
         limits.get(name, ""), _headline(name, s)]
        for name, s in stages.items()
    ]  # fmt: skip
    common.print_table(["stage", "result", "seconds", "limit", "figures"], rows)
    return 0 if doc["ok"] else 1


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _STAGE.value is None:
        raise app.UsageError(f"--stage: one of {[*STAGES, 'report']}")
    if _STAGE.value == "report":
        sys.exit(report(_OUT.value, _RESULTS.value, install_note=_INSTALL_NOTE.value))
    sys.exit(run_stage(_STAGE.value, out=_OUT.value, dry=_DRY.value))


if __name__ == "__main__":
    app.run(main)
