"""Convolution layers of the DSL: `Conv` (and the rank-checking `Conv1d/2d/3d`), `WSConv`,
`ConvTranspose`.

The spatial rank (1-, 2- or 3-D) comes from the input tensor (rank 3, 4 or 5); input channels come
from its shape, so only `out_channels` is given. Sizes are an int (the same on every spatial axis)
or one int per spatial axis, e.g. `(1, 7)` and `(7, 1)` for Inception's factored convs. Conv's
`padding` is an int, one int per axis (both sides), 2k ints in ONNX order (all begins, then all
ends), "valid" (none) or "same" (output = ceil(input / stride), the odd pixel of padding at the
end, as ONNX's SAME_UPPER; computed from the static input size).

Parameters are float32, drawn like PyTorch's defaults: W and B ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
fan_in = (input channels per group) * (kernel taps) for Conv; for ConvTranspose PyTorch takes
W's second axis, (output channels per group) * taps, and so do we.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod, sqrt
from typing import Any

import numpy as np

from graphnet.dims import is_static
from graphnet.errors import AttributeValueError, ShapeError
from graphnet.ir import format_shape
from graphnet.nn.core import Layer, Network, Tensor
from graphnet.ops._shapes import same_pads

__all__ = ["Conv", "Conv1d", "Conv2d", "Conv3d", "WSConv", "ConvTranspose"]

Size = int | Sequence[int]
Padding = int | Sequence[int] | str


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class _ConvBase(Layer):
    """What Conv, WSConv and ConvTranspose share: argument checks, per-axis sizes, parameters."""

    kind = "conv"
    op = "Conv"
    ranks: tuple[int, ...] = (3, 4, 5)

    def __init__(
        self,
        out_channels: int,
        kernel_size: Size,
        *,
        stride: Size,
        padding: Padding,
        dilation: Size,
        groups: int,
        bias: bool,
        name: str | None,
    ) -> None:
        super().__init__(name=name)
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.bias = bool(bias)
        # Checked here so that a bad argument fails on the line that wrote it (no name yet).
        for what, v in (("out_channels", out_channels), ("groups", groups)):
            if not _is_int(v) or v < 1:
                raise AttributeValueError(
                    f"{type(self).__name__}: {what} must be a positive int, got {v!r}"
                )

    def _where(self) -> str:
        return f"{self.name} ({type(self).__name__})"

    def _per_axis(self, what: str, value: object, k: int, minimum: int) -> tuple[int, ...]:
        vals: tuple[Any, ...] | None = (
            (value,) * k
            if _is_int(value)
            else tuple(value)
            if isinstance(value, (tuple, list))
            else None
        )
        if vals is None or len(vals) != k or not all(_is_int(v) for v in vals):
            raise AttributeValueError(
                f"{self._where()}: {what} must be an int or {k} ints for a {k}-D "
                f"input, got {value!r}"
            )
        if any(v < minimum for v in vals):
            raise AttributeValueError(
                f"{self._where()}: {what} must be >= {minimum}, got {value!r}"
            )
        return tuple(int(v) for v in vals)

    def _geometry(self, x: Tensor) -> tuple[int, int, tuple, tuple, tuple]:
        """(k, input channels, kernel, strides, dilations) after checking the input's shape."""
        shape = x.shape
        if shape is None or len(shape) not in self.ranks:
            want = " or ".join(str(r) for r in self.ranks)
            layout = {3: "(N, C, L)", 4: "(N, C, H, W)", 5: "(N, C, D, H, W)"}
            hint = layout[self.ranks[0]] if len(self.ranks) == 1 else "(N, C, 1 to 3 spatial axes)"
            raise ShapeError(
                f"{self._where()}: expects an input of rank {want} {hint}, got "
                f"'{x.name}'{format_shape(shape)}"
            )
        k = len(shape) - 2
        c = shape[1]
        if not is_static(c):
            raise ShapeError(
                f"{self._where()}: input '{x.name}'{format_shape(shape)} has a "
                "dynamic channel count"
            )
        kernel = self._per_axis("kernel_size", self.kernel_size, k, 1)
        strides = self._per_axis("stride", self.stride, k, 1)
        dilations = self._per_axis("dilation", self.dilation, k, 1)
        return k, int(c), kernel, strides, dilations

    def _check_groups(self, c: int, x: Tensor) -> None:
        g = self.groups
        if c % g:
            raise ShapeError(
                f"{self._where()}: input has {c} channels, not divisible by groups={g} (input "
                f"'{x.name}'{format_shape(x.shape)})"
            )
        if self.out_channels % g:
            raise ShapeError(
                f"{self._where()}: out_channels={self.out_channels} is not divisible by groups={g}"
            )

    def _uniform(self, net: Network, shape: tuple, fan_in: int) -> np.ndarray:
        bound = 1.0 / sqrt(fan_in)
        return net.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def _weights(self, net: Network, w_shape: tuple, fan_in: int) -> list[str]:
        names = [self.param(net, "weight", lambda: self._uniform(net, w_shape, fan_in))]
        if self.bias:
            names.append(
                self.param(net, "bias", lambda: self._uniform(net, (self.out_channels,), fan_in))
            )
        return names


class Conv(_ConvBase):
    """N-D convolution (ONNX Conv) on (N, C, spatial...) inputs of 1 to 3 spatial axes.

    `Conv(out_channels, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias=True)`;
    `groups=C` with `out_channels` a multiple of C is a depthwise conv."""

    def __init__(
        self,
        out_channels: int,
        kernel_size: Size,
        *,
        stride: Size = 1,
        padding: Padding = 0,
        dilation: Size = 1,
        groups: int = 1,
        bias: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            name=name,
        )

    def conv_attrs(self, x: Tensor) -> tuple[dict, int, tuple]:
        """(ONNX attributes, input channels, kernel) for input `x`, checking shapes and
        arguments."""
        k, c, kernel, strides, dilations = self._geometry(x)
        self._check_groups(c, x)
        pads = self._pads(x, k, kernel, strides, dilations)
        attrs = {"strides": strides, "pads": pads, "dilations": dilations, "group": self.groups}
        return attrs, c, kernel

    def _pads(
        self, x: Tensor, k: int, kernel: tuple, strides: tuple, dilations: tuple
    ) -> tuple[int, ...]:
        p = self.padding
        if isinstance(p, str):
            if p == "valid":
                return (0,) * (2 * k)
            if p != "same":
                raise AttributeValueError(
                    f"{self._where()}: padding must be an int, ints, 'same' or 'valid', got {p!r}"
                )
            spatial = x.shape[2:]
            if not all(is_static(d) for d in spatial):
                raise ShapeError(
                    f"{self._where()}: padding='same' needs a static spatial shape, input "
                    f"'{x.name}' is {format_shape(x.shape)}"
                )
            return same_pads(spatial, kernel, strides, dilations)
        if isinstance(p, (tuple, list)) and len(p) == 2 * k:
            if not all(_is_int(v) and v >= 0 for v in p):
                raise AttributeValueError(
                    f"{self._where()}: padding must hold ints >= 0, got {p!r}"
                )
            return tuple(int(v) for v in p)
        half = self._per_axis("padding", p, k, 0)
        return half + half

    def forward(self, net: Network, x: Tensor) -> Tensor:
        attrs, c, kernel = self.conv_attrs(x)
        w_shape = (self.out_channels, c // self.groups, *kernel)
        inputs: list[Tensor | str] = [
            x,
            *self._weights(net, w_shape, (c // self.groups) * prod(kernel)),
        ]
        return net.emit(self.op, inputs, self._extra(attrs), name=self.node_name)

    def _extra(self, attrs: dict) -> dict:
        return attrs


class Conv1d(Conv):
    """`Conv` that requires a 1-D input (N, C, L)."""

    ranks = (3,)


class Conv2d(Conv):
    """`Conv` that requires a 2-D input (N, C, H, W)."""

    ranks = (4,)


class Conv3d(Conv):
    """`Conv` that requires a 3-D input (N, C, D, H, W), e.g. video frames."""

    ranks = (5,)


class WSConv(Conv):
    """Weight-standardized conv (docs/formulas.md): the kernel is standardized per output map,
    W_hat = (W - mean) / sqrt(var + eps) over input maps and taps, before the conv. Same
    arguments as `Conv`, plus `eps`."""

    kind = "wsconv"
    op = "WSConv"

    def __init__(
        self,
        out_channels: int,
        kernel_size: Size,
        *,
        stride: Size = 1,
        padding: Padding = 0,
        dilation: Size = 1,
        groups: int = 1,
        bias: bool = True,
        eps: float = 1e-5,
        name: str | None = None,
    ) -> None:
        super().__init__(
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            name=name,
        )
        if not eps > 0:
            raise AttributeValueError(f"WSConv: eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def _extra(self, attrs: dict) -> dict:
        return {**attrs, "epsilon": self.eps}


class ConvTranspose(_ConvBase):
    """Transposed convolution (ONNX ConvTranspose), e.g. learned upsampling.

    Output length per axis:
    (in-1)*stride - pad_begin - pad_end + dilation*(k-1) + 1 + output_padding.
    `padding` is an int, one int per axis (both sides) or 2k ints in ONNX order; `output_padding`
    must be smaller than the stride or the dilation of its axis."""

    kind = "convt"
    op = "ConvTranspose"

    def __init__(
        self,
        out_channels: int,
        kernel_size: Size,
        *,
        stride: Size = 1,
        padding: Size = 0,
        output_padding: Size = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Size = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            name=name,
        )
        self.output_padding = output_padding

    def forward(self, net: Network, x: Tensor) -> Tensor:
        k, c, kernel, strides, dilations = self._geometry(x)
        self._check_groups(c, x)
        p = self.padding
        if isinstance(p, (tuple, list)) and len(p) == 2 * k:
            pads = tuple(
                self._per_axis("padding", tuple(p[:k]), k, 0)
                + self._per_axis("padding", tuple(p[k:]), k, 0)
            )
        else:
            half = self._per_axis("padding", p, k, 0)
            pads = half + half
        out_pad = self._per_axis("output_padding", self.output_padding, k, 0)
        for i in range(k):
            if out_pad[i] >= strides[i] and out_pad[i] >= dilations[i]:
                raise AttributeValueError(
                    f"{self._where()}: output_padding={out_pad} must be smaller than the stride "
                    f"{strides} or the dilation {dilations} of its axis"
                )
        mg = self.out_channels // self.groups
        w_shape = (c, mg, *kernel)
        inputs: list[Tensor | str] = [x, *self._weights(net, w_shape, mg * prod(kernel))]
        attrs = {
            "strides": strides,
            "pads": pads,
            "dilations": dilations,
            "group": self.groups,
            "output_padding": out_pad,
        }
        return net.emit("ConvTranspose", inputs, attrs, name=self.node_name)
