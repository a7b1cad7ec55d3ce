"""Shape-op kernels: Reshape, Transpose, (Un)Squeeze, Shape, Gather, Slice, Pad,
ConstantOfShape, Expand. Attributes that are inputs in ONNX's newest form arrive as arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.ops.shape import reshape_shape, slice_bounds
from graphnet.runtime.kernels import kernel

__all__ = [
    "reshape",
    "transpose",
    "squeeze",
    "unsqueeze",
    "shape",
    "gather",
    "slice_",
    "pad",
    "constant_of_shape",
    "expand",
]


def _ints(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


@kernel("Reshape")
def reshape(x: np.ndarray, shape: np.ndarray, *, allowzero: int) -> np.ndarray:
    # The op table's rule resolves 0 and -1 against the concrete shape (one formula for both).
    return x.reshape(reshape_shape(x.shape, _ints(shape), allowzero))


@kernel("Transpose")
def transpose(x: np.ndarray, *, perm: Sequence[int] | None) -> np.ndarray:
    return np.transpose(x, perm)


@kernel("Squeeze")
def squeeze(x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in _ints(axes)))


@kernel("Unsqueeze")
def unsqueeze(x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    ax = _ints(axes)
    rank = x.ndim + len(ax)
    return np.expand_dims(x, tuple(a % rank for a in ax))


@kernel("Shape")
def shape(x: np.ndarray, *, start: int, end: int | None) -> np.ndarray:
    # Python's slice clamping is ONNX's: negatives count from the end, then clamp to [0, rank].
    return np.array(x.shape[start:end], dtype=np.int64)


@kernel("Gather")
def gather(x: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    # np.take reads negative indices from the end and rejects out-of-range ones, as ONNX requires.
    return np.take(x, indices.astype(np.int64, copy=False), axis=axis)


@kernel("Slice")
def slice_(
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    axes: np.ndarray | None = None,
    steps: np.ndarray | None = None,
) -> np.ndarray:
    st, en = _ints(starts), _ints(ends)
    ax = _ints(axes) if axes is not None else list(range(len(st)))
    sp = _ints(steps) if steps is not None else [1] * len(st)
    index = [slice(None)] * x.ndim
    for a, s, e, k in zip(ax, st, en, sp, strict=True):
        a %= x.ndim
        index[a] = slice(*slice_bounds(x.shape[a], s, e, k))
    return x[tuple(index)].copy()


@kernel("Pad")
def pad(
    x: np.ndarray,
    pads: np.ndarray,
    constant_value: np.ndarray | None = None,
    axes: np.ndarray | None = None,
    *,
    mode: str,
) -> np.ndarray:
    """ONNX Pad. Negative pads crop; the crop comes first, so reflect/edge/wrap pad around what
    is kept (onnxruntime's order)."""
    p = _ints(pads)
    ax = [a % x.ndim for a in _ints(axes)] if axes is not None else list(range(x.ndim))
    k = len(ax)
    crop = [slice(None)] * x.ndim
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(ax):
        b, e = p[i], p[i + k]
        crop[a] = slice(max(-b, 0), x.shape[a] - max(-e, 0))
        widths[a] = (max(b, 0), max(e, 0))
    x = x[tuple(crop)]
    if mode == "constant":
        value = 0 if constant_value is None else np.asarray(constant_value).reshape(-1)[0]
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@kernel("ConstantOfShape")
def constant_of_shape(shape: np.ndarray, *, value: np.ndarray) -> np.ndarray:
    return np.full(tuple(_ints(shape)), value.reshape(-1)[0], dtype=value.dtype)


@kernel("Expand")
def expand(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    out = np.broadcast_shapes(x.shape, tuple(_ints(shape)))
    # broadcast_to is a read-only view; the output is an ordinary array callers may write to.
    return np.broadcast_to(x, out).copy()
