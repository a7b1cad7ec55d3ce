"""The shared test helpers of tests/helpers.py, pinned to examples worked by hand."""

from __future__ import annotations

import numpy as np

from tests.helpers import bn_reference, bn_stats


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
