"""The tiling MaxPool step's kh x 2 pools of float32 past batch 1 by `pool.halving_calls`' passes
(rows, the window rows copied as void rows, columns, the even positions by an int64 -> int32
cast), against the tile passes they replace (`pool.HALVING` off: the same bits) and naive
pools; and the step in a plan at batch 1 -> 3 -> 1 -> 2 -> 5 against the reference plan and
onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.fast.steps import pool as fast_pool
from graphnet.runtime.fast.steps.pool import MaxPoolStep
from tests.helpers import export_checked, ort_run
from tests.oracles import naive_pool


def _specials(x: np.ndarray, rng: np.random.Generator, nan: bool = True) -> np.ndarray:
    """x with NaN (when `nan`), +-inf and -0.0 at random places (max keeps them apart: a
    wrong window or a wrong half of a pair moves them)."""
    flat = x.reshape(-1)
    kinds = [-np.inf, np.inf, -0.0] + ([np.nan] if nan else [])
    for v in kinds:
        flat[rng.choice(flat.size, max(1, flat.size // 30), replace=False)] = v
    return x


def _reshaped_max(x: np.ndarray, kernel: tuple) -> np.ndarray:
    """A naive tiling max pool of x's last len(kernel) axes by reshape (NaN propagates as in
    np.maximum)."""
    lead, k = x.shape[:2], len(kernel)
    split = [d for n, kk in zip(x.shape[2:], kernel, strict=True) for d in (n // kk, kk)]
    v = x.reshape(*lead, *split)
    with np.errstate(invalid="ignore"):
        for axis in range(2 + 2 * k - 1, 2, -2):  # the window axes, last first
            v = np.maximum.reduce(v, axis=axis)
    return v


# (input shape, kernel, chunk bytes (0: the default), images a chunk (0: by bytes), y a slice)
CASES = [
    ((2, 3, 6, 2), (2, 2), 0, 0, False),  # planes 2 wide: one pair a row
    ((3, 5, 9, 14), (3, 2), 0, 0, False),  # kh 3, odd rows per window
    ((2, 4, 8, 32), (4, 2), 0, 0, False),  # kh 4
    ((5, 3, 6, 10), (2, 2), 3 * 60 * 4, 0, False),  # chunks of 3 planes: a short last one
    ((4, 6, 4, 6), (2, 2), 1, 0, False),  # a plane a chunk
    ((3, 12, 2, 10), (2, 2), 0, 0, False),  # planes of kh rows (the lean plan's bands)
    ((3, 5, 6, 6), (2, 2), 0, 1, True),  # into a channel slice, an image a chunk
    ((3, 5, 6, 6), (3, 2), 0, 2, True),  # (two images, then one)
    ((2, 3, 4, 6, 8), (2, 2, 2), 0, 0, False),  # video's 2x2x2: the slab pass first
    ((2, 3, 4, 6, 8), (1, 2, 2), 0, 0, False),  # (1, 2, 2): planes
    ((3, 2, 6, 4, 4), (3, 2, 2), 2 * 96 * 4, 0, False),  # slabs in chunks of two volumes
]


@pytest.mark.parametrize("shape, kernel, chunk, images, sliced", CASES)
def test_tiled_part_halving_matches_the_tile_passes(shape, kernel, chunk, images, sliced):
    """`_tiled_part` with `halving`: the same bits as without (the same np.maximum operands in
    the same order: NaN, +-inf and -0.0 included) and the values of a naive pool; chunked by
    bytes or by images (one scratch, reused chunk to chunk), into a whole output or a channel
    slice of a larger one (the channels around it untouched)."""
    rng = np.random.default_rng(70)
    x = _specials(rng.standard_normal(shape).astype(np.float32), rng)
    outs = tuple(n // k for n, k in zip(shape[2:], kernel, strict=True))
    c = shape[1]
    ys = {}
    for halving in (True, False):
        # a channel slice of a larger output (its images apart), or a whole one
        out = np.full((shape[0], c + 3 if sliced else c, *outs), 7.0, np.float32)
        y = out[:, 1 : c + 1] if sliced else out
        MaxPoolStep._tiled_part(x, y, kernel, Scratch(), chunk, images, None, halving)
        ys[halving] = out
    assert np.array_equal(ys[True].view(np.int32), ys[False].view(np.int32))  # (the bits)
    got = ys[True][:, 1 : c + 1] if sliced else ys[True]
    np.testing.assert_array_equal(got, _reshaped_max(x, kernel))
    if sliced:
        assert (ys[True][:, 0] == 7).all() and (ys[True][:, c + 1 :] == 7).all()


def test_halves_only_float32_kh_by_2_past_one_image():
    """`_halves`: float32, kh x 2 windows with kh >= 2, two images or more."""
    x = np.zeros((2, 1, 4, 4), np.float32)
    assert MaxPoolStep._halves(x, (2, 2)) and MaxPoolStep._halves(x, (2, 2, 2))
    assert not MaxPoolStep._halves(x[:1], (2, 2))  # batch 1: the tile passes (bound)
    assert not MaxPoolStep._halves(x.astype(np.float64), (2, 2))
    assert not MaxPoolStep._halves(x, (2, 1)) and not MaxPoolStep._halves(x, (1, 2))
    assert not MaxPoolStep._halves(x, (2, 4))


def _pool_net(c: int, sizes: tuple, kernel: tuple) -> Graph:
    """x (N, c, *sizes) -> Relu -> MaxPool(kernel, stride kernel) -> output (the Relu keeps
    the pool's input in the arena: not the caller's array)."""
    g = Graph("halving")
    g.add_input("x", (None, c, *sizes))
    r = g.add_node("Relu", ["x"], {}, name="relu").outputs[0]
    attrs = {"kernel_shape": list(kernel), "strides": list(kernel)}
    g.mark_output(g.add_node("MaxPool", [r], attrs, name="pool").outputs[0])
    return g


@pytest.mark.parametrize(
    "c, sizes, kernel, small",
    [
        (5, (6, 10), (2, 2), True),  # small: the tiled path forced (no pairs pass)
        (3, (9, 4), (3, 2), True),
        (4, (4, 6, 8), (2, 2, 2), True),
        (64, (16, 16), (2, 2), False),  # VGG-like, the plan's own thresholds
    ],
)
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_maxpool_step_halves_past_batch_1(pool_split, monkeypatch, c, sizes, kernel, small, mode):
    """The MaxPool step over batches 1, 3, 1, 2, 5, 2 on one session: the halving passes at 2+
    images only (batch 1 keeps the tile passes, bound); bit for bit a session with
    `HALVING` off at every batch (NaN, +-inf, -0.0 in the data), and equal to the reference
    plan and onnxruntime (max is exact: no tolerance)."""
    if small:
        monkeypatch.setattr(fast_pool, "PAIRS_MAX_ELEMENTS", 0)
        monkeypatch.setattr(fast_pool, "TILED_MIN_ELEMENTS", 0)
        monkeypatch.setattr(fast_pool, "TILED_SLABS_MIN_ELEMENTS", 0)
    views = []
    real = fast_pool.halving_views
    monkeypatch.setattr(
        fast_pool,
        "halving_views",
        lambda *a: views.append(a[2]) or real(*a),  # type: ignore
    )
    g = _pool_net(c, sizes, kernel)
    sess, tiles = runtime.Session(g), runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    (out,) = g.outputs
    rng = np.random.default_rng(71)
    for batch in (1, 3, 1, 2, 5, 2):
        x = _specials(rng.standard_normal((batch, c, *sizes)).astype(np.float32), rng)
        views.clear()
        got = sess.run({"x": x}, mode=mode)[out]
        assert bool(views) == (batch > 1)
        with monkeypatch.context() as m:
            m.setattr(fast_pool, "HALVING", False)
            want = tiles.run({"x": x}, mode=mode)[out]
        assert np.array_equal(got.view(np.int32), want.view(np.int32)), batch
        finite = {"x": np.nan_to_num(x, nan=0.5)}
        got = sess.run(finite, mode=mode)[out]
        np.testing.assert_array_equal(got, ref.run(finite, mode=mode)[out])
        if mode == "inference":
            np.testing.assert_array_equal(got, ort_run(export_checked(g), finite)[out])
        k = len(kernel)
        naive = naive_pool(
            np.maximum(finite["x"], 0), kernel, kernel, (0,) * 2 * k, (1,) * k, 0, "max"
        )
        np.testing.assert_array_equal(got, naive.astype(np.float32))
