"""The batch-last paths of convs under a fused tiling MaxPool (images innermost):
`conv._im2col_batch_last`, a colstack conv on a slice of at least BATCH_LAST_MIN_IMAGES images
(LeNet's second conv at batch 32), and `conv._phase_pool_batch_last`, phasepool's from
PHASE_POOL_BATCH_LAST_MIN_IMAGES (LeNet's first).

Oracles: colstack's own fused pool, or the per-image phasepool (the same conv with the threshold
out of reach), and a float64 conv + bias + activation + max pool in plain NumPy, on odd shapes:
row strides and dilations, uneven pads (and none), kernels of 2x3 to 5x5, pools 2x2 / 3x2 / 2x3
(with the conv's rows and columns past the last tile dropped), bias or none (phasepool: also as
the weight's column), ReLU / LeakyReLU / none, slices [lo, hi), chunks of images and slabs of
rows of unequal size, a NaN-filled scratch."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.runtime.fast import conv as fc
from graphnet.runtime.fast.memory import Scratch


def _reference(x, w, b, pads, strides, dilations, pool, act):
    """float64 conv (zero padding), bias, activation, then the tiling max pool."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wi = x.shape
    m, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + pads[0] + pads[2], wi + pads[1] + pads[3]))
    xp[:, :, pads[0] : pads[0] + h, pads[1] : pads[1] + wi] = x
    ho = (xp.shape[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, ho, wo))
    for i in range(kh):  # a loop over the kernel's taps (a test oracle)
        for j in range(kw):
            r, q = i * dilations[0], j * dilations[1]
            patch = xp[:, :, r : r + strides[0] * (ho - 1) + 1 : strides[0]]
            patch = patch[..., q : q + strides[1] * (wo - 1) + 1 : strides[1]]
            y += np.einsum("nchw,mc->nmhw", patch, w[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    if act == "relu":
        y = np.maximum(y, 0)
    elif act == "leaky":
        y = np.maximum(y, 0.1 * y)
    ph, pw = pool
    hr, wr = ho // ph, wo // pw
    t = y[:, :, : hr * ph, : wr * pw].reshape(n, m, hr, ph, wr, pw)
    return t.max(axis=(3, 5))


def _nan_scratch() -> Scratch:
    """A scratch whose buffer (the one the kernel's takes get) is NaN-filled: the workspace is
    not assumed zeroed. (A fresh scratch makes its buffer at its first reset.)"""
    scratch = Scratch()
    scratch.take(0, 1 << 16, np.float32)
    scratch.reset()
    scratch.take(0, 1 << 16, np.float32)[:] = np.nan
    scratch.reset()
    return scratch


def _spy(monkeypatch, name: str) -> list:
    """Records each call of conv.`name` (then runs it)."""
    calls: list = []
    real = getattr(fc, name)
    monkeypatch.setattr(fc, name, lambda *a: calls.append(a[6:8]) or real(*a))
    return calls


def _both_paths(monkeypatch, path: str, threshold: str, other: str, conv: tuple) -> dict:
    """The conv (algo, spec, x, wp, output shape, epi, lo, hi) run with conv.`threshold` at 1
    ("batch_last": conv.`path` runs) and out of reach (`other`: it does not), each into a
    NaN-filled output on a NaN-filled scratch: images lo:hi written, the others untouched."""
    algo, spec, x, wp, shape, epi, lo, hi = conv
    runs = {}
    calls = _spy(monkeypatch, path)
    for name, least in (("batch_last", 1), (other, 10**9)):
        monkeypatch.setattr(fc, threshold, least)
        got = np.full(shape, np.nan, np.float32)
        fc.conv_chunked(algo, spec, x, wp, got, epi, _nan_scratch(), lo, hi)
        assert not np.isnan(got[lo:hi]).any() and np.isnan(got[:lo]).all()
        assert np.isnan(got[hi:]).all()
        runs[name] = got[lo:hi]
        assert bool(calls) is (name == "batch_last")  # the path under test ran (only there)
        calls.clear()
    return runs


def test_derived_weights_go_with_their_prepared_weight():
    """The batch-last weight derived from a colstack prepared weight is cached per prepared
    array, weakly: it goes when that array does (a dead plan's weights are not kept)."""
    import gc

    spec = fc.ConvSpec((5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, 6, 16)
    w = np.random.default_rng(1).standard_normal((16, 6, 5, 5)).astype(np.float32)
    wp = fc.prepare_weight("colstack", w, 1, np.float32, None)
    gc.collect()  # (earlier tests' dead plans: their entries go now, not in the count below)
    before = len(fc._BATCH_LAST_WEIGHTS)
    got = fc._batch_last_weight(wp, spec)
    assert fc._batch_last_weight(wp, spec) is got and len(fc._BATCH_LAST_WEIGHTS) == before + 1
    np.testing.assert_array_equal(got, w.reshape(16, -1))
    del wp
    gc.collect()
    assert len(fc._BATCH_LAST_WEIGHTS) == before


# (C, M, (H, W), kernel, pads, row stride, row dilation, pool)
CASES = [
    (6, 16, (14, 14), (5, 5), (0, 0, 0, 0), 1, 1, (2, 2)),  # LeNet's second
    (6, 16, (10, 9), (5, 5), (2, 2, 2, 2), 1, 1, (2, 3)),  # 10 x 9 out: a column dropped
    (3, 7, (13, 11), (3, 2), (1, 0, 2, 1), 1, 1, (3, 2)),  # uneven pads, 2 rows dropped
    (4, 5, (15, 12), (3, 3), (1, 1, 0, 1), 2, 1, (2, 2)),  # row stride 2
    (2, 9, (17, 10), (2, 3), (0, 2, 1, 0), 1, 2, (2, 2)),  # row dilation 2
]


@pytest.mark.parametrize("act", ["relu", "leaky", ""])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "batch, lo, hi, chunk, slab", [(4, 0, 4, None, None), (7, 0, 7, 2, 1), (9, 2, 8, 3, 2)]
)
@pytest.mark.parametrize("c, m, hw, k, pads, sh, dh, pool", CASES)
def test_batch_last_against_colstack_and_float64(
    c, m, hw, k, pads, sh, dh, pool, batch, lo, hi, chunk, slab, bias, act, monkeypatch
):
    rng = np.random.default_rng(c * 100 + m + batch)
    spec = fc.ConvSpec(k, (sh, 1), pads, (dh, 1), 1, c, m)
    x = rng.standard_normal((batch, c, *hw)).astype(np.float32)
    w = (rng.standard_normal((m, c, *k)) / (c * k[0] * k[1]) ** 0.5).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    hp, wp_ = hw[0] + pads[0] + pads[2], hw[1] + pads[1] + pads[3]
    ho, wo = (hp - dh * (k[0] - 1) - 1) // sh + 1, wp_ - k[1] + 1
    shape = (batch, m, ho // pool[0], wo // pool[1])
    activation = {"relu": ("relu",), "leaky": ("leaky", 0.1), "": ()}[act]
    epi = fc.Epilogue(bias=b, activation=activation, pool=pool)
    wp = fc.prepare_weight("colstack", w, 1, np.float32, b)
    if chunk is not None:  # a workspace of `chunk` images: 7 of them in 2, 2, 2, 1
        monkeypatch.setattr(fc, "_chunk", lambda per_item, n, budget=None: min(n, chunk))
    if slab is not None:  # slabs of `slab` pooled rows: uneven ones too (5 rows in 2, 2, 1)
        monkeypatch.setattr(fc, "_batch_last_slab", lambda *a: slab)
    runs = _both_paths(monkeypatch, "_im2col_batch_last", "BATCH_LAST_MIN_IMAGES", "colstack",
                       ("colstack", spec, x, wp, shape, epi, lo, hi))  # fmt: skip
    ref = _reference(x[lo:hi], w, b, pads, (sh, 1), (dh, 1), pool, act)
    # c*kh*kw float32 products of |x w| <~ 4 / sqrt(c kh kw) each, summed in another order by
    # each GEMM: both within 1e-5 of the float64 result and of each other
    np.testing.assert_allclose(runs["batch_last"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs["colstack"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs["batch_last"], runs["colstack"], rtol=1e-5, atol=1e-5)


def test_batch_last_runs_from_the_threshold_only(monkeypatch):
    """Under BATCH_LAST_MIN_IMAGES images the colstack path runs (its own workspace slots)."""
    calls = []
    real = fc._im2col_batch_last
    monkeypatch.setattr(fc, "_im2col_batch_last", lambda *a: calls.append(a[7] - a[6]) or real(*a))
    spec = fc.ConvSpec((5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, 6, 16)
    w = np.ones((16, 6, 5, 5), np.float32)
    wp = fc.prepare_weight("colstack", w, 1, np.float32, None)
    epi = fc.Epilogue(pool=(2, 2))
    for batch in (fc.BATCH_LAST_MIN_IMAGES - 1, fc.BATCH_LAST_MIN_IMAGES):
        x = np.ones((batch, 6, 14, 14), np.float32)
        out = np.empty((batch, 16, 5, 5), np.float32)
        fc.conv_chunked("colstack", spec, x, wp, out, epi, Scratch())
        assert (out == 150).all()
    assert calls == [fc.BATCH_LAST_MIN_IMAGES]


# (C, M, (H, W), kernel, pads, pool): phasepool's convs (under 8 output channels)
PHASE_CASES = [
    (1, 6, (28, 28), (5, 5), (2, 2, 2, 2), (2, 2)),  # LeNet's first
    (2, 5, (11, 9), (3, 5), (2, 1, 0, 3), (2, 2)),  # uneven pads, a 3x5 kernel, odd sizes
    (3, 7, (9, 12), (2, 3), (0, 0, 1, 0), (2, 3)),  # pads at one end only
    (1, 3, (7, 7), (5, 5), (4, 4, 3, 4), (3, 2)),  # pads wider than the kernel's reach
    (2, 5, (12, 9), (3, 3), (2, 3, 1, 0), (2, 3)),  # pads and sizes multiples of the pool's
]


@pytest.mark.parametrize("act", ["relu", ""])
@pytest.mark.parametrize("bias, bias_column", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize(
    "batch, lo, hi, chunk, slab", [(4, 0, 4, None, None), (7, 0, 7, 2, 1), (9, 2, 8, 3, 2)]
)
@pytest.mark.parametrize("c, m, hw, k, pads, pool", PHASE_CASES)
def test_phase_pool_batch_last_against_per_image_and_float64(
    c, m, hw, k, pads, pool, batch, lo, hi, chunk, slab, bias, bias_column, act, monkeypatch
):
    rng = np.random.default_rng(c * 100 + m + batch)
    spec = fc.ConvSpec(k, (1, 1), pads, (1, 1), 1, c, m)
    x = rng.standard_normal((batch, c, *hw)).astype(np.float32)
    w = (rng.standard_normal((m, c, *k)) / (c * k[0] * k[1]) ** 0.5).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    ho = hw[0] + pads[0] + pads[2] - k[0] + 1
    wo = hw[1] + pads[1] + pads[3] - k[1] + 1
    shape = (batch, m, ho // pool[0], wo // pool[1])
    epi = fc.Epilogue(bias=b, activation=("relu",) if act else (), pool=pool)
    algo = f"phasepool-{pool[0]}x{pool[1]}"  # the kernel on any pool (phase_pool's rule aside)
    wp = fc.prepare_weight(algo, w, 1, np.float32, b if bias_column else None)
    if chunk is not None:  # a workspace of `chunk` images: 7 of them in 2, 2, 2, 1
        monkeypatch.setattr(fc, "_chunk", lambda per_item, n, budget=None: min(n, chunk))
    if slab is not None:  # slabs of `slab` pooled rows: uneven ones too (5 rows in 2, 2, 1)
        monkeypatch.setattr(fc, "_batch_last_slab", lambda *a: slab)
    runs = _both_paths(monkeypatch, "_phase_pool_batch_last", "PHASE_POOL_BATCH_LAST_MIN_IMAGES",
                       "per_image", (algo, spec, x, wp, shape, epi, lo, hi))  # fmt: skip
    ref = _reference(x[lo:hi], w, b, pads, (1, 1), (1, 1), pool, act)
    # c*kh*kw float32 products of |x w| <~ 4 / sqrt(c kh kw) each (and exact zeros, the
    # phases' padded kernel), in another order by each GEMM: within 1e-5 of float64's
    np.testing.assert_allclose(runs["batch_last"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs["per_image"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(runs["batch_last"], runs["per_image"], rtol=1e-5, atol=1e-5)


def test_no_batch_last_on_aliased_planes(monkeypatch):
    """32x32 float32 planes (4 KiB: conv.WINOGRAD_ALIASED_PLANE_BYTES) keep the NCHW paths."""
    calls = []
    for name in ("_im2col_batch_last", "_phase_pool_batch_last"):
        real = getattr(fc, name)
        monkeypatch.setattr(fc, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    rng = np.random.default_rng(0)
    for c, m, algo in ((6, 16, "colstack"), (1, 6, "phasepool-2x2")):
        spec = fc.ConvSpec((5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, c, m)
        w = rng.standard_normal((m, c, 5, 5)).astype(np.float32)
        wp = fc.prepare_weight(algo, w, 1, np.float32, None)
        epi = fc.Epilogue(pool=(2, 2))
        for hw, batch_last in ((32, False), (30, True)):
            x = rng.standard_normal((8, c, hw, hw)).astype(np.float32)
            out = np.empty((8, m, (hw - 4) // 2, (hw - 4) // 2), np.float32)
            fc.conv_chunked(algo, spec, x, wp, out, epi, Scratch())
            assert bool(calls) == batch_last
            ref = _reference(x, w, None, (0, 0, 0, 0), (1, 1), (1, 1), (2, 2), "")
            # 25 c float32 products of |x w| <~ 4 each: sums of ~10, rounding ~1e-5
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
            calls.clear()


def _images_innermost(a: np.ndarray, fill: float | None = None) -> np.ndarray:
    """The NCHW view of a batch-last (C, H, W, N) copy of `a` (or of an array of `fill`): the
    layout a batch-last hand-off between two plan steps holds (conv.images_innermost)."""
    bl = np.ascontiguousarray(a.transpose(1, 2, 3, 0))
    if fill is not None:
        bl.fill(fill)
    view = bl.transpose(3, 0, 1, 2)
    assert fc.images_innermost(view) and not fc.images_innermost(np.ascontiguousarray(view))
    return view


@pytest.mark.parametrize("layout_in, layout_out", [("nchw", "bl"), ("bl", "nchw"), ("bl", "bl")])
@pytest.mark.parametrize(
    "batch, lo, hi, chunk, slab", [(5, 0, 5, None, None), (7, 0, 7, 2, 1), (9, 2, 8, 3, 2)]
)
@pytest.mark.parametrize(
    "algo, case",
    [("colstack", c) for c in CASES[:3]] + [("phasepool", c) for c in PHASE_CASES[:3]],
)
def test_batch_last_input_and_output_as_nchw(
    algo, case, batch, lo, hi, chunk, slab, layout_in, layout_out, monkeypatch
):
    """Both batch-last paths read an input held batch-last (a hand-off's NCHW view: LeNet's
    second conv reads its first's output so, unpadded, with no copy) and write an output held
    so, in whole chunks and in slices of the batch (strided runs of the chunk's images): the
    same values as from and into NCHW arrays (the same operands and GEMMs: equal), images
    outside [lo, hi) untouched; the unpadded input read as it lies (no transposing copy)."""
    if algo == "colstack":
        c, m, hw, k, pads, sh, dh, pool = case
        algo_, least = "colstack", "BATCH_LAST_MIN_IMAGES"
    else:
        (c, m, hw, k, pads, pool), sh, dh = case, 1, 1
        algo_, least = f"phasepool-{pool[0]}x{pool[1]}", "PHASE_POOL_BATCH_LAST_MIN_IMAGES"
    monkeypatch.setattr(fc, least, 1)
    rng = np.random.default_rng(c * 10 + m + batch)
    spec = fc.ConvSpec(k, (sh, 1), pads, (dh, 1), 1, c, m)
    x = rng.standard_normal((batch, c, *hw)).astype(np.float32)
    w = (rng.standard_normal((m, c, *k)) / (c * k[0] * k[1]) ** 0.5).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    ho = (hw[0] + pads[0] + pads[2] - dh * (k[0] - 1) - 1) // sh + 1
    wo = hw[1] + pads[1] + pads[3] - k[1] + 1
    shape = (batch, m, ho // pool[0], wo // pool[1])
    epi = fc.Epilogue(bias=b, activation=("relu",), pool=pool)
    wp = fc.prepare_weight(algo_, w, 1, np.float32, None)
    if chunk is not None:  # a workspace of `chunk` images: 7 of them in 2, 2, 2, 1
        monkeypatch.setattr(fc, "_chunk", lambda per_item, n, budget=None: min(n, chunk))
    if slab is not None:
        monkeypatch.setattr(fc, "_batch_last_slab", lambda *a: slab)
    want = np.full(shape, np.nan, np.float32)
    fc.conv_chunked(algo_, spec, x, wp, want, epi, _nan_scratch(), lo, hi)
    xin = _images_innermost(x) if layout_in == "bl" else x
    got = _images_innermost(want, np.nan) if layout_out == "bl" else np.full(shape, np.nan)
    got = got.astype(np.float32, copy=False)
    seen: list = []
    real = fc.images_innermost
    monkeypatch.setattr(fc, "images_innermost", lambda a: seen.append(real(a)) or seen[-1])
    fc.conv_chunked(algo_, spec, xin, wp, got, epi, _nan_scratch(), lo, hi)
    np.testing.assert_array_equal(got[lo:hi], want[lo:hi])
    assert np.isnan(got[:lo]).all() and np.isnan(got[hi:]).all()
    if algo == "colstack" and not any(pads):  # read as it lies: the spy saw it batch-last
        assert (True in seen) is (layout_in == "bl")
