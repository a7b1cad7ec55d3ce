"""Import of ONNX Conv / ConvTranspose built with `onnx.helper` at opsets 9, 11, 13, 17 and 21:
explicit attributes, missing kernel_shape, auto_pad (SAME_UPPER, SAME_LOWER, VALID),
ConvTranspose output_shape / output_padding, and the forms kept opaque.

Every case runs the imported graph on our runtime and the original model on onnxruntime.
Inputs and weights are small integers, so every product and sum is exact in float32 and the two
must agree exactly (a misplaced pad changes integers, it cannot hide in a tolerance).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.onnx_io.rules.conv import conv_transpose_pads
from graphnet.ops._shapes import same_pad as same_pads
from tests.helpers import export_checked, ort_run
from tests.oracles import naive_conv, naive_conv_transpose

OPSETS = [9, 11, 13, 17, 21]


def _ints(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(-3, 4, size=shape).astype(np.float32)


def _model(
    op: str,
    opset: int,
    x_shape,
    w: np.ndarray,
    b: np.ndarray | None = None,
    pre_relu: bool = False,
    check: bool = True,
    **attrs,
):
    """A one-node ONNX model (optionally Relu -> op, so X's shape comes from inference)."""
    inits = [numpy_helper.from_array(w, "w")]
    ins = ["x", "w"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "b"))
        ins.append("b")
    nodes = []
    if pre_relu:
        nodes.append(helper.make_node("Relu", ["x"], ["r"], name="relu"))
        ins[0] = "r"
    nodes.append(helper.make_node(op, ins, ["y"], name="node", **attrs))
    # A dynamic dim: the batch N on axis 0, a symbol of its own elsewhere (one name for all
    # would declare them equal).
    dims = [d if d is not None else "N" if k == 0 else f"d{k}" for k, d in enumerate(x_shape)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, [f"o{i}" for i in range(len(x_shape))]
            )
        ],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def _import_and_compare(model, x: np.ndarray) -> graphnet.Graph:
    g = graphnet.load(model)
    assert "Opaque" not in g.op_counts(), g
    ours = runtime.run(g, {"x": x})["y"]
    theirs = ort_run(model, {"x": x})["y"]
    np.testing.assert_array_equal(ours, theirs)
    # and back out: the explicit pads we derived must mean the same thing to onnxruntime
    np.testing.assert_array_equal(ort_run(export_checked(g), {"x": x})["y"], theirs)
    return g


# ------------------------------------------------------------------------------------ Conv
CONV_CASES = {
    "explicit-2d": (
        (2, 4, 7, 6),
        (6, 2, 3, 2),
        True,
        dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2], group=2),
    ),
    "no-kernel-shape-defaults": ((1, 3, 5, 5), (2, 3, 3, 3), False, {}),
    "depthwise-1d": ((1, 4, 9), (8, 1, 3), True, dict(group=4, pads=[1, 1])),
    "3d": (
        (1, 2, 4, 5, 3),
        (3, 2, 2, 3, 2),
        True,
        dict(strides=[1, 2, 1], pads=[0, 1, 1, 1, 0, 0]),
    ),
    "same-upper-2d": (
        (1, 2, 7, 8),
        (3, 2, 4, 3),
        True,
        dict(auto_pad="SAME_UPPER", strides=[2, 3]),
    ),
    "same-lower-2d": (
        (1, 2, 7, 8),
        (3, 2, 4, 3),
        True,
        dict(auto_pad="SAME_LOWER", strides=[2, 3]),
    ),
    "same-upper-1d-odd": ((2, 1, 6), (2, 1, 4), False, dict(auto_pad="SAME_UPPER")),
    "same-lower-3d": (
        (1, 1, 5, 4, 6),
        (2, 1, 2, 3, 3),
        False,
        dict(auto_pad="SAME_LOWER", strides=[2, 1, 2]),
    ),
    "same-stride-beyond-kernel": (
        (1, 1, 9),
        (1, 1, 2),
        False,
        dict(auto_pad="SAME_UPPER", strides=[4]),
    ),
    "valid-ignores-pads-attr": (
        (1, 2, 6, 6),
        (2, 2, 3, 3),
        True,
        dict(auto_pad="VALID", strides=[2, 2]),
    ),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_import_conv(opset, case):
    x_shape, w_shape, bias, attrs = CONV_CASES[case]
    rng = np.random.default_rng(len(case) + opset)
    w = _ints(rng, w_shape)
    b = _ints(rng, w_shape[0]) if bias else None
    _import_and_compare(_model("Conv", opset, x_shape, w, b, **attrs), _ints(rng, x_shape))


def test_same_pads_by_hand():
    # in 7, k 4, s 1: out 7, total pad 3 -> UPPER (1, 2), LOWER (2, 1)
    assert same_pads(7, 4, 1, 1, upper=True) == (1, 2)
    assert same_pads(7, 4, 1, 1, upper=False) == (2, 1)
    # in 7, k 3, s 2: out 4 = ceil(7/2), total (4-1)*2 + 3 - 7 = 2 -> (1, 1) either way
    assert same_pads(7, 3, 2, 1, upper=True) == (1, 1) == same_pads(7, 3, 2, 1, upper=False)
    # in 9, k 2, s 4: out 3, total 2*4 + 2 - 9 = 1; in 6, k 1, s 4: total would be -1 -> none
    assert same_pads(9, 2, 4, 1, upper=True) == (0, 1)
    assert same_pads(6, 1, 4, 1, upper=True) == (0, 0)
    # dilation 2 makes a 3-tap kernel span 5: in 7, s 1 -> total 4
    assert same_pads(7, 3, 1, 2, upper=False) == (2, 2)


def test_import_same_pads_become_explicit_attributes():
    w = np.ones((1, 1, 4), np.float32)
    g = graphnet.load(_model("Conv", 13, (1, 1, 7), w, auto_pad="SAME_LOWER"))
    (node,) = g.nodes
    assert (
        node.op == "Conv" and tuple(node.attrs["pads"]) == (2, 1) and "auto_pad" not in node.attrs
    )
    assert g.values["y"].shape == (1, 1, 7)


@pytest.mark.parametrize("opset", [11, 21])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_import_same_with_dilation_against_onnx_reference(opset, auto_pad):
    # onnxruntime refuses SAME with dilation ("Dilation not supported for AutoPadType::SAME_*"),
    # which the spec allows: onnx's reference evaluator is the oracle here.
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(5)
    x, w = _ints(rng, (1, 2, 7, 6)), _ints(rng, (2, 2, 3, 2))
    model = _model("Conv", opset, x.shape, w, auto_pad=auto_pad, dilations=[2, 3], strides=[1, 2])
    g = graphnet.load(model)
    ours = runtime.run(g, {"x": x})["y"]
    np.testing.assert_array_equal(ours, ReferenceEvaluator(model).run(None, {"x": x})[0])
    assert ours.shape == (1, 2, 7, 3)  # ceil(in / stride)


def test_import_same_when_x_shape_comes_from_inference():
    rng = np.random.default_rng(6)
    x, w = _ints(rng, (2, 3, 6, 5)), _ints(rng, (4, 3, 3, 3))
    model = _model(
        "Conv", 17, (None, 3, 6, 5), w, pre_relu=True, auto_pad="SAME_UPPER", strides=[2, 2]
    )
    g = _import_and_compare(model, x)
    assert g.values["y"].shape == ("N", 4, 3, 3)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_auto_pad_without_static_spatial_shape_stays_opaque(op):
    w = np.ones((2, 2, 3, 3), np.float32)
    model = _model(op, 17, (1, 2, None, 5), w, auto_pad="SAME_UPPER")
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "Opaque" and node.attrs["op_type"] == op
    # written back as it came
    out = g.to_onnx(opset=17)
    assert [n.op_type for n in out.graph.node] == [op]
    assert {a.name: helper.get_attribute_value(a) for a in out.graph.node[0].attribute}[
        "auto_pad"
    ] == b"SAME_UPPER"


def test_explicit_pads_with_dynamic_spatial_shape_import_and_run():
    rng = np.random.default_rng(7)
    w = _ints(rng, (3, 2, 3, 3))
    model = _model("Conv", 11, (None, 2, None, None), w, pads=[1, 1, 1, 1], strides=[2, 1])
    g = graphnet.load(model)
    assert g.op_counts() == {"Conv": 1}
    for shape in [(1, 2, 5, 4), (2, 2, 8, 3)]:
        x = _ints(rng, shape)
        np.testing.assert_array_equal(runtime.run(g, {"x": x})["y"], ort_run(model, {"x": x})["y"])


# --------------------------------------------------------------------------- ConvTranspose
CONVT_CASES = {
    "explicit-2d": (
        (2, 4, 3, 4),
        (4, 3, 3, 2),
        True,
        dict(
            kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], output_padding=[1, 2], group=2
        ),
    ),
    "dilated-1d": ((1, 2, 4), (2, 2, 3), False, dict(strides=[2], dilations=[2], pads=[1, 2])),
    "no-kernel-shape-3d": ((1, 2, 2, 3, 2), (2, 1, 2, 2, 3), True, dict(strides=[2, 1, 2])),
    "depthwise": ((1, 3, 4), (3, 1, 3), True, dict(group=3, strides=[2])),
    "output-shape-even": ((1, 1, 3), (1, 1, 3), False, dict(strides=[2], output_shape=[5])),
    "output-shape-odd": (
        (1, 2, 3, 3),
        (2, 2, 3, 3),
        True,
        dict(strides=[2, 2], output_shape=[6, 5]),
    ),
    "output-shape-odd-upper": (
        (1, 2, 3, 3),
        (2, 2, 3, 3),
        False,
        dict(strides=[2, 2], output_shape=[6, 6], auto_pad="SAME_UPPER"),
    ),
    "output-shape-odd-lower": (
        (1, 2, 3, 3),
        (2, 2, 3, 3),
        False,
        dict(strides=[2, 2], output_shape=[6, 6], auto_pad="SAME_LOWER"),
    ),
    "output-shape-longer": ((1, 1, 3), (1, 1, 3), True, dict(strides=[2], output_shape=[8])),
    "output-shape-with-output-padding": (
        (1, 1, 4),
        (1, 1, 3),
        False,
        dict(strides=[3], output_shape=[10], output_padding=[1]),
    ),
    "same-upper": ((1, 2, 3, 4), (2, 3, 3, 4), True, dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "same-lower": ((1, 2, 3, 4), (2, 3, 3, 4), True, dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    "same-dilated": (
        (1, 1, 3),
        (1, 1, 3),
        False,
        dict(strides=[2], dilations=[2], auto_pad="SAME_UPPER"),
    ),
    "valid": ((1, 2, 3, 3), (2, 2, 2, 2), False, dict(strides=[2, 2], auto_pad="VALID")),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", list(CONVT_CASES))
def test_import_conv_transpose(opset, case):
    x_shape, w_shape, bias, attrs = CONVT_CASES[case]
    rng = np.random.default_rng(len(case) * 7 + opset)
    w = _ints(rng, w_shape)
    b = _ints(rng, w_shape[1] * attrs.get("group", 1)) if bias else None
    g = _import_and_compare(
        _model("ConvTranspose", opset, x_shape, w, b, **attrs), _ints(rng, x_shape)
    )
    if "output_shape" in attrs:
        assert g.values["y"].shape[2:] == tuple(attrs["output_shape"])


def test_conv_transpose_pads_by_hand():
    # in 3, k 3, s 2: computed length 7. Target 6: total 1 -> the odd pad at the beginning unless
    # SAME_UPPER (opset 11's text, onnxruntime's behaviour at every opset).
    assert conv_transpose_pads(3, 3, 2, 1, 0, 6, upper=False) == (1, 0, 0)
    assert conv_transpose_pads(3, 3, 2, 1, 0, 6, upper=True) == (0, 1, 0)
    assert conv_transpose_pads(3, 3, 2, 1, 0, 5, upper=False) == (1, 1, 0)
    # target 8 > 7: one position past the computed output, which is output_padding
    assert conv_transpose_pads(3, 3, 2, 1, 0, 8, upper=False) == (0, 0, 1)


def test_conv_transpose_same_with_kernel_shorter_than_stride():
    # k 1, s 2, in 3: SAME asks for in*s = 6 positions but the op computes 5 (total pad -1).
    # The spec's size wins: the 6th position is past every input, so it holds the bias only,
    # the same rule as output_shape beyond the computed length (where onnxruntime agrees).
    # onnxruntime returns 5 positions here; onnx.reference puts the extra one at the beginning.
    x = np.array([[[1.0, 2.0, 3.0]]], np.float32)
    w = np.array([[[2.0]]], np.float32)
    b = np.array([0.5], np.float32)
    model = _model("ConvTranspose", 17, x.shape, w, b, strides=[2], auto_pad="SAME_UPPER")
    g = graphnet.load(model)
    ours = runtime.run(g, {"x": x})["y"]
    np.testing.assert_array_equal(ours, [[[2.5, 0.5, 4.5, 0.5, 6.5, 0.5]]])
    np.testing.assert_array_equal(ours[..., :5], ort_run(model, {"x": x})["y"])


def test_output_shape_with_batch_and_channels_stays_opaque():
    # output_shape must list spatial dims only (onnx's checker and onnxruntime reject (N, C, ...),
    # hence check=False to build it): such a node is kept as it is rather than guessed at.
    model = _model(
        "ConvTranspose",
        17,
        (1, 1, 3),
        np.ones((1, 1, 3), np.float32),
        check=False,
        strides=[2],
        output_shape=[1, 1, 6],
    )
    assert graphnet.load(model).nodes[0].op == "Opaque"


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_imported_graph_matches_loop_reference(op):
    # The importer's output also agrees with the plain-loop definition (not only with onnxruntime).
    rng = np.random.default_rng(8)
    x, w, b = _ints(rng, (1, 4, 5, 4)), _ints(rng, (4, 2, 3, 2)), _ints(rng, 4)
    attrs = dict(strides=[2, 1], pads=[1, 0, 0, 1], group=2)
    g = graphnet.load(_model(op, 21, x.shape, w, b, **attrs))
    ref = (naive_conv if op == "Conv" else naive_conv_transpose)(
        x, w, b, strides=(2, 1), pads=(1, 0, 0, 1), group=2
    )
    np.testing.assert_array_equal(runtime.run(g, {"x": x})["y"], ref)


def test_malformed_attribute_is_an_import_error_naming_the_node():
    from graphnet.errors import ModelImportError

    model = _model(
        "Conv",
        13,
        (1, 2, 5, 5),
        np.ones((2, 2, 3, 3), np.float32),
        check=False,
        auto_pad="SAME_UPPER",
        strides=[1],
    )
    with pytest.raises(
        ModelImportError, match=r"'node' \(Conv\).*strides=\[1\] has 1 values, expected 2"
    ):
        graphnet.load(model)
