"""Benchmark: where does handing half of a step to the plan's second thread pay?

    python benchmarks/thread_thresholds.py [--runs 200] [--markdown]

The compiled plan splits a step over its threads only above a size (`graphnet.runtime.fast`):
element-wise steps from `threads.SPLIT_MIN_FLOPS` / `threads.ELEMENT_FLOPS` elements, tiling
and pairwise MaxPools from `steps.pool.TILED_SPLIT_MIN_ELEMENTS`, and at batch 1 a conv's GEMMs
by output rows from `steps.linear.ROW_SPLIT_MIN_FLOPS`. For single-node graphs of sizes around
those thresholds this times each step inline (threshold set out of reach) and on two threads
(threshold 0), the two interleaved run by run on one session (a GlobalAveragePool after the
step keeps the graph's output small, the same in both), and prints the ratio of the
minimum and of the median times (threads / inline: under 1 the split pays). Both are taken
within one run, so the machine's speed cancels out, but not its load: a second thread only
helps when a core is free, so the load average is printed with the table; compare runs on a
quiet machine with runs on a busy one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# The checkout's graphnet, even where another one is installed: the repository root first.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from graphnet.ir import Graph  # noqa: E402
from graphnet.runtime import Session  # noqa: E402
from graphnet.runtime.fast import threads  # noqa: E402
from graphnet.runtime.fast.steps import base, elementwise, linear, pool  # noqa: E402

__all__ = ["CASES", "measure", "main"]

_OUT_OF_REACH = 1e30

CASES: list[tuple[str, tuple[int, ...], dict]] = [
    *[("Relu", (32, c, hw, hw), {}) for c, hw in ((4, 16), (16, 16), (16, 32), (64, 32))],
    *[
        ("MaxPool", (32, c, hw, hw), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1] * 4})
        for c, hw in ((8, 16), (32, 16), (16, 32), (64, 32))
    ],
    *[
        ("MaxPool", (32, c, hw, hw), {"kernel_shape": [2, 2], "strides": [2, 2]})
        for c, hw in ((8, 16), (32, 16), (16, 32), (64, 32))
    ],
    *[
        ("Conv", (1, c, hw, hw), {"kernel_shape": [3, 3], "pads": [1] * 4, "strides": [1, 1]})
        for c, hw in ((16, 32), (32, 32), (64, 16), (64, 32), (128, 16), (128, 8), (256, 8))
    ],
    *[
        ("Conv", (32, c, hw, hw), {"kernel_shape": [3, 3], "pads": [1] * 4, "strides": [1, 1]})
        for c, hw in ((6, 14), (8, 16), (16, 16), (16, 32))
    ],
]
"""(op, input shape, attributes): element-wise and pooling steps at batch 32, convs (c -> c
channels, 3x3) at batch 1 (split by GEMM rows; 128-256 channels at 8x8 run F(2x2), vgg_bn's
last convs) and at batch 32 (split by images), from below to above the thresholds."""


def _graph(op: str, shape: tuple[int, ...], attrs: dict) -> Graph:
    g = Graph(f"threads_{op}")
    g.add_input("x", shape)
    ins = ["x"]
    if op == "Conv":
        c = shape[1]
        rng = np.random.default_rng(0)
        g.add_param("w", (rng.standard_normal((c, c, 3, 3)) / (3 * c) ** 0.5).astype(np.float32))
        ins.append("w")
        attrs = {k: v for k, v in attrs.items() if k != "kernel_shape"}
    y = g.add_node(op, ins, attrs, name=op.lower()).outputs[0]
    # A small graph output: a large one would be a fresh array every run, whose page faults
    # (~0.5 ms for 8 MiB) would be timed with the step.
    g.mark_output(g.add_node("GlobalAveragePool", [y], {}, name="gap").outputs[0])
    return g


def _split(on: bool) -> None:
    """Every threshold at 0 (`on`) or out of reach, in each module that reads it."""
    value = 0.0 if on else _OUT_OF_REACH
    for module in (threads, base, elementwise, linear, pool):
        if hasattr(module, "SPLIT_MIN_FLOPS"):
            module.SPLIT_MIN_FLOPS = value
    linear.ROW_SPLIT_MIN_FLOPS = value
    pool.TILED_SPLIT_MIN_ELEMENTS = 0 if on else 1 << 62


def measure(op: str, shape: tuple[int, ...], attrs: dict, runs: int) -> dict:
    """Interleaved inline / two-thread times (seconds) of one single-node graph."""
    saved = {
        (m, name): getattr(m, name)
        for m in (threads, base, elementwise, linear, pool)
        for name in ("SPLIT_MIN_FLOPS", "ROW_SPLIT_MIN_FLOPS", "TILED_SPLIT_MIN_ELEMENTS")
        if hasattr(m, name)
    }
    try:
        sess = Session(_graph(op, shape, attrs))
        feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for on in (False, True):  # warm-up: plan, arena, thread pool
            _split(on)
            sess.run(feeds)
            sess.run(feeds)
        for _ in range(runs):
            for on in (False, True):
                _split(on)
                t0 = time.perf_counter()
                sess.run(feeds)
                times[on].append(time.perf_counter() - t0)
    finally:
        for (m, name), v in saved.items():
            setattr(m, name, v)
    inline, split = times[False], times[True]
    return {
        "inline_min": min(inline),
        "ratio_min": min(split) / min(inline),
        "ratio_median": statistics.median(split) / statistics.median(inline),
    }


def _size(op: str, shape: tuple[int, ...]) -> str:
    if op == "Conv":
        n, c, hw = shape[0], shape[1], shape[2] * shape[3]
        return f"{2 * n * c * c * 9 * hw / 1e6:.0f} MFLOP"
    return f"{int(np.prod(shape)) // 1000}k elements"


def print_table(head: list[str], rows: list[list[str]], *, markdown: bool, load0: float) -> None:
    """The rows as a markdown or aligned text table, then the date, machine, plan threads and the
    load average from `load0` (taken before the measurements) to now."""
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        for row in [head, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {threads.WORKERS} plan threads, load average "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f}; numpy {np.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    head = ["op", "input", "size", "inline min us", "threads/inline min", "threads/inline median"]
    rows = []
    load0 = os.getloadavg()[0]
    for op, shape, attrs in CASES:
        r = measure(op, shape, attrs, args.runs)
        kind = f"{op} {'x'.join(map(str, attrs['kernel_shape']))}" if op == "MaxPool" else op
        rows.append(
            [
                kind,
                "x".join(map(str, shape)),
                _size(op, shape),
                f"{r['inline_min'] * 1e6:.0f}",
                f"{r['ratio_min']:.2f}",
                f"{r['ratio_median']:.2f}",
            ]
        )
    print_table(head, rows, markdown=args.markdown, load0=load0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
