"""Gradients of the pools: MaxPool, AveragePool (1-, 2-, 3-D, padding, dilation, ceil_mode) and
the global pools.

MaxPool sends each output's gradient to the element its window picked: the first maximum in
row-major window order (ONNX's Indices, PyTorch's choice), found with one argmax over a strided
window view. AveragePool spreads dY / (number of taps that count) over every tap of its window.
Both go back to X with one strided add per kernel tap (a loop over the few taps of the window,
never over pixels or channels); overlapping windows add up.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from graphnet.runtime.gradients import gradient
from graphnet.runtime.kernels._windows import pad_spatial, windows
from graphnet.runtime.kernels.pooling import tap_counts

__all__ = [
    "max_pool",
    "average_pool",
    "global_average_pool",
    "global_max_pool",
    "window_frame",
]


def window_frame(
    sizes: Sequence[int],
    outs: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
) -> list[int]:
    """Per spatial axis, the length of the padded frame that holds every tap of every window,
    the ceil_mode overhang past the end padding included."""
    k = len(kernel_shape)
    return [
        max(
            sizes[i] + pads[i] + pads[k + i],
            (outs[i] - 1) * strides[i] + dilations[i] * (kernel_shape[i] - 1) + 1,
        )
        for i in range(k)
    ]


def _scatter_taps(
    x_shape: Sequence[int],
    frame: Sequence[int],
    pads: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    share: Callable[[int], np.ndarray],
    dtype: np.dtype,
) -> np.ndarray:
    """dX from what each window sends to each of its taps: `share(j)` (shaped like dY) is what
    every window sends to its j-th tap (row-major over the kernel). One strided add per tap into
    the padded frame, then the padding is cropped away."""
    k = len(kernel_shape)
    dxp = np.zeros(tuple(x_shape[:2]) + tuple(frame), dtype=dtype)
    for j, tap in enumerate(itertools.product(*[range(kk) for kk in kernel_shape])):
        g = share(j)
        outs = g.shape[2:]
        index = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, outs, strides, strict=True)
        )
        dxp[(slice(None), slice(None), *index)] += g
    crop = tuple(slice(pads[i], pads[i] + x_shape[2 + i]) for i in range(k))
    return np.ascontiguousarray(dxp[(slice(None), slice(None), *crop)])


@gradient("MaxPool")
def max_pool(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    out: tuple,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    storage_order: int,
) -> tuple:
    """dX[i] = sum of dY[o] over the windows o whose first maximum (row-major over the kernel,
    as ONNX's Indices and PyTorch pick it) is element i. Padding is -inf: never a maximum."""
    k = len(kernel_shape)
    sizes, outs = x.shape[2:], dy.shape[2:]
    frame = window_frame(sizes, outs, kernel_shape, strides, dilations, pads)
    ends = [frame[i] - sizes[i] - pads[i] for i in range(k)]
    xp = pad_spatial(x, tuple(pads[:k]) + tuple(ends), -np.inf)
    view = windows(xp, kernel_shape, strides, dilations, outs)  # (N, C, *out, *k)
    first = view.reshape(view.shape[: 2 + k] + (-1,)).argmax(axis=-1)  # the first maximum
    zero = np.zeros((), dy.dtype)
    return (
        _scatter_taps(
            x.shape,
            frame,
            pads,
            kernel_shape,
            strides,
            dilations,
            lambda j: np.where(first == j, dy, zero),
            dy.dtype,
        ),
    )


@gradient("AveragePool")
def average_pool(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    out: tuple,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    count_include_pad: int,
) -> tuple:
    """Y[o] = sum of the window's taps / count[o] (count: the taps that count, as in the
    kernel), so every tap of window o gets dY[o] / count[o]; taps in the padding (and in the
    ceil_mode overhang) are cropped away."""
    k = len(kernel_shape)
    sizes, outs = x.shape[2:], dy.shape[2:]
    divisor = np.ones((1,) * k, dtype=np.float64)
    for i in range(k):  # a loop over the spatial rank
        c = tap_counts(
            sizes[i],
            outs[i],
            kernel_shape[i],
            strides[i],
            dilations[i],
            pads[i],
            pads[k + i],
            bool(count_include_pad),
        )
        divisor = divisor * c.reshape((1,) * i + (-1,) + (1,) * (k - 1 - i))
    share = dy / divisor.astype(dy.dtype)
    frame = window_frame(sizes, outs, kernel_shape, strides, dilations, pads)
    return (
        _scatter_taps(
            x.shape, frame, pads, kernel_shape, strides, dilations, lambda j: share, dy.dtype
        ),
    )


@gradient("GlobalAveragePool")
def global_average_pool(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY / (number of positions), broadcast over the positions."""
    count = int(np.prod(x.shape[2:]))
    return (np.broadcast_to(dy / dy.dtype.type(count), x.shape).copy(),)


@gradient("GlobalMaxPool")
def global_max_pool(dy: np.ndarray, x: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY at the first position holding each (example, channel)'s maximum, 0 elsewhere."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    win = flat.argmax(axis=2)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, win[:, :, None], dy.reshape(n, c, 1), axis=2)
    return (dx.reshape(x.shape),)
