"""Train-mode BatchNorm for the fast training plan, forward (keeping what the backward reads) and
backward, over x viewed as (N, C, P) (P: the positions, 1 for a 2-D input).

Per-channel reductions without float64 copies of the activations: each (example, channel) row of
P numbers is summed (or dotted) by BLAS / einsum in x's dtype, then the N partial sums per
channel are added in float64. The element-wise work is a few broadcast passes in x's dtype with
per-channel coefficients computed in float64. The plain rule (`normalization.py`, all float64)
is the oracle.

Forward: mean = sum x / n, x_hat = (x - mean) * inv with inv = 1 / sqrt(var + eps) and the
biased var = sum (x - mean)^2 / n (two passes, as the plain kernel's `moments`), y = gamma * x_hat
+ beta. Backward: dbeta = sum dy, dgamma = sum dy * x_hat,
dx = gamma * inv * (dy - dbeta / n - x_hat * dgamma / n).
"""

from __future__ import annotations

import numpy as np

__all__ = ["channel_sums", "channel_dots", "batch_norm_forward", "batch_norm_backward"]


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


def channel_sums(a: np.ndarray) -> np.ndarray:
    """Per-channel sums over batch and positions of an (N, C, ...) array, float64 (C,)."""
    a3 = _rows(a)
    return np.matmul(a3, np.ones(a3.shape[2], a.dtype)).sum(axis=0, dtype=np.float64)


def channel_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-channel sums over batch and positions of a * b, float64 (C,)."""
    return np.einsum("ncp,ncp->nc", _rows(a), _rows(b)).sum(axis=0, dtype=np.float64)


def _per_channel(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A (C,) vector as (C, 1) in `dtype`, to broadcast against (N, C, P)."""
    return v.astype(dtype).reshape(-1, 1)


def batch_norm_forward(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray, epsilon: float, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y (written in place, x's shape) = BatchNorm of x with its batch statistics; returns
    (batch mean, biased batch var, inv = 1/sqrt(var + eps), x_hat), the statistics float64 (C,),
    x_hat in x's dtype and shape."""
    count = x.size // max(x.shape[1], 1)
    x3 = _rows(x)
    mean = channel_sums(x) / max(count, 1)
    x_hat = np.subtract(x3, _per_channel(mean, x.dtype))
    var = channel_dots(x_hat, x_hat) / max(count, 1)
    inv = 1.0 / np.sqrt(var + epsilon)
    x_hat *= _per_channel(inv, x.dtype)
    y3 = _rows(y)
    np.multiply(x_hat, _per_channel(scale, x.dtype), out=y3)
    y3 += _per_channel(bias, x.dtype)
    return mean, var, inv, x_hat.reshape(x.shape)


def batch_norm_backward(
    dy: np.ndarray, x_hat: np.ndarray, inv: np.ndarray, scale: np.ndarray, need_dx: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, dgamma, dbeta) of train-mode BatchNorm; dgamma and dbeta float64 (C,). dx is
    a * dy + b * x_hat + c per channel: a = gamma * inv, b = -a * dgamma / n, c = -a * dbeta / n."""
    count = dy.size // max(dy.shape[1], 1)
    dbeta = channel_sums(dy)
    dgamma = channel_dots(dy, x_hat)
    if not need_dx:
        return None, dgamma, dbeta
    a = scale.astype(np.float64) * inv
    dx = np.empty(dy.shape, dy.dtype)
    dx3 = _rows(dx)
    np.multiply(_rows(dy), _per_channel(a, dy.dtype), out=dx3)
    tmp = np.multiply(_rows(x_hat), _per_channel(-a * dgamma / max(count, 1), dy.dtype))
    tmp += _per_channel(-a * dbeta / max(count, 1), dy.dtype)
    dx3 += tmp
    return dx, dgamma, dbeta
