"""What a model cannot go below on this machine, measured in the same run as the model:

- `gemm_floor`: the bare GEMMs its convolutions and linear layers need (im2col shapes: per group,
  (N * output pixels) x (C/group * taps) @ (C/group * taps) x (M/group)), timed with np.matmul on
  preallocated contiguous operands. A direct-convolution runtime's overhead above this is what a
  faster plan removes; only fewer FLOPs (Winograd) go below it.
- `blas_gflops`: the rate of one large float32 GEMM (the BLAS ceiling).
- `memory_floor`: parameters + the largest set of simultaneously live activations, from the
  shapes of one reference run and the values' last uses in graph order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from math import prod

import numpy as np

from graphnet.ir import Graph

__all__ = ["gemm_shapes", "gemm_engine", "blas_gflops", "memory_floor"]


def gemm_shapes(graph: Graph, shapes: Mapping[str, tuple]) -> list[tuple[int, int, int, int]]:
    """(batch, M, K, N) of every GEMM the graph's Conv / ConvTranspose / Gemm / MatMul nodes
    need, `shapes` holding the concrete shape of every value (from one run)."""
    out = []
    for n in graph.nodes:
        if n.op in ("Conv", "WSConv"):
            x, w, y = shapes[n.inputs[0]], shapes[n.inputs[1]], shapes[n.outputs[0]]
            g = int(n.attrs.get("group", 1))
            out.append((g, x[0] * prod(y[2:]), (x[1] // g) * prod(w[2:]), w[0] // g))
        elif n.op == "ConvTranspose":
            x, w = shapes[n.inputs[0]], shapes[n.inputs[1]]
            g = int(n.attrs.get("group", 1))
            # As a conv of the stride-dilated input: same MACs per output pixel.
            y = shapes[n.outputs[0]]
            out.append((g, x[0] * prod(y[2:]), (x[1] // g) * prod(w[2:]), w[1]))
        elif n.op in ("Gemm", "MatMul"):
            a, b = shapes[n.inputs[0]], shapes[n.inputs[1]]
            if len(a) == 2 and len(b) == 2:
                ta = int(n.attrs.get("transA", 0)) if n.op == "Gemm" else 0
                tb = int(n.attrs.get("transB", 0)) if n.op == "Gemm" else 0
                m, k = (a[1], a[0]) if ta else a
                nn = b[0] if tb else b[1]
                out.append((1, m, k, nn))
            else:
                y = shapes[n.outputs[0]]
                out.append((prod(y[:-2]) or 1, y[-2] if len(y) > 1 else 1, a[-1], y[-1]))
    return out


def gemm_engine(dims: list[tuple[int, int, int, int]], seed: int = 0):
    """A zero-argument function running every GEMM of `dims` once with np.matmul into
    preallocated outputs (contiguous float32 operands), and the FLOPs of one call. Threads as the
    fast plan uses them: BLAS single-threaded, each GEMM's rows split over the plan's threads."""
    from graphnet.runtime.fast.threads import WORKERS, Parallel, blas_single_threaded

    parallel = Parallel(WORKERS)
    rng = np.random.default_rng(seed)
    ops = []
    flops = 0
    for b, m, k, n in dims:
        a = rng.standard_normal((b, m, k)).astype(np.float32)
        w = rng.standard_normal((b, k, n)).astype(np.float32)
        ops.append((a, w, np.empty((b, m, n), np.float32)))
        flops += 2 * b * m * k * n

    def run() -> dict:
        with blas_single_threaded():
            for a, w, y in ops:
                parallel(
                    a.shape[1],
                    lambda lo, hi, _s, a=a, w=w, y=y: np.matmul(a[:, lo:hi], w, out=y[:, lo:hi]),
                    2.0 * a.size * w.shape[-1],
                )
        return {}

    return run, flops


def blas_gflops(n: int = 1024, seconds: float = 0.5) -> float:
    """GFLOP/s of an n x n x n float32 np.matmul (best of the calls within `seconds`)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    y = np.empty((n, n), np.float32)
    np.matmul(a, b, out=y)
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        np.matmul(a, b, out=y)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def memory_floor(graph: Graph, shapes: Mapping[str, tuple], itemsize: Mapping[str, int]) -> dict:
    """{"params": bytes, "activations": bytes}: the parameters, and the largest total size of the
    values alive at once when nodes run in graph order (a value lives from its producer, or the
    start for an input, to its last reader, or the end for an output)."""
    params = sum(int(a.nbytes) for a in graph.params.values())
    last: dict[str, int] = {}
    end = len(graph.nodes)
    for k, node in enumerate(graph.nodes):
        for i in node.inputs:
            if i and i not in graph.params:
                last[i] = k
    for o in graph.outputs:
        last[o] = end

    def size(name: str) -> int:
        return prod(shapes[name]) * itemsize[name] if name in shapes else 0

    live = {i: size(i) for i in graph.inputs}
    peak = sum(live.values())
    for k, node in enumerate(graph.nodes):
        for o in node.outputs:
            if o:
                live[o] = size(o)
        peak = max(peak, sum(live.values()))
        for name in [v for v in live if last.get(v, -1) <= k]:
            del live[name]
    return {"params": params, "activations": peak}
