"""`graphnet.runtime.compare`: the one output comparison behind `check`, `optimize --verify` and
the pass manager's verify, pinned to hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn
from graphnet.runtime.compare import (
    SoftmaxOutput,
    compare_outputs,
    softmax_outputs,
    with_logits,
)


def _one(a, b, **kw):
    return compare_outputs({"y": np.asarray(a)}, {"y": np.asarray(b)}, **kw)[0]


def test_elementwise_tolerance_is_atol_plus_rtol_times_expected():
    b = np.array([1.0, 100.0, 0.0], np.float32)
    # 100 * 1e-4 + 1e-5 allows 0.01001 at the second element, 1e-5 at the third.
    assert _one(b + np.array([0, 0.01, 0], np.float32), b).ok
    c = _one(b + np.array([0, 0, 2e-5], np.float32), b)
    assert not c.ok and c.worst == (2,) and c.max_abs == pytest.approx(2e-5, rel=1e-3)
    assert "max|diff| = 2e-05" in c.describe()


def test_shape_dtype_and_missing_outputs_disagree_with_a_reason():
    assert (
        "float32(2) vs float32(3)" in _one(np.zeros(2, np.float32), np.zeros(3, np.float32)).problem
    )
    assert "float64" in _one(np.zeros(2), np.zeros(2, np.float32)).problem
    (c,) = compare_outputs({}, {"y": np.zeros(1)})
    assert not c.ok and "missing" in c.describe()


def test_integers_and_bools_must_be_equal_nans_agree():
    c = _one(np.array([1, 2, 3]), np.array([1, 2, 4]))
    assert not c.ok and c.problem == "1 of 3 values differ" and c.worst == (2,)
    assert not _one(np.array([True, False]), np.array([True, True])).ok
    assert _one(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])).ok
    assert not _one(np.array([np.nan, 1.0]), np.array([0.0, 1.0])).ok


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_softmax_of_huge_equal_logits_is_compared_through_the_logits():
    # Logits of 1e10, equal but for one ulp (1024) in some classes: float32 softmax keeps a
    # different subset of classes on each side. The logits agree, so the outputs do.
    base = np.full((1, 6), 1e10, np.float32)
    la, lb = base.copy(), base.copy()
    la[0, :2] = np.nextafter(la[0, :2], np.float32(np.inf))
    lb[0, 3:] = np.nextafter(lb[0, 3:], np.float32(np.inf))
    pa, pb = _softmax(la.astype(np.float64)), _softmax(lb.astype(np.float64))
    assert not _one(pa, pb).ok  # element by element: a false difference
    sm = {"y": SoftmaxOutput("z")}
    (c,) = compare_outputs({"y": pa, "z": la}, {"y": pb, "z": lb}, names=["y"], softmax=sm)
    assert c.ok and "compared through 'z'" in c.note and "logits up to 1e+10" in c.note
    # Logits that really differ (1% of their size) still disagree.
    lc = lb.copy()
    lc[0, 0] *= 1.01
    pc = _softmax(lc.astype(np.float64))
    (c,) = compare_outputs({"y": pa, "z": la}, {"y": pc, "z": lc}, names=["y"], softmax=sm)
    assert not c.ok


def test_softmax_with_moderate_logits_is_an_ordinary_comparison():
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    p = _softmax(z)
    wrong = p * np.array([1.01, 1.0, 1.0], np.float32)
    sm = {"y": SoftmaxOutput("z")}
    (c,) = compare_outputs({"y": wrong, "z": z}, {"y": p, "z": z}, names=["y"], softmax=sm)
    assert not c.ok  # the logits cannot excuse a 1% error when they are of size 3


def test_logits_may_have_other_names_on_each_side():
    z = np.full((1, 4), 1e10, np.float32)
    za = z.copy()
    za[0, 0] = np.nextafter(za[0, 0], np.float32(np.inf))
    c = compare_outputs(
        {"y": _softmax(za.astype(np.float64)), "gemm.out": za},
        {"y": _softmax(z.astype(np.float64)), "fc.out": z},
        names=["y"],
        softmax={"y": SoftmaxOutput("fc.out")},
        actual_softmax={"y": SoftmaxOutput("gemm.out")},
    )[0]
    assert c.ok


def test_softmax_outputs_and_with_logits_on_a_graph():
    net = nn.Sequential([nn.Flatten(), nn.Linear(3), nn.Softmax()])
    g = net.build((None, 2, 2))
    found = softmax_outputs(g)
    assert list(found) == ["output"] and not found["output"].log
    probe, same = with_logits(g)
    assert same == found and probe is not g
    assert probe.outputs == ["output", found["output"].logits] and g.outputs == ["output"]
    plain = nn.Sequential([nn.ReLU()]).build((None, 2))
    assert with_logits(plain) == (plain, {})
