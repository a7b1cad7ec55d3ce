"""The shared test helpers of tests/helpers.py, pinned to examples worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import assert_softmax_close, bn_reference, bn_stats


def test_bn_reference_hand_example():
    # mean 1, var 3, eps 1: (x - 1) / 2 * gamma 4 + beta 0.5 -> x = 3 gives 4.5, x = -1 gives -3.5.
    st = {
        "scale": np.array([4.0]),
        "B": np.array([0.5]),
        "mean": np.array([1.0]),
        "var": np.array([3.0]),
    }
    out = bn_reference(np.array([[3.0], [-1.0]]), st, eps=1.0)
    np.testing.assert_array_equal(out, [[4.5], [-3.5]])


def test_bn_stats_are_nontrivial():
    st = bn_stats(np.random.default_rng(0), 64)
    assert np.all((st["var"] >= 0.5) & (st["var"] <= 2.0))
    assert np.all(np.abs(st["scale"]) >= 0.5)
    assert st["mean"].std() > 0.5 and st["B"].std() > 0.5


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_softmax_close_is_a_relative_comparison_for_moderate_logits():
    logits = np.array([[1.0, 2.0, 3.0, -1.0]], np.float32)
    p = _softmax(logits.astype(np.float64))
    assert_softmax_close(logits, p)
    wrong = p.copy()
    wrong[0, 0] *= 1.01  # 1% off one class: far beyond what float32 logits of size 3 allow
    with pytest.raises(AssertionError, match="log-probabilities differ"):
        assert_softmax_close(logits, wrong)


def test_softmax_close_accepts_what_huge_equal_logits_cannot_determine():
    # Logits of 1e10, equal but for one ulp (1024): float32 softmax keeps an arbitrary subset of
    # the classes (here the 2 of 4 that rounded up), the exact answer is uniform.
    logits = np.array([[1e10, 1e10, 1e10, 1e10]], np.float32)
    logits[0, :2] = np.nextafter(logits[0, :2], np.float32(np.inf))
    assert_softmax_close(logits, np.full((1, 4), 0.25))
    # ...but not logits that differ by 1% of their size: that is a real difference.
    apart = np.array([[1e10, 1.01e10, 1e10, 1e10]], np.float32)
    with pytest.raises(AssertionError):
        assert_softmax_close(apart, np.full((1, 4), 0.25))


def test_softmax_close_takes_the_axes_after_axis_as_one():
    # SqueezeNet's output (1, 1000, 1, 1) under opset 9's Softmax(axis=1).
    logits = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    p = _softmax(logits.reshape(1, 6).astype(np.float64)).reshape(1, 6, 1, 1)
    assert_softmax_close(logits, p, axis=1)
    with pytest.raises(AssertionError):
        assert_softmax_close(logits, p[:, ::-1], axis=1)
