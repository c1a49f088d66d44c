r"""Benchmark of the verifier batch stage on IFEval's 541 prompts with synthetic responses.

Each response is ~300 words of markdown-ish English (a title line, paragraphs, a bullet list,
bold phrases, commas, capitals); responses to the change_case prompts are lower- or upper-cased
as a model would, so language detection runs. Every repeat uses fresh responses (new seed) so
the per-text caches never hit across repeats. Prints verifications/s in this process (strict;
strict+loose) and the wall time of all 541 prompts, strict+loose, on a 2-process pool.

  PYTHONPATH=. python benchmarks/verifiers.py \
    --input_data=../shared/upstream-verl-if-data/val_set.jsonl --repeats=5
"""

import json
import random
import statistics
import time

from absl import app, flags

from ifrl_jax.verifiers import VerifierPool, ifeval, nlp, verify_batch_modes

_INPUT_DATA = flags.DEFINE_string(
    "input_data", "../shared/upstream-verl-if-data/val_set.jsonl", "IFEval prompts JSONL."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (best is kept).")
_PROCESSES = flags.DEFINE_integer("processes", 2, "Pool worker processes.")
_WORDS = flags.DEFINE_integer("words", 300, "Approximate words per response.")

_VOCAB = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so what more about than into them can only other new some could time these two may then "
    "do first any my now such like our over man me even most made after also did many before "
    "must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old "
    "year off come since against go came right used take three water history energy design"
).split()


def synthetic_response(rng: random.Random, n_words: int, case: str = "") -> str:
    """A markdown-ish English response of about `n_words` words."""
    lines = [f"**{' '.join(rng.choice(_VOCAB) for _ in range(4)).title()}**", ""]
    words = 0
    while words < n_words:
        sentences = []
        for _ in range(rng.randint(3, 6)):
            w = [rng.choice(_VOCAB) for _ in range(rng.randint(8, 18))]
            if rng.random() < 0.5:
                w.insert(rng.randint(1, len(w) - 1), rng.choice(["USA", "AI", "NASA", "Dr."]))
            if rng.random() < 0.6:
                w[rng.randint(0, len(w) - 2)] += ","
            if rng.random() < 0.2:
                k = rng.randint(0, len(w) - 2)
                w[k] = f"*{w[k]}*"
            sentences.append(" ".join(w).capitalize() + rng.choice([".", ".", ".", "!", "?"]))
            words += len(w)
        lines += [" ".join(sentences), ""]
        if rng.random() < 0.3:
            lines += [f"* {rng.choice(_VOCAB)} {rng.choice(_VOCAB)}" for _ in range(3)] + [""]
    lines.append("Let me know if you have any other questions.")
    text = "\n".join(lines)
    return text.lower() if case == "lower" else text.upper() if case == "upper" else text


def make_responses(prompts, seed: int, n_words: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for p in prompts:
        case = ""
        if "change_case:english_lowercase" in p.instruction_id_list:
            case = "lower"
        elif "change_case:english_capital" in p.instruction_id_list:
            case = "upper"
        out.append(synthetic_response(rng, n_words, case))
    return out


def _clear_caches() -> None:
    nlp.sentences.cache_clear()
    nlp.detect_language.cache_clear()


def main(argv: list[str]) -> None:
    del argv
    prompts = ifeval.read_prompts(_INPUT_DATA.value)
    constraints = [list(zip(p.instruction_id_list, p.kwargs)) for p in prompts]
    n_checks = sum(len(c) for c in constraints)
    n_words = _WORDS.value
    batches = [make_responses(prompts, seed, n_words) for seed in range(_REPEATS.value + 1)]
    mean_words = statistics.mean(len(r.split()) for r in batches[0])
    nlp.warmup()
    verify_batch_modes(batches[-1], constraints)  # warm the imports and regex caches

    def timed(fn, label):
        times = []
        for i in range(_REPEATS.value):
            _clear_caches()
            start = time.perf_counter()
            fn(batches[i])
            times.append(time.perf_counter() - start)
        best, median = min(times), statistics.median(times)
        print(f"{label:<44} best {best:.3f} s  median {median:.3f} s  ({n_checks / best:,.0f} "
              "checks/s at best)")  # fmt: skip
        return best, median

    print(f"{len(prompts)} prompts, {n_checks} constraints, ~{mean_words:.0f} words/response")
    single_strict = timed(
        lambda r: verify_batch_modes(r, constraints, modes=("strict",)), "1 process, strict"
    )
    single_both = timed(lambda r: verify_batch_modes(r, constraints), "1 process, strict+loose")
    with VerifierPool(_PROCESSES.value) as pool:
        pool.submit_modes(batches[-1], constraints).result()  # workers ready and warm
        pool_both = timed(
            lambda r: pool.submit_modes(r, constraints).result(),
            f"pool of {_PROCESSES.value}, strict+loose",
        )
    print(
        json.dumps(
            {
                "prompts": len(prompts),
                "checks": n_checks,
                "single_strict_checks_per_s": round(n_checks / single_strict[0]),
                "single_strict_loose_s": round(single_both[0], 4),
                "pool_strict_loose_s": round(pool_both[0], 4),
                "pool_strict_loose_median_s": round(pool_both[1], 4),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
