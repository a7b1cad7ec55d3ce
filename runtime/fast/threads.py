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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from graphnet.runtime.fast.memory import Scratch

__all__ = [
    "WORKERS",
    "SPLIT_MIN_FLOPS",
    "ELEMENT_FLOPS",
    "ROW_SPLIT_MIN_FLOPS",
    "blas_single_threaded",
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

SPLIT_MIN_FLOPS = 4e6
"""A node with less work than this runs on the calling thread: handing a slice to another thread
costs tens of microseconds (more on a busy machine), a 4 MFLOP GEMM slice about as much."""

ELEMENT_FLOPS = 40.0
"""What one element of an element-wise pass (a ufunc, a strided max) counts as against
`SPLIT_MIN_FLOPS`: a pass runs at ~1 ns per element, a GEMM at ~40 flops per ns on one core, so a
pass over 100k elements is worth a second thread like a 4 MFLOP GEMM."""

ROW_SPLIT_MIN_FLOPS = 2e8
"""With fewer images than threads, a conv's GEMMs are split by output rows only above this:
a split GEMM has thinner operands, the conv's transforms and copies are not split, and the
caller waits for the slower thread. Re-checked with `benchmarks/thread_thresholds.py` on the
2-core machine with another process on one core (load 1.3-1.5): single convs of 5-75 MFLOP at
batch 1 took 1.02-1.47x as long split; whole runs with no row split took 0.92x (vgg_bn@1,
up to 75 MFLOP per conv, min time unchanged) and 0.86x (video3d@1) the median time of the
former 2e7 (load 3: 0.92x and 0.67x). The suite's batch-1 convs (75 MFLOP at most) now run
inline; larger ones (ResNet-50's at 224x224: 100-230 MFLOP) still split."""


_executor: ThreadPoolExecutor | None = None
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
    libs = _blas_libs() if enabled else []
    changed = []
    for get, set_ in libs:
        n = get()
        if n != 1:
            set_(1)
            changed.append((set_, n))
    try:
        yield
    finally:
        for set_, n in changed:
            set_(n)


class Parallel:
    """`parallel(n, fn, flops)` runs fn(lo, hi, scratch) over [0, n) split into up to `workers`
    slices, each with its own scratch arena; inline when there is one worker, one item, or less
    work (`flops`, or any comparable count of element operations) than `SPLIT_MIN_FLOPS`."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.scratch = [Scratch() for _ in range(max(1, workers))]

    def __call__(self, n: int, fn: Callable[[int, int, Scratch], None], flops: float = 0) -> None:
        w = min(self.workers, n) if flops >= SPLIT_MIN_FLOPS else 1
        if w <= 1:
            fn(0, n, self.scratch[0])
            return
        global _executor
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="graphnet")
        bounds = [n * i // w for i in range(w + 1)]
        futures = [
            _executor.submit(fn, bounds[i], bounds[i + 1], self.scratch[i]) for i in range(1, w)
        ]
        fn(bounds[0], bounds[1], self.scratch[0])  # this thread does the first slice
        for f in futures:
            f.result()

    def held(self) -> int:
        return sum(s.held() for s in self.scratch)
