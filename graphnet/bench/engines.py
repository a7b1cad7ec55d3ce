"""The engines a benchmark compares, and how they are timed.

Timing is interleaved in blocks: each engine runs back to back for `block` seconds, then the
machine rests `pause` seconds, then the next engine; the rounds repeat. Alternating single calls
is unfair: OpenBLAS worker threads keep spinning for a while after a GEMM, so whatever runs right
after NumPy is slowed down (measured: onnxruntime looked 2x slower on VGG that way). Every call
inside a block is timed; the median and the spread (25th-75th percentile) are reported.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from graphnet.ir import Graph

__all__ = [
    "Engine",
    "Timing",
    "ort_engine",
    "graphnet_engine",
    "reference_evaluator_time",
    "interleaved",
    "traced_peak",
    "max_diff",
]

Outputs = dict[str, np.ndarray]


@dataclass
class Engine:
    """One way of running a model: `run()` computes the outputs of the benchmark's feeds."""

    name: str
    run: Callable[[], Outputs]
    note: str = ""


@dataclass
class Timing:
    """Per-call times in seconds of one engine."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> tuple[float, float]:
        """25th and 75th percentile."""
        q = np.percentile(self.times, [25, 75])
        return float(q[0]), float(q[1])


def graphnet_engine(name: str, graph: Graph, feeds: Mapping[str, np.ndarray], **session) -> Engine:
    """Our runtime on `graph`; `session` keyword arguments go to `runtime.Session`, except
    `mode` which goes to `run`."""
    from graphnet.runtime import Session

    mode = session.pop("mode", "inference")
    sess = Session(graph, **session)
    wanted = {k: v for k, v in feeds.items() if k in graph.inputs}
    return Engine(name, lambda: sess.run(wanted, mode=mode, seed=0 if mode == "train" else None))


def ort_engine(
    name: str, graph: Graph, feeds: Mapping[str, np.ndarray], *, optimize: bool, threads: int
) -> Engine:
    """onnxruntime (CPU provider) on `graph` exported for inference, all graph optimizations on
    or off, `threads` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    model = graph.to_onnx(mode="inference").SerializeToString()
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ins = {i.name: feeds[i.name] for i in sess.get_inputs()}
    return Engine(name, lambda: dict(zip(names, sess.run(names, ins), strict=True)))


def _reference_child(model: bytes, feeds: dict, conn) -> None:
    from onnx.reference import ReferenceEvaluator

    try:
        ev = ReferenceEvaluator(model)
        t0 = time.perf_counter()
        outs = ev.run(None, feeds)
        conn.send((time.perf_counter() - t0, outs, None))
    except Exception as exc:  # reported as a note, never a crash of the benchmark
        conn.send((None, None, f"{type(exc).__name__}: {exc}"))


def reference_evaluator_time(
    graph: Graph, feeds: Mapping[str, np.ndarray], *, cap: float
) -> tuple[float | None, list | None, str]:
    """One run of `onnx.reference.ReferenceEvaluator` in a forked child, killed after `cap`
    seconds: (seconds, outputs, note). It is too slow to time in blocks (one run is one sample)."""
    model = graph.to_onnx(mode="inference").SerializeToString()
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_reference_child, args=(model, dict(feeds), child))
    proc.start()
    try:
        if not parent.poll(cap):
            return None, None, f"skipped: one run exceeds the {cap:g} s cap"
        seconds, outs, err = parent.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if err:
        return None, None, err
    return seconds, outs, "1 run"


def interleaved(
    engines: list[Engine],
    *,
    rounds: int,
    block: float,
    pause: float,
    progress: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time every engine in `rounds` rounds of one block each (see the module docstring). One
    untimed warm-up call per engine first."""
    timings = {e.name: Timing() for e in engines}
    for e in engines:
        e.run()
    for _ in range(rounds):
        for e in engines:
            t_end = time.perf_counter() + block
            while True:
                t0 = time.perf_counter()
                e.run()
                t1 = time.perf_counter()
                timings[e.name].times.append(t1 - t0)
                if t1 >= t_end:
                    break
            time.sleep(pause)
            if progress is not None:
                progress()
    return timings


def traced_peak(run: Callable[[], object]) -> int:
    """Peak bytes NumPy/Python held during a warm call of `run`, counting what the first call
    allocated and kept (a fresh session's prepared weights, e.g. Winograd's transformed ones,
    its arena and scratch) and not that call's own transient peak (tracemalloc: NumPy reports
    its buffers to it; onnxruntime's arena does not, so this is for our engines only).

    What the process sets up once for every session, like NumPy's own import, is done before
    the trace: the BLAS libraries' thread controls (`threads.blas_one_thread` finds them on
    first use, importing threadpoolctl: ~125 KiB of Python objects the whole-run replay's first
    call made, counted as lenet5@1's: its peak read 2.15x the floor, 1.29x without them)."""
    from graphnet.runtime.fast.threads import blas_one_thread, blas_restore

    blas_restore(blas_one_thread())
    tracemalloc.start()
    try:
        run()
        tracemalloc.reset_peak()
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def max_diff(ref: Mapping[str, np.ndarray] | list, got: Mapping[str, np.ndarray] | list) -> float:
    """Largest |ref - got| over the outputs, matched by position (engines name outputs alike
    but onnx.reference returns a list). A shape mismatch is an error, not a number."""
    a = list(ref.values()) if isinstance(ref, Mapping) else list(ref)
    b = list(got.values()) if isinstance(got, Mapping) else list(got)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outputs vs {len(b)}")
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"output shape {x.shape} vs {y.shape}")
        if x.size:
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            worst = max(worst, float(np.nanmax(d)) if not np.isnan(d).any() else np.inf)
    return worst
