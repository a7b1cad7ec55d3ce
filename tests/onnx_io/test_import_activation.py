"""ONNX import of the activation ops at opsets 9, 11, 13 and 21: each model is built with
onnx.helper, read with `graphnet.load`, run on our runtime and compared with onnxruntime on the
ORIGINAL model (so the oracle never sees our export). Tolerances: float32 rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import runtime
from tests.helpers import assert_close, export_checked, ort_run, single_node

OPSETS = [9, 11, 13, 21]


def make_model(op, opset, shape, attrs=None, inits=(), outputs=("y",)):
    """One ONNX node `op(x, *inits) -> outputs` at `opset`; a str dim in `shape` is symbolic."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    # Old IR versions require a shape on every graph output; every op here keeps X's shape.
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape) for o in outputs]
    node = helper.make_node(
        op, ["x", *(n for n, _ in inits)], list(outputs), name="n", **(attrs or {})
    )
    graph = helper.make_graph(
        [node], "g", [x], outs, initializer=[numpy_helper.from_array(a, n) for n, a in inits]
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def import_and_compare(model, x, *, expect_ops=None):
    g = graphnet.load(model)
    if expect_ops is not None:
        assert g.op_counts() == expect_ops, repr(g)
    ours = runtime.run(g, {"x": x})
    theirs = ort_run(model, {"x": x})
    for name in theirs:
        assert_close(
            ours[name], theirs[name], what=f"output '{name}' vs onnxruntime on the original model"
        )
    return g


def rand(shape, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(
    "op, attrs",
    [
        ("Relu", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("LeakyRelu", {}),
        ("LeakyRelu", {"alpha": 0.2}),
        ("Elu", {}),
        ("Elu", {"alpha": 0.3}),
    ],
)
def test_import_elementwise(op, attrs, opset):
    shape = (2, 3, 4, 5)
    g = import_and_compare(
        make_model(op, opset, shape, attrs), rand(shape, opset), expect_ops={op: 1}
    )
    (node,) = g.nodes
    if "alpha" in attrs:  # stored as float32 in ONNX, read back as the shortest decimal
        assert node.attrs["alpha"] == attrs["alpha"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("sshape", [(3, 1, 1), (1,), (5,), (4, 5), (3, 4, 5), (1, 1, 1)])
def test_import_prelu_unidirectional_slopes(sshape, opset):
    shape = (2, 3, 4, 5)
    slope = np.random.default_rng(7).uniform(0.05, 0.9, sshape).astype(np.float32)
    model = make_model("PRelu", opset, shape, inits=[("slope", slope)])
    g = import_and_compare(model, rand(shape, opset), expect_ops={"PRelu": 1})
    assert g.params["slope"].shape == sshape


@pytest.mark.parametrize("opset", [13, 21])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_import_softmax_opset13_every_axis(op, opset):
    shape = (2, 3, 4, 5)
    for axis in [None, *range(-4, 4)]:
        attrs = {} if axis is None else {"axis": axis}
        g = import_and_compare(
            make_model(op, opset, shape, attrs), rand(shape, 10 + (axis or 0)), expect_ops={op: 1}
        )
        assert g.nodes[0].attrs["axis"] == (-1 if axis is None else axis)


@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [3, -1])
def test_import_softmax_old_opset_last_axis_is_one_node(op, opset, axis):
    shape = (2, 3, 4, 5)
    g = import_and_compare(
        make_model(op, opset, shape, {"axis": axis}), rand(shape, 1), expect_ops={op: 1}
    )
    assert g.nodes[0].attrs["axis"] == -1


@pytest.mark.parametrize("opset", [9, 11])
def test_import_softmax_old_opset_trailing_ones_is_one_node(opset):
    """Old semantics normalize over dims 1..3 jointly; dims 2, 3 of size 1 make that axis 1
    alone."""
    shape = (4, 6, 1, 1)
    g = import_and_compare(
        make_model("Softmax", opset, shape), rand(shape, 2), expect_ops={"Softmax": 1}
    )
    assert g.nodes[0].attrs["axis"] == 1


@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, -2, -3])
def test_import_softmax_old_opset_flattens_trailing_dims(op, opset, axis):
    """Below opset 13 the op normalizes over all dims from `axis` on (default axis 1)."""
    shape = (2, 3, 4, 5)
    x = rand(shape, 3)
    attrs = {} if axis is None else {"axis": axis}
    g = import_and_compare(make_model(op, opset, shape, attrs), x)
    assert g.op_counts() == {"Flatten": 1, op: 1, "Reshape": 1}, repr(g)
    # Independent of both runtimes: softmax over the flattened trailing block.
    a = 1 if axis is None else axis % 4
    rows = x.reshape(int(np.prod(shape[:a])), -1).astype(np.float64)
    p = np.exp(rows - rows.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expect = (np.log(p) if op == "LogSoftmax" else p).reshape(shape)
    assert_close(runtime.run(g, {"x": x})["y"], expect, what="flattened softmax formula")


def test_import_softmax_old_opset_dynamic_batch():
    model = make_model("Softmax", 11, ("N", 3, 4, 5), {"axis": 2})
    import_and_compare(model, rand((6, 3, 4, 5), 4))


def test_import_softmax_old_opset_two_dynamic_dims_stays_opaque():
    """Reshaping back needs every dim but one statically: with two unknown dims the node is kept."""
    model = make_model("Softmax", 11, ("N", "C", 4, 5), {"axis": 1})
    g = graphnet.load(model)
    assert g.op_counts() == {"Opaque": 1}
    # graphnet writes opset 17+, so the opaque opset-11 node is carried to 21 by onnx's version
    # converter, which spells out the flatten-to-2-D semantics; the model computes the same.
    out = export_checked(g)
    assert [n.op_type for n in out.graph.node][-2:] == ["Softmax", "Reshape"]
    x = rand((2, 3, 4, 5), 5)
    assert_close(
        ort_run(out, {"x": x})["y"],
        ort_run(model, {"x": x})["y"],
        what="converted opaque Softmax-11",
    )


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("Relu", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("LeakyRelu", {"alpha": 0.3}),
        ("Elu", {"alpha": 0.7}),
        ("Softmax", {"axis": 1}),
        ("LogSoftmax", {"axis": -2}),
    ],
)
def test_export_then_import_round_trips(op, attrs):
    g = single_node(op, {"x": (None, 3, 4)}, attrs=attrs)
    back = graphnet.load(export_checked(g))
    (node,) = back.nodes
    assert node.op == op
    for k, v in attrs.items():
        assert node.attrs[k] == v
    x = rand((2, 3, 4), 5)
    assert_close(
        runtime.run(back, {"x": x})[back.outputs[0]],
        runtime.run(g, {"x": x})[g.outputs[0]],
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("opset", [7, 9])
def test_import_old_dropout_with_unread_mask_maps_to_dropout(opset):
    """Old zoo models (AlexNet, VGG, SqueezeNet at opset 9) list a float mask output nobody
    reads."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"], ratio=0.3),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [2, 5])],
        [helper.make_tensor_value_info("y", f, [2, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    g = graphnet.load(model)
    assert g.op_counts() == {"Dropout": 1, "Relu": 1}
    assert g.nodes[0].attrs["drop_prob"] == 0.3 and g.nodes[0].outputs == ["d"]
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    assert_close(
        runtime.run(g, {"x": x})["y"], np.maximum(x, 0), what="inference dropout is the identity"
    )


def _prelu6_model(shape, slope):
    """PRelu at opset 6 (IR 3, where initializers are also listed as graph inputs), as PyTorch's
    opset-6 exports write it."""
    ins = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
        helper.make_tensor_value_info("slope", TensorProto.FLOAT, slope.shape),
    ]
    node = helper.make_node("PRelu", ["x", "slope"], ["y"], name="n")
    graph = helper.make_graph(
        [node],
        "g",
        ins,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(slope, "slope")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (2, 3, 3), (2, 3, 4, 5), (2, 3, 2, 4, 3)])
@pytest.mark.parametrize("shared", [False, True])
def test_import_prelu_opset6_slope_is_per_channel(shape, shared):
    """Before opset 7 a PRelu slope of size C applies along the CHANNEL axis (size 1: shared),
    not from the right: checked against that rule written as a loop over channels (onnxruntime
    has no PRelu-6 kernel). A (C,) slope on (N, C, W) with W == C would be wrong from the right."""
    c = shape[1]
    slope = np.array([0.5] if shared else [0.1 * (k + 1) for k in range(c)], np.float32)
    g = graphnet.load(_prelu6_model(shape, slope))
    assert g.op_counts() == {"PRelu": 1}
    x = rand(shape, len(shape))
    y = runtime.run(g, {"x": x})["y"]
    want = np.empty(shape, np.float64)
    for m in range(c):
        a = slope[0] if shared else slope[m]
        want[:, m] = np.where(x[:, m] >= 0, x[:, m], a * x[:, m].astype(np.float64))
    assert_close(y, want, what="PRelu-6 per channel")


def test_import_prelu_opset6_run_time_slope_stays_opaque():
    model = _prelu6_model((2, 3, 4), np.ones(3, np.float32))
    del model.graph.initializer[:]  # the slope becomes a plain graph input, known only at run time
    assert graphnet.load(model).op_counts() == {"Opaque": 1}
