"""Pooling layers of the DSL: `MaxPool`, `AvgPool`, `GlobalAvgPool`, `GlobalMaxPool`.

The spatial rank (1-D, 2-D, 3-D) comes from the input tensor (rank 3, 4 or 5); sizes are ints
(the same on every spatial axis) or tuples with one entry per spatial axis, PyTorch style.
`padding` is also accepted as 2k ints in ONNX order (all begins, then all ends), or "same"
(ONNX SAME_UPPER: output = ceil(input / stride), the odd pixel of padding at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.nn.core import Layer, Network, Tensor
from graphnet.ops._shapes import same_pads
from graphnet.ops.pooling import SPATIAL_RANKS
from graphnet.value import format_shape

__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool"]

Size = int | Sequence[int]
Padding = int | Sequence[int] | str


class _WindowPool(Layer):
    kind = "pool"
    op = ""

    def __init__(
        self,
        kernel_size: Size,
        stride: Size | None,
        padding: Padding,
        dilation: Size,
        ceil_mode: bool,
        *,
        name: str | None,
    ) -> None:
        super().__init__(name=name)
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = bool(ceil_mode)

    def _where(self) -> str:
        return f"{self.name} ({type(self).__name__})"

    def _per_axis(self, what: str, value: Size, k: int) -> tuple[int, ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,) * k
        vals = tuple(value) if isinstance(value, (tuple, list)) else None
        if vals is None or len(vals) != k or not all(isinstance(v, int) for v in vals):
            raise AttributeValueError(
                f"{self._where()}: {what} must be an int or {k} ints for a {k}-D "
                f"input, got {value!r}"
            )
        return vals

    def window_attrs(self, x: Tensor) -> dict:
        """The ONNX attributes for input `x` (kernel_shape, strides, pads, dilations, ceil_mode)."""
        shape = x.shape
        if shape is None or len(shape) - 2 not in SPATIAL_RANKS:
            raise ShapeError(
                f"{self._where()}: input '{x.name}' must be N,C + 1, 2 or 3 spatial axes "
                f"(rank 3-5), got {format_shape(shape)}"
            )
        k = len(shape) - 2
        kernel = self._per_axis("kernel_size", self.kernel_size, k)
        strides = kernel if self.stride is None else self._per_axis("stride", self.stride, k)
        dilations = self._per_axis("dilation", self.dilation, k)
        pads = self._pads(x, k, kernel, strides, dilations)
        return {
            "kernel_shape": kernel,
            "strides": strides,
            "pads": pads,
            "dilations": dilations,
            "ceil_mode": int(self.ceil_mode),
        }

    def _pads(
        self, x: Tensor, k: int, kernel: tuple, strides: tuple, dilations: tuple
    ) -> tuple[int, ...]:
        p = self.padding
        if isinstance(p, str):
            if p != "same":
                raise AttributeValueError(
                    f"{self._where()}: padding must be an int, ints or 'same', got {p!r}"
                )
            spatial = x.shape[2:]
            if not all(is_static(d) for d in spatial):
                raise ShapeError(
                    f"{self._where()}: padding='same' needs a static spatial shape, input "
                    f"'{x.name}' has {format_shape(x.shape)}"
                )
            return same_pads(spatial, kernel, strides, dilations)
        if isinstance(p, (tuple, list)) and len(p) == 2 * k:
            if not all(isinstance(v, int) for v in p):
                raise AttributeValueError(f"{self._where()}: padding must hold ints, got {p!r}")
            return tuple(p)
        half = self._per_axis("padding", p, k)
        return half + half


class MaxPool(_WindowPool):
    """Max pooling (ONNX MaxPool). `stride` defaults to `kernel_size` (PyTorch's
    non-overlapping windows); padding never wins the max."""

    def __init__(
        self,
        kernel_size: Size,
        stride: Size | None = None,
        padding: Padding = 0,
        dilation: Size = 1,
        ceil_mode: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, name=name)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        return net.emit("MaxPool", [x], self.window_attrs(x), name=self.node_name)


class AvgPool(_WindowPool):
    """Average pooling (ONNX AveragePool). `stride` defaults to `kernel_size`.

    `count_include_pad`: whether padded zeros count in the divisor. The default here is False,
    ONNX's default (count_include_pad=0); PyTorch's `nn.AvgPool2d` defaults to True. Either way
    the part of a ceil_mode window past the end padding never counts."""

    def __init__(
        self,
        kernel_size: Size,
        stride: Size | None = None,
        padding: Padding = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = False,
        *,
        dilation: Size = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, name=name)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, net: Network, x: Tensor) -> Tensor:
        attrs = self.window_attrs(x)
        attrs["count_include_pad"] = int(self.count_include_pad)
        return net.emit("AveragePool", [x], attrs, name=self.node_name)


class GlobalAvgPool(Layer):
    """Mean over all spatial positions per channel, (N,C,H,W) -> (N,C,1,1): the usual
    replacement for large FC layers."""

    kind = "gap"

    def forward(self, net: Network, x: Tensor) -> Tensor:
        return net.emit("GlobalAveragePool", [x], name=self.node_name)


class GlobalMaxPool(Layer):
    """Max over all spatial positions per channel, (N,C,H,W) -> (N,C,1,1)."""

    kind = "gmp"

    def forward(self, net: Network, x: Tensor) -> Tensor:
        return net.emit("GlobalMaxPool", [x], name=self.node_name)
