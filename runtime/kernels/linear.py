"""Linear kernels: Gemm, MatMul, Maxout. Each is one BLAS product plus element-wise work."""

from __future__ import annotations

import numpy as np

from graphnet.runtime.kernels import kernel

__all__ = ["gemm", "matmul", "maxout"]


@kernel("Gemm")
def gemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    alpha: float,
    beta: float,
    transA: int,  # noqa: N803 - ONNX's attribute name
    transB: int,  # noqa: N803
) -> np.ndarray:
    """alpha * A' @ B' + beta * C, C broadcast to (M, N).

    alpha and beta are rounded to float32 first: ONNX stores them as float32 attributes, so that
    is what an exported model (and onnxruntime, even on float64 data) computes with."""
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    y = np.matmul(a2, b2)
    # Skip the no-op scalings: they cost a pass over Y and (for alpha) a rounding step ORT skips
    # too.
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * c.dtype.type(beta))
    return y.astype(a.dtype, copy=False)


@kernel("MatMul")
def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.matmul: batched, leading axes broadcast, 1-D operands promoted then squeezed."""
    return np.matmul(a, b)


@kernel("Maxout")
def maxout(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, pieces: int) -> np.ndarray:
    """max_j (x @ W[j].T + B[j]): all pieces in one matmul against W viewed as (k*out, in)."""
    n = x.shape[0]
    k, out, n_in = w.shape
    z = np.matmul(x, w.reshape(k * out, n_in).T).reshape(n, k, out)
    if b is not None:
        z = z + b  # (k, out) broadcasts over the batch axis
    return z.max(axis=1).astype(x.dtype, copy=False)
