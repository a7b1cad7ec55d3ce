"""Seeded random DSL networks for whole-pipeline tests (export, import, optimize, train mode,
declared shapes): residual adds, concats on any axis (the batch axis included), flattens on any
axis, BatchNorm after nearly everything (sometimes one BN layer applied twice, sharing its
statistics), pooling, Dropout whose mask is a graph output, and several outputs.

`random_network(seed)` returns a `Graph` with one input "x" of shape (N, C, H, W). Every choice
comes from `numpy.random.default_rng(seed)`, so a failing seed reproduces exactly.
"""

from __future__ import annotations

import numpy as np

from graphnet import nn
from graphnet.ir import Graph

__all__ = ["random_network"]


def random_network(seed: int, *, drop: float = 0.3, steps: tuple[int, int] = (3, 7)) -> Graph:
    """A random network (module docstring); `drop` is every Dropout's DROP probability (0 for
    train-mode comparisons, where masks would be random)."""
    rng = np.random.default_rng(seed)
    net = nn.Network(f"random{seed}", seed=seed)
    c = int(rng.integers(2, 5))
    h = int(rng.integers(4, 7))
    t = net.input("x", (None, c, h, h))
    shared: dict[int, nn.BatchNorm] = {}  # channels -> a BN layer to apply again
    outputs: list = []

    def bn(x):
        ch = x.shape[1]
        if ch in shared and rng.random() < 0.4:
            return shared.pop(ch)(x)  # the same layer again: shared running statistics
        layer = nn.BatchNorm()
        shared[ch] = layer
        return layer(x)

    def conv_bn_relu(x, out):
        y = bn(nn.Conv(out, 3, padding="same")(x))
        return nn.ReLU()(y) if rng.random() < 0.7 else y

    for _ in range(int(rng.integers(*steps))):
        kind = rng.choice(["conv", "residual", "concat", "pool", "dropout", "branch"])
        rank = len(t.shape)
        if kind == "conv":
            t = conv_bn_relu(t, int(rng.integers(2, 6)))
        elif kind == "residual":
            t = nn.add(t, bn(nn.Conv(t.shape[1], 3, padding="same")(t)))
        elif kind == "concat":
            axis = int(rng.integers(0, rank))  # any axis, the batch axis 0 included
            other = conv_bn_relu(t, t.shape[1]) if axis != 1 else conv_bn_relu(t, 2)
            t = nn.concat([t, other], axis=axis)
        elif kind == "pool" and min(t.shape[2:]) >= 2:
            t = nn.MaxPool(2)(t) if rng.random() < 0.5 else nn.AvgPool(2, stride=1)(t)
        elif kind == "dropout":
            y, mask = nn.Dropout(drop=drop, return_mask=True)(t)
            outputs.append(mask)
            t = y
        elif kind == "branch":
            outputs.append(_head(t, rng, bn))
    outputs.append(_head(t, rng, bn))
    for k, o in enumerate(outputs):
        net.output(o, name=f"out{k}")
    return net.graph


def _head(t, rng: np.random.Generator, bn):
    """Flatten on a random axis, then (when the last dim is static) Linear and a BatchNorm."""
    axis = int(rng.integers(0, len(t.shape)))
    y = nn.Flatten(axis)(t)
    if isinstance(y.shape[-1], int) and rng.random() < 0.8:
        y = nn.Linear(int(rng.integers(2, 5)))(y)
        if rng.random() < 0.7:
            y = bn(y)
    return y
