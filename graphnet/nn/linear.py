"""DSL layers of the fully connected family: `Linear` (alias `FC`), `Maxout` and `Flatten`.

Input sizes come from the tensor a layer is applied to; only output sizes are given:

    x = Flatten()(x)          # (N, 16, 4, 4) -> (N, 256)
    x = Linear(120)(x)        # Gemm with W (120, 256), PyTorch's layout, transB=1
    x = Maxout(84, pieces=3)(x)

Parameters are float32, drawn from the network's seeded generator like PyTorch's default:
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
"""

from __future__ import annotations

import math

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import format_shape
from graphnet.nn.core import Layer, Network, Tensor

__all__ = ["Linear", "FC", "Maxout", "Flatten"]


def _uniform(net: Network, shape: tuple, fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda: net.rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _positive_int(value, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise AttributeValueError(f"{layer}: {what} must be a positive int, got {value!r}")
    return int(value)


def _features(layer: Layer, x: Tensor) -> int:
    """The input's feature count; a clear error for an input that is not (N, features)."""
    who = f"{layer.name} ({type(layer).__name__})"
    if x.shape is not None and len(x.shape) > 2:
        raise ShapeError(f"{who}: input has shape {format_shape(x.shape)}; add Flatten() first")
    if x.shape is None or len(x.shape) != 2:
        raise ShapeError(f"{who}: input has shape {format_shape(x.shape)}; expected (N, features)")
    if not is_static(x.shape[1]):
        raise ShapeError(
            f"{who}: input has shape {format_shape(x.shape)}; its feature count must be known"
        )
    return int(x.shape[1])


class Linear(Layer):
    """Fully connected layer: y = x @ W.T + b with W of shape (out_features, in_features).

    Emits one `Gemm` (transB=1). The input must be 2-D (N, in_features)."""

    kind = "fc"

    def __init__(self, out_features: int, *, bias: bool = True, name: str | None = None) -> None:
        super().__init__(name=name)
        self.out_features = _positive_int(out_features, "out_features", type(self).__name__)
        self.bias = bool(bias)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        n_in = _features(self, x)
        w = self.param(net, "W", _uniform(net, (self.out_features, n_in), n_in))
        inputs: list[Tensor | str] = [x, w]
        if self.bias:
            inputs.append(self.param(net, "B", _uniform(net, (self.out_features,), n_in)))
        return net.emit("Gemm", inputs, {"transB": 1}, name=self.node_name)


FC = Linear
"""The textbook name (FC) for a fully connected layer."""


class Maxout(Layer):
    """Maxout (docs/formulas.md): y[n, o] = max_j (x @ W[j].T + B[j])[n, o] over `pieces` affine
    maps.

    W has shape (pieces, out_features, in_features), B (pieces, out_features)."""

    kind = "maxout"

    def __init__(
        self, out_features: int, pieces: int = 2, *, bias: bool = True, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.out_features = _positive_int(out_features, "out_features", type(self).__name__)
        self.pieces = _positive_int(pieces, "pieces", type(self).__name__)
        self.bias = bool(bias)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        n_in = _features(self, x)
        k, n_out = self.pieces, self.out_features
        w = self.param(net, "W", _uniform(net, (k, n_out, n_in), n_in))
        inputs: list[Tensor | str] = [x, w]
        if self.bias:
            inputs.append(self.param(net, "B", _uniform(net, (k, n_out), n_in)))
        return net.emit("Maxout", inputs, {"pieces": k}, name=self.node_name)


class Flatten(Layer):
    """(d0, ..., dn) -> (d0*...*d[axis-1], d[axis]*...*dn); the default keeps the batch axis."""

    kind = "flatten"

    def __init__(self, axis: int = 1, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise AttributeValueError(f"Flatten: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        attrs = {} if self.axis == 1 else {"axis": self.axis}
        return net.emit("Flatten", [x], attrs, name=self.node_name)
