"""Runs after runs on one fast plan (the arena's recorded layouts and their replays) against the
reference plan.

Plain-kernel steps whose result is a view of their input (Transpose; Reshape, Flatten and
(Un)Squeeze where the plan cannot make them views: another dtype, unknown shapes): the view must
not outlive the buffer it views. The input's pool buffer is given back when the input dies (its
place in the arena is the next take's from the second run on, the replay of the recorded run),
and the input's last reader may write it in place; the view then read another value's data.
`Run.adopt` copies such a view. Each graph runs a recorded run and two replays, at batch 3 and
1 alternately (two recorded layouts).

A run failing midway (a value-dependent error) leaves the following runs right."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from tests.helpers import assert_close


def _viewing(kind: str, perm: tuple) -> tuple[Graph, str]:
    """x -> r = Relu(x) (a pooled value) -> v = Transpose(r) (a view of r's buffer); then
    `kind`: "take": a LeakyRelu of x (its buffer can take r's place once r died) added to v;
    "inplace": v negated, then an ELU of r that reads r last (in place in r's buffer), both
    added to v."""
    g = Graph(f"transpose_{kind}")
    g.add_input("x", (None, 3, 4, 4), "float32")
    r = g.add_node("Relu", ["x"], {}, name="r").outputs[0]
    v = g.add_node("Transpose", [r], {"perm": perm}, name="v").outputs[0]
    if kind == "take":
        w = g.add_node("LeakyRelu", ["x"], {"alpha": 0.5}, name="w").outputs[0]
    else:
        neg = g.add_node("Neg", [v], {}, name="neg").outputs[0]  # v read before r's last read
        w = g.add_node("Elu", [r], {"alpha": 1.0}, name="w").outputs[0]
        w = g.add_node("Add", [w, neg], {}, name="w2").outputs[0]
    z = g.add_node("Add", [v, w], {}, name="z").outputs[0]
    g.mark_output(z)
    return g, z


@pytest.mark.parametrize("perm", [(0, 1, 3, 2), (0, 1, 2, 3)])  # a strided view; a contiguous one
@pytest.mark.parametrize("kind", ["take", "inplace"])
def test_a_plain_kernel_view_outlives_its_input_buffer(kind, perm):
    g, z = _viewing(kind, perm)
    sess = runtime.Session(g)
    kinds = {
        r["node"]: r["algorithm"] for r in sess._fast(training=False, keep_all=False).describe()
    }
    assert kinds["v"] == "kernel" and kinds["r"] == "ufunc"
    rng = np.random.default_rng(3)
    xs = {n: rng.standard_normal((n, 3, 4, 4)).astype(np.float32) for n in (3, 1)}
    ref = runtime.Session(g, plan="reference")
    want = {n: ref.run({"x": x})[z] for n, x in xs.items()}
    for n in (3, 1, 3, 1, 3, 1):
        got = sess.run({"x": xs[n]})[z]
        # the same float32 element-wise operations (ELU's exp - 1 against expm1: 2**-23 abs)
        assert_close(got, want[n], rtol=1e-6, atol=3e-7, what=f"batch {n}")


def test_a_run_failing_midway_leaves_the_next_runs_right():
    """A run that fails in the middle (a Reshape to a shape fed at run time that does not fit)
    in the recorded run or in a replay: the runs after it, replays and new recordings, give the
    reference plan's outputs (the arena, the scratch places and the pool's bookkeeping are not
    left half-way)."""
    g = Graph("fails_midway")
    g.add_input("x", (None, 3, 4, 4), "float32")
    g.add_input("s", (4,), "int64")
    r = g.add_node("Relu", ["x"], {}, name="r").outputs[0]
    a = g.add_node("LeakyRelu", [r], {"alpha": 0.2}, name="a").outputs[0]
    v = g.add_node("Reshape", [a, "s"], {}, name="v").outputs[0]
    e = g.add_node("Elu", [v], {"alpha": 1.0}, name="e").outputs[0]
    z = g.add_node("Add", [e, v], {}, name="z").outputs[0]
    g.mark_output(z)
    sess, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    rng = np.random.default_rng(4)
    good = np.array([0, 3, 2, 8], np.int64)
    bad = np.array([0, 5, 2, 8], np.int64)  # 80 elements per image, not 48
    for fails in ([0], [1], [0, 1, 3]):  # which runs of the sequence fail
        for k in range(5):
            n = 1 + k % 2
            x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
            if k in fails:
                with pytest.raises(Exception, match="reshape|Reshape"):
                    sess.run({"x": x, "s": bad})
                continue
            got = sess.run({"x": x, "s": good})[z]
            want = ref.run({"x": x, "s": good})[z]
            assert_close(got, want, rtol=1e-6, atol=3e-7, what=f"run {k} after {fails}")
