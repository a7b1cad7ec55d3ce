"""Plain-loop references (oracles) for the conv family, used by the kernel, DSL, import and pass
tests; tests/test_oracles.py pins them to examples worked by hand.

The references loop over every output position and every tap, written from the ONNX formulas:
- Conv:          y[n, m, o] = b[m] + sum_{c in group(m), t} x[n, c, o*s + t*d - pad_b] * w[m, c, t]
- ConvTranspose: y[n, m, i*s + t*d - pad_b] += x[n, c, i] * w[c, m', t]  (scatter of every input)
- weight standardization (docs/formulas.md): per output map k, over input maps and taps,
  mu = mean(W^k), sigma2 = mean((W^k - mu)^2), W_hat = (W^k - mu) / sqrt(sigma2 + eps)
They accumulate in float64 (Python floats), so they are the "exact" side of every comparison.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "naive_conv",
    "naive_conv_transpose",
    "naive_standardize",
    "float32_bound",
    "naive_out_len",
    "literal_fallback",
    "naive_pool",
    "naive_indices",
]

U32 = 2.0**-24  # unit roundoff of float32


def naive_conv(x, w, b=None, strides=None, pads=None, dilations=None, group=1) -> np.ndarray:
    """ONNX Conv by loops (float64 result). Out-of-range taps read the zero padding."""
    k = x.ndim - 2
    strides = strides or (1,) * k
    dilations = dilations or (1,) * k
    pads = pads or (0,) * (2 * k)
    sizes, kernel = x.shape[2:], w.shape[2:]
    outs = [
        (sizes[i] + pads[i] + pads[k + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        for i in range(k)
    ]
    n_out, c_in = w.shape[0], x.shape[1]
    cg, mg = c_in // group, n_out // group
    y = np.zeros((x.shape[0], n_out, *outs))
    for n, m in itertools.product(range(x.shape[0]), range(n_out)):
        g = m // mg
        for pos in itertools.product(*map(range, outs)):
            acc = 0.0 if b is None else float(b[m])
            for c in range(cg):
                for taps in itertools.product(*map(range, kernel)):
                    idx = [pos[i] * strides[i] + taps[i] * dilations[i] - pads[i] for i in range(k)]
                    if all(0 <= idx[i] < sizes[i] for i in range(k)):
                        acc += float(x[(n, g * cg + c, *idx)]) * float(w[(m, c, *taps)])
            y[(n, m, *pos)] = acc
    return y


def naive_conv_transpose(
    x, w, b=None, strides=None, pads=None, dilations=None, group=1, output_padding=None
) -> np.ndarray:
    """ONNX ConvTranspose by scattering every input element through every tap (float64 result)."""
    k = x.ndim - 2
    strides = strides or (1,) * k
    dilations = dilations or (1,) * k
    pads = pads or (0,) * (2 * k)
    output_padding = output_padding or (0,) * k
    sizes, kernel = x.shape[2:], w.shape[2:]
    cg, mg = x.shape[1] // group, w.shape[1]
    full = [
        (sizes[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 + output_padding[i]
        for i in range(k)
    ]
    acc = np.zeros((x.shape[0], mg * group, *full))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        g = c // cg
        for pos in itertools.product(*map(range, sizes)):
            for m in range(mg):
                for taps in itertools.product(*map(range, kernel)):
                    idx = tuple(pos[i] * strides[i] + taps[i] * dilations[i] for i in range(k))
                    acc[(n, g * mg + m, *idx)] += float(x[(n, c, *pos)]) * float(w[(c, m, *taps)])
    crop = tuple(slice(pads[i], full[i] - pads[k + i]) for i in range(k))
    y = acc[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape((-1,) + (1,) * k)
    return y


def naive_standardize(w, eps) -> np.ndarray:
    """Weight standardization (docs/formulas.md), one output map at a time (float64)."""
    out = np.empty(w.shape)
    for m in range(w.shape[0]):
        vals = [float(v) for v in np.ravel(w[m])]
        mu = sum(vals) / len(vals)
        var = sum((v - mu) ** 2 for v in vals) / len(vals)  # biased: divide by p*q*M
        out[m] = (np.asarray(w[m], np.float64) - mu) / np.sqrt(var + eps)
    return out


def float32_bound(abs_result: np.ndarray, terms: int) -> np.ndarray:
    """Elementwise error bound of a float32 sum of `terms` products (Higham's gamma_n times the sum
    of |products|, `abs_result` = the same conv applied to |x| and |w|), plus 1e-6 for the final
    rounding of tiny values. Used where a plain rtol cannot work: an output that cancels to ~0 has
    a rounding error relative to its terms, not to itself."""
    n = terms + 2  # the products, the bias add, the final cast
    return (n * U32 / (1 - n * U32)) * abs_result + 1e-6


def random_conv_case(rng, x_shape, m, kernel, strides, pads, dilations, bias: bool) -> tuple:
    """(x, w, b, exact, mags): standard normal float32 x (x_shape), w (m, C, *kernel) and b (m,
    or None without `bias`); the float64 plain conv of them (`exact`) and of their magnitudes
    (`mags`, the input of `float32_bound`)."""

    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((m, x_shape[1], *kernel)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    return (x, w, b, *conv_and_magnitudes(x, w, b, strides, pads, dilations))


def conv_and_magnitudes(x, w, b, strides, pads, dilations) -> tuple:
    """(exact, mags): the float64 plain conv of (x, w, b) and of their magnitudes."""
    from graphnet.runtime.kernels.conv import conv

    kw = dict(strides=strides, pads=pads, dilations=dilations, group=1, kernel_shape=None)
    f64 = [None if v is None else v.astype(np.float64) for v in (x, w, b)]
    return conv(*f64, **kw), conv(*[None if v is None else np.abs(v) for v in f64], **kw)


def winograd_bound(x, w, pads, m: int, extra=0.0) -> np.ndarray:
    """Elementwise rounding bound of a float32 Winograd F(m x m, 3 x 3) conv of x (N, C, H, W)
    and w (M, C, 3, 3) (stride 1), plus `extra` (|bias| + |residual|, added before the final
    rounding). Its error is relative to the transformed tiles, not to the plain conv's terms
    (F(4x4)'s B^T and A^T have entries up to 5 and 8): the componentwise bound of the chain
    Y = A^T [sum_c (G g G^T) . (B^T d B)] A is gamma_n times the same chain on magnitudes,
    |A^T| [sum_c (|G| |g| |G^T|) . (|B^T| |d| |B|)] |A|, with n the longest chain of roundings
    one output sees: the C-term sum, two 1-D passes of each transform (m + 2 or 3 terms each),
    the bias / residual adds and the final cast. Computed in float64 on every tile."""
    from graphnet.runtime.fast import winograd

    bt, g, at = (np.abs(a) for a in (winograd._f2() if m == 2 else winograd._f4()))
    t = m + 2
    n, c, h, wd = x.shape
    ho, wo = h + pads[0] + pads[2] - 2, wd + pads[1] + pads[3] - 2
    th, tw = -(-ho // m), -(-wo // m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2))
    src = np.abs(x).astype(np.float64)[:, :, : th * m + 2 - pads[0], : tw * m + 2 - pads[1]]
    xp[:, :, pads[0] : pads[0] + src.shape[2], pads[1] : pads[1] + src.shape[3]] = src
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (t, t), axis=(2, 3))[:, :, ::m, ::m]
    v = np.einsum("ai,ncyxij,bj->ncyxab", bt, tiles, bt)
    u = np.einsum("ai,mcij,bj->mcab", g, np.abs(w).astype(np.float64), g)
    y = np.einsum("ai,nmyxij,bj->nmyxab", at, np.einsum("ncyxij,mcij->nmyxij", v, u), at)
    mags = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], th * m, tw * m)[..., :ho, :wo]
    terms = c + 2 * t + 2 * 3 + 2 * t + 2
    return float32_bound(mags + extra, terms)


# ------------------------------------------------------------------ pooling
def naive_out_len(n: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    """ONNX's output length, written from the spec text (ceil_mode: drop a window that would
    start in the end padding)."""
    span = n + pb + pe - (d * (k - 1) + 1)
    if not ceil:
        return span // s + 1
    out = math.ceil(span / s) + 1
    if (out - 1) * s >= n + pb:
        out -= 1
    return out


def literal_fallback(sizes, kernel, strides, pads, dilations, ceil) -> bool:
    """The one form exported literally although onnx's shape inference miscounts it (see
    test_export_ceil_literal_fallback): a window dropped on one axis, and on another a dilated
    last window reaching `kernel` or more past the input end (a floor-form end pad that
    onnxruntime would refuse)."""
    if not ceil:
        return False
    k = len(kernel)
    drops, far = False, False
    for i in range(k):
        n, kk, s, d, pb, pe = sizes[i], kernel[i], strides[i], dilations[i], pads[i], pads[k + i]
        out = naive_out_len(n, kk, s, d, pb, pe, True)
        drops |= out != math.ceil((n + pb + pe - d * (kk - 1) - 1) / s) + 1
        far |= (out - 1) * s + d * (kk - 1) + 1 - n - pb >= kk
    return drops and far


def naive_pool(x, kernel, strides, pads, dilations, ceil_mode, mode, count_include_pad=0):
    """Loop over every (n, c, output position, tap). Average: divide by the taps that land on the
    input, plus (count_include_pad) those on explicit padding, never the ceil_mode overhang."""
    k = len(kernel)
    sizes = x.shape[2:]
    outs = [
        naive_out_len(
            sizes[i], kernel[i], strides[i], dilations[i], pads[i], pads[k + i], bool(ceil_mode)
        )
        for i in range(k)
    ]
    y = np.zeros(x.shape[:2] + tuple(outs), dtype=np.float64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*map(range, outs)):
            vals, count = [], 0
            for taps in itertools.product(*map(range, kernel)):
                idx = [pos[i] * strides[i] - pads[i] + taps[i] * dilations[i] for i in range(k)]
                real = all(0 <= idx[i] < sizes[i] for i in range(k))
                padded = all(-pads[i] <= idx[i] < sizes[i] + pads[k + i] for i in range(k))
                if real:
                    vals.append(float(x[(n, c, *idx)]))
                if real or (count_include_pad and padded):
                    count += 1
            y[(n, c, *pos)] = max(vals) if mode == "max" else sum(vals) / count
    return y


def naive_indices(x, kernel, strides, pads, dilations, ceil_mode, storage_order):
    """ONNX's MaxPool Indices, written out: for each output, the first real tap (taps in row-major
    window order) holding the window's max, numbered over X as (n*C + c) * plane + the spatial
    position in row-major (storage_order 0) or column-major (1, first spatial axis fastest)."""
    k = len(kernel)
    sizes = x.shape[2:]
    outs = [
        naive_out_len(
            sizes[i], kernel[i], strides[i], dilations[i], pads[i], pads[k + i], bool(ceil_mode)
        )
        for i in range(k)
    ]
    plane = math.prod(sizes)
    out = np.zeros(x.shape[:2] + tuple(outs), dtype=np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*map(range, outs)):
            best, where = None, None
            for taps in itertools.product(*map(range, kernel)):
                idx = [pos[i] * strides[i] - pads[i] + taps[i] * dilations[i] for i in range(k)]
                if all(0 <= idx[i] < sizes[i] for i in range(k)) and (
                    best is None or x[(n, c, *idx)] > best
                ):
                    best, where = x[(n, c, *idx)], idx
            flat, step = 0, 1
            axes = range(k - 1, -1, -1) if storage_order == 0 else range(k)
            for i in axes:  # the fastest axis first
                flat += where[i] * step
                step *= sizes[i]
            out[(n, c, *pos)] = (n * x.shape[1] + c) * plane + flat
    return out


# --------------------------------------------------------------------------- op table
