"""Gradients of the normalizations: BatchNormalization (train mode through the batch statistics,
inference mode as the per-channel affine map it is), LayerNormalization, InstanceNormalization,
GroupNormalization and LRN.

Every normalization shares one backward, `normalize_backward`: for x_hat = (x - mu) / sigma with
mu and sigma = sqrt(biased var + eps) taken over n elements,
    dx = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / sigma,
the statistics differentiated, not treated as constants. Like the kernels, the maths runs in
float64 and the results are cast back to the operands' dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.runtime.gradients import gradient, unbroadcast
from graphnet.runtime.kernels.normalization import moments

__all__ = [
    "normalize_backward",
    "batch_normalization",
    "layer_normalization",
    "instance_normalization",
    "group_normalization",
    "lrn",
]


def normalize_backward(
    dx_hat: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: Sequence[int]
) -> np.ndarray:
    """dx of x_hat = (x - mean) * inv_std with mean and inv_std = 1/sqrt(biased var + eps)
    over `axes`: inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))."""
    axes = tuple(axes)
    m1 = dx_hat.mean(axis=axes, keepdims=True)
    m2 = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    return inv_std * (dx_hat - m1 - x_hat * m2)


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(v, np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _cast(g: np.ndarray | None, like: np.ndarray | None) -> np.ndarray | None:
    if g is None or like is None:
        return None
    return g.astype(like.dtype, copy=False)


@gradient("BatchNormalization", nondiff=(3, 4), context=True)
def batch_normalization(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray,
    b: np.ndarray,
    input_mean: np.ndarray,
    input_var: np.ndarray,
    *,
    out: tuple,
    epsilon: float,
    momentum: float,
    training: bool,
) -> tuple:
    """Per channel over the batch and spatial axes A.
    train (batch statistics mu_B, biased sigma2_B; x_hat = (x - mu_B) / sqrt(sigma2_B + eps)):
        dgamma = sum_A dy * x_hat;  dbeta = sum_A dy;  dx = normalize_backward(dy * gamma, x_hat).
    inference (running statistics, constants): dx = dy * gamma / sqrt(var_avg + eps);
        dgamma = sum_A dy * (x - mean_avg) / sqrt(var_avg + eps);  dbeta = sum_A dy.
    The running statistics get no gradient."""
    nd = x.ndim
    axes = (0,) + tuple(range(2, nd))
    x64, dy64 = x.astype(np.float64, copy=False), dy.astype(np.float64, copy=False)
    gamma = _channel(scale, nd)
    if training:
        mu, var = moments(x, axes)
    else:
        mu, var = _channel(input_mean, nd), _channel(input_var, nd)
    inv = 1.0 / np.sqrt(var + epsilon)
    x_hat = (x64 - mu) * inv
    dscale = (dy64 * x_hat).sum(axis=axes)
    db = dy64.sum(axis=axes)
    if training:
        dx = normalize_backward(dy64 * gamma, x_hat, inv, axes)
    else:
        dx = dy64 * (gamma * inv)
    return _cast(dx, x), _cast(dscale, scale), _cast(db, b), None, None


@gradient("LayerNormalization")
def layer_normalization(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    axis: int,
    epsilon: float,
    stash_type: int,
) -> tuple:
    """Per example over the axes from `axis` on: x_hat as in the kernel; Scale and B broadcast
    against X: dScale = unbroadcast(dy * x_hat), dB = unbroadcast(dy),
    dx = normalize_backward(dy * Scale, x_hat)."""
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean, var = moments(x, axes)
    inv = 1.0 / np.sqrt(var + epsilon)
    x_hat = (x.astype(np.float64, copy=False) - mean) * inv
    dy64 = dy.astype(np.float64, copy=False)
    dx_hat = dy64 if scale is None else dy64 * scale.astype(np.float64, copy=False)
    dx = normalize_backward(dx_hat, x_hat, inv, axes)
    dscale = None if scale is None else unbroadcast(dy64 * x_hat, scale.shape)
    db = None if b is None else unbroadcast(dy64, b.shape)
    return _cast(dx, x), _cast(dscale, scale), _cast(db, b)


@gradient("GroupNormalization")
def group_normalization(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    out: tuple,
    num_groups: int,
    epsilon: float,
    stash_type: int,
) -> tuple:
    """Per example over each group's channels and positions (x_hat as in the kernel), then a
    per-channel scale and bias: dscale[c] = sum over batch and positions of dy * x_hat,
    dbias[c] = sum of dy, dx = normalize_backward(dy * scale, x_hat) per group."""
    n, c = x.shape[:2]
    grouped = (n, num_groups, -1)
    mean, var = moments(x.reshape(grouped), (2,))
    inv = 1.0 / np.sqrt(var + epsilon)
    x_hat = (x.reshape(grouped).astype(np.float64, copy=False) - mean) * inv
    dy64 = dy.astype(np.float64, copy=False)
    dx_hat = dy64 if scale is None else dy64 * _channel(scale, x.ndim)
    dx = normalize_backward(dx_hat.reshape(grouped), x_hat, inv, (2,)).reshape(x.shape)
    axes = (0,) + tuple(range(2, x.ndim))
    dscale = None if scale is None else (dy64 * x_hat.reshape(x.shape)).sum(axis=axes)
    dbias = None if bias is None else dy64.sum(axis=axes)
    return _cast(dx, x), _cast(dscale, scale), _cast(dbias, bias)


@gradient("InstanceNormalization")
def instance_normalization(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    epsilon: float,
) -> tuple:
    """Group norm's gradient with one channel per group (the kernel's own definition)."""
    return group_normalization(
        dy, x, scale, b, out=out, num_groups=x.shape[1], epsilon=epsilon, stash_type=1
    )


@gradient("LRN")
def lrn(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    out: tuple,
    size: int,
    alpha: float,
    beta: float,
    bias: float,
) -> tuple:
    """Y = X * D^-beta with D_c = bias + alpha/size * S_c, S_c the sum of X^2 over the channel
    window [c - lo, c + hi]. Channel c' appears in the windows of c in [c' - hi, c' + lo], so
    dX_c' = dY_c' * D_c'^-beta - 2 beta alpha/size * X_c' * sum_{c in [c'-hi, c'+lo]}
    dY_c X_c D_c^(-beta-1)."""
    x64, dy64 = x.astype(np.float64, copy=False), dy.astype(np.float64, copy=False)
    lo = (size - 1) // 2
    hi = size - 1 - lo
    rest = [(0, 0)] * (x.ndim - 2)
    sq = np.pad(x64 * x64, [(0, 0), (lo, hi)] + rest)
    d = bias + (alpha / size) * np.lib.stride_tricks.sliding_window_view(sq, size, axis=1).sum(-1)
    t = np.pad(dy64 * x64 * d ** (-beta - 1), [(0, 0), (hi, lo)] + rest)
    back = np.lib.stride_tricks.sliding_window_view(t, size, axis=1).sum(-1)
    dx = dy64 * d**-beta - 2.0 * beta * (alpha / size) * x64 * back
    return (dx.astype(x.dtype, copy=False),)
