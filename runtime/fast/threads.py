"""Threads for the compiled plan: a small pool that runs batch slices of a node in parallel, and
control of the BLAS library's own threads (through threadpoolctl).

Why not let OpenBLAS use both cores inside each GEMM: its worker threads synchronise at the end
of every call and spin while they wait. Measured on a busy 2-core machine, a 64x576 @ 576x1024
sgemm took 1.0 ms single-threaded and 20 ms with two OpenBLAS threads (the second thread was
descheduled). Splitting the batch between two Python threads that each call single-threaded BLAS
(NumPy releases the GIL inside matmul and ufuncs) uses both cores without that barrier. With a
batch smaller than the thread count, each big GEMM is split by its output rows (channels, or
Winograd's tile positions) over the threads instead: BLAS stays single-threaded throughout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import contextmanager

from graphnet.runtime.fast.memory import Scratch

__all__ = [
    "WORKERS",
    "SPLIT_MIN_FLOPS",
    "ELEMENT_FLOPS",
    "ROW_SPLIT_MIN_FLOPS",
    "blas_single_threaded",
    "blas_one_thread",
    "blas_restore",
    "Parallel",
]


def _workers() -> int:
    env = os.environ.get("GRAPHNET_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


WORKERS = _workers()
"""Threads a plan uses: GRAPHNET_NUM_THREADS, else the CPU count capped at 2 (the pool splits a
batch in this many slices; more than the cores only adds switching)."""

SPLIT_MIN_FLOPS = 2e7
"""A node with less work than this runs on the calling thread. A split pays only when the
second core is free and the work outlasts the handover: waking a thread, and then the two
threads passing the GIL between their NumPy calls, costs tens of microseconds on the 2-core VM
(more when another process holds a core). Measured with the helper threads of `Parallel`
(in-process, interleaved, medians of ratios, load 2-3 with one core busy elsewhere): lenet5@32
(convs of 7.5 and 15 MFLOP, 0.33 and 0.36 ms on one thread, each 0.05-0.07 ms slower split)
took 0.74x the time of the former 4e6 with 2e7, 0.78x with no split at all; resnet20@32 0.98x
and inception_bn@32 0.935x-0.95x (no split at all: 0.95x and 0.91x; on a quiet machine their
big convs, 40-150 MFLOP, run up to 2x faster on two threads, so they keep the split)."""

ELEMENT_FLOPS = 12.0
"""What one element of an element-wise pass (a ufunc, a strided max) counts as against
`SPLIT_MIN_FLOPS`: a ReLU pass over 524k float32 elements took 0.15 ms on one core (~0.3 ns an
element), a GEMM runs at ~40 flops per ns, so a pass splits from ~1.7M elements (was 40:
resnet20@32's 524k-element BN and ReLU passes took 0.25 vs 0.15 ms split; with 12, resnet20@32
0.995x and inception_bn@32 0.99x the time with 40, same threshold)."""

ROW_SPLIT_MIN_FLOPS = 2e8
"""With fewer images than threads, a conv's GEMMs are split by output rows only above this:
a split GEMM has thinner operands, the conv's transforms and copies are not split, and the
caller waits for the slower thread. Re-checked with `benchmarks/thread_thresholds.py` on the
2-core machine with another process on one core (load 1.3-1.5): single convs of 5-75 MFLOP at
batch 1 took 1.02-1.47x as long split; whole runs with no row split took 0.92x (vgg_bn@1,
up to 75 MFLOP per conv, min time unchanged) and 0.86x (video3d@1) the median time of the
former 2e7 (load 3: 0.92x and 0.67x). The suite's batch-1 convs (75 MFLOP at most) now run
inline; larger ones (ResNet-50's at 224x224: 100-230 MFLOP) still split. Inside a row split,
each GEMM call still goes by SPLIT_MIN_FLOPS: Winograd's at batch 1 (vgg_bn's 17-19 MFLOP a
call) run inline. Forcing those split too (one conv at batch 1, in-process interleaved medians,
load 0.5-1): F(4x4) 64 -> 64 at 32x32 0.95-1.07x, 64 -> 128 at 16x16 1.11-1.38x, 128 -> 128
0.95-1.23x, F(2x2) 128 -> 256 at 8x8 1.02-1.31x, 256 -> 256 0.95-0.97x; vgg_bn@1 1.01x (quartiles
0.95-1.05, load 1): not done."""


_blas: list | None = None


def _blas_libs() -> list:
    """(get, set) thread-count functions of each BLAS library NumPy loaded. For OpenBLAS on its
    own threads, the library's C functions themselves (~0.3 us a call, against ~1.5 us through
    threadpoolctl's controller, which a batch-1 run pays four times); otherwise, or if those
    symbols are not found, the controller's methods."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # threadpoolctl missing or unable to inspect: leave BLAS alone
            libs = []
        _blas = []
        for lib in libs:
            get = set_ = None
            if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
                symbol = getattr(lib, "_get_symbol", None)
                if symbol is not None:
                    get = symbol("openblas_get_num_threads")
                    set_ = symbol("openblas_set_num_threads")
            if get is None or set_ is None:
                get, set_ = lib.get_num_threads, lib.set_num_threads
            _blas.append((get, set_))
    return _blas


@contextmanager
def blas_single_threaded(enabled: bool = True):
    """BLAS on one thread inside the block (restored after); a no-op when not `enabled`. A
    library already on one thread is left alone."""
    changed = blas_one_thread() if enabled else []
    try:
        yield
    finally:
        blas_restore(changed)


def blas_one_thread() -> list:
    """Every BLAS library on one thread; returns what `blas_restore` needs to undo it (the
    libraries changed, their thread counts). `blas_single_threaded` without the context
    manager's ~1.1 us (the whole-run replay of lenet5@1 takes ~45 us)."""
    changed = []
    for get, set_ in _blas_libs():
        n = get()
        if n != 1:
            set_(1)
            changed.append((set_, n))
    return changed


def blas_restore(changed: list) -> None:
    """Undo `blas_one_thread`."""
    for set_, n in changed:
        set_(n)


def _cpu_reader() -> Callable[[], int]:
    """sched_getcpu (~0.2 us through ctypes): the CPU the calling thread runs on; -1 where the
    C library has none."""
    try:
        import ctypes

        fn = ctypes.CDLL(None).sched_getcpu
        fn.restype, fn.argtypes = ctypes.c_int, []
        fn()
        return fn
    except Exception:  # no such symbol (not glibc / Linux): never known
        return lambda: -1


_cpu = _cpu_reader()


class _Task:
    """One split call: its slices (lo, hi, scratch), claimed under `mutex` by whichever thread
    comes first; `running` counts the slices a helper is computing, `finished` wakes the caller
    waiting for them."""

    __slots__ = (
        "fn",
        "slices",
        "cpu",
        "claimed",
        "mutex",
        "running",
        "waiting",
        "finished",
        "error",
    )

    def __init__(self, fn: Callable, slices: list) -> None:
        self.fn, self.slices = fn, slices
        self.cpu = _cpu()  # the caller's CPU
        self.claimed = False  # by a helper
        self.mutex = threading.Lock()
        self.running = 0
        self.waiting = False
        self.finished = threading.Lock()
        self.finished.acquire()
        self.error: BaseException | None = None

    def claim(self, helper: bool) -> tuple[int, int, Scratch] | None:
        with self.mutex:
            if not self.slices or self.error is not None:
                return None
            if helper:
                self.running += 1
                self.claimed = True
            return self.slices.pop()

    def work(self) -> None:
        """A helper's part: claim and compute slices until none is left;
        nothing when it was woken on the caller's CPU (the other core is busy elsewhere): there
        the two threads would take turns on one core and pass the GIL between every NumPy
        call."""
        if self.cpu >= 0 and _cpu() == self.cpu:
            return
        while True:  # a loop over the slices this thread claims
            got = self.claim(True)
            if got is None:
                return
            try:
                self.fn(*got)
            except BaseException as exc:  # handed to the caller
                self.error = exc
            with self.mutex:
                self.running -= 1
                wake = self.running == 0 and self.waiting
                if wake:  # (only the last one: an earlier one clearing it left the caller
                    self.waiting = False  # waiting for a release nobody would make)
            if wake:
                self.finished.release()

    def wait(self) -> None:
        """The caller's end: wait until no helper computes a slice, then raise its error."""
        with self.mutex:
            self.slices.clear()  # (after an error in the caller's own slice)
            block = self.running > 0
            self.waiting = block
        if block:
            # Not interruptible: a KeyboardInterrupt here returned while a helper still wrote
            # into the output and its scratch (the next run's): it is raised once they ended.
            interrupted: BaseException | None = None
            while True:  # (one acquire, retried only after an interrupt)
                try:
                    self.finished.acquire()
                    break
                except BaseException as exc:
                    interrupted = exc
            if interrupted is not None:
                raise interrupted
        if self.error is not None:
            raise self.error


class _Helper:
    """A persistent thread woken through a plain lock (no queue, no future) to work on the
    latest `_Task`. The caller sets `task` and releases `go` unless the thread was signalled
    already and has not looked yet; a thread that wakes to a task the caller finished alone
    finds no slice left and sleeps again."""

    def __init__(self) -> None:
        self.go = threading.Lock()
        self.go.acquire()
        self.signalled = False
        self.task: _Task | None = None
        threading.Thread(target=self._loop, name="graphnet", daemon=True).start()

    def _loop(self) -> None:
        while True:  # one wake-up per signal, until the process exits (a daemon thread)
            self.go.acquire()
            self.signalled = False
            task = self.task
            if task is not None:
                task.work()
            task = None  # asleep, hold no task: its closure holds the step's arrays

    def wake(self, task: _Task) -> None:
        self.task = task  # before the test: a thread already awake reads this task
        if not self.signalled:
            self.signalled = True
            self.go.release()


_helpers: list[_Helper] = []

BACKOFF_MAX = 64
"""After k split calls in a row that no helper took part in (each woken on the caller's CPU,
or too late), the next min(2^k, BACKOFF_MAX) - 1 split calls wake no helper: the caller
computes every slice (each with its own scratch, as when split). A wake that finds no free
core costs the caller tens of microseconds (context switches on its core, the GIL handed back
and forth); one claim resets the count. In-process A/B against waking every time (load 1.5-2.4,
helpers claiming no slice): inception_bn@32 0.825x / 0.84x the time, resnet20@32 0.94x /
0.976x, vgg_bn@32 0.91x (no split at all: 0.92x / 0.89x, 0.92x / 0.95x, 0.93x)."""

_misses = 0  # split calls in a row no helper took part in
_skip = 0  # split calls left that wake no helper
_dispatch = threading.Lock()  # one split at a time: another caller (thread) runs inline


def _forget_helpers() -> None:  # in a forked child the helper threads do not exist
    global _dispatch
    _helpers.clear()
    _dispatch = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


class Parallel:
    """`parallel(n, fn, flops)` runs fn(lo, hi, scratch) over [0, n) split into slices, each
    with its own scratch arena; inline when there is one worker, one item, or less work
    (`flops`, or any comparable count of element operations) than `SPLIT_MIN_FLOPS`.

    One slice per thread, slice i always computed with scratch i, whichever thread claims it
    (a workspace recorded in the arena for a step, `memory.Pool`, is the same in every run).
    The calling thread wakes up to `workers - 1` persistent helper threads (shared by every
    plan), then claims and computes slices itself, the first one first; a helper claims what
    is left when it gets a core. The caller waits only for slices a helper has started: on a
    busy machine, where a woken thread may wait milliseconds for a core, it does the rest
    alone instead of waiting (a split of a fixed half, handed over through
    ThreadPoolExecutor, made lenet5@32 1.2-1.35x slower than no split at all). While one call
    is split, a call from another thread (another session's run) or from inside a slice runs
    inline, on scratch 0: a slice must not make such a call while it holds scratch 0's takes
    (no step nests calls)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.scratch = [Scratch() for _ in range(max(1, workers))]

    def __call__(self, n: int, fn: Callable[[int, int, Scratch], None], flops: float = 0) -> None:
        w = min(self.workers, n) if flops >= SPLIT_MIN_FLOPS else 1
        if w <= 1 or not _dispatch.acquire(blocking=False):
            fn(0, n, self.scratch[0])
            return
        global _misses, _skip
        try:
            bounds = [n * i // w for i in range(w + 1)]
            sc = self.scratch
            if _skip > 0:  # helpers found no core lately: every slice here, in order
                _skip -= 1
                for i in range(w):  # a loop over the threads' slices
                    fn(bounds[i], bounds[i + 1], sc[i])
                return
            task = _Task(fn, [(bounds[i], bounds[i + 1], sc[i]) for i in range(w - 1, -1, -1)])
            while len(_helpers) < w - 1:
                _helpers.append(_Helper())
            for h in _helpers[: w - 1]:
                h.wake(task)
            try:
                while True:  # a loop over the slices this thread claims
                    got = task.claim(False)
                    if got is None:
                        break
                    fn(*got)
            finally:
                task.wait()
                for h in _helpers[: w - 1]:  # (a late helper then finds no task: sleeps again)
                    if h.task is task:  # its closure holds the step's arrays (a recording
                        h.task = None  # run's fresh workspaces): not kept past the run
            if task.claimed:
                _misses = 0
            else:
                _misses = min(_misses + 1, BACKOFF_MAX.bit_length())
                _skip = min(1 << _misses, BACKOFF_MAX) - 1
        finally:
            _dispatch.release()

    def held(self) -> int:
        return sum(s.held() for s in self.scratch)
