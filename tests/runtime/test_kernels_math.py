"""Math ops (Mul, Sub, Div, Max, Min, Neg, Sqrt, Pow, Exp, Log, Reciprocal, Clip, ReduceMean,
ReduceMax, ReduceSum, Cast, Identity).

Each kernel is checked against a plain per-element (or per-output-cell) Python reference written
here, against onnxruntime on our export, and through ONNX import at the opsets where the op's form
changed (attribute vs input), with an export round trip of the imported graph.
Tolerances: float32 rtol 1e-5 / atol 1e-6 (helpers), float64 1e-12; shape ops and integer
results compare exactly.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import graphnet
from graphnet import runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import Graph
from tests.helpers import (
    ATOL32,
    RTOL32,
    assert_close,
    compare_with_ort,
    export_checked,
    onnx_model,
    ort_run,
    single_node,
    vi,
)

HYP = settings(max_examples=20, deadline=None)


# ----------------------------------------------------------------------- references
def bshape(*shapes):
    """Broadcast shape by the written rule: align right, a 1 stretches, equal dims stay."""
    rank = max(len(s) for s in shapes)
    out = []
    for k in range(rank):
        dims = {s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0} - {1}
        assert len(dims) <= 1
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def naive_elementwise(fn, *arrays, dtype=None):
    """Apply a scalar Python function cell by cell with broadcasting done by hand."""
    shape = bshape(*(a.shape for a in arrays))
    out = np.empty(shape, dtype=dtype or arrays[0].dtype)
    for idx in itertools.product(*(range(d) for d in shape)):
        args = []
        for a in arrays:
            off = len(shape) - a.ndim
            args.append(
                a[tuple(0 if a.shape[k] == 1 else idx[off + k] for k in range(a.ndim))].item()
            )
        out[idx] = fn(*args)
    return out


def naive_reduce(x, axes, keepdims, fn):
    """Group the cells by their index outside `axes` and apply `fn` to each group's list."""
    axes = range(x.ndim) if not axes else [a % x.ndim for a in axes]
    groups: dict = {}
    for idx in itertools.product(*(range(d) for d in x.shape)):
        key = (
            tuple(0 if k in axes else i for k, i in enumerate(idx))
            if keepdims
            else tuple(i for k, i in enumerate(idx) if k not in axes)
        )
        groups.setdefault(key, []).append(x[idx].item())
    shape = (
        tuple(1 if k in axes else d for k, d in enumerate(x.shape))
        if keepdims
        else tuple(d for k, d in enumerate(x.shape) if k not in axes)
    )
    out = np.empty(shape, dtype=x.dtype)
    for key, vals in groups.items():
        out[key] = fn(vals)
    return out


def trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def check_import(model, feeds, *, exact=False, rtol=RTOL32, atol=ATOL32):
    """Import, run on our runtime, compare with onnxruntime on the original model; then export the
    imported graph (opset 21) and check that onnxruntime gives the same output again."""
    g = graphnet.load(model)
    ours = runtime.run(g, feeds)
    ref = ort_run(model, feeds)
    round_trip = ort_run(export_checked(g), feeds)
    for name, want in ref.items():
        assert ours[name].dtype == want.dtype, f"{name}: dtype {ours[name].dtype} != {want.dtype}"
        if exact:
            np.testing.assert_array_equal(ours[name], want)
            np.testing.assert_array_equal(round_trip[name], want)
        else:
            assert_close(
                ours[name], want, rtol=rtol, atol=atol, what=f"{name} imported vs onnxruntime"
            )
            assert_close(round_trip[name], want, rtol=rtol, atol=atol, what=f"{name} round trip")
    return g, ours


# ------------------------------------------------------------ binary and variadic ops
shape_pairs = (
    st.integers(1, 4)
    .flatmap(
        lambda r: st.tuples(
            st.lists(st.integers(1, 4), min_size=r, max_size=r),
            st.integers(0, 2**r - 1),
            st.integers(0, r),
        )
    )
    .map(
        lambda t: (
            tuple(t[0]),
            tuple(1 if t[1] >> k & 1 else d for k, d in enumerate(t[0]))[t[2] :],
        )
    )
)

BINARY = {
    "Mul": lambda a, b: a * b,
    "Sub": lambda a, b: a - b,
    "Div": lambda a, b: a / b,
    "Max": max,
    "Min": min,
    "Pow": math.pow,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@HYP
@given(shapes=shape_pairs, seed=st.integers(0, 2**16))
def test_binary_broadcasting_float32(op, shapes, seed):
    a_shape, b_shape = shapes if seed % 2 else shapes[::-1]  # the lower-rank side varies
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, a_shape).astype(np.float32)  # positive: Pow stays real
    b = rng.uniform(-2.0, 2.0, b_shape).astype(np.float32)
    b[np.abs(b) < 0.1] = 0.5  # keep Div away from huge quotients
    g = single_node(op, {"a": a_shape, "b": b_shape})
    ours = compare_with_ort(g, {"a": a, "b": b})[g.outputs[0]]
    want = naive_elementwise(BINARY[op], a, b)
    assert ours.dtype == np.float32
    assert_close(ours, want, what=f"{op} vs per-element reference")


@pytest.mark.parametrize("op", ["Mul", "Sub", "Div", "Max", "Min"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "float64"])
def test_binary_keeps_dtype(op, dtype):
    rng = np.random.default_rng(1)
    a = rng.integers(-50, 50, (3, 4)).astype(dtype)
    b = rng.integers(1, 9, (4,)).astype(dtype) * rng.choice([-1, 1], (4,)).astype(dtype)
    g = single_node(op, {"a": (3, 4), "b": (4,)}, dtype=dtype)
    ours = compare_with_ort(g, {"a": a, "b": b}, rtol=1e-12, atol=0)[g.outputs[0]]
    fn = trunc_div if op == "Div" and dtype != "float64" else BINARY[op]
    np.testing.assert_allclose(ours, naive_elementwise(fn, a, b), rtol=1e-12, atol=0)
    assert ours.dtype == np.dtype(dtype)


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 6, -1, 0], np.int64)
    b = np.array([2, 2, -2, -2, 3, 5, -3], np.int64)
    g = single_node("Div", {"a": (7,), "b": (7,)}, dtype="int64")
    ours = compare_with_ort(g, {"a": a, "b": b})[g.outputs[0]]
    np.testing.assert_array_equal(ours, [3, -3, -3, 3, 2, 0, 0])  # C division, not floor (-4, ...)


@pytest.mark.parametrize("op, fn", [("Max", max), ("Min", min)])
@pytest.mark.parametrize(
    "shapes", [[(2, 3)], [(2, 3), (3,), (1, 3)], [(4, 1, 2), (3, 1), (1,), (4, 3, 2)]]
)
def test_variadic_max_min(op, fn, shapes):
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g = single_node(op, {f"x{k}": s for k, s in enumerate(shapes)})
    ours = compare_with_ort(g, {f"x{k}": x for k, x in enumerate(xs)})[g.outputs[0]]
    np.testing.assert_array_equal(ours, naive_elementwise(lambda *v: fn(v), *xs))


def test_pow_integer_exponent_keeps_float_base_dtype():
    x = np.array([[1.5, -2.0, 3.0]], np.float32)
    g = Graph("pow")
    g.add_input("x", (1, 3))
    g.add_param("e", np.array([2, 3, -1], np.int64))
    g.mark_output(g.add_node("Pow", ["x", "e"], name="pow").outputs[0])
    assert g.values["pow.out"].dtype == "float32"
    ours = compare_with_ort(g, {"x": x})["pow.out"]
    np.testing.assert_allclose(ours, [[2.25, -8.0, 1 / 3]], rtol=RTOL32)


# -------------------------------------------------------------------- unary ops
UNARY = {
    "Neg": (lambda v: -v, (-3, 3)),
    "Sqrt": (math.sqrt, (0.0, 5)),
    "Exp": (math.exp, (-5, 5)),
    "Log": (math.log, (0.01, 10)),
    "Reciprocal": (lambda v: 1 / v, (0.1, 4)),
    "Identity": (lambda v: v, (-3, 3)),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize(
    "shape, dtype", [((5,), "float32"), ((2, 3, 4), "float32"), ((3, 1, 2, 2), "float64")]
)
def test_unary(op, shape, dtype):
    fn, (lo, hi) = UNARY[op]
    x = np.random.default_rng(3).uniform(lo, hi, shape).astype(dtype)
    g = single_node(op, {"x": shape}, dtype=dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else {}
    ours = compare_with_ort(g, {"x": x}, **tol)[g.outputs[0]]
    assert ours.dtype == np.dtype(dtype)
    assert_close(ours, naive_elementwise(fn, x), **tol, what=f"{op} vs math")


def test_neg_signed_int_and_identity_copies():
    x = np.array([[-3, 0, 7]], np.int32)
    g = single_node("Neg", {"x": (1, 3)}, dtype="int32")
    np.testing.assert_array_equal(compare_with_ort(g, {"x": x})[g.outputs[0]], [[3, 0, -7]])
    g = Graph("id")
    g.add_param("w", np.arange(3, dtype=np.float32))
    g.add_input("x", (1,))
    g.mark_output(g.add_node("Identity", ["w"], name="id").outputs[0])
    y = runtime.run(g, {"x": np.zeros(1, np.float32)})["id.out"]
    y[0] = 99  # writing into the output must not change the parameter
    assert g.params["w"][0] == 0


# ------------------------------------------------------------------------- Clip
@pytest.mark.parametrize(
    "lo, hi", [(-0.5, 0.5), (None, 0.0), (-1.0, None), (None, None), (1.0, -1.0)]
)
def test_clip(lo, hi):
    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    params: dict = {}  # an omitted min before a given max is the empty input name ""
    if lo is not None or hi is not None:
        params["lo" if lo is not None else ""] = None if lo is None else np.array(lo, np.float32)
    if hi is not None:
        params["hi"] = np.array(hi, np.float32)
    g = single_node("Clip", {"x": x.shape}, params)
    ours = compare_with_ort(g, {"x": x})[g.outputs[0]]

    def ref(v):
        v = v if lo is None else max(v, lo)
        return v if hi is None else min(v, hi)  # min > max gives max, as ONNX says

    np.testing.assert_array_equal(ours, naive_elementwise(ref, x))


# ------------------------------------------------------------------- reductions
REDUCE = {"ReduceMean": lambda v: math.fsum(v) / len(v), "ReduceMax": max, "ReduceSum": math.fsum}


@pytest.mark.parametrize("op", sorted(REDUCE))
@HYP
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data())
def test_reductions(op, shape, data):
    r = len(shape)
    axes = data.draw(st.lists(st.integers(-r, r - 1), unique_by=lambda a: a % r, max_size=r))
    keepdims = data.draw(st.sampled_from([0, 1]))
    x = np.random.default_rng(len(axes) + 7 * r).standard_normal(shape).astype(np.float32)
    params = {"axes": np.array(axes, np.int64)} if axes else None
    g = single_node(op, {"x": tuple(shape)}, params, {"keepdims": keepdims})
    # float32 sums of up to 256 normal values: rounding differs with the summation order
    # (NumPy pairwise vs onnxruntime's vectorized loop) by a few ulps of the partial sums.
    ours = compare_with_ort(g, {"x": x}, rtol=1e-5, atol=1e-5)[g.outputs[0]]
    want = naive_reduce(x, axes, keepdims, REDUCE[op])
    assert_close(ours, want, rtol=1e-5, atol=1e-5, what=f"{op} axes={axes} keepdims={keepdims}")


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduction_noop_with_empty_axes(op):
    x = np.random.default_rng(5).standard_normal((2, 3)).astype(np.float32)
    g = single_node(op, {"x": (2, 3)}, {"axes": np.zeros(0, np.int64)}, {"noop_with_empty_axes": 1})
    np.testing.assert_array_equal(compare_with_ort(g, {"x": x})[g.outputs[0]], x)
    # Opset 17 has no noop_with_empty_axes for ReduceMean/ReduceMax: export writes an Identity.
    np.testing.assert_array_equal(ort_run(export_checked(g, opset=17), {"x": x})[g.outputs[0]], x)


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduction_export_opset17_uses_attribute_form(op):
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    g = single_node(op, {"x": (2, 3, 4)}, {"axes": np.array([-1, 1], np.int64)}, {"keepdims": 0})
    model = export_checked(g, opset=17)
    node = model.graph.node[0]
    if op != "ReduceSum":  # ReduceSum took axes as an input already in opset 13
        assert [a.name for a in node.attribute if a.name == "axes"] == ["axes"] and len(
            node.input
        ) == 1
    want = naive_reduce(x, [-1, 1], 0, REDUCE[op])
    assert_close(
        ort_run(model, {"x": x})[g.outputs[0]], want, what="opset 17 export on onnxruntime"
    )


def test_reduce_integer_keeps_dtype():
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 10
    g = single_node("ReduceSum", {"x": (2, 3, 4)}, {"axes": np.array([1], np.int64)}, dtype="int32")
    ours = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, naive_reduce(x, [1], 1, sum))


# ------------------------------------------------------------------------- Cast
CASTS = [
    ("float32", "int32"),
    ("float32", "int64"),
    ("float32", "float64"),
    ("float64", "float32"),
    ("int64", "float32"),
    ("float32", "bool"),
    ("bool", "float32"),
    ("int32", "int8"),
    ("float32", "float16"),
    ("int64", "int32"),
    ("uint8", "float32"),
]
PY = {
    "int32": int,
    "int64": int,
    "int8": int,
    "float64": float,
    "float32": float,
    "float16": float,
    "bool": bool,
}


@pytest.mark.parametrize("src, to", CASTS)
def test_cast(src, to):
    rng = np.random.default_rng(8)
    x = (
        (rng.standard_normal((3, 4)) * 20).astype(src)
        if src != "bool"
        else rng.random((3, 4)) > 0.5
    )
    x = x.astype(src)
    if src == "float32":
        x[0, :3] = [0.0, -2.7, 2.7]  # truncation toward zero, and zero for bool
    g = single_node("Cast", {"x": (3, 4)}, attrs={"to": to}, dtype=src)
    assert g.values[g.outputs[0]].dtype == to
    ours = compare_with_ort(g, {"x": x}, rtol=0, atol=0)[g.outputs[0]]
    assert ours.dtype == np.dtype(to)
    want = np.array([[PY[to](v) for v in row] for row in x.tolist()]).astype(to)
    np.testing.assert_array_equal(ours, want)


def test_cast_accepts_onnx_enum():
    g = single_node("Cast", {"x": (2,)}, attrs={"to": TensorProto.INT64})
    assert g.values[g.outputs[0]].dtype == "int64"


# ------------------------------------------------------------- ONNX import by opset
def _run_import(op, opset, x, node_kwargs=None, extra_inputs=(), exact=False, out_dtype=None):
    node = helper.make_node(op, ["x"] + [n for n, _ in extra_inputs], ["y"], **(node_kwargs or {}))
    inits = [(n, v) for n, v in extra_inputs if n]
    outputs = [vi("y", None, out_dtype or x.dtype)]
    return check_import(
        onnx_model([node], [vi("x", list(x.shape), x.dtype)], outputs, opset, inits),
        {"x": x},
        exact=exact,
    )


@pytest.mark.parametrize("opset", [9, 13, 14, 21])
@pytest.mark.parametrize("op", ["Mul", "Sub", "Div", "Pow", "Max", "Min"])
def test_import_binary(op, opset):
    x = np.random.default_rng(9).uniform(0.5, 2, (2, 3)).astype(np.float32)
    _run_import(op, opset, x, extra_inputs=[("b", np.array([1.5, -0.5, 2.0], np.float32))])


@pytest.mark.parametrize("opset", [9, 13, 21])
@pytest.mark.parametrize("op", ["Neg", "Sqrt", "Exp", "Log", "Reciprocal", "Identity"])
def test_import_unary(op, opset):
    _run_import(op, opset, np.random.default_rng(10).uniform(0.1, 3, (2, 3)).astype(np.float32))


@pytest.mark.parametrize(
    "opset, kwargs, inputs",
    [
        (9, {"min": -0.3, "max": 0.4}, ()),
        (9, {"max": 0.1}, ()),
        (10, {"min": -0.2}, ()),
        (11, {}, (("lo", np.array(-0.3, np.float32)), ("hi", np.array(0.2, np.float32)))),
        (12, {}, (("", None), ("hi", np.array(0.2, np.float32)))),
        (13, {}, (("lo", np.array(-0.1, np.float32)),)),
        (21, {}, ()),
    ],
)
def test_import_clip(opset, kwargs, inputs):
    x = np.random.default_rng(11).standard_normal((3, 4)).astype(np.float32)
    _, ours = _run_import("Clip", opset, x, kwargs, inputs, exact=True)
    lo = kwargs.get("min", next((float(v) for n, v in inputs if n == "lo"), -np.inf))
    hi = kwargs.get("max", next((float(v) for n, v in inputs if n == "hi"), np.inf))
    np.testing.assert_array_equal(
        ours["y"], naive_elementwise(lambda v: min(max(v, np.float32(lo)), np.float32(hi)), x)
    )


@pytest.mark.parametrize("op", sorted(REDUCE))
@pytest.mark.parametrize("opset", [9, 11, 13, 17, 18, 20, 21])
@pytest.mark.parametrize("axes, keepdims", [((1,), 1), ((0, -1), 0), (None, 1)])
def test_import_reduce(op, opset, axes, keepdims):
    x = np.random.default_rng(12).standard_normal((2, 3, 4)).astype(np.float32)
    attr_form = opset < (13 if op == "ReduceSum" else 18)
    kwargs = {"keepdims": keepdims}
    extra = ()
    if axes is not None:
        if attr_form:
            kwargs["axes"] = list(axes)
        else:
            extra = (("axes", np.array(axes, np.int64)),)
    g, ours = _run_import(op, opset, x, kwargs, extra)
    assert_close(
        ours["y"], naive_reduce(x, axes, keepdims, REDUCE[op]), what="vs per-cell reference"
    )


@pytest.mark.parametrize("opset", [9, 13, 19, 21])
@pytest.mark.parametrize(
    "to", [TensorProto.INT64, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL]
)
def test_import_cast(opset, to):
    x = (np.random.default_rng(13).standard_normal((2, 5)) * 4).astype(np.float32)
    _, ours = _run_import(
        "Cast", opset, x, {"to": to}, exact=True, out_dtype=helper.tensor_dtype_to_np_dtype(to)
    )
    assert ours["y"].dtype == helper.tensor_dtype_to_np_dtype(to)


def test_import_cast_to_unsupported_dtype_stays_opaque():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)
    m = onnx_model(
        [node], [vi("x", [2])], [helper.make_tensor_value_info("y", TensorProto.STRING, [2])], 13
    )
    g = graphnet.load(m)
    assert g.nodes[0].op == "Opaque" and g.nodes[0].attrs["op_type"] == "Cast"


# ---------------------------------------------------------- shapes and bad input
def test_dynamic_and_unknown_shapes_propagate():
    g = Graph("dyn")
    g.add_input("x", (None, 3, 4))
    g.add_input("u", (3, 4))
    g.values["u"].shape = None  # an input whose shape is not known at all (as after an opaque op)
    g.add_param("axes", np.array([1], np.int64))
    assert g.values[g.add_node("Mul", ["x", "x"], name="m").outputs[0]].shape == (None, 3, 4)
    assert g.values[
        g.add_node("ReduceMean", ["x", "axes"], {"keepdims": 0}, name="r").outputs[0]
    ].shape == (None, 4)
    assert g.values[g.add_node("ReduceSum", ["x"], name="s").outputs[0]].shape == (1, 1, 1)
    assert g.values[g.add_node("Max", ["x", "u"], name="mx").outputs[0]].shape is None
    assert g.values[g.add_node("ReduceMax", ["u", "axes"], name="rm").outputs[0]].shape is None
    assert (
        g.values[g.add_node("Cast", ["u"], {"to": "int64"}, name="c").outputs[0]].dtype == "int64"
    )
    # An axes input computed at run time: with keepdims the rank is still known.
    g.add_node("Shape", ["x"], name="shp", outputs=["dims"])
    assert g.values[g.add_node("ReduceSum", ["x", "dims"], name="s2").outputs[0]].shape == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    "op, shapes, params, attrs, err, words",
    [
        (
            "Mul",
            {"a": (2, 3), "b": (4,)},
            None,
            {},
            ShapeError,
            ["node 'mul' (Mul)", "(2,3)", "(4)"],
        ),
        (
            "Max",
            {"a": (2, 3), "b": (3, 2)},
            None,
            {},
            ShapeError,
            ["node 'max' (Max)", "(2,3)", "(3,2)"],
        ),
        (
            "ReduceMean",
            {"x": (2, 3)},
            {"axes": np.array([2], np.int64)},
            {},
            AttributeValueError,
            ["node 'reducemean' (ReduceMean)", "axis 2", "rank 2", "x(2,3)"],
        ),
        (
            "ReduceSum",
            {"x": (2, 3)},
            {"axes": np.array([0, -2], np.int64)},
            {},
            AttributeValueError,
            ["node 'reducesum'", "repeat", "x(2,3)"],
        ),
        (
            "ReduceMax",
            {"x": (2, 3)},
            None,
            {"keepdims": 2},
            AttributeValueError,
            ["node 'reducemax'", "keepdims"],
        ),
        (
            "Clip",
            {"x": (2, 3)},
            {"lo": np.zeros(2, np.float32)},
            {},
            ShapeError,
            ["node 'clip'", "min 'lo'", "(2)"],
        ),
        (
            "Clip",
            {"x": (2, 3)},
            {"lo": np.zeros((), np.float64)},
            {},
            ShapeError,
            ["node 'clip'", "float64", "float32"],
        ),
        (
            "Cast",
            {"x": (2,)},
            None,
            {"to": "complex64"},
            AttributeValueError,
            ["node 'cast' (Cast)", "complex64"],
        ),
        ("Cast", {"x": (2,)}, None, {"to": 8}, AttributeValueError, ["node 'cast' (Cast)", "to=8"]),
        ("Sqrt", {"x": (2,)}, None, {}, ShapeError, ["node 'sqrt' (Sqrt)", "int64"]),
    ],
)
def test_bad_input_names_node_and_shapes(op, shapes, params, attrs, err, words):
    dtype = "int64" if op == "Sqrt" else "float32"
    with pytest.raises(err) as info:
        single_node(op, shapes, params, attrs, dtype=dtype)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_mixed_dtypes_rejected():
    g = Graph("mix")
    g.add_input("a", (2,), "float32")
    g.add_input("b", (2,), "float64")
    with pytest.raises(ShapeError, match=r"node 'sub' \(Sub\).*float32.*float64"):
        g.add_node("Sub", ["a", "b"], name="sub")


@pytest.mark.parametrize(
    "dtype, lowest", [("float32", -np.inf), ("int32", np.iinfo(np.int32).min), ("bool", False)]
)
def test_reduce_max_empty_axis_gives_lowest_value(dtype, lowest):
    # The max over an empty set is the dtype's lowest value (ONNX ReduceMax-18/20 spec).
    x = np.zeros((2, 0, 3), dtype)
    g = single_node("ReduceMax", {"x": (2, 0, 3)}, {"axes": np.array([1], np.int64)}, dtype=dtype)
    if dtype == "bool":  # onnxruntime 1.32: "ReduceMax is not defined for empty set with bool type"
        ours = runtime.run(g, {"x": x})[g.outputs[0]]
    else:
        ours = compare_with_ort(g, {"x": x})[g.outputs[0]]
    assert ours.dtype == np.dtype(dtype) and ours.shape == (2, 1, 3)
    assert (ours == lowest).all()


def test_reduce_max_bool_opset20():
    x = np.array([[True, False], [False, False], [True, True]])
    _, ours = _run_import(
        "ReduceMax", 20, x, {"keepdims": 0}, [("axes", np.array([1], np.int64))], exact=True
    )
    np.testing.assert_array_equal(ours["y"], naive_reduce(x, [1], 0, any))


def test_import_cast_from_unsupported_dtype_stays_opaque():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)
    x_info = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])
    g = graphnet.load(onnx_model([node], [x_info], [vi("y", [2])], 13))
    assert g.nodes[0].op == "Opaque"
