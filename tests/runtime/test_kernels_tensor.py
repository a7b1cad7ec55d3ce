"""Tensor ops: Flatten, Concat, Add (and ONNX's Sum, imported as a chain of Adds).

Each kernel is checked against a plain reference written here (index arithmetic for Flatten,
slice-by-slice filling for Concat, an element loop for broadcasting Add) and against onnxruntime on
our export; imports against onnxruntime on the original ONNX model at opsets 9, 11, 13 and 21; and
DSL-built residual and Inception-style graphs against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import graphnet
from graphnet import ops, runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import Graph
from graphnet.nn import Conv, Flatten, Linear, Network, ReLU, add, concat
from tests.helpers import assert_close, compare_with_ort, export_checked, ort_run, rand, single_node

RNG = np.random.default_rng


# ------------------------------------------------------------------------- references (plain)
def flatten_ref(x: np.ndarray, axis: int) -> np.ndarray:
    """Row-major enumeration: element number `lin` of x lands at (lin // cols, lin % cols)."""
    axis = axis + x.ndim if axis < 0 else axis
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    cols = int(np.prod(x.shape[axis:], dtype=np.int64))
    out = np.empty((rows, cols), x.dtype)
    for lin, idx in enumerate(np.ndindex(*x.shape)):
        out[lin // cols, lin % cols] = x[idx]
    return out


def concat_ref(xs: list[np.ndarray], axis: int) -> np.ndarray:
    """Allocate the result and copy each input into its slab along `axis`."""
    axis = axis + xs[0].ndim if axis < 0 else axis
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = np.full(shape, np.nan, xs[0].dtype)
    offset = 0
    for x in xs:
        index = [slice(None)] * x.ndim
        index[axis] = slice(offset, offset + x.shape[axis])
        out[tuple(index)] = x
        offset += x.shape[axis]
    return out


def add_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Broadcasting written out: every output index reads a and b at that index, size-1 axes
    pinned."""
    r = max(a.ndim, b.ndim)
    a_, b_ = a.reshape((1,) * (r - a.ndim) + a.shape), b.reshape((1,) * (r - b.ndim) + b.shape)
    shape = tuple(max(da, db) for da, db in zip(a_.shape, b_.shape, strict=True))
    out = np.empty(shape, a.dtype)
    for idx in np.ndindex(*shape):
        ia = tuple(0 if d == 1 else i for i, d in zip(idx, a_.shape, strict=True))
        ib = tuple(0 if d == 1 else i for i, d in zip(idx, b_.shape, strict=True))
        out[idx] = a_[ia] + b_[ib]
    return out


# ------------------------------------------------------------------------------------ Flatten
FLATTEN_SHAPES = [(2, 3, 4), (2, 3, 4, 5), (2, 1, 3, 2, 2)]
FLATTEN_CASES = [(s, axis) for s in FLATTEN_SHAPES for axis in range(-len(s), len(s) + 1)]


@pytest.mark.parametrize(
    "shape, axis", FLATTEN_CASES, ids=[f"{s}-axis{a}" for s, a in FLATTEN_CASES]
)
def test_flatten_matches_reference_and_onnxruntime(shape, axis):
    x = rand(RNG(len(shape)), *shape)
    g = single_node("Flatten", {"x": shape}, attrs={"axis": axis})
    expected = flatten_ref(x, axis)
    assert g.values["flatten.out"].shape == expected.shape
    ours = compare_with_ort(g, {"x": x}, rtol=0, atol=0)["flatten.out"]  # a copy: bit-exact
    np.testing.assert_array_equal(ours, expected)


def test_flatten_default_axis_dynamic_batch_and_zero_size():
    g = Graph("f")
    g.add_input("x", (None, 3, 4))
    g.add_node("Flatten", ["x"], name="f1")
    g.add_node("Flatten", ["x"], {"axis": 2}, name="f2")
    g.add_node("Flatten", ["x"], {"axis": 0}, name="f0")
    assert g.values["f1.out"].shape == (None, 12)
    assert g.values["f2.out"].shape == (None, 4)  # the batch is on the dynamic side
    assert g.values["f0.out"].shape == (1, None)
    for o in ("f1.out", "f2.out", "f0.out"):
        g.mark_output(o)
    # An empty batch: reshape(rows, -1) would be ambiguous, the kernel gives both sizes.
    out = runtime.run(g, {"x": np.zeros((0, 3, 4), np.float32)})
    assert (
        out["f1.out"].shape == (0, 12)
        and out["f2.out"].shape == (0, 4)
        and out["f0.out"].shape == (1, 0)
    )
    x = rand(RNG(0), 5, 3, 4)
    compare_with_ort(g, {"x": x}, rtol=0, atol=0)
    assert ops.get("Flatten").macs is None


@pytest.mark.parametrize("axis", [5, -5, 7])
def test_flatten_bad_axis_names_node_and_shape(axis):
    with pytest.raises(AttributeValueError) as info:
        single_node("Flatten", {"x": (2, 3, 4, 5)}, attrs={"axis": axis})
    msg = str(info.value)
    assert "node 'flatten' (Flatten)" in msg and f"axis {axis} is out of range [-4, 4]" in msg, msg
    assert "X(2,3,4,5)" in msg, msg


@pytest.mark.parametrize("axis", [-1, -2, -3])
def test_kernels_accept_negative_axes(axis):
    """`resolve` makes axes non-negative when the rank is known; a node whose input shape was
    unknown at plan time (an import without shape information) hands the kernel the raw axis."""
    from graphnet.runtime.kernels import get_kernel

    x = rand(RNG(0), 2, 3, 4)
    np.testing.assert_array_equal(get_kernel("Flatten").fn(x, axis=axis), flatten_ref(x, axis))
    y = rand(RNG(1), 2, 3, 4)
    np.testing.assert_array_equal(
        get_kernel("Concat").fn(x, y, axis=axis), concat_ref([x, y], axis)
    )


def test_flatten_keeps_int_dtype():
    x = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    g = single_node("Flatten", {"x": x.shape}, attrs={"axis": 2}, dtype="int64")
    ours = runtime.run(g, {"x": x})["flatten.out"]
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, flatten_ref(x, 2))


# ------------------------------------------------------------------------------------- Concat
@settings(max_examples=30, deadline=None)
@given(
    rank=st.integers(3, 5),
    n_inputs=st.integers(1, 4),
    axis_pick=st.integers(0, 9),
    data=st.data(),
)
def test_concat_matches_reference_and_onnxruntime(rank, n_inputs, axis_pick, data):
    axis = axis_pick % (2 * rank) - rank  # every axis in [-rank, rank)
    base = data.draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank), label="base")
    sizes = data.draw(
        st.lists(st.integers(1, 4), min_size=n_inputs, max_size=n_inputs), label="sizes"
    )
    shapes = []
    for s in sizes:
        shape = list(base)
        shape[axis] = s
        shapes.append(tuple(shape))
    rng = RNG(sum(sizes) + rank)
    xs = [rand(rng, *s) for s in shapes]
    g = single_node("Concat", {f"x{k}": s for k, s in enumerate(shapes)}, attrs={"axis": axis})
    expected = concat_ref(xs, axis)
    assert g.values["concat.out"].shape == expected.shape
    ours = compare_with_ort(g, {f"x{k}": x for k, x in enumerate(xs)}, rtol=0, atol=0)["concat.out"]
    np.testing.assert_array_equal(ours, expected)


def test_concat_dynamic_dims_and_params():
    g = Graph("c")
    g.add_input("a", (None, 2, 5))
    g.add_input("b", (None, 3, 5))
    g.add_param("p", np.ones((1, 4, 5), np.float32))
    g.add_node("Concat", ["a", "b"], {"axis": -2}, name="c1")
    g.add_node("Concat", ["a", "b", "a"], {"axis": 1}, name="c2")
    g.add_node("Concat", ["a", "a"], {"axis": 0}, name="c0")
    assert g.values["c1.out"].shape == (None, 5, 5)
    assert g.values["c2.out"].shape == (None, 7, 5)
    assert g.values["c0.out"].shape == (None, 2, 5)  # a dynamic size along the axis stays dynamic
    g.add_node("Concat", ["p", "p"], {"axis": 2}, name="cp")
    assert g.values["cp.out"].shape == (1, 4, 10)
    for o in ("c1.out", "c2.out", "c0.out", "cp.out"):
        g.mark_output(o)
    rng = RNG(2)
    feeds = {"a": rand(rng, 3, 2, 5), "b": rand(rng, 3, 3, 5)}
    ours = compare_with_ort(g, feeds, rtol=0, atol=0)
    np.testing.assert_array_equal(ours["c1.out"], concat_ref([feeds["a"], feeds["b"]], 1))
    np.testing.assert_array_equal(ours["c0.out"], concat_ref([feeds["a"], feeds["a"]], 0))


@pytest.mark.parametrize(
    "shapes, axis, error, words",
    [
        (
            [(2, 3, 4), (2, 5, 5)],
            1,
            ShapeError,
            [
                "node 'concat' (Concat)",
                "dim 2 differs (5 != 4) off the concat axis 1",
                "'x1'(2,5,5) vs 'x0'(2,3,4)",
            ],
        ),
        ([(2, 3, 4), (2, 3)], 0, ShapeError, ["ranks differ: 'x1'(2,3) vs 'x0'(2,3,4)"]),
        (
            [(2, 3, 4), (2, 3, 4)],
            3,
            AttributeValueError,
            ["axis 3 is out of range [-3, 2]", "x0(2,3,4)"],
        ),
        ([(2, 3, 4), (2, 3, 4)], -4, AttributeValueError, ["axis -4 is out of range [-3, 2]"]),
        ([(), ()], 0, ShapeError, ["is a scalar"]),
    ],
)
def test_concat_bad_input_names_node_and_shapes(shapes, axis, error, words):
    with pytest.raises(error) as info:
        single_node("Concat", {f"x{k}": s for k, s in enumerate(shapes)}, attrs={"axis": axis})
    for w in words:
        assert w in str(info.value), str(info.value)


def test_concat_requires_axis_and_same_dtype():
    with pytest.raises(
        AttributeValueError, match=r"node 'concat' \(Concat\): required attribute\(s\) \['axis'\]"
    ):
        single_node("Concat", {"a": (2, 3), "b": (2, 3)})
    g = Graph("d")
    g.add_input("a", (2, 3))
    g.add_input("b", (2, 3), "float64")
    with pytest.raises(ShapeError, match="dtypes differ: 'a' is float32, 'b' is float64"):
        g.add_node("Concat", ["a", "b"], {"axis": 0}, name="cat")


# ---------------------------------------------------------------------------------------- Add
ADD_SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (3, 1, 1)),
    ((1, 3, 1), (2, 1, 4)),
    ((5,), (2, 3, 5)),
    ((), (2, 3)),
]


@pytest.mark.parametrize("a_shape, b_shape", ADD_SHAPES)
def test_add_broadcasts_like_reference_and_onnxruntime(a_shape, b_shape):
    rng = RNG(len(a_shape) + 7 * len(b_shape))
    # np.asarray: helpers.rand gives a NumPy scalar for shape (), which onnxruntime rejects.
    a, b = np.asarray(rand(rng, *a_shape)), np.asarray(rand(rng, *b_shape))
    g = single_node("Add", {"a": a_shape, "b": b_shape})
    ours = compare_with_ort(g, {"a": a, "b": b})["add.out"]
    assert ours.dtype == np.float32
    assert_close(ours, add_ref(a, b), what="Add vs element loop")  # one rounding each: equal


def test_add_bad_shapes_and_no_macs():
    with pytest.raises(
        ShapeError, match=r"node 'add' \(Add\): shapes \(2,3\) and \(4,3\) do not broadcast"
    ):
        single_node("Add", {"a": (2, 3), "b": (4, 3)})
    assert ops.get("Add").macs is None  # one add per element: negligible next to conv/matmul


# ------------------------------------------------------------------------------------- import
def _model(nodes, inputs, outputs, opset, inits=(), check=True):
    graph = helper.make_graph(list(nodes), "m", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _check_import(model, feeds, ops_expected):
    g = graphnet.load(model)
    assert [n.op for n in g.nodes] == ops_expected
    ours = runtime.run(g, feeds)
    theirs = ort_run(model, feeds)
    assert set(theirs) == set(g.outputs)
    for name, arr in theirs.items():
        assert_close(ours[name], arr, what=f"imported '{name}' vs onnxruntime")
    return g


# Negative axes are valid from opset 11 on only.
@pytest.mark.parametrize(
    "opset, axis", [(9, 0), (9, 2), (9, 4), (11, -1), (11, 0), (13, -3), (13, 1), (21, -4), (21, 3)]
)
def test_import_flatten(opset, axis):
    x = rand(RNG(opset), 2, 3, 2, 2)
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    shape = flatten_ref(x, axis).shape
    g = _check_import(
        _model([node], [_f32("x", x.shape)], [_f32("y", shape)], opset), {"x": x}, ["Flatten"]
    )
    assert g.values["y"].shape == shape


@pytest.mark.parametrize("opset", [9, 21])
def test_import_flatten_default_axis(opset):
    x = rand(RNG(1), 3, 2, 4)
    node = helper.make_node("Flatten", ["x"], ["y"])
    g = _check_import(
        _model([node], [_f32("x", ("N", 2, 4))], [_f32("y", ("N", 8))], opset),
        {"x": x},
        ["Flatten"],
    )
    assert g.values["y"].shape == ("N", 8)


@pytest.mark.parametrize(
    "opset, axis", [(9, 1), (9, 0), (11, -1), (11, 2), (13, -3), (21, 1), (21, -2)]
)
def test_import_concat(opset, axis):
    rng = RNG(opset)
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    xs = [rand(rng, *s) for s in shapes]
    out_shape = concat_ref(xs, axis).shape
    node = helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=axis)
    model = _model(
        [node],
        [_f32(n, s) for n, s in zip("abc", shapes, strict=True)],
        [_f32("y", out_shape)],
        opset,
    )
    _check_import(model, dict(zip("abc", xs, strict=True)), ["Concat"])


def test_import_concat_with_constant_input():
    c = rand(RNG(3), 1, 2)
    node = helper.make_node("Concat", ["x", "c"], ["y"], axis=1)
    model = _model(
        [node], [_f32("x", (1, 3))], [_f32("y", (1, 5))], 13, [onnx.numpy_helper.from_array(c, "c")]
    )
    _check_import(model, {"x": rand(RNG(4), 1, 3)}, ["Concat"])


@pytest.mark.parametrize("opset", [9, 13, 14, 21])
@pytest.mark.parametrize(
    "a_shape, b_shape", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((4,), (2, 3, 4))]
)
def test_import_add(opset, a_shape, b_shape):
    rng = RNG(opset)
    out = np.broadcast_shapes(a_shape, b_shape)
    node = helper.make_node("Add", ["a", "b"], ["y"])
    model = _model([node], [_f32("a", a_shape), _f32("b", b_shape)], [_f32("y", out)], opset)
    _check_import(model, {"a": rand(rng, *a_shape), "b": rand(rng, *b_shape)}, ["Add"])


def legacy_add_ref(a: np.ndarray, b: np.ndarray, axis: int | None) -> np.ndarray:
    """Add-1/6 with broadcast=1: B's dims sit at A's dims axis..axis+rank(B)-1 (the trailing ones
    without `axis`); a size-1 B dim repeats. Written as an element loop over A."""
    start = a.ndim - b.ndim if axis is None else axis
    out = np.empty(a.shape, np.float64)
    for idx in np.ndindex(*a.shape):
        bidx = tuple(0 if b.shape[k] == 1 else idx[start + k] for k in range(b.ndim))
        out[idx] = float(a[idx]) + float(b[bidx])
    return out


def _opset6_model(nodes, inputs, outputs, inits=()):
    """IR 3 (opset 6): initializers are listed among the graph inputs too."""
    ins = list(inputs) + [_f32(t.name, tuple(t.dims)) for t in inits]
    graph = helper.make_graph(list(nodes), "m", ins, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    onnx.checker.check_model(model, full_check=True)
    return model


LEGACY_ADD = [  # (A shape, B shape, attributes)
    ((2, 3), (3,), {"broadcast": 1, "axis": 1}),
    ((2, 3), (2, 1), {"broadcast": 1, "axis": 0}),
    ((2, 3), (1, 3), {"broadcast": 1, "axis": 0}),
    ((2, 3, 4, 5), (3, 4), {"broadcast": 1, "axis": 1}),  # needs 1 trailing size-1 dim on B
    ((2, 3, 4, 5), (2,), {"broadcast": 1, "axis": 0}),  # needs 3
    ((2, 3, 4, 5), (3,), {"broadcast": 1, "axis": -3}),
    ((2, 3, 4, 5), (4, 5), {"broadcast": 1}),  # no axis: the trailing dims (today's rule)
    ((2, 3, 4, 5), (), {"broadcast": 1}),
    ((2, 3), (2, 3), {}),
]


@pytest.mark.parametrize("a_shape, b_shape, attrs", LEGACY_ADD)
@pytest.mark.parametrize("b_const", [False, True])
def test_import_add_opset6_legacy_broadcast(a_shape, b_shape, attrs, b_const):
    """Add-6's `broadcast`/`axis` (PyTorch's opset-6 exports) vs the old rule written as a loop
    (onnxruntime has no Add-6 kernel). A constant B is reshaped; a run-time one goes through
    Unsqueeze when it needs trailing size-1 dims."""
    rng = RNG(len(a_shape) * 10 + len(b_shape))
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    node = helper.make_node("Add", ["a", "b"], ["y"], **attrs)
    inits = [onnx.numpy_helper.from_array(b, "b")] if b_const else []
    inputs = [_f32("a", a_shape)] + ([] if b_const else [_f32("b", b_shape)])
    model = _opset6_model([node], inputs, [_f32("y", a_shape)], inits)
    g = graphnet.load(model)
    axis = attrs.get("axis")
    extra = 0 if axis is None else len(a_shape) - (axis % len(a_shape)) - len(b_shape)
    assert [n.op for n in g.nodes] == (["Unsqueeze", "Add"] if extra and not b_const else ["Add"])
    feeds = {"a": a} if b_const else {"a": a, "b": b}
    assert_close(runtime.run(g, feeds)["y"], legacy_add_ref(a, b, axis), what=f"Add-6 {attrs}")


def test_import_add_opset6_inexpressible_stays_opaque():
    """B's dims cannot start at `axis` when they would run past A's last dim."""
    node = helper.make_node("Add", ["a", "b"], ["y"], broadcast=1, axis=2)
    model = _opset6_model([node], [_f32("a", (2, 3, 4)), _f32("b", (4, 5))], [_f32("y", (2, 3, 4))])
    assert graphnet.load(model).op_counts() == {"Opaque": 1}


@pytest.mark.parametrize("opset", [9, 13, 21])
@pytest.mark.parametrize("n_inputs", [2, 3, 4])
def test_import_sum_becomes_add_chain(opset, n_inputs):
    rng = RNG(opset * 10 + n_inputs)
    shapes = [(2, 3, 4), (3, 4), (2, 1, 4), (4,)][:n_inputs]  # Sum broadcasts from opset 8 on
    names = [f"x{k}" for k in range(n_inputs)]
    feeds = {n: rand(rng, *s) for n, s in zip(names, shapes, strict=True)}
    node = helper.make_node("Sum", names, ["y"], name="total")
    model = _model(
        [node],
        [_f32(n, s) for n, s in zip(names, shapes, strict=True)],
        [_f32("y", (2, 3, 4))],
        opset,
    )
    g = _check_import(model, feeds, ["Add"] * (n_inputs - 1))
    assert g.nodes[-1].outputs == ["y"] and g.nodes[-1].name == "total"
    expected = feeds[names[0]]
    for n in names[1:]:
        expected = add_ref(expected, feeds[n])
    assert_close(runtime.run(g, feeds)["y"], expected, what="Sum vs chained adds")


def test_import_single_input_sum():
    """One-input Sum is the identity: imported as Identity."""
    node = helper.make_node("Sum", ["x"], ["y"])
    model = _model([node], [_f32("x", (2, 3))], [_f32("y", (2, 3))], 13)
    _check_import(model, {"x": rand(RNG(0), 2, 3)}, ["Identity"])


def test_import_without_shape_information_runs_negative_axes():
    """No shapes in the model: the axes reach the kernels unresolved (still negative)."""
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["c"], axis=-2),
        helper.make_node("Flatten", ["c"], ["y"], axis=-1),
    ]
    model = _model(nodes, [_f32("a", None), _f32("b", None)], [_f32("y", None)], 13, check=False)
    # (onnx's checker insists on graph input shapes; onnxruntime runs the model without them)
    rng = RNG(9)
    feeds = {"a": rand(rng, 2, 1, 3), "b": rand(rng, 2, 2, 3)}
    g = _check_import(model, feeds, ["Concat", "Flatten"])
    assert g.values["c"].shape is None  # so `resolve` could not normalize Flatten's axis
    assert ops.attrs_of(g.nodes[1], [g.values["c"]])["axis"] == -1
    expected = flatten_ref(concat_ref([feeds["a"], feeds["b"]], -2), -1)
    np.testing.assert_array_equal(runtime.run(g, feeds)["y"], expected)


def test_import_export_round_trip_of_tensor_ops():
    rng = RNG(5)
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["c"], axis=-1),
        helper.make_node("Sum", ["c", "c", "d"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"], axis=-1),
    ]
    model = _model(
        nodes,
        [_f32("a", ("N", 3, 2)), _f32("b", ("N", 3, 1)), _f32("d", (3, 3))],
        [_f32("y", ("M", 3))],
        13,
    )
    feeds = {"a": rand(rng, 2, 3, 2), "b": rand(rng, 2, 3, 1), "d": rand(rng, 3, 3)}
    g = _check_import(model, feeds, ["Concat", "Add", "Add", "Flatten"])
    again = export_checked(g)
    assert_close(ort_run(again, feeds)["y"], ort_run(model, feeds)["y"], what="re-exported model")


# ---------------------------------------------------------------------------------------- DSL
# Conv sums 3x3 taps over up to 8 channels (72 products) in the blocks below; float32 rounding
# order differs between onnxruntime's conv and our NumPy kernels, hence atol 1e-5 on those graphs.
BLOCK_ATOL = 1e-5


def test_residual_block_with_add():
    net = Network("residual", seed=1)
    x = net.input("x", (None, 4, 6, 6))
    y = ReLU()(Conv(4, 3, padding=1)(x))
    y = Conv(4, 3, padding=1)(y)
    out = ReLU()(add(x, y))
    net.output(out, name="y")
    g = net.graph
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Conv", "Add", "Relu"]
    (add_node,) = [n for n in g.nodes if n.op == "Add"]
    assert add_node.name == "add1" and add_node.inputs[0] == "x"
    feeds = {"x": rand(RNG(0), 2, 4, 6, 6)}
    ours = compare_with_ort(g, feeds, atol=BLOCK_ATOL)["y"]
    inner = runtime.run(g, feeds, keep_all=True)
    assert_close(
        ours, np.maximum(feeds["x"] + inner[g.nodes[2].outputs[0]], 0), what="relu(x + F(x))"
    )


def test_inception_block_with_concat_and_classifier():
    """Inception-style: 1x1, a 3x3 factored into 1x3 then 3x1, and a 3x3 branch, merged along
    channels, then Flatten + Linear (the classic template's tail)."""
    net = Network("inception", seed=2)
    x = net.input("x", (None, 3, 5, 5))
    b1 = ReLU()(Conv(2, 1)(x))
    b2 = Conv(3, (3, 1), padding=(1, 0))(Conv(3, (1, 3), padding=(0, 1))(x))
    b3 = Conv(4, 3, padding=1)(x)
    merged = concat([b1, b2, b3, x], axis=1)
    assert merged.shape == ("N", 2 + 3 + 4 + 3, 5, 5)
    logits = Linear(6)(Flatten()(merged))
    net.output(logits, name="logits")
    net.output(merged, name="merged")
    feeds = {"x": rand(RNG(1), 3, 3, 5, 5)}
    ours = compare_with_ort(net.graph, feeds, atol=BLOCK_ATOL)
    inner = runtime.run(net.graph, feeds, keep_all=True)
    branches = [inner[t.name] for t in (b1, b2, b3)] + [feeds["x"]]
    np.testing.assert_array_equal(ours["merged"], concat_ref(branches, 1))


def test_dsl_concat_and_add_errors_name_the_layer():
    net = Network("errs")
    a = net.input("a", (None, 3, 4, 4))
    b = net.input("b", (None, 5, 2, 2))
    with pytest.raises(ShapeError) as info:
        concat([a, b], axis=1)
    assert "node 'concat1' (Concat)" in str(info.value) and "'b'(N,5,2,2) vs 'a'(N,3,4,4)" in str(
        info.value
    )
    with pytest.raises(
        ShapeError,
        match=r"node 'skip' \(Add\): shapes \(N,3,4,4\) and \(N,5,2,2\) do not broadcast",
    ):
        add(a, b, name="skip")
    with pytest.raises(
        AttributeValueError, match=r"node 'flatten1' \(Flatten\): axis 5 is out of range"
    ):
        Flatten(5)(a)
    with pytest.raises(AttributeValueError, match="Flatten: axis must be an int"):
        Flatten(1.5)
