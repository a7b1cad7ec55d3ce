"""Train-mode BatchNorm for the fast training plan, forward (keeping what the backward reads) and
backward, over x viewed as (N, C, P) (P: the positions, 1 for a 2-D input).

Per-channel reductions without float64 copies of the activations: each (example, channel) row of
P numbers is summed (or dotted) by BLAS / einsum in x's dtype, then the N partial sums per
channel are added in float64. The element-wise work is a few broadcast passes in x's dtype with
per-channel coefficients computed in float64. The plain rule (`normalization.py`, all float64)
is the oracle.

Forward: mean = sum x / n, the centered xc = x - mean, the biased var = sum xc^2 / n (two
passes, as the plain kernel's `moments`), inv = 1 / sqrt(var + eps), y = (gamma * inv) * xc + beta.
The forward keeps xc, not x_hat = xc * inv (one pass fewer): the backward applies inv per channel.
Backward: dbeta = sum dy, dgamma = sum dy * x_hat = inv * sum dy * xc,
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


def _coef(v: np.ndarray, dtype: np.dtype, positions: int) -> np.ndarray:
    """A per-channel (C,) vector repeated over the positions, (C*P,) in `dtype`: it broadcasts
    against an (N, C*P) view with inner loops of C*P numbers (a (C, 1) vector against (N, C, P)
    runs inner loops of P: measured 1.3-2x slower for P = 64 and 16)."""
    return np.repeat(v.astype(dtype), positions)


def batch_norm_forward(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray, epsilon: float, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y (written in place, x's shape) = BatchNorm of x with its batch statistics; returns
    (batch mean, biased batch var, inv = 1/sqrt(var + eps), xc = x - mean), the statistics
    float64 (C,), xc in x's dtype and shape."""
    n, c = x.shape[:2]
    positions = x.size // max(n * c, 1)
    count = max(n * positions, 1)
    mean = channel_sums(x) / count
    xc = np.subtract(x.reshape(n, -1), _coef(mean, x.dtype, positions))
    var = channel_dots(xc.reshape(x.shape), xc.reshape(x.shape)) / count
    inv = 1.0 / np.sqrt(var + epsilon)
    y2 = y.reshape(n, -1)
    np.multiply(xc, _coef(scale.astype(np.float64) * inv, x.dtype, positions), out=y2)
    y2 += _coef(bias, x.dtype, positions)
    return mean, var, inv, xc.reshape(x.shape)


def batch_norm_backward(
    dy: np.ndarray, xc: np.ndarray, inv: np.ndarray, scale: np.ndarray, need_dx: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, dgamma, dbeta) of train-mode BatchNorm from the centered input xc = x - mean
    and inv (`batch_norm_forward`); dgamma and dbeta float64 (C,). dx is a * dy + b * xc + c per
    channel: a = gamma * inv, b = -a * inv * dgamma / n, c = -a * dbeta / n."""
    n, c = dy.shape[:2]
    positions = dy.size // max(n * c, 1)
    count = max(n * positions, 1)
    dbeta = channel_sums(dy)
    dgamma = channel_dots(dy, xc) * inv
    if not need_dx:
        return None, dgamma, dbeta
    a = scale.astype(np.float64) * inv
    dx = np.empty(dy.shape, dy.dtype)
    dx2 = dx.reshape(n, -1)
    np.multiply(dy.reshape(n, -1), _coef(a, dy.dtype, positions), out=dx2)
    tmp = np.multiply(xc.reshape(n, -1), _coef(-a * inv * dgamma / count, dy.dtype, positions))
    tmp += _coef(-a * dbeta / count, dy.dtype, positions)
    dx2 += tmp
    return dx, dgamma, dbeta
