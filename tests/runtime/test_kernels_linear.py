"""Linear family: Gemm, MatMul, Maxout and the DSL's Linear/FC and Maxout layers.

Each kernel is checked against a plain reference written here (explicit sums of products, a loop
over Maxout's pieces) and against onnxruntime on our export; imports are checked against
onnxruntime on the original ONNX model at opsets 9, 11, 13 and 21.

Exactness trick for the reference checks: inputs drawn as small integers (and alpha/beta powers of
two) make every float32 product and partial sum exact, so the kernel must match the reference
bit for bit whatever order BLAS sums in; the tolerances below are the standard float32 ones.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import graphnet
from graphnet import ops, runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import Graph, Value
from graphnet.nn import FC, Flatten, Linear, Maxout, Network, Sequential
from tests.helpers import (
    ATOL32,
    ATOL64,
    RTOL32,
    RTOL64,
    assert_close,
    compare_with_ort,
    export_checked,
    ort_run,
    rand,
    single_node,
)

RNG = np.random.default_rng


def ints(
    rng: np.random.Generator, *shape: int, dtype: str = "float32", lo: int = -4, hi: int = 4
) -> np.ndarray:
    """Integer-valued floats: products and sums of these are exact in float32."""
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


# ------------------------------------------------------------------------- references (plain)
def gemm_ref(a, b, c, alpha, beta, trans_a, trans_b):
    """ONNX's formula written out: Y[i, j] = alpha * sum_k A'[i, k] B'[k, j] + beta * C[i, j]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ap = a.T if trans_a else a
    bp = b.T if trans_b else b
    m, k = ap.shape
    n = bp.shape[1]
    y = np.zeros((m, n))
    for kk in range(k):  # one rank-1 update per k: an explicit sum of products
        y += np.outer(ap[:, kk], bp[kk, :])
    y *= alpha
    if c is not None:
        y += beta * np.broadcast_to(np.asarray(c, np.float64), (m, n))
    return y


def matmul_ref(a, b):
    """numpy.matmul's semantics spelled out: promote 1-D, broadcast the batch, sum per (i, j)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a2 = a64[None, :] if a64.ndim == 1 else a64
    b2 = b64[:, None] if b64.ndim == 1 else b64
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = np.broadcast_to(a2, batch + a2.shape[-2:])
    b2 = np.broadcast_to(b2, batch + b2.shape[-2:])
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    out = np.zeros(batch + (m, n))
    for idx in np.ndindex(*batch):
        for i in range(m):
            for j in range(n):
                out[idx + (i, j)] = sum(a2[idx + (i, kk)] * b2[idx + (kk, j)] for kk in range(k))
    if b64.ndim == 1:
        out = out[..., 0]
    if a64.ndim == 1:
        out = out[..., 0, :] if b64.ndim > 1 else out[..., 0]
    return out


def maxout_ref(x, w, b):
    """Maxout (docs/formulas.md): max(w1.x + b1, ..., wk.x + bk), one affine piece at a time."""
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    best = None
    for j in range(w64.shape[0]):
        piece = x64 @ w64[j].T + (0.0 if b is None else np.asarray(b, np.float64)[j])
        best = piece if best is None else np.maximum(best, piece)
    return best


# --------------------------------------------------------------------------------------- Gemm
C_SHAPES = {
    "none": None,
    "scalar": (),
    "one": (1,),
    "row": ("N",),
    "col": ("M", 1),
    "full": ("M", "N"),
}
ALPHA_BETA = [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0)]


def _c_shape(kind, m, n):
    shape = C_SHAPES[kind]
    return None if shape is None else tuple({"M": m, "N": n}.get(d, d) for d in shape)


def _gemm_graph(a, b, c, attrs, dtype="float32"):
    params = {"B": b}
    if c is not None:
        params["C"] = c
    return single_node("Gemm", {"A": a.shape}, params, attrs, dtype=dtype)


@pytest.mark.parametrize("trans_a, trans_b", list(itertools.product((0, 1), (0, 1))))
@pytest.mark.parametrize("alpha, beta", ALPHA_BETA)
@pytest.mark.parametrize("c_kind", list(C_SHAPES))
def test_gemm_matches_formula_and_onnxruntime(trans_a, trans_b, alpha, beta, c_kind):
    rng = RNG(hash((trans_a, trans_b, alpha, beta, c_kind)) % 2**32)
    m, k, n = 3, 5, 4
    a = ints(rng, *((k, m) if trans_a else (m, k)))
    b = ints(rng, *((n, k) if trans_b else (k, n)))
    cs = _c_shape(c_kind, m, n)
    c = None if cs is None else ints(rng, *cs)
    attrs = {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b}
    g = _gemm_graph(a, b, c, attrs)
    ours = runtime.run(g, {"A": a})["gemm.out"]
    assert ours.dtype == np.float32 and ours.shape == (m, n)
    assert_close(ours, gemm_ref(a, b, c, alpha, beta, trans_a, trans_b), what="Gemm vs formula")
    # Real-valued data against onnxruntime: K = 5 keeps float32 summation-order effects < atol.
    a_r = rand(rng, *a.shape)
    g_r = _gemm_graph(a_r, rand(rng, *b.shape), None if c is None else rand(rng, *c.shape), attrs)
    compare_with_ort(g_r, {"A": a_r})


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 6),
    k=st.integers(1, 9),
    n=st.integers(1, 6),
    trans_a=st.sampled_from((0, 1)),
    trans_b=st.sampled_from((0, 1)),
    alpha=st.sampled_from((1.0, 2.0, -0.25)),
    beta=st.sampled_from((1.0, 0.5, -4.0)),
    c_kind=st.sampled_from(sorted(C_SHAPES)),
    seed=st.integers(0, 2**16),
)
def test_gemm_random_shapes_exact(m, k, n, trans_a, trans_b, alpha, beta, c_kind, seed):
    rng = RNG(seed)
    a = ints(rng, *((k, m) if trans_a else (m, k)))
    b = ints(rng, *((n, k) if trans_b else (k, n)))
    cs = _c_shape(c_kind, m, n)
    c = None if cs is None else ints(rng, *cs)
    g = _gemm_graph(a, b, c, {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b})
    ours = runtime.run(g, {"A": a})["gemm.out"]
    assert_close(ours, gemm_ref(a, b, c, alpha, beta, trans_a, trans_b), what="Gemm vs formula")


@pytest.mark.parametrize("alpha, beta", [(0.25, 1.5), (0.3, 1.7)])
def test_gemm_float64_keeps_dtype(alpha, beta):
    rng = RNG(1)
    a, b, c = rng.standard_normal((4, 6)), rng.standard_normal((3, 6)), rng.standard_normal((3,))
    g = _gemm_graph(a, b, c, {"transB": 1, "alpha": alpha, "beta": beta}, dtype="float64")
    ours = runtime.run(g, {"A": a})["gemm.out"]
    assert ours.dtype == np.float64
    # ONNX's alpha/beta are float32 attributes: 0.3 means float32(0.3) even on float64 data, and
    # onnxruntime computes with that; the kernel does the same so export and runtime agree.
    a32, b32 = float(np.float32(alpha)), float(np.float32(beta))
    assert_close(ours, gemm_ref(a, b, c, a32, b32, 0, 1), rtol=RTOL64, atol=ATOL64)
    compare_with_ort(g, {"A": a}, rtol=RTOL64, atol=ATOL64)


def test_gemm_dynamic_batch_shape_and_macs():
    g = Graph("g")
    g.add_input("x", (None, 8))
    g.add_param("w", np.zeros((5, 8), np.float32))
    g.add_node("Gemm", ["x", "w"], {"transB": 1}, name="fc")
    assert g.values["fc.out"].shape == (None, 5)
    spec = ops.get("Gemm")
    macs = spec.macs(
        [Value("x", (2, 8)), Value("w", (5, 8))], [Value("y", (2, 5))], {"transA": 0, "transB": 1}
    )
    assert macs == 2 * 5 * 8
    macs_t = spec.macs(
        [Value("a", (8, 2)), Value("b", (8, 5))], [Value("y", (2, 5))], {"transA": 1, "transB": 0}
    )
    assert macs_t == 2 * 5 * 8


@pytest.mark.parametrize(
    "a_shape, b_shape, c_shape, attrs, error, words",
    [
        (
            (3, 4),
            (5, 6),
            None,
            {},
            ShapeError,
            ["'gemm' (Gemm)", "A(3,4) has K=4", "B(5,6) has K=5"],
        ),
        ((3, 4), (6, 5), None, {"transB": 1}, ShapeError, ["B(6,5) (transB=1) has K=5"]),
        ((3, 4), (4, 5), (3, 2), {}, ShapeError, ["C(3,2) does not broadcast", "(3,5)"]),
        ((3, 4), (4, 5), (2, 3, 5), {}, ShapeError, ["C(2,3,5) does not broadcast"]),
        ((3, 4, 1), (4, 5), None, {}, ShapeError, ["A 'A' must have rank 2", "(3,4,1)"]),
        ((3, 4), (4, 5), None, {"transA": 2}, AttributeValueError, ["transA must be 0 or 1"]),
    ],
)
def test_gemm_bad_input_names_node_and_shapes(a_shape, b_shape, c_shape, attrs, error, words):
    params = {"B": np.zeros(b_shape, np.float32)}
    if c_shape is not None:
        params["C"] = np.zeros(c_shape, np.float32)
    with pytest.raises(error) as info:
        single_node("Gemm", {"A": a_shape}, params, attrs)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_gemm_dtype_mismatch_and_int_rejected():
    with pytest.raises(ShapeError, match="dtypes differ: 'A' is float32, 'B' is float64"):
        single_node("Gemm", {"A": (2, 3)}, {"B": np.zeros((3, 2))})
    with pytest.raises(ShapeError, match="must be a float tensor, got int64"):
        single_node("Gemm", {"A": (2, 3)}, {"B": np.zeros((3, 2), np.int64)}, dtype="int64")


# ------------------------------------------------------------------------------------- MatMul
MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (4, 5)),
    ((4,), (2, 4, 5)),
    ((3, 4), (4,)),
    ((2, 3, 4), (4,)),
    ((4,), (4,)),
    ((1, 4), (4, 1)),
]


@pytest.mark.parametrize(
    "a_shape, b_shape", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES]
)
def test_matmul_matches_reference_and_onnxruntime(a_shape, b_shape):
    rng = RNG(len(a_shape) * 10 + len(b_shape))
    a, b = ints(rng, *a_shape), ints(rng, *b_shape)
    g = single_node("MatMul", {"A": a_shape, "B": b_shape})
    expected = matmul_ref(a, b)
    assert (
        g.values["matmul.out"].shape == expected.shape
    )  # shape inference agrees with the semantics
    ours = runtime.run(g, {"A": a, "B": b})["matmul.out"]
    assert ours.dtype == np.float32
    assert_close(ours, expected, what="MatMul vs reference")
    a_r, b_r = rand(rng, *a_shape), rand(rng, *b_shape)
    compare_with_ort(g, {"A": a_r, "B": b_r})


def test_matmul_int64_and_float64():
    rng = RNG(3)
    a, b = rng.integers(-9, 9, (2, 3, 4)), rng.integers(-9, 9, (4, 2))
    g = single_node("MatMul", {"A": a.shape, "B": b.shape}, dtype="int64")
    ours = runtime.run(g, {"A": a, "B": b})["matmul.out"]
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, matmul_ref(a, b).astype(np.int64))
    compare_with_ort(g, {"A": a, "B": b}, rtol=0, atol=0)
    a64, b64 = rng.standard_normal((3, 5)), rng.standard_normal((5, 2))
    g64 = single_node("MatMul", {"A": a64.shape, "B": b64.shape}, dtype="float64")
    assert_close(
        runtime.run(g64, {"A": a64, "B": b64})["matmul.out"],
        matmul_ref(a64, b64),
        rtol=RTOL64,
        atol=ATOL64,
    )


def test_matmul_dynamic_batch_and_macs():
    g = Graph("g")
    g.add_input("x", (None, 7, 8))
    g.add_param("w", np.zeros((8, 3), np.float32))
    g.add_node("MatMul", ["x", "w"], name="mm")
    assert g.values["mm.out"].shape == (None, 7, 3)
    macs = ops.get("MatMul").macs(
        [Value("x", (2, 7, 8)), Value("w", (8, 3))], [Value("y", (2, 7, 3))], {}
    )
    assert macs == 2 * 7 * 3 * 8


@pytest.mark.parametrize(
    "a_shape, b_shape, words",
    [
        ((3, 4), (5, 6), ["'matmul' (MatMul)", "A(3,4) has 4 columns but B(5,6) has 5 rows"]),
        ((2, 3, 4), (3, 4, 5), ["batch dims of A(2,3,4) and B(3,4,5) do not broadcast"]),
        ((4,), (5,), ["A(4) has 4 columns but B(5) has 5 rows"]),
        ((), (3,), ["is a scalar"]),
    ],
)
def test_matmul_bad_shapes(a_shape, b_shape, words):
    with pytest.raises(ShapeError) as info:
        single_node("MatMul", {"A": a_shape, "B": b_shape})
    for w in words:
        assert w in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------- Maxout
def _maxout_graph(x_shape, w, b, pieces=None):
    params = {"W": w}
    if b is not None:
        params["B"] = b
    return single_node(
        "Maxout", {"X": x_shape}, params, {"pieces": w.shape[0] if pieces is None else pieces}
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    n_in=st.integers(1, 8),
    n_out=st.integers(1, 6),
    k=st.integers(1, 4),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_maxout_matches_lecture_formula(n, n_in, n_out, k, bias, seed):
    rng = RNG(seed)
    x, w = ints(rng, n, n_in), ints(rng, k, n_out, n_in)
    b = ints(rng, k, n_out) if bias else None
    ours = runtime.run(_maxout_graph(x.shape, w, b), {"X": x})["maxout.out"]
    assert ours.dtype == np.float32
    assert_close(ours, maxout_ref(x, w, b), what="Maxout vs max over pieces")


@pytest.mark.parametrize("opset", [17, 18, 21])  # ReduceMax's axes: attribute < 18 <= input
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_maxout_export_matches_onnxruntime(opset, bias, k):
    rng = RNG(opset * 10 + k)
    w = rand(rng, k, 4, 6)
    b = rand(rng, k, 4) if bias else None
    g = Graph("maxout")
    g.add_input("X", (None, 6))  # dynamic batch: the export's Reshape must keep it (0 in the shape)
    g.add_param("W", w)
    inputs = ["X", "W"]
    if bias:
        g.add_param("B", b)
        inputs.append("B")
    g.add_node("Maxout", inputs, {"pieces": k}, name="mx")
    g.mark_output("mx.out")
    model = export_checked(g, opset=opset)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Reshape", "ReduceMax"]
    # W and B are read by this node only: rewritten in place as (k*out, in) and (k*out,), no copy.
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert inits["W"] == (k * 4, 6) and inits.get("B", (k * 4,)) == (k * 4,)
    assert len(inits) == 2 + bias + (opset >= 18)  # W, B?, the Reshape target, ReduceMax axes (18+)
    for batch in (1, 5):
        x = rand(rng, batch, 6)
        theirs = ort_run(model, {"X": x})["mx.out"]
        ours = runtime.run(g, {"X": x})["mx.out"]
        assert_close(ours, theirs, what="Maxout vs onnxruntime")
        assert_close(ours, maxout_ref(x, w, b), what="Maxout vs max over pieces")


def test_maxout_export_with_shared_or_input_weights_reshapes_in_graph():
    """A weight read by two nodes (or fed as a graph input) cannot be rewritten in place: the
    export reshapes it with a Reshape node instead."""
    rng = RNG(7)
    g = Graph("shared")
    g.add_input("X", (None, 5))
    g.add_input("W", (3, 2, 5))
    g.add_param("B", rand(rng, 3, 2))
    g.add_node("Maxout", ["X", "W", "B"], {"pieces": 3}, name="m1")
    g.add_node("Maxout", ["X", "W", "B"], {"pieces": 3}, name="m2")
    g.add_node("Add", ["m1.out", "m2.out"], name="sum")
    g.mark_output("sum.out")
    feeds = {"X": rand(rng, 4, 5), "W": rand(rng, 3, 2, 5)}
    model = export_checked(g)
    assert (
        sum(n.op_type == "Reshape" for n in model.graph.node) == 2 + 2 + 2
    )  # W, B, pieces per node
    theirs = ort_run(model, feeds)["sum.out"]
    ours = runtime.run(g, feeds)["sum.out"]
    assert_close(ours, theirs, what="shared-weight Maxout vs onnxruntime")
    assert_close(ours, 2 * maxout_ref(feeds["X"], feeds["W"], g.params["B"]), what="vs formula")


def test_maxout_macs():
    spec = ops.get("Maxout")
    macs = spec.macs(
        [Value("x", (2, 6)), Value("w", (3, 4, 6)), None], [Value("y", (2, 4))], {"pieces": 3}
    )
    assert macs == 2 * 3 * 4 * 6


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, pieces, error, words",
    [
        (
            (2, 6),
            (3, 4, 6),
            None,
            2,
            ShapeError,
            ["'maxout' (Maxout)", "W(3,4,6) holds 3 pieces but pieces=2"],
        ),
        ((2, 5), (3, 4, 6), None, 3, ShapeError, ["W(3,4,6) takes 6 inputs but X(2,5) has 5"]),
        ((2, 6), (3, 4, 6), (3, 5), 3, ShapeError, ["B(3,5) must have shape (3,4)"]),
        ((2, 6, 1, 1), (3, 4, 6), None, 3, ShapeError, ["X 'X' must have rank 2", "(2,6,1,1)"]),
        ((2, 6), (3, 4, 6), None, 0, AttributeValueError, ["pieces must be a positive int"]),
    ],
)
def test_maxout_bad_input(x_shape, w_shape, b_shape, pieces, error, words):
    w = np.zeros(w_shape, np.float32)
    b = None if b_shape is None else np.zeros(b_shape, np.float32)
    with pytest.raises(error) as info:
        _maxout_graph(x_shape, w, b, pieces)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_maxout_requires_pieces():
    with pytest.raises(AttributeValueError, match=r"required attribute\(s\) \['pieces'\]"):
        single_node("Maxout", {"X": (2, 3)}, {"W": np.zeros((2, 4, 3), np.float32)})


# ------------------------------------------------------------------------------------- import
def _model(node, inputs, outputs, inits, opset):
    graph = helper.make_graph([node], "m", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check_import(model, feeds, ops_expected, rtol=RTOL32, atol=ATOL32):
    g = graphnet.load(model)
    assert [n.op for n in g.nodes] == ops_expected
    ours = runtime.run(g, feeds)
    theirs = ort_run(model, feeds)
    for name, arr in theirs.items():
        assert_close(
            ours[name], arr, rtol=rtol, atol=atol, what=f"imported '{name}' vs onnxruntime"
        )
    return g


# C is a required input before opset 11, optional from 11 on.
GEMM_IMPORT_CASES = [
    (opset, c_shape)
    for opset in (9, 11, 13, 21)
    for c_shape in ([None] if opset >= 11 else []) + [(), (4,), (3, 1), (3, 4)]
]


@pytest.mark.parametrize("opset, c_shape", GEMM_IMPORT_CASES)
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 1), (0, 1)])
def test_import_gemm(opset, c_shape, trans_a, trans_b):
    rng = RNG(opset)
    a = rand(rng, *((5, 3) if trans_a else (3, 5)))
    b = rand(rng, *((4, 5) if trans_b else (5, 4)))
    inits = [onnx.numpy_helper.from_array(b, "B")]
    names = ["A", "B"]
    if c_shape is not None:
        inits.append(onnx.numpy_helper.from_array(rand(rng, *c_shape), "C"))
        names.append("C")
    node = helper.make_node(
        "Gemm", names, ["Y"], alpha=0.75, beta=-1.25, transA=trans_a, transB=trans_b
    )
    model = _model(node, [_f32("A", a.shape)], [_f32("Y", (3, 4))], inits, opset)
    g = _check_import(model, {"A": a}, ["Gemm"])
    assert g.node("Y").attrs == {"alpha": 0.75, "beta": -1.25, "transA": trans_a, "transB": trans_b}


@pytest.mark.parametrize("broadcast, c_shape", [(1, (4,)), (1, ()), (1, (3, 1)), (0, (3, 4))])
def test_import_gemm_opset6_broadcast_attribute(broadcast, c_shape):
    """Gemm-6's `broadcast` only allowed what Gemm-7+ always does (with 0, C is already (M, N)):
    dropped on import. Checked against the formula (onnxruntime has no Gemm-6 kernel)."""
    rng = RNG(6 + len(c_shape))
    a, b, c = rand(rng, 3, 5), rand(rng, 4, 5), rand(rng, *c_shape)
    node = helper.make_node(
        "Gemm", ["A", "B", "C"], ["Y"], alpha=0.5, beta=2.0, transB=1, broadcast=broadcast
    )
    inits = [onnx.numpy_helper.from_array(b, "B"), onnx.numpy_helper.from_array(c, "C")]
    inputs = [
        _f32("A", a.shape),
        _f32("B", b.shape),
        _f32("C", c_shape),
    ]  # IR 3: initializers are inputs
    graph = helper.make_graph([node], "m", inputs, [_f32("Y", (3, 4))], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    onnx.checker.check_model(model, full_check=True)
    g = graphnet.load(model)
    assert [(n.op, n.attrs) for n in g.nodes] == [
        ("Gemm", {"alpha": 0.5, "beta": 2.0, "transB": 1})
    ]
    assert_close(runtime.run(g, {"A": a})["Y"], gemm_ref(a, b, c, 0.5, 2.0, 0, 1), what="Gemm-6")


def test_import_gemm_defaults_and_round_trip():
    rng = RNG(2)
    node = helper.make_node("Gemm", ["A", "B"], ["Y"], name="fc")
    inits = [onnx.numpy_helper.from_array(rand(rng, 5, 4), "B")]
    model = _model(node, [_f32("A", ("N", 5))], [_f32("Y", ("N", 4))], inits, 13)
    g = _check_import(model, {"A": rand(rng, 2, 5)}, ["Gemm"])
    assert g.values["Y"].shape == ("N", 4)
    again = graphnet.load(export_checked(g))
    x = rand(rng, 3, 5)
    assert_close(
        runtime.run(again, {"A": x})["Y"], ort_run(model, {"A": x})["Y"], what="round trip"
    )


def test_import_int_gemm_stays_opaque():
    node = helper.make_node("Gemm", ["A", "B"], ["Y"])
    i64 = TensorProto.INT64
    graph = helper.make_graph(
        [node],
        "m",
        [
            helper.make_tensor_value_info("A", i64, (2, 3)),
            helper.make_tensor_value_info("B", i64, (3, 2)),
        ],
        [helper.make_tensor_value_info("Y", i64, (2, 2))],
    )
    g = graphnet.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert [n.op for n in g.nodes] == ["Opaque"]  # integer Gemm has no IR form: kept verbatim


@pytest.mark.parametrize("opset", [9, 11, 13, 21])
@pytest.mark.parametrize(
    "a_shape, b_shape", [((2, 3, 4), (4, 5)), ((4,), (2, 4, 3)), ((3, 4), (4,))]
)
def test_import_matmul(opset, a_shape, b_shape):
    rng = RNG(opset)
    out_shape = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    model = _model(
        node, [_f32("A", a_shape), _f32("B", b_shape)], [_f32("Y", out_shape)], [], opset
    )
    _check_import(model, {"A": rand(rng, *a_shape), "B": rand(rng, *b_shape)}, ["MatMul"])


# ---------------------------------------------------------------------------------------- DSL
def test_linear_is_gemm_with_pytorch_layout_and_init():
    net = Network("fc", seed=3)
    x = net.input("x", (None, 12))
    net.output(Linear(7)(x), name="y")
    g = net.graph
    (node,) = g.nodes
    assert (node.op, node.name, node.attrs) == ("Gemm", "fc1", {"transB": 1})
    w, b = g.params["fc1.W"], g.params["fc1.B"]
    assert w.shape == (7, 12) and b.shape == (7,) and w.dtype == b.dtype == np.float32
    bound = 1 / np.sqrt(12)  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert np.all(np.abs(w) <= bound) and np.all(np.abs(b) <= bound)
    assert w.std() > bound / 4  # really drawn, not zeros
    x_val = rand(RNG(0), 4, 12)
    ours = runtime.run(g, {"x": x_val})["y"]
    assert_close(ours, gemm_ref(x_val, w, b, 1.0, 1.0, 0, 1), what="Linear vs x W^T + b")
    compare_with_ort(g, {"x": x_val})


def test_linear_without_bias_and_fc_alias():
    assert FC is Linear
    g = Sequential([Linear(3, bias=False)]).build((None, 4))
    (node,) = g.nodes
    assert len(node.inputs) == 2 and list(g.params) == ["fc1.W"]
    x = rand(RNG(1), 2, 4)
    assert_close(
        runtime.run(g, {"input": x})["output"], gemm_ref(x, g.params["fc1.W"], None, 1, 1, 0, 1)
    )


def test_mlp_with_flatten_linear_maxout_vs_onnxruntime():
    model = Sequential([Flatten(), Linear(32), Maxout(16, pieces=3), FC(10)])
    g = model.build((None, 4, 3, 3))
    assert [n.op for n in g.nodes] == ["Flatten", "Gemm", "Maxout", "Gemm"]
    assert g.values["output"].shape == ("N", 10)
    assert g.params["maxout1.W"].shape == (3, 16, 32) and g.params["maxout1.B"].shape == (3, 16)
    x = rand(RNG(5), 6, 4, 3, 3)
    # Chained dot products of length 36 and 32: float32 rounding order differs between ORT and
    # BLAS by a few ulps of the partial sums, hence atol 1e-5 instead of 1e-6.
    compare_with_ort(g, {"input": x}, atol=1e-5)


def test_shared_linear_reuses_parameters():
    net = Network("shared")
    a, b = net.input("a", (2, 5)), net.input("b", (3, 5))
    fc = Linear(4)
    net.output(fc(a), name="ya")
    net.output(fc(b), name="yb")
    assert list(net.graph.params) == ["fc1.W", "fc1.B"]
    compare_with_ort(net.graph, {"a": rand(RNG(0), 2, 5), "b": rand(RNG(1), 3, 5)})


def test_dsl_errors_name_the_layer():
    net = Network("errs")
    x4 = net.input("x", (None, 16, 4, 4))
    with pytest.raises(
        ShapeError, match=r"^fc1 \(Linear\): input has shape \(N,16,4,4\); add Flatten\(\) first$"
    ):
        Linear(10)(x4)
    with pytest.raises(
        ShapeError, match=r"maxout1 \(Maxout\): input has shape \(N,16,4,4\); add Flatten\(\) first"
    ):
        Maxout(10)(x4)
    x1 = net.input("v", (8,))
    with pytest.raises(
        ShapeError, match=r"classifier \(Linear\): input has shape \(8\); expected \(N, features\)"
    ):
        Linear(10, name="classifier")(x1)
    with pytest.raises(
        ShapeError,
        match=r"fc\d+ \(Linear\): input has shape \(2,u_1\); its feature count must be known",
    ):
        Linear(10)(net.input("u", (2, None)))
    # A layer reused on an input of another width: the Gemm's error names the layer's node.
    fc = Linear(3)
    fc(net.input("p", (2, 5)))
    with pytest.raises(
        ShapeError,
        match=r"node 'fc\d+_1' \(Gemm\): A\(2,6\) has K=6 but B\(3,5\) \(transB=1\) has K=5",
    ):
        fc(net.input("q", (2, 6)))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(AttributeValueError, match="out_features must be a positive int"):
            Linear(bad)
    with pytest.raises(AttributeValueError, match="pieces must be a positive int"):
        Maxout(4, pieces=0)
