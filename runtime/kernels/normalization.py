"""Normalization kernels: BatchNormalization, LayerNormalization, InstanceNormalization,
GroupNormalization and LRN.

All statistics go through one helper, `moments`: a two-pass mean and biased variance in float64
(docs/formulas.md: divide by the number of elements, H*W*T for BN, H*W*M for LN, ...). Results are
cast back to the input dtype. Instance norm is group norm with one channel per group; layer norm is
a reduction over the trailing axes from `axis`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.ops.normalization import STASH_DTYPES
from graphnet.runtime.kernels import kernel

__all__ = [
    "check_batch_statistics",
    "moments",
    "batch_normalization",
    "layer_normalization",
    "instance_normalization",
    "group_normalization",
    "lrn",
]


def moments(x: np.ndarray, axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance of `x` over `axes` (kept as size-1 dims), in float64.

    Two passes (mean, then the mean of squared deviations) rather than E[x^2] - E[x]^2, which
    cancels catastrophically when |mean| >> std."""
    x64 = x.astype(np.float64, copy=False)
    mean = x64.mean(axis=tuple(axes), keepdims=True)
    dev = x64 - mean
    var = np.mean(dev * dev, axis=tuple(axes), keepdims=True)
    return mean, var


def check_batch_statistics(x: np.ndarray) -> None:
    """Train-mode BatchNorm's batch statistics need a value per channel: an empty batch (or
    empty maps) has none, and its mean would turn the running statistics into NaN for good."""
    if x.ndim >= 2 and x.size == 0:
        raise ValueError(
            f"train-mode batch statistics of an empty input (shape {tuple(x.shape)}) are "
            "undefined: the running mean and variance would become NaN (run it in inference "
            "mode, or leave empty batches out of training)"
        )


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector as (1, C, 1, ...) in float64, to broadcast against an N,C,... array."""
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _scale_shift(
    y: np.ndarray, scale: np.ndarray | None, bias: np.ndarray | None, ndim: int
) -> np.ndarray:
    if scale is not None:
        y = y * _per_channel(scale, ndim)
    if bias is not None:
        y = y + _per_channel(bias, ndim)
    return y


@kernel("BatchNormalization", context=True)
def batch_normalization(
    x: np.ndarray,
    scale: np.ndarray,
    b: np.ndarray,
    input_mean: np.ndarray,
    input_var: np.ndarray,
    *,
    epsilon: float,
    momentum: float,
    training: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (Y, running mean, running variance) after this run.

    Inference: Y = scale * (X - mean_avg) / sqrt(var_avg + eps) + B (batch statistics ignored);
    the running statistics are returned unchanged.

    Train: Y is normalized with the BIASED batch statistics mu_B, sigma2_B over the batch and
    spatial axes; the running statistics get the update of docs/formulas.md
    running = alpha * running + (1 - alpha) * batch, alpha = `momentum` (ONNX's name)."""
    nd = x.ndim
    if not training:
        inv = 1.0 / np.sqrt(_per_channel(input_var, nd) + epsilon)
        y = (x.astype(np.float64, copy=False) - _per_channel(input_mean, nd)) * inv
        return _scale_shift(y, scale, b, nd).astype(x.dtype, copy=False), input_mean, input_var
    check_batch_statistics(x)
    mu, var = moments(x, (0,) + tuple(range(2, nd)))
    y = (x.astype(np.float64, copy=False) - mu) / np.sqrt(var + epsilon)
    y = _scale_shift(y, scale, b, nd).astype(x.dtype, copy=False)
    new_mean = momentum * input_mean.astype(np.float64) + (1.0 - momentum) * mu.reshape(-1)
    new_var = momentum * input_var.astype(np.float64) + (1.0 - momentum) * var.reshape(-1)
    return y, new_mean.astype(input_mean.dtype), new_var.astype(input_var.dtype)


@kernel("LayerNormalization")
def layer_normalization(
    x: np.ndarray,
    scale: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    axis: int,
    epsilon: float,
    stash_type: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalize each example over the axes `axis..rank-1` (docs/formulas.md's layer norm is
    axis=1: all maps and positions), then multiply by Scale and add B, both broadcast against X
    as ONNX does.
    Returns (Y, Mean, InvStdDev = 1 / sqrt(var + eps)), the statistics with the normalized axes
    kept as size 1 and in `stash_type`'s dtype (they are computed in float64 whatever it says)."""
    mean, var = moments(x, tuple(range(axis, x.ndim)))
    inv_std = 1.0 / np.sqrt(var + epsilon)
    y = (x.astype(np.float64, copy=False) - mean) * inv_std
    if scale is not None:
        y = y * scale.astype(np.float64, copy=False)
    if b is not None:
        y = y + b.astype(np.float64, copy=False)
    stash = np.dtype(STASH_DTYPES[stash_type])
    return y.astype(x.dtype, copy=False), mean.astype(stash), inv_std.astype(stash)


@kernel("GroupNormalization")
def group_normalization(
    x: np.ndarray,
    scale: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    num_groups: int,
    epsilon: float,
    stash_type: int,
) -> np.ndarray:
    """Split the C channels into `num_groups` groups of consecutive channels; normalize each
    example over its group's channels and positions; then per-CHANNEL scale and bias (opset 21)."""
    n, c = x.shape[:2]
    groups = x.reshape(n, num_groups, (c // num_groups) * int(np.prod(x.shape[2:], dtype=np.int64)))
    mean, var = moments(groups, (2,))
    y = ((groups.astype(np.float64, copy=False) - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
    return _scale_shift(y, scale, bias, x.ndim).astype(x.dtype, copy=False)


@kernel("InstanceNormalization")
def instance_normalization(
    x: np.ndarray,
    scale: np.ndarray | None = None,
    b: np.ndarray | None = None,
    *,
    epsilon: float,
) -> np.ndarray:
    """Per example and channel over the spatial axes: group norm with one channel per group."""
    return group_normalization(x, scale, b, num_groups=x.shape[1], epsilon=epsilon, stash_type=1)


@kernel("LRN")
def lrn(x: np.ndarray, *, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX LRN across CHANNELS: Y = X / (bias + alpha / size * S)^beta, where S at channel c sums
    X^2 over channels max(0, c - floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2))."""
    sq = np.square(x.astype(np.float64, copy=False))
    lo = (size - 1) // 2
    hi = size - 1 - lo  # = ceil((size - 1) / 2)
    # Zero channels outside [0, C) make the clipped window a plain window of `size` channels.
    widths = [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(sq, widths), size, axis=1)
    s = window.sum(axis=-1)
    y = x.astype(np.float64, copy=False) / (bias + (alpha / size) * s) ** beta
    return y.astype(x.dtype, copy=False)
