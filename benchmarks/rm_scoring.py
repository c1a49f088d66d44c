r"""Reward-model scoring throughput: all pairs of a rollout batch at once vs one pair per call.

Same model, same process, same pairs: (response, constraint) pairs from the shipped tiny
instruction set (its responses and constraint texts, cycled to --pairs), scored by
`reward_model.RewardModelScorer` (a) in one scorer call (length-bucketed jitted calls of at most
B rows, for each B in --batch_sizes: what GRPO does) and (b) one pair per call (what upstream's
Flask server does). Host tokenization is timed on its own. Random weights (speed only).

  python -m benchmarks.rm_scoring --preset=tiny --pairs=256 --single=64       # CPU, ~1 min
  python -m benchmarks.rm_scoring --preset=qwen2_5_0_5b --pairs=1024 --single=128 \
    --batch_sizes=32,128 --max_len=512                                        # GPU
"""

from __future__ import annotations

import time

import jax
from absl import app, flags

from benchmarks import common
from ifrl_jax import models, pairs, records
from ifrl_jax import reward_model as rm
from ifrl_jax import tokenizer as tokenizer_lib

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (vocab widened to the tokenizer).")
_PAIRS = flags.DEFINE_integer("pairs", 256, "Pairs in the batched call (a rollout batch).")
_SINGLE = flags.DEFINE_integer("single", 64, "Pairs timed one per call (a prefix of them).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["8", "64"], "Most rows per jitted call, each timed.")
_MAX_LEN = flags.DEFINE_integer("max_len", 256, "Longest input in tokens.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Params and compute.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (best is reported).")


def main(argv: list[str]) -> None:
    del argv
    print(common.machine_line())
    tok = tokenizer_lib.load_tokenizer(tokenizer_lib.TINY_TOKENIZER_DIR)
    base = models.get_preset(_PRESET.value)
    vocab, dtype = max(base.vocab_size, tok.vocab_size), _DTYPE.value
    cfg = base.replace(num_labels=2, pad_token_id=tok.pad_id, param_dtype=dtype, dtype=dtype,
                       vocab_size=vocab)  # fmt: skip
    params = models.init_params(cfg, jax.random.key(0))
    recs = records.load_records(str(pairs.ASSETS / "train.jsonl")).records
    rows = pairs.pairs_from_responses(
        recs, pairs.load_responses(str(pairs.ASSETS / "train_responses.jsonl"), recs)
    )
    rows = [rows[i % len(rows)] for i in range(_PAIRS.value)]
    responses, texts = [r["response"] for r in rows], [r["constraint"] for r in rows]
    kw = dict(max_len=_MAX_LEN.value)
    n1 = min(_SINGLE.value, len(rows))
    table, rates, calls = [], {}, {}
    for bs in map(int, _BATCHES.value):
        scorer = rm.RewardModelScorer(cfg, params, tok, batch_size=bs, **kw)
        t0 = time.perf_counter()
        common.block(scorer(responses, texts))  # compiles every (rows, length) program used
        compiled = time.perf_counter() - t0
        t = common.time_fn(lambda s=scorer: s(responses, texts), warmup=0, repeats=_REPEATS.value)
        calls[bs] = (scorer.num_calls) // (_REPEATS.value + 1)
        rates[bs] = len(rows) / t.best
        table.append([f"batched, <= {bs} rows/call", len(rows), calls[bs], t.best, t.median,
                      rates[bs], compiled])  # fmt: skip
    one_by_one = lambda: [scorer([r], [c]) for r, c in zip(responses[:n1], texts[:n1])]
    one_by_one()  # compiles the 1-row programs
    single = common.time_fn(one_by_one, warmup=0, repeats=_REPEATS.value)
    encode = common.time_fn(lambda: rm.encode_inputs(tok, responses, texts, **kw), warmup=0,
                            repeats=_REPEATS.value)  # fmt: skip
    lengths = [len(s) for s in rm.encode_inputs(tok, responses, texts, **kw).seqs]
    single_rate = n1 / single.best
    table.append(["one pair per call", n1, n1, single.best, single.median, single_rate, ""])
    table.append(["tokenize only", len(rows), 0, encode.best, encode.median,
                  len(rows) / encode.best, ""])  # fmt: skip
    common.print_table(["mode", "pairs", "calls", "best s", "median s", "pairs/s", "compile s"],
                       table)  # fmt: skip
    best = max(rates, key=rates.get)
    print(f"batched (<= {best} rows/call) / one pair per call: {rates[best] / single_rate:.1f}x "
          f"(inputs {min(lengths)}-{max(lengths)} tokens)")  # fmt: skip
    common.emit_json(
        "rm_scoring",
        dict(preset=_PRESET.value, dtype=_DTYPE.value, backend=jax.default_backend(),
             pairs=len(rows), max_len=_MAX_LEN.value, mean_tokens=sum(lengths) / len(lengths),
             batched_pairs_per_s={str(k): v for k, v in rates.items()},
             calls_batched={str(k): v for k, v in calls.items()},
             single_pairs_per_s=single_rate, speedup=rates[best] / single_rate,
             best_batch_size=best, tokenize_pairs_per_s=len(rows) / encode.best),
    )  # fmt: skip


if __name__ == "__main__":
    app.run(main)
