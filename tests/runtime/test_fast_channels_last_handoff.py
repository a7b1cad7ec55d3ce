"""The channels-last hand-off between Winograd convs (`CompiledPlan._channels_last_handoffs`): a
2-D Winograd conv whose every reader is another one (as its input or its residual) writes its
output as (N, H, W, M), held as its NCHW view (`ConvStep.channels_last`), when it runs
Winograd on the batch; the readers' Winograd paths take such an input, output and residual as
they lie (`conv.is_channels_last`), any other algorithm a reader falls back to reads the view
as a strided input.

Oracles: the plain conv in float64 with Winograd's rounding bound (`winograd_bound`) for the
kernels on every layout combination (NaN-filled scratch, odd shapes, cropped and exact tiles,
F(2x2) and F(4x4), U and U^T); for plans, the same fast plan with the hand-off off (the same
float32 operations in the same order: equal bits), the reference plan and onnxruntime, on one
session across batches 1 -> 3 -> 1 -> 2 (a reader that falls back at batch 1); NCHW under
conv.CHANNELS_LAST_MIN_IMAGES images."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast import conv as fast_conv
from graphnet.runtime.kernels.conv import conv
from tests.helpers import export_checked, ort_run
from tests.oracles import winograd_bound
from tests.runtime.test_fast_winograd import winograd_case


def _cl(a: np.ndarray) -> np.ndarray:
    """`a` (N, C, H, W) as the NCHW view of a contiguous channels-last copy."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


WINOGRAD_SHAPES = [  # (batch, c, mo, hw, pads, algo)
    (1, 24, 40, (9, 11), (1, 1, 1, 1), "winograd-f4"),  # cropped tiles
    (3, 33, 24, (8, 8), (1, 1, 1, 1), "winograd-f4"),  # exact tiles
    (2, 25, 31, (7, 6), (1, 0, 2, 1), "winograd-f4"),  # asymmetric pads
    (3, 40, 28, (6, 7), (1, 1, 1, 1), "winograd-f2"),  # 6x7 out: F(2x2) crops a column
]


def _layout_cases() -> list[tuple]:
    """Each shape with each layout (x channels-last, output channels-last, the residual's):
    the output over the residual's own buffer ("out") only where the plan does that
    (conv.overwrites_residual: where the copy out adds it)."""
    cases = []
    for batch, c, mo, hw, pads, algo in WINOGRAD_SHAPES:
        spec = fast_conv.ConvSpec((3, 3), (1, 1), pads, (1, 1), 1, c, mo)
        out = (batch, mo, hw[0] + pads[0] + pads[2] - 2, hw[1] + pads[1] + pads[3] - 2)
        for layout in [(1, 1, "cl"), (1, 0, "nchw"), (0, 1, "nchw"), (1, 1, "out")]:
            if layout[2] != "out" or fast_conv.overwrites_residual(algo, spec, out):
                cases.append((batch, c, mo, hw, pads, algo, *layout))
    return cases


@pytest.mark.parametrize("u_transposed", [True, False])
@pytest.mark.parametrize(
    ("batch", "c", "mo", "hw", "pads", "algo", "x_cl", "out_cl", "res"), _layout_cases()
)
def test_winograd_takes_and_writes_channels_last(
    batch, c, mo, hw, pads, algo, x_cl, out_cl, res, u_transposed
):
    """`_winograd` with a channels-last input, output or residual (`res` "out": the output
    written over the residual's own channels-last buffer, as ConvStep's overwrite does) against
    the float64 plain conv + bias + residual, then ReLU."""
    x, w, b, residual, spec, wp, sc = winograd_case(
        batch, c, mo, hw, pads, algo, u_transposed, seed=batch * 100 + c
    )
    ho, wo = residual.shape[2:]
    out = np.full((batch, mo, ho, wo), np.nan, np.float32)
    out = _cl(out) if out_cl else out
    if res == "out":  # the output over the residual's buffer
        np.copyto(out, residual)
        r = out
    else:
        r = _cl(residual) if res == "cl" else residual
    epi = fast_conv.Epilogue(bias=b, residual=lambda: r, activation=("relu",))
    xx = _cl(x) if x_cl else x
    assert fast_conv.is_channels_last(xx) == bool(x_cl)
    assert fast_conv.is_channels_last(out) == bool(out_cl)
    fast_conv.conv_chunked(algo, spec, xx, wp, out, epi, sc, u_transposed=u_transposed)
    kw = dict(strides=(1, 1), pads=pads, dilations=(1, 1), group=1, kernel_shape=None)
    f64 = np.float64
    exact = conv(x.astype(f64), w.astype(f64), b.astype(f64), **kw) + residual
    extra = np.abs(b.astype(f64))[:, None, None] + np.abs(residual.astype(f64))
    bound = winograd_bound(x, w, pads, int(algo[-1]), extra)
    assert (np.abs(out - np.maximum(exact, 0)) <= bound).all()
    assert fast_conv.is_channels_last(out) == bool(out_cl)  # written in place, not rebound


def _net(hw: int, pads3: int) -> Graph:
    """x (N, 64, hw, hw) -> a = relu(conv1 3x3 pads 1) -> b = relu(conv2(a) 3x3 pads 1 + a) ->
    conv3 3x3 `pads3` (48 channels) -> y, and y's MaxPool 1x1 as a second output. 64 channels:
    Winograd from 16 tile columns (conv.MIN_WINOGRAD_COLUMNS); weights scaled by 1 / sqrt(fan
    in): O(1) values at every layer."""
    rng = np.random.default_rng(hw + pads3)
    g = Graph("wino_chain")
    g.add_input("x", (None, 64, hw, hw))

    def p(name, shape, fan):
        g.add_param(name, (rng.standard_normal(shape) / fan**0.5).astype(np.float32))

    for i, mo in ((1, 64), (2, 64), (3, 48)):
        p(f"w{i}", (mo, 64, 3, 3), 576)
        p(f"b{i}", (mo,), 1)
    same = {"pads": [1] * 4}
    a = g.add_node("Conv", ["x", "w1", "b1"], same, name="conv1").outputs[0]
    a = g.add_node("Relu", [a], {}, name="relu1").outputs[0]
    y = g.add_node("Conv", [a, "w2", "b2"], same, name="conv2").outputs[0]
    y = g.add_node("Add", [y, a], {}, name="add").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu2").outputs[0]
    y = g.add_node("Conv", [y, "w3", "b3"], {"pads": [pads3] * 4}, name="conv3").outputs[0]
    g.mark_output(y)
    pooled = g.add_node("MaxPool", [y], {"kernel_shape": [1, 1]}, name="pool").outputs[0]
    g.mark_output(pooled)
    return g


# Three chained 576-term convs of O(1) values: F(4x4)'s float32 rounding is ~1e-4 relative to
# the transformed tiles (winograd.py), the reference plan's direct sums ~1e-6: 1e-3 covers
# both with margin; a wrong pixel, channel or image would be off by O(0.1-1).
RTOL, ATOL = 1e-3, 1e-3


@pytest.mark.parametrize(("hw", "pads3"), [(13, 1), (16, 0)])
def test_winograd_chain_hands_off_channels_last_across_batches(hw, pads3, monkeypatch):
    """conv1 (read by conv2 as input and residual) and conv2 (read by conv3) hand off
    channels-last; conv3 (a graph output) writes NCHW. At hw 16 every conv's tiles are exact
    (conv2 writes over a's buffer) and conv3 (pads 0: 14x14) runs F(4x4) on 16 columns at batch
    1; at hw 13 (4x4 tiles, cropped) conv3 (pads 1) too. With MIN_WINOGRAD_COLUMNS 17, the
    batch-1 runs fall back to colstack (conv1 and conv2 then write NCHW), batch 3 and 2 run
    Winograd: one session runs 1 -> 3 -> 1 -> 2, each run equal to the plan without the
    hand-off, the reference plan and onnxruntime (CHANNELS_LAST_MIN_IMAGES 1: every Winograd
    run hands off)."""
    monkeypatch.setattr(fast_conv, "MIN_WINOGRAD_COLUMNS", 17)
    monkeypatch.setattr(fast_conv, "CHANNELS_LAST_MIN_IMAGES", 1)
    g = _net(hw, pads3)
    fast = runtime.Session(g)
    handoff = fast_compile.CompiledPlan._channels_last_handoffs
    monkeypatch.setattr(fast_compile.CompiledPlan, "_channels_last_handoffs", lambda self: None)
    plain = runtime.Session(g)
    plain.run({"x": np.zeros((1, 64, hw, hw), np.float32)})  # (its plan built without it)
    monkeypatch.setattr(fast_compile.CompiledPlan, "_channels_last_handoffs", handoff)
    ref = runtime.Session(g, plan="reference")
    model = export_checked(g)
    rng = np.random.default_rng(hw)
    for batch in (1, 3, 1, 2):
        x = rng.standard_normal((batch, 64, hw, hw)).astype(np.float32)
        got = fast.run({"x": x})
        plan = fast._fast(training=False, keep_all=False)
        steps = {s.name: s for s in plan.steps}
        assert steps["conv1"].channels_last and steps["conv2"].channels_last
        assert not steps["conv3"].channels_last
        winograd = batch > 1
        assert steps["conv3"].ran.startswith("winograd") == winograd
        want = plain.run({"x": x})
        oracle = ref.run({"x": x})
        onnx = ort_run(model, {"x": x})
        for name, y in got.items():
            assert y.shape == oracle[name].shape
            assert y.flags.c_contiguous  # graph outputs NCHW
            np.testing.assert_array_equal(y, want[name])
            np.testing.assert_allclose(y, oracle[name], rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(y, onnx[name], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("least", [1, 2])
def test_handoff_layouts_the_winograd_kernels_see(least, monkeypatch):
    """What `_winograd` gets on each run of one session (every conv runs Winograd: 16 tile
    columns at batch 1): from CHANNELS_LAST_MIN_IMAGES images conv1 reads NCHW and writes
    channels-last, conv2 reads and writes channels-last, conv3 reads channels-last and writes
    NCHW (a graph output); under it every value is NCHW."""
    monkeypatch.setattr(fast_conv, "CHANNELS_LAST_MIN_IMAGES", least)
    seen: list[tuple[bool, bool, int]] = []
    winograd = fast_conv._winograd

    def spy(m, spec, x, wp, out, *args, **kw):
        seen.append((fast_conv.is_channels_last(x), fast_conv.is_channels_last(out), spec.c_out))
        winograd(m, spec, x, wp, out, *args, **kw)

    monkeypatch.setattr(fast_conv, "_winograd", spy)
    g = _net(16, 0)
    s = runtime.Session(g)
    ref = runtime.Session(g, plan="reference")
    rng = np.random.default_rng(0)
    for batch in (3, 1, 2, 1):
        seen.clear()
        x = rng.standard_normal((batch, 64, 16, 16)).astype(np.float32)
        got = s.run({"x": x})
        if batch >= least:
            assert set(seen) == {(False, True, 64), (True, True, 64), (True, False, 48)}
        else:
            assert set(seen) == {(False, False, 64), (False, False, 48)}
        oracle = ref.run({"x": x})
        for name, y in got.items():
            np.testing.assert_allclose(y, oracle[name], rtol=RTOL, atol=ATOL)


def test_no_handoff_to_other_readers_or_in_training():
    """A Winograd conv read by a non-Winograd step (a MaxPool), one whose output is a graph
    output, and every conv of a train-mode plan keep NCHW."""
    g = _net(16, 1)
    # conv3's output is a graph output and read by the MaxPool
    plan = runtime.Session(g)._fast(training=False, keep_all=False)
    steps = {s.name: s for s in plan.steps}
    assert steps["conv1"].channels_last and steps["conv2"].channels_last
    assert not steps["conv3"].channels_last
    train = runtime.Session(g)._fast(training=True, keep_all=False)
    assert not any(getattr(s, "channels_last", False) for s in train.steps)


def _block(norm: str | None = None) -> Graph:
    """x (N, 64, 16, 16) -> a = relu(conv1) -> relu(conv2) -> relu(conv3 + a) -> MaxPool 1x1
    (ResNet's basic block after its first conv: the residual a dies at conv3); with `norm`, that
    norm (its output read by a Mul, so it runs in place) instead of the MaxPool."""
    rng = np.random.default_rng(7)
    g = Graph("wino_block")
    g.add_input("x", (None, 64, 16, 16))
    for i in (1, 2, 3):
        g.add_param(f"w{i}", (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32))
        g.add_param(f"b{i}", rng.standard_normal(64).astype(np.float32))
    same = {"pads": [1] * 4}
    a = g.add_node("Conv", ["x", "w1", "b1"], same, name="conv1").outputs[0]
    a = g.add_node("Relu", [a], {}, name="relu1").outputs[0]
    y = g.add_node("Conv", [a, "w2", "b2"], same, name="conv2").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu2").outputs[0]
    y = g.add_node("Conv", [y, "w3", "b3"], same, name="conv3").outputs[0]
    y = g.add_node("Add", [y, a], {}, name="add").outputs[0]
    y = g.add_node("Relu", [y], {}, name="relu3").outputs[0]
    if norm is None:
        g.mark_output(g.add_node("MaxPool", [y], {"kernel_shape": [1, 1]}, name="pool").outputs[0])
        return g
    g.add_param("s", rng.standard_normal(64).astype(np.float32))
    g.add_param("bb", rng.standard_normal(64).astype(np.float32))
    ins, attrs = [y, "s", "bb"], {"num_groups": 8} if norm == "GroupNormalization" else {}
    if norm == "BatchNormalization":
        g.add_param("mu", rng.standard_normal(64).astype(np.float32))
        g.add_param("var", (rng.random(64) + 0.5).astype(np.float32))
        ins += ["mu", "var"]
    y = g.add_node(norm, ins, attrs, name="norm").outputs[0]
    g.add_param("two", np.full((1,), 2.0, np.float32))
    g.mark_output(g.add_node("Mul", [y, "two"], {}, name="mul").outputs[0])
    return g


@pytest.mark.parametrize("fallback", [True, False])
def test_a_conv_writes_over_a_channels_last_residual_only_by_winograd(fallback, monkeypatch):
    """conv3 dies with its residual a (conv1's channels-last output) and from 8 images both an
    exact Winograd and colstack could write their output over a's buffer
    (conv.overwrites_residual). Neither does: conv3's reader (a MaxPool) takes NCHW, so its
    output must not be channels-last (see the norms test below), and colstack writes NCHW (a
    strided write into a's buffer); conv3 takes an NCHW buffer of its own. Outputs equal the
    reference plan's either way."""
    from graphnet.runtime.fast.steps import linear

    geometry = linear.ConvStep._geometry

    def forced(self, shape, training):
        out_shape, flops, algo = geometry(self, shape, training)
        return out_shape, flops, "colstack" if fallback and self.name == "conv3" else algo

    monkeypatch.setattr(linear.ConvStep, "_geometry", forced)
    g = _block()
    x = np.random.default_rng(1).standard_normal((8, 64, 16, 16)).astype(np.float32)
    s = runtime.Session(g)
    got = s.run({"x": x})
    steps = {st.name: st for st in s._fast(training=False, keep_all=False).steps}
    assert steps["conv3"].overwrite
    assert steps["conv3"].ran == ("colstack" if fallback else "winograd-f4")
    assert steps["conv1"].ran.startswith("winograd") and steps["conv1"].channels_last
    oracle = runtime.Session(g, plan="reference").run({"x": x})
    for name, y in got.items():
        np.testing.assert_allclose(y, oracle[name], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "norm", ["InstanceNormalization", "GroupNormalization", "BatchNormalization"]
)
def test_a_conv_over_a_channels_last_residual_read_by_an_in_place_norm(norm):
    """relu(conv3(relu(conv2(a))) + a), a = relu(conv1(x)) channels-last (only Winograd convs
    read it), then a norm that runs in place (its output read by a Mul, not a graph output):
    conv3 may write over a's buffer, but its output then would be channels-last, and the norm
    writes through a reshape of its NCHW view (a copy for that layout: the result was lost,
    |fast - reference| up to 27). conv3 is not marked channels-last (a norm reads it), so it
    writes NCHW into a buffer of its own. Oracle: the reference plan (Winograd's float32
    rounding: RTOL / ATOL), batch 1 -> 2 -> 8 on one session."""
    g = _block(norm)
    fast, ref = runtime.Session(g), runtime.Session(g, plan="reference")
    for batch in (1, 2, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 64, 16, 16)).astype(np.float32)
        got, want = fast.run({"x": x}), ref.run({"x": x})
        for name, v in got.items():
            np.testing.assert_allclose(
                v, want[name], rtol=RTOL, atol=ATOL, err_msg=f"batch {batch}"
            )
    steps = {st.name: st for st in fast._fast(training=False, keep_all=False).steps}
    assert steps["conv1"].channels_last and not steps["conv3"].channels_last
