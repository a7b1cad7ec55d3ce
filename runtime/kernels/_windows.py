"""Shared maths of the window ops (conv, pooling): padding and strided sliding-window views."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.ops._shapes import window_out_size as out_size  # one formula for shapes and kernels

__all__ = ["pad_spatial", "windows", "out_size"]


def pad_spatial(x: np.ndarray, pads: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Pad the spatial axes (all but the first two) of an N,C,... array. `pads` in ONNX order:
    all begins, then all ends. Negative pads crop."""
    k = x.ndim - 2
    begins, ends = pads[:k], pads[k:]
    if not any(begins) and not any(ends):
        return x
    widths = [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends, strict=True)]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=value)
    if any(b < 0 for b in begins) or any(e < 0 for e in ends):
        sl = [slice(None), slice(None)] + [
            slice(-b if b < 0 else 0, x.shape[2 + i] + e if e < 0 else None)
            for i, (b, e) in enumerate(zip(begins, ends, strict=True))
        ]
        x = x[tuple(sl)]
    return x


def windows(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out: Sequence[int] | None = None,
) -> np.ndarray:
    """A read-only view of shape (N, C, *out_spatial, *kernel) over an already padded array:
    view[n, c, o..., k...] = xp[n, c, o*stride + k*dilation ...]. No copy is made. With `out`,
    only the first `out[i]` windows along each axis are kept."""
    k = len(kernel)
    extent = tuple(d * (kk - 1) + 1 for kk, d in zip(kernel, dilations, strict=True))
    v = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=tuple(range(2, 2 + k)))
    sl = [slice(None), slice(None)]
    sl += [
        slice(None, None if out is None else (o - 1) * s + 1, s)
        for s, o in zip(strides, out or [None] * k, strict=True)
    ]
    sl += [slice(None, None, d) for d in dilations]
    return v[tuple(sl)]
