"""Every op's gradient against central finite differences in float64.

Each case is one node; the loss is sum(Y * R) for a fixed random R, so d loss / dY = R and every
element of every checked input is perturbed by +-h. With h = 1e-6 in float64 the truncation error
is O(h^2) ~ 1e-12 and the rounding error ~ 1e-16 * |loss| / h ~ 1e-9: tolerances 1e-6 relative
and 1e-7 absolute leave room for both and still catch any wrong term (they are O(1))."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import ops
from graphnet.ir import Graph
from graphnet.runtime.gradients import (
    Backprop,
    all_gradients,
    non_differentiable_ops,
)
from tests.train.gradient_cases import CASES, Case, build_case

H = 1e-6
RTOL, ATOL = 1e-6, 1e-7


def _loss(bp: Backprop, feeds: dict, case: Case, weights: np.ndarray) -> float:
    params = {k: v.copy() for k, v in bp.graph.params.items()}
    # The same seed every time: Dropout draws the same mask, as backward reuses it.
    tape = bp.forward(feeds, training=case.training, rng=np.random.default_rng(7), params=params)
    y = tape.values[bp.graph.outputs[0]]
    return float(np.sum(y * weights))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.op}-{c.id}" for c in CASES])
def test_gradient_matches_finite_differences(case: Case) -> None:
    g, feeds, checked = build_case(case)
    assert checked, "a case must check at least one input"
    bp = Backprop(g)
    params = {k: v.copy() for k, v in g.params.items()}
    tape = bp.forward(feeds, training=case.training, rng=np.random.default_rng(7), params=params)
    y = tape.values[g.outputs[0]]
    assert y.dtype == np.float64
    weights = np.random.default_rng(99).standard_normal(y.shape)
    grads = bp.backward(tape, {g.outputs[0]: weights}, checked)
    for name in checked:
        x = feeds[name]
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):  # the reference: one perturbation per element
            for sign in (1, -1):
                shifted = dict(feeds)
                xs = x.copy()
                xs[idx] += sign * H
                shifted[name] = xs
                numeric[idx] += sign * _loss(bp, shifted, case, weights) / (2 * H)
        analytic = grads[name]
        assert analytic.shape == x.shape and analytic.dtype == np.float64
        np.testing.assert_allclose(
            analytic, numeric, rtol=RTOL, atol=ATOL, err_msg=f"d loss / d {name}"
        )


DIFFERENTIABLE = sorted(all_gradients())


@pytest.mark.parametrize("op", DIFFERENTIABLE)
def test_every_differentiable_op_has_a_case(op: str) -> None:
    ids = [c.id for c in CASES if c.op == op]
    assert ids, f"{op} has a gradient rule but no finite-difference case"


def test_cases_cover_the_op_table() -> None:
    """Every op is checked here or declared non-differentiable (with a reason)."""
    nondiff = non_differentiable_ops()
    for op in ops.all_specs():
        assert op in all_gradients() or nondiff.get(op, "").strip(), op


def test_gradients_are_float32_for_float32_inputs() -> None:
    """Training runs in float32: every rule keeps its operand's dtype (no silent float64)."""
    for case in CASES:
        g, feeds, checked = build_case(case)
        bp = Backprop(g)
        f32 = {k: v.astype(np.float32) for k, v in feeds.items()}
        params = {
            k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in g.params.items()
        }
        if case.op == "Cast":
            continue  # Cast's own `to` says float64: its output is float64 by definition
        tape = bp.forward(f32, training=case.training, rng=np.random.default_rng(7), params=params)
        y = tape.values[g.outputs[0]]
        grads = bp.backward(tape, {g.outputs[0]: np.ones_like(y)}, checked)
        for name, gr in grads.items():
            assert gr.dtype == np.float32, f"{case.op}-{case.id}: d/d{name} is {gr.dtype}"


def test_max_pool_tie_goes_to_the_first_maximum():
    """A window of equal values (zeros after a ReLU) sends its gradient to its first element in
    row-major order, as ONNX's Indices and PyTorch's max_pool backward do; never to all of them."""
    g = Graph("tie")
    g.add_input("x", (1, 1, 4, 4), "float32")
    node = g.add_node("MaxPool", ["x"], {"kernel_shape": (2, 2), "strides": (2, 2)}, name="p")
    g.mark_output(node.outputs[0])
    bp = Backprop(g)
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 3, 3] = 1.0  # the last window has a unique maximum in its last tap
    tape = bp.forward({"x": x})
    dx = bp.backward(tape, {node.outputs[0]: np.ones((1, 1, 2, 2), np.float32)}, ["x"])["x"]
    want = np.zeros((4, 4), np.float32)
    want[0, 0] = want[0, 2] = want[2, 0] = want[3, 3] = 1.0
    np.testing.assert_array_equal(dx[0, 0], want)


def test_prelu_gradient_where_the_slope_broadcasts_the_output_past_x():
    """x (2, 3, 1, 4) against a (3, 5, 1) slope: Y is (2, 3, 5, 4) (the kernel broadcasts as
    onnxruntime does; the graph declares H dynamic, so the shape rule lets it through). dX sums
    over the broadcast H (it had Y's shape and the walk raised a ShapeError), dslope over N and
    W; both against central differences in float64 (tolerances of the cases above)."""
    g = Graph("prelu_grows")
    g.add_input("x", (2, 3, None, 4), "float64")
    g.add_input("slope", (3, 5, 1), "float64")
    node = g.add_node("PRelu", ["x", "slope"], {}, name="act")
    g.mark_output(node.outputs[0])
    rng = np.random.default_rng(5)
    feeds = {
        "x": rng.choice([-1.0, 1.0], (2, 3, 1, 4)) * rng.uniform(0.1, 1.1, (2, 3, 1, 4)),
        "slope": rng.uniform(-0.5, 2.0, (3, 5, 1)),
    }
    bp = Backprop(g)
    tape = bp.forward(feeds)
    y = tape.values[node.outputs[0]]
    assert y.shape == (2, 3, 5, 4)
    weights = rng.standard_normal(y.shape)
    grads = bp.backward(tape, {node.outputs[0]: weights}, ["x", "slope"])

    def loss(fed: dict) -> float:
        return float(np.sum(bp.forward(fed).values[node.outputs[0]] * weights))

    for name, v in feeds.items():
        numeric = np.zeros_like(v)
        for idx in np.ndindex(v.shape):  # one perturbation per element
            for sign in (1, -1):
                moved = v.copy()
                moved[idx] += sign * H
                numeric[idx] += sign * loss(dict(feeds, **{name: moved})) / (2 * H)
        np.testing.assert_allclose(grads[name], numeric, rtol=RTOL, atol=ATOL, err_msg=name)
