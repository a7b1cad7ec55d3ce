"""Benchmark: the fast plan's conv algorithms side by side, one conv at a time, one thread.

    python benchmarks/conv_algorithms.py [--batch 1,16] [--rounds 20] [--shapes C,M,HW,K ...]
                                         [--pool 2] [--shapes3d C,M,T,HW ...]

(K is the kernel's side, or KHxKW for a rectangular kernel: 16,16,16,1x3.) With --pool P, each
conv is followed by a fused P x P tiling MaxPool, as the plan fuses one into an im2col or
colstack conv (`phasepool` joins the candidates where it applies: PHASE_POOL_MAX_OUT; both run
batch-last from a few images, BATCH_LAST_MIN_IMAGES and PHASE_POOL_BATCH_LAST_MIN_IMAGES, and
their NCHW paths are the candidates "-nchw"); shapes the plan runs otherwise (Winograd, then a
MaxPool step) are skipped. --shapes3d: 3x3x3 convs on T frames of HW x HW, default video3d's;
`--shapes3d` alone or with --shapes skips the other kind's defaults (with --pool, 3-D shapes
given print "skipped": the pool is a 2-D one).

The evidence behind `runtime/fast/conv.py`'s choices (WINOGRAD_MIN_CHANNELS, COLSTACK_*,
MIN_WINOGRAD_COLUMNS, wide or exact im2col columns): for each conv shape (default: the 3x3
and 5x5 convs of the benchmark suite's LeNet, VGG, ResNet and Inception models; stride 1,
"same" padding, bias and a fused ReLU), every algorithm that applies runs through
`conv_chunked` on the same input, BLAS on one thread, in interleaved rounds (each round runs
each algorithm once, so a busy machine slows them alike); the table prints the minimum over
the rounds in ms, each algorithm's time relative to the one the plan runs (`choose`, then
ConvStep's fallback for too few Winograd tiles), and onnxruntime on
a Conv + Relu model with one intra-op thread (same input and weights). Outputs are
compared with exact im2col's (max |diff| printed: Winograd F(4x4) rounds to ~1e-4 relative).
The machine is named above the table: ratios, not milliseconds, carry over to another one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from graphnet.bench.machine import machine  # noqa: E402
from graphnet.runtime.fast import conv as fc  # noqa: E402
from graphnet.runtime.fast.memory import Scratch  # noqa: E402
from graphnet.runtime.fast.threads import blas_single_threaded  # noqa: E402

# (input channels, output channels, image side, kernel side or (rows, columns)) of the suite's
# convs.
SHAPES: list[tuple[int, int, int, int | tuple[int, int]]] = [
    (1, 6, 28, 5),  # LeNet
    (6, 16, 14, 5),
    (3, 16, 32, 3),  # ResNet-20
    (16, 16, 32, 3),
    (32, 32, 16, 3),
    (64, 64, 8, 3),
    (24, 32, 16, 3),  # Inception
    (32, 48, 16, 3),
    (8, 16, 16, (1, 3)),
    (16, 16, 16, (3, 1)),
    (16, 24, 16, (1, 3)),
    (24, 24, 16, (3, 1)),
    (16, 32, 8, (1, 3)),
    (32, 32, 8, (3, 1)),
    (3, 32, 32, 3),
    (3, 64, 32, 3),  # VGG
    (64, 64, 32, 3),
    (128, 128, 16, 3),
    (256, 256, 8, 3),
]


# (input channels, output channels, frames, image side) of the suite's 3x3x3 convs (video3d).
SHAPES_3D: list[tuple[int, int, int, int]] = [
    (3, 16, 8, 32),
    (16, 32, 8, 16),
    (32, 64, 4, 8),
]


def _candidates(spec: fc.ConvSpec, pool: tuple[int, int] | None = None) -> list[str]:
    algos = ["im2col-wide", "im2col-exact"]
    if spec.c_in * spec.kernel[0] >= fc.COLSTACK_NARROW_MIN_DEPTH or 1 in spec.kernel:
        algos.append("colstack")
    if pool:  # (a fused pool: im2col, colstack, the pool's phases; no Winograd)
        phases = fc.phase_pool(spec, pool)
        algos += [phases] if phases else []
        # colstack and phasepool run batch-last from a few images (conv.BATCH_LAST_*): their
        # NCHW paths too, "-nchw"
        return algos + [a + "-nchw" for a in algos if a == "colstack" or a.startswith("phase")]
    if spec.kernel == (3, 3):  # the candidates the plan may run for this shape
        algos += ["winograd-f4", "winograd-f2"]
    return algos


def _ort_conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    pads: tuple[int, ...],
    pool: tuple[int, int] | None = None,
):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Conv", ["x", "w", "b"], ["y0"], pads=list(pads))
    nodes = [node, helper.make_node("Relu", ["y0"], ["y1" if pool else "y"])]
    sizes = list(x.shape[2:])
    if pool:
        nodes.append(helper.make_node("MaxPool", ["y1"], ["y"], kernel_shape=pool, strides=pool))
        sizes = [n // p for n, p in zip(sizes, pool, strict=True)]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.shape[0], w.shape[0], *sizes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})[0]


def bench(
    c: int,
    m: int,
    hw: int,
    k: tuple[int, int],
    batch: int,
    rounds: int,
    pool: tuple[int, int] | None = None,
) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
    kh, kw = k
    w = (rng.standard_normal((m, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    pads = (kh // 2, kw // 2, kh // 2, kw // 2)
    spec = fc.ConvSpec(k, (1, 1), pads, (1, 1), 1, c, m)
    chosen = planned = fc.choose(spec, (hw, hw))[0]
    if chosen.startswith("winograd"):  # too few tiles: the plan's fallback (ConvStep)
        tile = 4 if chosen.endswith("f4") else 2
        if batch * (-(-hw // tile)) ** 2 < fc.MIN_WINOGRAD_COLUMNS:
            chosen = fc.few_tiles_fallback(spec)
    side = f"{kh}" if kh == kw else f"{kh}x{kw}"
    head = f"{c:>3} -> {m:<3} {hw:>3}x{hw:<3} k{side} batch {batch:<3} "
    if pool and planned not in ("im2col", "colstack"):  # (fused at compile time only)
        return head + f"skipped: the plan runs {planned} and a MaxPool step"
    if pool and hw % pool[0]:
        return head + f"skipped: a {pool[0]}x{pool[1]} pool does not tile {hw}x{hw}"
    if chosen == "im2col" and pool and fc.phase_pool(spec, pool):
        chosen = fc.phase_pool(spec, pool)
    if chosen == "im2col":
        wide = fc.wide_rows(spec, hw + 2 * pads[1], hw, batch)
        chosen = "im2col-wide" if wide else "im2col-exact"
    side_out = hw // pool[0] if pool else hw
    runs: dict[str, tuple] = {}
    for name in _candidates(spec, pool):
        algo = "im2col" if name.startswith("im2col") else name.removesuffix("-nchw")
        biased = algo in ("im2col", "colstack") or algo.startswith("phasepool")
        wp = fc.prepare_weight(algo, w, 1, np.float32, b if biased else None)
        out = np.empty((batch, m, side_out, side_out), np.float32)
        epi = fc.Epilogue(bias=b, activation=("relu",), pool=pool or ())
        runs[name] = (algo, wp, out, epi, Scratch())

    def run(name: str) -> np.ndarray:
        algo, wp, out, epi, scratch = runs[name]
        saved = fc.wide_rows, fc.BATCH_LAST_MIN_IMAGES, fc.PHASE_POOL_BATCH_LAST_MIN_IMAGES
        if name.startswith("im2col-"):  # force the wide or exact columns
            fc.wide_rows = lambda *_: name == "im2col-wide"
        if name.endswith("-nchw"):  # the batch-last paths out of reach
            fc.BATCH_LAST_MIN_IMAGES = fc.PHASE_POOL_BATCH_LAST_MIN_IMAGES = 1 << 62
        try:
            fc.conv_chunked(algo, spec, x, wp, out, epi, scratch)
        finally:
            fc.wide_rows, fc.BATCH_LAST_MIN_IMAGES, fc.PHASE_POOL_BATCH_LAST_MIN_IMAGES = saved
        scratch.reset()  # as the plan does after every step
        return out

    ort_run = _ort_conv(x, w, b, pads, pool)
    engines = {name: (lambda name=name: run(name)) for name in runs}
    engines["onnxruntime"] = ort_run
    want = run("im2col-exact").copy()
    return head + _race(engines, want, chosen, rounds)


def inputs3d(
    c: int, m: int, frames: int, hw: int, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`bench3d`'s input, kernel (terms of O(1 / sqrt(27 C))) and bias, from a fixed seed."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c, frames, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((m, c, 3, 3, 3)) / np.sqrt(27 * c)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    return x, w, b


def bench3d(
    c: int, m: int, frames: int, hw: int, batch: int, rounds: int, pool: tuple | None = None
) -> str:
    """As `bench` for a 3x3x3 conv (pads 1, bias, ReLU) on `frames` frames of hw x hw: im2col
    (wide rows), wino3d F(4x4) and F(2x2) (`conv._winograd3d`) and onnxruntime; diffs against
    im2col. With a `pool` (--pool, a 2-D P x P one) the line says "skipped": a 3-D conv's fused
    pool is the plan's (CompiledPlan._tile_pool3d), not measured here."""
    size = f"{frames}x{hw}x{hw}"
    head = f"{c:>3} -> {m:<3} {size:>9} k3x3x3 batch {batch:<3} "
    if pool:
        return head + f"skipped: --pool ({pool[0]}x{pool[1]}) applies to 2-D convs only"
    x, w, b = inputs3d(c, m, frames, hw, batch)
    pads = (1,) * 6
    spec = fc.ConvSpec((3, 3, 3), (1, 1, 1), pads, (1, 1, 1), 1, c, m)
    chosen = fc.choose(spec, (frames, hw, hw))[0]
    runs: dict[str, tuple] = {}
    for algo in ("im2col", "wino3d-f4", "wino3d-f2"):
        wp = fc.prepare_weight(algo, w, 1, np.float32, b if algo == "im2col" else None)
        out = np.empty((batch, m, frames, hw, hw), np.float32)
        runs[algo] = (wp, out, fc.Epilogue(bias=b, activation=("relu",)), Scratch())

    def run(name: str) -> np.ndarray:
        wp, out, epi, scratch = runs[name]
        fc.conv_chunked(name, spec, x, wp, out, epi, scratch)
        scratch.reset()
        return out

    engines = {name: (lambda name=name: run(name)) for name in runs}
    engines["onnxruntime"] = _ort_conv(x, w, b, pads)
    want = run("im2col").copy()
    return head + _race(engines, want, chosen, rounds)


def _race(engines: dict, want: np.ndarray, chosen: str, rounds: int) -> str:
    """Each engine's max |diff| against `want`, then `rounds` interleaved rounds on one BLAS
    thread: the table's cells, min ms (x the chosen engine's, the diff) per engine."""
    diffs = {name: float(np.abs(f() - want).max()) for name, f in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    with blas_single_threaded():
        for _ in range(rounds):  # interleaved: each round runs every engine once
            for name, f in engines.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    best = {name: min(ts) * 1e3 for name, ts in times.items()}
    ref = best[chosen]
    return " | ".join(
        f"{name}{'*' if name == chosen else ''} {ms:.3f} ({ms / ref:.2f}, {diffs[name]:.0e})"
        for name, ms in best.items()
    )


def _shape(text: str) -> tuple[int, int, int, int | tuple[int, int]]:
    c, m, hw, k = text.split(",")
    kh, _, kw = k.partition("x")
    return int(c), int(m), int(hw), (int(kh), int(kw or kh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,16", help="batch sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--shapes", nargs="*", help="C,M,HW,K or C,M,HW,KHxKW (default: the suite's)")
    ap.add_argument("--pool", type=int, default=0, help="a fused P x P tiling MaxPool after each")
    ap.add_argument("--shapes3d", nargs="*", help="C,M,T,HW: 3x3x3 convs (default: video3d's)")
    args = ap.parse_args()
    pool = (args.pool, args.pool) if args.pool else None
    only3d = args.shapes3d is not None and args.shapes is None
    shapes = [_shape(s) for s in args.shapes] if args.shapes else ([] if only3d else SHAPES)
    if args.shapes3d:
        shapes3d = [tuple(int(v) for v in s.split(",")) for s in args.shapes3d]
    else:
        shapes3d = [] if args.shapes is not None or pool else SHAPES_3D
    info = machine()
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print("min ms over interleaved rounds (x the chosen algorithm *, max |diff| vs exact im2col)")
    for batch in (int(v) for v in args.batch.split(",")):
        for c, m, hw, k in shapes:
            kernel = (k, k) if isinstance(k, int) else k
            print(bench(c, m, hw, kernel, batch, args.rounds, pool), flush=True)
        for c, m, frames, hw in shapes3d:
            print(bench3d(c, m, frames, hw, batch, args.rounds, pool), flush=True)


if __name__ == "__main__":
    main()
