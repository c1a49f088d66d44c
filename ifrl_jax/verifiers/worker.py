"""What a verifier worker process runs, and how a batch is dealt out to the workers."""

from __future__ import annotations

import heapq
import os
import signal

from ifrl_jax.verifiers import nlp
from ifrl_jax.verifiers.layout import run_tasks

PRELOAD = "ifrl_jax.verifiers._preload"


# Relative cost per character of the checks that dominate run time (language detection,
# Punkt, word tokenisation); the rest are regex scans. Used only to order the work.
_HEAVY = {
    "language:response_language": 8.0,
    "change_case:capital_word_frequency": 4.0,
    "length_constraints:number_sentences": 3.0,
    "change_case:english_capital": 1.0,
    "change_case:english_lowercase": 1.0,
}


def estimated_cost(task) -> float:
    """Rough relative cost of a task, used to balance the chunks."""
    _, text, checks = task
    return (len(text or "") + 100) * sum(_HEAVY.get(cid, 0.1) for _, cid, _ in checks)


def balanced_chunks(tasks, n_chunks: int) -> list[list[int]]:
    """Deals task indices into up to `n_chunks` chunks of about equal estimated cost.

    Greedy longest-processing-time: the costliest task goes to the cheapest chunk so far.
    """
    n_chunks = max(1, min(n_chunks, len(tasks)))
    heap = [(0.0, k) for k in range(n_chunks)]
    chunks: list[list[int]] = [[] for _ in range(n_chunks)]
    for i in sorted(range(len(tasks)), key=lambda i: -estimated_cost(tasks[i])):
        total, k = heapq.heappop(heap)
        chunks[k].append(i)
        heapq.heappush(heap, (total + estimated_cost(tasks[i]), k))
    return [c for c in chunks if c]


def add_forkserver_preload() -> None:
    """Asks the forkserver, if not started yet, to load nltk/langdetect once before forking."""
    from multiprocessing import forkserver

    current = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
    if PRELOAD not in current:
        forkserver.set_forkserver_preload(current + [PRELOAD])


def worker_main(conn) -> None:
    """Worker process: warm up, then score chunks until told to stop or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    nlp.warmup()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            return
        _, chunk_id, tasks, flags, timeout_s = msg
        results, warnings = run_tasks(tasks, flags, timeout_s)
        conn.send(("done", chunk_id, results, warnings))
