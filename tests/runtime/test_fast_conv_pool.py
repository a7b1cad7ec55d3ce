"""A tiling MaxPool after an im2col or colstack Conv (and its ReLU / LeakyReLU) fused into the
conv (`CompiledPlan._tiling_pool`, `conv._pool_tiles`): the conv's output is never written, the
GEMM's result (colstack: its wide shifted sums, images apart in the workspace) is pooled
straight into the pool's output, bias and activation after the max.

Oracle: the same plan with the fusion off (the conv's im2col and the MaxPool step): the same
GEMM, and max, bias and the activations are exact on float32, so the outputs are equal; and
the reference plan (plain kernels) within float32 conv rounding, on odd shapes: batch 1 (exact
columns) and more (wide rows, odd wide widths too), kernel 2x2, 3x3, 2x3, bias or none, split
over the threads; colstack on LeNet's second conv and on padded rows of odd width; the pool's
phases in the GEMM's rows (`conv._phase_pool`, under 8 output channels), also on its own against
im2col's fused pool with uneven pads; at batch 5, colstack's and phasepool's batch-last paths
(`conv._im2col_batch_last`, `conv._phase_pool_batch_last`: tested on their own in
test_fast_conv_batch_last.py)."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import conv as conv_mod
from graphnet.runtime.fast import threads

# (input C, H, W), (out channels, kernel, pads), pool kernel, the conv's algorithm
CASES = [
    ((1, 28, 28), (8, 5, 2), (2, 2), "im2col"),  # wide rows of 32
    ((1, 12, 9), (9, 3, 1), (2, 3), "im2col"),  # wide rows of 11: not a multiple of 2
    ((3, 14, 11), (10, 3, 0), (3, 3), "im2col"),  # 12 x 9 out, rows of 11 (no padding)
    ((2, 10, 14), (8, 3, 2), (3, 2), "im2col"),  # 12 x 16 out
    ((1, 28, 28), (6, 5, 2), (2, 2), "phasepool-2x2"),  # LeNet's first
    ((1, 14, 12), (4, 7, 3), (2, 3), "phasepool-2x3"),  # wide phase rows
    ((3, 15, 12), (5, 7, 0), (3, 3), "phasepool-3x3"),  # no padding
    ((2, 11, 14), (3, 7, 2), (3, 2), "phasepool-3x2"),
    ((3, 14, 11), (5, 3, 0), (3, 3), "im2col"),  # phasepool's window 4x the kernel's products
    ((6, 14, 14), (16, 5, 0), (2, 2), "colstack"),  # LeNet's second: rows of 14, 10 valid
    ((6, 10, 9), (16, 5, 2), (2, 3), "colstack"),  # 10 x 9 out, padded rows of 13 (odd)
    ((16, 9, 12), (20, 3, 1), (3, 2), "colstack"),  # 9 x 12 out, padded rows of 14
]


def _graph(c, h, w, m, k, p, pool, bias, act):
    rng = np.random.default_rng(c * 100 + h * 10 + w + m)
    g = Graph("conv_pool")
    g.add_input("x", (None, c, h, w))
    g.add_param("w", (rng.standard_normal((m, c, k, k)) / (c * k * k) ** 0.5).astype(np.float32))
    ins = ["x", "w"]
    if bias:
        g.add_param("b", rng.standard_normal(m).astype(np.float32))
        ins.append("b")
    y = g.add_node("Conv", ins, {"pads": [p] * 4}, name="conv").outputs[0]
    if act == "relu":
        y = g.add_node("Relu", [y], {}, name="act").outputs[0]
    elif act == "leaky":
        y = g.add_node("LeakyRelu", [y], {"alpha": 0.1}, name="act").outputs[0]
    y = g.add_node("MaxPool", [y], {"kernel_shape": list(pool), "strides": list(pool)}, name="pool")
    g.mark_output(y.outputs[0])
    return g, y.outputs[0]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("act", ["relu", "leaky", ""])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("shape, conv, pool, algo", CASES)
def test_fused_pool_equals_unfused_plan_and_reference(
    shape, conv, pool, algo, batch, bias, act, split, monkeypatch
):
    if split:
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "_cpu", lambda: -1)
        monkeypatch.setattr(threads, "_skip", 0)
    g, out = _graph(*shape, *conv, pool, bias, act)
    x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
    fused = runtime.Session(g)
    got = fused.run({"x": x})[out]
    steps = fused._fast(training=False, keep_all=False).steps
    assert [s.op for s in steps] == ["Conv"] and steps[0].algo == algo
    assert steps[0].pool == tuple(pool) and "pool" in steps[0].fused
    assert np.array_equal(fused.run({"x": x})[out], got)  # (a replayed run)
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_tiling_pool", lambda self, v, n: None)
        plain = runtime.Session(g)
        want = plain.run({"x": x})[out]
        assert [s.op for s in plain._fast(training=False, keep_all=False).steps][-1] == "MaxPool"
    assert got.shape == want.shape
    batch_last = algo == "colstack" and batch >= conv_mod.BATCH_LAST_MIN_IMAGES
    if algo == "im2col" or (algo == "colstack" and not conv[2] and not batch_last):
        assert np.array_equal(got, want)
    else:  # unfused, colstack sums a padded width on the input's own rows (another order);
        # phasepool's GEMM has other (and zero) terms, and from BATCH_LAST_MIN_IMAGES images
        # the fused colstack runs `_im2col_batch_last` (another GEMM): as close as the
        # reference's
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = runtime.Session(g, plan="reference").run({"x": x})[out]
    # float32 conv of c*k*k terms of |x w| <~ 4 * 1 / sqrt(c k k) each: well within 1e-5
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_phase_pool_keeps_non_finite_inputs_where_the_conv_has_them(batch, bad):
    """phasepool's GEMM multiplies window taps outside a phase's kernel by zero weights (0 * inf
    = NaN): a chunk with a non-finite input runs im2col, so the output's non-finite values are
    where the plain conv + pool has them (an inf pixel used to make 30 NaN in LeNet's first
    conv at batch 2 where onnxruntime and the reference made none)."""
    g, out = _graph(1, 28, 28, 6, 5, 2, (2, 2), True, "relu")
    x = np.random.default_rng(3).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    x[-1, 0, 13, 6] = bad
    x[-1, 0, 27, 27] = -bad
    sess = runtime.Session(g)
    assert sess._fast(training=False, keep_all=False).steps[0].algo == "phasepool-2x2"
    got = sess.run({"x": x})[out]
    want = runtime.Session(g, plan="reference").run({"x": x})[out]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)
    clean = x[:1].copy()
    clean[np.isfinite(clean) == 0] = 0
    assert np.isfinite(sess.run({"x": clean})[out]).all()


@pytest.mark.parametrize(
    "kernel, pool, phases",
    [
        ((5, 5), (2, 2), True),
        ((3, 3), (2, 2), True),
        ((3, 3), (3, 3), False),
        ((3, 3), (4, 4), False),
    ],
)
def test_phase_pool_only_where_its_window_stays_small(kernel, pool, phases):
    """phase_pool's GEMM does window / kernel times the conv's products (PHASE_POOL_MAX_WORK)."""
    spec = conv_mod.ConvSpec(kernel, (1, 1), (1, 1, 1, 1), (1, 1), 1, 3, 6)
    assert bool(conv_mod.phase_pool(spec, pool)) is phases


def test_fused_in_train_mode_not_for_keep_all_or_overlapping_pools():
    """Train mode fuses as inference does (the same forward; see test_fast_train_fusions.py);
    keep_all (every intermediate asked for) and overlapping windows keep the MaxPool step."""
    g, out = _graph(1, 12, 12, 4, 3, 1, (2, 2), True, "relu")
    train = runtime.Session(g)._fast(training=True, keep_all=False)
    assert [s.op for s in train.steps] == ["Conv"] and train.steps[0].pool == (2, 2)
    every = runtime.Session(g)._fast(training=True, keep_all=True)
    assert "MaxPool" in [s.op for s in every.steps]
    g2 = Graph("overlap")
    g2.add_input("x", (None, 1, 12, 12))
    g2.add_param("w", np.ones((4, 1, 3, 3), np.float32))
    y = g2.add_node("Conv", ["x", "w"], {"pads": [1] * 4}, name="conv").outputs[0]
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    g2.mark_output(g2.add_node("MaxPool", [y], attrs, name="pool").outputs[0])
    plan = runtime.Session(g2)._fast(training=False, keep_all=False)
    assert [s.op for s in plan.steps] == ["Conv", "MaxPool"]


@pytest.mark.parametrize(
    "c, m, hw, k, pads, pool",
    [
        (1, 6, (28, 28), (5, 5), (2, 2, 2, 2), (2, 2)),  # LeNet's first
        (2, 5, (11, 9), (3, 5), (2, 1, 0, 3), (2, 2)),  # uneven pads, a 3x5 kernel
        (3, 7, (9, 12), (2, 3), (0, 0, 1, 0), (2, 3)),  # pads at one end only
        (1, 3, (7, 7), (5, 5), (4, 4, 3, 4), (3, 2)),  # pads wider than the kernel's reach
    ],
)
@pytest.mark.parametrize("bias_column", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_phase_pool_against_im2col_pool(c, m, hw, k, pads, pool, batch, bias_column):
    from graphnet.runtime.fast import conv as fc
    from graphnet.runtime.fast.memory import Scratch

    rng = np.random.default_rng(c * 10 + m + batch)
    spec = fc.ConvSpec(k, (1, 1), pads, (1, 1), 1, c, m)
    ho = hw[0] + pads[0] + pads[2] - k[0] + 1
    wo = hw[1] + pads[1] + pads[3] - k[1] + 1
    ho, wo = ho - ho % pool[0], wo - wo % pool[1]  # (a tiling pool: crop the input to fit)
    x = rng.standard_normal((batch, c, hw[0], hw[1])).astype(np.float32)
    x = np.ascontiguousarray(x[:, :, : ho + k[0] - 1 - pads[0] - pads[2]])
    x = np.ascontiguousarray(x[..., : wo + k[1] - 1 - pads[1] - pads[3]])
    w = (rng.standard_normal((m, c, *k)) / (c * k[0] * k[1]) ** 0.5).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    algo = f"phasepool-{pool[0]}x{pool[1]}"  # the kernel on any pool (phase_pool's rule aside)
    got = np.full((batch, m, ho // pool[0], wo // pool[1]), np.nan, np.float32)
    want = np.empty_like(got)
    epi = fc.Epilogue(bias=b, activation=("relu",), pool=pool)
    scratch = Scratch()
    scratch.take(0, 1 << 16, np.float32)  # (a fresh scratch's first reset makes its buffer)
    scratch.reset()
    scratch.take(0, 1 << 16, np.float32)[:] = np.nan  # the workspace is not assumed zeroed
    scratch.reset()
    wp = fc.prepare_weight(algo, w, 1, np.float32, b if bias_column else None)
    fc.conv_chunked(algo, spec, x, wp, got, epi, scratch)
    scratch.reset()
    wi = fc.prepare_weight("im2col", w, 1, np.float32, b)
    fc.conv_chunked("im2col", spec, x, wi, want, epi, scratch)
    # c*kh*kw float32 terms of |x w| <~ 4 / sqrt(c kh kw) each (and exact zeros): within 1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
