"""DSL conv layers: `Conv` (1/2/3-D, "same"/"valid"/explicit padding, groups), `Conv1d/2d/3d`,
`WSConv`, `ConvTranspose`: shapes, parameters, numerics against onnxruntime, and errors that
name the layer.

"same" padding is checked twice: the output has ceil(in / stride) positions, and the network
computes what onnxruntime computes for an ONNX Conv with auto_pad=SAME_UPPER and the same weights.
Numeric comparisons use small-integer inputs and weights (set with `set_param`), so every sum is
exact in float32 and the results must be equal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphnet import runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.nn import (
    Conv,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose,
    Network,
    ReLU,
    Sequential,
    WSConv,
    add,
    concat,
)
from tests.helpers import compare_with_ort, export_checked, ort_run
from tests.oracles import float32_bound, naive_conv, naive_conv_transpose, naive_standardize


def _ints(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(-3, 4, size=shape).astype(np.float32)


def _integer_params(graph, rng) -> None:
    for name, arr in list(graph.params.items()):
        graph.set_param(name, _ints(rng, arr.shape))


def _auto_pad_model(x_shape, w, b, strides, dilations, group):
    """The ONNX Conv a 'same' layer should be equivalent to."""
    node = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        auto_pad="SAME_UPPER",
        strides=list(strides),
        dilations=list(dilations),
        group=group,
    )
    graph = helper.make_graph(
        [node],
        "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# ------------------------------------------------------------------------- "same" padding
SAME = [
    # (x shape, kernel, stride, groups)
    ((1, 2, 7), 3, 1, 1),
    ((1, 2, 7), 4, 2, 2),
    ((2, 3, 8), 2, 3, 1),
    ((1, 3, 9), 1, 4, 3),
    ((1, 2, 6, 7), 3, 2, 1),
    ((1, 2, 6, 7), (1, 4), (1, 2), 2),
    ((1, 2, 5, 5), (4, 1), 3, 1),
    ((1, 1, 4, 5, 3), (2, 3, 2), (2, 1, 2), 1),
    ((1, 2, 5, 4, 4), 3, 1, 2),
]


@pytest.mark.parametrize("x_shape, kernel, stride, groups", SAME)
def test_same_padding_gives_ceil_and_matches_onnxruntime_same_upper(
    x_shape, kernel, stride, groups
):
    k = len(x_shape) - 2
    net = Network("same", seed=0)
    x = net.input("x", (None, *x_shape[1:]))
    net.output(Conv(6, kernel, stride=stride, padding="same", groups=groups)(x), name="y")
    g = net.graph
    strides = (stride,) * k if isinstance(stride, int) else stride
    want = tuple(math.ceil(n / s) for n, s in zip(x_shape[2:], strides, strict=True))
    assert g.values["y"].shape == ("N", 6, *want)
    rng = np.random.default_rng(sum(x_shape))
    _integer_params(g, rng)
    xv = _ints(rng, x_shape)
    ours = runtime.run(g, {"x": xv})["y"]
    w, b = g.params["conv1.weight"], g.params["conv1.bias"]
    theirs = ort_run(_auto_pad_model(x_shape, w, b, strides, (1,) * k, groups), {"x": xv})["y"]
    np.testing.assert_array_equal(ours, theirs)


def test_same_padding_with_dilation_gives_ceil():
    # onnxruntime has no SAME with dilation; the loop reference with the pads written out is the
    # check.
    net = Network("same_dil", seed=0)
    x = net.input("x", (1, 2, 9))
    net.output(Conv(3, 3, stride=2, dilation=3, padding="same")(x), name="y")
    node = net.graph.nodes[0]
    # extent 7, out ceil(9/2) = 5, total (5-1)*2 + 7 - 9 = 6 -> (3, 3)
    assert tuple(node.attrs["pads"]) == (3, 3) and net.graph.values["y"].shape == (1, 3, 5)
    rng = np.random.default_rng(0)
    _integer_params(net.graph, rng)
    xv = _ints(rng, (1, 2, 9))
    ref = naive_conv(
        xv, net.graph.params["conv1.weight"], net.graph.params["conv1.bias"], (2,), (3, 3), (3,)
    )
    np.testing.assert_array_equal(runtime.run(net.graph, {"x": xv})["y"], ref)


def test_valid_and_explicit_padding_forms():
    net = Network("pads", seed=0)
    x = net.input("x", (1, 2, 8, 8))
    ys = [
        Conv(2, 3, padding="valid")(x),
        Conv(2, 3, padding=1)(x),
        Conv(2, 3, padding=(1, 2))(x),  # one per axis, both sides
        Conv(2, 3, padding=(0, 1, 2, 3))(x),  # ONNX order: begins, then ends
    ]
    pads = [tuple(n.attrs["pads"]) for n in net.graph.nodes]
    assert pads == [(0, 0, 0, 0), (1, 1, 1, 1), (1, 2, 1, 2), (0, 1, 2, 3)]
    assert [net.graph.values[y.name].shape for y in ys] == [
        (1, 2, 6, 6),
        (1, 2, 8, 8),
        (1, 2, 8, 10),
        (1, 2, 8, 10),
    ]


# -------------------------------------------------------------------- layers vs onnxruntime
def test_inception_factored_convs_and_residual_match_onnxruntime():
    # 1x3 then 3x1 (Inception's factored conv), a depthwise branch, concat, residual add.
    net = Network("inception", seed=1)
    x = net.input("x", (None, 4, 7, 7))
    a = Conv(4, (1, 3), padding=(0, 1))(x)
    a = ReLU()(Conv(4, (3, 1), padding=(1, 0))(a))
    d = Conv(4, 3, padding="same", groups=4, bias=False)(x)
    y = Conv(4, 1)(concat([a, d]))
    net.output(add(x, y), name="y")
    g = net.graph
    assert g.values["y"].shape == ("N", 4, 7, 7)
    rng = np.random.default_rng(2)
    _integer_params(g, rng)
    compare_with_ort(g, {"x": _ints(rng, (2, 4, 7, 7))}, rtol=0, atol=0)


@pytest.mark.parametrize("x_shape", [(2, 3, 11), (1, 4, 6, 5), (1, 2, 4, 5, 3)])
def test_rank_decides_1d_2d_3d(x_shape):
    g = Sequential([Conv(6, 3, stride=2, padding=1, dilation=1, groups=1)]).build(
        (None, *x_shape[1:])
    )
    node = g.nodes[0]
    k = len(x_shape) - 2
    assert tuple(node.attrs["strides"]) == (2,) * k and tuple(node.attrs["pads"]) == (1,) * (2 * k)
    assert g.params["conv1.weight"].shape == (6, x_shape[1], *(3,) * k)
    rng = np.random.default_rng(3)
    _integer_params(g, rng)
    xv = _ints(rng, x_shape)
    ours = compare_with_ort(g, {"input": xv}, rtol=0, atol=0)["output"]
    ref = naive_conv(
        xv, g.params["conv1.weight"], g.params["conv1.bias"], (2,) * k, (1,) * (2 * k), (1,) * k
    )
    np.testing.assert_array_equal(ours, ref)


def test_wsconv_layer_standardizes_and_matches_onnxruntime():
    g = Sequential([WSConv(5, 3, padding="same", eps=1e-4)]).build((None, 3, 6, 6))
    assert g.nodes[0].op == "WSConv" and g.nodes[0].attrs["epsilon"] == 1e-4
    rng = np.random.default_rng(4)
    xv = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w, b = g.params["wsconv1.weight"], g.params["wsconv1.bias"]
    w_hat = naive_standardize(w, 1e-4)
    ref = naive_conv(xv, w_hat, b, (1, 1), (1, 1, 1, 1))
    absref = naive_conv(np.abs(xv), np.abs(w_hat), np.abs(b), (1, 1), (1, 1, 1, 1))
    # float32 sum of 27 products (+ W_hat's own rounding): the gamma_n bound, see
    # test_conv_reference
    bound = float32_bound(absref, 28)
    for out in (
        runtime.run(g, {"input": xv})["output"],
        ort_run(export_checked(g), {"input": xv})["output"],
    ):
        assert np.all(np.abs(out - ref) <= bound)


@pytest.mark.parametrize(
    "x_shape, kernel, stride, padding, output_padding, groups",
    [
        ((1, 4, 5), 3, 2, 1, 1, 2),
        ((2, 2, 3, 4), (2, 3), (2, 1), (0, 1), (1, 0), 1),
        ((1, 2, 2, 3, 2), 2, 2, 0, 0, 2),
    ],
)
def test_conv_transpose_layer(x_shape, kernel, stride, padding, output_padding, groups):
    layer = ConvTranspose(
        4, kernel, stride=stride, padding=padding, output_padding=output_padding, groups=groups
    )
    g = Sequential([layer]).build((None, *x_shape[1:]))
    k = len(x_shape) - 2
    per = lambda v: (v,) * k if isinstance(v, int) else tuple(v)  # noqa: E731
    ks, ss, ps, ops_ = per(kernel), per(stride), per(padding), per(output_padding)
    want = tuple((x_shape[2 + i] - 1) * ss[i] - 2 * ps[i] + ks[i] + ops_[i] for i in range(k))
    assert g.values["output"].shape == ("N", 4, *want)
    assert g.params["convt1.weight"].shape == (x_shape[1], 4 // groups, *ks)
    rng = np.random.default_rng(5)
    _integer_params(g, rng)
    xv = _ints(rng, x_shape)
    ours = compare_with_ort(g, {"input": xv}, rtol=0, atol=0)["output"]
    ref = naive_conv_transpose(
        xv, g.params["convt1.weight"], g.params["convt1.bias"], ss, ps + ps, None, groups, ops_
    )
    np.testing.assert_array_equal(ours, ref)


# ------------------------------------------------------------------------------ parameters
def test_parameters_follow_pytorch_default_init():
    g = Sequential([Conv(16, (3, 5), groups=2), ConvTranspose(6, 2, stride=2)]).build(
        (None, 4, 9, 9), seed=7
    )
    w, b = g.params["conv1.weight"], g.params["conv1.bias"]
    assert w.shape == (16, 2, 3, 5) and b.shape == (16,) and w.dtype == b.dtype == np.float32
    bound = 1 / math.sqrt(2 * 3 * 5)  # fan_in = input channels per group * taps
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.8 * bound and w.std() > 0.4 * bound  # spread over the range, not ~0
    wt = g.params["convt1.weight"]
    assert wt.shape == (16, 6, 2, 2) and np.abs(wt).max() <= 1 / math.sqrt(6 * 4)
    again = Sequential([Conv(16, (3, 5), groups=2), ConvTranspose(6, 2, stride=2)]).build(
        (None, 4, 9, 9), seed=7
    )
    np.testing.assert_array_equal(again.params["conv1.weight"], w)  # seeded: reproducible


def test_bias_false_and_shared_layer_reuses_weights():
    net = Network("shared", seed=0)
    x = net.input("x", (1, 3, 5, 5))
    conv = Conv(3, 3, padding=1, bias=False)
    y = conv(conv(x))
    net.output(y)
    assert sorted(net.graph.params) == ["conv1.weight"]
    assert [n.inputs[1] for n in net.graph.nodes] == ["conv1.weight", "conv1.weight"]
    assert all(len(n.inputs) == 2 for n in net.graph.nodes)


# ---------------------------------------------------------------------------------- errors
def _apply(layer, shape):
    net = Network("err", seed=0)
    return layer(net.input("x", shape))


ERRORS = [
    (
        lambda: Conv(8, 3, groups=4, name="conv2"),
        (1, 6, 8, 8),
        ShapeError,
        "conv2 (Conv): input has 6 channels, not divisible by groups=4",
    ),
    (
        lambda: Conv(6, 3, groups=4, name="conv2"),
        (1, 8, 8, 8),
        ShapeError,
        "conv2 (Conv): out_channels=6 is not divisible by groups=4",
    ),
    (
        lambda: Conv2d(8, 3, name="c"),
        (1, 3, 32),
        ShapeError,
        "c (Conv2d): expects an input of rank 4 (N, C, H, W), got 'x'(1,3,32)",
    ),
    (
        lambda: Conv1d(8, 3, name="c"),
        (1, 3, 8, 8),
        ShapeError,
        "c (Conv1d): expects an input of rank 3 (N, C, L), got 'x'(1,3,8,8)",
    ),
    (
        lambda: Conv3d(8, 3, name="c"),
        (1, 3, 8, 8),
        ShapeError,
        "c (Conv3d): expects an input of rank 5 (N, C, D, H, W)",
    ),
    (
        lambda: Conv(8, 3, name="c"),
        (1, 3),
        ShapeError,
        "c (Conv): expects an input of rank 3 or 4 or 5",
    ),
    (
        lambda: Conv(8, (3, 3, 3), name="c"),
        (1, 3, 8, 8),
        AttributeValueError,
        "c (Conv): kernel_size must be an int or 2 ints for a 2-D input, got (3, 3, 3)",
    ),
    (
        lambda: Conv(8, 3, stride=0, name="c"),
        (1, 3, 8, 8),
        AttributeValueError,
        "c (Conv): stride must be >= 1",
    ),
    (
        lambda: Conv(8, 3, padding="full", name="c"),
        (1, 3, 8, 8),
        AttributeValueError,
        "c (Conv): padding must be an int, ints, 'same' or 'valid', got 'full'",
    ),
    (
        lambda: Conv(8, 3, padding=-1, name="c"),
        (1, 3, 8, 8),
        AttributeValueError,
        "c (Conv): padding must be >= 0",
    ),
    (
        lambda: Conv(8, 3, padding="same", name="c"),
        (1, 3, None, 8),
        ShapeError,
        "c (Conv): padding='same' needs a static spatial shape, input 'x' is (1,3,x_2,8)",
    ),
    (
        lambda: Conv(8, 3, name="c"),
        (1, None, 8, 8),
        ShapeError,
        "c (Conv): input 'x'(1,x_1,8,8) has a dynamic channel count",
    ),
    (
        lambda: Conv(8, 5, name="c"),
        (1, 3, 4, 8),
        ShapeError,
        "node 'c' (Conv): spatial axis 0 of X(1,3,4,8) padded by (0, 0) is 4, smaller than the "
        "dilated kernel 5",
    ),
    (
        lambda: ConvTranspose(4, 3, stride=2, output_padding=2, name="up"),
        (1, 3, 4, 4),
        AttributeValueError,
        "up (ConvTranspose): output_padding=(2, 2) must be smaller than the stride (2, 2)",
    ),
    (
        lambda: ConvTranspose(4, 3, groups=2, name="up"),
        (1, 3, 4, 4),
        ShapeError,
        "up (ConvTranspose): input has 3 channels, not divisible by groups=2",
    ),
]


@pytest.mark.parametrize("make, shape, exc, message", ERRORS, ids=[e[3][:40] for e in ERRORS])
def test_errors_name_the_layer_and_the_shapes(make, shape, exc, message):
    with pytest.raises(exc) as err:
        _apply(make(), shape)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Conv(0, 3), "Conv: out_channels must be a positive int, got 0"),
        (lambda: Conv(4, 3, groups=0), "Conv: groups must be a positive int, got 0"),
        (lambda: WSConv(4, 3, eps=0.0), "WSConv: eps must be > 0, got 0.0"),
    ],
)
def test_bad_constructor_arguments_fail_where_written(make, message):
    with pytest.raises(AttributeValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_channel_mismatch_on_reuse_names_the_node():
    # A layer built for 3 input channels, applied again to 4: the op table's rule catches it.
    net = Network("reuse", seed=0)
    conv = Conv(4, 3, name="shared")
    conv(net.input("a", (1, 3, 5, 5)))
    with pytest.raises(
        ShapeError,
        match=(
            r"node 'shared_1' \(Conv\): W\(4,3,3,3\) has 3 input channels per group but "
            r"X\(1,4,5,5\) has 4"
        ),
    ):
        conv(net.input("b", (1, 4, 5, 5)))
