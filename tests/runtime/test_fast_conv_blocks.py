"""GEMMs cut into blocks of columns (`conv.blocked_matmul`, see SMALL_GEMM_MNK) against the
float64 product, and the conv algorithms that use them (im2col, its slabs, colstack, pointwise)
with blocks forced on small shapes against the float64 plain conv.

Tolerances: a float32 GEMM of depth K is within Higham's gamma_(K+2) times the product of the
magnitudes (`float32_bound`); blocks only change which BLAS kernel computes each column, so the
same bound holds. The convs use the bound of their terms as in test_fast_plan.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.runtime.fast import conv as fc
from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.kernels.conv import conv
from tests.oracles import float32_bound, random_conv_case


def _check_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    mags = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    err = np.abs(out.astype(np.float64) - exact)
    assert (err <= float32_bound(mags, a.shape[-1])).all(), f"max error {err.max():.2e}"


def _spy_matmul(monkeypatch) -> list:
    """conv.py's `np` replaced by a stand-in whose matmul records each right operand's shape
    (then multiplies with NumPy's own); returns the list of shapes."""
    calls: list = []
    real = np.matmul

    class Spy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def matmul(a, b, out):
            calls.append(b.shape)
            return real(a, b, out=out)

    monkeypatch.setattr(fc, "np", Spy())
    return calls


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((5, 7), (3, 7, 200)),  # 3 whole blocks of 64 + 8 columns
        ((2, 5, 7), (3, 2, 7, 128)),  # groups broadcast over a batch, exact multiple
        ((1, 9, 3), (4, 1, 3, 63)),  # under one block: one plain call
        ((6, 11), (11, 1000)),  # 2-D
    ],
)
def test_blocked_matmul_matches_the_float64_product(a_shape, b_shape, monkeypatch):
    m, k = a_shape[-2:]
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", True)  # whatever kernels this machine's BLAS runs
    monkeypatch.setattr(fc, "SMALL_GEMM_MNK", m * k * fc.GEMM_BLOCK_STEP)  # blocks of 64
    rng = np.random.default_rng(sum(b_shape))
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    out = np.full(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (m, b_shape[-1]), np.nan)
    out = out.astype(np.float32)
    fc.blocked_matmul(a, b, out)
    _check_product(a, b, out)


def test_blocked_matmul_takes_strided_operands_and_writes_only_its_output(monkeypatch):
    """A transposed operand (as Winograd's) and an output that is a slice of a larger array:
    the blocks are views of both (never a copy that would lose the result), and the columns
    outside the slice are left alone."""
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", True)
    monkeypatch.setattr(fc, "SMALL_GEMM_MNK", 4 * 6 * 64)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4, 6)).astype(np.float32)
    b = rng.standard_normal((2, 150, 6)).astype(np.float32).transpose(0, 2, 1)  # (2, 6, 150)
    big = np.full((2, 4, 170), 7.0, np.float32)
    out = big[:, :, 10:160]
    fc.blocked_matmul(a, b, out)
    _check_product(a, b, out)
    assert (big[:, :, :10] == 7).all() and (big[:, :, 160:] == 7).all()


def test_blocks_are_a_multiple_of_the_step_under_the_small_gemm_size(monkeypatch):
    """Which calls block: M x K x N over SMALL_GEMM_MNK with room for one block of
    GEMM_BLOCK_STEP columns; the blocks are the largest multiple of the step that fits."""
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", True)
    calls = _spy_matmul(monkeypatch)
    m, k = 16, 145  # ResNet's 16-channel 3x3 conv as im2col: blocks of 384 columns
    a = np.ones((m, k), np.float32)
    fc.blocked_matmul(a, np.ones((2, k, 1024), np.float32), np.empty((2, m, 1024), np.float32))
    assert calls == [(2, 2, k, 384), (2, k, 256)]
    calls.clear()
    fc.blocked_matmul(a, np.ones((k, 400), np.float32), np.empty((m, 400), np.float32))
    assert calls == [(k, 400)]  # 0.93e6 multiply-adds: small enough whole
    calls.clear()
    deep = np.ones((64, 577), np.float32)  # no block of 64 columns under the size
    fc.blocked_matmul(deep, np.ones((577, 1024), np.float32), np.empty((64, 1024), np.float32))
    assert calls == [(577, 1024)]


# (x shape, out channels, kernel, pads, algorithm): stride 1, undilated, ungrouped, bias + ReLU
CONVS = [
    ((3, 1, 12, 11), 6, (5, 5), (2, 2, 2, 2), "im2col"),  # LeNet's first, wide rows
    ((2, 3, 9, 8), 16, (3, 3), (1, 1, 1, 1), "im2col"),  # exact columns
    ((3, 16, 9, 11), 20, (3, 3), (1, 1, 1, 1), "colstack"),
    ((3, 6, 9, 10), 16, (5, 5), (2, 1, 0, 2), "colstack"),
    ((3, 10, 7, 6), 12, (1, 1), (0, 0, 0, 0), "pointwise"),
    ((2, 3, 5, 9, 10), 8, (3, 3, 3), (1,) * 6, "im2col"),  # 3-D: wide rows
]


@pytest.mark.parametrize("x_shape, m, k, pads, algo", CONVS)
@pytest.mark.parametrize("slabs", [False, True])
def test_conv_algorithms_in_blocks_match_the_float64_conv(
    x_shape, m, k, pads, algo, slabs, monkeypatch
):
    """Blocks forced on small shapes (each GEMM has a few blocks and a remainder); with
    `slabs`, a workspace budget so small that im2col runs one image in slabs of output rows
    (their GEMMs in blocks too)."""
    c = x_shape[1]
    taps = int(np.prod(k))
    # The conv's GEMM: (M, K) = (m, c x taps + the bias column), colstack's (kw x m, c x kh + 1),
    # pointwise's (m, c): blocks of 7 columns (a step of 1) and a remainder.
    mk = {"im2col": m * (c * taps + 1), "colstack": k[-1] * m * (c * k[0] + 1), "pointwise": m * c}
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", True)
    monkeypatch.setattr(fc, "GEMM_BLOCK_STEP", 1)
    monkeypatch.setattr(fc, "SMALL_GEMM_MNK", 7 * mk[algo])
    if slabs:
        monkeypatch.setattr(fc, "WORKSPACE_BYTES", 1 << 10)
        monkeypatch.setattr(fc, "SLAB_MIN_COLUMNS", 1)
    rng = np.random.default_rng(len(x_shape) * 10 + m)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((m, c, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    nd = len(k)
    spec = fc.ConvSpec(k, (1,) * nd, pads, (1,) * nd, 1, c, m)
    outs = tuple(x_shape[2 + i] + pads[i] + pads[nd + i] - k[i] + 1 for i in range(nd))
    wp = fc.prepare_weight(algo, w, 1, np.float32, b)
    got = np.full((x_shape[0], m, *outs), np.nan, np.float32)
    blocked = []
    real = fc.blocked_matmul

    def spy(a, bb, out):
        blocked.append(a.shape[-2] * a.shape[-1] * bb.shape[-1] > fc.SMALL_GEMM_MNK)
        real(a, bb, out)

    monkeypatch.setattr(fc, "blocked_matmul", spy)
    fc.conv_chunked(algo, spec, x, wp, got, fc.Epilogue(bias=b, activation=("relu",)), Scratch())
    assert blocked and all(blocked)  # every GEMM of the conv ran in blocks
    kw = dict(strides=(1,) * nd, pads=pads, dilations=(1,) * nd, group=1, kernel_shape=None)
    f64 = [v.astype(np.float64) for v in (x, w, b)]
    exact = np.maximum(conv(*f64, **kw), 0)
    mags = conv(*[np.abs(v) for v in f64], **kw)
    err = np.abs(got.astype(np.float64) - exact)
    assert (err <= float32_bound(mags, c * taps)).all(), f"max error {err.max():.2e}"


def test_other_blas_kernels_multiply_whole(monkeypatch):
    """Without small-matrix kernels (BLOCKED_GEMMS false), one plain np.matmul."""
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", False)
    monkeypatch.setattr(fc, "SMALL_GEMM_MNK", 64)
    calls = _spy_matmul(monkeypatch)
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 500), np.float32)
    out = np.empty((2, 500), np.float32)
    fc.blocked_matmul(a, b, out)
    assert calls == [(3, 500)] and (out == 3).all()


@pytest.mark.parametrize(
    ("numpy_blas", "cores", "want"),
    [
        ("scipy-openblas", ["SkylakeX"], True),
        ("openblas", ["Cooperlake"], True),
        ("scipy-openblas", ["Haswell"], False),
        ("scipy-openblas", ["SkylakeX", "Haswell"], False),  # another package's OpenBLAS too
        ("scipy-openblas", [], False),  # threadpoolctl sees no OpenBLAS
        ("mkl-sdl", ["SkylakeX"], False),  # NumPy on MKL, some other package's OpenBLAS loaded
    ],
)
def test_blocked_gemms_follow_the_blas_kernels(numpy_blas, cores, want, monkeypatch):
    """The first call asks NumPy which BLAS it was built with and threadpoolctl which kernels
    every loaded OpenBLAS runs: blocks only when NumPy's is OpenBLAS and all of them run
    SkylakeX-family kernels."""
    import threadpoolctl

    info = [{"user_api": "blas", "internal_api": "openblas", "architecture": a} for a in cores]
    config = {"Build Dependencies": {"blas": {"name": numpy_blas}}}
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: info)
    monkeypatch.setattr(np, "show_config", lambda mode=None: config)
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", None)
    assert fc._blocked_gemms() is want


# (x shape, out channels, kernel, strides, pads, dilations, own rows): colstack on the input's
# own rows (a padded width, or a 1xk kernel: the input itself) or on padded rows.
COLSTACK = [
    ((3, 16, 9, 11), 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),  # pads 1
    ((2, 6, 9, 10), 16, (5, 5), (1, 1), (2, 1, 0, 2), (1, 1), True),  # left 1, right 2
    ((2, 20, 10, 7), 12, (3, 4), (2, 1), (1, 0, 0, 2), (2, 1), True),  # right pad only
    ((2, 12, 7, 6), 20, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), True),  # strided rows
    ((2, 16, 8, 9), 16, (5, 3), (1, 1), (0, 2, 4, 0), (2, 1), True),  # left pads only
    ((2, 16, 6, 40), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True),  # pads 5% of the width
    ((2, 6, 9, 10), 16, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), False),  # no width pads
    ((2, 16, 7, 6), 16, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), True),  # 1x3: the input itself
    ((2, 5, 6, 7), 50, (2, 1), (1, 1), (0, 1, 1, 2), (1, 1), False),  # output wider than input
    # pads wider than the input (shifts of a whole row or more: those columns read only padding)
    ((1, 16, 3, 2), 16, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), True),
    ((2, 16, 5, 2), 16, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), True),
    ((2, 8, 1, 2), 1, (1, 7), (1, 1), (0, 3, 0, 3), (1, 1), True),  # 1x7, one output channel
]


@pytest.mark.parametrize("x_shape, m, k, s, p, d, own", COLSTACK)
@pytest.mark.parametrize("bias, residual", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("chunks", [False, True])
def test_colstack_rows_with_bias_residual_and_relu_match_the_float64_conv(
    x_shape, m, k, s, p, d, own, bias, residual, chunks, monkeypatch
):
    """The epilogue's three forms on both colstack paths: the bias in the GEMM (prepared in the
    rows of the middle kernel column, kept when the sum's base pl is that column), in the crop,
    with a residual added by the crop; a ReLU after. The crop's output is compared on every
    element (NaN-filled before): the zeroed columns of the wrapped reads and the rows of the top
    / bottom padding. With `chunks`, one image per batch chunk (the shifted sums stay inside
    each image)."""
    if chunks:
        monkeypatch.setattr(fc, "WORKSPACE_BYTES", 1)
    rng = np.random.default_rng(sum(x_shape) + m)
    c = x_shape[1]
    x, w, b, exact, mags = random_conv_case(rng, x_shape, m, k, s, p, d, bias)
    res = rng.standard_normal(exact.shape).astype(np.float32) if residual else None
    if residual:
        exact = exact + res
        mags = mags + np.abs(res)
    exact = np.maximum(exact, 0)
    spec = fc.ConvSpec(k, s, p, d, 1, c, m)
    assert fc.choose(spec, exact.shape[2:])[0] == "colstack"
    wp = fc.prepare_weight("colstack", w, 1, np.float32, b)
    epi = fc.Epilogue(bias=b, residual=None if res is None else (lambda: res), activation=("relu",))
    got = np.full(exact.shape, np.nan, np.float32)
    padded_rows = []
    real = fc._colstack_padded
    monkeypatch.setattr(fc, "_colstack_padded", lambda *a: padded_rows.append(1) or real(*a))
    scratch = Scratch()
    fc.conv_chunked("colstack", spec, x, wp, got, epi, scratch)
    scratch.reset()
    assert bool(padded_rows) is not own
    err = np.abs(got.astype(np.float64) - exact)
    assert (err <= float32_bound(mags, c * int(np.prod(k)) + 1)).all(), f"max error {err.max():.2e}"
