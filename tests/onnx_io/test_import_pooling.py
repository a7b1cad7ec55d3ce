"""Pooling family: ONNX import at opsets 7..22.

Each model is built with `onnx.helper` at the opset under test, imported with `graphnet.load`,
run on our runtime, and compared with onnxruntime on the original model (float32 rtol 1e-5,
atol 1e-6). Forms graphnet cannot map exactly must come back as Opaque nodes and be written
back unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import graphnet
from graphnet import runtime
from tests.helpers import assert_close, ort_run

RNG = np.random.default_rng(11)


def pool_model(op, opset, x_shape, attrs=None, *, elem=TensorProto.FLOAT, outputs=("y",)):
    """A one-node model: graph input 'x' of `x_shape` (strings are symbolic dims)."""
    node = helper.make_node(op, ["x"], list(outputs), name="pool", **(attrs or {}))
    outs = [
        helper.make_tensor_value_info(o, elem if k == 0 else TensorProto.INT64, None)
        for k, o in enumerate(outputs)
    ]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", elem, list(x_shape))], outs
    )
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )


def check_import(model, x, *, op=None):
    """Import, run, compare with onnxruntime on the original; return the imported graph."""
    g = graphnet.load(model)
    if op is not None:
        assert [n.op for n in g.nodes] == [op], g
    ours = runtime.run(g, {"x": x})["y"]
    theirs = ort_run(model, {"x": x})["y"]
    assert ours.dtype == theirs.dtype
    assert_close(ours, theirs, what=f"opset {model.opset_import[0].version}")
    return g


def x32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------- per opset
MAXPOOL_CASES = [
    (7, {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    (8, {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 0}),
    (9, {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [0, 1, 2, 1]}),
    (
        10,
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
            "dilations": [1, 2],
        },
    ),
    (11, {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 0, 0, 2], "ceil_mode": 1}),
    (12, {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 1, 1, 1]}),
    (21, {"kernel_shape": [3, 3], "strides": [3, 2], "pads": [2, 1, 1, 1], "ceil_mode": 1}),
    (22, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
]


@pytest.mark.parametrize("opset, attrs", MAXPOOL_CASES)
def test_import_max_pool_opsets(opset, attrs):
    check_import(pool_model("MaxPool", opset, (2, 3, 7, 8), attrs), x32(2, 3, 7, 8), op="MaxPool")


AVGPOOL_CASES = [
    (7, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),  # count_include_pad defaults to 0
    (7, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    (9, {"kernel_shape": [2, 3], "strides": [2, 1], "pads": [1, 1, 1, 2], "count_include_pad": 1}),
    (
        10,
        {
            "kernel_shape": [2, 3],
            "strides": [2, 2],
            "pads": [1, 1, 0, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    ),
    (11, {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [0, 1, 2, 1], "ceil_mode": 1}),
    (
        19,
        {"kernel_shape": [2, 2], "dilations": [2, 3], "pads": [1, 1, 1, 0], "count_include_pad": 1},
    ),
    (
        19,
        {
            "kernel_shape": [3, 2],
            "strides": [2, 2],
            "dilations": [2, 1],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
        },
    ),
    (
        21,
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    ),
    (22, {"kernel_shape": [2, 2], "strides": [1, 2]}),
]


@pytest.mark.parametrize("opset, attrs", AVGPOOL_CASES)
def test_import_average_pool_opsets(opset, attrs):
    check_import(
        pool_model("AveragePool", opset, (2, 3, 7, 8), attrs), x32(2, 3, 7, 8), op="AveragePool"
    )


def test_import_count_include_pad_default_is_onnx_zero():
    g = graphnet.load(
        pool_model("AveragePool", 11, (1, 1, 4, 4), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    )
    from graphnet import ops

    n = g.nodes[0]
    assert ops.attrs_of(n, [g.values["x"]])["count_include_pad"] == 0
    # corner of a ones input: 4 real taps of 9 -> 1.0 (count_include_pad=1 would give 4/9)
    y = runtime.run(g, {"x": np.ones((1, 1, 4, 4), np.float32)})["y"]
    assert y[0, 0, 0, 0] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    "shape, attrs",
    [
        ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "ceil_mode": 1}),
        (
            (1, 2, 5, 6, 7),
            {
                "kernel_shape": [2, 3, 2],
                "strides": [2, 1, 3],
                "pads": [1, 0, 1, 0, 1, 1],
                "ceil_mode": 1,
            },
        ),
    ],
)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_import_1d_and_3d(op, shape, attrs):
    check_import(pool_model(op, 21, shape, attrs), x32(*shape), op=op)


# --------------------------------------------------------------------------- auto_pad
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"])
@pytest.mark.parametrize(
    "op, opset", [("MaxPool", 10), ("MaxPool", 21), ("AveragePool", 7), ("AveragePool", 21)]
)
@pytest.mark.parametrize(
    "shape, kernel, strides",
    [
        ((1, 2, 7, 6), [3, 2], [2, 2]),
        ((1, 2, 8), [4], [3]),
        ((1, 1, 5, 4, 6), [2, 3, 3], [2, 1, 2]),
    ],
)
def test_import_auto_pad(auto_pad, op, opset, shape, kernel, strides):
    attrs = {"kernel_shape": kernel, "strides": strides, "auto_pad": auto_pad}
    if op == "AveragePool" and opset >= 7:
        attrs["count_include_pad"] = 1  # so that the computed pads show in the values too
    check_import(pool_model(op, opset, shape, attrs), x32(*shape), op=op)


@pytest.mark.parametrize(
    "auto_pad, pads",
    [
        # in 7, kernel 3, stride 2: out = ceil(7/2) = 4, total pad = 3*2 + 3 - 7 = 2 -> (1, 1)
        # in 6, kernel 2, stride 2: out = 3, total = 2*2 + 2 - 6 = 0
        # in 5, kernel 2, stride 1: out = 5, total = 1 -> UPPER (0, 1), LOWER (1, 0)
        ("SAME_UPPER", (1, 0, 0, 1, 0, 1)),
        ("SAME_LOWER", (1, 0, 1, 1, 0, 0)),
        ("VALID", (0, 0, 0, 0, 0, 0)),
    ],
)
def test_auto_pad_becomes_explicit_pads(auto_pad, pads):
    model = pool_model(
        "MaxPool",
        21,
        (1, 1, 7, 6, 5),
        {"kernel_shape": [3, 2, 2], "strides": [2, 2, 1], "auto_pad": auto_pad},
    )
    g = check_import(model, x32(1, 1, 7, 6, 5), op="MaxPool")
    assert tuple(g.nodes[0].attrs["pads"]) == pads
    assert "auto_pad" not in g.nodes[0].attrs


def test_valid_auto_pad_with_dynamic_spatial_dims_is_mapped():
    model = pool_model(
        "AveragePool", 21, ("N", 2, "H", "W"), {"kernel_shape": [2, 2], "auto_pad": "VALID"}
    )
    check_import(model, x32(3, 2, 5, 7), op="AveragePool")


# --------------------------------------------------------------------------- kept opaque
def assert_opaque_round_trip(model, x=None):
    g = graphnet.load(model)
    assert [n.op for n in g.nodes] == ["Opaque"], g
    # export writes opset 17+; MaxPool/AveragePool did not change between 12 and 21
    back = g.to_onnx(opset=max(17, model.opset_import[0].version))
    orig, new = model.graph.node[0], back.graph.node[0]
    assert (new.op_type, list(new.input), list(new.output), list(new.attribute)) == (
        orig.op_type,
        list(orig.input),
        list(orig.output),
        list(orig.attribute),
    )
    if x is not None:  # written back unchanged, it still computes the same on onnxruntime
        theirs, again = ort_run(model, {"x": x}), ort_run(back, {"x": x})
        for k in theirs:
            np.testing.assert_array_equal(again[k], theirs[k])


def test_same_auto_pad_on_dynamic_spatial_shape_stays_opaque():
    model = pool_model(
        "MaxPool",
        21,
        (1, 2, "H", "W"),
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    )
    assert_opaque_round_trip(model, x32(1, 2, 7, 9))


def test_same_auto_pad_with_dilations_stays_opaque():
    """onnxruntime sizes SAME padding with the undilated kernel (6 -> 4 outputs here, against the
    spec's 6), so no explicit pads reproduce it faithfully."""
    model = pool_model(
        "MaxPool", 21, (1, 1, 6), {"kernel_shape": [2], "dilations": [3], "auto_pad": "SAME_UPPER"}
    )
    assert_opaque_round_trip(model, x32(1, 1, 6))


@pytest.mark.parametrize("opset", [8, 10, 12, 21, 22])
@pytest.mark.parametrize("storage_order", [0, 1])
def test_import_max_pool_indices(opset, storage_order):
    """The Indices output maps onto the IR MaxPool's (with its storage_order): both outputs equal
    onnxruntime's on the original model, and on our re-export."""
    attrs = {
        "kernel_shape": [3, 2],
        "strides": [2, 2],
        "pads": [1, 0, 1, 1],
        "storage_order": storage_order,
    }
    model = pool_model("MaxPool", opset, (2, 3, 7, 8), attrs, outputs=("y", "idx"))
    g = graphnet.load(model)
    (node,) = g.nodes
    assert (
        node.op == "MaxPool"
        and node.outputs == ["y", "idx"]
        and node.attrs["storage_order"] == storage_order
    )
    x = x32(2, 3, 7, 8)
    ours, theirs = runtime.run(g, {"x": x}), ort_run(model, {"x": x})
    back = ort_run(g.to_onnx(), {"x": x})
    for k in ("y", "idx"):
        assert ours[k].dtype == theirs[k].dtype
        np.testing.assert_array_equal(ours[k], theirs[k])
        np.testing.assert_array_equal(back[k], theirs[k])


def test_storage_order_without_indices_is_mapped():
    # storage_order only changes the Indices output; without it the node is a plain MaxPool.
    model = pool_model("MaxPool", 12, (1, 2, 5, 5), {"kernel_shape": [2, 2], "storage_order": 1})
    g = check_import(model, x32(1, 2, 5, 5), op="MaxPool")
    assert "storage_order" not in g.nodes[0].attrs


def test_pads_not_smaller_than_kernel_stay_opaque():
    # onnxruntime refuses this model; graphnet keeps it as it is rather than failing the import.
    assert_opaque_round_trip(
        pool_model("AveragePool", 21, (1, 1, 5, 5), {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]})
    )


# --------------------------------------------------------------------------- global pools, dtypes
@pytest.mark.parametrize("opset", [9, 21, 22])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_import_global_pools(op, shape, opset):
    check_import(pool_model(op, opset, shape), x32(*shape), op=op)


def test_import_int8_max_pool():
    model = pool_model(
        "MaxPool",
        12,
        (1, 2, 5, 5),
        {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        elem=TensorProto.INT8,
    )
    x = RNG.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    g = graphnet.load(model)
    np.testing.assert_array_equal(runtime.run(g, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_round_trip_reexport_matches():
    """Import at opset 10, export at 21, and the re-export agrees with the original on
    onnxruntime."""
    model = pool_model(
        "AveragePool",
        10,
        (2, 3, 9, 9),
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    )
    x = x32(2, 3, 9, 9)
    back = graphnet.load(model).to_onnx()
    assert_close(ort_run(back, {"x": x})["y"], ort_run(model, {"x": x})["y"])
