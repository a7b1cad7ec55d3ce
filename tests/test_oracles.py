"""The conv oracles of tests/oracles.py pinned to examples worked by hand."""

from __future__ import annotations

import numpy as np

from tests.oracles import naive_conv, naive_conv_transpose, naive_standardize


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
    np.testing.assert_array_equal(
        naive_conv_transpose(x, w, strides=(2,), pads=(1, 0)), [[[2, 13, 20, 30]]]
    )
    # output_padding adds a position past the end that no input reaches (bias only).
    y = naive_conv_transpose(x, w, np.array([0.5]), strides=(2,), output_padding=(1,))
    np.testing.assert_array_equal(y, [[[1.5, 2.5, 13.5, 20.5, 30.5, 0.5]]])


def test_naive_standardize_hand_example():
    # Map 0: [1, 3] -> mean 2, biased var 1 -> [-1, 1] / sqrt(1 + eps).
    w = np.array([[[1.0, 3.0]], [[5.0, 5.0]]])
    np.testing.assert_allclose(naive_standardize(w[:1], 0.0), [[[-1.0, 1.0]]], rtol=0, atol=1e-15)
    out = naive_standardize(w, 1e-5)
    np.testing.assert_allclose(
        out[0], [[-1.0 / np.sqrt(1 + 1e-5), 1.0 / np.sqrt(1 + 1e-5)]], rtol=1e-15, atol=0
    )
    np.testing.assert_array_equal(out[1], [[0.0, 0.0]])  # a constant map standardizes to zeros
