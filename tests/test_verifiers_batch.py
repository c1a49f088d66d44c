"""The batch stage: `verify_batch` layout, and the reusable `VerifierPool` with time limits."""

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest

from ifrl_jax.verifiers import (
    CHECKS,
    STATUS_NAMES,
    VerifierPool,
    core,
    nlp,
    verify,
    verify_batch,
    verify_batch_modes,
    verify_batch_report,
    verify_outcome,
)

NC = ("punctuation:no_comma", {})
LOWER = ("change_case:english_lowercase", {})
WORDS = ("length_constraints:number_words", {"num_words": 3, "relation": "at least"})
SENTS = ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"})
SOFT = ("style:open_ended", {})
CATASTROPHIC = ("keywords:existence", {"keywords": ["(a+)+$"]})
STALL_TEXT = "a" * 40 + "b"


def _batch(n: int = 40):
    """A varied batch: strict/loose differences, soft ids, ragged lists."""
    base = [
        "Sure, here it is:\nthis is a simple english sentence with no commas at all.",
        "one two. three four.",
        "**Hello** world, again.",
        "",
        "plain text without punctuation",
    ]
    cons = [[NC, LOWER], [WORDS, SENTS, SOFT], [SOFT, NC], [NC], [LOWER, WORDS, NC, SENTS]]
    return [base[i % 5] for i in range(n)], [cons[i % 5] for i in range(n)]


def test_layout_soft_ids_and_padding():
    scores, valid = verify_batch(["a, b", "fine"], [[NC, SOFT], [SOFT]], width=3)
    assert scores.dtype == np.float32 and valid.dtype == bool
    np.testing.assert_array_equal(valid, [[True, False, False], [False, False, False]])
    np.testing.assert_array_equal(scores, np.zeros((2, 3)))
    scores, valid = verify_batch(["no comma"], [[SOFT, NC]])
    np.testing.assert_array_equal(scores, [[0.0, 1.0]])
    np.testing.assert_array_equal(valid, [[False, True]])
    with pytest.raises(ValueError, match="width"):
        verify_batch(["x"], [[NC, NC]], width=1)
    with pytest.raises(ValueError, match="responses"):
        verify_batch(["x", "y"], [[NC]])


def test_bad_spec_and_unknown_id_score_zero_but_count(caplog):
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        scores, valid = verify_batch(["x"], [[("keywords:existence", {}), ("bogus:id", {}), NC]])
    np.testing.assert_array_equal(scores, [[0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(valid, [[True, True, True]])
    assert "missing kwarg 'keywords'" in caplog.text and "bogus:id" in caplog.text


@pytest.mark.parametrize(
    "think_mode,expected",
    [("none", [0.0, 1.0]), ("required", [1.0, 0.0]), ("optional", [1.0, 1.0])],
)
def test_think_modes(think_mode, expected):
    responses = ["<think>hmm, well</think>\n\nno commas", "no tag at all"]
    scores, valid = verify_batch(responses, [[NC], [NC]], think_mode=think_mode)
    np.testing.assert_array_equal(scores[:, 0], expected)
    assert valid.all()


@pytest.mark.parametrize("loose", [False, True])
def test_batch_equals_single_verify(loose):
    responses, constraints = _batch(10)
    scores, _ = verify_batch(responses, constraints, loose=loose)
    for b, (resp, cons) in enumerate(zip(responses, constraints)):
        for j, (cid, kw) in enumerate(cons):
            if cid != SOFT[0]:
                assert scores[b, j] == float(verify(cid, kw, resp, loose=loose)), (b, j)
    modes = verify_batch_modes(responses, constraints)
    np.testing.assert_array_equal(modes["loose" if loose else "strict"][0], scores)
    assert (modes["loose"][0] >= modes["strict"][0]).all()
    assert (modes["loose"][0] > modes["strict"][0]).any()


def test_in_process_time_limit(caplog):
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        start = time.monotonic()
        scores, valid = verify_batch([STALL_TEXT], [[CATASTROPHIC, NC]], timeout_s=0.2)
    assert time.monotonic() - start < 5
    np.testing.assert_array_equal(scores, [[0.0, 1.0]])
    assert valid.all() and "time limit" in caplog.text


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(processes=2, timeout_s=0.5) as p:
        yield p


def test_pool_equals_in_process_and_is_reused(pool):
    responses, constraints = _batch(40)
    pids = pool.pids
    expected = verify_batch_modes(responses, constraints)
    # Overlap: two batches in flight before either is collected.
    first = pool.submit_modes(responses, constraints)
    second = pool.submit(responses[::-1], constraints[::-1], loose=True)
    got = first.result(timeout=120)
    for mode in ("strict", "loose"):
        np.testing.assert_array_equal(got[mode][0], expected[mode][0])
        np.testing.assert_array_equal(got[mode][1], expected[mode][1])
    scores, valid = second.result(timeout=120)
    np.testing.assert_array_equal(scores, expected["loose"][0][::-1])
    np.testing.assert_array_equal(valid, expected["loose"][1][::-1])
    scores, _ = verify_batch(responses, constraints, pool=pool)
    np.testing.assert_array_equal(scores, expected["strict"][0])
    assert pool.pids == pids  # the same worker processes served every batch


def test_pool_stalled_item_times_out(pool, caplog):
    responses, constraints = _batch(20)
    responses[7], constraints[7] = STALL_TEXT, [CATASTROPHIC, NC]
    expected, _ = verify_batch(responses, constraints, timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        start = time.monotonic()
        scores, valid = pool.submit(responses, constraints, timeout_s=0.2).result(timeout=60)
    assert time.monotonic() - start < 10
    np.testing.assert_array_equal(scores, expected)
    assert scores[7, 0] == 0.0 and scores[7, 1] == 1.0 and valid[7, :2].all()
    assert "exceeded the 0.2s time limit" in caplog.text


def test_pool_replaces_a_killed_worker(pool, caplog):
    responses, constraints = _batch(12)
    responses[0], constraints[0] = STALL_TEXT, [CATASTROPHIC, NC]
    expected, _ = verify_batch(responses, constraints, timeout_s=0.2)
    old = pool.pids
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        future = pool.submit(responses, constraints, timeout_s=1.0)
        time.sleep(0.3)  # the first chunk is now stuck in the catastrophic regex
        os.kill(old[0], signal.SIGKILL)
        os.kill(old[1], signal.SIGKILL)
        scores, _ = future.result(timeout=120)
    np.testing.assert_array_equal(scores, expected)
    assert not set(pool.pids) & set(old)
    assert "re-running its chunk item by item" in caplog.text or "exited" in caplog.text


def test_closed_pool_refuses_work():
    p = VerifierPool(processes=1)
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.submit(["x"], [[NC]])


def test_balanced_chunks_cover_every_task_once():
    from ifrl_jax.verifiers.worker import balanced_chunks as _balanced_chunks
    from ifrl_jax.verifiers.worker import estimated_cost as _estimated_cost

    heavy = [(0, "x" * 3000, [(0, "language:response_language", {})])] * 3
    light = [(0, "x" * 100, [(0, "punctuation:no_comma", {})])] * 40
    tasks = heavy + light
    chunks = _balanced_chunks(tasks, 4)
    assert sorted(i for c in chunks for i in c) == list(range(len(tasks)))
    costs = [sum(_estimated_cost(tasks[i]) for i in c) for c in chunks]
    assert sum(i < 3 for i in chunks[0]) <= 1  # the heavy tasks are spread out
    assert max(costs) <= max(_estimated_cost(t) for t in tasks) + min(costs)
    assert _balanced_chunks([], 4) == []


# ----------------------------------------------------------------------------- time limits
# `(.|.)*~` backtracks through 2^n paths on a text without "~": it never finishes on its own.
STALL = ("keywords:existence", {"keywords": ["(.|.)*~"]})
STALL_LONG_TEXT = "x" * 60


def _in_thread(fn):
    """Runs fn() in a new (non-main) thread; returns (its result, seconds), or fails after 30 s."""
    out = {}

    def target():
        start = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:  # surfaced below
            out["error"] = e
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the check stalled its thread"
    if "error" in out:
        raise out["error"]
    return out["value"], out["seconds"]


def test_thread_mode_times_out_and_counts():
    report, seconds = _in_thread(
        lambda: verify_batch_report([STALL_LONG_TEXT, "fine"], [[STALL, NC], [NC]], timeout_s=0.5)
    )
    assert seconds < 10
    np.testing.assert_array_equal(report.scores["strict"], [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(report.valid, [[True, True], [True, False]])
    assert (report.timeouts, report.errors) == (1, 0)
    assert report.status[0, 0] == STATUS_NAMES.index("timeout")
    assert any("exceeded the 0.5s time limit" in m for m in report.messages)


def test_thread_mode_verify_times_out():
    outcome, seconds = _in_thread(lambda: verify_outcome(*STALL, STALL_LONG_TEXT, timeout_s=0.5))
    assert seconds < 10
    assert (outcome.passed, outcome.status) == (False, "timeout")
    outcome, _ = _in_thread(lambda: verify_outcome(*NC, "no comma"))
    assert (outcome.passed, outcome.status) == (True, "ok")


def test_no_limit_means_the_ceiling_in_every_mode(monkeypatch, pool):
    monkeypatch.setattr(core, "MAX_TIMEOUT_S", 0.5)
    here = verify_batch_report([STALL_LONG_TEXT], [[STALL]], timeout_s=None)
    there, seconds = _in_thread(
        lambda: verify_batch_report([STALL_LONG_TEXT], [[STALL]], timeout_s=None)
    )
    pooled = pool.submit_report([STALL_LONG_TEXT], [[STALL]], timeout_s=1e9).result(timeout=30)
    for report in (here, there, pooled):
        assert report.scores["strict"][0, 0] == 0.0 and report.timeouts == 1
    assert seconds < 10
    assert core.resolve_timeout(None) == core.resolve_timeout(1e9) == 0.5
    assert core.resolve_timeout(0.2) == 0.2


def test_process_mode_times_out_and_counts(pool):
    start = time.monotonic()
    report = pool.submit_report(
        [STALL_LONG_TEXT, "a, " + STALL_LONG_TEXT], [[NC, STALL], [STALL]], timeout_s=0.5
    ).result(timeout=30)
    assert time.monotonic() - start < 10
    np.testing.assert_array_equal(report.scores["loose"], [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(report.scores["strict"], [[1.0, 0.0], [0.0, 0.0]])
    assert (report.timeouts, report.errors) == (2, 0)
    scores, valid = verify_batch(
        [STALL_LONG_TEXT], [[NC, STALL]], pool=pool, timeout_s=0.5
    )  # the plain API on a pool: the same verdicts
    np.testing.assert_array_equal(scores, [[1.0, 0.0]])


def test_report_counts_errors_and_bad_specs(monkeypatch):
    def crash(text, kw):
        raise ValueError("boom")

    monkeypatch.setitem(CHECKS, "startend:quotation", crash)
    report = verify_batch_report(
        ['"quoted"', "x"],
        [[("startend:quotation", {}), NC, ("keywords:existence", {})], [SOFT, NC]],
    )
    assert (report.errors, report.timeouts, report.bad_specs) == (1, 0, 1)
    assert [STATUS_NAMES[c] for c in report.status[0]] == ["error", "ok", "bad_spec"]
    np.testing.assert_array_equal(report.scores["strict"], [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])


def test_time_limit_keeps_an_enclosing_timer():
    nlp.warmup()  # a TimeLimit loads nltk/langdetect first: seconds, on a cold process
    fired = []
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, with method signal
    outer_due = time.monotonic() + outer_left
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(time.monotonic()))
    try:
        # An enclosing timer due in 5 s survives a quick batch: same handler, about 5 s left.
        set_at = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        verify_batch([STALL_TEXT], [[NC]])
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert abs(left - (5.0 - (time.monotonic() - set_at))) < 0.5 and not fired
        # One due in 0.2 s fires during a check that times out at 1 s; the check still stops.
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        report = verify_batch_report([STALL_LONG_TEXT], [[STALL]], timeout_s=1.0)
        assert report.timeouts == 1 and len(fired) == 1
        assert 0.15 < fired[0] - start < 0.9 and time.monotonic() - start < 5
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer_due - time.monotonic(), 1e-3))
