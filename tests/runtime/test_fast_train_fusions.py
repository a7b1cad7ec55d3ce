"""Train mode plans the inference fusions whose forward is the same maths (no BatchNorm or
Dropout between): a tiling MaxPool fused into the conv before it (`CompiledPlan._fuse`) and the
batch-last hand-offs (`CompiledPlan._batch_last_handoffs`). Nobody else reads the fused-away
values: keep_all and the training step's recording forward (`FastBackprop`) compile with
fuse=False, graph outputs are never fused away.

Oracles: the same train-mode plan with the fusions off (`_tiling_pool` -> None: no fused pool,
hence no hand-off), the reference plan in train mode with the same seed (the Dropout mask drawn
from the same generator in the same order), and for the training step the plain `Backprop`, on
a LeNet-shaped net with odd sizes and a train-mode Dropout, batches 1, 3, 5, 33 (from
conv.BATCH_LAST_HANDOFF_MIN_IMAGES the hand-off runs), one session across batch sizes, split
over two threads."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.bench import suite
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import threads
from graphnet.runtime.gradients.backprop import Backprop
from graphnet.runtime.gradients.fast_plan import FastBackprop

# Logits of two convs (50 and 175 terms) and two Gemms (up to 4 * 3 * 5 = 60 and 20 terms),
# each weight scaled by 1 / sqrt(fan-in): O(1) values (a kept unit's x 1 / 0.75 too), float32
# sums in another order per plan: ~1e-6 relative; a wrong image, channel, pixel or mask would
# be off by O(0.1).
RTOL, ATOL = 1e-5, 1e-5
SEED = 11


def _net() -> Graph:
    """x (N, 2, 20, 28) -> conv 5x5 pads 2 (7 channels, ReLU) -> max 2x2 -> conv 5x5 (4
    channels, LeakyReLU) -> max 2x2 (3 x 5 out: odd) -> Flatten -> Gemm 20 (ReLU) -> Dropout
    0.25 -> Gemm 9."""
    rng = np.random.default_rng(3)
    g = Graph("lenet_dropout")
    g.add_input("x", (None, 2, 20, 28))

    def p(name, shape, fan):
        g.add_param(name, (rng.standard_normal(shape) / fan**0.5).astype(np.float32))

    p("w1", (7, 2, 5, 5), 50)
    p("b1", (7,), 1)
    p("w2", (4, 7, 5, 5), 175)
    p("b2", (4,), 1)
    p("fw1", (20, 60), 60)
    p("fb1", (20,), 1)
    p("fw2", (9, 20), 20)
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y = g.add_node("Conv", ["x", "w1", "b1"], {"pads": [2] * 4}, name="conv1").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu1").outputs[0]
    y = g.add_node("MaxPool", [y], pool, name="pool1").outputs[0]  # (N, 7, 10, 14)
    y = g.add_node("Conv", [y, "w2", "b2"], {}, name="conv2").outputs[0]  # (N, 4, 6, 10)
    y = g.add_node("LeakyRelu", [y], {"alpha": 0.1}, name="act2").outputs[0]
    y = g.add_node("MaxPool", [y], pool, name="pool2").outputs[0]
    f = g.add_node("Flatten", [y], {"axis": 1}, name="flat").outputs[0]
    y = g.add_node("Gemm", [f, "fw1", "fb1"], {"transB": 1}, name="fc1").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu3").outputs[0]
    y = g.add_node("Dropout", [y], {"drop_prob": 0.25}, name="drop").outputs[0]
    g.mark_output(g.add_node("Gemm", [y, "fw2"], {"transB": 1}, name="fc2").outputs[0])
    return g


def _x(batch: int) -> dict:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 2, 20, 28), np.float32)}


def _unfused(g: Graph, monkeypatch) -> runtime.Session:
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_tiling_pool", lambda self, v, n: None)
        sess = runtime.Session(g)
        sess._fast(training=True, keep_all=False)
    return sess


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in got:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


def _split(monkeypatch) -> None:
    monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
    monkeypatch.setattr(threads, "_cpu", lambda: -1)
    monkeypatch.setattr(threads, "_skip", 0)


def test_train_plan_fuses_as_inference():
    g = _net()
    sess = runtime.Session(g)
    train = sess._fast(training=True, keep_all=False).steps
    infer = sess._fast(training=False, keep_all=False).steps
    assert [s.op for s in train if s.op in ("Conv", "MaxPool")] == ["Conv", "Conv"]
    fused = {s.name: (s.algo, tuple(s.fused), getattr(s, "batch_last", None)) for s in train}
    assert fused["conv1"][1] == ("relu1", "pool1") and fused["conv2"][1] == ("act2", "pool2")
    assert fused["conv1"][2] and fused["conv2"][2]  # (conv2 -> Flatten -> fc1: batch-last)
    # (the same steps but the Dropout: a view at inference, the kernel drawing a mask in train)
    assert [(s.name, s.algo, s.fused) for s in train if s.name != "drop"] == [
        (s.name, s.algo, s.fused) for s in infer if s.name != "drop"
    ]
    for training in (True, False):  # keep_all returns every value: nothing fused away
        every = sess._fast(training=training, keep_all=True).steps
        assert [s.op for s in every].count("MaxPool") == 2
        assert not any(getattr(s, "batch_last", False) or s.fused for s in every)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 5, 33])
def test_train_outputs_equal_unfused_and_reference(batch, split, monkeypatch):
    if split:
        _split(monkeypatch)
    g = _net()
    fused = runtime.Session(g)
    plain = _unfused(g, monkeypatch)
    assert "MaxPool" in [s.op for s in plain._fast(training=True, keep_all=False).steps]
    x = _x(batch)
    got = fused.run(x, mode="train", seed=SEED)
    again = fused.run(x, mode="train", seed=SEED)  # (a replayed run: the arena's buffers)
    for k in got:
        np.testing.assert_array_equal(again[k], got[k])
    _close(got, plain.run(x, mode="train", seed=SEED))
    _close(got, runtime.Session(g, plan="reference").run(x, mode="train", seed=SEED))
    out = g.outputs[0]  # (the Dropout drew a mask: not the inference output)
    assert not np.allclose(got[out], fused.run(x)[out], rtol=RTOL, atol=ATOL)


def test_one_train_session_across_batch_sizes():
    g = _net()
    sess = runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    for batch in (1, 33, 1, 5, 3, 33):
        x = _x(batch)
        _close(sess.run(x, mode="train", seed=batch), ref.run(x, mode="train", seed=batch))
        _close(sess.run(x), ref.run(x))  # (the inference plan between: its own arena)


@pytest.mark.parametrize("batch", [1, 5])
def test_train_keep_all_returns_every_intermediate(batch):
    g = _net()
    x = _x(batch)
    got = runtime.Session(g).run(x, mode="train", seed=SEED, keep_all=True)
    want = runtime.Session(g, plan="reference").run(x, mode="train", seed=SEED, keep_all=True)
    conv1 = next(n for n in g.nodes if n.name == "conv1").outputs[0]
    assert conv1 in got and got[conv1].shape == (batch, 7, 20, 28)  # (the pre-pool output)
    _close(got, want)


def test_training_step_gradients_unchanged():
    """The training step's recording forward keeps every value (fuse=False): its gradients
    equal the plain Backprop's, and its tape holds the convs' pre-pool outputs."""
    g = _net()
    x = _x(5)
    wrt = [k for k in g.params]
    out = g.outputs[0]
    seeds = {out: np.random.default_rng(1).standard_normal((5, 9)).astype(np.float32)}
    fast, plain = FastBackprop(g), Backprop(g)
    tape = fast.forward(x, rng=np.random.default_rng(SEED))
    ref = plain.forward(x, rng=np.random.default_rng(SEED))
    conv1 = next(n for n in g.nodes if n.name == "conv1").outputs[0]
    assert tape.values[conv1].shape == (5, 7, 20, 28)
    _close({k: tape.values[k] for k in ref.values}, ref.values)
    # gradients: sums of up to a few hundred O(1) products in another order: 1e-4 relative
    got, want = fast.backward(tape, seeds, wrt), plain.backward(ref, seeds, wrt)
    for k in wrt:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("batch", [1, 5])
def test_lean_train_plan_fuses_and_agrees(batch):
    """memory="lean" plans train mode as inference (`_lean_plan` mirrors `_fuse`: here its
    budget keeps the pools apart in both modes): its train outputs equal the default plan's
    within rounding."""
    g = _net()
    lean = runtime.Session(g, memory="lean")
    steps = lean._fast(training=True, keep_all=False).steps
    infer = lean._fast(training=False, keep_all=False).steps
    assert [(s.name, s.algo, s.fused) for s in steps if s.name != "drop"] == [
        (s.name, s.algo, s.fused) for s in infer if s.name != "drop"
    ]
    x = _x(batch)
    _close(lean.run(x, mode="train", seed=SEED), runtime.Session(g).run(x, mode="train", seed=SEED))


def test_lean_lenet_fuses_its_pools_in_train_mode():
    """LeNet under the lean budget: both convs take their pools in train mode as at inference
    (the first as phasepool, its weight a prepared copy the budget granted)."""
    g = suite.build("lenet5")
    lean = runtime.Session(g, memory="lean")
    train = lean._fast(training=True, keep_all=False).steps
    infer = lean._fast(training=False, keep_all=False).steps
    assert [(s.name, s.algo, s.fused) for s in train] == [(s.name, s.algo, s.fused) for s in infer]
    assert [s.op for s in train].count("MaxPool") == 0
    x = {g.inputs[0]: np.random.default_rng(2).standard_normal((3, 1, 28, 28), np.float32)}
    _close(lean.run(x, mode="train"), runtime.Session(g, plan="reference").run(x, mode="train"))
