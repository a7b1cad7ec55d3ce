"""Gradients of the shape ops. Moving elements around moves their gradients back: a reshape is
undone, a transpose inverted, gathered or padded copies of an element add up in that element.
Shape and ConstantOfShape compute from shapes only: they have no gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from graphnet.ops.shape import slice_bounds
from graphnet.runtime.gradients import gradient, non_differentiable, unbroadcast

__all__ = ["reshape", "transpose", "squeeze", "unsqueeze", "gather", "slice_", "pad", "expand"]

non_differentiable(
    "Shape", "its output is the input's shape (integers), not a function of its values"
)
non_differentiable("ConstantOfShape", "its output is a constant; its input is a shape (integers)")


_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {
    "reflect": "reflect",
    "edge": "edge",
    "wrap": "wrap",
}


def _ints(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


@gradient("Reshape")
def reshape(
    dy: np.ndarray, x: np.ndarray, shape: np.ndarray, *, out: tuple, allowzero: int
) -> tuple:
    """dX = dY reshaped to X's shape."""
    return dy.reshape(x.shape), None


@gradient("Transpose")
def transpose(dy: np.ndarray, x: np.ndarray, *, out: tuple, perm: Sequence[int] | None) -> tuple:
    """dX = dY transposed by the inverse permutation (reversed axes when perm is None)."""
    if perm is None:
        return (np.transpose(dy),)
    return (np.transpose(dy, np.argsort(perm)),)


@gradient("Squeeze")
def squeeze(dy: np.ndarray, x: np.ndarray, axes: np.ndarray | None = None, *, out: tuple) -> tuple:
    """dX = dY reshaped to X's shape."""
    return dy.reshape(x.shape), None


@gradient("Unsqueeze")
def unsqueeze(dy: np.ndarray, x: np.ndarray, axes: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY reshaped to X's shape."""
    return dy.reshape(x.shape), None


@gradient("Gather")
def gather(dy: np.ndarray, x: np.ndarray, indices: np.ndarray, *, out: tuple, axis: int) -> tuple:
    """Y = take(X, I, axis): dX[..., j, ...] = sum of dY over the positions whose index is j
    (np.add.at: repeated indices accumulate)."""
    axis %= x.ndim
    idx = indices.astype(np.int64, copy=False) % x.shape[axis]
    dxm = np.zeros((x.shape[axis],) + x.shape[:axis] + x.shape[axis + 1 :], dtype=dy.dtype)
    # dY's index axes (at `axis`) go first, to match dxm[idx].
    dym = np.moveaxis(dy, list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
    np.add.at(dxm, idx, dym)
    return np.moveaxis(dxm, 0, axis), None


@gradient("Slice")
def slice_(
    dy: np.ndarray,
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    axes: np.ndarray | None = None,
    steps: np.ndarray | None = None,
    *,
    out: tuple,
) -> tuple:
    """dX = zeros with dY written back at the sliced positions (a slice never repeats one)."""
    st, en = _ints(starts), _ints(ends)
    ax = _ints(axes) if axes is not None else list(range(len(st)))
    sp = _ints(steps) if steps is not None else [1] * len(st)
    index = [slice(None)] * x.ndim
    for a, s, e, k in zip(ax, st, en, sp, strict=True):
        a %= x.ndim
        index[a] = slice(*slice_bounds(x.shape[a], s, e, k))
    dx = np.zeros(x.shape, dtype=dy.dtype)
    dx[tuple(index)] = dy
    return dx, None, None, None, None


@gradient("Pad", nondiff=(2,))
def pad(
    dy: np.ndarray,
    x: np.ndarray,
    pads: np.ndarray,
    constant_value: np.ndarray | None = None,
    axes: np.ndarray | None = None,
    *,
    out: tuple,
    mode: str,
) -> tuple:
    """Every output element is a copy of one input element (or the constant): pad an array of
    X's flat indices with the same mode (the constant as -1) to learn which, then sum dY per
    source with one bincount. Crops (negative pads) come first, as in the kernel. The constant
    value gets no gradient."""
    p = _ints(pads)
    ax = [a % x.ndim for a in _ints(axes)] if axes is not None else list(range(x.ndim))
    k = len(ax)
    crop = [slice(None)] * x.ndim
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(ax):
        b, e = p[i], p[i + k]
        crop[a] = slice(max(-b, 0), x.shape[a] - max(-e, 0))
        widths[a] = (max(b, 0), max(e, 0))
    source = np.arange(x.size, dtype=np.int64).reshape(x.shape)[tuple(crop)]
    if mode == "constant":
        source = np.pad(source, widths, mode="constant", constant_values=-1)
    else:
        source = np.pad(source, widths, mode=_PAD_MODES[mode])
    real = source >= 0
    dx = np.bincount(source[real], weights=dy[real], minlength=x.size)
    return dx.reshape(x.shape).astype(dy.dtype, copy=False), None, None, None


@gradient("Expand")
def expand(dy: np.ndarray, x: np.ndarray, shape: np.ndarray, *, out: tuple) -> tuple:
    """dX = dY summed over the axes X was broadcast along."""
    return unbroadcast(dy, x.shape), None
