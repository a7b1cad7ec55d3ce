"""The fast plan's GemmStep (`runtime.fast.steps.linear`): both ways of multiplying by a
transposed weight (Y' = W @ A' copied out with the bias, from `TRANSPOSED_GEMM_MIN_ROWS` rows
and `TRANSPOSED_GEMM_MIN_COLUMNS` columns, patched to 3 here; A @ W' below) and the plain
weight, every bias shape Gemm broadcasts, a fused ReLU, inline and split over the threads by
output columns, against the float64 formula.

Tolerance: a float32 dot product of K terms is within K * 2^-24 * sum_k |a_k b_k| of the exact
one (each product and partial sum rounds once), the bias adds one more rounding of |y|; the
bound below is twice that, elementwise, so no term depends on cancellation."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.runtime.fast import threads
from graphnet.runtime.fast.steps import linear as fast_linear
from tests.helpers import single_node

EPS32 = 2.0**-24

BIASES = [None, (), (1,), ("N",), (1, "N"), ("M", 1), ("M", "N")]


def _shape(kind, m, n):
    return tuple({"M": m, "N": n}.get(d, d) for d in kind)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("trans_b", [1, 0])
@pytest.mark.parametrize(
    "m, k, n", [(1, 7, 5), (2, 6, 7), (3, 9, 4), (4, 5, 3), (5, 13, 11), (33, 17, 9)]
)
def test_gemm_step_matches_float64_formula(m, k, n, trans_b, bias, relu, split, monkeypatch):
    monkeypatch.setattr(fast_linear, "TRANSPOSED_GEMM_MIN_COLUMNS", 3)
    if split:  # every Gemm split over the threads, helpers taking slices wherever they run
        monkeypatch.setattr(fast_linear, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "_cpu", lambda: -1)
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    params = {"B": w}
    c = None
    if bias is not None:
        c = rng.standard_normal(_shape(bias, m, n)).astype(np.float32)
        params["C"] = c
    g = single_node("Gemm", {"A": (None, k)}, params, {"transB": trans_b})
    out = g.nodes[0].outputs[0]
    if relu:
        out = g.add_node("Relu", [out], {}, name="relu").outputs[0]
        g.outputs.clear()
        g.mark_output(out)
    sess = runtime.Session(g)
    got = sess.run({"A": a})[out]
    plan = sess._fast(training=False, keep_all=False)
    step = next(st for st in plan.steps if st.op == "Gemm")
    assert type(step) is fast_linear.GemmStep
    assert (step.activation != ()) == relu  # the ReLU is fused, not a step of its own

    wt = (w.T if trans_b else w).astype(np.float64)
    want = a.astype(np.float64) @ wt
    size = np.abs(a.astype(np.float64)) @ np.abs(wt)
    if c is not None:
        want = want + c
        size = size + np.abs(c)
    if relu:
        want = np.maximum(want, 0)
    bound = 2 * (k + 1) * EPS32 * size
    assert got.shape == (m, n) and got.dtype == np.float32
    assert (np.abs(got - want) <= bound).all()
