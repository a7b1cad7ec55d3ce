"""DSL layers of the normalization family: `BatchNorm`, `LayerNorm`, `InstanceNorm`, `GroupNorm`,
`LRN`.

Each infers its channel count (or normalized shape) from the tensor it is applied to. Errors that
depend on the layer's own settings name the layer: "gn1 (GroupNorm): 6 channels not divisible by
4 groups"; shape errors from the op table name the node, which carries the layer's name.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import format_shape
from graphnet.nn.core import Layer, Network, Tensor

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "LRN"]


class _Norm(Layer):
    """Shared checks: rank of the input, a known channel count, a valid epsilon."""

    ranks: range = range(2, 6)

    def __init__(self, *, eps: float, name: str | None) -> None:
        super().__init__(name=name)
        if not isinstance(eps, (int, float)) or not eps >= 0:
            raise AttributeValueError(f"{self._label()}: eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)

    def _label(self) -> str:
        return f"{self.name or self.kind} ({type(self).__name__})"

    def _channels(self, x: Tensor) -> int:
        if x.shape is None or len(x.shape) not in self.ranks:
            want = " or ".join(map(str, self.ranks))
            raise ShapeError(
                f"{self._label()}: input '{x.name}' must have rank {want} (N, C, ...), got "
                f"{format_shape(x.shape)}"
            )
        c = x.shape[1]
        if not is_static(c):
            raise ShapeError(
                f"{self._label()}: input '{x.name}' {format_shape(x.shape)} has a "
                "dynamic channel count"
            )
        return int(c)


class BatchNorm(_Norm):
    """Batch normalization over the batch and spatial axes, per channel (2-D to 5-D inputs).

    `smoothing` is alpha of docs/formulas.md (ONNX's `momentum`): running = alpha * running +
    (1 - alpha) * batch. `torch_momentum` is PyTorch's convention, 1 - alpha. Give at most one;
    the default is alpha = 0.9. Parameters: scale (gamma) 1, bias (beta) 0, running mean 0 and
    running variance 1, the usual starting values: 4 * C numbers."""

    kind = "bn"

    def __init__(
        self,
        *,
        eps: float = 1e-5,
        smoothing: float | None = None,
        torch_momentum: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, name=name)
        if smoothing is not None and torch_momentum is not None:
            raise AttributeValueError(
                f"{self._label()}: give smoothing (alpha) or torch_momentum (1 - alpha), not both"
            )
        for what, v in (("smoothing", smoothing), ("torch_momentum", torch_momentum)):
            # Checked before any arithmetic: torch_momentum="0.1" was a bare TypeError.
            if v is not None and (isinstance(v, bool) or not isinstance(v, Real)):
                raise AttributeValueError(f"{self._label()}: {what} must be a number, got {v!r}")
        alpha = (
            float(smoothing)
            if smoothing is not None
            else 1.0 - float(torch_momentum)
            if torch_momentum is not None
            else 0.9
        )
        if not 0.0 <= alpha <= 1.0:
            which = "smoothing" if smoothing is not None else "1 - torch_momentum"
            raise AttributeValueError(f"{self._label()}: {which} must be in [0, 1], got {alpha!r}")
        self.smoothing = float(alpha)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        c = self._channels(x)
        ins: list[Tensor | str] = [
            x,
            self.param(net, "scale", lambda: np.ones(c, np.float32)),
            self.param(net, "bias", lambda: np.zeros(c, np.float32)),
            self.param(net, "running_mean", lambda: np.zeros(c, np.float32)),
            self.param(net, "running_var", lambda: np.ones(c, np.float32)),
        ]
        attrs = {"epsilon": self.eps, "momentum": self.smoothing}
        return net.emit("BatchNormalization", ins, attrs, name=self.node_name)


class LayerNorm(_Norm):
    """Layer normalization per example over ALL dims after the batch (docs/formulas.md's layer
    norm: all maps and positions); with `affine`, a scale (1) and bias (0) of that whole shape."""

    kind = "ln"
    ranks = range(2, 9)

    def __init__(self, *, eps: float = 1e-5, affine: bool = True, name: str | None = None) -> None:
        super().__init__(eps=eps, name=name)
        self.affine = bool(affine)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        self._channels(x)
        shape = tuple(x.shape[1:])
        if not all(is_static(d) for d in shape):
            raise ShapeError(
                f"{self._label()}: input '{x.name}' {format_shape(x.shape)} needs static dims "
                "after the batch"
            )
        ins: list = [x]
        if self.affine:
            ins += [
                self.param(net, "scale", lambda: np.ones(shape, np.float32)),
                self.param(net, "bias", lambda: np.zeros(shape, np.float32)),
            ]
        return net.emit(
            "LayerNormalization", ins, {"axis": 1, "epsilon": self.eps}, name=self.node_name
        )


class InstanceNorm(_Norm):
    """Instance normalization: per example and channel over the positions (3-D to 5-D inputs).
    Not affine by default (PyTorch's default); export then writes ones and zeros."""

    kind = "in"
    ranks = range(3, 6)

    def __init__(self, *, eps: float = 1e-5, affine: bool = False, name: str | None = None) -> None:
        super().__init__(eps=eps, name=name)
        self.affine = bool(affine)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        c = self._channels(x)
        ins: list = [x]
        if self.affine:
            ins += [
                self.param(net, "scale", lambda: np.ones(c, np.float32)),
                self.param(net, "bias", lambda: np.zeros(c, np.float32)),
            ]
        return net.emit("InstanceNormalization", ins, {"epsilon": self.eps}, name=self.node_name)


class GroupNorm(_Norm):
    """Group normalization: per example over `groups` groups of consecutive channels and all
    positions; with `affine`, a per-channel scale (1) and bias (0)."""

    kind = "gn"

    def __init__(
        self, groups: int, *, eps: float = 1e-5, affine: bool = True, name: str | None = None
    ) -> None:
        super().__init__(eps=eps, name=name)
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise AttributeValueError(
                f"{self._label()}: groups must be an int >= 1, got {groups!r}"
            )
        self.groups = int(groups)
        self.affine = bool(affine)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        c = self._channels(x)
        if c % self.groups:
            raise ShapeError(
                f"{self._label()}: {c} channels not divisible by {self.groups} groups (input "
                f"{format_shape(x.shape)})"
            )
        ins: list = [x]
        if self.affine:
            ins += [
                self.param(net, "scale", lambda: np.ones(c, np.float32)),
                self.param(net, "bias", lambda: np.zeros(c, np.float32)),
            ]
        attrs = {"num_groups": self.groups, "epsilon": self.eps}
        return net.emit("GroupNormalization", ins, attrs, name=self.node_name)


class LRN(_Norm):
    """Local response normalization across `size` neighbouring channels (ONNX LRN)."""

    kind = "lrn"

    def __init__(
        self,
        size: int,
        *,
        alpha: float = 1e-4,
        beta: float = 0.75,
        bias: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(eps=0.0, name=name)
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise AttributeValueError(f"{self._label()}: size must be an int >= 1, got {size!r}")
        self.size, self.alpha, self.beta, self.bias = (
            int(size),
            float(alpha),
            float(beta),
            float(bias),
        )

    def forward(self, net: Network, x: Tensor) -> Tensor:
        self._channels(x)
        attrs = {"size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}
        return net.emit("LRN", [x], attrs, name=self.node_name)
