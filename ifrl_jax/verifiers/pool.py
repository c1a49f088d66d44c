"""`VerifierPool`: worker processes for the verifier batch stage, created once and reused.

Workers are started with the "forkserver" context where available, else "spawn" (never
"fork": JAX may be loaded in the parent), warm up nltk and langdetect once, and then score
chunks of a batch (about `processes * chunks_per_process` chunks per batch, handed to whichever
worker is idle). `submit` returns a `concurrent.futures.Future`, so a training loop can start
verifying batch i and collect it after sampling batch i+1; a dispatcher thread moves the data.
Chunks are balanced by an estimated cost per task (language detection and tokenisation
dominate), so the workers finish together.

Time limits (the design is in `core.py`): a worker runs each (response, constraint) check in
its main thread under SIGALRM, with the limit `core.resolve_timeout(timeout_s)` (never
unbounded); one that exceeds it scores 0, is logged and is counted (`BatchReport.timeouts`). As a
backstop the parent gives each chunk a deadline of `n_checks * limit + DEADLINE_GRACE_S`; a worker
that misses it (e.g. stuck in C code that never polls for signals), or dies, is killed and
replaced, its chunk is re-run one response at a time, and a response that fails again scores 0
with status "timeout" (deadline missed) or "error" (worker died).

`shared_pool()` is the one-worker pool that the batch stage uses where SIGALRM cannot bound an
in-process check (a non-main thread): started on first use, closed at exit.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ifrl_jax.verifiers import worker
from ifrl_jax.verifiers.core import ERROR, TIMEOUT, resolve_timeout
from ifrl_jax.verifiers.layout import (
    DEFAULT_TIMEOUT_S,
    MODES,
    BatchReport,
    Constraint,
    Plan,
    assemble,
    mode_flags,
    plan_batch,
)

logger = logging.getLogger("ifrl_jax.verifiers")

DEADLINE_GRACE_S = 10.0
STARTUP_TIMEOUT_S = 120.0
SHARED_POOL_PROCESSES = 1
_MISSED_DEADLINE = "missed its deadline"


@dataclass
class _Job:
    plan: Plan
    modes: tuple[str, ...]
    flags: tuple[bool, ...]
    timeout_s: float  # resolved: never None
    future: concurrent.futures.Future
    results: list
    remaining: int
    messages: list[str] = field(default_factory=list)


@dataclass
class _Chunk:
    job: _Job
    indices: list[int]  # into job.plan.tasks
    retried: bool = False  # a single-item chunk gets one more worker before it scores 0


@dataclass
class _Worker:
    proc: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    state: str = "starting"  # starting | idle | busy
    since: float = field(default_factory=time.monotonic)
    chunk: _Chunk | None = None
    deadline: float = math.inf
    sent: bool = False  # whether `chunk` reached the worker


class VerifierPool:
    """Worker processes for `verify_batch`, created once and reused across batches.

    Close it (or use a with-block): the workers and the dispatcher thread live until then.

    Usage:
      with VerifierPool(processes=2) as pool:
        future = pool.submit(responses, constraints)   # returns at once
        ...                                            # e.g. sample the next batch
        scores, valid = future.result()

    Args:
      processes: number of worker processes.
      timeout_s: default per-check time limit (None: `core.MAX_TIMEOUT_S`, the cap of any limit).
      context: multiprocessing start method, "forkserver" (default where available) or
        "spawn"; never "fork".
      chunks_per_process: each batch is cut into about processes * this many chunks.
    """

    def __init__(
        self,
        processes: int = 2,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        context: str | None = None,
        chunks_per_process: int = 4,
    ):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        if context is None:
            methods = multiprocessing.get_all_start_methods()
            context = "forkserver" if "forkserver" in methods else "spawn"
        if context == "fork":
            raise ValueError("the 'fork' start method is unsafe once JAX is imported")
        if context == "forkserver":
            worker.add_forkserver_preload()
        self._ctx = multiprocessing.get_context(context)
        self.processes = processes
        self.timeout_s = timeout_s
        self._chunks_per_process = max(1, chunks_per_process)
        self._lock = threading.RLock()  # future callbacks may re-enter submit()
        self._pending: collections.deque[_Chunk] = collections.deque()
        self._closed = False
        self._broken: str | None = None
        self._startup_failures = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._workers = [self._spawn() for _ in range(processes)]
        self._thread = threading.Thread(target=self._loop, name="VerifierPool", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------

    def submit(
        self,
        responses: Sequence[str],
        constraints: Sequence[Sequence[Constraint]],
        *,
        loose: bool = False,
        think_mode: str = "none",
        timeout_s: float | None = None,
        width: int | None = None,
    ) -> concurrent.futures.Future:
        """Starts scoring a batch and returns at once.

        Args:
          responses: B model outputs.
          constraints: B lists of (instruction id, kwargs).
          loose: IFEval's loose mode instead of strict.
          think_mode: see `strip_think`.
          timeout_s: per-check time limit; None uses the pool's.
          width: K, the padded number of constraints; default the longest list.

        Returns:
          A Future whose `result()` is (scores [B, K] float32 0/1, valid [B, K] bool), as
          `verify_batch` returns them.
        """
        mode = "loose" if loose else "strict"
        inner = self.submit_report(
            responses,
            constraints,
            modes=(mode,),
            think_mode=think_mode,
            timeout_s=timeout_s,
            width=width,
        )
        return _relay(inner, lambda report: report.by_mode()[mode])

    def submit_modes(
        self,
        responses: Sequence[str],
        constraints: Sequence[Sequence[Constraint]],
        *,
        modes: Sequence[str] = MODES,
        think_mode: str = "none",
        timeout_s: float | None = None,
        width: int | None = None,
    ) -> concurrent.futures.Future:
        """Starts scoring a batch in several modes (loose reuses strict) and returns at once.

        Args: as `submit_report`.

        Returns:
          A Future whose `result()` is {mode: (scores [B, K], valid [B, K])}.
        """
        inner = self.submit_report(
            responses,
            constraints,
            modes=modes,
            think_mode=think_mode,
            timeout_s=timeout_s,
            width=width,
        )
        return _relay(inner, BatchReport.by_mode)

    def submit_report(
        self,
        responses: Sequence[str],
        constraints: Sequence[Sequence[Constraint]],
        *,
        modes: Sequence[str] = MODES,
        think_mode: str = "none",
        timeout_s: float | None = None,
        width: int | None = None,
    ) -> concurrent.futures.Future:
        """Starts scoring a batch and returns at once; the result counts timeouts and errors.

        Args:
          responses: B model outputs.
          constraints: B lists of (instruction id, kwargs).
          modes: any of "strict", "loose".
          think_mode: see `strip_think`.
          timeout_s: per-check time limit; None uses the pool's (both capped at
            `core.MAX_TIMEOUT_S`).
          width: K, the padded number of constraints; default the longest list.

        Returns:
          A Future whose `result()` is a `BatchReport`.
        """
        flags = mode_flags(modes)
        messages: list[str] = []
        plan = plan_batch(
            responses, constraints, think_mode=think_mode, width=width, messages=messages
        )
        future: concurrent.futures.Future = concurrent.futures.Future()
        job = _Job(
            plan,
            tuple(modes),
            flags,
            resolve_timeout(self.timeout_s if timeout_s is None else timeout_s),
            future,
            [None] * len(plan.tasks),
            0,
            messages,
        )
        chunks = [
            _Chunk(job, indices)
            for indices in worker.balanced_chunks(
                plan.tasks, self.processes * self._chunks_per_process
            )
        ]
        job.remaining = len(chunks)
        if not chunks:
            self._finish(job)
            return future
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            if self._broken:
                raise RuntimeError(f"VerifierPool is broken: {self._broken}")
            self._pending.extend(chunks)
        self._wake()
        return future

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stops the workers; pending futures fail with RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=30)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals (the dispatcher thread) ---------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker.worker_main, args=(child_conn,), name="ifrl-verifier", daemon=True
        )
        proc.start()
        child_conn.close()
        return _Worker(proc, parent_conn)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _finish(self, job: _Job) -> None:
        report = assemble(job.plan, job.results, job.modes, job.messages)
        if not job.future.done():
            job.future.set_result(report)

    def _store(self, chunk: _Chunk, results, warnings) -> None:
        for w in warnings:
            logger.warning("verify_batch: %s", w)
        chunk.job.messages.extend(warnings)
        for i, r in zip(chunk.indices, results):
            chunk.job.results[i] = r
        chunk.job.remaining -= 1
        if chunk.job.remaining == 0:
            self._finish(chunk.job)

    def _replace(self, i: int, reason: str, *, sent: bool = True) -> None:
        """Kills worker i, starts a new one, and re-plans its chunk."""
        w = self._workers[i]
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        w.conn.close()
        self._workers[i] = self._spawn()
        chunk = w.chunk
        if chunk is None:
            return
        if chunk.job.future.done():  # failed by close(); nothing to re-run
            return
        if not sent:  # the worker died before it got the chunk: not the chunk's fault
            self._pending.appendleft(chunk)
            return
        if len(chunk.indices) > 1:
            singles = [_Chunk(chunk.job, [idx]) for idx in chunk.indices]
            chunk.job.remaining += len(singles) - 1
            self._pending.extendleft(reversed(singles))
            logger.warning("verify_batch: worker %s; re-running its chunk item by item", reason)
            return
        if not chunk.retried:
            chunk.retried = True
            self._pending.appendleft(chunk)
            logger.warning("verify_batch: worker %s; retrying its item once", reason)
            return
        (idx,) = chunk.indices
        b, _, checks = chunk.job.plan.tasks[idx]
        fail = tuple(False for _ in chunk.job.flags)
        code = TIMEOUT if reason == _MISSED_DEADLINE else ERROR
        self._store(
            chunk,
            [[(fail, code) for _ in checks]],
            [f"response {b}: worker {reason}; its {len(checks)} constraint(s) scored 0"],
        )

    def _fail_all(self, error: BaseException) -> None:
        jobs = {id(c.job): c.job for c in self._pending}
        jobs.update({id(w.chunk.job): w.chunk.job for w in self._workers if w.chunk})
        self._pending.clear()
        for job in jobs.values():
            if not job.future.done():
                job.future.set_exception(error)

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # never leave futures hanging
            self._broken = f"dispatcher crashed: {e!r}"
            logger.exception("VerifierPool dispatcher crashed")
            self._fail_all(RuntimeError(self._broken))
        finally:
            for w in self._workers:
                try:
                    if w.state == "idle":
                        w.conn.send(("stop",))
                    else:
                        w.proc.kill()
                except OSError:
                    pass
            for w in self._workers:
                w.proc.join(timeout=5)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(timeout=5)
                w.conn.close()

    def _serve(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    self._fail_all(RuntimeError("VerifierPool was closed"))
                    return
                for w in self._workers:
                    if w.state == "idle" and self._pending:
                        chunk = self._pending.popleft()
                        job = chunk.job
                        tasks = [job.plan.tasks[i] for i in chunk.indices]
                        n_checks = sum(len(t[2]) for t in tasks)
                        w.chunk, w.state = chunk, "busy"
                        w.deadline = time.monotonic() + DEADLINE_GRACE_S
                        w.deadline += n_checks * job.timeout_s
                        try:
                            w.conn.send(("run", id(chunk), tasks, job.flags, job.timeout_s))
                            w.sent = True
                        except OSError:
                            w.sent, w.deadline = False, 0.0  # handled by _poll: dead worker
            now = time.monotonic()
            deadlines = [w.deadline for w in self._workers if w.state == "busy"]
            deadlines += [
                w.since + STARTUP_TIMEOUT_S for w in self._workers if w.state == "starting"
            ]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            waitables = [self._wake_r] + [w.conn for w in self._workers]
            waitables += [w.proc.sentinel for w in self._workers]
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self._wake_r in ready:
                self._wake_r.recv(4096)
            with self._lock:
                self._poll(set(ready))

    def _poll(self, ready: set) -> None:
        now = time.monotonic()
        for i, w in enumerate(self._workers):
            reason = None
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    msg, reason = None, "died"
                if msg is not None and msg[0] == "ready":
                    w.state, self._startup_failures = "idle", 0
                elif msg is not None and msg[0] == "done" and w.chunk is not None:
                    chunk, w.chunk, w.state = w.chunk, None, "idle"
                    self._store(chunk, msg[2], msg[3])
            elif w.proc.sentinel in ready or not w.proc.is_alive():
                reason = f"exited with code {w.proc.exitcode}"
            elif w.state == "busy" and now > w.deadline:
                reason = _MISSED_DEADLINE
            elif w.state == "starting" and now > w.since + STARTUP_TIMEOUT_S:
                reason = "did not start"
            if reason is None:
                continue
            if w.state == "starting":
                self._startup_failures += 1
                if self._startup_failures >= 3:
                    self._broken = f"workers fail to start (last one {reason})"
                    self._fail_all(RuntimeError(f"VerifierPool is broken: {self._broken}"))
                    self._closed = True
                    return
            self._replace(i, reason, sent=w.sent)


def _relay(inner: concurrent.futures.Future, fn) -> concurrent.futures.Future:
    """A Future holding `fn(inner.result())`, or inner's exception."""
    outer: concurrent.futures.Future = concurrent.futures.Future()

    def relay(f: concurrent.futures.Future) -> None:
        if f.exception() is not None:
            outer.set_exception(f.exception())
        else:
            outer.set_result(fn(f.result()))

    inner.add_done_callback(relay)
    return outer


_shared: tuple[int, VerifierPool] | None = None  # (owner pid, pool)
_shared_lock = threading.Lock()


def shared_pool() -> VerifierPool:
    """The process-wide one-worker pool for checks that SIGALRM cannot bound here.

    Started on first use (the worker warms up once, a second or two), replaced if it broke or
    was closed, never inherited across a fork, closed at interpreter exit.

    Returns:
      A running VerifierPool with `SHARED_POOL_PROCESSES` workers.
    """
    global _shared
    with _shared_lock:
        if _shared is not None:
            pid, pool = _shared
            if pid == os.getpid() and not pool._closed and not pool._broken:
                return pool
        pool = VerifierPool(SHARED_POOL_PROCESSES)
        _shared = (os.getpid(), pool)
        return pool


@atexit.register
def _close_shared_pool() -> None:
    if _shared is not None and _shared[0] == os.getpid():
        _shared[1].close()
