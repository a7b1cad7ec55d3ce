"""Gradients of the convolutions: Conv, ConvTranspose and WSConv (1-, 2- and 3-D, grouped).

Conv and ConvTranspose are adjoint linear maps of their input for a fixed kernel, so each one's
input gradient is the other one's forward, run by the plain kernels:

    dX of Conv(X, W)          = ConvTranspose(dY, W), same strides/pads/dilations/group, with the
                                output padding that gives back X's size (rows no window read get 0);
    dX of ConvTranspose(X, W) = Conv(dY, W), cropped to X's size.

Both kernel gradients are one correlation of an input with an output gradient (`weight_grad`):
im2col of the padded input on a strided view, then one batched matmul per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphnet.runtime.gradients import gradient
from graphnet.runtime.gradients.normalization import normalize_backward
from graphnet.runtime.kernels._windows import pad_spatial, windows
from graphnet.runtime.kernels.conv import conv as conv_kernel
from graphnet.runtime.kernels.conv import conv_transpose as conv_transpose_kernel
from graphnet.runtime.kernels.conv import standardize_weight

__all__ = ["conv", "conv_transpose", "ws_conv", "weight_grad"]


def weight_grad(
    x: np.ndarray,
    dy: np.ndarray,
    w_shape: Sequence[int],
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> np.ndarray:
    """dW[m, c, t...] = sum_{n, o...} dY[n, m, o...] * X_pad[n, g(m)*Cg + c, o*s + t*d]: the
    kernel gradient of Conv(X, W) -> Y, for a W of shape `w_shape` (M, C/group, *k). Only the
    first dY.shape[2:] windows are read (a ConvTranspose's adjoint may have fewer than fit)."""
    k = x.ndim - 2
    n, c = x.shape[:2]
    m, ks = w_shape[0], tuple(w_shape[2:])
    g = int(group)
    cg, mg = c // g, m // g
    out = dy.shape[2:]
    npix, taps = int(np.prod(out)), int(np.prod(ks))
    view = windows(pad_spatial(x, pads), ks, strides, dilations, out)  # (N, C, *out, *k)
    # (N, G, Cg, *out, *k) -> (N, G, Cg, *k, *out) -> (N, G, Cg*K, P): im2col, one copy; then
    # one small product per example, summed. A single (Cg*K, N*P) @ (N*P, Mg) product does the
    # same arithmetic, but its long inner dimension makes OpenBLAS go multi-threaded, and on a
    # busy machine that was 10-50x slower (measured) than the batch of small products.
    v = view.reshape(n, g, cg, *out, *ks)
    order = (0, 1, 2) + tuple(range(3 + k, 3 + 2 * k)) + tuple(range(3, 3 + k))
    cols = v.transpose(order).reshape(n, g, cg * taps, npix)
    d = dy.reshape(n, g, mg, npix).transpose(0, 1, 3, 2)  # (N, G, P, Mg)
    dw = np.matmul(cols, d).sum(axis=0).transpose(0, 2, 1)  # (G, Mg, Cg*K)
    return dw.reshape(tuple(w_shape)).astype(x.dtype, copy=False)


def _bias_grad(dy: np.ndarray, b: np.ndarray | None) -> np.ndarray | None:
    """dB[m] = sum over batch and positions of dY[:, m]."""
    if b is None:
        return None
    return dy.sum(axis=(0,) + tuple(range(2, dy.ndim))).astype(b.dtype, copy=False)


def _input_grad(
    dy: np.ndarray,
    w: np.ndarray,
    x_shape: Sequence[int],
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
) -> np.ndarray:
    """dX of Conv(X, W): the ConvTranspose of dY by the same W; its output padding
    (X + pads - (s*(out-1) + d*(k-1) + 1) per axis) restores the rows past the last window."""
    k = dy.ndim - 2
    ks = w.shape[2:]
    output_padding = [
        x_shape[2 + i]
        + pads[i]
        + pads[k + i]
        - (strides[i] * (dy.shape[2 + i] - 1) + dilations[i] * (ks[i] - 1) + 1)
        for i in range(k)
    ]
    return conv_transpose_kernel(
        dy,
        w,
        None,
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
        output_padding=output_padding,
        kernel_shape=ks,
    )


@gradient("Conv")
def conv(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    kernel_shape: Sequence[int] | None,
    needs: tuple[bool, ...] = (True, True, True),
) -> tuple:
    """Y = conv(X, W) + B:  dX = conv_transpose(dY, W);  dW = weight_grad(X, dY);
    dB = sum of dY over batch and positions."""
    geo: dict[str, Any] = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    dx = _input_grad(dy, w, x.shape, **geo) if needs[0] else None
    dw = weight_grad(x, dy, w.shape, **geo) if needs[1] else None
    return dx, dw, _bias_grad(dy, b)


@gradient("ConvTranspose")
def conv_transpose(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    kernel_shape: Sequence[int] | None,
    output_padding: Sequence[int],
    needs: tuple[bool, ...] = (True, True, True),
) -> tuple:
    """Y = conv_transpose(X, W) + B, the adjoint of Z = conv(U, W) (W is (C_x, M/group, *k)):
    dX = conv(dY, W) (cropped to X's size);  dW = weight_grad(dY, X) (the correlation of dY,
    as that conv's input, with X as its output gradient);  dB = sum of dY over batch and
    positions."""
    geo: dict[str, Any] = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    dx = None
    if needs[0]:
        dx = conv_kernel(dy, w, None, kernel_shape=w.shape[2:], **geo)
        dx = dx[(slice(None), slice(None), *[slice(0, s) for s in x.shape[2:]])]
    dw = weight_grad(dy, x, w.shape, **geo) if needs[1] else None
    return dx, dw, _bias_grad(dy, b)


@gradient("WSConv")
def ws_conv(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    kernel_shape: Sequence[int] | None,
    epsilon: float,
    needs: tuple[bool, ...] = (True, True, True),
) -> tuple:
    """Y = conv(X, W_hat) + B with W_hat = (W - mu_k) / sigma_k per output map k over its
    n = C/group * prod(k) weights, sigma_k = sqrt(biased var + eps): the Conv gradients with
    W_hat, then through the standardization (the layer-norm backward):
    dW = (dW_hat - mean(dW_hat) - W_hat * mean(dW_hat * W_hat)) / sigma_k."""
    w64 = w.astype(np.float64)
    w_hat = standardize_weight(w64, epsilon)
    geo: dict[str, Any] = {"strides": strides, "pads": pads, "dilations": dilations, "group": group}
    w_used = w_hat.astype(x.dtype)
    dx = _input_grad(dy, w_used, x.shape, **geo) if needs[0] else None
    dw = None
    if needs[1]:
        dw_hat = weight_grad(x, dy, w.shape, **geo).astype(np.float64)
        axes = tuple(range(1, w.ndim))
        var = np.var(w64, axis=axes, keepdims=True)
        dw = normalize_backward(dw_hat, w_hat, 1.0 / np.sqrt(var + epsilon), axes)
        dw = dw.astype(w.dtype)
    return dx, dw, _bias_grad(dy, b)
