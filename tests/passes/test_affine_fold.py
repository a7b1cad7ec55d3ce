"""The fold engine (passes/affine_fold.py) and its maths (passes/affine_maths.py) where the pass
tests do not reach: pure scales (no shift) into padded and transposed convolutions, the matrix
fold without a shift, a classic dropout into a MatMul + bias, and declines that change nothing.

Tolerances: float64 maths 1e-10 (a handful of roundings); float32 graphs FOLD_RTOL/ATOL
(tests/helpers.py says why).
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.ir import Graph
from graphnet.passes.affine_fold import Affine, Folded, fold_into_consumer, fold_into_producer
from graphnet.passes.affine_maths import (
    fold_affine_into_conv,
    fold_affine_into_matrix,
    fuse_affine_weights,
    shift_bias,
)
from tests.helpers import check_same, ops_of, param, run_on_copy
from tests.helpers import feeds as _feeds
from tests.oracles import naive_conv, naive_conv_transpose

TOL64 = dict(rtol=1e-10, atol=1e-10)


# ================================================================================ the maths
@pytest.mark.parametrize("group", [1, 2])
def test_a_pure_scale_folds_into_a_padded_conv(group):
    # (s * x) padded with zeros = s * (x padded with zeros): no shift, so padding is harmless.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((6, 4 // group, 3, 3))
    b = rng.standard_normal(6)
    s = rng.uniform(0.5, 2.0, 4)
    w2, b2 = fold_affine_into_conv(w, b, s, None, group)
    assert b2 is b  # nothing to add to the bias
    pads = (1, 2, 1, 0)
    want = naive_conv(x * s[None, :, None, None], w, b, pads=pads, group=group)
    np.testing.assert_allclose(naive_conv(x, w2, b, pads=pads, group=group), want, **TOL64)


@pytest.mark.parametrize("group", [1, 2])
def test_a_pure_scale_folds_into_a_following_conv_transpose(group):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 3, 3))
    w = rng.standard_normal((4, 3, 2, 2))  # (C_in, M/g, k...)
    s = rng.uniform(0.5, 2.0, 4)
    w2, b2 = fold_affine_into_conv(w, None, s, None, group, transpose=True)
    assert b2 is None
    want = naive_conv_transpose(x * s[None, :, None, None], w, strides=(2, 2), group=group)
    np.testing.assert_allclose(
        naive_conv_transpose(x, w2, strides=(2, 2), group=group), want, **TOL64
    )
    with pytest.raises(ValueError, match="shift does not fold into a following ConvTranspose"):
        fold_affine_into_conv(w, None, s, s, group, transpose=True)


@pytest.mark.parametrize("in_axis", [0, 1])
def test_matrix_fold_without_a_shift_has_no_bias(in_axis):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((4, 5) if in_axis == 0 else (5, 4))
    s = rng.uniform(0.5, 2.0, 4)
    w2, bias = fold_affine_into_matrix(w, s, None, in_axis)
    assert bias is None
    mat = (lambda m: m) if in_axis == 0 else (lambda m: m.T)
    np.testing.assert_allclose(x @ mat(w2), (x * s) @ mat(w), **TOL64)


def test_shift_bias_and_fuse_without_bias_or_shift():
    s, t, b = np.array([2.0, 3.0]), np.array([0.5, -1.0]), np.array([1.0, 1.0])
    assert shift_bias(None, s, None) is None
    np.testing.assert_array_equal(shift_bias(None, s, t), t)
    np.testing.assert_array_equal(shift_bias(b, s, None), s * b)
    np.testing.assert_array_equal(shift_bias(b, s, t), s * b + t)
    w = np.ones((2, 3), np.float32)
    w2, b2 = fuse_affine_weights(w, None, s, None)
    assert b2 is None and w2.dtype == np.float32
    np.testing.assert_array_equal(w2, np.array([[2.0] * 3, [3.0] * 3], np.float32))


# ================================================================================ the engine
def _mlp_with_bias(rng) -> tuple[Graph, str]:
    g = Graph("mlp")
    g.add_input("x", (None, 4))
    mm = g.add_node(
        "MatMul", ["x", param(g, "B", rng.standard_normal((4, 5), np.float32))], name="mm"
    )
    c = param(g, "c", rng.standard_normal(5).astype(np.float32))
    add = g.add_node("Add", [mm.outputs[0], c], name="bias")
    return g, add.outputs[0]


def test_classic_dropout_folds_into_a_matmul_and_its_bias():
    rng = np.random.default_rng(3)
    g, y = _mlp_with_bias(rng)
    d = g.add_node("Dropout", [y], {"drop_prob": 0.25, "scheme": "classic"}, name="drop")
    g.mark_output(g.add_node("Relu", [d.outputs[0]], name="relu").outputs[0])
    opt, report = run_on_copy("drop-dropout", g)
    assert ops_of(opt) == ["MatMul", "Add", "Relu"]
    assert report.changes == [
        "removed drop (classic): its scale 0.75 folded into mm (MatMul) and its bias bias (Add)"
    ]
    for k in ("B", "c"):
        np.testing.assert_array_equal(
            opt.params[k], (g.params[k].astype(np.float64) * 0.75).astype(np.float32)
        )
    check_same(g, opt, _feeds(g))


def test_classic_dropout_folds_into_a_following_conv_transpose():
    rng = np.random.default_rng(4)
    g = Graph("drop_convt")
    g.add_input("x", (None, 4, 3, 3))
    r = g.add_node("Relu", ["x"], name="relu")
    d = g.add_node("Dropout", [r.outputs[0]], {"drop_prob": 0.5, "scheme": "classic"}, name="d")
    w = param(g, "w", rng.standard_normal((4, 3, 2, 2)).astype(np.float32))
    ct = g.add_node("ConvTranspose", [d.outputs[0], w], {"strides": (2, 2), "group": 2}, name="ct")
    g.mark_output(ct.outputs[0])
    opt, report = run_on_copy("drop-dropout", g)
    assert ops_of(opt) == ["Relu", "ConvTranspose"]
    assert report.changes == [
        "removed d (classic): its scale 0.5 folded into the following ct (ConvTranspose)"
    ]
    check_same(g, opt, _feeds(g))


def _structure(g: Graph):
    return [(n.name, n.op, list(n.inputs), list(n.outputs)) for n in g.nodes], dict(g.params)


def test_a_decline_changes_nothing_and_says_why():
    rng = np.random.default_rng(5)
    g, y = _mlp_with_bias(rng)
    relu = g.add_node("Relu", [y], name="relu")
    m = g.add_node("Mul", [relu.outputs[0], param(g, "k", np.float32(2.0))], name="m")
    g.mark_output(m.outputs[0])
    before = _structure(g)
    scale = Affine(np.float64(2.0), None, tag="x")
    why = fold_into_producer(g, relu.outputs[0], [m], scale)
    assert why.startswith("relu is a Relu, not a Conv") and _structure(g) == before
    why = fold_into_consumer(g, m, scale)
    assert why == "its output 'm.out' is a graph output" and _structure(g) == before
    per_channel = Affine(np.ones(5), np.zeros(5))
    g2, y2 = _mlp_with_bias(rng)
    g2.add_node("Relu", [y2], name="other")  # the Add's output has two readers
    bn_like = g2.add_node("Identity", [y2], name="id")
    g2.mark_output(bn_like.outputs[0])
    assert fold_into_producer(g2, y2, [bn_like], per_channel) == "bias output also feeds other"
    g3, y3 = _mlp_with_bias(rng)  # an Identity is y = 1 * x: it folds, and says where
    ident = g3.add_node("Identity", [y3], name="id", outputs=["y"])
    g3.mark_output("y")
    folded = fold_into_producer(g3, y3, [ident], Affine(np.float64(1.0)))
    assert folded == Folded("mm (MatMul) and its bias bias (Add)", [])
    assert ops_of(g3) == ["MatMul", "Add"] and g3.node("bias").outputs == ["y"]
    g3.verify()
