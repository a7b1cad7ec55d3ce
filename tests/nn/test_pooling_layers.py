"""Pooling family: the DSL layers (MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool).

Values are compared with onnxruntime on the exported graph (float32 rtol 1e-5, atol 1e-6) and,
where the layer's arguments are what is tested, with the naive loops of test_pooling.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import ops, runtime
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.nn import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool, Network, Sequential
from tests.helpers import assert_close, compare_with_ort
from tests.oracles import naive_pool

RNG = np.random.default_rng(21)


def build(layer, shape):
    return Sequential([layer]).build(shape)


def node_attrs(g):
    n = g.nodes[0]
    return ops.attrs_of(n, [g.values[i] for i in n.inputs])


def test_lecture_example_through_sequential():
    x = np.array([[1, 3, 2, 9], [7, 4, 1, 5], [8, 5, 2, 3], [4, 2, 1, 4]], dtype=np.float32)[
        None, None
    ]
    g = build(MaxPool(2), (None, 1, 4, 4))
    y = compare_with_ort(g, {"input": x})["output"]
    np.testing.assert_array_equal(y, np.array([[[[7, 9], [8, 4]]]], dtype=np.float32))


@pytest.mark.parametrize(
    "layer, shape, want_shape, want",
    [
        (MaxPool(3), (2, 3, 9), (2, 3, 3), {"kernel_shape": (3,), "strides": (3,), "pads": (0, 0)}),
        (
            MaxPool((2, 3), stride=1, padding=(1, 0)),
            (2, 3, 6, 7),
            (2, 3, 7, 5),
            {"kernel_shape": (2, 3), "strides": (1, 1), "pads": (1, 0, 1, 0)},
        ),
        (
            MaxPool(2, stride=(1, 2), padding=(1, 0, 0, 1), dilation=(2, 1)),
            (1, 2, 6, 7),
            (1, 2, 5, 4),
            {"pads": (1, 0, 0, 1), "dilations": (2, 1)},
        ),
        (
            MaxPool(3, stride=2, padding=1, ceil_mode=True),
            (1, 2, 8, 8),
            (1, 2, 5, 5),
            {"ceil_mode": 1},
        ),
        (
            AvgPool(2, padding=1),
            (1, 2, 5, 4, 6),
            (1, 2, 3, 3, 4),
            {"pads": (1,) * 6, "count_include_pad": 0},
        ),
        (
            AvgPool((3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=True),
            (2, 3, 7, 6),
            (2, 3, 4, 4),
            {"count_include_pad": 1, "ceil_mode": 1},
        ),
    ],
)
def test_layer_attributes_shapes_and_values(layer, shape, want_shape, want):
    g = build(layer, shape)
    attrs = node_attrs(g)
    assert {k: attrs[k] for k in want} == want
    assert g.values["output"].shape == want_shape
    x = RNG.standard_normal(shape).astype(np.float32)
    y = compare_with_ort(g, {"input": x})["output"]
    mode = "max" if g.nodes[0].op == "MaxPool" else "avg"
    ref = naive_pool(
        x,
        attrs["kernel_shape"],
        attrs["strides"],
        attrs["pads"],
        attrs["dilations"],
        attrs["ceil_mode"],
        mode,
        attrs.get("count_include_pad", 0),
    )
    assert_close(y, ref.astype(np.float32))


def test_avgpool_default_is_onnx_count_include_pad_0():
    g = build(AvgPool(3, stride=1, padding=1), (1, 1, 3, 3))
    y = runtime.run(g, {"input": np.ones((1, 1, 3, 3), np.float32)})["output"]
    np.testing.assert_allclose(y, np.ones((1, 1, 3, 3)), rtol=1e-6)  # padding not in the divisor
    g = build(
        AvgPool(3, stride=1, padding=1, count_include_pad=True), (1, 1, 3, 3)
    )  # PyTorch's default
    y = runtime.run(g, {"input": np.ones((1, 1, 3, 3), np.float32)})["output"]
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9, rel=1e-6) and y[0, 0, 1, 1] == pytest.approx(
        1.0, rel=1e-6
    )


@pytest.mark.parametrize(
    "shape, kernel, stride, want_pads",
    [
        # out = ceil(in / stride); total = (out - 1) * stride + kernel - in, the odd pixel at the
        # end
        ((1, 1, 7, 6), 3, 2, (1, 0, 1, 1)),  # 7: out 4, total 2; 6: out 3, total 1
        ((1, 1, 5), 2, 1, (0, 1)),  # 5: out 5, total 1
        ((1, 1, 4, 4, 4), 3, 1, (1,) * 6),
    ],
)
def test_same_padding(shape, kernel, stride, want_pads):
    g = build(MaxPool(kernel, stride=stride, padding="same"), shape)
    assert node_attrs(g)["pads"] == want_pads
    assert g.values["output"].shape[2:] == tuple(-(-n // stride) for n in shape[2:])
    compare_with_ort(g, {"input": RNG.standard_normal(shape).astype(np.float32)})


@pytest.mark.parametrize(
    "layer, op", [(GlobalAvgPool(), "GlobalAveragePool"), (GlobalMaxPool(), "GlobalMaxPool")]
)
@pytest.mark.parametrize("shape", [(None, 4, 7), (None, 4, 5, 6), (None, 2, 3, 4, 5)])
def test_global_layers(layer, op, shape):
    g = build(layer, shape)
    assert g.nodes[0].op == op
    assert g.values["output"].shape == ("N", shape[1]) + (1,) * (len(shape) - 2)
    x = RNG.standard_normal((2,) + shape[1:]).astype(np.float32)
    y = compare_with_ort(g, {"input": x})["output"]
    axes = tuple(range(2, x.ndim))
    want = (
        x.astype(np.float64).max(axis=axes, keepdims=True)
        if op == "GlobalMaxPool"
        else x.astype(np.float64).mean(axis=axes, keepdims=True)
    )
    assert_close(y, want.astype(np.float32))


def test_layers_are_named_and_chain():
    net = Network("n")
    x = net.input("x", (None, 3, 16, 16))
    y = GlobalAvgPool()(AvgPool(2)(MaxPool(2)(x)))
    net.output(y, name="y")
    assert [n.name for n in net.graph.nodes] == ["pool1", "pool2", "gap1"]
    assert net.graph.values["y"].shape == ("N", 3, 1, 1)


# --------------------------------------------------------------------------- errors
def test_error_kernel_larger_than_padded_input_names_layer():
    net = Network("n")
    x = net.input("x", (1, 3, 4, 4))
    x = MaxPool(2)(x)  # pool1 -> (1,3,2,2)
    with pytest.raises(
        ShapeError,
        match=r"'pool2' \(MaxPool\): kernel \(3,3\) larger than padded input \(2,2\)"
        r".*pool1\.out\(1,3,2,2\)",
    ):
        MaxPool(3)(x)


@pytest.mark.parametrize(
    "layer, shape, err, pattern",
    [
        (
            MaxPool((2, 2, 2), name="p"),
            (1, 1, 4, 4),
            AttributeValueError,
            r"p \(MaxPool\): kernel_size must be an int or 2 ints for a 2-D input, got \(2, 2, 2\)",
        ),
        (
            AvgPool(2, stride=(1, 1, 1), name="p"),
            (1, 1, 4),
            AttributeValueError,
            r"p \(AvgPool\): stride must be an int or 1 ints",
        ),
        (
            MaxPool(2, padding="valid", name="p"),
            (1, 1, 4, 4),
            AttributeValueError,
            r"p \(MaxPool\): padding must be.*'valid'",
        ),
        (
            MaxPool(2, padding=(1, 1, 1), name="p"),
            (1, 1, 4, 4),
            AttributeValueError,
            r"p \(MaxPool\): padding must be",
        ),
        (
            MaxPool(2, padding="same", name="p"),
            (1, 1, None, 4),
            ShapeError,
            r"p \(MaxPool\): padding='same' needs a static spatial shape.*\(1,1,input_2,4\)",
        ),
        (
            MaxPool(2, name="p"),
            (1, 4),
            ShapeError,
            r"p \(MaxPool\): input 'input' must be N,C \+ 1, 2 or 3 spatial axes.*\(1,4\)",
        ),
        (
            AvgPool(2, padding=2, name="p"),
            (1, 1, 6, 6),
            AttributeValueError,
            r"node 'p' \(AveragePool\): pads \[2, 2, 2, 2\] must be smaller than kernel \(2,2\)",
        ),
        (
            GlobalAvgPool(name="g"),
            (3, 4),
            ShapeError,
            r"node 'g' \(GlobalAveragePool\).*rank >= 3.*\(3,4\)",
        ),
    ],
)
def test_layer_errors(layer, shape, err, pattern):
    with pytest.raises(err, match=pattern):
        build(layer, shape)
