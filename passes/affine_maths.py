"""The array maths of folding a per-channel affine map y = s * x + t into a linear op, apart from
the graph surgery (`passes.affine_fold`; FX keeps `fuse_conv_bn_weights` apart from its rewrite
in the same way), so each formula is tested alone. BatchNormalization at inference, classic
Dropout's keep scale and a Mul / Add by per-channel constants are all such a map; the formulas
are written out in docs/formulas.md. Everything is computed in float64 and cast back to the
weight's dtype. `t` may be None: a pure scale (no shift).
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "bn_scale_shift",
    "fuse_affine_weights",
    "shift_bias",
    "fold_affine_into_conv",
    "fold_affine_into_matrix",
    "per_channel_vector",
    "feature_factor",
]


def bn_scale_shift(
    mean: ArrayLike, var: ArrayLike, eps: float, gamma: ArrayLike, beta: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) in float64 with BN(x) = s * x + t per channel: s = gamma / sqrt(var + eps),
    t = beta - mean * s."""
    mean, var, gamma, beta = (np.asarray(a, dtype=np.float64) for a in (mean, var, gamma, beta))
    s = gamma / np.sqrt(var + float(eps))
    return s, beta - mean * s


def feature_factor(shape: tuple, s: np.ndarray, axis: int, group: int) -> np.ndarray:
    """`s` shaped to multiply an array of `shape` whose output features are on `axis`; with
    axis 1 and group > 1 (ConvTranspose's (C, M/g, k...)), axis 0 is split into `group` row blocks
    and block g holds output features g*M/g .. (g+1)*M/g - 1."""
    ndim = len(shape)
    if axis == 1 and group > 1:
        rows, per_group = shape[0], shape[1]
        factor = np.repeat(s.reshape(group, per_group), rows // group, axis=0)  # (C, M/g)
        return factor.reshape(factor.shape + (1,) * (ndim - 2))
    view = [1] * ndim
    view[axis] = s.shape[0]
    return s.reshape(view)


def fuse_affine_weights(
    w: np.ndarray,
    b: np.ndarray | None,
    s: np.ndarray,
    t: np.ndarray | None,
    axis: int = 0,
    group: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights of a linear op followed by y = s * x + t, as one linear op (the producer fold):
    W' = W * s along `axis` (the output-feature axis of W), b' = s * b + t (b = 0 when None;
    b' is None when b and t both are). With BN's s and t (`bn_scale_shift`) this is
    b' = (b - mean) * s + beta. `axis` is 0 for Conv (M, C/g, k...) and for an (F, K) matrix,
    1 for ConvTranspose (C, M/g, k...) and for a (K, F) matrix; `group` only matters for
    ConvTranspose (axis 1). Computed in float64, returned in W's dtype."""
    s64 = np.asarray(s, dtype=np.float64)
    w64 = np.asarray(w, dtype=np.float64)
    dtype = np.asarray(w).dtype
    w_new = (w64 * feature_factor(w64.shape, s64, axis, group)).astype(dtype)
    b_new = shift_bias(b, s64, t)
    return w_new, None if b_new is None else b_new.astype(dtype)


@overload
def shift_bias(b: np.ndarray, s: np.ndarray, t: np.ndarray | None) -> np.ndarray: ...
@overload
def shift_bias(b: np.ndarray | None, s: np.ndarray, t: np.ndarray) -> np.ndarray: ...
@overload
def shift_bias(b: None, s: np.ndarray, t: None) -> None: ...
@overload
def shift_bias(b: np.ndarray | None, s: np.ndarray, t: np.ndarray | None) -> np.ndarray | None: ...
def shift_bias(b: np.ndarray | None, s: np.ndarray, t: np.ndarray | None) -> np.ndarray | None:
    """The bias of a linear op followed by y = s * x + t: s * b + t in float64 (b = 0 when None;
    None when b and t both are)."""
    if b is None and t is None:
        return None
    b_new = np.asarray(s, np.float64) * (0.0 if b is None else np.asarray(b, dtype=np.float64))
    return b_new if t is None else b_new + np.asarray(t, dtype=np.float64)


def fold_affine_into_conv(
    w: np.ndarray,
    b: np.ndarray | None,
    s: np.ndarray,
    t: np.ndarray | None,
    group: int = 1,
    *,
    transpose: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Conv(s*X + t, W, b) = Conv(X, W', b') for a conv WITHOUT padding (the consumer fold):
    input channel c = (o // (M/g)) * (C/g) + m of weight W[o, m] gets W'[o, m] = W[o, m] * s[c],
    and b'[o] = b[o] + sum_{m, taps} W[o, m, taps] * t[c]. With t None (a pure scale) padding does
    not matter (s * 0 = 0) and b is returned unchanged. `transpose`: W is a ConvTranspose's
    (C, M/g, k...), whose row c is input channel c: W' = W * s on axis 0 (t must be None: its
    border outputs see fewer taps). float64 inside, W's dtype out."""
    w64 = np.asarray(w, dtype=np.float64)
    dtype = np.asarray(w).dtype
    s64 = np.asarray(s, np.float64)
    if transpose:
        if t is not None:
            raise ValueError("a shift does not fold into a following ConvTranspose")
        return (w64 * feature_factor(w64.shape, s64, 0, 1)).astype(dtype), b
    out_ch, in_per_group = w64.shape[:2]
    rows = np.arange(out_ch) // (out_ch // group)
    per_out = s64.reshape(group, in_per_group)[rows]
    tail = (1,) * (w64.ndim - 2)
    w_new = (w64 * per_out.reshape(per_out.shape + tail)).astype(dtype)
    if t is None:
        return w_new, b
    shift = np.asarray(t, np.float64).reshape(group, in_per_group)[rows]
    b64 = np.zeros(out_ch) if b is None else np.asarray(b, dtype=np.float64)
    b_new = b64 + (w64 * shift.reshape(shift.shape + tail)).reshape(out_ch, -1).sum(axis=1)
    return w_new, b_new.astype(dtype)


def fold_affine_into_matrix(
    w: np.ndarray, s: np.ndarray, t: np.ndarray | None, in_axis: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """(s*X + t) @ W' = X @ W'' + t @ W' for the matrix W' = W (in_axis 0, W is (K, F)) or W.T
    (in_axis 1, W is (F, K)) (the consumer fold). Returns (W scaled by s on `in_axis`, the bias
    t @ W' of length F; None when t is), float64 inside, W's dtype out."""
    w64 = np.asarray(w, dtype=np.float64)
    s64 = np.asarray(s, np.float64)
    w_new = w64 * (s64[:, None] if in_axis == 0 else s64[None, :])
    dtype = np.asarray(w).dtype
    if t is None:
        return w_new.astype(dtype), None
    bias = np.asarray(t, np.float64) @ (w64 if in_axis == 0 else w64.T)
    return w_new.astype(dtype), bias.astype(dtype)


def per_channel_vector(c: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """`c` as a (channels,) float64 vector if `y op c` (op = Mul or Add, y of rank `rank` with
    `channels` on axis 1) applies one number per channel and leaves y's shape unchanged: c has at
    most `rank` dims and, right-aligned against y, size 1 on every axis but axis 1, where it has
    1 or `channels` (a scalar, (C, 1, 1), (1, C, 1, 1), ...). Else None."""
    c = np.asarray(c)
    if c.ndim > rank or rank < 2:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(full) if k != 1) or full[1] not in (1, channels):
        return None
    return np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (channels,)).copy()
