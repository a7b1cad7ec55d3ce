"""The compiled fast plan (`Session(graph)`) against its oracle, the reference plan
(`Session(graph, plan="reference")`: the plain kernels node by node), and against onnxruntime.

- Every conv algorithm (pointwise, Winograd F(4x4) / F(2x2), colstack, im2col) on odd shapes:
  1-, 2- and 3-D, strides, dilations, groups, depthwise, asymmetric padding, batch 1 and odd
  batches. The exact result is the float64 reference kernel; the bound is `float32_bound`
  (gamma_n times the conv of |x| and |w|): an output that cancels to ~0 carries rounding
  relative to its terms.
  Winograd's error is relative to its transformed tiles (F(4x4)'s transforms have entries up to
  8): its bound is `winograd_bound`, gamma_n times the Winograd chain run on magnitudes.
- Fusion (bias, residual Add, ReLU / LeakyReLU into a Conv or Gemm), in-place element-wise ops
  and pooled buffers: values equal the reference plan's, feeds are never written, a second run
  with other inputs is not polluted by the first, outputs of one run survive the next.
- `keep_all` returns every intermediate, unfused, as the reference plan does.
- Train mode: the same Dropout masks (same generator draws in the same order), BatchNorm outputs
  and running-statistic updates as the reference plan.
- The six benchmark-suite models (optimized and not) agree with the reference plan and
  onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.passes.manager import optimize
from graphnet.runtime.feeds import random_inputs
from graphnet.runtime.kernels.conv import conv
from tests.helpers import export_checked, ort_run
from tests.oracles import float32_bound, winograd_bound

# Whole-model comparisons (float32, different algorithms and summation orders): the README's
# whole-model tolerances.
MODEL_RTOL, MODEL_ATOL = 1e-4, 1e-5


def _conv_graph(x_shape, w, b, attrs, relu: bool = False) -> Graph:
    """x -> Conv(w, b) named "conv" (-> Relu named "relu") -> the one output."""
    g = Graph("conv")
    g.add_input("x", x_shape)
    g.add_param("w", w)
    ins = ["x", "w"]
    if b is not None:
        g.add_param("b", b)
        ins.append("b")
    y = g.add_node("Conv", ins, attrs, name="conv").outputs[0]
    if relu:
        y = g.add_node("Relu", [y], {}, name="relu").outputs[0]
    g.mark_output(y)
    return g


# (x shape, out channels, kernel, strides, pads, dilations, group, expected algorithm)
CONVS = [
    ((3, 48, 13, 9), 50, (3, 3), (1, 1), (1, 0, 2, 1), (1, 1), 1, "winograd-f4"),
    ((1, 49, 12, 12), 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "winograd-f4"),
    ((5, 52, 6, 5), 49, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "winograd-f4"),
    ((2, 48, 5, 6), 56, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, "winograd-f2"),  # 3x4 out
    ((40, 48, 5, 5), 48, (3, 3), (1, 1), (0, 1, 2, 0), (1, 1), 1, "winograd-f4"),  # 5x4 out
    ((3, 23, 7, 9), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "im2col"),  # < 24 in
    ((2, 24, 9, 10), 24, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "winograd-f4"),  # 24 in, out
    ((3, 6, 11, 7), 5, (3, 3), (2, 1), (1, 1, 0, 2), (1, 1), 1, "im2col"),
    ((2, 6, 11, 10), 4, (3, 2), (1, 1), (2, 1, 2, 1), (2, 3), 2, "im2col"),
    ((3, 8, 9, 9), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8, "im2col"),  # depthwise
    ((3, 15, 10, 10), 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "im2col"),  # < 16 channels
    ((1, 4, 7, 6), 10, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), 1, "im2col"),
    ((3, 10, 7, 6), 12, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "pointwise"),
    ((5, 10, 7, 6), 12, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 2, "pointwise"),
    ((3, 5, 17), 6, (4,), (3,), (2, 1), (2,), 1, "im2col"),  # 1-D
    ((2, 3, 20), 3, (3,), (1,), (1, 2), (1,), 1, "im2col"),  # 1-D, wide rows
    ((2, 4, 4, 5, 6), 6, (2, 3, 3), (2, 1, 1), (0, 1, 1, 1, 0, 1), (1, 2, 1), 2, "im2col"),
    ((3, 1, 12, 11), 6, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1, "im2col"),  # LeNet's first
    ((2, 3, 9, 8), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "im2col"),  # exact: 16 out of 3
    ((2, 4, 5, 6, 7), 6, (3, 2, 3), (1, 2, 1), (1, 0, 1, 1, 1, 0), (1, 1, 2), 2, "im2col"),
    ((3, 6, 4, 5, 6), 8, (1, 1, 1), (1, 1, 1), (0,) * 6, (1, 1, 1), 1, "pointwise"),  # 3-D 1x1
    ((3, 16, 9, 11), 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "colstack"),
    ((2, 20, 10, 7), 12, (3, 4), (2, 1), (1, 0, 0, 2), (2, 1), 1, "colstack"),  # rows strided
    ((1, 17, 6, 5), 47, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, "colstack"),  # no padding
    ((2, 24, 5, 9), 9, (5, 2), (1, 1), (2, 0, 2, 1), (1, 1), 1, "colstack"),
    ((3, 6, 9, 10), 16, (5, 5), (1, 1), (2, 1, 0, 2), (1, 1), 1, "colstack"),  # LeNet's 2nd
    ((2, 12, 7, 6), 20, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 1, "colstack"),  # 12 in, strided
    ((2, 8, 7, 7), 32, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1, "im2col"),  # depth 40 < 1.75M
    ((2, 16, 8, 8), 16, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), 1, "colstack"),  # 1x3: x itself
    ((2, 16, 8, 8), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 2), 1, "im2col"),  # dilated columns
    ((2, 20, 8, 8), 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "im2col"),  # 48 out
    ((3, 16, 9, 8), 16, (3, 1), (1, 1), (1, 0, 1, 0), (1, 1), 1, "colstack"),  # Inception's 3x1
    ((1, 4, 7, 6), 6, (3, 1), (2, 1), (1, 0, 0, 0), (2, 1), 1, "colstack"),  # kx1 rows strided
    ((2, 5, 6, 7), 50, (2, 1), (1, 1), (0, 1, 1, 2), (1, 1), 1, "colstack"),  # kx1 width pads
    ((2, 6, 5, 7), 4, (3, 1), (1, 1), (1, 0, 1, 0), (1, 1), 2, "im2col"),  # kx1 grouped
    ((2, 5, 4, 3), 128, (2, 1), (1, 1), (1, 0, 0, 0), (1, 1), 1, "im2col"),  # kx1, 128 out
    ((3, 4, 6, 9), 16, (1, 3), (1, 1), (0, 1, 0, 1), (1, 1), 1, "im2col"),  # 1x3: exact columns
]


def _conv_bound(algo, x, w, b, pads, mags, extra=0.0) -> np.ndarray:
    """The float32 rounding bound of `algo`'s conv of (x, w, b) (+ `extra`, |residual|):
    Winograd's from its transformed tiles (`winograd_bound`: stride 1, ungrouped), any other
    algorithm's from the plain conv's terms (`mags`: the conv of the magnitudes, bias included)."""
    if algo.startswith("winograd"):
        bias = 0.0 if b is None else np.abs(b.astype(np.float64))[:, None, None]
        return winograd_bound(x, w, pads, int(algo[-1]), bias + extra)
    return float32_bound(mags + extra, int(np.prod(w.shape[1:])))


def _within_float32_bound(got, x, w, pads, algo) -> bool:
    """`got` vs the float64 plain conv (stride 1, undilated, ungrouped), within the float32
    rounding bound of `algo` (`_conv_bound`)."""
    kw = dict(strides=(1, 1), pads=pads, dilations=(1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(np.float64), w.astype(np.float64), None, **kw)
    mags = conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, **kw)
    return bool((np.abs(got - exact) <= _conv_bound(algo, x, w, None, pads, mags)).all())


def _exact_and_mags(x, w, b, kw) -> tuple[np.ndarray, np.ndarray]:
    """The float64 plain conv of (x, w, b) and the same conv of their magnitudes, whose
    float32_bound is the rounding bound of a float32 result."""

    def f64(a, magnitude=False):
        return None if a is None else (np.abs(a) if magnitude else a).astype(np.float64)

    exact = conv(f64(x), f64(w), f64(b), **kw)
    mags = conv(f64(x, True), f64(w, True), f64(b, True), **kw)
    return exact, mags


def _ran(sess: runtime.Session) -> list[str]:
    """The algorithm each conv step of the session's inference plan ran last."""
    plan = sess._fast(training=False, keep_all=False)
    return [st.ran for st in plan.steps if st.op == "Conv"]


@pytest.mark.parametrize("x_shape, m, k, s, p, d, g, algo", CONVS)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_algorithms_match_float64_reference_and_onnxruntime(
    x_shape, m, k, s, p, d, g, algo, bias, monkeypatch
):
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "MIN_WINOGRAD_COLUMNS", 1)  # Winograd on these small shapes

    monkeypatch.setattr(fast_conv, "NARROW_MIN_WINOGRAD_COLUMNS", 1)
    rng = np.random.default_rng(len(x_shape) * 100 + m)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((m, c // g, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    attrs = {"strides": list(s), "pads": list(p), "dilations": list(d), "group": g}
    graph = _conv_graph((None, *x_shape[1:]), w, b, attrs)
    sess = runtime.Session(graph)
    assert algo in sess.describe()
    got = sess.run({"x": x})[graph.outputs[0]]
    assert _ran(sess) == [algo]
    kw = dict(strides=s, pads=p, dilations=d, group=g, kernel_shape=None)
    exact, mags = _exact_and_mags(x, w, b, kw)
    ours = _conv_bound(algo, x, w, b, p, mags)
    err = np.abs(got.astype(np.float64) - exact)
    assert got.dtype == np.float32 and got.shape == exact.shape
    assert (err <= ours).all(), f"max error {err.max():.2e}"
    # the plain kernel and onnxruntime round too: their own bound from the plain terms
    both = ours + float32_bound(mags, (c // g) * int(np.prod(k)))
    plain = runtime.Session(graph, plan="reference").run({"x": x})[graph.outputs[0]]
    assert (np.abs(got - plain) <= both).all()
    theirs = ort_run(export_checked(graph), {"x": x})[graph.outputs[0]]
    assert (np.abs(got - theirs) <= both).all()


SLABBED = [c for c in CONVS if c[-1] == "im2col" and len(c[0]) > 3]


def _split_and_record(monkeypatch) -> list[tuple[int, str]]:
    """Two threads, every split forced (batch slices, and one image's GEMM rows); returns the
    list that each `Parallel` call appends (items split, the slice function's name) to."""
    from graphnet.runtime.fast import compile as fast_compile
    from graphnet.runtime.fast import threads
    from graphnet.runtime.fast.steps import linear as fast_linear

    monkeypatch.setattr(fast_compile, "WORKERS", 2)
    monkeypatch.setattr(fast_linear, "ROW_SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    calls: list[tuple[int, str]] = []
    call = threads.Parallel.__call__

    def recording(self, n, fn, flops=0):
        calls.append((n, fn.__name__))
        return call(self, n, fn, flops)

    monkeypatch.setattr(threads.Parallel, "__call__", recording)
    return calls


@pytest.mark.parametrize("x_shape, m, k, s, p, d, g, algo", SLABBED)
@pytest.mark.parametrize("column", [False, True])
def test_im2col_slabs_of_output_rows_cover_the_image(
    x_shape, m, k, s, p, d, g, algo, column, monkeypatch
):
    """An image whose im2col workspace passes the budget runs in slabs of output rows (depth
    planes in 3-D): with a budget of a few bytes every slab is one row, wide or exact columns,
    strided, dilated, grouped, with the bias in the GEMM or added in the copy out, and a fused
    ReLU; the result is the float64 conv's within the float32 bound, and every image went
    through the slabs."""
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "BIAS_COLUMN_MAX_DEPTH", 1 << 30 if column else 0)
    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", 16)
    monkeypatch.setattr(fast_conv, "SLAB_MIN_COLUMNS", 1)
    slabbed = []
    slabs = fast_conv._im2col_slabs
    monkeypatch.setattr(fast_conv, "_im2col_slabs", lambda *a: slabbed.append(a[7]) or slabs(*a))
    rng = np.random.default_rng(16)
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((m, c // g, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs = {"strides": list(s), "pads": list(p), "dilations": list(d), "group": g}
    g_ = _conv_graph((None, *x_shape[1:]), w, b, attrs, relu=True)
    (y,) = g_.outputs
    got = runtime.Session(g_).run({"x": x})[y]
    assert sorted(slabbed) == list(range(x_shape[0]))  # each image, in slabs
    kw = dict(strides=s, pads=p, dilations=d, group=g, kernel_shape=None)
    exact, mags = _exact_and_mags(x, w, b, kw)
    exact = np.maximum(exact, 0)  # the fused ReLU
    terms = (c // g) * int(np.prod(k))
    assert (np.abs(got - exact) <= float32_bound(mags, terms)).all()


@pytest.mark.parametrize("x_shape, m, k, s, p, d, g, algo", SLABBED)
def test_one_image_shares_its_slabs_out_over_the_threads(
    x_shape, m, k, s, p, d, g, algo, monkeypatch
):
    """One image whose im2col workspace passes the budget, with its GEMMs split over two
    threads: the threads take runs of its one-row slabs (each in its own scratch); every slab
    is computed once (wide or exact columns, strided, dilated, grouped, bias in the GEMM or
    the epilogue, fused ReLU): the float64 conv's values within the float32 bound."""
    from graphnet.runtime.fast import conv as fast_conv

    shared = _split_and_record(monkeypatch)
    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", 16)
    monkeypatch.setattr(fast_conv, "SHARED_SLAB_MIN_COLUMNS", 1)
    rng = np.random.default_rng(19)
    c = x_shape[1]
    x = rng.standard_normal((1, *x_shape[1:])).astype(np.float32)
    kw = dict(strides=s, pads=p, dilations=d, group=g, kernel_shape=None)
    w = rng.standard_normal((m, c // g, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    for column in (1 << 30, 0):
        monkeypatch.setattr(fast_conv, "BIAS_COLUMN_MAX_DEPTH", column)
        shared.clear()
        attrs = {"strides": list(s), "pads": list(p), "dilations": list(d), "group": g}
        graph = _conv_graph((None, *x_shape[1:]), w, b, attrs, relu=True)
        (y,) = graph.outputs
        got = runtime.Session(graph).run({"x": x})[y]
        rows = conv(x, w, None, **kw).shape[2]
        assert shared == [(rows, "part")]  # one row per slab, shared out once
        exact, mags = _exact_and_mags(x, w, b, kw)
        exact = np.maximum(exact, 0)  # the fused ReLU
        terms = (c // g) * int(np.prod(k))
        assert (np.abs(got - exact) <= float32_bound(mags, terms)).all()


IM2COL = [c for c in CONVS if c[-1] == "im2col"]


@pytest.mark.parametrize("x_shape, m, k, s, p, d, g, algo", IM2COL)
@pytest.mark.parametrize("column", [False, True])
def test_im2col_bias_in_the_epilogue_or_the_gemm(
    x_shape, m, k, s, p, d, g, algo, column, monkeypatch
):
    """im2col adds a parameter bias either as the prepared weight's extra column (GEMM depth
    under BIAS_COLUMN_MAX_DEPTH) or, deeper, in the epilogue with the weight a view of the
    parameter: both ways (the limit forced) on every im2col shape of the table (1-3-D,
    strided, dilated, grouped, depthwise, wide and exact columns), with a fused ReLU, at batch
    1 (exact columns in 2-D) and the table's batch, equal the reference plan and onnxruntime
    within the float32 bound."""
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "BIAS_COLUMN_MAX_DEPTH", 1 << 30 if column else 0)
    rng = np.random.default_rng(17 + m)
    c = x_shape[1]
    w = rng.standard_normal((m, c // g, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs = {"strides": list(s), "pads": list(p), "dilations": list(d), "group": g}
    graph = _conv_graph((None, *x_shape[1:]), w, b, attrs, relu=True)
    (y,) = graph.outputs
    sess = runtime.Session(graph)
    step = next(st for st in sess._fast(training=False, keep_all=False).steps if st.op == "Conv")
    kw = dict(strides=s, pads=p, dilations=d, group=g, kernel_shape=None)
    terms = (c // g) * int(np.prod(k))
    for batch in sorted({1, x_shape[0]}):
        x = rng.standard_normal((batch, *x_shape[1:])).astype(np.float32)
        got = sess.run({"x": x})[y]
        assert _ran(sess) == ["im2col"]
        wp = step._prepared["im2col"][3]
        assert wp.shape[-1] == terms + column  # the bias column, or none
        assert np.shares_memory(wp, graph.params["w"]) != column  # no copy without it
        _, mags = _exact_and_mags(x, w, b, kw)
        bound = float32_bound(mags, terms)
        plain = runtime.Session(graph, plan="reference").run({"x": x})[y]
        assert (np.abs(got - plain) <= 2 * bound).all()
        theirs = ort_run(export_checked(graph), {"x": x})[y]
        assert (np.abs(got - theirs) <= 2 * bound).all()


def test_deep_im2col_weight_is_the_parameter_itself():
    """A GEMM depth from BIAS_COLUMN_MAX_DEPTH (here 128 channels x 9 taps, strided: im2col)
    prepares no copy of the weight: the plan holds a view of the parameter and adds the bias
    in the epilogue; a shallow one (3 channels x 9) carries the bias column (a copy)."""
    from graphnet.runtime.fast import conv as fast_conv

    rng = np.random.default_rng(18)
    for c, column in ((128, False), (3, True)):
        assert (c * 9 < fast_conv.BIAS_COLUMN_MAX_DEPTH) == column
        w = rng.standard_normal((20, c, 3, 3)).astype(np.float32)
        b = rng.standard_normal(20).astype(np.float32)
        attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
        graph = _conv_graph((None, c, 9, 8), w, b, attrs)
        sess = runtime.Session(graph)
        x = rng.standard_normal((3, c, 9, 8)).astype(np.float32)
        got = sess.run({"x": x})[graph.outputs[0]]
        assert _ran(sess) == ["im2col"]
        step = next(
            st for st in sess._fast(training=False, keep_all=False).steps if st.op == "Conv"
        )
        wp = step._prepared["im2col"][3]
        assert np.shares_memory(wp, graph.params["w"]) != column
        want = runtime.Session(graph, plan="reference").run({"x": x})[graph.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=MODEL_RTOL, atol=MODEL_ATOL)


@pytest.mark.parametrize("algo", ["winograd-f4", "winograd-f2", "im2col", "pointwise", "colstack"])
def test_batch_chunks_and_thread_slices_cover_every_image(algo, monkeypatch):
    """Workspaces of a few bytes: every image is its own chunk, and chunk edges (and the two
    threads' slices) fall everywhere; the result must not change."""
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", 16)
    monkeypatch.setattr(fast_conv, "WINOGRAD_WORKSPACE_BYTES", 16)
    monkeypatch.setattr(fast_conv, "MIN_WINOGRAD_COLUMNS", 1)
    monkeypatch.setattr(fast_conv, "NARROW_MIN_WINOGRAD_COLUMNS", 1)
    rng = np.random.default_rng(8)
    hw = 3 if algo == "winograd-f2" else 6
    k = 1 if algo == "pointwise" else 3
    c = {"im2col": 3, "colstack": 16}.get(algo, 48)
    m = 20 if algo == "colstack" else 48
    x = rng.standard_normal((7, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    pads = [0, 0, 0, 0] if k == 1 or algo == "winograd-f2" else [1, 1, 1, 1]
    attrs = {"strides": [1, 1], "pads": pads, "dilations": [1, 1], "group": 1}
    graph = _conv_graph((None, c, hw, hw), w, None, attrs)
    sess = runtime.Session(graph)
    assert algo in sess.describe()
    got = sess.run({"x": x})[graph.outputs[0]]
    assert _ran(sess) == [algo]
    assert _within_float32_bound(got, x, w, pads, algo)


@pytest.mark.parametrize(
    "c, m, k, algo",
    [
        (3, 5, 3, "im2col"),
        (16, 20, 3, "colstack"),
        (24, 24, 3, "winograd-f4"),
        (6, 4, 1, "pointwise"),
    ],
)
@pytest.mark.parametrize("relu", [False, True])
def test_computed_bias_is_added_in_the_epilogue(c, m, k, algo, relu):
    """A bias computed by the graph (not a parameter) is not folded into the prepared weight:
    each algorithm adds it to its output, before a fused ReLU."""
    rng = np.random.default_rng(13)
    g = Graph("computed_bias")
    g.add_input("x", (None, c, 9, 10))
    g.add_param("w", rng.standard_normal((m, c, k, k)).astype(np.float32))
    g.add_param("b0", rng.standard_normal(m).astype(np.float32))
    b = g.add_node("Add", ["b0", "b0"], {}, name="twice").outputs[0]
    pad = k // 2
    attrs = {"strides": [1, 1], "pads": [pad] * 4, "dilations": [1, 1], "group": 1}
    y = g.add_node("Conv", ["x", "w", b], attrs, name="conv").outputs[0]
    if relu:
        y = g.add_node("Relu", [y], {}, name="relu").outputs[0]
    g.mark_output(y)
    x = rng.standard_normal((4, c, 9, 10)).astype(np.float32)
    sess = runtime.Session(g)
    got = sess.run({"x": x})[y]
    assert _ran(sess) == [algo]
    # Against the float64 conv with the doubled bias (exact in float32), within the rounding
    # bound of its terms (a plain tolerance failed on an output that cancels to ~0.1 out of
    # terms of ~15: Winograd F(4x4)'s rounding is relative to the terms, not to the result).
    kw = dict(strides=(1, 1), pads=(pad,) * 4, dilations=(1, 1), group=1, kernel_shape=None)
    bias = 2 * g.params["b0"]
    exact, mags = _exact_and_mags(x, g.params["w"], bias, kw)
    if relu:
        exact = np.maximum(exact, 0)
    assert (
        np.abs(got - exact) <= _conv_bound(algo, x, g.params["w"], bias, (pad,) * 4, mags)
    ).all()


@pytest.mark.parametrize("algo", ["winograd-f4", "winograd-f2", "im2col", "pointwise", "colstack"])
def test_one_image_splits_each_gemm_over_the_threads(algo, monkeypatch):
    """With fewer images than threads, each GEMM is split by its output rows (channels, kernel
    columns x channels, or Winograd's tile positions) over two threads: every row must be
    computed once, whatever the split."""
    from graphnet.runtime.fast import conv as fast_conv

    calls = _split_and_record(monkeypatch)
    monkeypatch.setattr(fast_conv, "MIN_WINOGRAD_COLUMNS", 1)
    monkeypatch.setattr(fast_conv, "NARROW_MIN_WINOGRAD_COLUMNS", 1)
    rng = np.random.default_rng(14)
    hw = 3 if algo == "winograd-f2" else 7
    k = 1 if algo == "pointwise" else 3
    c = {"im2col": 3, "colstack": 16}.get(algo, 24)
    m = 25
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    pads = [0, 0, 0, 0] if k == 1 or algo == "winograd-f2" else [1, 1, 1, 1]
    attrs = {"strides": [1, 1], "pads": pads, "dilations": [1, 1], "group": 1}
    graph = _conv_graph((None, c, hw, hw), w, None, attrs)
    sess = runtime.Session(graph)
    got = sess.run({"x": x})[graph.outputs[0]]
    assert _ran(sess) == [algo]
    assert calls and all(n > 1 for n, _ in calls)  # the GEMM's rows, split
    assert _within_float32_bound(got, x, w, pads, algo)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [7, 1 << 16])
def test_relu_matches_numpy_maximum_across_blocks(dtype, block, monkeypatch):
    """The blocked ReLU (np.maximum against a block of zeros) gives np.maximum(y, 0)'s values
    bit for bit, NaN, infinities and signed zeros included, on sizes that end mid-block, on
    one block or less (the zeros viewed in the array's shape), on non-contiguous views (the
    plain form) and on empty arrays."""
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "RELU_BLOCK", block)
    rng = np.random.default_rng(15)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45], dtype)
    for size in (0, 5, block, 3 * block + 2):
        y = rng.standard_normal(size).astype(dtype)
        y[: min(size, special.size)] = special[: min(size, special.size)]
        want, source = np.maximum(y, 0), y.copy()
        got = y.reshape(-1, 1)  # any contiguous shape
        fast_conv.relu_(got)
        np.testing.assert_array_equal(got.reshape(-1), want)
        assert np.array_equal(np.signbit(got.reshape(-1)), np.signbit(want))
        into, kept = np.full(size, 7, dtype), source.copy()  # out of place: source unchanged
        fast_conv.relu_(into, source)
        np.testing.assert_array_equal(into, want)
        np.testing.assert_array_equal(source, kept)
    z = rng.standard_normal((6, 9)).astype(dtype)
    want, untouched = np.maximum(z, 0), z[:, 1::2].copy()
    fast_conv.relu_(z[:, ::2])  # non-contiguous: the plain np.maximum, in place on the view
    np.testing.assert_array_equal(z[:, ::2], want[:, ::2])
    np.testing.assert_array_equal(z[:, 1::2], untouched)


@pytest.mark.parametrize("ufunc", [np.maximum, np.minimum])
def test_relu_of_one_block_against_zeros_viewed_in_each_shape(ufunc):
    """Arrays of one block or less take the zeros viewed in their shape (kept per shape and
    dtype): several shapes of one size, two dtypes, in place and out of place, max and min
    (ELU's and PReLU's negative part) equal the ufunc against the scalar 0, and the zeros
    stay zeros."""
    from graphnet.runtime.fast import conv as fast_conv

    rng = np.random.default_rng(16)
    for dtype in (np.float32, np.float64):
        for shape in ((2, 3, 4), (4, 3, 2), (24,), (1, 24, 1, 1), (0, 3)):
            x = rng.standard_normal(shape).astype(dtype)
            want = ufunc(x, 0)
            y = np.full(shape, np.nan, dtype)
            fast_conv.relu_(y, x, ufunc)
            np.testing.assert_array_equal(y, want)
            fast_conv.relu_(x, None, ufunc)
            np.testing.assert_array_equal(x, want)
    assert not any(v.any() for v in fast_conv._ZERO_VIEWS.values())


def test_relu_zeros_grow_to_the_largest_array_seen(monkeypatch):
    """The block of zeros is as large as the largest contiguous array seen (up to RELU_BLOCK):
    LeNet's batch-1 ReLUs (6 x 14 x 14) hold 1176 zeros, not a whole block (the bench's traced
    peak counts it); a larger array grows it and the zero views of the smaller block go."""
    from graphnet.runtime.fast import conv as fast_conv

    monkeypatch.setattr(fast_conv, "_ZEROS", {})
    monkeypatch.setattr(fast_conv, "_ZERO_VIEWS", {})
    y = np.random.default_rng(17).standard_normal((1, 6, 14, 14)).astype(np.float32)
    want = np.maximum(y, 0)
    fast_conv.relu_(y)
    np.testing.assert_array_equal(y, want)
    assert fast_conv._ZEROS[np.dtype(np.float32)].size == 6 * 14 * 14
    big = np.random.default_rng(18).standard_normal(fast_conv.RELU_BLOCK + 5).astype(np.float32)
    want = np.maximum(big, 0)
    fast_conv.relu_(big)
    np.testing.assert_array_equal(big, want)
    assert fast_conv._ZEROS[np.dtype(np.float32)].size == fast_conv.RELU_BLOCK
    assert not fast_conv._ZERO_VIEWS


def test_winograd_bias_rides_on_the_ones_column_of_a_transposed():
    """Winograd adds the bias to column 1 of A^T M (before the right multiplication by A): that
    adds it to every output only because A^T's column 1 is all ones, in F(2x2) and F(4x4)."""
    from graphnet.runtime.fast.winograd import SEPARABLE

    for m in (2, 4):
        at = SEPARABLE[m][1]
        assert at.shape == (m, m + 2) and (at[:, 1] == 1).all()


@pytest.mark.parametrize("hw", [8, 7])
def test_winograd_with_too_few_tiles_runs_f2_colstack_or_im2col(hw, monkeypatch):
    """A 3x3 conv planned as F(4x4) Winograd runs F(2x2) on a batch with under
    MIN_WINOGRAD_COLUMNS F(4x4) tiles (batch 1 at 8x8 or 7x7: 4 tiles; 16 is the threshold)
    when F(2x2) has 16 (a cropped last tile at 7x7) and the conv is wide enough (128 output
    channels, or both counts from FEW_TILES_F2_MIN_CHANNELS = 96); else colstack (under 128
    output channels) or im2col (4x4: 4 F(2x2) tiles); F(4x4) from batch 4 (16 tiles); a narrow
    conv (under 48 channels) needs NARROW_MIN_WINOGRAD_COLUMNS (32: batch 8); train mode (which
    keeps U too, see TRAIN_KEEP_WEIGHTS) runs F(2x2) as well, and without kept weights the
    fallback; all agree with the plain kernel."""
    from graphnet.runtime.fast.steps import linear as fast_linear

    rng = np.random.default_rng(9)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    assert runtime.fast.conv.MIN_WINOGRAD_COLUMNS == 16
    assert runtime.fast.conv.NARROW_MIN_WINOGRAD_COLUMNS == 32
    assert fast_linear.FEW_TILES_F2_MIN_CHANNELS == 96
    for c, m, size, runs in (
        (32, 32, hw, ((1, "colstack"), (4, "colstack"), (7, "colstack"), (8, "winograd-f4"))),
        (48, 48, hw, ((1, "colstack"), (3, "colstack"), (4, "winograd-f4"), (16, "winograd-f4"))),
        (64, 64, hw, ((1, "colstack"), (4, "winograd-f4"))),
        (96, 96, hw, ((1, "winograd-f2"), (4, "winograd-f4"))),
        (64, 128, hw, ((1, "winograd-f2"), (4, "winograd-f4"))),
        (128, 128, hw, ((1, "winograd-f2"), (4, "winograd-f4"))),
        (128, 128, 4, ((1, "im2col"), (3, "im2col"), (4, "winograd-f2"))),
    ):
        w = (rng.standard_normal((m, c, 3, 3)) / c).astype(np.float32)
        graph = _conv_graph((None, c, size, size), w, None, attrs)
        sess = runtime.Session(graph)
        for batch, algo in runs:
            x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
            got = sess.run({"x": x})[graph.outputs[0]]
            assert _ran(sess) == [algo]
            assert _within_float32_bound(got, x, w, [1, 1, 1, 1], algo)
    w = (rng.standard_normal((128, 128, 3, 3)) / 128).astype(np.float32)
    graph = _conv_graph((None, 128, hw, hw), w, None, attrs)
    sess = runtime.Session(graph)
    x = rng.standard_normal((1, 128, hw, hw)).astype(np.float32)
    got = sess.run({"x": x}, mode="train")[graph.outputs[0]]
    assert _ran_train(sess) == ["winograd-f2"]
    assert _within_float32_bound(got, x, w, [1, 1, 1, 1], "winograd-f2")
    monkeypatch.setattr(fast_linear, "TRAIN_KEEP_WEIGHTS", False)
    sess = runtime.Session(graph)
    got = sess.run({"x": x}, mode="train")[graph.outputs[0]]
    assert _ran_train(sess) == ["im2col"]
    assert _within_float32_bound(got, x, w, [1, 1, 1, 1], "im2col")


def _ran_train(sess: runtime.Session) -> list[str]:
    plan = sess._fast(training=True, keep_all=False)
    return [st.ran for st in plan.steps if st.op == "Conv"]


@pytest.mark.parametrize("x_shape", [(8, 48, 16, 16), (1, 128, 8, 8), (2, 32, 4, 8, 8)])
def test_float64_3x3_convs_keep_float64_rounding(x_shape):
    """Winograd's transforms and transformed weights are float32: a float64 graph's 3x3(x3)
    convs (planned Winograd in float32: F(4x4) at 16x16, F(2x2) for batch 1 at 8x8, wino3d for
    3x3x3) run colstack or im2col, within float64's rounding bound of the plain float64 conv
    (Winograd's float32 tiles were off by 6e-7 of the largest output: ~1e6 times the bound)."""
    rng = np.random.default_rng(7)
    c, k = x_shape[1], len(x_shape) - 2
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((c, c) + (3,) * k)
    g = Graph("conv64")
    g.add_input("x", (None, *x_shape[1:]), dtype="float64")
    g.add_param("w", w)
    y = g.add_node("Conv", ["x", "w"], {"pads": [1] * 2 * k}, name="conv").outputs[0]
    g.mark_output(y)
    sess = runtime.Session(g)
    got = sess.run({"x": x})[y]
    assert got.dtype == np.float64
    assert not any(a.startswith("wino") for a in _ran(sess))
    kw = dict(strides=(1,) * k, pads=(1,) * 2 * k, dilations=(1,) * k, group=1, kernel_shape=None)
    exact = conv(x, w, None, **kw)
    mags = conv(np.abs(x), np.abs(w), None, **kw)
    n = c * 3**k + 1  # the products' sum and the final store
    u64 = 2.0**-53
    assert (np.abs(got - exact) <= n * u64 / (1 - n * u64) * mags).all()


def test_wide_rows_ignore_what_the_scratch_held():
    """im2col's wide rows read a few elements past the padded input (columns that are dropped):
    huge values left in the shared scratch by an earlier step must not reach the GEMM (an
    overflow warning, or worse) nor the output."""
    import warnings

    from graphnet.runtime.fast import conv as fast_conv
    from graphnet.runtime.fast.memory import Scratch

    # Poison through the public cycle of an earlier step: its takes, the reset that grows the
    # buffer to their total, the same takes again (now views of that buffer) filled, a reset.
    scratch = Scratch()
    for _ in range(2):
        poisoned = [scratch.take(slot, 1 << 16, np.float32) for slot in range(3)]
        for a in poisoned:
            a[:] = np.float32(3e38)
        scratch.reset()
    taken = []
    take = scratch.take
    scratch.take = lambda *a: taken.append(take(*a)) or taken[-1]  # type: ignore[method-assign]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 4, 5)
    out = np.empty((2, 5, 6, 6), np.float32)
    assert fast_conv.wide_rows(spec, 8, 6, 2)  # the path under test
    wp = fast_conv.prepare_weight("im2col", w, 1, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_conv.conv_chunked("im2col", spec, x, wp, out, fast_conv.Epilogue(), scratch)
    # The conv's workspaces were the poisoned memory (else this test would prove nothing).
    assert any(np.shares_memory(t, p) for t in taken for p in poisoned)
    assert _within_float32_bound(out, x, w, [1, 1, 1, 1], "im2col")


def _residual_net() -> Graph:
    net = nn.Network("res", seed=3)
    x = net.input("x", (None, 32, 9, 7))
    y = nn.ReLU()(nn.Conv(32, 3, padding=1)(x))
    y = nn.Conv(32, 3, padding=1)(y)
    z = nn.ReLU()(nn.add(x, y))
    z = nn.LeakyReLU(0.2)(nn.Conv(12, 1)(z))
    z = nn.MaxPool(3, stride=2, padding=1)(z)
    z = nn.ReLU()(nn.Linear(6)(nn.Flatten()(z)))
    net.output(nn.add(z, z), name="out")
    return net.graph


def test_fused_epilogues_are_visible_and_exact():
    g = _residual_net()
    sess = runtime.Session(g)
    text = sess.describe()
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    fused = {name: row.split()[3] for name, row in rows.items() if row.split()[3] != "+"}
    conv_rows = [r for r in rows.values() if r.split()[1] == "Conv"]
    assert any("add" in r and "relu" in r for r in conv_rows), text  # residual Add + ReLU
    assert any("leakyrelu" in r for r in conv_rows), text
    assert any(r.split()[1] == "Gemm" and "relu" in r for r in rows.values()), text
    assert fused
    x = np.random.default_rng(0).standard_normal((5, 32, 9, 7)).astype(np.float32)
    want = runtime.Session(g, plan="reference").run({"x": x})["out"]
    np.testing.assert_allclose(sess.run({"x": x})["out"], want, rtol=MODEL_RTOL, atol=MODEL_ATOL)


def test_buffers_reused_feeds_untouched_outputs_survive_the_next_run():
    g = _residual_net()
    sess = runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((3, 32, 9, 7)).astype(np.float32)
    x2 = rng.standard_normal((3, 32, 9, 7)).astype(np.float32)
    x1_copy = x1.copy()
    out1 = sess.run({"x": x1})["out"]
    kept = out1.copy()
    plan = sess._fast(training=False, keep_all=False)
    allocated = plan.pool.allocated
    out2 = sess.run({"x": x2})["out"]
    np.testing.assert_array_equal(x1, x1_copy)  # in-place ops never write a feed
    np.testing.assert_array_equal(out1, kept)  # the next run does not reuse an output
    np.testing.assert_allclose(out2, ref.run({"x": x2})["out"], rtol=MODEL_RTOL, atol=MODEL_ATOL)
    assert plan.pool.allocated == allocated  # the second run took every buffer from the pool
    # A batch of another size works with the same plan.
    x3 = rng.standard_normal((1, 32, 9, 7)).astype(np.float32)
    np.testing.assert_allclose(
        sess.run({"x": x3})["out"], ref.run({"x": x3})["out"], rtol=MODEL_RTOL, atol=MODEL_ATOL
    )


def test_threads_sharing_a_session_get_their_own_results():
    """Two threads running one Session: each run sees only its own input (the plan's pool,
    arena and scratch serve one run at a time; without the lock some runs came back with values
    written by the other thread's run)."""
    import threading

    g = _residual_net()
    sess = runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((3, 32, 9, 7)).astype(np.float32) for _ in range(2)]
    expected = [ref.run({"x": x})["out"] for x in xs]
    wrong = [0, 0]

    def worker(i: int) -> None:
        for _ in range(60):
            out = sess.run({"x": xs[i]})["out"]
            if not np.allclose(out, expected[i], rtol=MODEL_RTOL, atol=MODEL_ATOL):
                wrong[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == [0, 0]


def test_keep_all_returns_every_intermediate_like_the_reference_plan():
    g = _residual_net()
    x = np.random.default_rng(2).standard_normal((2, 32, 9, 7)).astype(np.float32)
    fast = runtime.Session(g).run({"x": x}, keep_all=True)
    ref = runtime.Session(g, plan="reference").run({"x": x}, keep_all=True)
    assert set(fast) == set(ref)
    for name in ref:
        np.testing.assert_allclose(
            fast[name], ref[name], rtol=MODEL_RTOL, atol=MODEL_ATOL, err_msg=name
        )


def test_replaced_conv_bias_is_seen_by_the_next_run():
    """im2col multiplies the bias as one more weight column (prepared once): a replaced bias
    parameter must be re-prepared."""
    rng = np.random.default_rng(10)
    w = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    attrs = {"strides": [1, 1], "pads": [2, 2, 2, 2], "dilations": [1, 1], "group": 1}
    g = _conv_graph((None, 3, 9, 8), w, np.ones(6, np.float32), attrs)
    sess = runtime.Session(g)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    before = sess.run({"x": x})[g.outputs[0]]
    g.set_param("b", np.full(6, 3.0, np.float32))
    after = sess.run({"x": x})[g.outputs[0]]
    np.testing.assert_allclose(after - before, 2.0, rtol=0, atol=1e-5)


def test_replaced_parameter_is_seen_by_the_next_run():
    g = _residual_net()
    sess = runtime.Session(g)
    x = np.random.default_rng(3).standard_normal((2, 32, 9, 7)).astype(np.float32)
    before = sess.run({"x": x})["out"]
    w = next(n.inputs[1] for n in g.nodes if n.op == "Conv")
    g.set_param(w, g.params[w] * 2)
    after = sess.run({"x": x})["out"]
    assert not np.allclose(before, after)
    want = runtime.Session(g, plan="reference").run({"x": x})["out"]
    np.testing.assert_allclose(after, want, rtol=MODEL_RTOL, atol=MODEL_ATOL)


@pytest.mark.parametrize(("batch", "train_batch"), [(3, 8), (3, 1), (9, 8)])
def test_train_mode_same_masks_statistics_and_outputs_as_reference(batch, train_batch, monkeypatch):
    """Under / over TRAIN_WINOGRAD_BATCH (the fallback is kept: 8 was its former value)."""
    from graphnet.runtime.fast.steps import linear

    monkeypatch.setattr(linear, "TRAIN_WINOGRAD_BATCH", train_batch)
    winograd = batch >= train_batch
    seq = nn.Sequential(
        [
            nn.Conv(48, 3, padding=1),
            nn.BatchNorm(),
            nn.ReLU(),
            nn.Conv(48, 3, padding=1),  # 48 -> 48 channels, 3x3: Winograd
            nn.BatchNorm(),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(drop=0.4),
            nn.Linear(5),
        ]
    )
    g_fast = seq.build((None, 3, 12, 12), seed=0)  # 9 tiles per image
    g_ref = g_fast.copy()
    assert "winograd" in runtime.Session(g_fast).describe(mode="train")
    x = np.random.default_rng(4).standard_normal((batch, 3, 12, 12)).astype(np.float32)
    fast, ref = runtime.Session(g_fast), runtime.Session(g_ref, plan="reference")
    # Winograd F(4x4)'s rounding (up to ~40 u x sum |x||w|, 432 terms here, see the conv tests)
    # is ~1e-5 absolute on the BN-normalized unit-scale values: atol 1e-4.
    atol = 1e-4 if winograd else MODEL_ATOL
    for step in range(2):
        a = fast.run({"input": x}, mode="train", seed=step, keep_all=True)
        b = ref.run({"input": x}, mode="train", seed=step, keep_all=True)
        for name in b:
            if b[name].dtype == bool:  # dropout masks: the same draws
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
            else:
                np.testing.assert_allclose(
                    a[name], b[name], rtol=MODEL_RTOL, atol=atol, err_msg=name
                )
        y_fast = fast.run({"input": x}, mode="train", seed=7)
        y_ref = ref.run({"input": x}, mode="train", seed=7)
        for name in y_ref:
            np.testing.assert_allclose(y_fast[name], y_ref[name], rtol=MODEL_RTOL, atol=atol)
        plan = fast._fast(training=True, keep_all=False)
        ran = [s.ran for s in plan.steps if s.op == "Conv"]
        assert ran == ["im2col", "winograd-f4" if winograd else "colstack"]
    for name, arr in g_ref.params.items():  # running statistics updated alike
        np.testing.assert_allclose(g_fast.params[name], arr, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", suite.suite_names())
def test_suite_models_agree_with_reference_plan_and_onnxruntime(name):
    g = suite.build(name)
    opt, _ = optimize(g)
    for graph, batch in ((opt, 3), (g, 1)):
        feeds = random_inputs(graph, batch=batch, seed=5)
        fast = runtime.Session(graph).run(feeds)
        ref = runtime.Session(graph, plan="reference").run(feeds)
        theirs = ort_run(export_checked(graph), feeds)
        for out in graph.outputs:
            np.testing.assert_allclose(fast[out], ref[out], rtol=MODEL_RTOL, atol=MODEL_ATOL)
            np.testing.assert_allclose(fast[out], theirs[out], rtol=MODEL_RTOL, atol=MODEL_ATOL)


def test_unknown_plan_is_a_clear_error():
    from graphnet.errors import InputError

    with pytest.raises(InputError, match="plan must be one of"):
        runtime.Session(_residual_net(), plan="turbo")


@pytest.mark.parametrize("plan", ["fast", "reference"])
def test_conv_of_unknown_rank_is_resolved_from_the_arrays(plan):
    """An imported Conv whose input rank ONNX could not infer: its strides / pads / dilations
    defaults depend on the rank, so they are resolved when the arrays are known (kernels never
    carry defaults of their own)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import graphnet

    w = np.random.default_rng(6).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = graphnet.load(model)
    assert g.values[g.inputs[0]].shape is None
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 5)).astype(np.float32)
    got = runtime.Session(g, plan=plan).run({"x": x})["y"]
    want = ort_run(onnx.shape_inference.infer_shapes(model), {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
