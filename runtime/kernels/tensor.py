"""Tensor-op kernels: Add, Concat, Flatten."""

from __future__ import annotations

import math

import numpy as np

from graphnet.runtime.kernels import kernel

__all__ = ["add", "concat", "flatten"]


@kernel("Add")
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b)


@kernel("Concat")
def concat(*xs: np.ndarray, axis: int) -> np.ndarray:
    """Join along `axis` (negative allowed: an imported graph may have unknown ranks at plan
    time)."""
    return np.concatenate(xs, axis=axis)


@kernel("Flatten")
def flatten(x: np.ndarray, *, axis: int) -> np.ndarray:
    """(prod(shape[:axis]), prod(shape[axis:])); a negative axis slices the same way. Both sizes
    are given explicitly: with a zero-size dim, reshape(rows, -1) would be ambiguous."""
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
