"""`FastBackprop` against the plain `Backprop` on the random graphs of
tests/runtime/test_fast_differential.py (convs of every fast shape, BatchNorm in train mode,
activations, pools, Group / Instance / Layer norm, residual adds, concats, views, several
outputs each with its own seed gradient), in float64: with float64 rounding, no ReLU input or
max-pool window ends up on the other side of a kink or tie in one plan only (in float32 one
does now and then, and moves a gradient by O(dy): see tests/train/test_backprop.py), so the
gradients of every parameter and of the input must agree to float64 rounding."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.runtime.gradients import Backprop, FastBackprop, trainable_params
from tests.runtime.test_fast_differential import _random_graph

RTOL = 1e-7
"""Per gradient, relative to its largest entry, or to 1e-6 of the largest entry of any
gradient when that is larger: a bias whose gradient is 0 in exact arithmetic (a conv bias
before a train-mode BatchNorm, a norm's shift before another norm) is float64 rounding noise
in both plans (~1e-14 of the others), not a quantity to compare relatively. The plans sum in
other orders (GEMMs over batch and positions against per-image products): 1e-16 per
operation, amplified by the normalizations; over 600 explored graphs the largest difference
was 9.5e-9 of that scale. A wrong term is O(1)."""


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_fast_gradients_match_the_plain_ones_on_random_graphs(seed):
    g, outs = _random_graph(seed, "float64")
    c, h, w = g.values["x"].shape[1:]
    x = np.random.default_rng(seed).standard_normal((3, c, h, w))
    wrt = trainable_params(g) + ["x"]
    start = dict(g.params)
    grads = []
    for plan in (Backprop, FastBackprop):
        for k, v in start.items():  # the forward moves BatchNorm's running statistics
            g.set_param(k, v)
        bp = plan(g)
        tape = bp.forward({"x": x}, rng=np.random.default_rng(0))
        rng = np.random.default_rng(1)
        seeds = {o: rng.standard_normal(tape.values[o].shape) for o in outs}
        grads.append(bp.backward(tape, seeds, wrt))
    want, got = grads
    top = max(float(np.abs(want[k]).max()) for k in wrt)
    for k in wrt:
        scale = max(float(np.abs(want[k]).max()), 1e-6 * top)
        err = float(np.abs(got[k] - want[k]).max()) / scale
        assert err <= RTOL, f"seed {seed}: d/d{k}: {err:.2e}"
