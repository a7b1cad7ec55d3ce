"""Activation kernels."""

from __future__ import annotations

import numpy as np

from runtime.kernels import kernel


@kernel("Relu")
def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0).astype(x.dtype, copy=False)
