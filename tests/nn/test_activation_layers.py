"""DSL layers of the activation family: graph structure, parameters, the PReLU broadcast trap
through export + onnxruntime, Dropout's drop/keep API, and errors that name the layer.
Tolerances: float32 rtol 1e-5, atol 1e-6."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import numpy_helper

from graphnet import AttributeValueError, ShapeError, runtime
from graphnet.ir import format_shape
from graphnet.nn import (
    ELU,
    Dropout,
    LeakyReLU,
    LogSoftmax,
    Network,
    PReLU,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from tests.helpers import assert_close, compare_with_ort, export_checked, ort_run


@pytest.mark.parametrize(
    "layer, op, attrs, formula",
    [
        (ReLU(), "Relu", {}, lambda v: max(v, 0.0)),
        (Sigmoid(), "Sigmoid", {}, lambda v: 1 / (1 + math.exp(-v))),
        (Tanh(), "Tanh", {}, lambda v: 2 / (1 + math.exp(-2 * v)) - 1),
        (LeakyReLU(0.1), "LeakyRelu", {"alpha": 0.1}, lambda v: v if v >= 0 else 0.1 * v),
        (LeakyReLU(), "LeakyRelu", {"alpha": 0.01}, lambda v: v if v >= 0 else 0.01 * v),
        (ELU(0.5), "Elu", {"alpha": 0.5}, lambda v: v if v >= 0 else 0.5 * (math.exp(v) - 1)),
    ],
    ids=["relu", "sigmoid", "tanh", "leaky0.1", "leaky-default", "elu0.5"],
)
def test_elementwise_layer_builds_one_node(layer, op, attrs, formula):
    g = Sequential([layer]).build((None, 3, 4))
    (node,) = g.nodes
    assert node.op == op and node.attrs == attrs
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32) * 3
    y = compare_with_ort(g, {"input": x})["output"]
    expect = np.vectorize(formula, otypes=[np.float64])(x.astype(np.float64))
    assert_close(y, expect)


@pytest.mark.parametrize("cls, log", [(Softmax, False), (LogSoftmax, True)])
def test_softmax_layer_on_logits(cls, log):
    g = Sequential([cls()]).build((None, 10))
    assert g.nodes[0].attrs == {"axis": -1}
    x = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32) * 5
    y = compare_with_ort(g, {"input": x})["output"]
    for row, out in zip(x.astype(np.float64), y, strict=True):
        total = math.fsum(math.exp(v) for v in row)
        assert_close(out, [v - math.log(total) if log else math.exp(v) / total for v in row])


def test_layers_are_named_by_kind():
    net = Network("n")
    x = net.input("x", (None, 4))
    y = Softmax()(ReLU()(ReLU()(x)))
    assert [n.name for n in net.graph.nodes] == ["relu1", "relu2", "softmax1"]
    assert repr(LeakyReLU(0.2)) == "LeakyReLU(alpha=0.2)" and repr(Softmax(1)) == "Softmax(axis=1)"
    assert y.shape == ("N", 4)  # None on axis 0 is the batch symbol N


# ------------------------------------------------------------------------------------ PReLU
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 4, 5, 6), (1, 3, 2, 4, 5)])
def test_prelu_per_channel_exports_c11_and_agrees_with_ort(shape):
    """The trap: ONNX broadcasts the slope from the RIGHT, so a per-channel slope must be written
    as (C, 1, ..., 1). Slopes are made distinct per channel (the 0.25 init would hide the bug), and
    no other axis has C elements."""
    g = Sequential([PReLU()]).build((None,) + shape[1:])
    (pname,) = g.params
    c = shape[1]
    assert g.params[pname].shape == (c,) + (1,) * (len(shape) - 2)
    assert g.params[pname].dtype == np.float32 and np.all(g.params[pname] == np.float32(0.25))
    slopes = np.linspace(0.05, 0.8, c, dtype=np.float32)
    g.set_param(pname, slopes.reshape(g.params[pname].shape))
    model = export_checked(g)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[pname]
    assert init.shape == (c,) + (1,) * (len(shape) - 2)
    x = np.random.default_rng(c).standard_normal(shape).astype(np.float32)
    expect = np.empty(shape)
    for idx in np.ndindex(*shape):  # PReLU (docs/formulas.md) with the slope of channel idx[1]
        v = float(x[idx])
        expect[idx] = v if v >= 0 else float(slopes[idx[1]]) * v
    assert_close(ort_run(model, {"input": x})["output"], expect, what="onnxruntime")
    assert_close(runtime.run(g, {"input": x})["output"], expect, what="graphnet")


def test_prelu_shared_has_one_slope():
    g = Sequential([PReLU(shared=True, init=0.1)]).build((None, 3, 4, 4))
    (arr,) = g.params.values()
    assert arr.shape == (1,) and arr[0] == np.float32(0.1)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = compare_with_ort(g, {"input": x})["output"]
    assert_close(y, np.where(x >= 0, x, np.float32(0.1) * x.astype(np.float64)))


def test_prelu_layer_reused_shares_its_slope():
    net = Network("n")
    x = net.input("x", (None, 3, 4))
    act = PReLU()
    act(act(x))
    assert len(net.graph.params) == 1
    assert [n.inputs[1] for n in net.graph.nodes] == ["prelu1.slope"] * 2


@pytest.mark.parametrize("shape", [(None,), (None, None, 4)])
def test_prelu_per_channel_needs_a_static_channel_axis(shape):
    net = Network("n")
    x = net.input("x", shape)
    with pytest.raises(ShapeError) as e:
        PReLU()(x)
    msg = str(e.value)
    # None is the batch N on axis 0, a symbol of the input's own elsewhere: both dynamic.
    assert "prelu1" in msg and "shared=True" in msg and format_shape(x.shape) in msg, msg


# ---------------------------------------------------------------------------------- Dropout
def test_dropout_takes_exactly_one_of_drop_or_keep():
    with pytest.raises(AttributeValueError, match="exactly one of drop="):
        Dropout()
    with pytest.raises(AttributeValueError, match="exactly one of drop=.*got drop=0.2, keep=0.8"):
        Dropout(drop=0.2, keep=0.8)
    # Positional: ambiguous (the textbook's p keeps, PyTorch's drops), so refused with both forms.
    with pytest.raises(
        TypeError, match=r"Dropout\(drop=0.5\) drops .* Dropout\(keep=0.5\) keeps"
    ) as err:
        Dropout(0.5)
    assert "docs/formulas.md" in str(err.value) and "lecture" not in str(err.value)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"drop": 1.0}, r"drop= \(DROP probability\) must be in \[0, 1\), got 1.0"),
        ({"drop": -0.2}, r"must be in \[0, 1\)"),
        ({"keep": 0.0}, r"keep= \(KEEP probability\) must be in \(0, 1\], got 0.0"),
        ({"keep": 1.5}, r"must be in \(0, 1\]"),
        ({"keep": "0.5"}, r"keep= must be a number"),
        ({"drop": 0.5, "scheme": "Inverted"}, r"scheme must be one of"),
    ],
)
def test_dropout_bad_arguments(kw, match):
    with pytest.raises(AttributeValueError, match=match):
        Dropout(**kw)


@pytest.mark.parametrize(
    "kw, drop, keep",
    [
        ({"drop": 0.3}, 0.3, 0.7),
        ({"keep": 0.7}, 0.3, 0.7),
        ({"keep": 1.0}, 0.0, 1.0),
        ({"drop": 0}, 0.0, 1.0),
    ],
)
def test_dropout_drop_and_keep_describe_the_same_layer(kw, drop, keep):
    layer = Dropout(**kw, scheme="classic")
    assert layer.drop == pytest.approx(drop, abs=1e-15) and layer.keep == pytest.approx(
        keep, abs=1e-15
    )
    assert repr(layer) == f"Dropout(drop={drop:g}, keep={keep:g}, scheme='classic')"
    g = Sequential([layer]).build((None, 6))
    assert g.nodes[0].attrs == {"drop_prob": pytest.approx(drop, abs=1e-15), "scheme": "classic"}
    x = np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)
    # classic at inference: x * keep, whichever of drop/keep was given
    assert_close(
        runtime.run(g, {"input": x})["output"], x.astype(np.float64) * keep, rtol=3e-7, atol=0
    )


def test_dropout_return_mask():
    net = Network("n")
    x = net.input("x", (None, 5))
    y, mask = Dropout(keep=0.5, return_mask=True)(x)
    assert mask.dtype == "bool" and mask.shape == ("N", 5) and y.shape == ("N", 5)
    net.output(y, "y")
    net.output(mask, "mask")
    xs = np.random.default_rng(4).uniform(1, 2, (64, 5)).astype(np.float32)
    out = runtime.run(net.graph, {"x": xs}, mode="train", seed=0)
    np.testing.assert_array_equal(out["y"] != 0, out["mask"])


def test_errors_name_the_layer_and_the_shapes():
    net = Network("n")
    x = net.input("x", (None, 10))
    with pytest.raises(AttributeValueError) as e:
        Softmax(axis=2)(x)
    msg = str(e.value)
    assert "softmax1" in msg and "(N,10)" in msg and "axis 2" in msg, msg
    ints = net.input("labels", (None, 10), "int64")
    with pytest.raises(ShapeError, match=r"node 'sigmoid1' \(Sigmoid\).*int64.*labels\(N,10\)"):
        Sigmoid()(ints)


def test_template_head_runs_in_both_modes():
    """Dropout -> ReLU -> Softmax, as at the end of the classic template."""
    g = Sequential([Dropout(drop=0.5), ReLU(), Softmax()]).build((None, 8))
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    inf = compare_with_ort(g, {"input": x})["output"]
    assert_close(inf.sum(-1), np.ones(3))
    train = runtime.run(g, {"input": x}, mode="train", seed=1)["output"]
    assert_close(train.sum(-1), np.ones(3))
    assert not np.allclose(train, inf), "train mode drops units"
