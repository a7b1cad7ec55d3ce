"""Train-mode BatchNorm for the fast training plan, forward (keeping what the backward reads) and
backward, over x viewed as (N, C, P) (P: the positions, 1 for a 2-D input).

Per-channel reductions without float64 copies of the activations: each (example, channel) row of
P numbers is summed (or dotted) by BLAS / einsum in x's dtype, then the N partial sums per
channel are added in float64. The element-wise work is a few broadcast passes in x's dtype with
per-channel coefficients computed in float64. The plain rule (`normalization.py`, all float64)
is the oracle.

Forward: mean = sum x / n, the centered xc = x - mean (mean rounded to x's dtype) and its
remaining mean r = sum xc / n, the biased var = sum xc^2 / n - r^2 (the corrected two-pass
algorithm), inv = 1 / sqrt(var + eps), y = (gamma * inv) * (xc - r) + beta. The forward keeps xc
and r, not x_hat = (xc - r) * inv (one pass fewer): the backward applies inv and r per channel.
Backward: dbeta = sum dy, dgamma = sum dy * x_hat = inv * (sum dy * xc - r * dbeta),
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y (written in place, x's shape) = BatchNorm of x with its batch statistics; returns
    (batch mean, biased batch var, inv = 1/sqrt(var + eps), xc, r): xc = x - the mean rounded to
    x's dtype, in x's dtype and shape, and r (C,) its remaining per-channel mean, the statistics,
    inv and r float64. The corrected two-pass algorithm: with an offset (say 1e4 against a spread
    of 0.1), the float32-rounded mean leaves xc a mean r far above its rounding; var = mean(xc^2)
    - r^2 and x_hat = (xc - r) * inv are then exact to float32 rounding of xc, the r terms folded
    into per-channel coefficients (no extra pass over the data)."""
    n, c = x.shape[:2]
    positions = x.size // max(n * c, 1)
    count = max(n * positions, 1)
    mean = (channel_sums(x) / count).astype(x.dtype)  # the rounded mean xc is centered on
    xc = np.subtract(x.reshape(n, -1), _coef(mean, x.dtype, positions))
    r = channel_sums(xc.reshape(x.shape)) / count
    var = np.maximum(channel_dots(xc.reshape(x.shape), xc.reshape(x.shape)) / count - r * r, 0.0)
    inv = 1.0 / np.sqrt(var + epsilon)
    a = scale.astype(np.float64) * inv
    y2 = y.reshape(n, -1)
    np.multiply(xc, _coef(a, x.dtype, positions), out=y2)
    y2 += _coef(bias.astype(np.float64) - a * r, x.dtype, positions)
    return mean.astype(np.float64) + r, var, inv, xc.reshape(x.shape), r


def batch_norm_backward(
    dy: np.ndarray,
    xc: np.ndarray,
    inv: np.ndarray,
    scale: np.ndarray,
    need_dx: bool,
    r: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, dgamma, dbeta) of train-mode BatchNorm from `batch_norm_forward`'s xc, inv
    and r (x_hat = (xc - r) * inv; r None: 0); dgamma and dbeta float64 (C,). dx is
    a * dy + b * xc + c per channel: a = gamma * inv, b = -a * inv * dgamma / n,
    c = -a * dbeta / n - b * r."""
    n, c = dy.shape[:2]
    positions = dy.size // max(n * c, 1)
    count = max(n * positions, 1)
    dbeta = channel_sums(dy)
    shift = np.zeros(c) if r is None else r
    dgamma = (channel_dots(dy, xc) - shift * dbeta) * inv
    if not need_dx:
        return None, dgamma, dbeta
    a = scale.astype(np.float64) * inv
    b = -a * inv * dgamma / count
    dx = np.empty(dy.shape, dy.dtype)
    dx2 = dx.reshape(n, -1)
    np.multiply(dy.reshape(n, -1), _coef(a, dy.dtype, positions), out=dx2)
    tmp = np.multiply(xc.reshape(n, -1), _coef(b, dy.dtype, positions))
    tmp += _coef(-a * dbeta / count - b * shift, dy.dtype, positions)
    dx2 += tmp
    return dx, dgamma, dbeta
