"""Gradients of the linear ops: Gemm, MatMul (batched, broadcast) and Maxout."""

from __future__ import annotations

import numpy as np

from graphnet.runtime.gradients import gradient, unbroadcast

__all__ = ["gemm", "matmul", "maxout"]


@gradient("Gemm")
def gemm(
    dy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    out: tuple,
    alpha: float,
    beta: float,
    transA: int,  # noqa: N803 - ONNX's attribute name
    transB: int,  # noqa: N803
    needs: tuple[bool, ...] = (True, True, True),
) -> tuple:
    """Y = alpha * A' @ B' + beta * C with A' = A or A.T, B' = B or B.T:
    dA' = alpha * dY @ B'.T,  dB' = alpha * A'.T @ dY (transposed back where the op
    transposed), dC = beta * dY summed over the axes C was broadcast along. alpha and beta are
    the float32-rounded values the kernel uses."""
    alpha, beta = float(np.float32(alpha)), float(np.float32(beta))
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    da = db = dc = None
    if needs[0]:
        da2 = dy @ b2.T
        da = (da2.T if transA else da2) * dy.dtype.type(alpha)
    if needs[1]:
        db2 = a2.T @ dy
        db = (db2.T if transB else db2) * dy.dtype.type(alpha)
    if c is not None:
        dc = unbroadcast(dy * dy.dtype.type(beta), c.shape).astype(c.dtype, copy=False)
    return da, db, dc


@gradient("MatMul")
def matmul(dy: np.ndarray, a: np.ndarray, b: np.ndarray, *, out: tuple) -> tuple:
    """Y = A @ B (numpy.matmul): dA = dY @ B^T, dB = A^T @ dY over the last two axes, summed
    over broadcast batch axes; a 1-D operand is promoted to a matrix and squeezed back."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    dy2 = dy.reshape(np.matmul(a2[..., :1, :], b2[..., :, :1]).shape[:-2] + (a2.shape[-2], -1))
    da = unbroadcast(dy2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
    db = unbroadcast(np.swapaxes(a2, -1, -2) @ dy2, b2.shape).reshape(b.shape)
    return da, db


@gradient("Maxout")
def maxout(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    pieces: int,
) -> tuple:
    """Y[n, o] = max_j Z[n, j, o], Z[n, j] = X[n] @ W[j].T + B[j]. The gradient goes to the
    winning piece (the first on a tie, as argmax): dZ = onehot_j * dY, then
    dX = dZ @ W (all pieces), dW[j] = dZ[:, j].T @ X, dB[j] = sum_n dZ[:, j]."""
    n = x.shape[0]
    k, n_out, n_in = w.shape
    wf = w.reshape(k * n_out, n_in)
    z = np.matmul(x, wf.T).reshape(n, k, n_out)
    if b is not None:
        z = z + b
    win = z.argmax(axis=1)  # (N, out)
    dz = np.where(np.arange(k)[None, :, None] == win[:, None, :], dy[:, None, :], 0).astype(
        dy.dtype, copy=False
    )
    dzf = dz.reshape(n, k * n_out)
    dx = dzf @ wf
    dw = (dzf.T @ x).reshape(w.shape)
    db = None if b is None else dz.sum(axis=0).astype(b.dtype, copy=False)
    return dx, dw, db
