"""The fast plan's non-conv steps (MaxPool, normalizations, activations, Softmax, global
pooling) against independent formulas and onnxruntime, on odd shapes, inline and with the batch
split over the plan's threads (the work threshold patched to 0, so even these small shapes take
the threaded path); the BLAS thread control; the activation arena (packing, replay, recovery).

MaxPool is exact (a max of float32 values): compared for equality with the naive loop. The
other steps compute in float32 like onnxruntime; their bounds are the single-op tolerances of
tests/helpers.py unless a test says why it needs more.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.passes.manager import optimize
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import conv as fast_conv
from graphnet.runtime.fast import memory as fast_memory
from graphnet.runtime.fast import threads as fast_threads
from graphnet.runtime.fast.steps import base as fast_base
from graphnet.runtime.fast.steps import elementwise as fast_elementwise
from graphnet.runtime.fast.steps import linear as fast_linear
from graphnet.runtime.fast.steps import pool as fast_pool
from tests.helpers import assert_close, export_checked, ort_run, single_node
from tests.oracles import naive_pool


@pytest.fixture(params=["inline", "threads"])
def split(request, monkeypatch):
    """Run each test twice: as the plan decides, and with every batch split over threads."""
    if request.param == "threads":
        monkeypatch.setattr(fast_threads, "SPLIT_MIN_FLOPS", 0)
        for module in (fast_base, fast_elementwise, fast_linear, fast_pool):
            monkeypatch.setattr(module, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(fast_pool, "TILED_SPLIT_MIN_ELEMENTS", 0)
    monkeypatch.setattr(fast_pool, "TILED_MIN_ELEMENTS", 0)  # the small shapes here tile too
    monkeypatch.setattr(fast_pool, "TILED_SLABS_MIN_ELEMENTS", 0)
    return request.param


def _ran_steps(graph, feeds) -> tuple[dict, runtime.Session]:
    sess = runtime.Session(graph)
    return sess.run(feeds), sess


# (spatial sizes, kernel, strides, pads, dilations, ceil_mode)
POOLS = [
    ((16, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),  # "same": the flat pass
    ((7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),
    ((7, 9), (3, 2), (1, 1), (0, 1, 2, 0), (1, 1), 0),  # asymmetric "same" pads
    ((9, 8), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 0),  # dilated "same"
    ((9, 8), (5, 1), (1, 1), (2, 0, 2, 0), (1, 1), 0),  # kernel 5 along one axis only
    ((28, 28), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0),  # LeNet's
    ((7, 7), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # ceil_mode overhang
    ((11, 10), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0),
    ((11, 10), (3, 3), (2, 3), (1, 0, 0, 2), (1, 2), 1),
    ((10,), (3,), (1,), (1, 1), (1,), 0),  # 1-D "same"
    ((10,), (4,), (3,), (2, 1), (2,), 0),
    ((4, 6, 5), (3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 0),  # 3-D "same"
    ((4, 6, 5), (1, 2, 2), (1, 2, 2), (0,) * 6, (1, 1, 1), 0),  # video's: no stage for T
    ((5, 4), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 0),  # the identity: one copy
    ((2, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),  # pairwise "same" at its smallest
    ((1, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0),  # an axis of 1: the taps instead
    ((2,), (3,), (1,), (1, 1), (1,), 0),
    ((3, 2, 4), (3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 0),
    ((6, 9), (2, 3), (2, 3), (0, 0, 0, 0), (1, 1), 0),  # tiling: flat passes + corner copy
    ((6, 4), (3, 1), (3, 1), (0, 0, 0, 0), (1, 1), 1),
    ((2, 8), (1, 4), (1, 4), (0, 0, 0, 0), (1, 1), 0),
    ((3, 4, 6), (1, 2, 3), (1, 2, 3), (0,) * 6, (1, 1, 1), 0),
]


@pytest.mark.parametrize("sizes, kernel, strides, pads, dilations, ceil", POOLS)
def test_max_pool_equals_naive_loop_and_onnxruntime(
    split, sizes, kernel, strides, pads, dilations, ceil
):
    attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "pads": list(pads),
        "dilations": list(dilations),
        "ceil_mode": ceil,
    }
    x = np.random.default_rng(3).standard_normal((3, 5, *sizes)).astype(np.float32)
    g = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs)
    got, sess = _ran_steps(g, {"x": x})
    assert "taps" in sess.describe()
    y = got[g.outputs[0]]
    want = naive_pool(x, kernel, strides, pads, dilations, ceil, "max").astype(np.float32)
    assert y.shape == want.shape
    assert np.array_equal(y, want)
    theirs = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert np.array_equal(y, theirs)


@pytest.mark.parametrize("sizes", [(6, 5), (2, 7), (9,), (3, 4, 2)])
def test_same_max_pool_takes_the_pairwise_passes_with_infinities(split, monkeypatch, sizes):
    """3-wide pad-1 "same" pools run the pairwise flat passes over chunks of (image, channel)
    volumes (1 and 3 of the 3 x 4 inline, 4 and 12 on threads; the -inf rows it writes must
    not differ from the -inf padding even when the input holds infinities); exact against the
    naive loop; the step's geometry records that path (no per-axis ops); int8 takes the taps."""
    k = len(sizes)
    attrs = {"kernel_shape": [3] * k, "strides": [1] * k, "pads": [1] * (2 * k)}
    vol = int(np.prod(sizes))
    for chunk in (1, 3):
        monkeypatch.setattr(fast_pool, "POOL_CHUNK_BYTES", chunk * vol * 16)
        monkeypatch.setattr(fast_pool, "PAIRWISE_INLINE_CHUNK_BYTES", chunk * vol * 4)
        x = np.random.default_rng(chunk).standard_normal((3, 4, *sizes)).astype(np.float32)
        x.reshape(-1)[::5] = -np.inf
        x.reshape(-1)[::7] = np.inf
        g = single_node("MaxPool", {"x": (None, 4, *sizes)}, attrs=attrs)
        got, sess = _ran_steps(g, {"x": x})
        want = naive_pool(x, (3,) * k, (1,) * k, (1,) * (2 * k), (1,) * k, 0, "max")
        assert np.array_equal(got[g.outputs[0]], want.astype(np.float32))
        (step,) = sess._fast(training=False, keep_all=False).steps
        assert step._shapes[tuple(sizes), True][1] is None  # no per-axis ops
    xi = np.random.default_rng(4).integers(-128, 127, (3, 4, *sizes)).astype(np.int8)
    gi = single_node("MaxPool", {"x": (None, 4, *sizes)}, attrs=attrs, dtype="int8")
    got = _ran_steps(gi, {"x": xi})[0][gi.outputs[0]]  # the taps: no -inf rows in int8
    want = naive_pool(xi, (3,) * k, (1,) * k, (1,) * (2 * k), (1,) * k, 0, "max")
    assert got.dtype == np.int8 and np.array_equal(got, want)


@pytest.mark.parametrize(
    "sizes, kernel",
    [((8, 6), (2, 2)), ((3, 4, 6), (1, 2, 3)), ((4, 6, 4), (2, 2, 2)), ((6, 4, 6), (3, 2, 3))],
)
def test_tiling_max_pool_over_chunks_and_integers(split, monkeypatch, sizes, kernel):
    """A pool whose kernel tiles the input (kernel = stride) takes the flat passes over chunks
    of planes: chunks of 1 and 3 planes inline (3 x 5 planes: a short last chunk; 4 and 12 on
    threads), of whole volumes when an earlier axis is pooled too (video's 2x2x2: its slabs
    first, kernel 2 and 3 along T), float32 with infinities and int8 (no -inf there), exact
    against the naive loop."""
    k = len(sizes)
    attrs = {"kernel_shape": list(kernel), "strides": list(kernel), "pads": [0] * (2 * k)}
    plane = sizes[-1] * sizes[-2]
    rng = np.random.default_rng(6)
    monkeypatch.setattr(fast_pool, "PAIRS_MAX_ELEMENTS", -1)  # (see the next test)
    for chunk in (1, 3):
        monkeypatch.setattr(fast_pool, "POOL_CHUNK_BYTES", chunk * plane * 16)
        x = rng.standard_normal((3, 5, *sizes)).astype(np.float32)
        x.reshape(-1)[::5] = -np.inf
        g = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs)
        got, sess = _ran_steps(g, {"x": x})
        want = naive_pool(x, kernel, kernel, (0,) * (2 * k), (1,) * k, 0, "max")
        assert np.array_equal(got[g.outputs[0]], want.astype(np.float32))
        (step,) = sess._fast(training=False, keep_all=False).steps
        assert step._tiled(tuple(sizes)) == kernel
        xi = rng.integers(-128, 127, (3, 5, *sizes)).astype(np.int8)
        gi = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs, dtype="int8")
        got = _ran_steps(gi, {"x": xi})[0][gi.outputs[0]]
        want = naive_pool(xi, kernel, kernel, (0,) * (2 * k), (1,) * k, 0, "max")
        assert got.dtype == np.int8 and np.array_equal(got, want)


@pytest.mark.parametrize(
    "sizes, kernel",
    [((28, 28), (2, 2)), ((6, 9), (3, 3)), ((6, 8), (3, 2)), ((2, 8), (1, 4)), ((6, 5), (2, 1))]
    + [((3, 4, 6), (1, 2, 3)), ((3, 5, 5), (1, 5, 5))],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_small_tiling_max_pool_takes_two_strided_passes(monkeypatch, sizes, kernel, batch):
    """A small tiling pool (every earlier axis the identity) takes `_pairs_part`: the rows of
    each window, then its columns, as strided maxima; float32 with infinities exact against
    the naive loop (int8 too, which the plain kernel runs); a pool larger than
    PAIRS_MAX_ELEMENTS or pooling an earlier axis does not take it."""
    calls = []
    pairs = fast_pool.MaxPoolStep._pairs_part
    monkeypatch.setattr(
        fast_pool.MaxPoolStep,
        "_pairs_part",
        staticmethod(lambda *a: (calls.append(a[0].shape), pairs(*a))[1]),
    )
    k = len(sizes)
    attrs = {"kernel_shape": list(kernel), "strides": list(kernel), "pads": [0] * (2 * k)}
    rng = np.random.default_rng(11)
    x = rng.standard_normal((batch, 5, *sizes)).astype(np.float32)
    x.reshape(-1)[::5] = -np.inf
    x.reshape(-1)[::7] = np.inf
    xi = rng.integers(-128, 127, (batch, 5, *sizes)).astype(np.int8)
    for arr, dtype in ((x, "float32"), (xi, "int8")):
        g = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs, dtype=dtype)
        got = _ran_steps(g, {"x": arr})[0][g.outputs[0]]
        want = naive_pool(arr, kernel, kernel, (0,) * (2 * k), (1,) * k, 0, "max")
        assert got.dtype == arr.dtype and np.array_equal(got, want.astype(arr.dtype))
    assert len(calls) == 1  # (float32 only: the fast plan takes floats)
    monkeypatch.setattr(fast_pool, "PAIRS_MAX_ELEMENTS", x.size - 1)
    g = single_node("MaxPool", {"x": (None, 5, *sizes)}, attrs=attrs)
    got = _ran_steps(g, {"x": x})[0][g.outputs[0]]
    want = naive_pool(x, kernel, kernel, (0,) * (2 * k), (1,) * k, 0, "max")
    assert np.array_equal(got, want.astype(np.float32)) and len(calls) == 1
    g = single_node(
        "MaxPool",
        {"x": (None, 5, 4, 6, 8)},
        attrs=dict(attrs, kernel_shape=[2, 2, 2], strides=[2, 2, 2], pads=[0] * 6),
    )
    _ran_steps(g, {"x": rng.standard_normal((1, 5, 4, 6, 8)).astype(np.float32)})
    assert len(calls) == 1  # video's 2x2x2: not this path


def _norm64(x, groups, scale, bias, eps, axis=None):
    """The normalization formula in float64: (x - mean) / sqrt(var + eps) * scale + bias over
    groups of channels (axis None) or over the axes from `axis` (LayerNorm)."""
    x64 = x.astype(np.float64)
    if axis is None:
        xg = x64.reshape(x.shape[0], groups, -1)
        d = xg - xg.mean(axis=2, keepdims=True)
        z = (d / np.sqrt((d * d).mean(axis=2, keepdims=True) + eps)).reshape(x.shape)
        tail = (1,) * (x.ndim - 2)
        return z * scale.reshape(-1, *tail) + bias.reshape(-1, *tail)
    axes = tuple(range(axis, x.ndim))
    d = x64 - x64.mean(axis=axes, keepdims=True)
    return d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps) * scale + bias


# (op, x shape, groups or LayerNorm axis)
NORMS = [
    ("GroupNormalization", (3, 12, 5, 7), 4),
    ("GroupNormalization", (3, 6, 9), 2),
    ("InstanceNormalization", (3, 5, 6, 7), None),
    ("InstanceNormalization", (2, 4, 3, 4, 5), None),
    ("LayerNormalization", (3, 6, 5, 4), 1),
    ("LayerNormalization", (3, 6, 5, 4), 2),
    ("LayerNormalization", (3, 6, 5, 4), -1),
    ("GroupNormalization", (1, 12, 5, 7), 4),  # batch 1: one image's (C, pixels) planes
    ("InstanceNormalization", (1, 5, 6, 7), None),
    ("LayerNormalization", (1, 6, 5, 4), 1),  # one row: the Python-scalar statistics
]


@pytest.mark.parametrize("op, shape, arg", NORMS)
def test_normalizations_match_float64_formula_and_onnxruntime(split, op, shape, arg):
    """Against float64 on data far from zero (mean 1000, std 1): the float32 mean is off by
    more than the tolerance relative to the std, the corrected two-pass residual must take it
    back. Against onnxruntime on centred data (its float32 GroupNormalization is itself off by
    far off on the offset data)."""
    rng = np.random.default_rng(5)
    x = (1000.0 + rng.standard_normal(shape)).astype(np.float32)
    eps = 1e-5
    c = shape[1]
    if op == "LayerNormalization":
        axis = arg % len(shape)
        pshape = shape[axis:]
        attrs = {"axis": arg, "epsilon": eps}
    else:
        pshape = (c,)
        attrs = {"epsilon": eps}
        if op == "GroupNormalization":
            attrs["num_groups"] = arg
    scale = rng.uniform(0.5, 1.5, pshape).astype(np.float32)
    bias = rng.normal(0.0, 1.0, pshape).astype(np.float32)
    g = single_node(op, {"x": (None, *shape[1:])}, {"scale": scale, "bias": bias}, attrs=attrs)
    got, sess = _ran_steps(g, {"x": x})
    assert "norm" in sess.describe()
    y = got[g.outputs[0]]
    if op == "LayerNormalization":
        want = _norm64(x, None, scale, bias, eps, axis=axis)
    elif op == "GroupNormalization":
        want = _norm64(x, arg, scale, bias, eps)
    else:
        want = _norm64(x, c, scale, bias, eps)
    # Outputs of size ~3: float32 rounding of a normalized value (a few ulp of the data in
    # the difference x - mean) stays under 1e-5 relative to the output scale.
    assert_close(y, want.astype(np.float32), rtol=1e-5, atol=2e-5, what=f"{op} vs float64")
    x0 = x - np.float32(1000.0)
    y0 = sess.run({"x": x0})[g.outputs[0]]
    theirs = ort_run(export_checked(g), {"x": x0})[g.outputs[0]]
    assert_close(y0, theirs, rtol=1e-5, atol=1e-5, what=f"{op} vs onnxruntime")


def _act64(op, x, alpha=None, slope=None):
    x64 = x.astype(np.float64)
    if op == "Elu":
        return np.where(x64 >= 0, x64, alpha * np.expm1(np.minimum(x64, 0)))
    if op == "LeakyRelu":
        return np.where(x64 >= 0, x64, alpha * x64)
    return np.where(x64 >= 0, x64, slope.astype(np.float64) * x64)


# (op, alpha or slope kind)
ACTS = [
    ("Elu", 1.0),
    ("Elu", 0.3),
    ("Elu", 2.5),  # alpha > 1: not a max of the two branches
    ("LeakyRelu", 0.1),
    ("PRelu", "below one"),
    ("PRelu", "above one"),
    ("PRelu", "mixed"),
]


# the second shape passes UnaryStep's ROW_MIN_IMAGES and ROW_MIN_ELEMENTS: PReLU's slope as a row
@pytest.mark.parametrize("shape", [(3, 8, 5, 6), (5, 8, 40, 41)])
@pytest.mark.parametrize("op, arg", ACTS)
def test_activations_match_formula_and_onnxruntime(split, op, arg, shape):
    rng = np.random.default_rng(6)
    x = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -1e-7, 1e-7]  # around zero
    params, attrs, slope = {}, {}, None
    if op == "PRelu":
        lo, hi = {"below one": (-0.5, 1.0), "above one": (1.0, 3.0), "mixed": (0.2, 2.0)}[arg]
        slope = rng.uniform(lo, hi, (8, 1, 1)).astype(np.float32)
        params = {"slope": slope}
    else:
        attrs = {"alpha": arg}
    g = single_node(op, {"x": (None, *shape[1:])}, params, attrs=attrs)
    got, sess = _ran_steps(g, {"x": x})
    assert "ufunc" in sess.describe()
    y = got[g.outputs[0]]
    want = _act64(op, x, alpha=attrs.get("alpha"), slope=slope)
    # Elu computes exp(x) - 1 in float32: an absolute error under alpha * 2**-23 near zero.
    atol = 3e-7 * (arg if op == "Elu" else 1.0)
    assert_close(y, want.astype(np.float32), rtol=1e-6, atol=atol, what=f"{op} vs formula")
    theirs = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert_close(y, theirs, rtol=1e-5, atol=1e-6, what=f"{op} vs onnxruntime")


# (x's declared shape, its shape in the run, the slope's shape): the slope broadcasts the
# output past x along a dim known only at run time (the shape rule accepts a dynamic dim)
PRELU_GROWS = [
    ((None, 3, None, None), (2, 3, 1, 5), (3, 4, 1)),  # H: 1 -> 4
    ((None, 3, 4, 5), (1, 3, 4, 5), (2, 3, 1, 1)),  # the batch: 1 -> 2
    ((None, 3, None, 5), (3, 3, 1, 5), (3, 1, 1, 1)),  # the batch axis itself: kept 3
    ((None, 3, None, None), (2, 3, 4, 5), (3, 4, 1)),  # no growth this run
]


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("declared, shape, slope_shape", PRELU_GROWS)
def test_prelu_slope_broadcasting_the_output_past_x(
    split, declared, shape, slope_shape, norm, mode
):
    """A PRelu whose slope broadcasts the output past x in a run (the plain kernel,
    onnxruntime and onnx.reference broadcast both ways; the fast step raised 'non-broadcastable
    output operand'): the fast plan gives the plain kernels' output, alone and after a
    GroupNormalization (which then keeps the PRelu a step of its own), in both modes."""
    rng = np.random.default_rng(23)
    slope = rng.uniform(-0.5, 2.0, slope_shape).astype(np.float32)  # mixed: max+min branch
    if norm:
        params = {"scale": np.ones(3, np.float32), "bias": np.zeros(3, np.float32)}
        attrs = {"num_groups": 3, "epsilon": 1e-5}
        g = single_node("GroupNormalization", {"x": declared}, params, attrs=attrs)
        (out,) = g.outputs
        g.outputs.remove(out)
    else:
        g = Graph("prelu_grows")
        out = g.add_input("x", declared, "float32").name
    g.add_param("slope", slope)
    y = g.add_node("PRelu", [out, "slope"], {}, name="act").outputs[0]
    g.mark_output(y)
    sess = runtime.Session(g)
    rows = sess._fast(training=mode == "train", keep_all=False).describe()
    assert rows[-1]["op"] == "PRelu" and rows[0]["fused"] == []
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., 0] = 0.0  # an image of zeros per row group: GroupNorm's eps-dominated case
    want = runtime.Session(g, plan="reference").run({"x": x}, mode=mode)[y]
    assert want.shape == np.broadcast_shapes(shape, slope_shape)
    for _ in range(2):  # the recorded run, then the arena's replay
        got = sess.run({"x": x}, mode=mode)[y]
        # the same float32 operations as the plain kernels on outputs ~3: a few ulps
        assert_close(got, want, rtol=1e-6, atol=1e-6, what="PRelu vs plain kernels")
    theirs = ort_run(export_checked(g), {"x": x})[y]
    assert_close(got, theirs, rtol=1e-5, atol=1e-5, what="PRelu vs onnxruntime")


@pytest.mark.parametrize(
    "shape, axis", [((3, 10), -1), ((3, 10), 1), ((4, 5, 6), 1), ((4, 5, 6), 0)]
)
def test_softmax_matches_float64_formula_and_onnxruntime(shape, axis):
    x = (4.0 * np.random.default_rng(7).standard_normal(shape)).astype(np.float32)
    x.flat[0] = 80.0  # exp(80) overflows float32: the shift by the max must come first
    g = single_node("Softmax", {"x": shape}, attrs={"axis": axis})
    got, sess = _ran_steps(g, {"x": x})
    assert "exp(x - max)" in sess.describe()
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=axis, keepdims=True))
    want = e / e.sum(axis=axis, keepdims=True)
    y = got[g.outputs[0]]
    assert_close(y, want.astype(np.float32), what="Softmax vs float64")
    theirs = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert_close(y, theirs, what="Softmax vs onnxruntime")


@pytest.mark.parametrize(
    "shape", [(3, 5, 7), (3, 4, 6, 5), (2, 3, 4, 3, 5), (2, 3, 1, 1), (1, 2, 33, 31)]
)
def test_global_average_pool_matches_float64_mean_and_onnxruntime(shape):
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    g = single_node("GlobalAveragePool", {"x": (None, *shape[1:])})
    got, sess = _ran_steps(g, {"x": x})
    assert "matrix-vector" in sess.describe()
    axes = tuple(range(2, len(shape)))
    want = x.astype(np.float64).mean(axis=axes, keepdims=True)
    y = got[g.outputs[0]]
    assert_close(y, want.astype(np.float32), what="GlobalAveragePool vs float64")
    theirs = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert_close(y, theirs, what="GlobalAveragePool vs onnxruntime")


def test_blas_runs_single_threaded_inside_a_run_and_is_restored_after():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="controls BLAS threads")
    if not fast_threads._blas_libs():
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    libs = [c for c in threadpoolctl.ThreadpoolController().lib_controllers if c.user_api == "blas"]
    seen = []
    g = single_node("Relu", {"x": (2, 3)})
    sess = runtime.Session(g)
    plan = sess._fast(training=False, keep_all=False)
    step = plan.steps[0]
    plan.steps[0] = lambda run: (seen.append([lib.num_threads for lib in libs]), step(run))
    x = np.ones((2, 3), np.float32)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = [lib.num_threads for lib in libs]
        sess.run({"x": x})
        assert [lib.num_threads for lib in libs] == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        sess.run({"x": x})
        assert [lib.num_threads for lib in libs] == [1] * len(libs)
    assert seen == [[1] * len(libs)] * 2


def test_scratch_places_a_steps_slots_apart_and_sizes_to_the_largest_step():
    """Within a step, slots never overlap (also across dtypes); a slot taken again keeps its
    data when it fits and moves when it grows; reset frees every place, and the buffer becomes
    the largest step's total (not the sum of each slot's largest request)."""
    sc = fast_memory.Scratch()

    def step(sizes: dict) -> list:
        arrs = []
        for (slot, dt), n in sizes.items():
            a = sc.take(slot, n, dt)
            a[:] = slot + 1
            arrs.append((slot, a))
        for slot, a in arrs:  # no other slot wrote over it
            assert (a == slot + 1).all()
        return arrs

    first = {(0, np.float32): 100, (1, np.float32): 5000, (2, np.float64): 30}
    step(first)  # past the empty buffer: arrays of their own
    assert sc.held() >= 5130 * 4
    sc.reset()
    total = sc.held()
    assert total >= 100 * 4 + 5000 * 4 + 30 * 8
    second = {(0, np.float32): 4000, (1, np.float32): 200, (3, np.float32): 700}
    (_, a0), _, _ = step(second)
    again = sc.take(0, 3000, np.float32)  # fits its place: the same memory, the data kept
    assert np.shares_memory(again, a0) and (again == 1).all()
    sc.reset()
    assert sc.held() == total  # 19.6 kB fitted in the 20.7 kB of the first step
    assert sc.held() < (4000 + 5000 + 700) * 4 + 30 * 8  # the per-slot maxima: 39 kB
    assert sc.room(np.float32) == sc.held() // 4
    (_, a0), _ = step({(0, np.float32): 10, (1, np.float32): 10})
    grown = sc.take(0, 6000, np.float32)  # larger than its place: moved clear of slot 1
    grown[:] = 9
    assert not np.shares_memory(grown, a0) and (sc.take(1, 10, np.float32) == 2).all()


def test_arena_packing_never_overlaps_live_buffers():
    """Random lifetimes and sizes: two buffers alive at the same time never share a byte, every
    offset is aligned, and the arena is no smaller than the largest live set, nor larger than
    the largest-first packing's."""
    rng = np.random.default_rng(9)
    for _ in range(50):
        trace = []
        for _ in range(int(rng.integers(1, 40))):
            t0 = int(rng.integers(0, 100))
            t1 = None if rng.random() < 0.1 else t0 + int(rng.integers(1, 30))
            trace.append([int(rng.integers(1, 5000)), np.dtype(np.float32), t0, t1])
        layout, size = fast_memory._pack(trace, 200)
        spans = []
        for (off, nbytes, _), (_, _, t0, t1) in zip(layout, trace, strict=True):
            assert off % fast_memory.ALIGN == 0 and off + nbytes <= size
            spans.append((off, off + nbytes, t0, 200 if t1 is None else t1))
        for i, a in enumerate(spans):
            for b in spans[i + 1 :]:
                if a[2] < b[3] and b[2] < a[3]:  # alive together
                    assert a[1] <= b[0] or b[1] <= a[0]
        live = max(sum(e - s for s, e, t0, t1 in spans if t0 <= t < t1) for t in range(200))
        assert size >= live
        by_size = sorted(range(len(trace)), key=lambda k: -trace[k][0])
        assert size <= fast_memory._pack_in(trace, 200, by_size)[1]  # the better of two orders


def test_arena_replays_runs_and_recovers_from_a_diverging_run():
    """The first run records, the next ones replay the arena (no new memory, the same views of
    it), results equal the reference plan's and survive later runs; a batch of another size
    records its own layout (a larger arena: the first layout's views are made anew); a run
    whose takes differ from the record (a corrupted layout here) is still right and makes the
    next run record again."""
    g = optimize(suite.build("inception_bn"), "inference")[0]
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    plan = sess._fast(training=False, keep_all=False)
    rng = np.random.default_rng(10)
    name = g.inputs[0]

    def check(batch):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        got = sess.run({name: x})
        for k, v in ref.run({name: x}).items():
            np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5)
        return got

    first = check(2)
    kept = {k: v.copy() for k, v in first.items()}
    held = plan.pool.allocated
    assert held == plan.pool.held() > 0  # the arena, nothing in the free lists
    check(2)
    assert plan.pool.allocated == held  # replayed: nothing allocated
    for k, v in first.items():
        np.testing.assert_array_equal(v, kept[k])  # outputs are never arena memory
    layout = next(iter(plan.pool._layouts.values()))
    views = [e[4] for e in layout]
    check(2)
    assert all(e[4] is v for e, v in zip(layout, views, strict=True))  # the same views again
    check(3)
    # the arena grew for batch 3: batch 2's views of the former one are dropped (not kept alive)
    assert all(e[5] is None or e[5].base is plan.pool._arena for e in layout)
    check(3)
    assert len(plan.pool._layouts) == 2
    check(2)  # batch 2's views are made anew, of the new arena
    assert all(e[5].base is plan.pool._arena for e in layout)
    assert plan.pool.allocated == plan.pool.held()
    key = next(iter(plan.pool._layouts))
    off, nbytes, dtype = plan.pool._layouts[key][0][:3]
    plan.pool._layouts[key][0] = [off, nbytes + 4, dtype, None, None, None]
    check(2)  # diverges at its first take
    assert key not in plan.pool._layouts
    check(2)  # records again
    assert key in plan.pool._layouts
    check(2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_matches_numpy_and_onnxruntime(split, axis):
    rng = np.random.default_rng(11)
    shapes = {"a": [3, 2, 4, 5], "b": [3, 2, 4, 5], "c": [3, 2, 4, 5]}
    widths = {"a": 1, "b": 3, "c": 2}
    for k in shapes:
        shapes[k][axis] = widths[k]
    xs = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    g = single_node("Concat", {k: tuple(v) for k, v in shapes.items()}, attrs={"axis": axis})
    got, sess = _ran_steps(g, xs)
    assert "concat" in sess.describe()
    y = got[g.outputs[0]]
    assert np.array_equal(y, np.concatenate(list(xs.values()), axis=axis))
    assert np.array_equal(y, ort_run(export_checked(g), xs)[g.outputs[0]])


@pytest.mark.parametrize(
    "shape", [(3, 5, 6, 7), (4, 3), (3, 2, 4, 3, 5), (1, 3, 24, 23), (1, 2, 1, 8191)]
)
def test_batchnorm_train_statistics_on_offset_data(split, shape):
    """Train-mode BatchNorm on data far from zero (mean 1000, std 1): outputs and running
    statistics against the float64 formula; inference with those statistics afterwards."""
    rng = np.random.default_rng(12)
    c = shape[1]
    x = (1000.0 + rng.standard_normal(shape)).astype(np.float32)
    params = {
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "B": rng.normal(0.0, 1.0, c).astype(np.float32),
        "mean": rng.normal(0.0, 1.0, c).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, c).astype(np.float32),
    }
    start = {k: v.copy() for k, v in params.items()}
    g = single_node("BatchNormalization", {"x": shape}, params, {"epsilon": 1e-5, "momentum": 0.9})
    sess = runtime.Session(g)
    y = sess.run({"x": x}, mode="train")[g.outputs[0]]
    axes = (0, *range(2, len(shape)))
    tail = (1,) * (len(shape) - 2)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axis=axes), x64.var(axis=axes)
    want = (x64 - mu.reshape(-1, *tail)) / np.sqrt(var.reshape(-1, *tail) + 1e-5)
    want = want * start["scale"].reshape(-1, *tail) + start["B"].reshape(-1, *tail)
    assert_close(y, want.astype(np.float32), rtol=1e-5, atol=2e-5, what="train Y vs float64")
    assert_close(g.params["mean"], 0.9 * start["mean"] + 0.1 * mu, what="running mean")
    assert_close(g.params["var"], 0.9 * start["var"] + 0.1 * var, what="running var")


@pytest.mark.parametrize(
    "shape",
    # (batch 1 with 552- and 8191-element rows: its passes unbuffered at the row length)
    [(1, 5, 6, 7), (3, 4, 5, 3), (1, 3, 1, 1), (2, 3), (1, 4), (1, 3, 2, 3, 4), (1, 3, 24, 23)]
    + [(1, 2, 8191)],
)
@pytest.mark.parametrize("mode", ["train", "inference"])
def test_batchnorm_with_fused_relu_matches_the_plain_kernels(split, shape, mode):
    """BatchNorm -> Relu as one step (the Relu in its epilogue), batch 1 (per-channel columns)
    and more (per-channel rows), against the plain kernels node by node: Y and the running
    statistics, on data far from zero (the offset test above gives the float64 bound); a
    second reader of the BN's output keeps the Relu apart."""
    rng = np.random.default_rng(13)
    c = shape[1]
    x = (500.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    params = {
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "B": rng.normal(0.0, 1.0, c).astype(np.float32),
        "mean": rng.normal(500.0, 1.0, c).astype(np.float32),
        "var": rng.uniform(5.0, 12.0, c).astype(np.float32),
    }
    g = single_node("BatchNormalization", {"x": shape}, params, {"epsilon": 1e-5, "momentum": 0.8})
    (bn_out,) = g.outputs
    relu = g.add_node("Relu", [bn_out], {}, name="relu")
    g.outputs.remove(bn_out)
    g.mark_output(relu.outputs[0])
    ref_graph = g.copy()
    sess, ref = runtime.Session(g), runtime.Session(ref_graph, plan="reference")
    rows = sess._fast(training=mode == "train", keep_all=False).describe()
    assert [r["op"] for r in rows] == ["BatchNormalization"] and rows[0]["fused"] == ["relu"]
    for _ in range(2):  # the second run starts from the updated running statistics
        got = sess.run({"x": x}, mode=mode)[relu.outputs[0]]
        want = ref.run({"x": x}, mode=mode)[relu.outputs[0]]
        assert (got >= 0).all()
        # outputs of size ~1: the float64 bound of the offset test (rtol 1e-5, atol 2e-5); a
        # value the ReLU zeroed on one side only is within atol of zero on the other
        assert_close(got, want, rtol=1e-5, atol=2e-5, what=f"{mode} BN+Relu vs plain kernels")
        for k in ("mean", "var"):
            # float64 arithmetic both, one float32 rounding each: a few ulp of ~500 or ~10
            assert_close(g.params[k], ref_graph.params[k], rtol=1e-6, atol=0, what=k)


def test_batchnorm_read_twice_keeps_its_relu_apart():
    rng = np.random.default_rng(14)
    params = {k: rng.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("scale", "B", "m", "v")}
    g = single_node("BatchNormalization", {"x": (2, 3, 4, 4)}, params)
    (bn_out,) = g.outputs
    relu = g.add_node("Relu", [bn_out], {}, name="relu")
    g.mark_output(relu.outputs[0])
    rows = runtime.Session(g)._fast(training=True, keep_all=False).describe()
    assert [r["op"] for r in rows] == ["BatchNormalization", "Relu"] and rows[0]["fused"] == []
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    got = runtime.Session(g).run({"x": x}, mode="train")
    want = runtime.Session(g, plan="reference").run({"x": x}, mode="train")
    for k in g.outputs:  # standard normal data, outputs ~1: a few float32 ulps (1 ulp 1.2e-7)
        assert_close(got[k], want[k], rtol=1e-5, atol=2e-6, what=k)


def _concat_net():
    """Convs of every algorithm (pointwise, Winograd F(4x4) on x, F(2x2) on the 3x3 input z,
    im2col with and without wide rows, a fused residual and ReLU) -> channel Concats (placed:
    no copy); another Concat of x itself, a conv output also read elsewhere and a conv (not
    placed: it copies)."""
    from graphnet.ir import Graph

    rng = np.random.default_rng(13)
    g = Graph("concat")
    g.add_input("x", (None, 48, 6, 6))
    g.add_input("z", (None, 48, 3, 3))

    def conv(name, src, m, k, pads, act=None, residual=None, group=1):
        w = 0.1 * rng.standard_normal((m, 48 // group, k, k))
        g.add_param(f"{name}.w", w.astype(np.float32))
        g.add_param(f"{name}.b", rng.standard_normal(m).astype(np.float32))
        attrs = {"pads": [pads] * 4, "strides": [1, 1], "group": group}
        y = g.add_node("Conv", [src, f"{name}.w", f"{name}.b"], attrs, name=name).outputs[0]
        if residual is not None:
            y = g.add_node("Add", [y, residual], {}, name=f"{name}.add").outputs[0]
        if act:
            y = g.add_node(act, [y], {}, name=f"{name}.act").outputs[0]
        return y

    a = conv("pw", "x", 8, 1, 0, "Relu")
    b = conv("wino4", "x", 48, 3, 1, "Relu", residual="x")
    d = conv("im2col", "x", 5, 5, 2)
    cat = g.add_node("Concat", [a, b, d], {"axis": 1}, name="cat").outputs[0]
    g.mark_output(g.add_node("Relu", [cat], {}, name="after").outputs[0])
    c = conv("wino2", "z", 48, 3, 1)
    c2 = conv("pwz", "z", 3, 1, 0, "LeakyRelu")
    g.mark_output(g.add_node("Concat", [c, c2], {"axis": 1}, name="catz").outputs[0])
    e = conv("shared", "x", 4, 1, 0, group=2)  # (grouped: not merged with "pw")
    f = conv("f", "x", 4, 3, 1)
    g.mark_output(g.add_node("Concat", ["x", e, f], {"axis": 1}, name="cat2").outputs[0])
    g.mark_output(g.add_node("Neg", [e], {}, name="neg").outputs[0])
    return g


def test_concat_inputs_written_in_place_by_their_convs(split, monkeypatch):
    """At batch 1 the convs write into the Concat's buffer; at 3 and 20 it copies (the same
    plan: a run decides)."""
    copied = []  # channels of every Concat that copied
    concatenate = np.concatenate

    def spy(xs, axis=0, out=None, **kw):
        if out is not None:  # (a prepared weight's bias column is concatenated too)
            copied.append(out.shape[1])
        return concatenate(xs, axis=axis, out=out, **kw)

    monkeypatch.setattr(np, "concatenate", spy)
    monkeypatch.setattr(fast_conv, "MIN_WINOGRAD_COLUMNS", 1)  # Winograd at batch 1 too
    monkeypatch.setattr(fast_conv, "NARROW_MIN_WINOGRAD_COLUMNS", 1)
    g = _concat_net()
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rows = {line.split()[0]: line for line in sess.describe().splitlines() if line.strip()}
    assert "no copy" in rows["cat"] and "no copy" in rows["catz"]
    assert "no copy" not in rows["cat2"]
    plan = sess._fast(training=False, keep_all=False)
    rng = np.random.default_rng(14)
    for batch in (1, 3, 1, 20, 1):
        feeds = {
            "x": rng.standard_normal((batch, 48, 6, 6)).astype(np.float32),
            "z": rng.standard_normal((batch, 48, 3, 3)).astype(np.float32),
        }
        copied.clear()
        got = sess.run(feeds)
        # cat2 (56 channels) always copies; cat (61) and catz (51) only above batch 1
        assert set(copied) == ({56} if batch == 1 else {56, 61, 51})
        want, theirs = ref.run(feeds), ort_run(export_checked(g), feeds)
        # Winograd F(4x4)'s rounding: ~40 u times the conv of |x| and |w| (432 terms of ~0.08:
        # ~35), so up to ~1e-4 absolute; a misplaced slice would be off by O(1).
        for k in g.outputs:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=2e-4, err_msg=k)
            np.testing.assert_allclose(got[k], theirs[k], rtol=1e-4, atol=2e-4, err_msg=k)
        if batch in (1, 20):  # every algorithm ran
            ran = {s.name: s.ran for s in plan.steps if s.op == "Conv"}
            assert ran["pw"] == ran["pwz"] == "pointwise" and ran["im2col"] == "im2col"
            assert ran["wino4"] == "winograd-f4" and ran["wino2"] == "winograd-f2"


# (norm op, x shape without the batch, groups or LayerNorm axis)
NORM_ACT_NORMS = [
    ("GroupNormalization", (6, 5, 7), 3),
    ("InstanceNormalization", (5, 3, 9), None),
    ("LayerNormalization", (4, 5, 3), 1),  # one row per image: the Python-scalar statistics
    ("LayerNormalization", (4, 5, 3), -1),  # rows of 3: (rows, 1) columns
]
NORM_ACT_ACTS = [("PRelu", "below one"), ("PRelu", "mixed"), ("Elu", 1.0), ("Elu", 2.5)]
NORM_ACT_ACTS += [("LeakyRelu", 0.1), ("Relu", None)]


def _norm_attrs(op, shape, arg):
    """(the scale's and bias's shape, the attributes) of norm `op` over one image's `shape`:
    LayerNormalization from axis `arg`, a GroupNormalization of `arg` groups, else per channel."""
    if op == "LayerNormalization":
        return (None, *shape)[arg % (len(shape) + 1) :], {"axis": arg, "epsilon": 1e-5}
    return (shape[0],), {"epsilon": 1e-5} | ({"num_groups": arg} if arg else {})


def _activation(g, x, act, act_arg, shape, rng):
    """act(x) named "act" (PRelu: slopes per channel of one image's `shape`, "below one" or
    "mixed"; others: `act_arg` its alpha, or None)."""
    if act == "PRelu":
        lo, hi = {"below one": (-0.5, 1.0), "mixed": (0.2, 2.0)}[act_arg]
        g.add_param(
            "slope", rng.uniform(lo, hi, (shape[0],) + (1,) * (len(shape) - 1)).astype("f4")
        )
        return g.add_node("PRelu", [x, "slope"], {}, name="act")
    return g.add_node(act, [x], {} if act_arg is None else {"alpha": act_arg}, name="act")


def _norm_act_graph(op, shape, arg, act, act_arg, rng, second_reader=False):
    """norm -> activation (the activation's output the graph's; with `second_reader` the
    norm's output too)."""
    pshape, attrs = _norm_attrs(op, shape, arg)
    params = {
        "scale": rng.uniform(0.5, 1.5, pshape).astype(np.float32),
        "bias": rng.normal(0.0, 1.0, pshape).astype(np.float32),
    }
    g = single_node(op, {"x": (None, *shape)}, params, attrs=attrs)
    (out,) = g.outputs
    node = _activation(g, out, act, act_arg, shape, rng)
    if not second_reader:
        g.outputs.remove(out)
    g.mark_output(node.outputs[0])
    return g, node.outputs[0]


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("act, act_arg", NORM_ACT_ACTS)
@pytest.mark.parametrize("op, shape, arg", NORM_ACT_NORMS)
def test_norm_with_fused_activation_matches_plain_kernels_and_onnxruntime(
    split, op, shape, arg, act, act_arg, batch, mode
):
    """Group / Instance / Layer normalization -> PReLU / ELU / LeakyReLU / Relu as one step (the
    activation in place on the norm's output), batch 1 and 3, inference and train mode (the
    same computation), on data far from zero (mean 100), against the plain kernels node by node
    and onnxruntime."""
    rng = np.random.default_rng(21)
    g, y = _norm_act_graph(op, shape, arg, act, act_arg, rng)
    sess = runtime.Session(g)
    rows = sess._fast(training=mode == "train", keep_all=False).describe()
    assert [r["op"] for r in rows] == [op] and rows[0]["fused"] == ["act"]
    x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
    got = sess.run({"x": x}, mode=mode)[y]
    want = runtime.Session(g, plan="reference").run({"x": x}, mode=mode)[y]
    # Normalized outputs of size ~3 (times a slope up to 2, or ELU's alpha): the bound of the
    # offset normalization test (rtol 1e-5, atol 2e-5) scaled by the activation's factor 2.5
    assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"{op}+{act} vs plain kernels")
    theirs = ort_run(export_checked(g), {"x": x - np.float32(100.0)})[y]
    mine = sess.run({"x": x - np.float32(100.0)})[y]
    assert_close(mine, theirs, rtol=1e-5, atol=5e-5, what=f"{op}+{act} vs onnxruntime")


def test_norm_read_twice_keeps_its_activation_apart():
    rng = np.random.default_rng(22)
    g, y = _norm_act_graph("GroupNormalization", (4, 3, 5), 2, "PRelu", "mixed", rng, True)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    assert [r["op"] for r in rows] == ["GroupNormalization", "PRelu"] and rows[0]["fused"] == []
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    got = sess.run({"x": x})
    want = runtime.Session(g, plan="reference").run({"x": x})
    for k in g.outputs:  # standard normal data, outputs ~2: a few float32 ulps
        assert_close(got[k], want[k], rtol=1e-5, atol=2e-6, what=k)


@pytest.mark.parametrize("shape", [(1, 5, 3, 7), (3, 4, 6, 5), (2, 3, 4, 3, 5)])
@pytest.mark.parametrize("also_output", [False, True])
def test_global_average_pool_with_fused_flatten(shape, also_output):
    """GlobalAveragePool -> Flatten as one step writing (N, C), batch 1 and more, 2-D and 3-D
    pools, against the plain kernels and onnxruntime; the pool's output also a graph output
    keeps the Flatten a step of its own."""
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    g = single_node("GlobalAveragePool", {"x": (None, *shape[1:])})
    (pooled,) = g.outputs
    flat = g.add_node("Flatten", [pooled], {"axis": 1}, name="flatten").outputs[0]
    if not also_output:
        g.outputs.clear()
    g.mark_output(flat)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    if also_output:
        assert [r["op"] for r in rows] == ["GlobalAveragePool", "Flatten"]
    else:
        assert [r["op"] for r in rows] == ["GlobalAveragePool"] and rows[0]["fused"] == ["flatten"]
    got = sess.run({"x": x})
    want = runtime.Session(g, plan="reference").run({"x": x})
    theirs = ort_run(export_checked(g), {"x": x})
    for name in g.outputs:  # means of standard normal data: a few float32 ulps
        assert got[name].shape == want[name].shape
        assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, what=name)
        assert_close(got[name], theirs[name], rtol=1e-5, atol=1e-6, what=name)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("op, shape, arg", NORM_ACT_NORMS)
def test_norm_writes_over_an_input_that_dies_there(split, op, shape, arg, batch, monkeypatch):
    """A norm whose input is a pooled value read last by it writes D and Y over that input (in
    place: its output in the input's memory), against the plain kernels; a second reader of
    the input keeps it apart. Data far from zero (mean 100): the bound of the fused test."""
    rng = np.random.default_rng(23)
    seen: list = []
    real = fast_elementwise.NormStep.__call__

    def spy(self, run):
        x = run.get(self.inputs[0])
        real(self, run)
        seen.append(np.shares_memory(x, run.get(self.outputs[0])))

    monkeypatch.setattr(fast_elementwise.NormStep, "__call__", spy)
    pshape, attrs = _norm_attrs(op, shape, arg)
    for second in (False, True):
        g = Graph("scaled_norm")
        g.add_input("x", (None, *shape), "float32")
        g.add_param("k", np.float32(1.5))
        g.add_param("scale", rng.uniform(0.5, 1.5, pshape).astype(np.float32))
        g.add_param("bias", rng.normal(0.0, 1.0, pshape).astype(np.float32))
        scaled = g.add_node("Mul", ["x", "k"], {}, name="mul").outputs[0]
        y = g.add_node(op, [scaled, "scale", "bias"], attrs, name="norm").outputs[0]
        g.mark_output(g.add_node("Mul", [y, "k"], {}, name="mul2").outputs[0])  # (an output
        # is a fresh array: the norm's own output must not be one)
        if second:
            g.mark_output(scaled)
        sess = runtime.Session(g)
        plan = sess._fast(training=False, keep_all=False)
        step = next(st for st in plan.steps if st.op == op)
        assert step.inplace != second
        x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
        seen.clear()
        got, want = sess.run({"x": x}), runtime.Session(g, plan="reference").run({"x": x})
        assert seen == [not second]
        for name in g.outputs:
            assert_close(got[name], want[name], rtol=1e-5, atol=5e-5, what=f"{op} {name}")


@pytest.mark.parametrize("op, arg", [("GroupNormalization", 3), ("InstanceNormalization", None)])
def test_norm_with_a_prelu_slope_along_the_batch_axis(split, op, arg):
    """PReLU's slope may broadcast along the batch axis too ((N, C, 1, 1), valid ONNX): not
    fused into the norm (the fused pass on a thread's images raised a broadcasting error, and
    a slope of another batch than the run's would broadcast the output past the norm's); the
    PReLU step computes it, against the plain kernels and onnxruntime (standard normal data,
    outputs ~2 times a slope up to 2: a few float32 ulps)."""
    rng = np.random.default_rng(31)
    shape = (3, 6, 5, 7)
    params = {
        "scale": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "bias": rng.normal(0.0, 1.0, 6).astype(np.float32),
    }
    attrs = {"epsilon": 1e-5} | ({"num_groups": arg} if arg else {})
    g = single_node(op, {"x": shape}, params, attrs=attrs)
    (out,) = g.outputs
    g.add_param("slope", rng.uniform(-0.5, 2.0, (3, 6, 1, 1)).astype(np.float32))
    y = g.add_node("PRelu", [out, "slope"], {}, name="act").outputs[0]
    g.outputs.remove(out)
    g.mark_output(y)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    assert [r["op"] for r in rows] == [op, "PRelu"]
    x = rng.standard_normal(shape).astype(np.float32)
    got = sess.run({"x": x})[y]
    want = runtime.Session(g, plan="reference").run({"x": x})[y]
    assert_close(got, want, rtol=1e-5, atol=1e-5, what="vs plain kernels")
    theirs = ort_run(export_checked(g), {"x": x})[y]
    assert_close(got, theirs, rtol=1e-5, atol=1e-5, what="vs onnxruntime")


@pytest.mark.parametrize("name", ["lenet5", "vgg_bn", "resnet20", "inception_bn", "norms_acts"])
def test_suite_models_run_an_empty_batch(name):
    """Batch 0 in inference (an empty request is valid input): every step of the optimized
    suite models (a fused Concat + MaxPool, GlobalAveragePool, the norms, Gemms) gives the
    plain kernels' empty outputs, shapes and dtypes (a chunk of 0 images or an ambiguous
    reshape(0, -1) raised before)."""
    g = optimize(suite.build(name), "inference")[0]
    (inp,) = g.inputs
    shape = tuple(0 if not isinstance(d, int) else d for d in g.values[inp].shape)
    x = np.zeros(shape, np.float32)
    got = runtime.Session(g).run({inp: x})
    want = runtime.Session(g, plan="reference").run({inp: x})
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k


def _bn_residual_graph(shape, *, relu: bool, bn_first: bool, late: bool = False) -> Graph:
    """x -> BatchNorm -> Add(., residual) [-> Relu], the residual Relu(r) computed before the
    BN (ResNet's block end), or after it in graph order with `late` (a Neg node added last)."""
    rng = np.random.default_rng(15)
    c = shape[1]
    g = Graph("bn_residual")
    g.add_input("x", shape, "float32")
    g.add_input("r", shape, "float32")
    params = {
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "B": rng.normal(0.0, 1.0, c).astype(np.float32),
        "mean": rng.normal(500.0, 1.0, c).astype(np.float32),
        "var": rng.uniform(5.0, 12.0, c).astype(np.float32),
    }
    for k, v in params.items():
        g.add_param(k, v)
    res = None if late else g.add_node("Relu", ["r"], {}, name="res").outputs[0]
    bn = g.add_node(
        "BatchNormalization", ["x", *params], {"epsilon": 1e-5, "momentum": 0.8}, name="bn"
    )
    if late:
        res = g.add_node("Neg", ["r"], {}, name="res").outputs[0]
    pair = [bn.outputs[0], res] if bn_first else [res, bn.outputs[0]]
    out = g.add_node("Add", pair, {}, name="add").outputs[0]
    if relu:
        out = g.add_node("Relu", [out], {}, name="relu").outputs[0]
    g.mark_output(out)
    return g


@pytest.mark.parametrize(
    "shape", [(1, 5, 6, 7), (3, 4, 5, 3), (1, 3, 1, 1), (2, 3), (1, 3, 2, 3, 4)]
)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("bn_first", [True, False])
def test_batchnorm_with_fused_residual_matches_the_plain_kernels(split, shape, relu, bn_first):
    """Train mode: BatchNorm -> Add(residual) [-> Relu] as one step (the Add's operand order
    either way), batch 1 (per-channel columns) and more (rows), against the plain kernels:
    Y and the running statistics over two runs; inference keeps the Add apart (BN folds into
    a conv there); the fused step gives the same bits as the unfused steps (the BN's output
    also a graph output keeps the Add apart: the same float32 operations in the same order)."""
    g = _bn_residual_graph(shape, relu=relu, bn_first=bn_first)
    ref_graph, plain_graph = g.copy(), g.copy()
    plain_graph.mark_output(next(n for n in g.nodes if n.name == "bn").outputs[0])
    sess, ref = runtime.Session(g), runtime.Session(ref_graph, plan="reference")
    plain = runtime.Session(plain_graph)
    rows = sess._fast(training=True, keep_all=False).describe()
    want_fused = ["add", "relu"] if relu else ["add"]
    assert [r["op"] for r in rows] == ["Relu", "BatchNormalization"]
    assert rows[1]["fused"] == want_fused
    rows = plain._fast(training=True, keep_all=False).describe()
    assert "Add" in [r["op"] for r in rows]
    rows = sess._fast(training=False, keep_all=False).describe()
    assert "Add" in [r["op"] for r in rows]
    rng = np.random.default_rng(16)
    x = (500.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    out = g.outputs[0]
    for _ in range(2):  # the second run starts from the updated running statistics
        got = sess.run({"x": x, "r": r}, mode="train")[out]
        want = ref.run({"x": x, "r": r}, mode="train")[out]
        same = plain.run({"x": x, "r": r}, mode="train")[out]
        # outputs of size ~1 (normalized, plus a residual ~1): the float64 bound of the offset
        # test (rtol 1e-5, atol 2e-5); a value the ReLU zeroed on one side only is within atol
        assert_close(got, want, rtol=1e-5, atol=2e-5, what="train BN+Add vs plain kernels")
        np.testing.assert_array_equal(got, same)
        for k in ("mean", "var"):
            # float64 arithmetic both, one float32 rounding each: a few ulp of ~500 or ~10
            assert_close(g.params[k], ref_graph.params[k], rtol=1e-6, atol=0, what=k)
            np.testing.assert_array_equal(g.params[k], plain_graph.params[k])
    got = sess.run({"x": x, "r": r})[out]  # inference: the running statistics
    want = ref.run({"x": x, "r": r})[out]
    assert_close(got, want, rtol=1e-5, atol=2e-5, what="inference BN+Add vs plain kernels")


@pytest.mark.parametrize(
    "x_shape, r_shape",
    [((3, 3, 1, 1), (1, 3, 1, 1)), ((4, 2, 1, 2), (1, 2, 1, 2)), ((1, 3, 4, 4), (2, 3, 4, 4))],
)
def test_batchnorm_fused_residual_broadcast_along_a_dynamic_batch(split, x_shape, r_shape):
    """x and the residual declared with an unknown batch (None: equal static shapes, so the
    Add is fused) but fed different batches, 1 broadcasting against 2-4: the output has the
    broadcast shape and the plain kernels' values (the fused pass had read the residual as
    x's shape: wrong values where C * H * W equals the batch, an error elsewhere)."""
    shape = (None, *x_shape[1:])
    g = _bn_residual_graph(shape, relu=True, bn_first=True)
    rows = runtime.Session(g)._fast(training=True, keep_all=False).describe()
    assert rows[1]["fused"] == ["add", "relu"]
    ref_graph = g.copy()
    sess, ref = runtime.Session(g), runtime.Session(ref_graph, plan="reference")
    rng = np.random.default_rng(17)
    feeds = {
        "x": (500.0 + 3.0 * rng.standard_normal(x_shape)).astype(np.float32),
        "r": rng.standard_normal(r_shape).astype(np.float32),
    }
    out = g.outputs[0]
    got, want = sess.run(feeds, mode="train")[out], ref.run(feeds, mode="train")[out]
    assert got.shape == want.shape == np.broadcast_shapes(x_shape, r_shape)
    # the bound of the fused test above (outputs ~1, float64 statistics both)
    assert_close(got, want, rtol=1e-5, atol=2e-5, what="broadcast residual")
    for k in ("mean", "var"):
        assert_close(g.params[k], ref_graph.params[k], rtol=1e-6, atol=0, what=k)


def test_a_fused_step_error_names_its_fused_input_and_nodes():
    """A residual that does not broadcast against x (batch 3 against 2): the KernelError names
    the step, labels the fused operand `fused` (not as one of BatchNormalization's own
    inputs) and lists the fused nodes."""
    from graphnet.errors import KernelError

    g = _bn_residual_graph((None, 3, 4, 5), relu=True, bn_first=True)
    feeds = {"x": np.ones((2, 3, 4, 5), np.float32), "r": np.ones((3, 3, 4, 5), np.float32)}
    with pytest.raises(KernelError) as err:
        runtime.Session(g).run(feeds, mode="train")
    msg = str(err.value)
    assert "while executing bn (BatchNormalization)" in msg
    assert "input_var(3) fused(3,3,4,5)" in msg and "fused: add, relu]" in msg


def test_batchnorm_keeps_a_residual_computed_later_apart():
    """The Add's other operand computed after the BN in graph order (train mode keeps graph
    order) is no residual for the BN: the Add stays a step."""
    g = _bn_residual_graph((2, 3, 4, 4), relu=True, bn_first=True, late=True)
    assert [n.op for n in g.nodes] == ["BatchNormalization", "Neg", "Add", "Relu"]
    rows = runtime.Session(g)._fast(training=True, keep_all=False).describe()
    assert [r["op"] for r in rows] == ["BatchNormalization", "Neg", "Add", "Relu"]
    rng = np.random.default_rng(17)
    feeds = {k: rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for k in ("x", "r")}
    got = runtime.Session(g).run(feeds, mode="train")[g.outputs[0]]
    want = runtime.Session(g.copy(), plan="reference").run(feeds, mode="train")[g.outputs[0]]
    # standard normal data, outputs ~1: a few float32 ulps (1 ulp 1.2e-7)
    assert_close(got, want, rtol=1e-5, atol=2e-6, what="BN, Neg, Add + Relu")


def test_batchnorm_does_not_take_its_own_input_as_residual():
    """Add(BN(x), x): x is the BN's input (its buffer may hold the BN's output): not fused."""
    rng = np.random.default_rng(18)
    params = {k: rng.uniform(0.5, 1.5, 3).astype(np.float32) for k in ("scale", "B", "m", "v")}
    g = single_node("BatchNormalization", {"x": (1, 3, 4, 4)}, params)
    (bn_out,) = g.outputs
    g.outputs.remove(bn_out)
    g.mark_output(g.add_node("Add", [bn_out, "x"], {}, name="add").outputs[0])
    rows = runtime.Session(g)._fast(training=True, keep_all=False).describe()
    assert [r["op"] for r in rows] == ["BatchNormalization", "Add"]
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    got = runtime.Session(g).run({"x": x}, mode="train")[g.outputs[0]]
    want = runtime.Session(g.copy(), plan="reference").run({"x": x}, mode="train")
    assert_close(got, want[g.outputs[0]], rtol=1e-5, atol=2e-6, what="BN + x")


def _bn_chain_graph(shape) -> Graph:
    """x -> BN a (momentum 0.9) -> Relu -> BN b (0.8) -> BN c (shares b's running mean: its
    statistics are read by two nodes) -> BN d (0.7) -> BN e (its running mean an output)."""
    rng = np.random.default_rng(19)
    c = shape[1]
    g = Graph("bn_chain")
    g.add_input("x", shape, "float32")
    value = "x"
    for k, (mom, mean) in enumerate([(0.9, "a"), (0.8, "b"), (0.85, "b"), (0.7, "d")]):
        name = "abcd"[k]
        g.add_param(f"{name}.scale", rng.uniform(0.5, 1.5, c).astype(np.float32))
        g.add_param(f"{name}.B", rng.normal(0.0, 1.0, c).astype(np.float32))
        if name == mean:
            g.add_param(f"{mean}.mean", rng.normal(50.0, 1.0, c).astype(np.float32))
        g.add_param(f"{name}.var", rng.uniform(5.0, 12.0, c).astype(np.float32))
        ins = [value, f"{name}.scale", f"{name}.B", f"{mean}.mean", f"{name}.var"]
        value = g.add_node(
            "BatchNormalization", ins, {"epsilon": 1e-5, "momentum": mom}, name=name
        ).outputs[0]
        if k == 0:
            value = g.add_node("Relu", [value], {}, name="relu").outputs[0]
    g.add_param("e.mean", rng.normal(0.0, 1.0, c).astype(np.float32))
    g.add_param("e.var", rng.uniform(0.5, 2.0, c).astype(np.float32))
    ins = [value, "a.scale", "a.B", "e.mean", "e.var"]
    e = g.add_node(
        "BatchNormalization",
        ins,
        {"epsilon": 1e-5, "momentum": 0.6},
        name="e",
        outputs=["e.y", "e.running_mean"],
    )
    g.mark_output(e.outputs[0])
    g.mark_output(e.outputs[1])
    return g


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (3, 4, 3, 3), (2, 5)])
def test_batchnorm_running_statistics_over_runs(split, shape):
    """Train mode: a chain of BNs (b's running mean also c's, e outputs its running mean)
    updates the running statistics as the plain kernels do (float64 both, one float32
    rounding), over three runs (each starts from the last run's statistics); the arrays the
    caller held before a run are not written to."""
    g = _bn_chain_graph(shape)
    ref_graph = g.copy()
    sess, ref = runtime.Session(g), runtime.Session(ref_graph, plan="reference")
    rng = np.random.default_rng(20)
    for _ in range(3):
        x = (50.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
        held = {k: (v, v.copy()) for k, v in g.params.items()}
        got = sess.run({"x": x}, mode="train")
        want = ref.run({"x": x}, mode="train")
        for arr, before in held.values():
            np.testing.assert_array_equal(arr, before)  # replaced, never written to
        for k in got:
            # outputs ~1 and running means ~1-50: the float64 bound of the offset test
            assert_close(got[k], want[k], rtol=1e-5, atol=2e-5, what=k)
        for k in g.params:
            assert g.params[k].dtype == np.float32 and g.params[k].shape == (shape[1],)
            # float64 arithmetic both, one float32 rounding each: a few ulp
            assert_close(g.params[k], ref_graph.params[k], rtol=1e-6, atol=1e-7, what=k)


@pytest.mark.parametrize("batch", [1, 2])
def test_batchnorm_outputs_placed_in_their_concat(split, batch):
    """Train mode: Conv -> BN [-> Relu] branches into a channel Concat: at batch 1 each BN
    writes into its channel slice of the Concat's buffer (not over its conv's output: the
    Concat copies nothing), at batch 2 the Concat copies; against the plain kernels and
    the running statistics over two runs."""
    rng = np.random.default_rng(21)
    g = Graph("bn_concat")
    g.add_input("x", (batch, 3, 5, 7), "float32")
    branches = []
    for name, c, relu in (("a", 4, True), ("b", 3, False), ("c", 5, True)):
        g.add_param(f"{name}.w", rng.standard_normal((c, 3, 3, 3)).astype(np.float32))
        conv = g.add_node(
            "Conv", ["x", f"{name}.w"], {"pads": [1, 1, 1, 1]}, name=f"{name}.conv"
        ).outputs[0]
        for k, v in {
            "scale": rng.uniform(0.5, 1.5, c),
            "B": rng.normal(0.0, 1.0, c),
            "mean": rng.normal(0.0, 1.0, c),
            "var": rng.uniform(0.5, 2.0, c),
        }.items():
            g.add_param(f"{name}.{k}", v.astype(np.float32))
        ins = [conv, *(f"{name}.{k}" for k in ("scale", "B", "mean", "var"))]
        out = g.add_node("BatchNormalization", ins, {}, name=f"{name}.bn").outputs[0]
        if relu:
            out = g.add_node("Relu", [out], {}, name=f"{name}.relu").outputs[0]
        branches.append(out)
    cat = g.add_node("Concat", branches, {"axis": 1}, name="cat").outputs[0]
    g.mark_output(g.add_node("Relu", [cat], {}, name="after").outputs[0])
    ref_graph = g.copy()
    sess, ref = runtime.Session(g), runtime.Session(ref_graph, plan="reference")
    plan = sess._fast(training=True, keep_all=False)
    concat = next(s for s in plan.steps if isinstance(s, fast_base.ConcatStep))
    assert concat.placed and all(i in plan.placements for i in concat.inputs)
    copies = []
    real = np.concatenate
    for _ in range(2):
        x = rng.standard_normal((batch, 3, 5, 7)).astype(np.float32)
        # (the Concat's copy: np.concatenate(..., out=))
        np.concatenate = lambda *a, **k: copies.append("out" in k) or real(*a, **k)  # noqa: B023
        try:
            got = sess.run({"x": x}, mode="train")[g.outputs[0]]
        finally:
            np.concatenate = real
        want = ref.run({"x": x}, mode="train")[g.outputs[0]]
        # normalized outputs ~1: a few float32 ulps of the conv sums and the affine
        assert_close(got, want, rtol=1e-5, atol=2e-5, what="placed BN branches")
        for k in g.params:
            # float64 arithmetic both, one float32 rounding each
            assert_close(g.params[k], ref_graph.params[k], rtol=1e-6, atol=1e-7, what=k)
    assert any(copies) == (batch > 1)


# (op, one image's shape, groups or LayerNorm axis, activation, its argument): rows of 561-4050
# elements, past UNBUFFERED_MIN_ROW and no multiple of 16 (NumPy's buffer size must be one)
NORM_LONG_ROWS = [
    ("GroupNormalization", (12, 23, 29), 4, "PRelu", "mixed"),
    ("InstanceNormalization", (5, 33, 17), 0, "Elu", 2.5),
    ("LayerNormalization", (6, 25, 27), 1, "LeakyRelu", 0.1),
    ("LayerNormalization", (6, 25, 27), 2, "PRelu", "below one"),  # the activation after
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("op, shape, arg, act, act_arg", NORM_LONG_ROWS)
def test_norm_over_long_rows_with_numpy_unbuffered(split, op, shape, arg, act, act_arg, batch):
    """Norms whose row-wise operands broadcast along rows of 512 elements or more run with
    NumPy's ufunc buffer at the row length (`_unbuffered`; not a one-row layer norm, whose
    operands are scalars and its affine's whole rows): bit for bit the default buffer's
    results (the same float32 operations), against the plain kernels (data far from zero:
    the bound of the fused test) and onnxruntime; the thread's buffer size is restored."""
    rng = np.random.default_rng(41)
    g, y = _norm_act_graph(op, shape, arg, act, act_arg, rng)
    x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
    calls: list = []
    real = fast_elementwise._unbuffered

    def spy(fn, row, lo, hi, sc):
        calls.append(row)
        real(fn, row, lo, hi, sc)

    default = np.getbufsize()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_elementwise, "_unbuffered", spy)
        got = runtime.Session(g).run({"x": x})[y]
    one_row = op == "LayerNormalization" and arg == 1 and batch == 1  # (scalar operands)
    assert bool(calls) != one_row and min(calls, default=1 << 30) >= 512
    assert np.getbufsize() == default
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_elementwise, "UNBUFFERED_MIN_ROW", 1 << 30)  # the buffered passes
        buffered = runtime.Session(g).run({"x": x})[y]
    np.testing.assert_array_equal(got, buffered)
    want = runtime.Session(g, plan="reference").run({"x": x})[y]
    assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"{op}+{act} vs plain kernels")
    x0 = x - np.float32(100.0)
    theirs = ort_run(export_checked(g), {"x": x0})[y]
    assert_close(runtime.Session(g).run({"x": x0})[y], theirs, rtol=1e-5, atol=5e-5, what="ort")


def test_norm_over_planes_longer_than_numpy_buffer_keeps_its_buffering():
    """Rows at least as long as NumPy's ufunc buffer (8192 elements) are not buffered by NumPy:
    the norm leaves its buffer alone there (it set the buffer to the row length, and NumPy
    refuses buffers past 10**7 elements: an InstanceNorm over a 3200 x 3200 plane raised).
    Against the plain kernel (data far from zero, as in the tests above)."""
    rng = np.random.default_rng(42)
    calls: list = []
    real = fast_elementwise._unbuffered

    def spy(fn, row, lo, hi, sc):
        calls.append(row)
        real(fn, row, lo, hi, sc)

    for shape in ((1, 3200, 3200), (2, 96, 96)):  # 10.24M and 9216 elements a plane
        g, y = _norm_act_graph("InstanceNormalization", shape, None, "Relu", None, rng)
        x = (100.0 + rng.standard_normal((1, *shape))).astype(np.float32)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fast_elementwise, "_unbuffered", spy)
            got = runtime.Session(g).run({"x": x})[y]
        want = runtime.Session(g, plan="reference").run({"x": x})[y]
        # the float32 BLAS statistics over 10M elements: the std within ~2e-5 (measured; a
        # blocked dot product's rounding grows about with sqrt(n) * 6e-8 = 2e-4 at most)
        rtol = 1e-4 if x.size > 1e6 else 1e-5
        assert_close(got, want, rtol=rtol, atol=5e-5, what=f"plane {shape[1:]}")
    assert not calls and np.getbufsize() == fast_elementwise.NUMPY_BUFSIZE


def test_unbuffered_restores_the_buffer_size_after_an_error():
    """`_unbuffered` sets the buffer to the row length rounded down to a multiple of 16 for
    the call only, and restores it when the call raises."""
    default = np.getbufsize()
    seen: list = []

    def fails(lo, hi, sc):
        seen.append((np.getbufsize(), lo, hi, sc))
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        fast_elementwise._unbuffered(fails, 675, 2, 5, None)
    assert seen == [(672, 2, 5, None)] and np.getbufsize() == default


@pytest.mark.parametrize(
    "a",
    [
        np.array([[0.5], [-2.0], [3.0]], np.float32),
        np.array([1.0, np.nan, -4.0, np.nan], np.float32),  # NaN: as min() / max()
        np.array([-np.inf, 2.0, np.inf], np.float64),
        np.arange(24, dtype=np.float16).reshape(2, 3, 4)[:, ::2, 1:],  # not contiguous
        np.array([7.0], np.float32),
    ],
)
def test_least_and_greatest_are_min_and_max(a):
    """`least` / `greatest` (argmin / argmax, the per-run checks of slopes and scales): min()
    and max() as floats, NaN where a holds one."""
    for got, want in (
        (fast_elementwise.least(a), a.min()),
        (fast_elementwise.greatest(a), a.max()),
    ):
        assert type(got) is float
        np.testing.assert_array_equal(got, float(want))


@pytest.mark.parametrize("through_setbufsize", [False, True])
def test_unbuffered_keeps_the_callers_error_state_and_buffer(through_setbufsize, monkeypatch):
    """`_unbuffered` sets the buffer through NumPy's ufunc state with extobjs it keeps: under
    a caller's np.errstate and buffer size, the call sees that error state with the row's
    buffer (an extobj kept from another state would reset the error handling), and both
    are the caller's again after it, also on a second call (a kept extobj) and after an
    error; np.setbufsize the same where NumPy has no such state."""
    if through_setbufsize:
        monkeypatch.setattr(fast_elementwise, "_EXTOBJ", None)
    seen: list = []

    def look(lo, hi, sc):
        seen.append((np.getbufsize(), np.geterr()["over"], np.geterr()["divide"]))

    def fails(lo, hi, sc):
        look(lo, hi, sc)
        raise ValueError("inside")

    fast_elementwise._unbuffered(look, 1040, 0, 1, None)  # (kept under the default state)
    with np.errstate(over="raise", divide="ignore"):
        old = np.setbufsize(4096)
        try:
            for fn in (look, look, fails):  # (the second call: the kept extobj)
                with pytest.raises(ValueError) if fn is fails else contextlib.nullcontext():
                    fast_elementwise._unbuffered(fn, 1040, 0, 1, None)
                assert (np.getbufsize(), np.geterr()["over"]) == (4096, "raise")
        finally:
            np.setbufsize(old)
    assert seen[1:] == [(1040, "raise", "ignore")] * 3
    assert seen[0][0] == 1040 and np.geterr()["over"] != "raise"


@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0, 2.5])
def test_norm_elu_against_float64_near_zero(alpha):
    """The fused norm's ELU (`elu_expm1`, in place and into another array) against float64:
    within a few float32 ulps of the result everywhere, also just below zero, where
    exp(x) - 1 in float32 lost up to 1e-3 of the value (one rounding of exp near 1)."""
    rng = np.random.default_rng(43)
    x = np.concatenate(
        [
            np.linspace(-30.0, 5.0, 4001),
            -(10.0 ** rng.uniform(-9, -1, 2000)),  # just below zero
            rng.standard_normal(3000) * 3,
            [0.0, -0.0, np.nan, -np.inf, np.inf, 100.0, -100.0],
        ]
    ).astype(np.float32)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        want = np.where(x64 >= 0, x64, alpha * np.expm1(np.minimum(x64, 0.0)))
    t = np.empty_like(x)
    y = np.empty_like(x)
    fast_elementwise.elu_expm1(alpha, x, y, t)
    z = x.copy()
    fast_elementwise.elu_expm1(alpha, z, z, t)  # in place
    np.testing.assert_array_equal(y, z)
    # expm1 within ~2 ulp (NumPy's float32 SIMD), alpha's product one rounding more: 4 ulp
    np.testing.assert_allclose(y, want, rtol=4 * 2.0**-24, atol=0, equal_nan=True)


def _norm_act_pool_graph(op, shape, arg, act, act_arg, kernel, rng, *, scaled=False):
    """[x * 1.5 ->] norm -> activation -> MaxPool (`kernel`: kernel = stride, or the pool's
    attributes), the pool's output the graph's; `scaled`: the norm reads a Mul's output,
    which dies there."""
    g = Graph("norm_act_pool")
    g.add_input("x", (None, *shape), "float32")
    pshape, attrs = _norm_attrs(op, shape, arg)
    g.add_param("scale", rng.uniform(0.5, 1.5, pshape).astype(np.float32))
    g.add_param("bias", rng.normal(0.0, 1.0, pshape).astype(np.float32))
    x = "x"
    if scaled:
        g.add_param("k", np.float32(1.5))
        x = g.add_node("Mul", ["x", "k"], {}, name="mul").outputs[0]
    out = g.add_node(op, [x, "scale", "bias"], attrs, name="norm").outputs[0]
    node = _activation(g, out, act, act_arg, shape, rng)
    if isinstance(kernel, dict):  # the pool's attributes
        attrs = kernel
    else:  # kernel = stride, no pads
        attrs = {"kernel_shape": list(kernel), "strides": list(kernel)}
    pooled = g.add_node("MaxPool", [node.outputs[0]], attrs, name="pool").outputs[0]
    g.mark_output(pooled)
    return g, pooled


_PADDED_POOL = {
    "kernel_shape": [3, 2],
    "strides": [2, 1],
    "pads": [1, 0, 1, 1],
    "dilations": [1, 2],
    "ceil_mode": 1,
}
_GROWING_POOL = {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 1, 1, 1]}  # (5, 4)
# (op, one image's shape, groups / axis, activation, its argument, pool kernel or attributes,
# whether the pool is fused)
NORM_ACT_POOLS = [
    ("GroupNormalization", (6, 10, 14), 3, "PRelu", "mixed", (2, 2), True),  # slopes > 0
    ("GroupNormalization", (6, 10, 14), 3, "PRelu", "below one", (2, 2), True),  # some < 0
    ("InstanceNormalization", (5, 9, 6), None, "Elu", 1.0, (3, 3), True),
    ("InstanceNormalization", (5, 8, 6), None, "Elu", 2.5, (2, 1), True),
    ("LayerNormalization", (4, 6, 8), 1, "LeakyRelu", 0.1, (2, 2), True),
    ("LayerNormalization", (4, 6, 8), -1, "Relu", None, (2, 4), True),
    ("GroupNormalization", (6, 10, 14), 2, "Elu", -0.5, (2, 2), False),  # alpha < 0: not monotone
    ("InstanceNormalization", (5, 9, 7), None, "Elu", 1.0, (3, 3), True),  # 7 % 3: no tiling
    # dilated, ceil_mode: a window could hold padding only (-inf, not f(-inf)): not fused
    ("GroupNormalization", (6, 11, 9), 3, "PRelu", "mixed", _PADDED_POOL, False),
    ("InstanceNormalization", (5, 11, 9), None, "LeakyRelu", 0.1, _PADDED_POOL, False),
    ("InstanceNormalization", (5, 4, 3), None, "Elu", 0.5, _GROWING_POOL, True),
]


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("op, shape, arg, act, act_arg, kernel, pooled", NORM_ACT_POOLS)
def test_norm_with_fused_activation_and_pool(
    split, op, shape, arg, act, act_arg, kernel, pooled, scaled, batch, mode
):
    """norm -> activation -> tiling MaxPool as one step: the activation on the pooled values
    where it is non-decreasing (it commutes with the max: Relu, LeakyRelu / Elu with alpha >=
    0, PRelu when every slope is >= 0 in the run), else before the pool; over the norm's input
    when it dies there (`scaled`), else in a temporary. Against the plain kernels node by node
    and onnxruntime (data far from zero: the bound of the fused norm test), pools that tile and
    padded, strided, dilated, ceil_mode ones; a decreasing activation keeps the pool a step of
    its own."""
    rng = np.random.default_rng(47)
    g, y = _norm_act_pool_graph(op, shape, arg, act, act_arg, kernel, rng, scaled=scaled)
    sess = runtime.Session(g)
    rows = sess._fast(training=mode == "train", keep_all=False).describe()
    norm = next(r for r in rows if r["op"] == op)
    assert norm["fused"] == (["act", "pool"] if pooled else ["act"])
    assert ("Mul" in [r["op"] for r in rows]) == scaled
    assert ("MaxPool" in [r["op"] for r in rows]) != pooled
    x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
    got = sess.run({"x": x}, mode=mode)[y]
    want = runtime.Session(g, plan="reference").run({"x": x}, mode=mode)[y]
    assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"{op}+{act}+pool vs plain kernels")
    x0 = x - np.float32(100.0)
    theirs = ort_run(export_checked(g), {"x": x0})[y]
    assert_close(sess.run({"x": x0})[y], theirs, rtol=1e-5, atol=5e-5, what="vs onnxruntime")
    if act != "Elu":  # the pool before a monotone affine and activation: the same bits
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fast_compile.CompiledPlan, "_fuse_norm_pool", lambda *a: None)
            apart = runtime.Session(g).run({"x": x}, mode=mode)[y]
        np.testing.assert_array_equal(got, apart)


@pytest.mark.parametrize(
    "op, shape, arg, act, act_arg, kernel",
    [
        ("GroupNormalization", (6, 10, 14), 3, "PRelu", "mixed", (2, 2)),
        ("InstanceNormalization", (5, 9, 6), None, "Relu", None, (3, 3)),
        ("GroupNormalization", (4, 8, 9), 2, "LeakyRelu", 0.1, (2, 3)),
        ("LayerNormalization", (4, 6, 8), 1, "Elu", 1.0, (2, 2)),  # (`_tile_max` alone)
    ],
)
def test_norm_fused_pool_rebinds_its_views(op, shape, arg, act, act_arg, kernel, monkeypatch):
    """The fused pool's passes on views made once per arrays (`NormStep._tile_max`, and the
    whole group norm in `_small_group`): one session run at batch 1 -> 3 -> 1 -> 2 -> 1, new
    data each run, and with the inline limit between the batches' sizes (the larger ones then
    take the general path, the smaller ones bind again): every output equals the unfused
    plan's bits (the pool commutes with the monotone affine and activation: max(f(a), f(b)) =
    f(max(a, b)); ELU's float32 expm1 is not monotone to the ulp: within 1 ulp there) and the
    plain kernels' within the fused norm tests' bound; a run after the views changed reads no
    view of an earlier run's arrays."""
    rng = np.random.default_rng(50)
    g, y = _norm_act_pool_graph(op, shape, arg, act, act_arg, kernel, rng, scaled=True)
    one = 4 * int(np.prod(shape))  # bytes of one image's pre-pool value
    calls = []
    for name in ("_tile_max", "_small_group"):
        real = getattr(fast_elementwise.NormStep, name)

        def spy(self, *args, real=real):
            out = real(self, *args)
            calls.append(out is not None and out is not False)
            return out

        monkeypatch.setattr(fast_elementwise.NormStep, name, spy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_compile.CompiledPlan, "_fuse_norm_pool", lambda *a: None)
        apart = runtime.Session(g)
    reference = runtime.Session(g, plan="reference")
    for limit in (1 << 18, 2 * one):
        monkeypatch.setattr(fast_elementwise, "FUSED_POOL_INLINE_BYTES", limit)
        sess = runtime.Session(g)
        for batch in (1, 3, 1, 2, 1, 1):
            calls.clear()
            x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
            got = sess.run({"x": x})[y]
            assert calls.count(True) == (batch * one <= limit)
            theirs = apart.run({"x": x})[y]
            if act == "Elu":
                np.testing.assert_array_max_ulp(got, theirs, maxulp=1)
            else:
                np.testing.assert_array_equal(got, theirs)
            want = reference.run({"x": x})[y]
            assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"batch {batch}, limit {limit}")
    # replays at one batch bind no more (the pooled output, a fresh graph output every run,
    # is not part of the binding)
    binds = []
    real_bind = fast_elementwise.NormStep._bind_small
    monkeypatch.setattr(
        fast_elementwise.NormStep,
        "_bind_small",
        lambda self, *args: binds.append(1) or real_bind(self, *args),
    )
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    sess.run({"x": x})
    binds.clear()
    for _ in range(3):
        sess.run({"x": x})
    assert not binds


@pytest.mark.parametrize(
    "shape, axis, act, act_arg",
    [
        ((4, 6, 8), 1, "LeakyRelu", 0.1),
        ((4, 6, 8), 1, "PRelu", "mixed"),
        ((7,), -1, "Elu", 1.0),
        ((5, 3, 4), 2, "Relu", None),  # (rows of one image: the general path)
    ],
)
@pytest.mark.parametrize("scaled", [False, True])
def test_layer_norm_of_one_row_runs_straight(shape, axis, act, act_arg, scaled, monkeypatch):
    """A layer norm of one row (batch 1 from axis 1, or of a 1-D image) takes its straight
    path (`NormStep._one_row`): one session at batch 1 -> 2 -> 1 -> 1 -> 3 -> 1, new
    data each run, the norm's output a graph output (a fresh array every run) or written over
    a dying Mul's output (`scaled`): the bits of the general path (`_normalize`) every time,
    the plain kernels' values within the fused norm tests' bound, and the bound path taken
    exactly for one-row runs."""
    rng = np.random.default_rng(52)
    g, y = _norm_act_graph("LayerNormalization", shape, axis, act, act_arg, rng)
    if scaled:  # x * 1.5 -> the norm (the Mul's output dies there: the norm writes over it)
        g.add_param("k", np.float32(1.5))
        node = next(n for n in g.nodes if n.op == "LayerNormalization")
        mul = g.add_node("Mul", ["x", "k"], {}, name="mul", before=node)
        g.set_input(node, 0, mul.outputs[0])
    bound = []
    real = fast_elementwise.NormStep._one_row

    def spy(self, *args):
        out = real(self, *args)
        bound.append(out)
        return out

    monkeypatch.setattr(fast_elementwise.NormStep, "_one_row", spy)
    sess = runtime.Session(g)
    reference = runtime.Session(g, plan="reference")
    for batch in (1, 2, 1, 1, 3, 1):
        bound.clear()
        x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
        got = sess.run({"x": x})[y]
        one_row = batch == 1 and (axis == 1 or len(shape) == 1)
        assert bound == [one_row]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fast_elementwise.NormStep, "_one_row", lambda *a: False)
            np.testing.assert_array_equal(got, runtime.Session(g).run({"x": x})[y])
        want = reference.run({"x": x})[y]
        assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"batch {batch}")


@pytest.mark.parametrize("kh", [2, 3, 4])
@pytest.mark.parametrize("images, c, w", [(1, 1, 2), (3, 5, 14), (2, 4, 32), (1, 3, 6)])
def test_halving_pool_matches_the_tile_passes_and_a_naive_pool(kh, images, c, w):
    """`_halving_pool` (the kh x 2 tiling max of `NormStep._chunked`: rows, the window rows'
    maxima copied as void rows, columns, the even positions by an int64 -> int32 cast): the
    same bits as `_tile_passes`' flat passes (the same maxima in the same order: signed
    zeros and NaNs included) and the values of a naive pool (window maxima by reshape), on
    planes of odd row counts (kh 3) and widths 2-32, with NaN, +-inf and -0.0 in the data;
    scratch past the passes' reach NaN-filled (no read of stale values)."""
    rng = np.random.default_rng(60)
    h = kh * 3
    x = rng.standard_normal((images, c, h, w)).astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 40), replace=False)] = np.nan
    flat[rng.choice(flat.size, max(1, flat.size // 40), replace=False)] = -np.inf
    flat[rng.choice(flat.size, max(1, flat.size // 40), replace=False)] = np.inf
    flat[rng.choice(flat.size, max(1, flat.size // 20), replace=False)] = -0.0
    y = np.full((images, c, h // kh, w // 2), 7.0, np.float32)
    m = np.full(x.size + 5, np.nan, np.float32)[: x.size]
    m2 = np.full(x.size // kh + 3, np.nan, np.float32)[: x.size // kh]
    fast_elementwise._halving_pool(x, y, kh, m, m2)
    naive = x.reshape(images, c, h // kh, kh, w // 2, 2)
    with np.errstate(invalid="ignore"):
        want = np.maximum.reduce(np.maximum.reduce(naive, axis=5), axis=3)
    np.testing.assert_array_equal(y, want)
    calls = fast_elementwise._tile_passes(
        x, np.empty(x.size - (kh - 1) * w, np.float32), np.empty(x.size, np.float32), (kh, 2)
    )
    tiles = np.empty_like(y)
    fast_elementwise._tile_max_passes(calls, tiles)
    np.testing.assert_array_equal(y.view(np.int32), tiles.view(np.int32))  # (the bits)


# (op, one image's shape, groups, activation, its argument, pool kernel)
CHUNKED_NORMS = [
    ("GroupNormalization", (6, 10, 14), 3, "PRelu", "mixed", (2, 2)),
    ("GroupNormalization", (6, 9, 8), 1, "LeakyRelu", 0.1, (3, 2)),  # one group, odd H
    ("GroupNormalization", (4, 6, 10), 4, "Relu", None, (2, 2)),  # a group per channel
    ("InstanceNormalization", (5, 8, 6), None, "Elu", 1.0, (2, 2)),
    ("InstanceNormalization", (5, 9, 6), None, "PRelu", "mixed", (3, 3)),  # `_tile_passes`
]


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("chunk", [1, 2, None])  # images a chunk (None: the default bytes)
@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("op, shape, arg, act, act_arg, kernel", CHUNKED_NORMS)
def test_norm_pool_chunked_matches_the_whole_batch_passes(
    split, op, shape, arg, act, act_arg, kernel, batch, chunk, mode, monkeypatch
):
    """A group / instance norm + monotone activation + tiling pool over several images (past
    the batch-1 sizes of `_small_group`) in chunks of whole images (`NormStep._chunked`:
    each chunk's statistics, then its pool; the kh x 2 pools by `_halving_pool`), one image
    a chunk, two (a last chunk of one), or the default: against the whole-batch statistics
    then the pool step (`CHUNKED` off, the former path) and the plain kernels. The two paths
    run the same operations per row and pooled value, but BLAS computes the shift m = x .
    (1/n) over other row blocks and may round it apart by a float32 ulp of m (the data are
    ~100: m is within 2^-17 of the mean); the residual r = sum(x - m) / n carries that to
    the output within a few float32 ulps of its O(1) normalized values: atol 2^-20. Against
    the plain kernels within the fused norm tests' bound."""
    rng = np.random.default_rng(61)
    g, y = _norm_act_pool_graph(op, shape, arg, act, act_arg, kernel, rng, scaled=True)
    one = 4 * int(np.prod(shape))
    if chunk is not None:
        monkeypatch.setattr(fast_elementwise, "NORM_CHUNK_BYTES", chunk * one)
    monkeypatch.setattr(fast_elementwise, "FUSED_POOL_INLINE_BYTES", 0)  # (no batch-1 path)
    done = []
    real = fast_elementwise.NormStep._chunked

    def spy(self, *args):
        out = real(self, *args)
        done.append(out is not None)
        return out

    monkeypatch.setattr(fast_elementwise.NormStep, "_chunked", spy)
    x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
    sess = runtime.Session(g)
    got = sess.run({"x": x}, mode=mode)[y]
    assert done == [True]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_elementwise, "CHUNKED", False)
        apart = runtime.Session(g).run({"x": x}, mode=mode)[y]
    np.testing.assert_allclose(got, apart, rtol=0, atol=2.0**-20)
    want = runtime.Session(g, plan="reference").run({"x": x}, mode=mode)[y]
    assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"{op}+{act}+pool chunked vs plain")
    x2 = (100.0 + rng.standard_normal((batch + 1, *shape))).astype(np.float32)
    got2 = sess.run({"x": x2}, mode=mode)[y]  # (another batch on the same session)
    want2 = runtime.Session(g, plan="reference").run({"x": x2}, mode=mode)[y]
    assert_close(got2, want2, rtol=1e-5, atol=5e-5, what="the next batch")
    np.testing.assert_array_equal(sess.run({"x": x}, mode=mode)[y], got)


# How the norm's rows sit: every row's squared mean under ONE_PASS_MAX_RATIO times its variance
# ("near"), some rows past it gathered ("gathered"), most rows past it (a chunk falls back),
# past ONE_PASS_FOLD_MAX_RATIO ("too far"), a NaN (the last two: a row in every image), the
# even images' rows far and the odd ones' near ("mixed": chunks of one run go both ways)
ONE_PASS_DATA = ["near", "gathered", "most far", "too far", "nan", "mixed"]


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("op, shape, arg, act, act_arg, kernel", CHUNKED_NORMS)
@pytest.mark.parametrize("data", ONE_PASS_DATA)
def test_norm_pool_one_pass_statistics(
    split, data, op, shape, arg, act, act_arg, kernel, batch, mode, monkeypatch
):
    """`NormStep._chunked` with `_one_pass` (x . 1 and x . x, the pool on x, the mean folded
    into the affine's term; rows past ONE_PASS_MAX_RATIO by the shifted passes on a gathered
    copy), an image a chunk, against `ONE_PASS` off (the former path: D = x - m written and
    pooled) and the plain kernels. Where it falls back (most rows far, one too far, NaN), every
    chunk tries and falls back on its own: the former path's bits, run after run (no state
    carried between chunks or runs). Instance norms and a group a channel: never tried, the
    former path's bits. Else within the two ways' rounding: var's relative error at most 4x the two
    passes' bound (both ~1e-7 here, x . x and D . D over at most 840 values), the folded term
    rounded at |mean| / std <= 8 times Y - B's size: a few float32 ulps of Y's O(4) values;
    atol 2^-18 (~4e-6, 16 ulps of 4) bounds both; a wrong shift, sum or row is off by O(1)."""
    monkeypatch.setattr(fast_elementwise, "ONE_PASS", True)  # (an option: see ONE_PASS)
    rng = np.random.default_rng(62)
    g, y = _norm_act_pool_graph(op, shape, arg, act, act_arg, kernel, rng, scaled=True)
    monkeypatch.setattr(fast_elementwise, "NORM_CHUNK_BYTES", 4 * int(np.prod(shape)))
    monkeypatch.setattr(fast_elementwise, "FUSED_POOL_INLINE_BYTES", 0)  # (no batch-1 path)
    if data in ("gathered", "too far"):  # (any number of rows gathered: not why it falls back)
        monkeypatch.setattr(fast_elementwise, "ONE_PASS_GATHER_PART", 1)
    passes = []
    real = fast_elementwise.NormStep._one_pass
    monkeypatch.setattr(
        fast_elementwise.NormStep,
        "_one_pass",
        staticmethod(lambda *a: passes.append(real(*a)) or passes[-1]),
    )
    groups = arg or shape[0]
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    rows = x.reshape(batch * groups, -1)  # (the norm's rows; x * 1.5 keeps their ratios)
    if data == "near":
        rows += rng.uniform(-1.0, 1.0, (rows.shape[0], 1)).astype(np.float32)  # ratio <= 1
    elif data == "gathered":
        rows[::2] += 5.0  # ratio ~25: past 3, under 64
    elif data == "most far":
        rows += 5.0
    elif data == "too far":  # (in every image: every chunk falls back, on any thread)
        rows[groups - 1 :: groups] += 40.0  # ratio ~1600
    elif data == "mixed":
        x[::2] += 5.0
    else:
        rows[groups - 1 :: groups, 3] = np.nan
    sess = runtime.Session(g)
    steps = sess._fast(training=mode == "train", keep_all=False).steps
    (step,) = [s for s in steps if isinstance(s, fast_elementwise.NormStep)]
    with np.errstate(invalid="ignore"):
        got = sess.run({"x": x}, mode=mode)[y]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fast_elementwise, "ONE_PASS", False)
            former = runtime.Session(g).run({"x": x}, mode=mode)[y]
    if op == "InstanceNormalization" or groups == shape[0]:  # (see ONE_PASS)
        assert passes == []
        np.testing.assert_array_equal(got, former)
        return
    if data == "mixed":  # (each chunk its own way, whichever thread runs it, and first)
        assert sorted(passes) == sorted([k % 2 == 1 for k in range(batch)])
        np.testing.assert_allclose(got, former, rtol=0, atol=2.0**-18)
        near = (x - x.mean(axis=(1, 2, 3), keepdims=True)).astype(np.float32)
        sess.run({"x": near}, mode=mode)  # (a run whose every chunk takes the one pass)
        np.testing.assert_array_equal(sess.run({"x": x}, mode=mode)[y], got)
        return
    if data in ("near", "gathered"):
        assert passes == [True] * batch
        np.testing.assert_allclose(got, former, rtol=0, atol=2.0**-18)
        want = runtime.Session(g, plan="reference").run({"x": x}, mode=mode)[y]
        assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"{op}+{act}+pool one pass")
        if mode == "inference":
            want = ort_run(export_checked(g), {"x": x})[y]
            assert_close(got, want, rtol=1e-5, atol=5e-5, what="one pass vs onnxruntime")
        return
    assert passes == [False] * batch  # (each chunk an image, each tried on its own)
    np.testing.assert_array_equal(got, former)
    passes.clear()
    with np.errstate(invalid="ignore"):
        again = sess.run({"x": x}, mode=mode)[y]
    assert passes == [False] * batch
    np.testing.assert_array_equal(again, former)


def test_norm_pool_one_pass_bits_whatever_the_split(monkeypatch):
    """The one pass's choice is a chunk's (its images share it), so the chunks are a grid from
    image 0 whichever way the threads split the batch: a far image (its rows' squared means
    past ONE_PASS_FOLD_MAX_RATIO times their variances: its chunk falls back) at each place of
    a batch of 7 in chunks of 2 (two threads: images 0-2 and 3-6), the same bits with the
    batch split over the threads and run inline (a chunk grid from each thread's first image
    gave the far image's neighbours the other way in one of them: ~5e-7 apart)."""
    monkeypatch.setattr(fast_elementwise, "ONE_PASS", True)  # (an option: see ONE_PASS)
    rng = np.random.default_rng(63)
    shape = (8, 6, 10)
    g, y = _norm_act_pool_graph("GroupNormalization", shape, 2, "Relu", None, (2, 2), rng)
    monkeypatch.setattr(fast_elementwise, "NORM_CHUNK_BYTES", 2 * 4 * int(np.prod(shape)))
    monkeypatch.setattr(fast_elementwise, "FUSED_POOL_INLINE_BYTES", 0)  # (no batch-1 path)
    for far in range(7):
        x = rng.standard_normal((7, *shape)).astype(np.float32)
        x[far] += 40.0
        got = {}
        for how, least in (("inline", 1 << 60), ("threads", 0)):
            with pytest.MonkeyPatch.context() as mp:
                for module in (fast_threads, fast_elementwise):
                    mp.setattr(module, "SPLIT_MIN_FLOPS", least)
                got[how] = runtime.Session(g).run({"x": x})[y]
        np.testing.assert_array_equal(got["threads"], got["inline"], err_msg=f"far image {far}")
        want = runtime.Session(g, plan="reference").run({"x": x})[y]
        assert_close(got["inline"], want, rtol=1e-5, atol=5e-5, what=f"far image {far}")


@pytest.mark.parametrize("batch", [3, 4, 7])
def test_norm_fused_pool_prelu_slope_as_one_images_row(split, batch, monkeypatch):
    """The PReLU after a fused pool takes its per-channel slope as one image's row from
    ROW_MIN_IMAGES images (`UnaryStep._row`, here with ROW_MIN_ELEMENTS lowered to the odd
    shape's size, and the batch-1 path off: its sizes are under the default): the same bits
    as the unfused plan (the pool commutes with the monotone affine and PReLU), the plain
    kernels' values within the fused norm tests' bound."""
    rng = np.random.default_rng(51)
    shape = (6, 10, 14)
    g, y = _norm_act_pool_graph("GroupNormalization", shape, 3, "PRelu", "mixed", (2, 2), rng)
    monkeypatch.setattr(fast_elementwise, "ROW_MIN_ELEMENTS", 64)
    monkeypatch.setattr(fast_elementwise, "FUSED_POOL_INLINE_BYTES", 0)  # (the general path)
    rows = []
    real = fast_elementwise.UnaryStep._row

    def spy(run, k, p, x):
        out = real(run, k, p, x)
        rows.append(out.shape)
        return out

    monkeypatch.setattr(fast_elementwise.UnaryStep, "_row", staticmethod(spy))
    x = (100.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
    got = runtime.Session(g).run({"x": x})[y]
    assert rows == [(6, 5, 7) if batch >= fast_elementwise.ROW_MIN_IMAGES else (6, 1, 1)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_compile.CompiledPlan, "_fuse_norm_pool", lambda *a: None)
        np.testing.assert_array_equal(got, runtime.Session(g).run({"x": x})[y])
    want = runtime.Session(g, plan="reference").run({"x": x})[y]
    assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"batch {batch}")


@pytest.mark.parametrize(
    "pool, fused, pad_only",  # (pad_only: a height where some window holds padding only)
    [
        ({"kernel_shape": [2, 1], "pads": [1, 0, 1, 0], "dilations": [2, 1]}, False, 1),
        ({"kernel_shape": [2, 1], "pads": [1, 0, 1, 0]}, True, 0),  # (an empty plane)
    ],
)
@pytest.mark.parametrize("act, arg", [("Relu", None), ("Elu", 1.0), ("PRelu", "mixed")])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the plain norm of an empty plane)
def test_norm_pool_fusion_leaves_windows_of_padding_only_at_minus_inf(
    pool, fused, pad_only, act, arg
):
    """A pool window over padding only holds -inf (the plain MaxPool, onnx.reference), which
    an activation moved after the pool would turn into f(-inf) (0 for Relu, -1 for Elu).
    With pads narrower than the kernel (the graph refuses others) such windows need a dilated
    pool (not fused, nor ceil_mode pools: the plan cannot rule them out for spatial sizes
    known only at run time) or an empty plane (checked per run); found by review: the fused
    plan gave 0 / -1 / nan there."""
    rng = np.random.default_rng(49)
    g = Graph("pad_only")
    g.add_input("x", (None, 4, None, None), "float32")
    g.add_param("scale", rng.uniform(0.5, 1.5, (4,)).astype(np.float32))
    g.add_param("bias", rng.normal(0.0, 1.0, (4,)).astype(np.float32))
    attrs = {"epsilon": 1e-5}
    out = g.add_node("InstanceNormalization", ["x", "scale", "bias"], attrs, name="norm").outputs[0]
    a = _activation(g, out, act, arg, (4, 1, 1), rng).outputs[0]
    y = g.add_node("MaxPool", [a], pool, name="pool").outputs[0]
    g.mark_output(y)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    assert ("MaxPool" not in [r["op"] for r in rows]) == fused
    for h in dict.fromkeys((pad_only, 1, 4)):
        x = rng.standard_normal((2, 4, h, 6)).astype(np.float32)
        got = sess.run({"x": x})[y]
        want = runtime.Session(g, plan="reference").run({"x": x})[y]
        assert got.shape == want.shape
        assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"H {h}"
        if h == pad_only:
            assert np.isneginf(want).any()  # (the case at stake is there)
        finite = np.isfinite(want)
        assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5, what=f"H {h}")


def test_norm_pool_fusion_follows_prelu_slopes_and_scales_set_after_compiling():
    """The plan decides per run whether PReLU commutes with the pool: slopes set negative
    after the plan was compiled (set_param) put the activation before the pool again, and a
    negative scale the affine (a group norm's affine runs on the pooled values too); a slope
    varying along a spatial axis keeps the pool a step of its own (it would not broadcast
    against the pooled values)."""
    rng = np.random.default_rng(48)
    g, y = _norm_act_pool_graph("GroupNormalization", (6, 8, 10), 3, "PRelu", "mixed", (2, 2), rng)
    sess = runtime.Session(g)
    x = rng.standard_normal((2, 6, 8, 10)).astype(np.float32)
    scale = g.params["scale"]
    for slope, sign in ((0.5, 1), (-0.5, 1), (0.5, -1), (-3.0, -1), (2.0, 1)):
        g.set_param("slope", np.full((6, 1, 1), slope, np.float32))
        g.set_param("scale", (sign * scale).astype(np.float32))  # (max and min then swap)
        got = sess.run({"x": x})[y]
        want = runtime.Session(g, plan="reference").run({"x": x})[y]
        assert_close(got, want, rtol=1e-5, atol=1e-5, what=f"slope {slope}, scale {sign}")
    assert "act+pool" in sess.describe()
    g2, y2 = _norm_act_pool_graph(
        "GroupNormalization", (6, 8, 10), 3, "PRelu", "mixed", (2, 2), rng
    )
    g2.set_param("slope", rng.uniform(0.1, 0.9, (6, 8, 10)).astype(np.float32))
    rows = runtime.Session(g2)._fast(training=False, keep_all=False).describe()
    assert [r["op"] for r in rows] == ["GroupNormalization", "MaxPool"]
    assert rows[0]["fused"] == ["act"]
    got = runtime.Session(g2).run({"x": x})[y2]
    want = runtime.Session(g2, plan="reference").run({"x": x})[y2]
    assert_close(got, want, rtol=1e-5, atol=1e-5, what="spatial slope")


@pytest.mark.parametrize(
    "op, shape, arg, act, act_arg",
    [
        ("GroupNormalization", (6, 10, 14), 3, "PRelu", "mixed"),
        ("InstanceNormalization", (5, 8, 6), None, "Elu", 1.0),  # (a 2 x 2 pool tiles it)
    ],
)
def test_bound_group_norm_reads_parameters_set_between_runs(op, shape, arg, act, act_arg):
    """`_small_group`'s bound calls read the scale and bias arrays each run and bind again to
    new ones: batch 1 with scale and bias set (set_param) between runs, to new values, back to
    old ones, to the same values as new arrays, then a run at batch 2 and back at 1: each output
    bit-equal to the session without bound calls (BIND_CALLS False: the same operations) and
    close to the reference plan (the fused norm tests' bound; scales > 0: the affine runs on
    the pooled values, the path that binds)."""
    rng = np.random.default_rng(61)
    g, y = _norm_act_pool_graph(op, shape, arg, act, act_arg, (2, 2), rng, scaled=True)
    _set_param_runs(g, y, shape, rng, (1, 1, 1, 1, 1, 2, 1, 1), (1, 3), (4, "scale"), "_bound")


@pytest.mark.parametrize(
    "shape, act, act_arg",
    [((4, 6, 8), "LeakyRelu", 0.1), ((4, 6, 8), "Elu", 1.0), ((7,), "PRelu", "mixed")],
)
def test_bound_layer_norm_of_one_row(shape, act, act_arg):
    """`_one_row`'s bound calls (a layer norm over one image whose input and output are pooled
    values: the same buffers every replayed run): one session at batch 1 -> 1 -> 2 -> 1 -> 1 with
    scale and bias set (set_param) to new values, back, and to the same values as new arrays
    between runs; each output bit-equal to the session without bound calls (BIND_CALLS False:
    the same operations) and close to the reference plan (the fused norm tests' bound)."""
    rng = np.random.default_rng(62)
    g = Graph("layer_norm_row")
    g.add_input("x", (None, *shape), "float32")
    pshape, attrs = _norm_attrs("LayerNormalization", shape, 1)
    g.add_param("scale", rng.uniform(0.5, 1.5, pshape).astype(np.float32))
    g.add_param("bias", rng.normal(0.0, 1.0, pshape).astype(np.float32))
    g.add_param("k", np.float32(1.5))
    h = g.add_node("Mul", ["x", "k"], {}, name="pre").outputs[0]  # (a pooled input, not a feed)
    out = g.add_node("LayerNormalization", [h, "scale", "bias"], attrs, name="norm").outputs[0]
    node = _activation(g, out, act, act_arg, shape, rng)
    y = g.add_node("Mul", [node.outputs[0], "k"], {}, name="mul").outputs[0]
    g.mark_output(y)
    _set_param_runs(g, y, shape, rng, (1, 1, 1, 2, 1, 1, 1), (1, 4), (5, "bias"), "_row")


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize(
    "slopes",
    [(np.nan, 0.5, 2.0), (-np.inf, 0.5, 0.25), (np.inf, 0.5, 2.0), (np.inf, np.inf, np.inf)],
    ids=["nan", "-inf <= 1", "inf mixed", "all inf"],
)
def test_prelu_non_finite_slopes_keep_x_where_x_is_not_negative(slopes, norm):
    """ONNX's PRelu is x where x >= 0 whatever the slope; the fast step's max(x, s * x),
    min(x, s * x) and relu(x) + s * min(x, 0) gave NaN there for an inf or NaN slope (inf * 0;
    a read-only review's repro). Oracle: the formula np.where(x < 0, s * x, x) in float64 and
    the reference plan, alone and after a GroupNormalization (its fused activation)."""
    g = Graph("prelu_nonfinite")
    g.add_input("x", (None, 3, 2, 2))
    src = "x"
    if norm:
        g.add_param("gs", np.ones(3, np.float32))
        g.add_param("gb", np.zeros(3, np.float32))
        src = g.add_node("GroupNormalization", ["x", "gs", "gb"], {"num_groups": 3}, name="gn")
        src = src.outputs[0]
    g.add_param("slope", np.array(slopes, np.float32).reshape(3, 1, 1))
    y = g.add_node("PRelu", [src, "slope"], {}, name="act").outputs[0]
    g.mark_output(g.add_node("Relu", [y], {}, name="r").outputs[0])  # (PRelu not an output)
    x = np.array([[1.0, 0.0], [2.0, -1.0]], np.float32)[None, None].repeat(3, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        fast = runtime.Session(g).run({"x": x}, keep_all=False)
        pre = runtime.Session(g, plan="reference").run({"x": x}, keep_all=True)
        ref = {k: pre[k] for k in fast}
        z = pre[src].astype(np.float64)
        s = np.array(slopes, np.float64).reshape(3, 1, 1)
        want = np.maximum(np.where(z < 0, s * z, z), 0)
    for k, v in fast.items():
        np.testing.assert_allclose(v, want, rtol=1e-6, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(v, ref[k], rtol=1e-6, atol=1e-6, equal_nan=True)


def _set_param_runs(g, y, shape, rng, batches, new, same, attr):
    """Runs `batches` (batch sizes) on one session with bound calls and one without
    (BIND_CALLS False): new scale and bias values before the runs in `new`, the first ones back
    before the run after the first of them, and at run same[0] parameter same[1]'s values in a
    new array. Each output equal bit for bit between the sessions and close to the reference
    plan; some run took the bound path (a step with `attr` set), the unbound session never."""
    on, off = runtime.Session(g), runtime.Session(g)
    reference = runtime.Session(g, plan="reference")
    scale0, bias0 = g.params["scale"], g.params["bias"]
    bound = 0
    for k, batch in enumerate(batches):
        if k in new:
            g.set_param("scale", rng.uniform(0.25, 2.0, scale0.shape).astype(np.float32))
            g.set_param("bias", rng.normal(0.0, 3.0, bias0.shape).astype(np.float32))
        elif k == new[0] + 1:
            g.set_param("scale", scale0)
            g.set_param("bias", bias0)
        elif k == same[0]:  # (the same values, new arrays)
            g.set_param(same[1], g.params[same[1]].copy())
        x = (50.0 + rng.standard_normal((batch, *shape))).astype(np.float32)
        got = on.run({"x": x})[y]
        fast_base.BIND_CALLS = False
        try:
            plain = off.run({"x": x})[y]
        finally:
            fast_base.BIND_CALLS = True
        np.testing.assert_array_equal(got, plain, err_msg=f"run {k}")
        want = reference.run({"x": x})[y]
        assert_close(got, want, rtol=1e-5, atol=5e-5, what=f"run {k}")
        steps = on._fast(training=False, keep_all=False).steps
        bound += any(getattr(s, attr, None) is not None for s in steps)
    off_steps = off._fast(training=False, keep_all=False).steps
    assert not any(getattr(s, attr, None) is not None for s in off_steps)
    assert bound, "the bound path was never taken: the test would be vacuous"
