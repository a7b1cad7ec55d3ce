"""Plain-loop references for the conv family, used by the other `test_conv*` files, and the tests
that pin the references themselves to examples worked by hand.

The references loop over every output position and every tap, written from the ONNX formulas:
- Conv:          y[n, m, o] = b[m] + sum_{c in group(m), t} x[n, c, o*s + t*d - pad_b] * w[m, c, t]
- ConvTranspose: y[n, m, i*s + t*d - pad_b] += x[n, c, i] * w[c, m', t]  (scatter of every input)
- weight standardization (LECTURE.md): per output map k, over input maps and taps,
  mu = mean(W^k), sigma2 = mean((W^k - mu)^2), W_hat = (W^k - mu) / sqrt(sigma2 + eps)
They accumulate in float64 (Python floats), so they are the "exact" side of every comparison.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["naive_conv", "naive_conv_transpose", "naive_standardize", "float32_bound"]

U32 = 2.0 ** -24  # unit roundoff of float32


def naive_conv(x, w, b=None, strides=None, pads=None, dilations=None, group=1) -> np.ndarray:
    """ONNX Conv by loops (float64 result). Out-of-range taps read the zero padding."""
    k = x.ndim - 2
    strides = strides or (1,) * k
    dilations = dilations or (1,) * k
    pads = pads or (0,) * (2 * k)
    sizes, kernel = x.shape[2:], w.shape[2:]
    outs = [(sizes[i] + pads[i] + pads[k + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(k)]
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


def naive_conv_transpose(x, w, b=None, strides=None, pads=None, dilations=None, group=1, output_padding=None) -> np.ndarray:
    """ONNX ConvTranspose by scattering every input element through every tap (float64 result)."""
    k = x.ndim - 2
    strides = strides or (1,) * k
    dilations = dilations or (1,) * k
    pads = pads or (0,) * (2 * k)
    output_padding = output_padding or (0,) * k
    sizes, kernel = x.shape[2:], w.shape[2:]
    cg, mg = x.shape[1] // group, w.shape[1]
    full = [(sizes[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 + output_padding[i] for i in range(k)]
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
    """The lecture's weight standardization, one output map at a time (float64)."""
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


# --------------------------------------------------------------- the references, by hand
def test_naive_conv_hand_example():
    # x = [1, 2, 3, 4], w = [1, 0, -1], pads (1, 1), stride 2:
    # padded [0, 1, 2, 3, 4, 0]; windows at 0 and 2: 0 - 2 = -2, 2 - 4 = -2; bias 0.5.
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    y = naive_conv(x, w, np.array([0.5]), strides=(2,), pads=(1, 1))
    np.testing.assert_array_equal(y, [[[-1.5, -1.5]]])
    # dilation 2 (taps at 0, 2, 4) over 4 inputs needs one pad: at the end [1, 2, 3, 4, 0] gives
    # 1*1 + 3*0 + 0*(-1) = 1; at the beginning [0, 1, 2, 3, 4] gives 0*1 + 2*0 + 4*(-1) = -4.
    np.testing.assert_array_equal(naive_conv(x, w, dilations=(2,), pads=(0, 1)), [[[1.0]]])
    np.testing.assert_array_equal(naive_conv(x, w, dilations=(2,), pads=(1, 0)), [[[-4.0]]])


def test_naive_conv_groups_hand_example():
    # Two groups of one channel each: output map 0 sees only channel 0, map 1 only channel 1.
    x = np.array([[[1.0, 2.0], [10.0, 20.0]]])
    w = np.array([[[1.0, 1.0]], [[1.0, -1.0]]])
    np.testing.assert_array_equal(naive_conv(x, w, group=2), [[[3.0], [-10.0]]])


def test_naive_conv_transpose_hand_example():
    # x = [1, 10], w = [1, 2, 3], stride 2: full = [1, 2, 3+10, 20, 30]; pads (1, 0) crop the first.
    x = np.array([[[1.0, 10.0]]])
    w = np.array([[[1.0, 2.0, 3.0]]])
    np.testing.assert_array_equal(naive_conv_transpose(x, w, strides=(2,)), [[[1, 2, 13, 20, 30]]])
    np.testing.assert_array_equal(naive_conv_transpose(x, w, strides=(2,), pads=(1, 0)), [[[2, 13, 20, 30]]])
    # output_padding adds a position past the end that no input reaches (bias only).
    y = naive_conv_transpose(x, w, np.array([0.5]), strides=(2,), output_padding=(1,))
    np.testing.assert_array_equal(y, [[[1.5, 2.5, 13.5, 20.5, 30.5, 0.5]]])


def test_naive_standardize_hand_example():
    # Map 0: [1, 3] -> mean 2, biased var 1 -> [-1, 1] / sqrt(1 + eps).
    w = np.array([[[1.0, 3.0]], [[5.0, 5.0]]])
    np.testing.assert_allclose(naive_standardize(w[:1], 0.0), [[[-1.0, 1.0]]], rtol=0, atol=1e-15)
    out = naive_standardize(w, 1e-5)
    np.testing.assert_allclose(out[0], [[-1.0 / np.sqrt(1 + 1e-5), 1.0 / np.sqrt(1 + 1e-5)]], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(out[1], [[0.0, 0.0]])  # a constant map standardizes to zeros
