"""Activation kernels (Relu, Sigmoid, Tanh, LeakyRelu, Elu, PRelu, Softmax, LogSoftmax): each is
compared with the formula of docs/formulas.md written plainly below (a Python loop over elements in
float64, independent of the NumPy kernels) and with onnxruntime on the exported single-node model.

Tolerances: float32 rtol 1e-5, atol 1e-6 (single element-wise ops and one-axis softmax); the
float64 reference is exact to ~1e-16, so every difference is float32 rounding in the kernel.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import AttributeValueError, Graph, ShapeError, runtime
from tests.helpers import (
    ATOL32,
    RTOL32,
    assert_close,
    compare_with_ort,
    export_checked,
    ort_run,
    single_node,
)

SETTINGS = settings(max_examples=20, deadline=None)


# ------------------------------------------------------------------- plain references (float64)
def _sigmoid(v: float) -> float:
    # 1 / (1 + exp(-v)); math.exp raises OverflowError above ~709, where the true value is
    # below 1e-300: 0.0 is the float64 answer.
    return 0.0 if -v > 700 else 1.0 / (1.0 + math.exp(-v))


SCALAR_REF = {
    "Relu": lambda v, a: max(0.0, v),
    "Sigmoid": lambda v, a: _sigmoid(v),
    "Tanh": lambda v, a: (
        2.0 * _sigmoid(2.0 * v) - 1.0
    ),  # the identity of docs/formulas.md, not math.tanh
    "LeakyRelu": lambda v, a: v if v >= 0 else a["alpha"] * v,
    "Elu": lambda v, a: v if v >= 0 else a["alpha"] * (math.exp(v) - 1.0),
}


def ref_elementwise(op: str, x: np.ndarray, attrs: dict) -> np.ndarray:
    f = SCALAR_REF[op]
    return np.array([f(float(v), attrs) for v in x.ravel()], dtype=np.float64).reshape(x.shape)


def ref_prelu(x: np.ndarray, slope_of) -> np.ndarray:
    """`slope_of(index)` gives the slope that applies at element `index`."""
    out = np.empty(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        v = float(x[idx])
        out[idx] = v if v >= 0 else float(slope_of(idx)) * v
    return out


def ref_softmax(x: np.ndarray, axis: int, log: bool = False) -> np.ndarray:
    """p_i = exp(l_i) / sum_k exp(l_k) along `axis`, one row at a time.
    exp(l_i - m)/sum exp(l_k - m) is the same number for any m; m = max keeps math.exp finite for
    logits in the thousands."""
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    out = np.empty(moved.shape, dtype=np.float64)
    for idx in np.ndindex(*moved.shape[:-1]):
        row = [float(v) for v in moved[idx]]
        m = max(row)
        total = math.fsum(math.exp(v - m) for v in row)
        out[idx] = [(v - m - math.log(total)) if log else math.exp(v - m) / total for v in row]
    return np.moveaxis(out, -1, axis)


def run_single(
    op: str, x: np.ndarray, attrs: dict | None = None, params: dict | None = None
) -> np.ndarray:
    g = single_node(op, {"x": x.shape}, params, attrs, dtype=str(x.dtype))
    return runtime.run(g, {"x": x})[g.outputs[0]]


@contextlib.contextmanager
def no_fp_warnings():
    """Overflow / invalid / divide-by-zero in NumPy raise inside this block, and warnings are
    errors."""
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


shapes = st.integers(2, 5).flatmap(lambda r: st.tuples(*[st.integers(1, 5)] * r))
ELEMENTWISE = [
    ("Relu", {}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("LeakyRelu", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("Elu", {}),
    ("Elu", {"alpha": 0.5}),
]
DEFAULT_ALPHA = {"LeakyRelu": 0.01, "Elu": 1.0}


# ------------------------------------------------------------------------- element-wise ops
@pytest.mark.parametrize("op, attrs", ELEMENTWISE, ids=[f"{o}{a}" for o, a in ELEMENTWISE])
@SETTINGS
@given(shape=shapes, scale=st.sampled_from([1.0, 30.0, 1000.0]), seed=st.integers(0, 2**31))
def test_elementwise_matches_formula_and_ort(op, attrs, shape, scale, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    full = {"alpha": DEFAULT_ALPHA.get(op)} | attrs
    with no_fp_warnings():  # large |x| must not overflow anywhere (sigmoid, elu's exp side)
        y = run_single(op, x, attrs)
    assert y.dtype == np.float32
    assert_close(y, ref_elementwise(op, x, full), what=f"{op} vs formula")
    g = single_node(op, {"x": shape}, attrs=attrs)
    compare_with_ort(g, {"x": x})


def test_sigmoid_saturates_exactly_at_huge_inputs():
    x = np.array([-1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30, -np.inf, np.inf], dtype=np.float32)
    with no_fp_warnings():
        y = run_single("Sigmoid", x)
    # sigmoid(-50) = 1.9e-22: the naive 1 - 1/(1+exp(-x)) family would round it to 0; atol=0 sees
    # that.
    assert_close(y, [0, 0, 1 / (1 + math.exp(50)), 0.5, 1, 1, 1, 0, 1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("op, attrs", ELEMENTWISE, ids=[f"{o}{a}" for o, a in ELEMENTWISE])
@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_elementwise_keeps_dtype(op, attrs, dtype):
    x = np.linspace(-4, 4, 24).reshape(2, 3, 4).astype(dtype)
    y = run_single(op, x, attrs)
    assert y.dtype == np.dtype(dtype)
    # float64: the kernel is exact to a few ulp; float16: one half-precision ulp is ~1e-3 relative.
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (2e-3, 2e-3)
    assert_close(
        y, ref_elementwise(op, x, {"alpha": DEFAULT_ALPHA.get(op)} | attrs), rtol=rtol, atol=atol
    )


# ------------------------------------------------------------------------------------ PRelu
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 4, 3, 5), (1, 3, 2, 4, 3)])
def test_prelu_per_channel_matches_formula_and_ort(shape):
    """The broadcast trap: a per-channel slope is (C, 1, ..., 1); ORT must agree channel by channel
    (shapes chosen so that no other axis has C elements, which would let a wrong (C,) slope
    pass)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    slope = rng.uniform(0.05, 0.9, (c,) + (1,) * (len(shape) - 2)).astype(np.float32)
    g = single_node("PRelu", {"x": shape}, {"slope": slope})
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert_close(y, ref_prelu(x, lambda idx: slope.ravel()[idx[1]]), what="PRelu per channel")
    assert len(set(np.round(slope.ravel(), 6))) == c, (
        "distinct slopes per channel, or the test proves nothing"
    )


@pytest.mark.parametrize(
    "xshape, sshape",
    [
        ((2, 3, 4, 5), (1,)),
        ((2, 3, 4, 5), (5,)),
        ((2, 3, 4, 5), (4, 5)),
        ((2, 3, 4, 5), (3, 4, 5)),
        ((2, 3, 4, 5), (2, 3, 4, 5)),
        ((6, 7), (7,)),
        ((6, 7), (1, 7)),
    ],
)
def test_prelu_onnx_broadcast_shapes(xshape, sshape):
    """Any slope that broadcasts to X from the right, as ONNX defines it."""
    rng = np.random.default_rng(len(xshape) * 10 + len(sshape))
    x = rng.standard_normal(xshape).astype(np.float32)
    slope = rng.uniform(0.05, 0.9, sshape).astype(np.float32)
    g = single_node("PRelu", {"x": xshape}, {"slope": slope})
    y = compare_with_ort(g, {"x": x})[g.outputs[0]]

    # Right-aligned indexing written out: the slope's k-th dim from the end reads X's k-th from the
    # end.
    def slope_of(idx):
        tail = idx[len(idx) - len(sshape) :]
        return slope[tuple(0 if s == 1 else i for i, s in zip(tail, sshape, strict=True))]

    assert_close(y, ref_prelu(x, slope_of), what=f"PRelu slope {sshape}")


def test_prelu_rejects_channel_vector_on_nchw_with_a_hint():
    g = Graph("g")
    g.add_input("x", ("N", 3, 8, 8))
    g.add_param("s", np.full(3, 0.25, np.float32))
    with pytest.raises(ShapeError) as e:
        g.add_node("PRelu", ["x", "s"], name="prelu1")
    msg = str(e.value)
    for part in ("prelu1", "PRelu", "(3)", "(N,3,8,8)", "(3,1,1)"):
        assert part in msg, msg


def test_prelu_rejects_other_dtype_slope():
    g = Graph("g")
    g.add_input("x", (2, 3))
    g.add_param("s", np.full((3,), 0.25, np.float64))
    with pytest.raises(ShapeError, match=r"node 'p' \(PRelu\).*float64.*float32"):
        g.add_node("PRelu", ["x", "s"], name="p")


# -------------------------------------------------------------------------- Softmax, LogSoftmax
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_softmax_every_axis_matches_formula_and_ort(op, rank):
    rng = np.random.default_rng(rank)
    shape = tuple(int(d) for d in rng.integers(2, 5, rank))
    x = rng.standard_normal(shape).astype(np.float32) * 3
    for axis in range(-rank, rank):
        y = run_single(op, x, {"axis": axis})
        assert_close(y, ref_softmax(x, axis, log=op == "LogSoftmax"), what=f"{op} axis={axis}")
        compare_with_ort(single_node(op, {"x": shape}, attrs={"axis": axis}), {"x": x})
        if op == "Softmax":
            assert_close(
                y.sum(axis=axis), np.ones_like(y.sum(axis=axis)), what="probabilities sum to 1"
            )


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@SETTINGS
@given(
    shape=shapes,
    scale=st.sampled_from([1.0, 100.0, 1e4]),
    seed=st.integers(0, 2**31),
    data=st.data(),
)
def test_softmax_large_logits(op, shape, scale, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    with no_fp_warnings():  # exp(1e4) would overflow without the max shift
        y = run_single(op, x, {"axis": axis})
    assert np.all(np.isfinite(y))
    assert_close(y, ref_softmax(x, axis, log=op == "LogSoftmax"), what=f"{op} axis={axis}")
    compare_with_ort(single_node(op, {"x": shape}, attrs={"axis": axis}), {"x": x})


def test_softmax_default_axis_is_last():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    g = single_node("Softmax", {"x": x.shape})
    assert_close(runtime.run(g, {"x": x})[g.outputs[0]], ref_softmax(x, -1))
    assert [a.i for a in export_checked(g).graph.node[0].attribute if a.name == "axis"] == [-1]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_keeps_float64(op):
    x = np.random.default_rng(1).standard_normal((3, 5)) * 50
    y = run_single(op, x, {"axis": 1})
    assert y.dtype == np.float64
    assert_close(y, ref_softmax(x, 1, log=op == "LogSoftmax"), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "op", ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softmax", "LogSoftmax", "Dropout"]
)
def test_integer_input_is_a_shape_error_naming_node_and_shape(op):
    g = Graph("g")
    g.add_input("x", ("N", 4), "int32")
    with pytest.raises(ShapeError) as e:
        g.add_node(op, ["x"], name="act7")
    msg = str(e.value)
    assert f"node 'act7' ({op})" in msg and "int32" in msg and "x(N,4)" in msg, msg


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [4, -5])
def test_softmax_axis_out_of_range(op, axis):
    g = Graph("g")
    g.add_input("x", ("N", 3, 4, 4))
    with pytest.raises(AttributeValueError) as e:
        g.add_node(op, ["x"], {"axis": axis}, name="sm")
    msg = str(e.value)
    assert (
        f"node 'sm' ({op})" in msg
        and f"axis {axis}" in msg
        and "(N,3,4,4)" in msg
        and "rank 4" in msg
    ), msg


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("LeakyRelu", {"alpha": "big"}),
        ("Elu", {"alpha": True}),
        ("Softmax", {"axis": 1.5}),
        ("Relu", {"alpha": 0.1}),
    ],
)
def test_bad_attribute_values(op, attrs):
    g = Graph("g")
    g.add_input("x", (2, 3))
    with pytest.raises(AttributeValueError, match=rf"node 'n' \({op}\)"):
        g.add_node(op, ["x"], attrs, name="n")


# ------------------------------------------------------------------------------ export shape
@pytest.mark.parametrize(
    "op, attrs, onnx_attrs",
    [
        ("LeakyRelu", {"alpha": 0.2}, {"alpha": 0.2}),
        ("LeakyRelu", {}, {"alpha": 0.01}),
        ("Elu", {}, {"alpha": 1.0}),
        ("Softmax", {"axis": 1}, {"axis": 1}),
        ("LogSoftmax", {"axis": -2}, {"axis": -2}),
        ("Relu", {}, {}),
        ("Sigmoid", {}, {}),
        ("Tanh", {}, {}),
    ],
)
@pytest.mark.parametrize("opset", [17, 21])
def test_export_writes_one_node_with_explicit_attributes(op, attrs, onnx_attrs, opset):
    from onnx import helper

    model = export_checked(single_node(op, {"x": (None, 3, 4)}, attrs=attrs), opset=opset)
    (node,) = model.graph.node
    assert node.op_type == op
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got.keys() == onnx_attrs.keys()
    for k, v in onnx_attrs.items():
        assert got[k] == pytest.approx(v, rel=1e-7)
    x = np.random.default_rng(opset).standard_normal((2, 3, 4)).astype(np.float32)
    theirs = ort_run(model, {"x": x})[model.graph.output[0].name]
    assert_close(theirs, run_single(op, x, attrs), rtol=RTOL32, atol=ATOL32)
