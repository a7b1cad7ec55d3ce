"""How close can plain NumPy get to the GEMM floor on LeNet-5 at batch 1?

`graphnet bench` reports ours / GEMM floor (the bare np.matmul calls the convs and Gemms need).
At batch 1 on the small nets the floor's GEMMs take tens of microseconds, so every other NumPy
call (1-3 us each) weighs. This script writes the suite's LeNet-5 (its optimized graph, its
weights) as the shortest flat sequence of NumPy calls we know on preallocated buffers: no Python
between the calls, each conv's window copy in its best layout (conv1's (25, 28, 28) columns
with the 28-element rows innermost), bias folded into the GEMM by a row of ones, pools as two
pairwise maxima, softmax in five calls. Its output
is checked against the runtime's. Then it times, interleaved in one process (medians of ratios
over blocks): that flat sequence, the floor's GEMMs (graphnet.bench.floor, as `graphnet bench`
runs them) and our fast plan, and prints each against the floor.

    python benchmarks/flat_numpy_bound.py [--rounds N]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided

from graphnet import runtime
from graphnet.bench import suite
from graphnet.bench.floor import gemm_engine, gemm_shapes
from graphnet.passes import optimize


def flat_lenet(params: dict[str, np.ndarray]):
    """A zero-argument-after-setup LeNet-5 forward at batch 1: returns run(x) -> probabilities,
    every buffer allocated here once."""
    f = np.float32
    w1, b1 = params["conv1.weight"], params["conv1.bias"]  # (6, 1, 5, 5): pad 2, 28x28 out
    w2, b2 = params["conv2.weight"], params["conv2.bias"]  # (16, 6, 5, 5): 10x10 out
    fc = [(params[f"fc{k}.W"].T.copy(), params[f"fc{k}.B"]) for k in (1, 2, 3)]
    xp = np.zeros((32, 32), f)
    s = xp.strides[0]
    win1 = as_strided(xp, (5, 5, 28, 28), (s, 4, s, 4))
    col1 = np.ones((26, 784), f)  # 25 window rows + a row of ones (the bias)
    a1 = np.concatenate([w1.reshape(6, 25), b1[:, None]], 1).astype(f)  # (6, 26)
    y1 = np.empty((6, 784), f)
    y1v = y1.reshape(6, 14, 2, 28)
    t1 = np.empty((6, 14, 28), f)
    t1v = t1.reshape(6, 14, 14, 2)
    p1 = np.empty((6, 14, 14), f)
    ps = p1.strides
    win2 = as_strided(p1, (6, 5, 5, 10, 10), (ps[0], ps[1], ps[2], ps[1], ps[2]))
    col2 = np.ones((151, 100), f)
    a2 = np.concatenate([w2.reshape(16, 150), b2[:, None]], 1).astype(f)  # (16, 151)
    y2 = np.empty((16, 100), f)
    y2v = y2.reshape(16, 5, 2, 10)
    t2 = np.empty((16, 5, 10), f)
    t2v = t2.reshape(16, 5, 5, 2)
    p2 = np.empty((16, 5, 5), f)
    h = [np.empty((1, w.shape[1]), f) for w, _ in fc]
    m = np.empty((1, 1), f)
    out = np.empty((1, 10), f)
    xpi, c1v, c2v, p2f = (
        xp[2:30, 2:30],
        col1[:25].reshape(5, 5, 28, 28),
        col2[:150],
        p2.reshape(1, 400),
    )
    c2v = c2v.reshape(6, 5, 5, 10, 10)
    mx, mm, add = np.maximum, np.matmul, np.add

    def run(x: np.ndarray) -> np.ndarray:
        np.copyto(xpi, x[0, 0])
        np.copyto(c1v, win1)
        mm(a1, col1, y1)
        mx(y1, 0, out=y1)
        mx(y1v[:, :, 0], y1v[:, :, 1], out=t1)
        mx(t1v[..., 0], t1v[..., 1], out=p1)
        np.copyto(c2v, win2)
        mm(a2, col2, y2)
        mx(y2, 0, out=y2)
        mx(y2v[:, :, 0], y2v[:, :, 1], out=t2)
        mx(t2v[..., 0], t2v[..., 1], out=p2)
        mm(p2f, fc[0][0], h[0])
        add(h[0], fc[0][1], h[0])
        mx(h[0], 0, out=h[0])
        mm(h[0], fc[1][0], h[1])
        add(h[1], fc[1][1], h[1])
        mx(h[1], 0, out=h[1])
        mm(h[1], fc[2][0], h[2])
        add(h[2], fc[2][1], h[2])
        np.max(h[2], axis=1, keepdims=True, out=m)
        np.subtract(h[2], m, out)
        np.exp(out, out)
        np.sum(out, axis=1, keepdims=True, out=m)
        np.divide(out, m, out)
        return out

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="interleaved blocks per engine")
    args = ap.parse_args(argv)
    g = optimize(suite.build("lenet5"))[0]
    inp, (out,) = g.inputs[0], g.outputs
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    sess = runtime.Session(g)
    want = sess.run({inp: x})[out]
    flat = flat_lenet(g.params)
    err = float(np.abs(flat(x) - want).max())
    print(f"flat NumPy LeNet vs the fast plan: max |diff| {err:.1e} (probabilities)")
    assert err < 1e-5, "the flat sequence computes another function"
    values = runtime.Session(g, plan="reference").run({inp: x}, keep_all=True)
    shapes = {k: v.shape for k, v in values.items()}
    shapes.update({k: v.shape for k, v in g.params.items()})
    floor, _ = gemm_engine(gemm_shapes(g, shapes))
    engines = {
        "GEMM floor": floor,
        "flat NumPy": lambda: flat(x),
        "graphnet": lambda: sess.run({inp: x}),
    }
    times: dict[str, list[float]] = {k: [] for k in engines}
    for fn in engines.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in engines.items():
            block = []
            t_end = time.perf_counter() + 0.05
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                fn()
                block.append(time.perf_counter() - t0)
            times[name].append(float(np.median(block)))
            time.sleep(0.02)
    base = np.array(times["GEMM floor"])
    print(
        f"LeNet-5 at batch 1, {platform.machine()}, medians over {args.rounds} interleaved blocks:"
    )
    for name, ts in times.items():
        ratio = float(np.median(np.array(ts) / base))
        print(f"  {name:11s} {1e6 * float(np.median(ts)):7.1f} us   / floor {ratio:5.2f}")


if __name__ == "__main__":
    main()
