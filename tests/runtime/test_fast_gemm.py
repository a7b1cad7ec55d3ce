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
from graphnet.ir import Graph
from graphnet.runtime.fast import threads
from graphnet.runtime.fast.steps import linear as fast_linear
from tests.helpers import assert_close, export_checked, ort_run, single_node

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


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("m, k, n", [(1, 7, 5), (3, 9, 4), (5, 13, 11), (33, 17, 10)])
def test_gemm_with_fused_softmax_matches_plain_kernels_and_onnxruntime(
    m, k, n, axis, relu, split, monkeypatch
):
    """Gemm (-> Relu) -> Softmax along the last axis as one step (the softmax in place on Y),
    batch 1 and more, inline and split, against the plain kernels node by node and
    onnxruntime. Logits of size ~5: their float32 error (the bound above, ~1e-6) changes a
    probability p by about p * 2e-6; exp and the sum add a few ulp of p."""
    monkeypatch.setattr(fast_linear, "TRANSPOSED_GEMM_MIN_COLUMNS", 3)
    if split:
        monkeypatch.setattr(fast_linear, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "_cpu", lambda: -1)
    rng = np.random.default_rng(m + 7 * n)
    params = {
        "B": rng.standard_normal((n, k)).astype(np.float32),
        "C": rng.standard_normal(n).astype(np.float32),
    }
    g = single_node("Gemm", {"A": (None, k)}, params, {"transB": 1})
    out = g.nodes[0].outputs[0]
    names = ["gemm"]
    if relu:
        out = g.add_node("Relu", [out], {}, name="relu").outputs[0]
        names.append("relu")
    out = g.add_node("Softmax", [out], {"axis": axis}, name="softmax").outputs[0]
    g.outputs.clear()
    g.mark_output(out)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    assert [r["node"] for r in rows] == ["gemm"] and rows[0]["fused"] == names[1:] + ["softmax"]
    a = rng.standard_normal((m, k)).astype(np.float32)
    got = sess.run({"A": a})[out]
    want = runtime.Session(g, plan="reference").run({"A": a})[out]
    assert_close(got, want, rtol=1e-5, atol=1e-7, what="Gemm+Softmax vs plain kernels")
    theirs = ort_run(export_checked(g), {"A": a})[out]
    assert_close(got, theirs, rtol=1e-5, atol=1e-7, what="Gemm+Softmax vs onnxruntime")


def test_gemm_softmax_along_the_batch_or_read_twice_stays_a_step():
    rng = np.random.default_rng(3)
    params = {"B": rng.standard_normal((4, 6)).astype(np.float32)}
    for axis, second in ((0, False), (-1, True)):
        g = single_node("Gemm", {"A": (None, 6)}, params, {"transB": 1})
        logits = g.nodes[0].outputs[0]
        out = g.add_node("Softmax", [logits], {"axis": axis}, name="softmax").outputs[0]
        if not second:
            g.outputs.clear()
        g.mark_output(out)
        sess = runtime.Session(g)
        rows = sess._fast(training=False, keep_all=False).describe()
        assert [r["op"] for r in rows] == ["Gemm", "Softmax"]
        a = rng.standard_normal((3, 6)).astype(np.float32)
        got, want = sess.run({"A": a}), runtime.Session(g, plan="reference").run({"A": a})
        for name in g.outputs:  # standard normal logits: a few float32 ulps
            assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, what=name)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("axis, second", [(1, False), (-3, False), (2, False), (1, True)])
def test_flatten_into_gemm(batch, axis, second):
    """Flatten (axis 1) -> Gemm as one step (the Gemm views its input as (N, -1)), batch 1 and
    3, against the plain kernels and onnxruntime; a Flatten along another axis, or whose output
    is also a graph output, stays a step. Standard normal data, K = 60: the bound above is
    ~1e-5 of sum |a_k b_k| ~ 50, outputs ~8."""
    rng = np.random.default_rng(11)
    shape = (batch, 4, 3, 5)
    k = 60 if axis % 4 == 1 else 15
    g = Graph("flatten_gemm")
    g.add_input("x", (None, 4, 3, 5), "float32")
    g.add_param("w", rng.standard_normal((7, k)).astype(np.float32))
    g.add_param("b", rng.standard_normal(7).astype(np.float32))
    flat = g.add_node("Flatten", ["x"], {"axis": axis}, name="flatten").outputs[0]
    out = g.add_node("Gemm", [flat, "w", "b"], {"transB": 1}, name="fc").outputs[0]
    g.mark_output(out)
    if second:
        g.mark_output(flat)
    sess = runtime.Session(g)
    rows = sess._fast(training=False, keep_all=False).describe()
    if axis % 4 == 1 and not second:
        assert [r["op"] for r in rows] == ["Gemm"] and rows[0]["fused"] == ["flatten"]
    else:
        assert [r["op"] for r in rows] == ["Flatten", "Gemm"]
    x = rng.standard_normal(shape).astype(np.float32)
    got = sess.run({"x": x})
    want = runtime.Session(g, plan="reference").run({"x": x})
    theirs = ort_run(export_checked(g), {"x": x})
    for name in g.outputs:
        assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, what=name)
        assert_close(got[name], theirs[name], rtol=1e-5, atol=1e-5, what=name)


@pytest.mark.parametrize("trans_b", [1, 0])
@pytest.mark.parametrize("m, k, n", [(1, 37, 9), (1, 8, 2), (1, 5, 40), (2, 21, 9)])
def test_gemv_of_a_large_weight_is_split_over_the_threads(m, k, n, trans_b, monkeypatch):
    """With GEMV_SPLIT_MIN_BYTES at 0 every weight counts as large: a product of few rows is
    split by output columns over the threads (helpers taking slices wherever they run),
    against the float64 bound of the first test."""
    monkeypatch.setattr(fast_linear, "GEMV_SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    calls = []
    real = threads.Parallel.__call__

    def spy(self, count, fn, flops=0):
        calls.append((count, flops))
        return real(self, count, fn, flops)

    monkeypatch.setattr(threads.Parallel, "__call__", spy)
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    g = single_node("Gemm", {"A": (None, k)}, {"B": w, "C": c}, {"transB": trans_b})
    got = runtime.Session(g).run({"A": a})[g.outputs[0]]
    assert calls and all(count == n and flops >= threads.SPLIT_MIN_FLOPS for count, flops in calls)
    wt = (w.T if trans_b else w).astype(np.float64)
    want = a.astype(np.float64) @ wt + c
    bound = 2 * (k + 1) * EPS32 * (np.abs(a.astype(np.float64)) @ np.abs(wt) + np.abs(c))
    assert (np.abs(got - want) <= bound).all()
