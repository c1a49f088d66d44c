r"""Greedy generation tokens/s: ours vs transformers `generate`, and vs the bandwidth limit.

A Qwen2.5-0.5B-shaped model (preset `qwen2_5_0_5b`, `--layers` overriding its depth) with random
weights, fp32, on CPU, in one process: `--batch` prompts of `--prompt` tokens, `--new` new
tokens each, greedy, no early stop (an EOS id that never occurs), so both sides decode exactly
the same number of tokens.

  ours      `sampling.generate` (jitted prefill + while_loop decode, KV cache), timed whole.
  prefill   the same with max_new_tokens=1; decode time = whole - prefill.
  hf        transformers `generate(do_sample=False, min_new_tokens=max_new_tokens)`.
  limit     every decode step reads all weights once: tokens/s <= batch * read bandwidth /
            weight bytes (the measured jitted-sum bandwidth of this machine, same process).
  XLA bound one jitted call of nothing but the decode step's weight matmuls ([batch, D] x
            [D, out] for every projection of every layer and the LM head, each on its own
            weight array, as many bytes as the model): what XLA's own kernels need per step at
            this row count, before any attention, sampling or loop overhead. "of XLA" = that
            bound / our measured decode step.

Run it with nothing else on the cores:

  python -m benchmarks.generate --layers=4 --batch=8 --prompt=64 --new=64
  python -m benchmarks.generate --layers=24   # the full 0.5B depth
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from ifrl_jax import models, sampling

_LAYERS = flags.DEFINE_integer("layers", 4, "Decoder layers (the preset's widths are kept).")
_BATCH = flags.DEFINE_integer("batch", 8, "Prompts.")
_PROMPT = flags.DEFINE_integer("prompt", 64, "Prompt tokens.")
_NEW = flags.DEFINE_integer("new", 64, "New tokens per prompt.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (best is reported).")
_CACHE = flags.DEFINE_enum("cache_dtype", "float32", ["float32", "bfloat16"], "KV cache dtype.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip transformers.")
_SCAN = flags.DEFINE_bool("scan_layers", False, "Ours: stacked layers under lax.scan.")


def decode_matmuls(cfg, rows: int) -> list[common.Matmul]:
    """The weight matmuls of one decode step over `rows` sequences (one new token each)."""
    return [mm for mm in common.model_matmuls(cfg, rows, 1) if not mm.name.startswith("attn")]


def xla_decode_bound(cfg, rows: int, repeats: int) -> float:
    """Seconds per decode step that XLA's own dots need: every matmul of `decode_matmuls`, each
    on its own weight array (so that, as in the model, the weights stream from memory), in one
    jitted call of nothing but those dots."""
    mms = decode_matmuls(cfg, rows)
    weights = [jnp.full((mm.k, mm.n), 0.5, jnp.float32) for mm in mms for _ in range(mm.count)]
    xs = {k: jnp.full((rows, k), 0.5, jnp.float32) for k in {mm.k for mm in mms}}
    dots = jax.jit(lambda xs, ws: [xs[w.shape[0]] @ w for w in ws])
    return common.time_fn(lambda: dots(xs, weights), repeats=max(repeats, 5)).best


def main(argv):
    del argv
    import torch
    import transformers

    print(common.machine_line())
    torch.set_num_threads(common.num_cores())
    cfg = models.get_preset("qwen2_5_0_5b", num_layers=_LAYERS.value, scan_layers=_SCAN.value)
    params = models.init_params(cfg, jax.random.key(0))
    b, p, m = _BATCH.value, _PROMPT.value, _NEW.value
    ids = np.random.default_rng(0).integers(1, cfg.vocab_size, (b, p)).astype(np.int32)
    mask = np.ones_like(ids)
    gen = lambda new: sampling.generate(
        cfg, params, ids, mask, max_new_tokens=new, temperature=0.0, eos_ids=[-1],
        cache_dtype=_CACHE.value, buckets=(p,),
    ).tokens  # fmt: skip
    whole = common.time_fn(lambda: gen(m), repeats=_REPEATS.value)
    prefill = common.time_fn(lambda: gen(1), repeats=_REPEATS.value)
    decode_s = max(whole.best - prefill.best, 1e-9)
    ours_tps = b * m / whole.best
    ours_decode_tps = b * (m - 1) / decode_s

    step_s = decode_s / (m - 1)
    bound_s = xla_decode_bound(cfg, b, _REPEATS.value)
    weight_bytes = cfg.num_params() * 4
    bw = common.read_bandwidth()
    limit_tps = b * bw / weight_bytes
    rows = [
        ["ours generate", whole.best, whole.median, ours_tps],
        ["ours prefill only", prefill.best, prefill.median, b / prefill.best],
        ["ours decode (whole - prefill)", decode_s, decode_s, ours_decode_tps],
    ]
    figures = {
        "layers": cfg.num_layers, "batch": b, "prompt": p, "new": m,
        "ours_tokens_per_s": ours_tps, "ours_decode_tokens_per_s": ours_decode_tps,
        "bandwidth_gb_s": bw / 1e9, "weight_gb": weight_bytes / 1e9,
        "bandwidth_limit_tokens_per_s": limit_tps,
        "ours_decode_of_limit": ours_decode_tps / limit_tps,
        "ours_decode_step_s": step_s, "xla_decode_bound_step_s": bound_s,
        "ours_decode_of_xla": bound_s / step_s,
        "xla_bound_of_limit": weight_bytes / bw / bound_s,
    }  # fmt: skip
    if not _SKIP_TORCH.value:
        hf_cfg = transformers.Qwen2Config(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
            tie_word_embeddings=cfg.tie_word_embeddings, rope_theta=cfg.rope_theta,
            max_position_embeddings=cfg.max_position_embeddings,
        )  # fmt: skip
        hf = transformers.Qwen2ForCausalLM(hf_cfg).eval()
        tids, tmask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)

        def hf_gen():
            with torch.no_grad():
                return hf.generate(
                    input_ids=tids, attention_mask=tmask, do_sample=False, max_new_tokens=m,
                    min_new_tokens=m, pad_token_id=0, eos_token_id=None,
                )  # fmt: skip

        hf_t = common.time_fn(hf_gen, repeats=_REPEATS.value)
        rows.append(["transformers generate", hf_t.best, hf_t.median, b * m / hf_t.best])
        figures.update(hf_tokens_per_s=b * m / hf_t.best, ratio_vs_hf=hf_t.best / whole.best)
    common.print_table(["what", "best s", "median s", "tokens/s"], rows)
    share = ours_decode_tps / limit_tps
    print(f"bandwidth {bw / 1e9:.1f} GB/s, weights {weight_bytes / 1e9:.2f} GB -> limit "
          f"{limit_tps:.0f} tokens/s; ours decode = {share:.0%} of it")  # fmt: skip
    print(f"decode step: ours {step_s * 1e3:.1f} ms; XLA's dots alone {bound_s * 1e3:.1f} ms "
          f"(= {weight_bytes / bw / bound_s:.0%} of the bandwidth limit); ours = "
          f"{bound_s / step_s:.0%} of XLA's bound")  # fmt: skip
    common.emit_json("generate", figures)


if __name__ == "__main__":
    app.run(main)
