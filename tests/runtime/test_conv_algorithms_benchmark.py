"""benchmarks/conv_algorithms.py keeps working: its shape parser, and one interleaved round on
small shapes (a rectangular kernel, a 3x3 one; with a fused 2x2 pool: the pool's phases,
colstack and their NCHW paths, batch-last at batch 5; a Winograd conv skipped) whose table
names the plan's algorithm and shows every algorithm agreeing with exact im2col (max |diff|,
float32 rounding of O(1) sums; Winograd F(4x4) ~1e-5: bound 1e-3). No timing is asserted."""

from __future__ import annotations

import re

import numpy as np
import pytest

from benchmarks import conv_algorithms as bench


def test_shapes_parse_square_and_rectangular_kernels():
    assert bench._shape("16,16,8,3x1") == (16, 16, 8, (3, 1))
    assert bench._shape("1,6,28,5") == (1, 6, 28, (5, 5))


@pytest.mark.parametrize(
    "c, m, hw, kernel, pool, chosen",
    [
        (16, 16, 8, (3, 1), None, "colstack"),
        (8, 16, 6, (1, 3), None, "colstack"),
        (4, 16, 6, (1, 3), None, "im2col-exact"),
        (24, 24, 8, (3, 3), None, None),
        (1, 6, 8, (5, 5), (2, 2), "phasepool-2x2"),
        (6, 16, 6, (5, 5), (2, 2), "colstack"),
    ],
)
@pytest.mark.parametrize("batch", [2, 5])
def test_one_round_agrees_with_exact_im2col(c, m, hw, kernel, pool, chosen, batch):
    line = bench.bench(c, m, hw, kernel, batch=batch, rounds=1, pool=pool)
    cells = re.findall(r"([a-z0-9-]+)(\*?) [0-9.]+ \([0-9.]+, ([0-9.e+-]+)\)", line)
    names = {name for name, _, _ in cells}
    assert {"im2col-wide", "im2col-exact", "onnxruntime"} <= names
    assert all(float(diff) <= 1e-3 for _, _, diff in cells), line
    marked = [name for name, star, _ in cells if star]
    assert len(marked) == 1 and (chosen is None or marked == [chosen]), line
    if pool:  # the batch-last paths' NCHW ones beside them
        assert chosen + "-nchw" in names, line


def test_a_pooled_winograd_conv_is_skipped():
    line = bench.bench(24, 24, 8, (3, 3), batch=2, rounds=1, pool=(2, 2))
    assert "skipped" in line and "winograd" in line


def test_one_3d_round_agrees_with_im2col():
    """A 3x3x3 conv: im2col, wino3d F(4x4) (the plan's, starred) and F(2x2) and onnxruntime
    agree with im2col within the sum of the two sides' derived float32 bounds: the 3-D
    Winograd bound (test_fast_winograd3d's) for wino3d, and for im2col and onnxruntime (a
    float32 sum of 27 C products and the bias in any order) `float32_bound` of the same conv on
    magnitudes. The table prints each max |diff| to one significant digit, rounded to nearest:
    up to 1.5x the true value (1.4999 -> 1), so a diff within its bound B prints <= 1.5 B."""
    from graphnet.runtime.kernels.conv import conv
    from tests.oracles import float32_bound
    from tests.runtime.test_fast_winograd3d import _bound

    args = (3, 4, 3, 8, 2)  # C, M, frames, HW, batch
    line = bench.bench3d(*args[:4], batch=args[4], rounds=1)
    cells = re.findall(r"([a-z0-9-]+)(\*?) [0-9.]+ \([0-9.]+, ([0-9.e+-]+)\)", line)
    assert {name for name, _, _ in cells} == {"im2col", "wino3d-f4", "wino3d-f2", "onnxruntime"}
    assert [name for name, star, _ in cells if star] == ["wino3d-f4"], line
    x, w, b = bench.inputs3d(*args)
    pads = (1,) * 6
    kw = dict(strides=(1, 1, 1), pads=pads, dilations=(1, 1, 1), group=1, kernel_shape=None)
    bias = np.abs(b.astype(np.float64))[:, None, None, None]
    mags = conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, **kw) + bias
    plain = float32_bound(mags, 27 * x.shape[1])  # im2col's and onnxruntime's
    bounds = {
        "im2col": 2 * plain,
        "onnxruntime": 2 * plain,
        "wino3d-f4": _bound(x, w, pads, 4, bias) + plain,
        "wino3d-f2": _bound(x, w, pads, 2, bias) + plain,
    }
    for name, _, diff in cells:
        assert float(diff) <= 1.5 * bounds[name].max(), (name, line)


def test_a_3d_conv_under_pool_is_skipped():
    """--pool is a 2-D pool: a 3-D shape beside it says so rather than timing an unpooled conv."""
    line = bench.bench3d(3, 4, 3, 8, batch=1, rounds=1, pool=(2, 2))
    assert "skipped" in line and "2-D" in line
