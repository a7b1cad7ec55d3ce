"""Small graphs the report tests draw: the template CNN (docs/formulas.md), a ResNet-style and an
Inception-style network (built with the DSL; BatchNorm statistics made non-trivial, so that the
folded parameters and the statistics charts differ from the identity), and the onnx package's
light DenseNet-121."""

from __future__ import annotations

import os

import numpy as np

from graphnet import nn
from graphnet.ir import Graph

__all__ = ["template_graph", "resnet_graph", "inception_graph", "densenet_path", "randomize_bn"]


def randomize_bn(graph: Graph, seed: int = 0) -> Graph:
    """Give every BatchNormalization random scale, bias and running statistics (in place)."""
    rng = np.random.default_rng(seed)
    for n in graph.nodes:
        if n.op != "BatchNormalization":
            continue
        c = graph.params[n.inputs[1]].shape[0]
        graph.set_param(n.inputs[1], rng.uniform(0.5, 1.5, c).astype(np.float32))
        graph.set_param(n.inputs[2], rng.normal(0.0, 0.2, c).astype(np.float32))
        graph.set_param(n.inputs[3], rng.normal(0.0, 0.5, c).astype(np.float32))
        graph.set_param(n.inputs[4], rng.uniform(0.5, 2.0, c).astype(np.float32))
    return graph


def template_graph() -> Graph:
    """The template CNN on 1x28x28 inputs (conv-BN-ReLU x2, pool, twice; dropout, FC)."""
    return randomize_bn(nn.template().build((None, 1, 28, 28)))


def _conv_bn(x, c: int, k, *, stride: int = 1, relu: bool = True):
    pad = "same" if stride == 1 else k // 2
    y = nn.BatchNorm()(nn.Conv(c, k, stride=stride, padding=pad, bias=False)(x))
    return nn.ReLU()(y) if relu else y


def resnet_graph() -> Graph:
    """Stem, an identity residual block and a strided block with a projection shortcut (its sum
    batch-normalized), global average pooling, dropout, FC, softmax."""
    net = nn.Network("resnet_style", seed=0)
    x = net.input("image", (None, 3, 16, 16))
    x = _conv_bn(x, 8, 3)
    y = _conv_bn(_conv_bn(x, 8, 3), 8, 3, relu=False)
    x = nn.ReLU()(nn.add(x, y))
    y = _conv_bn(_conv_bn(x, 16, 3, stride=2), 16, 3, relu=False)
    short = _conv_bn(x, 16, 1, stride=2, relu=False)
    # A BatchNorm after the residual Add has no linear layer to fold into: optimize declines the
    # fold (with its reason) and rewrites it as a per-channel Mul + Add.
    x = nn.ReLU()(nn.BatchNorm()(nn.add(short, y)))
    x = nn.Flatten()(nn.GlobalAvgPool()(x))
    x = nn.Linear(10)(nn.Dropout(drop=0.2)(x))
    net.output(nn.Softmax()(x), name="probs")
    return randomize_bn(net.graph, seed=1)


def inception_graph() -> Graph:
    """Stem, one Inception module (1x1; 1x1 -> 3x3; 1x1 -> 1x3 -> 3x1, the factored conv;
    3x3 max pool -> 1x1) concatenated, max pool, FC, softmax."""
    net = nn.Network("inception_style", seed=0)
    x = net.input("image", (None, 3, 16, 16))
    x = _conv_bn(x, 8, 3)
    b1 = _conv_bn(x, 4, 1)
    b2 = _conv_bn(_conv_bn(x, 4, 1), 6, 3)
    b3 = _conv_bn(_conv_bn(_conv_bn(x, 4, 1), 6, (1, 3)), 6, (3, 1))
    b4 = _conv_bn(nn.MaxPool(3, stride=1, padding=1)(x), 4, 1)
    x = nn.concat([b1, b2, b3, b4])
    x = nn.MaxPool(2)(x)
    x = nn.Linear(10)(nn.Dropout(drop=0.3)(nn.Flatten()(x)))
    net.output(nn.Softmax()(x), name="probs")
    return randomize_bn(net.graph, seed=2)


def densenet_path() -> str | None:
    """The onnx package's light DenseNet-121 (1,746 nodes after import), None if this onnx
    build does not ship it."""
    import onnx

    path = os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_densenet121.onnx"
    )
    return path if os.path.exists(path) else None
