r"""Rollout tokens/s: the static sampler vs the continuous engine, side by side, on three
response-length distributions, plus transformers `generate` on the uniform one.

The default CPU job's rollout shape: preset `cpu_small` (fp32), 16 prompts x 8 samples, prompt
bucket 160, temperature 1, top-p 1.

  real       max_new_tokens 80. With the default job's policy (`--policy`, by default
             /tmp/ifrl_jax/default_cpu/hf_final, which `python launch/train_grpo.py` writes):
             that policy on the first 16 shipped training prompts (chat template, its own EOS
             ids), so the lengths are the ones the job's rollouts have. Without it: random
             weights, per-row lengths forced to min(80, 1 + gamma(shape 2, scale 22)) (mean
             ~42, ~8% at 80), close to the job's metrics.jsonl (response/length_mean 39-47,
             finished_frac 0.91-0.95).
  long_tail  max_new_tokens 320; 90% of rows 40 tokens, 10% (chosen at random) 320.
  uniform    max_new_tokens 80; every row 80 tokens.

Forced lengths go through `max_lengths`, a per-row cap that both engines take and check where
they check EOS (a traced argument: the same compiled programs as without it); EOS is off there.
tokens/s = response tokens produced / wall seconds of the whole call (prefill included), each
engine counting its own tokens; both use the same per-row keys, so they produce the same tokens
up to float near-ties (the "rows differ" column). Static and continuous are timed round-robin
(`common.time_interleaved`: a warmup round that compiles, then the best of --repeats).

transformers: `Qwen2ForCausalLM` on the same config (random weights), `generate(do_sample=True,
top_k=0, num_return_sequences=8, min_new_tokens=max_new_tokens=80)`, in a child process of its
own (torch and XLA:CPU in one process slow each other: README.md), against the uniform row.

  python -m benchmarks.rollout                # ~4 min on 2 cores
  python -m benchmarks.rollout --slots=64 --skip_torch
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import host_memory

_SLOTS = flags.DEFINE_integer("slots", 32, "Continuous engine: slots (rows decoded at once).")
_CHUNK = flags.DEFINE_integer("chunk", 32, "Continuous engine: prefill chunk.")
_MIN_SLOTS = flags.DEFINE_integer("min_slots", 8, "Continuous engine: tail shrink floor.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed rounds (best is reported).")
_POLICY = flags.DEFINE_string("policy", "/tmp/ifrl_jax/default_cpu/hf_final",
                              "The default job's policy (HF dir): the real scenario.")  # fmt: skip
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip transformers.")
_TORCH_CHILD = flags.DEFINE_bool("torch_child", False, "Internal: run only transformers.")
_MALLOC = host_memory.define_flag()

PROMPTS, SAMPLES, BUCKET = 16, 8, 160
ROWS = PROMPTS * SAMPLES
TRAIN = os.path.join(os.path.dirname(__file__), "..", "ifrl_jax", "assets", "instructions",
                     "train.jsonl")  # fmt: skip


def _forced(name: str, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """(max_new_tokens, per-row lengths) of a forced-length scenario."""
    if name == "uniform":
        return 80, np.full(ROWS, 80)
    if name == "long_tail":
        lengths = np.full(ROWS, 40)
        lengths[rng.choice(ROWS, ROWS // 10, replace=False)] = 320
        return 320, lengths
    return 80, np.minimum(80, 1 + rng.gamma(2.0, 22.0, ROWS).astype(int))  # real, no policy


def _model_and_prompts():
    """(cfg, params, ids, mask, eos_ids, pad_id, what): the job's policy and prompts, or
    random cpu_small weights and random prompts of the same lengths' range."""
    import jax

    from ifrl_jax import data, models, records
    from ifrl_jax import tokenizer as tokenizer_lib

    if os.path.isdir(_POLICY.value):
        cfg, params = models.load_hf(_POLICY.value)
        tok = tokenizer_lib.load_tokenizer(_POLICY.value)
        recs = records.load_records(TRAIN).records[:PROMPTS]
        enc = data.encode_prompts(tok, recs, max_prompt_len=BUCKET, buckets=(BUCKET,))
        return cfg, params, enc.input_ids, enc.attention_mask, tok.eos_ids, tok.pad_id, "policy"
    cfg = models.get_preset("cpu_small")
    params = models.init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, (PROMPTS, BUCKET)).astype(np.int32)
    lengths = rng.integers(33, 106, PROMPTS)  # the shipped prompts' range under the template
    mask = (np.arange(BUCKET)[None, :] >= BUCKET - lengths[:, None]).astype(np.int32)
    return cfg, params, np.where(mask > 0, ids, 0), mask, (2,), 0, "random"


def _torch_child() -> None:
    """Prints one JSON line: transformers' sampled generate tokens/s on the uniform scenario."""
    import torch
    import transformers

    from ifrl_jax import models

    torch.set_num_threads(common.num_cores())
    cfg = models.get_preset("cpu_small")
    hf = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**models.config_to_hf(cfg, dtype="float32"))
    ).eval()
    ids = torch.randint(3, cfg.vocab_size, (PROMPTS, BUCKET))

    def gen():
        with torch.no_grad():
            return hf.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                num_return_sequences=SAMPLES, max_new_tokens=80, min_new_tokens=80,
                pad_token_id=0, eos_token_id=None,
            )  # fmt: skip

    t = common.time_fn(gen, repeats=_REPEATS.value)
    print(json.dumps({"seconds": t.best, "tokens_per_s": ROWS * 80 / t.best}))


def _torch_row() -> dict | None:
    cmd = [sys.executable, "-m", "benchmarks.rollout", "--torch_child",
           f"--repeats={_REPEATS.value}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        print(f"transformers child failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _time_both(cfg, params, ids, mask, kw):
    """Timings and last outputs of both engines on one scenario, round-robin."""
    import jax

    from ifrl_jax import engine, sampling

    outs = {}
    cont = dict(num_slots=_SLOTS.value, prefill_chunk=_CHUNK.value, min_slots=_MIN_SLOTS.value)
    calls = {
        "static": lambda: sampling.generate(cfg, params, ids, mask, **kw),
        "continuous": lambda: engine.generate(cfg, params, ids, mask, **cont, **kw),
    }

    def timed(name):
        def fn():
            outs[name] = calls[name]()
            return jax.block_until_ready(outs[name].lengths)

        return fn

    t = common.time_interleaved({k: timed(k) for k in calls}, repeats=_REPEATS.value)
    return t, outs


def main(argv):
    del argv
    if _TORCH_CHILD.value:
        return _torch_child()
    os.system("uptime")
    print(host_memory.configure(_MALLOC.value))
    import jax

    print(common.machine_line())
    cfg, params, ids, mask, eos, pad, what = _model_and_prompts()
    print(f"model: {what} ({cfg.num_params() / 1e6:.2f}M params); {PROMPTS} prompts x "
          f"{SAMPLES} samples, bucket {BUCKET}; continuous: {_SLOTS.value} slots, chunk "
          f"{_CHUNK.value}, min_slots {_MIN_SLOTS.value}")  # fmt: skip
    rng = np.random.default_rng(0)
    rows, figures = [], {"model": what, "slots": _SLOTS.value, "rows": ROWS}
    for name in ("real", "long_tail", "uniform"):
        m, lengths = _forced(name, rng)
        kw = dict(max_new_tokens=m, temperature=1.0, num_samples=SAMPLES, pad_id=pad,
                  rng=jax.random.key(1), buckets=(BUCKET,), eos_ids=[-1],
                  max_lengths=lengths)  # fmt: skip
        if name == "real" and what == "policy":
            kw.update(eos_ids=eos, max_lengths=None)
        t, outs = _time_both(cfg, params, ids, mask, kw)
        toks = {k: int(np.asarray(o.lengths).sum()) for k, o in outs.items()}
        tps = {k: toks[k] / t[k].best for k in outs}
        diff = int((np.asarray(outs["static"].tokens) != np.asarray(outs["continuous"].tokens))
                   .any(1).sum())  # fmt: skip
        st = outs["continuous"].stats
        lens = np.asarray(outs["static"].lengths)
        rows.append([name, f"{lens.mean():.1f}/{lens.max()}", toks["static"], t["static"].best,
                     tps["static"], t["continuous"].best, tps["continuous"],
                     tps["continuous"] / tps["static"], diff,
                     f"{(toks['continuous'] - ROWS) / max(st['slot_steps'], 1):.2f}"])  # fmt: skip
        figures[f"{name}_speedup"] = tps["continuous"] / tps["static"]
        figures[name] = {"static_tokens_per_s": tps["static"], "mean_len": lens.mean(),
                         "continuous_tokens_per_s": tps["continuous"], "rows_differ": diff,
                         "truncated_frac": float(np.mean(lens >= m)), "stats": st}  # fmt: skip
    if not _SKIP_TORCH.value:
        hf = _torch_row()
        if hf:
            rows.append(["uniform: transformers", "80.0/80", ROWS * 80, hf["seconds"],
                         hf["tokens_per_s"], "", "", "", "", ""])  # fmt: skip
            figures["hf_uniform_tokens_per_s"] = hf["tokens_per_s"]
            figures["continuous_over_hf_uniform"] = (
                figures["uniform"]["continuous_tokens_per_s"] / hf["tokens_per_s"]
            )
    common.print_table(
        ["scenario", "len mean/max", "tokens", "static s", "static tok/s", "cont. s",
         "cont. tok/s", "speedup", "rows differ", "slot use"], rows,
    )  # fmt: skip
    print("slot use: decoded tokens (each row's first comes with its prompt's prefill) per "
          "slot and decode step of the continuous engine")  # fmt: skip
    figures["goals_met"] = {k: figures[k] >= goal for k, goal, _ in GOALS if k in figures}
    for line in goal_lines(figures):
        print(line)
    figures["uptime_load"] = os.getloadavg()[0]
    figures["seconds"] = time.perf_counter() - T0
    common.emit_json("rollout", figures)


# The rollout issue's goals: (figure, lowest ratio that meets it, what it is).
GOALS = (
    ("long_tail_speedup", 2.0, "continuous over static on the long tail"),
    ("uniform_speedup", 1.0, "continuous over static on uniform lengths (no loss)"),
    ("continuous_over_hf_uniform", 4.0, "continuous over transformers generate"),
)


def goal_lines(figures: dict) -> list[str]:
    """One line per goal in figures["goals_met"]: met, or the gap."""
    out = []
    for key, goal, what in GOALS:
        if key in figures["goals_met"]:
            v = figures[key]
            verdict = "met" if figures["goals_met"][key] else f"not met, gap {goal - v:.2f}x"
            out.append(f"goal {what}: >= {goal:g}x, measured {v:.2f}x: {verdict}")
    return out


T0 = time.perf_counter()

if __name__ == "__main__":
    app.run(main)
