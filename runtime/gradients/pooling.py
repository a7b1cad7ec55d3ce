"""Gradients of the pools: MaxPool, AveragePool (1-, 2-, 3-D, padding, dilation, ceil_mode) and
the global pools.

MaxPool sends each output's gradient to the element its window picked: the first maximum in
row-major window order, which is exactly ONNX's Indices output, so the kernel's own indices are
reused and summed with one `bincount` (overlapping windows that pick the same element add up).
AveragePool spreads dY / (number of taps that count) over every tap of its window: one strided
add per kernel tap (a loop over the few taps of the window, never over pixels or channels).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from graphnet.runtime.gradients import gradient
from graphnet.runtime.kernels.pooling import max_pool as max_pool_kernel
from graphnet.runtime.kernels.pooling import tap_counts

__all__ = ["max_pool", "average_pool", "global_average_pool", "global_max_pool"]


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
    """dX[i] = sum of dY[o] over the outputs o whose window's first maximum is element i
    (ONNX's Indices with storage_order 0, a flat index into X)."""
    _, idx = max_pool_kernel(
        x,
        kernel_shape=kernel_shape,
        strides=strides,
        pads=pads,
        dilations=dilations,
        ceil_mode=ceil_mode,
        storage_order=0,
        num_outputs=2,
    )
    dx = np.bincount(idx.reshape(-1), weights=dy.reshape(-1), minlength=x.size)
    return (dx.reshape(x.shape).astype(x.dtype, copy=False),)


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
    kernel), so every tap t of window o gets dY[o] / count[o]; taps in the padding (and in the
    ceil_mode overhang) are dropped."""
    k = len(kernel_shape)
    sizes = x.shape[2:]
    outs = dy.shape[2:]
    begins, ends = pads[:k], pads[k:]
    divisor = np.ones((1,) * k, dtype=np.float64)
    for i in range(k):  # a loop over the spatial rank
        c = tap_counts(
            sizes[i],
            outs[i],
            kernel_shape[i],
            strides[i],
            dilations[i],
            begins[i],
            ends[i],
            bool(count_include_pad),
        )
        divisor = divisor * c.reshape((1,) * i + (-1,) + (1,) * (k - 1 - i))
    share = dy / divisor.astype(dy.dtype)
    # The padded frame holds every tap of every window, the ceil_mode overhang included.
    frame = [
        max(
            sizes[i] + begins[i] + ends[i],
            (outs[i] - 1) * strides[i] + dilations[i] * (kernel_shape[i] - 1) + 1,
        )
        for i in range(k)
    ]
    dxp = np.zeros(x.shape[:2] + tuple(frame), dtype=dy.dtype)
    for tap in itertools.product(*[range(kk) for kk in kernel_shape]):  # the window's taps
        index = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, outs, strides, strict=True)
        )
        dxp[(slice(None), slice(None), *index)] += share
    crop = tuple(slice(begins[i], begins[i] + sizes[i]) for i in range(k))
    return (np.ascontiguousarray(dxp[(slice(None), slice(None), *crop)]),)


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
