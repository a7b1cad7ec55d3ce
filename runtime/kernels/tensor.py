"""Tensor-op kernels."""

from __future__ import annotations

import numpy as np

from runtime.kernels import kernel


@kernel("Add")
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.add(a, b)
