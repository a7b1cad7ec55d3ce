"""The plan's thread pool (`runtime.fast.threads.Parallel`): every index of a split call is
computed exactly once, by the caller or a helper thread, whichever claims its slice; errors
reach the caller only after every started slice has ended; calls from inside a slice or from
another thread run inline. `_cpu` is patched: to -1 (unknown: helpers always claim slices) or
to a constant (helpers always on the caller's CPU: the caller computes every slice alone)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from graphnet.runtime.fast import threads


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """Each test starts with helpers woken (no backoff left over from an earlier test)."""
    monkeypatch.setattr(threads, "_skip", 0)
    monkeypatch.setattr(threads, "_misses", 0)


@pytest.fixture(params=["helpers", "caller_alone"])
def cpu(request, monkeypatch):
    same = request.param == "caller_alone"
    monkeypatch.setattr(threads, "_cpu", (lambda: 0) if same else (lambda: -1))
    return request.param


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 32])
def test_every_index_is_computed_once_slice_i_with_scratch_i(cpu, workers, n):
    par = threads.Parallel(workers)
    for _ in range(20):  # helpers woken for a call the caller finished alone wake to the next
        counts = np.zeros(n, int)
        seen = []

        def fn(lo, hi, scratch, counts=counts, seen=seen):
            assert 0 <= lo < hi <= n
            counts[lo:hi] += 1  # (slices are disjoint: no two threads write one element)
            seen.append((lo, hi, id(scratch)))

        par(n, fn, flops=threads.SPLIT_MIN_FLOPS)
        assert (counts == 1).all()
        # slice i of w: [n * i // w, n * (i + 1) // w) with scratch i, whoever computed it
        # (the arena records each scratch's workspaces: the same in every run)
        w = min(workers, n)
        want = {(n * i // w, n * (i + 1) // w, id(par.scratch[i])) for i in range(w)}
        assert sorted(seen) == sorted(want)


@pytest.mark.parametrize("workers", [3, 4])
def test_the_caller_waits_for_the_last_of_several_helpers(monkeypatch, workers):
    """GRAPHNET_NUM_THREADS=3+: the caller, done with its slice, waits while two helpers still
    compute theirs; the first helper to finish must leave the caller's wait to the last one
    (it cleared the flag, and the last one then released nobody: the run hung for good). The
    caller's slice ends only once every helper has started one (so the helpers surely take
    part), the helpers' slices end one after another; the calls run on a daemon thread, so a
    hang fails the test instead of the suite."""
    monkeypatch.setattr(threads, "_cpu", lambda: -1)  # helpers work on any CPU
    par = threads.Parallel(workers)
    done, all_started = [], []

    def calls():
        for _ in range(20):
            started = threading.Semaphore(0)

            def fn(lo, hi, scratch, started=started):
                if lo == 0:  # the caller's slice (claimed first): wait for every helper's
                    all_started.append(all(started.acquire(timeout=10) for _ in range(workers - 1)))
                else:
                    started.release()
                    time.sleep(0.002 * lo)

            par(workers, fn, flops=threads.SPLIT_MIN_FLOPS)
        done.append(True)

    t = threading.Thread(target=calls, daemon=True)
    t.start()
    t.join(60)
    assert done, "a split call never returned"
    assert all(all_started) and len(all_started) == 20  # the helpers took part every time


def test_under_the_threshold_one_inline_call():
    par = threads.Parallel(2)
    calls = []
    par(32, lambda lo, hi, s: calls.append((lo, hi, threading.get_ident())), flops=0)
    assert calls == [(0, 32, threading.get_ident())]


def test_helper_error_reaches_the_caller_after_every_slice_ended(monkeypatch):
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    par = threads.Parallel(2)
    ended = []
    caller = threading.get_ident()

    def fn(lo, hi, scratch):
        if threading.get_ident() != caller:
            raise ValueError("in a helper")
        time.sleep(0.02)  # the helper fails first; the caller's slice must still end
        ended.append(lo)

    for _ in range(5):  # (a helper that wakes late finds no slice left: no error then)
        ended.clear()
        try:
            par(2, fn, flops=threads.SPLIT_MIN_FLOPS)
        except ValueError:
            assert len(ended) == 1
            break
        assert len(ended) == 2
    par(2, lambda lo, hi, s: None, flops=threads.SPLIT_MIN_FLOPS)  # usable after an error


def test_caller_error_waits_for_the_helpers_slices(monkeypatch):
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    par = threads.Parallel(2)
    caller = threading.get_ident()
    running = []
    started = threading.Event()

    def fn(lo, hi, scratch):
        if threading.get_ident() == caller:
            started.wait(1.0)  # (a helper is inside its slice when the caller fails)
            raise KeyError("in the caller")
        running.append(1)
        started.set()
        time.sleep(0.02)
        running.pop()

    with pytest.raises(KeyError):
        par(8, fn, flops=threads.SPLIT_MIN_FLOPS)
    assert started.is_set()  # the helper's slice had started ...
    assert running == []  # ... and had ended when the error was raised


def test_an_interrupted_wait_still_waits_for_the_helpers_slices(monkeypatch):
    """A KeyboardInterrupt while the caller waits (Ctrl-C) is raised only after the helper's
    slice ended: it returned with the helper still writing into the output (and its scratch,
    the next run's)."""
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    made = threads._Task.__init__

    class InterruptedOnce:
        def __init__(self, lock):
            self.lock, self.raised = lock, False

        def acquire(self):
            if not self.raised:
                self.raised = True
                raise KeyboardInterrupt
            return self.lock.acquire()

        def release(self):
            self.lock.release()

    def init(task, fn, slices):
        made(task, fn, slices)
        task.finished = InterruptedOnce(task.finished)

    monkeypatch.setattr(threads._Task, "__init__", init)
    par = threads.Parallel(2)
    caller = threading.get_ident()
    started = threading.Event()
    y = np.zeros(2, int)

    def fn(lo, hi, scratch):
        if threading.get_ident() == caller:
            started.wait(1.0)  # the helper is inside its slice when the caller waits
            return
        started.set()
        time.sleep(0.05)
        y[lo:hi] = 99

    with pytest.raises(KeyboardInterrupt):
        par(2, fn, flops=threads.SPLIT_MIN_FLOPS)
    assert started.is_set() and (y == 99).sum() == 1  # the helper's slice ended first


def test_nested_and_concurrent_calls_run_inline(monkeypatch):
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    par, other = threads.Parallel(2), threads.Parallel(2)
    out = np.zeros((4, 6), int)

    def inner(row):
        def fn(lo, hi, scratch):
            out[row, lo:hi] += 1

        return fn

    def outer(lo, hi, scratch):
        for r in range(lo, hi):  # a loop over rows, each row split again (inline)
            par(6, inner(r), flops=threads.SPLIT_MIN_FLOPS)

    results = []

    def in_thread():
        y = np.zeros(10, int)
        for _ in range(50):
            other(10, lambda lo, hi, s: y.__setitem__(slice(lo, hi), y[lo:hi] + 1), 1e30)
        results.append(y)

    t = threading.Thread(target=in_thread)
    t.start()
    for _ in range(20):
        par(4, outer, flops=threads.SPLIT_MIN_FLOPS)
    t.join()
    assert (out == 20).all()
    assert (results[0] == 50).all()


def test_backoff_after_calls_no_helper_took_part_in(monkeypatch):
    """Helpers always on the caller's CPU: after k such calls the next 2^k - 1 (at most
    BACKOFF_MAX - 1) wake no helper, slice i still with scratch i; a helper's claim resets."""
    monkeypatch.setattr(threads, "_cpu", lambda: 0)
    woken = []
    wake = threads._Helper.wake
    monkeypatch.setattr(threads._Helper, "wake", lambda h, t: (woken.append(1), wake(h, t)))
    par = threads.Parallel(2)
    seen = []

    def fn(lo, hi, scratch):
        seen.append((lo, hi, id(scratch)))

    pattern = []
    for _ in range(15):  # wakes: the 1st call, then one after each skip of 1, 3, 7 calls
        woken.clear()
        par(10, fn, flops=threads.SPLIT_MIN_FLOPS)
        pattern.append(len(woken))
    assert pattern == [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert sorted(set(seen)) == sorted({(0, 5, id(par.scratch[0])), (5, 10, id(par.scratch[1]))})
    assert len(seen) == 2 * len(pattern)
    monkeypatch.setattr(threads, "_cpu", lambda: -1)  # helpers claim again (when in time)
    monkeypatch.setattr(threads, "_skip", 0)

    def slow(lo, hi, scratch):
        time.sleep(0.01)  # the caller's slice outlasts the helper's wake-up

    par(2, slow, flops=threads.SPLIT_MIN_FLOPS)
    assert threads._misses == 0 and threads._skip == 0


def test_no_helper_keeps_a_finished_call_alive(cpu):
    """After a split call returns, no helper thread holds its task: the task's closure holds
    the step's arrays (a recording run's fresh workspaces, freed when they die), which a helper
    kept until its next wake-up (memory_breakdown's "kept" varied 2.0-3.7 MiB on inception_bn
    at batch 32 from run to run, 1.15 after)."""
    import gc
    import weakref

    par = threads.Parallel(2)
    for _ in range(10):  # helpers woken late and on time alike
        big = np.ones(1 << 16)
        gone = weakref.ref(big)

        def fn(lo, hi, scratch, big=big):
            big[lo:hi] += 1

        par(4, fn, flops=threads.SPLIT_MIN_FLOPS)
        del big, fn
        time.sleep(0.002)  # a helper woken late finishes its wake-up
        gc.collect()
        assert gone() is None
