"""Gradients of the tensor ops: Add, Concat, Flatten."""

from __future__ import annotations

import numpy as np

from graphnet.runtime.gradients import gradient, unbroadcast

__all__ = ["add", "concat", "flatten"]


@gradient("Add")
def add(dy: np.ndarray, a: np.ndarray, b: np.ndarray, *, out: tuple) -> tuple:
    """dA = dY, dB = dY, each summed over the axes it was broadcast along."""
    return unbroadcast(dy, a.shape), unbroadcast(dy, b.shape)


@gradient("Concat")
def concat(dy: np.ndarray, *xs: np.ndarray, out: tuple, axis: int) -> tuple:
    """dX_i = the slice of dY along `axis` that X_i filled."""
    cuts = np.cumsum([x.shape[axis] for x in xs])[:-1]
    return tuple(np.split(dy, cuts, axis=axis))


@gradient("Flatten")
def flatten(dy: np.ndarray, x: np.ndarray, *, out: tuple, axis: int) -> tuple:
    """dX = dY reshaped to X's shape."""
    return (dy.reshape(x.shape),)
