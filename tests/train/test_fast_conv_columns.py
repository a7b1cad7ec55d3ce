"""The recording conv forward (`fast_conv.conv_forward`, which keeps its im2col columns) and the
backward's dW from those columns: against the plain conv kernel and rule (the oracle), and
against the backward that builds the columns itself, on odd shapes and several batch chunks; a
tape whose columns' buffer a later forward reused falls back to building them."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from graphnet import nn
from graphnet.runtime.fast.threads import Parallel
from graphnet.runtime.gradients import Backprop, FastBackprop, fast_conv, fast_rules
from graphnet.runtime.gradients.conv import conv as conv_grad
from graphnet.runtime.kernels import get_kernel

# (x shape, w shape, strides, pads, dilations, group): 1-D, 2-D, 3-D; strided with asymmetric
# pads, dilated, grouped, a 1x1 with padding wider than its reach.
SHAPES = [
    ((5, 3, 11), (4, 3, 3), (2,), (1, 0), (1,), 1),
    ((7, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 0, 0, 1), (1, 2), 2),
    ((6, 3, 6, 5), (4, 3, 1, 1), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((5, 6, 7, 8), (6, 6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((3, 2, 5, 4, 6), (4, 2, 3, 2, 3), (1, 2, 1), (1, 0, 1, 1, 1, 0), (1, 1, 2), 1),
]
IDS = ["1d-strided", "2d-grouped-dilated", "1x1-wide-pads", "3x3-same", "3d"]

# float64: the fast path and the plain kernel sum the same products in another order (GEMMs over
# chunks of images against the plain kernel's own products): a few ulps of the largest sums.
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _attrs(w, strides, pads, dilations, group) -> dict:
    return dict(
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        group=group,
        kernel_shape=list(w.shape[2:]),
    )


@pytest.mark.parametrize("blocks", [False, True], ids=["whole-gemms", "gemm-blocks"])
@pytest.mark.parametrize("workspace", [64, 1 << 22], ids=["1-image-chunks", "whole-slices"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_and_kept_columns_match_the_oracle(shape, workspace, blocks, monkeypatch) -> None:
    from graphnet.runtime.fast import conv as fc

    xs, ws, strides, pads, dil, group = shape
    monkeypatch.setattr(fast_conv, "WORKSPACE_BYTES", workspace)  # chunks of one image, or few
    monkeypatch.setattr(fast_conv, "FORWARD_WORKSPACE_BYTES", workspace)  # (without keeping)
    # the forward's and dX's GEMMs in column blocks (`blocked_matmul`, on SkylakeX-family
    # OpenBLAS kernels), forced on these small shapes: blocks of 400 // (M x K) columns
    monkeypatch.setattr(fc, "BLOCKED_GEMMS", blocks)
    monkeypatch.setattr(fc, "SMALL_GEMM_MNK", 400 if blocks else fc.SMALL_GEMM_MNK)
    monkeypatch.setattr(fc, "GEMM_BLOCK_STEP", 1 if blocks else fc.GEMM_BLOCK_STEP)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    want = get_kernel("Conv", "c").fn(x, w, b, **_attrs(w, strides, pads, dil, group))
    y = np.empty(want.shape)
    par = Parallel(2)
    kept = fast_conv.conv_forward(
        x, w, b, y, strides=strides, pads=pads, dilations=dil, group=group, parallel=par
    )
    np.testing.assert_allclose(y, want, **TOL)
    assert [n0 for n0, _ in kept.chunks] == sorted({n0 for n0, _ in kept.chunks})
    assert kept.chunks[0][0] == 0 and kept.chunks[-1][1] == xs[0]
    dy = rng.standard_normal(want.shape)
    attrs = dict(strides=strides, pads=pads, dilations=dil, group=group, parallel=par)
    dx_k, dw_k = fast_conv.conv_backward(dy, x, w, need_dx=True, need_dw=True, kept=kept, **attrs)
    dx_b, dw_b = fast_conv.conv_backward(dy, x, w, need_dx=True, need_dw=True, **attrs)
    plain = conv_grad(dy, x, w, b, out=(want,), **_attrs(w, strides, pads, dil, group))
    np.testing.assert_allclose(dw_k, plain[1], **TOL)
    np.testing.assert_allclose(dw_b, plain[1], **TOL)
    np.testing.assert_allclose(dx_k, plain[0], **TOL)
    np.testing.assert_allclose(dx_b, plain[0], **TOL)
    # not keeping: the columns of each chunk in the scratch only, the same output, no record
    y2 = np.empty(want.shape)
    assert fast_conv.conv_forward(x, w, b, y2, keep=False, **attrs) is None
    np.testing.assert_allclose(y2, want, **TOL)


def _spy_kept(monkeypatch) -> list[bool]:
    """A list that records, for each conv_backward call, whether it got forward columns."""
    seen: list[bool] = []
    original = fast_rules.conv_backward

    def spy(*a, kept=None, **k):
        seen.append(kept is not None)
        return original(*a, kept=kept, **k)

    monkeypatch.setattr(fast_rules, "conv_backward", spy)
    return seen


def test_the_template_backward_reads_the_kept_columns(monkeypatch) -> None:
    """Every conv of the template CNN gets its forward's columns in the backward."""
    seen = _spy_kept(monkeypatch)
    g = nn.template(channels=(4, 6), hidden=(8,), drop=0.0).build((None, 1, 8, 8), seed=2)
    fb = FastBackprop(g)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    tape = fb.forward({"input": x}, rng=np.random.default_rng(1))
    out = g.outputs[0]
    fb.backward(tape, {out: np.ones_like(tape.values[out])}, [n for n in g.params][:4])
    fb.backward(tape, {out: np.ones_like(tape.values[out])}, list(g.params))
    assert seen and all(seen)


@pytest.mark.parametrize("limit", [0, 12_000, 1 << 40], ids=["none", "small-ones", "all"])
def test_which_convs_keep_their_columns(limit: int, monkeypatch) -> None:
    """The recording forward keeps a conv's columns when they fit in `KEEP_COLUMNS` bytes
    (batch 5, float32, 3x3 taps x positions x images x 4 bytes: 1 -> 4 channels on 8x8 11,520
    bytes, 4 -> 4 46,080, 4 -> 6 on 4x4 11,520, 6 -> 6 17,280); the others' backward builds
    them again. Either way the gradients are the plain
    rules' (float32, two summation orders)."""
    from graphnet.runtime.gradients import fast_plan

    monkeypatch.setattr(fast_plan, "KEEP_COLUMNS", limit)
    seen = _spy_kept(monkeypatch)
    g1 = nn.template(channels=(4, 6), hidden=(8,), drop=0.0).build((None, 1, 8, 8), seed=2)
    g2 = copy.deepcopy(g1)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    fb = FastBackprop(g1)
    tape = fb.forward({"input": x}, rng=np.random.default_rng(1))
    out = g1.outputs[0]
    seed = np.random.default_rng(2).standard_normal(tape.values[out].shape).astype(np.float32)
    got = fb.backward(tape, {out: seed}, list(g1.params))
    want_kept = {0: [False] * 4, 12_000: [True, False, True, False], 1 << 40: [True] * 4}[limit]
    assert seen == want_kept[::-1]  # the backward meets the convs last to first
    bp = Backprop(g2)
    want = bp.backward(
        bp.forward({"input": x}, rng=np.random.default_rng(1)), {out: seed}, list(g2.params)
    )
    for name, value in want.items():
        scale = float(np.abs(value).max())
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_a_stale_tape_builds_the_columns_again() -> None:
    """Two forwards, then the backward of the first: its columns' buffer now holds the second
    batch's, so its record is stale and the backward rebuilds them: the gradients are the plain
    rules' on the first batch."""
    net = nn.Sequential([nn.Conv(3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2)])
    g1 = net.build((None, 2, 5, 5), seed=4)
    g2 = copy.deepcopy(g1)
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((2, 4, 2, 5, 5)).astype(np.float32)
    fb = FastBackprop(g1)
    t1 = fb.forward({g1.inputs[0]: x1}, rng=np.random.default_rng(0))
    conv = next(n.name for n in g1.nodes if n.op == "Conv")
    assert t1.records[conv].current()
    fb.forward({g1.inputs[0]: x2}, rng=np.random.default_rng(0))
    assert not t1.records[conv].current()
    out = g1.outputs[0]
    seed = rng.standard_normal(t1.values[out].shape).astype(np.float32)
    wrt = [p for p in g1.params]
    got = fb.backward(t1, {out: seed}, wrt)
    bp = Backprop(g2)
    want = bp.backward(bp.forward({g2.inputs[0]: x1}), {out: seed}, wrt)
    for name in wrt:
        # float32, two summation orders; the second batch's columns would be off by O(1)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_one_and_two_conv_threads_give_the_same_step() -> None:
    """The convs' thread count (`conv_workers`) changes only the chunking: the same values and
    gradients up to float32 summation order (dW sums per-thread partial products)."""
    g1 = nn.template(channels=(4, 6), hidden=(8,), drop=0.0).build((None, 1, 8, 8), seed=3)
    g2 = copy.deepcopy(g1)
    x = np.random.default_rng(1).standard_normal((9, 1, 8, 8)).astype(np.float32)
    tapes, grads = [], []
    for g, workers in ((g1, 1), (g2, 2)):
        fb = FastBackprop(g, conv_workers=workers)
        t = fb.forward({"input": x}, rng=np.random.default_rng(2))
        out = g.outputs[0]
        seed = np.random.default_rng(4).standard_normal(t.values[out].shape).astype(np.float32)
        tapes.append(t)
        grads.append(fb.backward(t, {out: seed}, list(g.params)))
    for name, value in tapes[0].values.items():
        np.testing.assert_allclose(tapes[1].values[name], value, rtol=1e-5, atol=1e-6)
    for name, value in grads[0].items():
        scale = float(np.abs(value).max())
        np.testing.assert_allclose(grads[1][name], value, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("group", [1, 2])
def test_window_view_is_the_strided_window_and_read_only(group: int) -> None:
    """`_windows` (the ndarray constructor over the padded batch-last copy) reads the elements
    the definition names, view[g, c, t..., o..., n] = xt[g*C/g + c, o*stride + t*dilation, n],
    checked by fancy indexing, and cannot be written through (its windows overlap)."""
    xt = np.arange(4 * 9 * 8 * 3, dtype=np.float32).reshape(4, 9, 8, 3)
    kernel, strides, dilations, outs = (2, 3), (2, 1), (3, 2), (3, 4)
    view = fast_conv._windows(xt, group, kernel, strides, dilations, outs)
    g, c, t0, t1, o0, o1, n = np.indices(view.shape)
    want = xt[
        g * (4 // group) + c,
        o0 * strides[0] + t0 * dilations[0],
        o1 * strides[1] + t1 * dilations[1],
        n,
    ]
    np.testing.assert_array_equal(view, want)
    assert not view.flags.writeable
    with pytest.raises(ValueError):  # a window reaching past the array is refused, not read
        fast_conv._windows(xt, group, kernel, strides, dilations, (4, 4))
