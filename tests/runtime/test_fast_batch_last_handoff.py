"""The batch-last hand-off (`CompiledPlan._batch_last_handoffs`): a conv under a fused tiling
pool whose readers all take its output batch-last (LeNet's first, read by its second; its
second, read by a Flatten that only Gemms read) writes it as (C, H, W, N), held as its NCHW
view (`ConvStep.batch_last`), in train mode too; any other reader, a graph output or a keep_all
plan keeps NCHW.

Oracles: the same plan with the hand-off off (NCHW everywhere), the reference plan and
onnxruntime, on LeNet-shaped nets with odd sizes, at batches 1 and 3 (under
conv.BATCH_LAST_HANDOFF_MIN_IMAGES: NCHW), 5 and 33 (also split over two threads: each
thread's slice of the images is a strided run of the batch-last arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import conv as fc
from graphnet.runtime.fast import threads
from tests.helpers import export_checked, ort_run

# Logits of two convs (50 and 175 terms) and two Gemms (up to 4 * 3 * 4 = 48 and 20 terms),
# each weight scaled by 1 / sqrt(fan-in): O(1) values, float32 sums in another order per
# engine: ~1e-6 relative; a wrong image, channel or pixel would be off by O(0.1).
RTOL, ATOL = 1e-5, 1e-5


def _net(pads2=(0, 0, 0, 0), extra: str = "", trans_b: int = 1, hw=(16, 20)) -> Graph:
    """x (N, 2, *hw) -> conv 5x5 pads 2 (7 channels, ReLU) -> max 2x2 -> conv 5x5 `pads2` (4
    channels, ReLU) -> max 2x2 -> Flatten -> Gemm 20 (ReLU) -> Gemm 9. `extra`: "pool1_out"
    (the first pool's output is a graph output too), "relu_flat" (the Flatten is read by a
    Relu as well), "flatten2" (Flatten from axis 2: not a view of the batch-last array)."""
    rng = np.random.default_rng(5)
    g = Graph("lenet_like")
    g.add_input("x", (None, 2, *hw))

    def p(name, shape, fan):
        g.add_param(name, (rng.standard_normal(shape) / fan**0.5).astype(np.float32))

    p("w1", (7, 2, 5, 5), 50)
    p("b1", (7,), 1)
    p("w2", (4, 7, 5, 5), 175)
    p("b2", (4,), 1)
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y = g.add_node("Conv", ["x", "w1", "b1"], {"pads": [2] * 4}, name="conv1").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu1").outputs[0]
    y1 = g.add_node("MaxPool", [y], pool, name="pool1").outputs[0]  # (N, 7, 8, 10) at 16x20
    y = g.add_node("Conv", [y1, "w2", "b2"], {"pads": list(pads2)}, name="conv2").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu2").outputs[0]
    y = g.add_node("MaxPool", [y], pool, name="pool2").outputs[0]
    axis = 2 if extra == "flatten2" else 1
    f = g.add_node("Flatten", [y], {"axis": axis}, name="flat").outputs[0]
    k = g.values[f].shape[1]
    p("fw1", (20, k) if trans_b else (k, 20), k)
    p("fb1", (20,), 1)
    p("fw2", (9, 20), 20)
    y = g.add_node("Gemm", [f, "fw1", "fb1"], {"transB": trans_b}, name="fc1").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu3").outputs[0]
    g.mark_output(g.add_node("Gemm", [y, "fw2"], {"transB": 1}, name="fc2").outputs[0])
    if extra == "pool1_out":
        g.mark_output(y1)
    if extra == "relu_flat":
        g.mark_output(g.add_node("Relu", [f], {}, name="relu_flat").outputs[0])
    return g


def _handoffs(sess: runtime.Session) -> dict:
    steps = sess._fast(training=False, keep_all=False).steps
    return {s.name: s.batch_last for s in steps if hasattr(s, "batch_last")}


VARIANTS = [
    ((0, 0, 0, 0), "", 1, {"conv1": True, "conv2": True}),  # LeNet's shape
    ((1, 2, 1, 0), "", 1, {"conv1": True, "conv2": True}),  # conv2 pads: a padded copy
    ((0, 0, 0, 0), "", 0, {"conv1": True, "conv2": True}),  # fc1 without transB
    ((0, 0, 0, 0), "pool1_out", 1, {"conv1": False, "conv2": True}),
    ((0, 0, 0, 0), "relu_flat", 1, {"conv1": True, "conv2": False}),
    ((0, 0, 0, 0), "flatten2", 1, {"conv1": True, "conv2": False}),
]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 5, 33])
@pytest.mark.parametrize("pads2, extra, trans_b, planned", VARIANTS)
def test_handoff_matches_nchw_plan_reference_and_onnxruntime(
    pads2, extra, trans_b, planned, batch, split, monkeypatch
):
    if split:  # two threads over the images, each its own slice
        monkeypatch.setattr(fast_compile, "WORKERS", 2)  # (whatever the machine)
        monkeypatch.setattr(threads, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(threads, "_cpu", lambda: -1)
        monkeypatch.setattr(threads, "_skip", 0)
    g = _net(pads2, extra, trans_b)
    sess = runtime.Session(g)
    assert _handoffs(sess) == planned
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_batch_last_handoffs", lambda self: None)
        nchw = runtime.Session(g)
        assert not any(_handoffs(nchw).values())
    seen: list = []
    real = fc.images_innermost
    monkeypatch.setattr(fc, "images_innermost", lambda a: seen.append(real(a)) or seen[-1])
    x = np.random.default_rng(batch).standard_normal((batch, 2, 16, 20)).astype(np.float32)
    got = sess.run({"x": x})
    again = sess.run({"x": x})  # (a replayed run: the arena's buffers)
    # conv2 read conv1's output as it lies (unpadded) from the hand-off's batch size on, on
    # slices of the images large enough for its batch-last path (split: 2 and 3 of 5 are not)
    least = batch // 2 if split else batch
    read = (
        batch >= fc.BATCH_LAST_HANDOFF_MIN_IMAGES
        and least >= fc.BATCH_LAST_MIN_IMAGES
        and planned["conv1"]
        and not any(pads2)
    )
    assert (True in seen) is read
    for want in (nchw.run({"x": x}), runtime.Session(g, plan="reference").run({"x": x})):
        assert set(want) == set(got)
        for k in got:
            assert got[k].shape == want[k].shape
            np.testing.assert_array_equal(again[k], got[k], err_msg=k)
            np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)
    theirs = ort_run(export_checked(g), {"x": x})
    for k in got:
        np.testing.assert_allclose(got[k], theirs[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_handoff_shown_and_in_train_mode_not_with_keep_all():
    sess = runtime.Session(_net())
    assert "batch-last (images innermost) for conv2" in sess.describe()
    # fc1 took the Flatten in (`_flatten_into_gemm`): it reads conv2's output batch-last itself
    assert "batch-last (images innermost) for fc1" in sess.describe()
    train = sess._fast(training=True, keep_all=False).steps  # (the same forward)
    assert [s.name for s in train if getattr(s, "batch_last", False)] == ["conv1", "conv2"]
    for mode in (True, False):
        every = sess._fast(training=mode, keep_all=True).steps
        assert not any(getattr(s, "batch_last", False) for s in every)


def test_one_session_across_batch_sizes(monkeypatch):
    """One session run at 5, 2 (NCHW: under the hand-off's batch size), 33 and 5 again (the
    arena re-recorded for each new shape): the same outputs as the plan without the hand-off."""
    g = _net()
    sess = runtime.Session(g)
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_batch_last_handoffs", lambda self: None)
        nchw = runtime.Session(g)
    for batch in (5, 2, 33, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 16, 20)).astype(np.float32)
        got, want = sess.run({"x": x}), nchw.run({"x": x})
        for k in got:
            np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_a_conv_on_aliasing_planes_writes_nchw(monkeypatch):
    """32x32 input planes (4 KiB: conv1's batch-last path does not run on them, see
    conv._batch_last): conv1 writes NCHW although the plan hands it off (a strided batch-last
    write from its per-image path was slower), conv2 still writes batch-last for fc1; the
    outputs as the plan without the hand-off and the reference plan."""
    g = _net(hw=(32, 32))
    sess = runtime.Session(g)
    assert _handoffs(sess) == {"conv1": True, "conv2": True}
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_batch_last_handoffs", lambda self: None)
        nchw = runtime.Session(g)
    seen: list = []
    real = fc.writes_batch_last
    monkeypatch.setattr(fc, "writes_batch_last", lambda a: seen.append(real(a)) or seen[-1])
    x = np.random.default_rng(6).standard_normal((8, 2, 32, 32)).astype(np.float32)
    got = sess.run({"x": x})
    assert seen == [False, True]  # conv1, conv2
    for want in (nchw.run({"x": x}), runtime.Session(g, plan="reference").run({"x": x})):
        for k in got:
            np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)
