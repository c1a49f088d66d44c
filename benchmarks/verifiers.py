r"""Benchmark of the verifier batch stage on IFEval's 541 prompts with synthetic responses.

Each response is ~300 words of markdown-ish English (a title line, paragraphs, a bullet list,
bold phrases, commas, capitals); responses to the change_case prompts are lower- or upper-cased
as a model would, so language detection runs. They are not written to the constraints, so
most checks fail and loose mode tries every variant (language detection on English replies to
"answer in Hindi" prompts is the costliest path). Every repeat uses fresh responses (new seed)
so the per-text caches never hit across repeats. Prints, for all 541 prompts, wall time (best
and median of the repeats), CPU seconds (this process, or the pool's workers) and checks/s:
in this process and on a pool of 2 worker processes, strict and strict+loose. Wall time on a
shared machine is noisy; quote the best of the repeats next to the CPU seconds.

  python -m benchmarks.verifiers \
    --input_data=../shared/upstream-verl-if-data/val_set.jsonl --repeats=5
"""

import json
import os
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
_WORDS = flags.DEFINE_integer("words", 250, "Words of body text per response (~300 in all).")

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
    """Empties this process's per-text caches (each repeat also uses fresh texts)."""
    nlp.sentences.cache_clear()
    nlp.detect_language.cache_clear()
    nlp._fast_detector()._by_ngrams.clear()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc); 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str]) -> None:
    del argv
    prompts = ifeval.read_prompts(_INPUT_DATA.value)
    constraints = [list(zip(p.instruction_id_list, p.kwargs)) for p in prompts]
    n_checks = sum(len(c) for c in constraints)
    repeats = _REPEATS.value
    batches = [make_responses(prompts, seed, _WORDS.value) for seed in range(repeats + 1)]
    mean_words = statistics.mean(len(r.split()) for r in batches[0])
    nlp.warmup()
    verify_batch_modes(batches[-1], constraints)  # warm the imports and regex caches
    results = {}

    def timed(label, fn, cpu_of=None):
        walls, cpus = [], []
        for i in range(repeats):
            _clear_caches()
            cpu0 = cpu_of() if cpu_of else time.process_time()
            start = time.perf_counter()
            fn(batches[i])
            walls.append(time.perf_counter() - start)
            cpus.append((cpu_of() if cpu_of else time.process_time()) - cpu0)
        best, median = min(walls), statistics.median(walls)
        print(f"{label:<30} wall best {best:.3f} s  median {median:.3f} s  "
              f"cpu {min(cpus):.3f} s  {n_checks / best:>6,.0f} checks/s")  # fmt: skip
        results[label] = {"best_s": round(best, 4), "median_s": round(median, 4)}
        results[label]["cpu_s"] = round(min(cpus), 4)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{len(os.sched_getaffinity(0))} cores; load average {load}")
    print(f"{len(prompts)} prompts, {n_checks} constraints, ~{mean_words:.0f} words/response")
    timed("1 process strict", lambda r: verify_batch_modes(r, constraints, modes=("strict",)))
    timed("1 process strict+loose", lambda r: verify_batch_modes(r, constraints))
    with VerifierPool(_PROCESSES.value) as pool:
        pool.submit_modes(batches[-1], constraints).result()  # workers ready and warm
        workers_cpu = lambda: sum(_cpu_seconds(pid) for pid in pool.pids)
        n = _PROCESSES.value
        timed(f"pool({n}) strict", lambda r: pool.submit(r, constraints).result(), workers_cpu)
        timed(
            f"pool({n}) strict+loose",
            lambda r: pool.submit_modes(r, constraints).result(),
            workers_cpu,
        )
    print(json.dumps({"prompts": len(prompts), "checks": n_checks, **results}))


if __name__ == "__main__":
    app.run(main)
