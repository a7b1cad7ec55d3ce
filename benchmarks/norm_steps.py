"""Benchmark: the fast plan's normalization steps (Group / Instance / Layer norm with the fused
activation) on the bench suite's shapes, against the variants they replaced.

    python benchmarks/norm_steps.py [--runs 200] [--markdown]

For each case, a graph x -> Mul -> norm -> activation -> GlobalAveragePool (the norm writes over
the Mul's output, as in a CNN; a small graph output) is compiled once, and its norm step is
timed (`Session.profile`, one run per sample) as compiled and with NumPy's default ufunc buffer
(`elementwise.UNBUFFERED_MIN_ROW` out of reach: see `elementwise._unbuffered`), the two
interleaved sample by sample; the table prints the median of the ratios. Then the fused ELU's
function (`elementwise.elu_expm1`, now the Elu step's too) against the former exp - 1
formulation (`_elu_exp_minus_1` here) over the instance norm's output, one thread,
interleaved. Then, at batch 1, the group norms with a 2 x 2 MaxPool after the activation (fused
into the norm step) as compiled (their NumPy calls bound once per arrays) against the general
path (`bound_ratio`); at batch 32, the same steps as compiled (`NormStep._chunked`: statistics
and pool in one split, the pool by `elementwise._halving_pool`) against the former path (the
statistics over the whole batch, then the pool step: `chunked_ratio`). Ratios under 1: the
compiled step is faster. Both are taken within one
process, so the machine's speed cancels out, but not its load (printed with the table): the
plan's second thread helps only when a core is free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

import numpy as np

# The checkout's graphnet, even where another one is installed: the repository root first.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from benchmarks.thread_thresholds import print_table  # noqa: E402
from graphnet.ir import Graph  # noqa: E402
from graphnet.runtime import Session  # noqa: E402
from graphnet.runtime.fast.steps import elementwise  # noqa: E402

__all__ = ["CASES", "measure", "chunked_ratio", "elu_ratio", "main"]

CASES: list[tuple[str, tuple[int, ...], int, str]] = [
    (op, (n, *shape), arg, act)
    for n in (32, 1)
    for op, shape, arg, act in (
        ("GroupNormalization", (32, 32, 32), 8, "PRelu"),
        ("InstanceNormalization", (64, 16, 16), 0, "Elu"),
        ("LayerNormalization", (64, 8, 8), 1, "LeakyRelu"),
    )
]
"""(op, input shape, groups or LayerNorm axis, activation): norms_acts' three norms and their
activations, at batch 32 and 1."""


def _elu_exp_minus_1(alpha: float, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> None:
    """The Elu step's former formulation, alpha * (exp(x) - 1) for x < 0: the baseline."""
    elementwise.relu_(t, x, np.minimum)  # min(x, 0)
    np.exp(t, out=t)
    t -= x.dtype.type(1)
    if alpha != 1.0:
        t *= x.dtype.type(alpha)
    np.maximum(x, t, out=y)  # (0 <= alpha <= 1)


def _graph(op: str, shape: tuple[int, ...], arg: int, act: str, pool: bool = False) -> Graph:
    """x -> Mul -> norm -> activation -> GlobalAveragePool, or (`pool`) -> a 2 x 2 MaxPool."""
    rng = np.random.default_rng(0)
    c = shape[1]
    g = Graph(f"norm_{op}")
    g.add_input("x", (None, *shape[1:]))
    g.add_param("k", np.float32(1.5))
    if op == "LayerNormalization":
        pshape: tuple[int, ...] = shape[arg:]
        attrs: dict = {"axis": arg, "epsilon": 1e-5}
    else:
        pshape = (c,)
        attrs = {"epsilon": 1e-5} | ({"num_groups": arg} if arg else {})
    g.add_param("scale", rng.uniform(0.5, 1.5, pshape).astype(np.float32))
    g.add_param("bias", rng.normal(0.0, 1.0, pshape).astype(np.float32))
    x = g.add_node("Mul", ["x", "k"], {}, name="mul").outputs[0]
    y = g.add_node(op, [x, "scale", "bias"], attrs, name="norm").outputs[0]
    if act == "PRelu":
        g.add_param("slope", rng.uniform(0.0, 0.5, (c, 1, 1)).astype(np.float32))
        y = g.add_node("PRelu", [y, "slope"], {}, name="act").outputs[0]
    else:
        y = g.add_node(act, [y], {"alpha": 1.0 if act == "Elu" else 0.1}, name="act").outputs[0]
    if pool:
        attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
        g.mark_output(g.add_node("MaxPool", [y], attrs, name="pool").outputs[0])
    else:
        g.mark_output(g.add_node("GlobalAveragePool", [y], {}, name="gap").outputs[0])
    return g


def _summary(ours: list[float], other: list[float], name: str) -> dict:
    """Medians of our step's times, of the other variant's (`name`_ms) and of their ratios
    (the rounds paired)."""
    return {
        "ms": statistics.median(ours),
        f"{name}_ms": statistics.median(other),
        "ratio": statistics.median(a / b for a, b in zip(ours, other, strict=True)),
    }


def measure(op: str, shape: tuple[int, ...], arg: int, act: str, runs: int) -> dict:
    """Interleaved times (seconds) of the norm step as compiled and with NumPy's default
    ufunc buffer."""
    saved = elementwise.UNBUFFERED_MIN_ROW
    sess = Session(_graph(op, shape, arg, act))
    feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(runs):
            for default in (False, True):
                elementwise.UNBUFFERED_MIN_ROW = 1 << 62 if default else saved
                rows = sess.profile(feeds, runs=1)
                times[default].append(next(ms for name, *_, ms in rows if name == "norm"))
    finally:
        elementwise.UNBUFFERED_MIN_ROW = saved
    ours, default = times[False], times[True]
    return _summary(ours, default, "default")


def bound_ratio(op: str, shape: tuple[int, ...], arg: int, act: str, runs: int) -> dict:
    """The norm + activation + 2 x 2 pool step (the pool fused) as compiled (at batch-1 sizes
    `NormStep._small_group`, its NumPy calls bound once per arrays) against the general path
    (`elementwise.FUSED_POOL_INLINE_BYTES` 0: `_normalize`, the pool step, the affine and
    activation after it): one session each (each records its own arena), interleaved."""
    saved = elementwise.FUSED_POOL_INLINE_BYTES
    feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    sessions = {}
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for general in (False, True):
            elementwise.FUSED_POOL_INLINE_BYTES = 0 if general else saved
            sessions[general] = Session(_graph(op, shape, arg, act, pool=True))
            sessions[general].run(feeds)
        for _ in range(runs):
            for general in (False, True):
                elementwise.FUSED_POOL_INLINE_BYTES = 0 if general else saved
                rows = sessions[general].profile(feeds, runs=1)
                times[general].append(next(ms for name, *_, ms in rows if name == "norm"))
    finally:
        elementwise.FUSED_POOL_INLINE_BYTES = saved
    ours, general = times[False], times[True]
    return _summary(ours, general, "general")


def chunked_ratio(op: str, shape: tuple[int, ...], arg: int, act: str, runs: int) -> dict:
    """The norm + activation + 2 x 2 pool step (the pool fused) past batch-1 sizes as compiled
    (`NormStep._chunked`: the statistics and the pool in one split, over chunks of images; the
    pool by `elementwise._halving_pool`) against the former path (`elementwise.CHUNKED` and
    `HALVING` off: the statistics over the whole batch, then the pool step): two sessions a
    variant (an arena layout's bias cancels), interleaved, medians of each round's ratio of
    the variants' means."""
    saved = elementwise.CHUNKED, elementwise.HALVING
    feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    order = (True, False, False, True)
    sessions = []
    times: list[list[float]] = [[] for _ in order]
    try:
        for on in order:
            elementwise.CHUNKED, elementwise.HALVING = on, on and saved[1]
            sessions.append(Session(_graph(op, shape, arg, act, pool=True)))
            sessions[-1].run(feeds)
        for _ in range(runs):
            for i, on in enumerate(order):
                elementwise.CHUNKED, elementwise.HALVING = on, on and saved[1]
                rows = sessions[i].profile(feeds, runs=1)
                times[i].append(next(ms for name, *_, ms in rows if name == "norm"))
    finally:
        elementwise.CHUNKED, elementwise.HALVING = saved
    ours = [(a + b) / 2 for a, b in zip(times[0], times[3], strict=True)]
    former = [(a + b) / 2 for a, b in zip(times[1], times[2], strict=True)]
    return _summary(ours, former, "former")


def elu_ratio(shape: tuple[int, ...], runs: int) -> tuple[float, float]:
    """(median ms of `elu_expm1`, median ratio to the exp - 1 formulation) on normal data."""
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y, t = np.empty_like(x), np.empty_like(x)
    fns = {"expm1": partial(elementwise.elu_expm1, 1.0), "exp": partial(_elu_exp_minus_1, 1.0)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(x, y, t)
            times[k].append(time.perf_counter() - t0)
    ratio = statistics.median(a / b for a, b in zip(times["expm1"], times["exp"], strict=True))
    return statistics.median(times["expm1"]) * 1e3, ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    head = ["step", "input", "ms", "NumPy's default buffer ms", "ratio (median)"]
    rows = []
    load0 = os.getloadavg()[0]
    for op, shape, arg, act in CASES:
        r = measure(op, shape, arg, act, args.runs)
        rows.append(
            [
                f"{op.replace('Normalization', 'Norm')} + {act}",
                "x".join(map(str, shape)),
                f"{r['ms']:.3f}",
                f"{r['default_ms']:.3f}",
                f"{r['ratio']:.2f}",
            ]
        )
    for n in (32, 1):
        shape = (n, 64, 16, 16)
        ms, ratio = elu_ratio(shape, args.runs)
        rows.append(
            ["Elu: expm1 / exp - 1", "x".join(map(str, shape)), f"{ms:.3f}", "", f"{ratio:.2f}"]
        )
    print_table(head, rows, markdown=args.markdown, load0=load0)
    # the fused-pool steps: at batch 1 (bound) against the general path, past it (chunked)
    # against the former path
    for batch1, fn, other in ((True, bound_ratio, "general"), (False, chunked_ratio, "former")):
        head = ["step (+ 2x2 MaxPool fused)", "input", "ms", f"{other} path ms", "ratio (median)"]
        rows = []
        load0 = os.getloadavg()[0]
        for op, shape, arg, act in CASES:
            if (shape[0] == 1) != batch1 or op == "LayerNormalization":
                continue
            r = fn(op, shape, arg, act, args.runs)
            name = f"{op.replace('Normalization', 'Norm')} + {act} + pool"
            shown = "x".join(map(str, shape))
            rows.append(
                [name, shown, f"{r['ms']:.3f}", f"{r[other + '_ms']:.3f}", f"{r['ratio']:.2f}"]
            )
        print_table(head, rows, markdown=args.markdown, load0=load0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
