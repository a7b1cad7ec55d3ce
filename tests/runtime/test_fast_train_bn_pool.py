"""Train mode: a BatchNorm (its ReLU fused or not) read only by a MaxPool leaves x - m in its
output and the pool applies the affine and the ReLU to its max (`AffineMaxPoolStep`,
`CompiledPlan._defer_bn_affines`) when every scale is > 0 in float32: x * s + t and the ReLU
are non-decreasing in x, rounding included, so the result is the unfused pool's bit for bit.

Oracles: the same train plan with the deferral off (`_defer_bn_affines` a no-op): outputs and
running statistics equal (array_equal); the reference plan in train mode within float32
rounding; on odd sizes, batch 1 (the BN's single-image path) and 3 / 5 (its batch path, split
over two threads too), tiling, overlapping and ceil_mode pools, a negative scale (no
deferral: the BN's own affine), one session across batch sizes, the size thresholds; a BN
output that is also a graph output and keep_all never defer."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import threads
from graphnet.runtime.fast.steps import BatchNormStep
from graphnet.runtime.fast.steps import elementwise as ew
from graphnet.runtime.fast.steps.trainfuse import AffineMaxPoolStep

# A conv of 27-36 terms of weights ~ 1 / sqrt(fan-in), then BN: O(1) values; the reference's
# batch statistics are float64 sums, ours float32 BLAS sums with the two-pass correction:
# ~1e-6 relative, and the running statistics' blend adds no more. A wrong channel, pixel or a
# missing ReLU would be off by O(0.1).
RTOL, ATOL = 1e-5, 1e-5

POOLS = {
    "tile2": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "tile3x2": {"kernel_shape": [3, 2], "strides": [3, 2]},
    "overlap": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "ceil": {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
}


def _net(pool: str, relu: bool = True, negative: bool = False, extra: str = "") -> Graph:
    """x (N, 3, 9, 14) -> conv 3x3 pads 1 (6 channels) -> BN -> [ReLU] -> MaxPool `pool` ->
    conv 1x1 (5 channels). `negative`: one BN scale < 0. `extra`: "bn_out" (the BN's output
    is a graph output too)."""
    rng = np.random.default_rng(7)
    g = Graph("bn_pool")
    g.add_input("x", (None, 3, 9, 14))
    g.add_param("w", (rng.standard_normal((6, 3, 3, 3)) / 27**0.5).astype(np.float32))
    g.add_param("b", rng.standard_normal(6).astype(np.float32))
    scale = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    if negative:
        scale[4] = -0.7
    g.add_param("scale", scale)
    g.add_param("bias", rng.normal(0.0, 0.5, 6).astype(np.float32))
    g.add_param("mean", rng.normal(0.0, 0.5, 6).astype(np.float32))
    g.add_param("var", rng.uniform(0.5, 2.0, 6).astype(np.float32))
    g.add_param("w2", (rng.standard_normal((5, 6, 1, 1)) / 6**0.5).astype(np.float32))
    y = g.add_node("Conv", ["x", "w", "b"], {"pads": [1] * 4}, name="conv").outputs[0]
    bn = g.add_node(
        "BatchNormalization", [y, "scale", "bias", "mean", "var"], {}, name="bn"
    ).outputs[0]
    y = bn
    if relu:
        y = g.add_node("Relu", [y], {}, name="relu").outputs[0]
    y = g.add_node("MaxPool", [y], POOLS[pool], name="pool").outputs[0]
    g.mark_output(g.add_node("Conv", [y, "w2"], {}, name="conv2").outputs[0])
    if extra == "bn_out":
        g.mark_output(bn)
    return g


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    """Defer on these small shapes (test_threshold: the sizes below which it does not)."""
    monkeypatch.setattr(ew, "DEFER_MIN_ELEMENTS", 0)
    monkeypatch.setattr(ew, "DEFER_MIN_ELEMENTS_SINGLE", 0)


def _x(batch: int) -> dict:
    x = np.random.default_rng(batch).standard_normal((batch, 3, 9, 14)).astype(np.float32)
    return {"x": x + 0.5}  # (a mean away from 0: the two-pass statistics at work)


def _state(g: Graph) -> dict:
    return {k: g.params[k].copy() for k in ("mean", "var")}


def _plain(monkeypatch, *args, **kw) -> runtime.Session:
    """A session of a fresh `_net(*args)` (its own running statistics) without the deferral."""
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_defer_bn_affines", lambda self: None)
        sess = runtime.Session(_net(*args, **kw))
        sess._fast(training=True, keep_all=False)
    return sess


def _spy(monkeypatch) -> list:
    """The results of BatchNormStep._deferring in the runs that follow."""
    seen: list = []
    real = BatchNormStep._deferring
    monkeypatch.setattr(
        BatchNormStep, "_deferring", lambda self, *a: seen.append(real(self, *a)) or seen[-1]
    )
    return seen


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 5])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("pool", list(POOLS))
def test_deferred_affine_equals_unfused_plan_and_reference(pool, relu, batch, split, monkeypatch):
    if split:
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "_cpu", lambda: -1)
        monkeypatch.setattr(threads, "_skip", 0)
    g = _net(pool, relu)
    sess = runtime.Session(g)
    steps = sess._fast(training=True, keep_all=False).steps
    pools = [s for s in steps if isinstance(s, AffineMaxPoolStep)]
    assert [s.name for s in pools] == ["pool"] and pools[0].bn.defer
    plain = _plain(monkeypatch, pool, relu)
    assert not any(
        isinstance(s, AffineMaxPoolStep) for s in plain._fast(training=True, keep_all=False).steps
    )
    ref_graph = _net(pool, relu)
    ref = runtime.Session(ref_graph, plan="reference")
    seen = _spy(monkeypatch)
    for _ in range(2):  # (the second: a replayed run, running statistics updated twice)
        x = _x(batch)
        got, want = sess.run(x, mode="train"), plain.run(x, mode="train")
        out = g.outputs[0]
        np.testing.assert_array_equal(got[out], want[out])
        for k, v in _state(g).items():
            np.testing.assert_array_equal(v, plain.graph.params[k], err_msg=k)
        theirs = ref.run(x, mode="train")
        np.testing.assert_allclose(got[out], theirs[out], rtol=RTOL, atol=ATOL)
        for k, v in _state(g).items():
            np.testing.assert_allclose(v, ref_graph.params[k], rtol=RTOL, atol=ATOL, err_msg=k)
    assert seen == [True, True]  # (the deferral ran, in our session's runs only)


@pytest.mark.parametrize("batch", [1, 3])
def test_negative_scale_keeps_the_bn_affine(batch, monkeypatch):
    g = _net("tile2", negative=True)
    sess = runtime.Session(g)
    plain = _plain(monkeypatch, "tile2", negative=True)
    seen = _spy(monkeypatch)
    x = _x(batch)
    got, want = sess.run(x, mode="train"), plain.run(x, mode="train")
    assert seen == [False]
    out = g.outputs[0]
    np.testing.assert_array_equal(got[out], want[out])
    theirs = runtime.Session(_net("tile2", negative=True), plan="reference").run(x, mode="train")
    np.testing.assert_allclose(got[out], theirs[out], rtol=RTOL, atol=ATOL)


def test_one_session_across_batch_sizes(monkeypatch):
    g = _net("overlap")
    sess = runtime.Session(g)
    plain = _plain(monkeypatch, "overlap")
    out = g.outputs[0]
    for batch in (1, 3, 1, 5):
        x = _x(batch)
        got, want = sess.run(x, mode="train"), plain.run(x, mode="train")
        np.testing.assert_array_equal(got[out], want[out])
        np.testing.assert_array_equal(sess.run(x)[out], plain.run(x)[out])  # (inference)


def test_never_for_graph_outputs_keep_all_or_inference():
    g = _net("tile2", extra="bn_out")
    assert not any(
        isinstance(s, AffineMaxPoolStep)
        for s in runtime.Session(g)._fast(training=True, keep_all=False).steps
    )
    sess = runtime.Session(_net("tile2"))
    for training, keep_all in ((True, True), (False, False), (False, True)):
        steps = sess._fast(training=training, keep_all=keep_all).steps
        assert not any(isinstance(s, AffineMaxPoolStep) for s in steps)
    x = _x(3)  # keep_all in train mode: the BN's output is BN(x) (not x - m)
    got = sess.run(x, mode="train", keep_all=True)
    want = runtime.Session(_net("tile2"), plan="reference").run(x, mode="train", keep_all=True)
    assert set(got) == set(want)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("batch", [1, 3])
def test_threshold(batch, monkeypatch):
    """Under DEFER_MIN_ELEMENTS (one image: DEFER_MIN_ELEMENTS_SINGLE) input elements the BN
    applies its affine itself; at the threshold it defers."""
    size = batch * 6 * 9 * 14  # (the BN's input)
    seen = _spy(monkeypatch)
    name = "DEFER_MIN_ELEMENTS_SINGLE" if batch == 1 else "DEFER_MIN_ELEMENTS"
    other = "DEFER_MIN_ELEMENTS" if batch == 1 else "DEFER_MIN_ELEMENTS_SINGLE"
    monkeypatch.setattr(ew, other, 0)
    g = _net("tile2")
    sess = runtime.Session(g)
    plain = _plain(monkeypatch, "tile2")
    out = g.outputs[0]
    for least, deferred in ((size + 1, False), (size, True)):
        monkeypatch.setattr(ew, name, least)
        seen.clear()
        x = _x(batch)
        got, want = sess.run(x, mode="train"), plain.run(x, mode="train")
        assert seen == ([True] if deferred else [])  # (not even asked under the threshold)
        np.testing.assert_array_equal(got[out], want[out])
