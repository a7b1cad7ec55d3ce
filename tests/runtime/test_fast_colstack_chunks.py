"""colstack and im2col over batch chunks of several images with a smaller last one, in a
workspace filled with NaN beforehand: the rows of ones (the bias column's), of zeros (colstack's
top / bottom padding) and the padded copies' borders are written by a call's first chunk only
and later chunks take the same memory, and colstack's
the side kernel columns' GEMM runs as one call on a view of the prepared weight where those
columns are evenly spaced. Every element is compared (the output NaN-filled before) with the
float64 plain conv, with and without bias, residual (written into its own buffer or over the
residual's, `Epilogue.aliased`) and ReLU, and with the GEMMs split over two threads.

Tolerance: the float32 rounding bound of the conv's terms (`float32_bound` of the conv of the
magnitudes, the residual's magnitude added; depth C x kh x kw + 1 for the bias column), as in
test_fast_conv_blocks.py."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.runtime.fast import conv as fc
from graphnet.runtime.fast.memory import Scratch
from tests.oracles import conv_and_magnitudes, float32_bound, random_conv_case

# (x shape, output channels, kernel, strides, pads, dilations): colstack on the input's own
# rows (width pads), 3x3 (side columns 0 and 2: one GEMM), 5x5 (0, 1, 3, 4: two), 2x2 pads
# (1, 0) (side column 1 only), 4x3 with the sum's base at column 0 (right pads only)
SHAPES = [
    ((5, 16, 9, 11), 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((5, 16, 9, 8), 16, (3, 1), (1, 1), (1, 0, 1, 0), (1, 1)),  # padded rows (Inception's 3x1)
    ((3, 5, 6, 7), 50, (2, 1), (1, 1), (0, 1, 1, 2), (1, 1)),  # padded rows: output wider
    # im2col: ResNet-20's strided convs, its first (exact columns), wide rows, strided rows
    ((5, 16, 32, 32), 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((5, 3, 9, 8), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((5, 1, 12, 11), 6, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((5, 6, 11, 7), 5, (3, 3), (2, 1), (1, 1, 0, 2), (1, 1)),
    ((7, 16, 32, 32), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # ResNet-20's, odd batch
    ((5, 12, 7, 6), 20, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1)),  # strided rows
    ((5, 16, 8, 9), 16, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((3, 24, 6, 7), 17, (2, 2), (1, 1), (1, 1, 0, 0), (1, 1)),
    ((5, 20, 10, 7), 12, (4, 3), (1, 1), (2, 0, 1, 2), (2, 1)),
]


def _nan_scratch(elements: int) -> Scratch:
    """A scratch whose own buffer holds `elements` float32 NaNs: the first take sizes the buffer
    (it grows at the reset), the second lands in it."""
    scratch = Scratch()
    for _ in range(2):
        scratch.take(0, elements, np.float32).fill(np.nan)
        scratch.reset()
    return scratch


EPILOGUES = [  # (bias, residual, aliased, relu)
    (False, False, False, False),
    (True, False, False, True),
    (True, True, False, True),
    (True, True, True, True),
    (False, True, True, False),
]


def _algo(x_shape, m, k, s, p, d) -> str:
    spec = fc.ConvSpec(k, s, p, d, 1, x_shape[1], m)
    out = [(x_shape[2 + i] + p[i] + p[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2)]
    return fc.choose(spec, out)[0]


# every shape with every epilogue, except an output over the residual's buffer (aliased) for
# im2col, which writes its output before adding the residual: of these two algorithms only
# colstack writes over it (`conv.overwrites_residual`, asserted in the test)
CASES = [
    (*shape, *epi)
    for shape in SHAPES
    for epi in EPILOGUES
    if not epi[2] or _algo(*shape) == "colstack"
]


@pytest.mark.parametrize("x_shape, m, k, s, p, d, bias, residual, aliased, relu", CASES)
@pytest.mark.parametrize("split", [False, True])
def test_chunks_of_images_match_the_float64_conv(
    x_shape, m, k, s, p, d, bias, residual, aliased, relu, split, monkeypatch
):
    per_chunk = []

    def two(per_item, n, budget=None):  # chunks of two images (the last one of one)
        per_chunk.append(n)
        return min(n, 2)

    monkeypatch.setattr(fc, "_chunk", two)
    rng = np.random.default_rng(sum(x_shape) + m + 7 * bias + 5 * residual + 3 * aliased)
    c = x_shape[1]
    x, w, b, exact, mags = random_conv_case(rng, x_shape, m, k, s, p, d, bias)
    spec = fc.ConvSpec(k, s, p, d, 1, c, m)
    algo = fc.choose(spec, exact.shape[2:])[0]
    assert algo in ("colstack", "im2col")
    assert not aliased or fc.overwrites_residual(algo, spec, (8,))  # (see CASES)
    res = rng.standard_normal(exact.shape).astype(np.float32) if residual else None
    if res is not None:
        exact = exact + res
        mags = mags + np.abs(res)
    if relu:
        exact = np.maximum(exact, 0)
    wp = fc.prepare_weight(algo, w, 1, np.float32, b)
    got = np.full(exact.shape, np.nan, np.float32)
    if aliased:  # the output is the residual's own buffer
        assert res is not None
        got[...] = res
    # aliased: the residual read per chunk is the output's own buffer, before it is written
    epi = fc.Epilogue(
        bias=b,
        residual=None if res is None else (lambda: got) if aliased else (lambda: res),
        activation=("relu",) if relu else (),
        aliased=aliased,
    )
    parallel = None
    if split:
        from graphnet.runtime.fast.threads import Parallel

        parallel = Parallel(2)
        monkeypatch.setattr("graphnet.runtime.fast.threads.SPLIT_MIN_FLOPS", 0)
    scratch = _nan_scratch(4 * (x.size + exact.size) * max(k) * max(k))
    fc.conv_chunked(algo, spec, x, wp, got, epi, scratch, split=parallel)
    scratch.reset()
    assert per_chunk and per_chunk[0] == x_shape[0]  # the chunked path ran
    err = np.abs(got.astype(np.float64) - exact)
    bound = float32_bound(mags, c * int(np.prod(k)) + 1)  # (+ 1: the bias column)
    assert (err <= bound).all(), f"max error {np.nanmax(err):.2e}, NaN: {np.isnan(got).sum()}"
    # a second call on the same scratch (the workspace as the first left it) and a new input
    x2 = rng.standard_normal(x_shape).astype(np.float32)
    exact2, mags2 = conv_and_magnitudes(x2, w, b, s, p, d)
    if res is not None:
        exact2 = exact2 + res
        mags2 = mags2 + np.abs(res)
        if aliased:
            got[...] = res
    if relu:
        exact2 = np.maximum(exact2, 0)
    fc.conv_chunked(algo, spec, x2, wp, got, epi, scratch, split=parallel)
    scratch.reset()
    err = np.abs(got.astype(np.float64) - exact2)
    assert (err <= float32_bound(mags2, c * int(np.prod(k)) + 1)).all(), f"{np.nanmax(err):.2e}"
