"""benchmarks/conv_algorithms.py keeps working: its shape parser, and one interleaved round on
small shapes (a rectangular kernel, a 3x3 one; with a fused 2x2 pool: the pool's phases,
colstack and their NCHW paths, batch-last at batch 5; a Winograd conv skipped) whose table
names the plan's algorithm and shows every algorithm agreeing with exact im2col (max |diff|,
float32 rounding of O(1) sums; Winograd F(4x4) ~1e-5: bound 1e-3). No timing is asserted."""

from __future__ import annotations

import re

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
    agree with im2col (F(4x4) over 27 C terms of O(1): bound 1e-3)."""
    line = bench.bench3d(3, 4, 3, 8, batch=2, rounds=1)
    cells = re.findall(r"([a-z0-9-]+)(\*?) [0-9.]+ \([0-9.]+, ([0-9.e+-]+)\)", line)
    assert {name for name, _, _ in cells} == {"im2col", "wino3d-f4", "wino3d-f2", "onnxruntime"}
    assert all(float(diff) <= 1e-3 for _, _, diff in cells), line
    assert [name for name, star, _ in cells if star] == ["wino3d-f4"], line
