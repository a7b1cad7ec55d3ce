"""Shape ops (Reshape, Transpose, Squeeze, Unsqueeze, Shape, Gather, Slice, Pad, ConstantOfShape,
Expand) and the PyTorch flatten chain (Shape -> Gather -> Unsqueeze -> Concat -> Reshape).

Every kernel is checked against a loop-based reference written here from the ONNX spec's text,
against onnxruntime on our export, and through ONNX import at the opsets where the op's form changed
(attributes before 10/11/13, inputs after), with an export round trip of the imported graph.
These ops move data without arithmetic, so every comparison is exact.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.errors import AttributeValueError, GraphError, ShapeError, UnsupportedOpError
from graphnet.ir import Graph
from tests.helpers import compare_with_ort, export_checked, onnx_model, ort_run, single_node, vi

HYP = settings(max_examples=25, deadline=None)
EXACT = {"rtol": 0, "atol": 0}
I64 = np.int64


def cells(shape):
    return itertools.product(*(range(d) for d in shape))


# ----------------------------------------------------------------------- references
def naive_transpose(x, perm):
    out = np.empty([x.shape[p] for p in perm], x.dtype)
    for idx in cells(out.shape):
        src = [0] * x.ndim
        for k, p in enumerate(perm):
            src[p] = idx[k]  # output axis k is input axis perm[k]
        out[idx] = x[tuple(src)]
    return out


def naive_gather(x, indices, axis):
    axis %= x.ndim
    shape = x.shape[:axis] + indices.shape + x.shape[axis + 1 :]
    out = np.empty(shape, x.dtype)
    for idx in cells(shape):
        i = int(indices[idx[axis : axis + indices.ndim]])
        i = i + x.shape[axis] if i < 0 else i
        out[idx] = x[idx[:axis] + (i,) + idx[axis + indices.ndim :]]
    return out


def onnx_slice_indices(dim, start, end, step):
    """The indices Slice visits on one axis, as the ONNX spec words it."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    out, i = [], start
    while (step > 0 and i < end) or (step < 0 and i > end):
        out.append(i)
        i += step
    return out


def naive_slice(x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    lists = [list(range(d)) for d in x.shape]
    for a, s, e, k in zip(axes, starts, ends, steps, strict=True):
        lists[a] = onnx_slice_indices(x.shape[a], s, e, k)
    out = np.empty([len(indices) for indices in lists], x.dtype)
    for idx in cells(out.shape):
        out[idx] = x[tuple(indices[i] for indices, i in zip(lists, idx, strict=True))]
    return out


def naive_pad(x, pads, mode="constant", value=0, axes=None):
    """Negative pads crop first; then each output cell reads the (cropped) input at its index
    minus the begin pad, mapped back inside by the mode's rule."""
    axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in axes]
    begin, end = [0] * x.ndim, [0] * x.ndim
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    lo = [max(-b, 0) for b in begin]
    n = [d - max(-b, 0) - max(-e, 0) for d, b, e in zip(x.shape, begin, end, strict=True)]
    shape = [m + max(b, 0) + max(e, 0) for m, b, e in zip(n, begin, end, strict=True)]
    out = np.empty(shape, x.dtype)
    for idx in cells(shape):
        src = []
        for o, b, m in zip(idx, begin, n, strict=True):
            i = o - max(b, 0)
            if mode == "edge":
                i = min(max(i, 0), m - 1)
            elif mode == "wrap":
                i %= m
            elif mode == "reflect":
                while not 0 <= i < m:
                    i = -i if i < 0 else 2 * (m - 1) - i
            src.append(i)
        inside = all(0 <= i < m for i, m in zip(src, n, strict=True))
        out[idx] = x[tuple(i + c for i, c in zip(src, lo, strict=True))] if inside else value
    return out


def naive_expand(x, shape):
    rank = max(x.ndim, len(shape))
    xs = (1,) * (rank - x.ndim) + x.shape
    ts = (1,) * (rank - len(shape)) + tuple(shape)
    out_shape = tuple(t if d == 1 else d for d, t in zip(xs, ts, strict=True))
    out = np.empty(out_shape, x.dtype)
    xr = x.reshape(xs)
    for idx in cells(out_shape):
        out[idx] = xr[tuple(0 if d == 1 else i for d, i in zip(xs, idx, strict=True))]
    return out


def run_import(op, opset, x, kwargs=None, inits=(), out_dtype=None, reference=None):
    """Single-node ONNX model -> graphnet.load -> runtime.run, compared exactly with onnxruntime
    on the original model, then with onnxruntime on our re-export, then with `reference`."""
    node = helper.make_node(op, ["x"] + [n for n, _ in inits], ["y"], **(kwargs or {}))
    model = onnx_model(
        [node],
        [vi("x", list(x.shape), x.dtype)],
        [vi("y", None, out_dtype or x.dtype)],
        opset,
        [(n, v) for n, v in inits if n],
    )
    g = graphnet.load(model)
    ours = runtime.run(g, {"x": x})["y"]
    want = ort_run(model, {"x": x})["y"]
    assert ours.dtype == want.dtype
    np.testing.assert_array_equal(ours, want, err_msg="imported vs onnxruntime")
    np.testing.assert_array_equal(
        ort_run(export_checked(g), {"x": x})["y"], want, err_msg="round trip"
    )
    if reference is not None:
        np.testing.assert_array_equal(ours, reference, err_msg="vs loop reference")
    return g, ours


def arange(*shape, dtype=np.float32):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# --------------------------------------------------------------------- Reshape
@pytest.mark.parametrize(
    "in_shape, target, allowzero, want",
    [
        ((2, 3, 4), [6, 4], 0, (6, 4)),
        ((2, 3, 4), [0, -1], 0, (2, 12)),
        ((2, 3, 4), [-1], 0, (24,)),
        ((2, 3, 4), [4, 0, 2], 0, (4, 3, 2)),
        ((2, 3, 4), [1, -1, 1, 3], 0, (1, 8, 1, 3)),
        ((0, 4), [4, 0], 1, (4, 0)),
        ((2, 3), [3, 2], 1, (3, 2)),
    ],
)
def test_reshape(in_shape, target, allowzero, want):
    x = arange(*in_shape)
    g = single_node(
        "Reshape", {"x": in_shape}, {"s": np.array(target, I64)}, {"allowzero": allowzero}
    )
    assert g.values[g.outputs[0]].shape == want  # static inference from the constant shape
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    assert y.shape == want and y.flatten().tolist() == x.flatten().tolist()  # C order kept


@pytest.mark.parametrize("opset", [9, 13, 14, 21])
def test_import_reshape(opset):
    x = arange(2, 3, 4)
    kwargs = {"allowzero": 0} if opset >= 14 else {}
    _, y = run_import("Reshape", opset, x, kwargs, [("s", np.array([0, 4, -1], I64))])
    assert y.shape == (2, 4, 3) and y.flatten().tolist() == x.flatten().tolist()


def test_import_reshape_allowzero():
    x = np.zeros((0, 4), np.float32)
    _, y = run_import("Reshape", 14, x, {"allowzero": 1}, [("s", np.array([4, 0], I64))])
    assert y.shape == (4, 0)  # with allowzero=0 the 0 would copy dim 1 (4) and fail


# ------------------------------------------------------------------- Transpose
@pytest.mark.parametrize(
    "shape, perm",
    [((2, 3), None), ((2, 3, 4), (1, 2, 0)), ((2, 1, 3, 4), (0, 3, 1, 2)), ((5,), (0,))],
)
def test_transpose(shape, perm):
    x = arange(*shape)
    g = single_node("Transpose", {"x": shape}, attrs={} if perm is None else {"perm": perm})
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    np.testing.assert_array_equal(y, naive_transpose(x, perm or tuple(reversed(range(len(shape))))))


@pytest.mark.parametrize("opset", [9, 13, 21])
@pytest.mark.parametrize("perm", [None, (2, 0, 1)])
def test_import_transpose(opset, perm):
    x = arange(2, 3, 4)
    run_import(
        "Transpose",
        opset,
        x,
        {} if perm is None else {"perm": list(perm)},
        reference=naive_transpose(x, perm or (2, 1, 0)),
    )


# ----------------------------------------------------------- Squeeze / Unsqueeze
@pytest.mark.parametrize(
    "shape, axes, want",
    [
        ((1, 3, 1, 2), [0, 2], (3, 2)),
        ((1, 3, 1, 2), [-2], (1, 3, 2)),
        ((1, 3, 1, 2), None, (3, 2)),
        ((1,), [0], ()),
    ],
)
def test_squeeze(shape, axes, want):
    x = arange(*shape)
    g = single_node("Squeeze", {"x": shape}, None if axes is None else {"a": np.array(axes, I64)})
    assert g.values[g.outputs[0]].shape == want
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    assert y.shape == want and y.flatten().tolist() == x.flatten().tolist()


@pytest.mark.parametrize(
    "shape, axes, want",
    [
        ((3, 2), [0], (1, 3, 2)),
        ((3, 2), [-1, 1], (3, 1, 2, 1)),
        ((3, 2), [0, 3], (1, 3, 2, 1)),
        ((), [0], (1,)),
    ],
)
def test_unsqueeze(shape, axes, want):
    x = arange(*shape)
    g = single_node("Unsqueeze", {"x": shape}, {"a": np.array(axes, I64)})
    assert g.values[g.outputs[0]].shape == want
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    assert y.shape == want and y.flatten().tolist() == x.flatten().tolist()


@pytest.mark.parametrize("opset", [9, 11, 13, 21])
@pytest.mark.parametrize(
    "op, axes, want",
    [
        ("Squeeze", [1, 3], (2, 3)),
        ("Squeeze", None, (2, 3)),
        ("Unsqueeze", [0, 2], (1, 2, 1, 1, 3, 1)),
    ],
)
def test_import_squeeze_unsqueeze(opset, op, axes, want):
    x = arange(2, 1, 3, 1)
    kwargs, inits = {}, []
    if axes is not None:
        if opset < 13:
            kwargs["axes"] = axes
        else:
            inits = [("axes", np.array(axes, I64))]
    _, y = run_import(op, opset, x, kwargs, inits)
    assert y.shape == want and y.flatten().tolist() == x.flatten().tolist()


# ----------------------------------------------------------------------- Shape
@pytest.mark.parametrize(
    "start, end, want",
    [
        (0, None, [2, 3, 4, 5]),
        (1, None, [3, 4, 5]),
        (-1, None, [5]),
        (1, -1, [3, 4]),
        (-10, 10, [2, 3, 4, 5]),
        (3, 1, []),
    ],
)
def test_shape(start, end, want):
    g = single_node("Shape", {"x": (2, 3, 4, 5)}, attrs={"start": start, "end": end})
    assert g.values[g.outputs[0]].shape == (len(want),) and g.values[g.outputs[0]].dtype == "int64"
    y = compare_with_ort(g, {"x": arange(2, 3, 4, 5)}, **EXACT)[g.outputs[0]]
    assert y.dtype == np.int64 and y.tolist() == want


@pytest.mark.parametrize(
    "opset, kwargs, want",
    [
        (9, {}, [2, 3, 4]),
        (13, {}, [2, 3, 4]),
        (15, {"start": 1}, [3, 4]),
        (15, {"end": -1}, [2, 3]),
        (21, {"start": -2, "end": 3}, [3, 4]),
    ],
)
def test_import_shape(opset, kwargs, want):
    _, y = run_import("Shape", opset, arange(2, 3, 4), kwargs, out_dtype=np.int64)
    assert y.tolist() == want


# ---------------------------------------------------------------------- Gather
@HYP
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_gather(shape, data):
    r = len(shape)
    axis = data.draw(st.integers(-r, r - 1))
    dim = shape[axis]
    idx_shape = data.draw(st.lists(st.integers(1, 3), max_size=2))
    indices = np.array(
        data.draw(
            st.lists(
                st.integers(-dim, dim - 1),
                min_size=int(np.prod(idx_shape)),
                max_size=int(np.prod(idx_shape)),
            )
        ),
        I64,
    ).reshape(idx_shape)
    x = arange(*shape)
    g = single_node("Gather", {"x": tuple(shape)}, {"i": indices}, {"axis": axis})
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    np.testing.assert_array_equal(y, naive_gather(x, indices, axis))


GATHER_CASES = [
    (0, np.array(1, I64)),
    (1, np.array([[2, 0], [1, 1]], I64)),
    (-1, np.array([3, -1], np.int32)),
]


# Negative axis and indices are defined from Gather-11 on: opset 9 gets the non-negative cases only.
@pytest.mark.parametrize(
    "opset, axis, indices",
    [
        (o, a, i)
        for o in (9, 11, 13, 21)
        for a, i in GATHER_CASES
        if o >= 11 or (a >= 0 and (i >= 0).all())
    ],
)
def test_import_gather(opset, axis, indices):
    x = arange(3, 4)
    run_import(
        "Gather",
        opset,
        x,
        {"axis": axis},
        [("i", indices)],
        reference=naive_gather(x, indices, axis),
    )


# ----------------------------------------------------------------------- Slice
INT64_MAX = 2**63 - 1
bounds = st.integers(-7, 7) | st.sampled_from([INT64_MAX, -(2**63)])  # INT64 extremes: "to the end"


@HYP
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_slice(shape, data):
    r = len(shape)
    axes = data.draw(
        st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda a: a % r)
    )
    n = len(axes)
    starts = data.draw(st.lists(bounds, min_size=n, max_size=n))
    ends = data.draw(st.lists(bounds, min_size=n, max_size=n))
    steps = data.draw(st.lists(st.sampled_from([-3, -2, -1, 1, 2, 3]), min_size=n, max_size=n))
    x = arange(*shape)
    params = {
        "s": np.array(starts, I64),
        "e": np.array(ends, I64),
        "a": np.array(axes, I64),
        "k": np.array(steps, I64),
    }
    g = single_node("Slice", {"x": tuple(shape)}, params)
    want = naive_slice(x, starts, ends, axes, steps)
    assert g.values[g.outputs[0]].shape == want.shape
    if any(k < 0 and e == INT64_MAX for e, k in zip(ends, steps, strict=True)):
        y = runtime.run(g, {"x": x})[
            g.outputs[0]
        ]  # onnxruntime differs from the spec here: see below
    else:
        y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    np.testing.assert_array_equal(y, want)


def test_slice_negative_step_with_int64_max_end_follows_the_spec():
    """The spec clamps end to dim-1 for a negative step, so end=INT64_MAX gives an empty slice
    (onnx.reference agrees); onnxruntime 1.32 reads INT64_MAX as "through index 0" instead.
    graphnet follows the spec; this checks it against onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    x = arange(3, 2)
    g = single_node(
        "Slice",
        {"x": (3, 2)},
        {
            "s": np.array([1], I64),
            "e": np.array([INT64_MAX], I64),
            "a": np.array([0], I64),
            "k": np.array([-1], I64),
        },
    )
    ours = runtime.run(g, {"x": x})[g.outputs[0]]
    spec = ReferenceEvaluator(export_checked(g)).run(None, {"x": x})[0]
    assert ours.shape == spec.shape == (0, 2)


@pytest.mark.parametrize(
    "opset, kwargs, inits, ref",
    [
        (9, {"starts": [1, 0], "ends": [3, -1]}, [], ([1, 0], [3, -1], None, None)),
        (9, {"starts": [-2], "ends": [100], "axes": [1]}, [], ([-2], [100], [1], None)),
        (10, {}, [("s", [3]), ("e", [0]), ("a", [0]), ("k", [-1])], ([3], [0], [0], [-1])),
        (
            11,
            {},
            [("s", [-1, 0]), ("e", [-100, 4]), ("a", [-1, 0]), ("k", [-2, 2])],
            ([-1, 0], [-100, 4], [-1, 0], [-2, 2]),
        ),
        (13, {}, [("s", [0]), ("e", [2])], ([0], [2], None, None)),
        (21, {}, [("s", [1]), ("e", [5]), ("", None), ("k", [3])], ([1], [5], None, [3])),
    ],
)
def test_import_slice(opset, kwargs, inits, ref):
    x = arange(4, 5)
    inits = [(n, None if v is None else np.array(v, I64)) for n, v in inits]
    run_import("Slice", opset, x, kwargs, inits, reference=naive_slice(x, *ref))


# ------------------------------------------------------------------------- Pad
@HYP
@given(shape=st.lists(st.integers(2, 4), min_size=1, max_size=3), data=st.data())
def test_pad(shape, data):
    r = len(shape)
    mode = data.draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    use_axes = data.draw(st.booleans())
    axes = (
        data.draw(
            st.lists(st.integers(-r, r - 1), min_size=1, max_size=r, unique_by=lambda a: a % r)
        )
        if use_axes
        else None
    )
    k = len(axes) if axes else r
    # reflect needs pads smaller than the axis; every mode may crop (negative pads).
    hi = 1 if mode == "reflect" else 3
    pads = data.draw(st.lists(st.integers(-1, hi), min_size=2 * k, max_size=2 * k))
    if mode != "constant":  # reflect/edge/wrap need a kept extent to read from (and reflect < it)
        for i, a in enumerate(axes if axes else range(r)):
            kept = shape[a] - max(-pads[i], 0) - max(-pads[i + k], 0)
            assume(kept >= 1 and (mode != "reflect" or max(pads[i], pads[i + k]) < kept))
    x = arange(*shape) - 5
    value = np.float32(2.5)
    params = {"p": np.array(pads, I64)}
    if mode == "constant":
        params["v"] = np.array(value)
    elif axes is not None:
        params[""] = None  # constant_value omitted before a given axes input
    if axes is not None:
        params["a"] = np.array(axes, I64)
    g = single_node("Pad", {"x": tuple(shape)}, params, {"mode": mode})
    want = naive_pad(x, pads, mode, value if mode == "constant" else 0, axes)
    assert g.values[g.outputs[0]].shape == want.shape
    y = compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]]
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize(
    "opset, kwargs, inits, ref",
    [
        (9, {"pads": [0, 1, 0, 2]}, [], ([0, 1, 0, 2], "constant", 0, None)),
        (9, {"pads": [1, 0, 1, 1], "value": -3.0}, [], ([1, 0, 1, 1], "constant", -3, None)),
        (10, {"pads": [1, 2, 1, 2], "mode": "reflect"}, [], ([1, 2, 1, 2], "reflect", 0, None)),
        (10, {"pads": [2, 0, 0, 3], "mode": "edge"}, [], ([2, 0, 0, 3], "edge", 0, None)),
        (
            11,
            {},
            [("p", np.array([0, 1, 1, -1], I64)), ("v", np.array(7, np.float32))],
            ([0, 1, 1, -1], "constant", 7, None),
        ),
        (
            13,
            {"mode": "edge"},
            [("p", np.array([1, 1, 0, 0], I64))],
            ([1, 1, 0, 0], "edge", 0, None),
        ),
        (
            18,
            {},
            [("p", np.array([2, 1], I64)), ("", None), ("a", np.array([-1], I64))],
            ([2, 1], "constant", 0, [-1]),
        ),
        (
            19,
            {"mode": "wrap"},
            [("p", np.array([1, 3, 2, 0], I64))],
            ([1, 3, 2, 0], "wrap", 0, None),
        ),
        (
            21,
            {"mode": "reflect"},
            [("p", np.array([1, 2], I64)), ("", None), ("a", np.array([0], I64))],
            ([1, 2], "reflect", 0, [0]),
        ),
    ],
)
def test_import_pad(opset, kwargs, inits, ref):
    x = arange(3, 4) - 4
    pads, mode, value, axes = ref
    run_import("Pad", opset, x, kwargs, inits, reference=naive_pad(x, pads, mode, value, axes))


def test_pad_axes_export_opset17_expands_pads():
    x = arange(2, 3, 4)
    g = single_node(
        "Pad",
        {"x": (2, 3, 4)},
        {"p": np.array([1, 0, 2, 1], I64), "": None, "a": np.array([2, 0], I64)},
    )
    model = export_checked(g, opset=17)
    assert len(model.graph.node[0].input) == 2  # no axes input before opset 18
    y = ort_run(model, {"x": x})[g.outputs[0]]
    np.testing.assert_array_equal(y, naive_pad(x, [1, 0, 2, 1], axes=[2, 0]))


def test_pad_wrap_needs_opset19():
    g = single_node("Pad", {"x": (2, 3)}, {"p": np.array([1, 1, 1, 1], I64)}, {"mode": "wrap"})
    with pytest.raises(UnsupportedOpError, match="wrap.*opset >= 19"):
        export_checked(g, opset=18)


# ------------------------------------------------------- ConstantOfShape, Expand
@pytest.mark.parametrize(
    "value, dims",
    [
        (None, [2, 3]),
        (np.array([3.5], np.float32), [2, 3]),
        (np.array([-2], np.int64), [4]),
        (np.array([1], np.int32), [2, 0, 3]),
    ],
)
def test_constant_of_shape(value, dims):
    g = Graph("cos")
    g.add_input("unused", (1,))
    g.add_param("s", np.array(dims, I64))
    node = g.add_node(
        "ConstantOfShape", ["s"], {} if value is None else {"value": value}, name="cos"
    )
    g.mark_output(node.outputs[0])
    assert g.values[node.outputs[0]].shape == tuple(dims)
    y = compare_with_ort(g, {"unused": np.zeros(1, np.float32)}, **EXACT)[node.outputs[0]]
    fill = 0.0 if value is None else value[0]  # the default value is a float32 zero
    assert y.dtype == (np.float32 if value is None else value.dtype)
    assert y.shape == tuple(dims) and all(v == fill for v in y.flatten().tolist())


@pytest.mark.parametrize("opset", [9, 20, 21])
@pytest.mark.parametrize("value", [None, np.array([1.25], np.float32), np.array([4], np.int64)])
def test_import_constant_of_shape(opset, value):
    kwargs = {} if value is None else {"value": numpy_helper.from_array(value, "value")}
    node = helper.make_node("ConstantOfShape", ["x"], ["y"], **kwargs)
    dtype = np.float32 if value is None else value.dtype
    model = onnx_model([node], [vi("x", [3], I64)], [vi("y", None, dtype)], opset)
    x = np.array([2, 1, 3], I64)
    g = graphnet.load(model)
    ours = runtime.run(g, {"x": x})["y"]
    np.testing.assert_array_equal(ours, ort_run(model, {"x": x})["y"])
    np.testing.assert_array_equal(ort_run(export_checked(g), {"x": x})["y"], ours)
    assert ours.dtype == dtype and ours.shape == (2, 1, 3)
    assert (ours == (0 if value is None else value[0])).all()


@pytest.mark.parametrize(
    "x_shape, target", [((3, 1), [2, 1, 4]), ((1,), [3]), ((2, 3), [1, 1]), ((4, 1, 2), [4, 3, 1])]
)
def test_expand(x_shape, target):
    x = arange(*x_shape)
    g = single_node("Expand", {"x": x_shape}, {"s": np.array(target, I64)})
    want = naive_expand(x, target)
    assert g.values[g.outputs[0]].shape == want.shape
    np.testing.assert_array_equal(compare_with_ort(g, {"x": x}, **EXACT)[g.outputs[0]], want)


@pytest.mark.parametrize("opset", [9, 13, 21])
def test_import_expand(opset):
    x = arange(3, 1)
    run_import(
        "Expand",
        opset,
        x,
        {},
        [("s", np.array([2, 1, 5], I64))],
        reference=naive_expand(x, [2, 1, 5]),
    )


# ----------------------------------------------- the PyTorch flatten chain before FC
@pytest.mark.parametrize("opset", [9, 11, 13, 21])
def test_pytorch_flatten_chain_dynamic_batch(opset):
    """x(N,4,3,3) -> Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape -> Gemm, as
    torch.onnx writes `x.view(x.size(0), -1)` before a Linear layer."""
    rng = np.random.default_rng(0)
    w, b = (
        rng.standard_normal((5, 36)).astype(np.float32),
        rng.standard_normal(5).astype(np.float32),
    )
    unsq = (
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])
        if opset < 13
        else helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"])
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx0"], ["n"], axis=0),
        unsq,
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["y"], transB=1),
    ]
    inits = [("idx0", np.array(0, I64)), ("minus1", np.array([-1], I64)), ("w", w), ("b", b)]
    if opset >= 13:
        inits.append(("zero_axes", np.array([0], I64)))
    model = onnx_model(nodes, [vi("x", ["N", 4, 3, 3])], [vi("y", ["N", 5])], opset, inits)
    g = graphnet.load(model)
    assert [n.op for n in g.nodes] == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Gemm"]
    assert (
        g.values["shape"].shape == (4,)
        and g.values["n"].shape == ()
        and g.values["n1"].shape == (1,)
    )
    assert len(g.values["flat"].shape) == 2  # rank known; the batch dim is dynamic
    session = runtime.Session(g)
    exported = export_checked(g)
    for batch in (2, 5):
        x = rng.standard_normal((batch, 4, 3, 3)).astype(np.float32)
        ours = session.run({"x": x})["y"]
        want = np.array(
            [
                [
                    sum(float(v) * float(w[o, k]) for k, v in enumerate(row)) + float(b[o])
                    for o in range(5)
                ]
                for row in x.reshape(batch, -1)
            ]
        )
        # A 36-term float32 dot product: summation order differs between NumPy's BLAS, onnxruntime
        # and the float64 reference, by a few ulps of the partial sums.
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours, ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ort_run(exported, {"x": x})["y"], ours, rtol=1e-5, atol=1e-5)


# -------------------------------------------------- dynamic dims and unknown shapes
def test_shape_inference_with_dynamic_dims_and_unknown_shapes():
    g = Graph("dyn")
    g.add_input("x", ("N", 4, 3))
    g.add_input("u", (2, 2))
    g.values["u"].shape = None  # a shape nothing knows (as after an opaque node)
    for name, arr in {
        "two": [0, -1],
        "m1": [-1, 12],
        "ax1": [1],
        "ax0": [0],
        "st": [1],
        "en": [3],
        "p": [0, 1, 2, 0, 0, 0],
        "ex": [1, 4, 1],
    }.items():
        g.add_param(name, np.array(arr, I64))

    def out(op, inputs, attrs=None):
        n = g.add_node(op, inputs, attrs or {}, name=g.fresh_name(op.lower()))
        return g.values[n.outputs[0]]

    shp = out("Shape", ["x"])
    assert (shp.shape, shp.dtype) == ((3,), "int64")
    n = out("Gather", [shp.name, "ax0"])
    assert n.shape == (1,)
    assert out("Reshape", ["x", "two"]).shape == ("N", 12)
    assert out("Reshape", ["x", "m1"]).shape == ("N", 12)  # 12*N elements / 12
    assert out("Reshape", ["x", shp.name]).shape == (
        None,
        None,
        None,
    )  # shape known only at run time
    assert out("Transpose", ["x"]).shape == (3, 4, "N")
    assert out("Squeeze", ["x"]).shape is None  # the dynamic dim may be 1 at run time
    assert out("Unsqueeze", ["x", "ax1"]).shape == ("N", 1, 4, 3)
    assert out("Slice", ["x", "st", "en", "ax0"]).shape == (None, 4, 3)  # min(N, 3) - 1: unknown
    assert out("Slice", ["x", "st", "en", "ax1"]).shape == ("N", 2, 3)
    assert out("Pad", ["x", "p"]).shape == ("N", 5, 5)
    assert out("Expand", ["x", "ex"]).shape == ("N", 4, 3)
    assert out("ConstantOfShape", [shp.name]).shape == (None, None, None)
    assert out("Gather", ["x", "ax1"], {"axis": 1}).shape == ("N", 1, 3)
    unknown = [
        ("Transpose", ["u"]),
        ("Squeeze", ["u", "ax0"]),
        ("Unsqueeze", ["u", "ax0"]),
        ("Gather", ["u", "ax0"]),
        ("Slice", ["u", "st", "en"]),
        ("Pad", ["u", "p"]),
        ("Expand", ["u", "ex"]),
    ]
    for op, inputs in unknown:
        assert out(op, inputs).shape is None, op
    assert out("Reshape", ["u", "m1"]).shape == (
        None,
        12,
    )  # the target alone fixes the rank and a dim
    assert out("Shape", ["u"]).shape == (None,)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "op, shape, params, attrs, err, words",
    [
        (
            "Reshape",
            (2, 3),
            {"s": np.array([4, 2], I64)},
            {},
            ShapeError,
            ["node 'reshape' (Reshape)", "(2,3)", "(4,2)", "x(2,3)"],
        ),
        (
            "Reshape",
            (2, 3),
            {"s": np.array([-1, -1], I64)},
            {},
            ShapeError,
            ["node 'reshape'", "more than one -1"],
        ),
        (
            "Reshape",
            (2, 3),
            {"s": np.array([4.0, 2.0], np.float32)},
            {},
            ShapeError,
            ["node 'reshape'", "float32"],
        ),
        (
            "Transpose",
            (2, 3, 4),
            None,
            {"perm": (0, 0, 1)},
            AttributeValueError,
            ["node 'transpose'", "[0, 0, 1]", "x(2,3,4)"],
        ),
        (
            "Squeeze",
            (2, 3),
            {"a": np.array([1], I64)},
            {},
            ShapeError,
            ["node 'squeeze' (Squeeze)", "axis 1 of size 3", "x(2,3)"],
        ),
        (
            "Unsqueeze",
            (2, 3),
            {"a": np.array([3], I64)},
            {},
            AttributeValueError,
            ["node 'unsqueeze'", "axis 3", "rank 3"],
        ),
        (
            "Unsqueeze",
            (2, 3),
            {"a": np.array([0, -4], I64)},
            {},
            AttributeValueError,
            ["node 'unsqueeze'", "repeat"],
        ),
        (
            "Gather",
            (2, 3),
            {"i": np.array([0], I64)},
            {"axis": 2},
            AttributeValueError,
            ["node 'gather' (Gather)", "axis 2", "x(2,3)"],
        ),
        (
            "Gather",
            (2, 3),
            {"i": np.array([0.0], np.float32)},
            {},
            ShapeError,
            ["node 'gather'", "indices", "float32"],
        ),
        (
            "Slice",
            (2, 3),
            {
                "s": np.array([0], I64),
                "e": np.array([2], I64),
                "a": np.array([1], I64),
                "k": np.array([0], I64),
            },
            {},
            AttributeValueError,
            ["node 'slice' (Slice)", "steps"],
        ),
        (
            "Slice",
            (2, 3),
            {"s": np.array([0, 0], I64), "e": np.array([2], I64)},
            {},
            ShapeError,
            ["node 'slice'", "ends has 1"],
        ),
        (
            "Pad",
            (2, 3),
            {"p": np.array([1, 1], I64)},
            {},
            ShapeError,
            ["node 'pad' (Pad)", "pads has 2", "x(2,3)"],
        ),
        (
            "Pad",
            (2, 3),
            {"p": np.array([0, 3, 0, 0], I64)},
            {"mode": "reflect"},
            ShapeError,
            ["node 'pad'", "reflect", "size 3"],
        ),
        (
            "Pad",
            (2, 3),
            {"p": np.array([0, 0, 0, 0], I64)},
            {"mode": "mirror"},
            AttributeValueError,
            ["node 'pad'", "'mirror'"],
        ),
        (
            "Expand",
            (2, 3),
            {"s": np.array([4, 3], I64)},
            {},
            ShapeError,
            ["node 'expand' (Expand)", "(2,3)", "(4,3)"],
        ),
    ],
)
def test_bad_input_names_node_and_shapes(op, shape, params, attrs, err, words):
    with pytest.raises(err) as info:
        single_node(op, {"x": shape}, params, attrs)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {info.value}"


def test_bad_constant_of_shape():
    g = Graph("bad")
    g.add_param("s", np.array([2, -1], I64))
    with pytest.raises(ShapeError, match=r"node 'c' \(ConstantOfShape\).*\[2, -1\]"):
        g.add_node("ConstantOfShape", ["s"], name="c")
    with pytest.raises(AttributeValueError, match=r"node 'c2' \(ConstantOfShape\).*one element"):
        g.add_node("ConstantOfShape", ["s"], {"value": np.zeros(2, np.float32)}, name="c2")


def test_runtime_gather_index_out_of_range_names_node():
    g = single_node("Gather", {"x": (2, 3)}, {"i": np.array([5], I64)})
    with pytest.raises(
        graphnet.KernelError, match=r"gather \(Gather\): data\(2,3\) indices\(1\).*index 5"
    ):
        runtime.run(g, {"x": arange(2, 3)})


def test_missing_required_input():
    g = Graph("bad")
    g.add_input("x", (2, 3))
    with pytest.raises(GraphError, match="Unsqueeze.*takes 2 inputs"):
        g.add_node("Unsqueeze", ["x"], name="u")
