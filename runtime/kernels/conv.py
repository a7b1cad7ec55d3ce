"""Convolution kernels: Conv, ConvTranspose, WSConv (1-, 2- and 3-D, grouped, depthwise).

Conv is im2col on a strided view: `windows` gives (N, C, *out, *k) without copying; splitting C
into (group, C/group) and one batched matmul over (N, group) does every group at once. A
ConvTranspose is the Conv of the input dilated by the stride (zeros in between), padded by
d*(k-1) - pads (+ output_padding at the end), with the kernel flipped and its channel axes swapped
per group: the textbook identity, which reuses the Conv kernel instead of a second scatter path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphnet.runtime.kernels import kernel
from graphnet.runtime.kernels._windows import out_size, pad_spatial, windows

__all__ = ["conv", "conv_transpose", "ws_conv", "standardize_weight"]


@kernel("Conv")
def conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    kernel_shape: Sequence[int] | None,
) -> np.ndarray:
    """ONNX Conv: y[n, m, o...] = b[m] + sum_{c in group(m), t...} x_pad[n, c, o*s + t*d]
    * w[m, c, t...]. Attributes arrive resolved (the op table's defaults, one per axis); the
    kernel's taps come from W (`kernel_shape`, when given, equals W's spatial shape)."""
    k = x.ndim - 2
    ks = w.shape[2:]
    n, c = x.shape[:2]
    m = w.shape[0]
    g = int(group)
    cg, mg = c // g, m // g
    xp = pad_spatial(x, pads)
    out = [out_size(xp.shape[2 + i], ks[i], strides[i], dilations[i], 0, 0) for i in range(k)]
    view = windows(xp, ks, strides, dilations, out)  # (N, C, *out, *k), a view
    taps = int(np.prod(ks))
    npix = int(np.prod(out))
    # (N, G, Cg, *out, *k) -> (N, G, *out, Cg, *k) -> (N, G, P, Cg*K): the one copy (im2col).
    v = view.reshape(n, g, cg, *out, *ks)
    v = np.moveaxis(v, 2, 2 + k)
    cols = v.reshape(n, g, npix, cg * taps)
    wg = w.reshape(g, mg, cg * taps).transpose(0, 2, 1)  # (G, Cg*K, Mg)
    y = np.matmul(cols, wg.astype(x.dtype, copy=False))  # (N, G, P, Mg)
    y = y.transpose(0, 1, 3, 2).reshape(n, m, *out)
    if b is not None:
        y = y + b.astype(x.dtype, copy=False).reshape((m,) + (1,) * k)
    return np.ascontiguousarray(y, dtype=x.dtype)


@kernel("ConvTranspose")
def conv_transpose(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    output_padding: Sequence[int],
    kernel_shape: Sequence[int] | None,
) -> np.ndarray:
    """ONNX ConvTranspose: y[n, m, i*s + t*d - pad_b] += x[n, c, i...] * w[c, m', t...] for the
    input channels c of output channel m's group (m' its index in the group)."""
    k = x.ndim - 2
    n, c = x.shape[:2]
    ks = w.shape[2:]
    g = int(group)
    cg, mg = c // g, w.shape[1]
    # Dilate the input by the stride: s-1 zeros between neighbours.
    dilated = np.zeros(
        (n, c, *[(x.shape[2 + i] - 1) * strides[i] + 1 for i in range(k)]), dtype=x.dtype
    )
    dilated[(slice(None), slice(None), *[slice(None, None, s) for s in strides])] = x
    # A tap reaching d*(k-1) before the first input still lands on an output: pad by that, minus
    # the cropped pads; output_padding adds (bias-only) rows at the end. Negative pads crop.
    reach = [dilations[i] * (ks[i] - 1) for i in range(k)]
    conv_pads = [reach[i] - pads[i] for i in range(k)] + [
        reach[i] - pads[k + i] + output_padding[i] for i in range(k)
    ]
    # W (C, Mg, *k) -> per group (G, Cg, Mg, *k) -> (G, Mg, Cg, *k) -> (M, Cg, *k), flipped in
    # space.
    wt = w.reshape(g, cg, mg, *ks).swapaxes(1, 2).reshape(g * mg, cg, *ks)
    wt = wt[(slice(None), slice(None), *[slice(None, None, -1)] * k)]
    return conv(
        pad_spatial(dilated, conv_pads),
        wt,
        b,
        strides=(1,) * k,
        pads=(0,) * (2 * k),
        dilations=dilations,
        group=g,
        kernel_shape=None,
    )


def standardize_weight(w: np.ndarray, epsilon: float) -> np.ndarray:
    """Weight standardization (docs/formulas.md): per output map (axis 0), over input maps and taps,
    W_hat = (W - mean) / sqrt(biased variance + eps). Computed in W's dtype."""
    axes = tuple(range(1, w.ndim))
    centered = w - w.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return (centered / np.sqrt(var + np.asarray(epsilon, dtype=w.dtype))).astype(
        w.dtype, copy=False
    )


@kernel("WSConv")
def ws_conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    epsilon: float,
    kernel_shape: Sequence[int] | None,
) -> np.ndarray:
    """Conv with the weight-standardized kernel `standardize_weight(w, epsilon)`."""
    return conv(
        x,
        standardize_weight(w, epsilon),
        b,
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
        kernel_shape=kernel_shape,
    )
