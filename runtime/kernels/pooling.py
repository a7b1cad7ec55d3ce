"""Pooling kernels: windowed max/average over 1-D, 2-D and 3-D inputs, and the global pools.

All windowed pools go through `_windows`: pad, take a strided view of shape
(N, C, *out, *kernel), reduce over the kernel axes. No copy beyond the padding, no Python loop
over pixels, channels or batch items (only over the spatial rank when building the divisors).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from runtime.kernels import kernel
from runtime.kernels._windows import out_size, pad_spatial, windows

__all__ = ["max_pool", "average_pool", "global_average_pool", "global_max_pool", "tap_counts"]


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
    outs = [out_size(n, kk, s, d, b, e, ceil=bool(ceil_mode))
            for n, kk, s, d, b, e in zip(sizes, kernel_shape, strides, dilations, begins, ends)]
    overhang = [max(0, (o - 1) * s + d * (kk - 1) + 1 - (n + b + e))
                for o, n, kk, s, d, b, e in zip(outs, sizes, kernel_shape, strides, dilations, begins, ends)]
    xp = pad_spatial(x, tuple(begins) + tuple(e + h for e, h in zip(ends, overhang)), value)
    return windows(xp, kernel_shape, strides, dilations, outs)


def tap_counts(size: int, out: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int, include_pad: bool) -> np.ndarray:
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
) -> np.ndarray:
    """Y[n, c, o...] = max over the window's taps; padding is the dtype's lowest value (-inf for
    floats) so it never wins. `storage_order` only concerns the Indices output, which graphnet
    does not produce (the op table accepts 0 only)."""
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    v = _window_view(x, kernel_shape, strides, pads, dilations, ceil_mode, low)
    k = len(kernel_shape)
    return v.max(axis=tuple(range(-k, 0)))


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
        c = tap_counts(x.shape[2 + i], total.shape[2 + i], kernel_shape[i], strides[i], dilations[i],
                       begins[i], ends[i], bool(count_include_pad)).astype(acc)
        divisor = divisor * c.reshape((1,) * i + (-1,) + (1,) * (k - 1 - i))
    return (total / divisor).astype(x.dtype, copy=False)


@kernel("GlobalAveragePool")
def global_average_pool(x: np.ndarray) -> np.ndarray:
    """Mean over every spatial axis, kept as size-1 axes."""
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=acc).astype(x.dtype, copy=False)


@kernel("GlobalMaxPool")
def global_max_pool(x: np.ndarray) -> np.ndarray:
    """Max over every spatial axis, kept as size-1 axes."""
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
