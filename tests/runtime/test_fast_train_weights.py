"""Train mode keeps the convs' prepared weights between runs (`TRAIN_KEEP_WEIGHTS` in
runtime/fast/steps/linear.py) while a parameter stays the same array object, as inference does:

- a weight or bias replaced with `Graph.set_param` (as the Trainer does) is seen by the next
  train-mode run, for every algorithm (Winograd F(4x4) with U^T kept, F(2x2) for too few tiles,
  U transformed per run, wino3d, im2col with its bias column, colstack, pointwise, merged 1x1
  convs): its output is within float32's rounding bound of the float64 plain conv of the new
  parameters (Winograd's bound from its transformed tiles), and bit for bit that of a fresh
  session's inference run (the same algorithm on the same prepared weight);
- with unchanged parameters a run prepares nothing (the kept weight is used);
- with TRAIN_KEEP_WEIGHTS off (the former path, every weight prepared afresh) the results agree
  with the oracle too;
- a Trainer step (the optimizer's new arrays through `set_param`) is seen by a session's next
  train-mode forward.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.ir import Graph
from graphnet.runtime.fast.steps import linear
from graphnet.runtime.kernels.conv import conv
from graphnet.train.trainer import Trainer
from tests.oracles import float32_bound, winograd_bound

# (x shape, output channels, kernel, strides, pads, the algorithm train mode runs)
CASES = [
    ((1, 128, 8, 8), 128, (3, 3), (1, 1), (1, 1, 1, 1), "winograd-f2"),  # 4 F(4x4) tiles
    ((3, 48, 9, 10), 40, (3, 3), (1, 1), (1, 1, 1, 1), "winograd-f4"),  # U^T kept: 27 tiles
    ((7, 48, 17, 19), 24, (3, 3), (1, 1), (1, 1, 0, 1), "winograd-f4"),  # U per run: 140 tiles
    ((3, 6, 11, 7), 5, (3, 3), (2, 1), (1, 1, 0, 2), "im2col"),  # the bias as a weight column
    ((3, 16, 9, 11), 20, (3, 3), (1, 1), (1, 1, 1, 1), "colstack"),
    ((1, 10, 7, 6), 12, (1, 1), (1, 1), (0, 0, 0, 0), "pointwise"),
    ((2, 8, 4, 8, 8), 12, (3, 3, 3), (1, 1, 1), (1,) * 6, "wino3d-f4"),
]


def _graph(x_shape, m, kernel, strides, pads, rng) -> Graph:
    g = Graph("conv")
    g.add_input("x", (None, *x_shape[1:]))
    g.add_param("w", _weight(rng, m, x_shape[1], kernel))
    g.add_param("b", rng.standard_normal(m).astype(np.float32))
    attrs = {"strides": list(strides), "pads": list(pads)}
    g.mark_output(g.add_node("Conv", ["x", "w", "b"], attrs, name="conv").outputs[0])
    return g


def _weight(rng, m, c, kernel) -> np.ndarray:
    return (rng.standard_normal((m, c, *kernel)) / np.sqrt(c * np.prod(kernel))).astype(np.float32)


def _train_ran(sess: runtime.Session) -> list[str]:
    return [st.ran for st in sess._fast(training=True, keep_all=False).steps if st.op == "Conv"]


def _assert_within_bound(y, x, g, strides, pads, algo) -> None:
    """y against the float64 plain conv of the graph's current parameters: float32's bound of
    a sum of the conv's terms (gamma_n times the conv of |x| and |w|, + |b|) for a direct
    algorithm; Winograd's (gamma_n times the Winograd chain on magnitudes) for F(m x m).
    wino3d (no 3-D bound here) is checked by the bit-for-bit comparison with inference."""
    if algo.startswith("wino3d"):
        return
    w, b = g.params["w"], g.params["b"]
    f64 = np.float64
    kw = dict(strides=strides, pads=pads, dilations=(1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(f64), w.astype(f64), b.astype(f64), **kw)
    if algo.startswith("winograd"):
        bound = winograd_bound(x, w, pads, int(algo[-1]), np.abs(b.astype(f64))[:, None, None])
    else:
        mags = conv(np.abs(x).astype(f64), np.abs(w).astype(f64), np.abs(b).astype(f64), **kw)
        bound = float32_bound(mags, int(np.prod(w.shape[1:])))
    assert (np.abs(y - exact) <= bound).all()


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize(("x_shape", "m", "kernel", "strides", "pads", "algo"), CASES)
def test_replaced_weight_and_bias_are_seen_by_the_next_train_run(
    x_shape, m, kernel, strides, pads, algo, keep, monkeypatch
):
    monkeypatch.setattr(linear, "TRAIN_KEEP_WEIGHTS", keep)
    rng = np.random.default_rng(11)
    g = _graph(x_shape, m, kernel, strides, pads, rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    sess = runtime.Session(g)
    out = g.outputs[0]
    before = sess.run({"x": x}, mode="train")[out]
    _assert_within_bound(before, x, g, strides, pads, algo)
    g.set_param("w", _weight(rng, m, x_shape[1], kernel))
    after = sess.run({"x": x}, mode="train")[out]
    assert not np.allclose(before, after)
    _assert_within_bound(after, x, g, strides, pads, algo)
    g.set_param("b", rng.standard_normal(m).astype(np.float32))
    again = sess.run({"x": x}, mode="train")[out]
    _assert_within_bound(again, x, g, strides, pads, algo)
    if keep:  # train mode runs what inference runs, on the same prepared weight
        assert _train_ran(sess) == [algo]
        np.testing.assert_array_equal(again, runtime.Session(g).run({"x": x})[out])
    elif algo == "winograd-f2":  # (without kept weights: the few-tiles fallback)
        assert _train_ran(sess) == ["im2col"]


@pytest.mark.parametrize(("x_shape", "m", "kernel", "strides", "pads", "algo"), CASES)
def test_unchanged_parameters_prepare_nothing_in_train_mode(
    x_shape, m, kernel, strides, pads, algo, monkeypatch
):
    """The second run with the same parameter arrays uses the kept weight: no call of
    `prepare_weight` (a per-run Winograd U is transformed into the workspace instead, as in
    inference), and the same output bit for bit."""
    rng = np.random.default_rng(12)
    g = _graph(x_shape, m, kernel, strides, pads, rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    sess = runtime.Session(g)
    first = sess.run({"x": x}, mode="train")[g.outputs[0]]
    calls = []
    real = linear.prepare_weight
    monkeypatch.setattr(linear, "prepare_weight", lambda *a, **k: calls.append(a) or real(*a, **k))
    second = sess.run({"x": x}, mode="train")[g.outputs[0]]
    assert calls == []
    np.testing.assert_array_equal(first, second)
    g.set_param("w", g.params["w"].copy())  # another array object: prepared again
    third = sess.run({"x": x}, mode="train")[g.outputs[0]]
    per_run = x_shape[0] == 7  # (U transformed per run: prepares nothing)
    assert len(calls) == (0 if per_run else 1)
    np.testing.assert_array_equal(first, third)


def test_merged_pointwise_convs_see_a_replaced_weight_in_train_mode():
    """Two 1x1 convs of one input run as one stacked GEMM (MergedPointwiseStep), its stacked
    weight kept between train-mode runs: replacing one conv's weight is seen; each output within
    float32's bound of its float64 plain conv (the GEMM sums C = 9 products and the bias)."""
    rng = np.random.default_rng(13)
    g = Graph("two")
    g.add_input("x", (None, 9, 5, 7))
    for k, m in enumerate((6, 11)):
        g.add_param(f"w{k}", _weight(rng, m, 9, (1, 1)))
        g.add_param(f"b{k}", rng.standard_normal(m).astype(np.float32))
        g.mark_output(g.add_node("Conv", ["x", f"w{k}", f"b{k}"], {}, name=f"c{k}").outputs[0])
    sess = runtime.Session(g)
    assert "MergedPointwiseStep" in {
        type(s).__name__ for s in sess._fast(training=True, keep_all=False).steps
    }
    x = rng.standard_normal((3, 9, 5, 7)).astype(np.float32)
    kw = dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), group=1, kernel_shape=None)
    f64 = np.float64
    for _ in range(2):
        got = sess.run({"x": x}, mode="train")
        for k, out in enumerate(g.outputs):
            w, b = g.params[f"w{k}"], g.params[f"b{k}"]
            exact = conv(x.astype(f64), w.astype(f64), b.astype(f64), **kw)
            mags = conv(np.abs(x).astype(f64), np.abs(w).astype(f64), np.abs(b).astype(f64), **kw)
            assert (np.abs(got[out] - exact) <= float32_bound(mags, 9)).all()
        g.set_param("w1", _weight(rng, 11, 9, (1, 1)))


def test_trainer_step_is_seen_by_the_next_train_forward():
    """A Session's train-mode forward after a Trainer step (SGD's new arrays through
    `set_param`) equals a fresh reference-plan session's on the updated graph (whole-model
    float32 tolerances: different algorithms and summation orders; BatchNorm normalizes the
    conv outputs to unit scale)."""
    seq = nn.Sequential(
        [
            nn.Conv(48, 3, padding=1),
            nn.BatchNorm(),
            nn.ReLU(),
            nn.Conv(48, 3, padding=1),  # Winograd, its U^T kept between runs
            nn.BatchNorm(),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(5),
        ]
    )
    g = seq.build((None, 3, 12, 12), seed=0)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((3, 3, 12, 12)).astype(np.float32)
    labels = np.array([0, 3, 4])
    sess = runtime.Session(g)
    before = sess.run({"input": x}, mode="train", seed=0)[g.outputs[0]]
    Trainer(g, loss="cross_entropy").step(x, labels)
    after = sess.run({"input": x}, mode="train", seed=0)[g.outputs[0]]
    want = runtime.Session(g.copy(), plan="reference").run({"input": x}, mode="train", seed=0)
    assert not np.allclose(before, after, rtol=1e-4, atol=1e-5)
    # Winograd F(4x4)'s rounding (up to ~40 u x sum |x||w|, 432 terms) is ~1e-5 absolute on
    # the BN-normalized unit-scale values, carried through the Linear layer's unit-scale sum:
    # atol 1e-4 (as in test_fast_plan's train-mode test).
    np.testing.assert_allclose(after, want[g.outputs[0]], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_set_param_with_the_same_array_edited_in_place_is_seen(training):
    """`set_param(name, g.params[name])` after an in-place edit: the kept prepared weight (keyed
    on the array object) is not reused; the run agrees bit for bit with a fresh session's."""
    rng = np.random.default_rng(3)
    x_shape = (3, 48, 9, 10)  # Winograd F(4x4), U^T kept
    g = _graph(x_shape, 40, (3, 3), (1, 1), (1, 1, 1, 1), rng)
    x = rng.standard_normal(x_shape).astype(np.float32)
    sess = runtime.Session(g)
    mode = "train" if training else "inference"
    before = sess.run({"x": x}, mode=mode)[g.outputs[0]]
    w = g.params["w"]
    w *= 2.0
    g.set_param("w", w)
    after = sess.run({"x": x}, mode=mode)[g.outputs[0]]
    fresh = runtime.Session(g).run({"x": x}, mode=mode)[g.outputs[0]]
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(after, fresh)
