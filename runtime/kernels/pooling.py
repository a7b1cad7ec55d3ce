"""Pooling kernels: windowed max/average over 1-D, 2-D and 3-D inputs, and the global pools.

All windowed pools go through `_windows`: pad, take a strided view of shape
(N, C, *out, *kernel), reduce over the kernel axes. No copy beyond the padding, no Python loop
over pixels, channels or batch items (only over the spatial rank when building the divisors).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.runtime.kernels import kernel
from graphnet.runtime.kernels._windows import out_size, pad_spatial, windows

__all__ = [
    "max_pool",
    "max_pool_indices",
    "average_pool",
    "global_average_pool",
    "global_max_pool",
    "tap_counts",
]


def _window_view(
    x: np.ndarray,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    value: float,
) -> np.ndarray:
    """The (N, C, *out, *kernel) view of `x` padded with `value`. With ceil_mode the last window
    may reach past the end padding; that overhang is padded with `value` too, and callers make
    sure it never counts (max: `value` is the identity; average: `tap_counts` leaves it out)."""
    k = len(kernel_shape)
    sizes = x.shape[2:]
    begins, ends = pads[:k], pads[k:]
    outs = [
        out_size(n, kk, s, d, b, e, ceil=bool(ceil_mode))
        for n, kk, s, d, b, e in zip(
            sizes, kernel_shape, strides, dilations, begins, ends, strict=True
        )
    ]
    overhang = [
        max(0, (o - 1) * s + d * (kk - 1) + 1 - (n + b + e))
        for o, n, kk, s, d, b, e in zip(
            outs, sizes, kernel_shape, strides, dilations, begins, ends, strict=True
        )
    ]
    xp = pad_spatial(
        x, tuple(begins) + tuple(e + h for e, h in zip(ends, overhang, strict=True)), value
    )
    return windows(xp, kernel_shape, strides, dilations, outs)


def tap_counts(
    size: int,
    out: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    include_pad: bool,
) -> np.ndarray:
    """Per window along one axis, the number of taps that count for the average: the real
    elements, plus the explicit padding if `include_pad`. The ceil_mode overhang past the end
    padding never counts (what onnxruntime and PyTorch do)."""
    lo, hi = (-pad_begin, size + pad_end) if include_pad else (0, size)
    pos = np.arange(out)[:, None] * stride - pad_begin + np.arange(kernel)[None, :] * dilation
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


@kernel("MaxPool")
def max_pool(
    x: np.ndarray,
    *,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    storage_order: int,
    num_outputs: int = 2,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Y[n, c, o...] = max over the window's taps; padding is the dtype's lowest value (-inf for
    floats) so it never wins. With `num_outputs` 2 (the executor passes how many outputs the node
    has; callers that do not say get both) also Indices: see `max_pool_indices`."""
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    v = _window_view(x, kernel_shape, strides, pads, dilations, ceil_mode, low)
    k = len(kernel_shape)
    y = v.max(axis=tuple(range(-k, 0)))
    if num_outputs < 2:
        return y
    return y, max_pool_indices(x.shape, v, y, kernel_shape, strides, pads, dilations, storage_order)


def max_pool_indices(
    x_shape: Sequence[int],
    v: np.ndarray,
    y: np.ndarray,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    storage_order: int,
) -> np.ndarray:
    """ONNX's MaxPool Indices: for each output, the first tap (in row-major window order) that is
    a real element of X equal to the max, as a flat int64 index into X: row-major over all of
    (N, C, spatial...) with storage_order 0; with 1, (N, C) row-major then the spatial position
    column-major (first spatial axis fastest), as onnx.reference and onnxruntime number it.
    Padding taps are excluded explicitly, so an integer X equal to the padding value (its dtype's
    minimum) still points at a real element."""
    k = len(kernel_shape)
    n, c, sizes = x_shape[0], x_shape[1], tuple(x_shape[2:])
    outs = y.shape[2:]
    # Per axis i, the input coordinate of output o and tap t is
    # o * stride - pad_begin + t * dilation;
    # `valid` (broadcasting against (*out, *kernel)) says which taps are real elements.
    valid = np.ones((1,) * (2 * k), dtype=bool)
    for i in range(k):  # a loop over the spatial rank
        shape = [1] * (2 * k)
        shape[i], shape[k + i] = outs[i], kernel_shape[i]
        pos = (
            np.arange(outs[i])[:, None] * strides[i]
            - pads[i]
            + np.arange(kernel_shape[i])[None, :] * dilations[i]
        )
        pos = pos.reshape(shape)
        valid = valid & (pos >= 0) & (pos < sizes[i])
    hits = (v == y[(...,) + (None,) * k]) & valid  # (N, C, *out, *kernel)
    tap = hits.reshape(hits.shape[: 2 + k] + (-1,)).argmax(axis=-1)  # first hit, row-major taps
    taps = np.unravel_index(tap, tuple(kernel_shape))
    # Spatial flat offset of the chosen tap.
    order = range(k) if storage_order == 0 else reversed(range(k))
    offset = np.zeros(tap.shape, dtype=np.int64)
    for i in order:  # Horner: row-major makes the LAST axis fastest, column-major the first
        o = np.arange(outs[i], dtype=np.int64).reshape(
            (1, 1) + tuple(outs[i] if j == i else 1 for j in range(k))
        )
        pos = o * strides[i] - pads[i] + taps[i].astype(np.int64) * dilations[i]
        offset = offset * sizes[i] + pos
    plane = int(np.prod(sizes, dtype=np.int64))
    nc = (np.arange(n, dtype=np.int64)[:, None] * c + np.arange(c, dtype=np.int64)[None, :]) * plane
    return offset + nc.reshape((n, c) + (1,) * k)


@kernel("AveragePool")
def average_pool(
    x: np.ndarray,
    *,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    count_include_pad: int,
) -> np.ndarray:
    """Y = (sum of the window's taps, padding being 0) / (number of taps that count).

    The divisor is separable: a tap counts iff it counts along every axis, so it is the outer
    product of one `tap_counts` vector per spatial axis."""
    k = len(kernel_shape)
    # float16 sums accumulate in float32 (as onnxruntime does); the result keeps x's dtype.
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    v = _window_view(x, kernel_shape, strides, pads, dilations, ceil_mode, 0.0)
    total = v.sum(axis=tuple(range(-k, 0)), dtype=acc)
    divisor = np.ones((1,) * k, dtype=acc)
    begins, ends = pads[:k], pads[k:]
    for i in range(k):  # a loop over the spatial rank
        c = tap_counts(
            x.shape[2 + i],
            total.shape[2 + i],
            kernel_shape[i],
            strides[i],
            dilations[i],
            begins[i],
            ends[i],
            bool(count_include_pad),
        ).astype(acc)
        divisor = divisor * c.reshape((1,) * i + (-1,) + (1,) * (k - 1 - i))
    return (total / divisor).astype(x.dtype, copy=False)


@kernel("GlobalAveragePool")
def global_average_pool(x: np.ndarray) -> np.ndarray:
    """Mean over every spatial axis, kept as size-1 axes."""
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=acc).astype(
        x.dtype, copy=False
    )


@kernel("GlobalMaxPool")
def global_max_pool(x: np.ndarray) -> np.ndarray:
    """Max over every spatial axis, kept as size-1 axes."""
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
