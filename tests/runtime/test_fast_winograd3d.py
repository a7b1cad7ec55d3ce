"""The 3x3x3 conv as a 2-D Winograd over (H, W) with the temporal taps in the GEMM's depth
(`runtime/fast/conv.py`, `_winograd3d`): against the plain conv in float64 on odd shapes (odd
frames, heights and widths, asymmetric pads, cropped tiles, batch 1 and > 1) with every
epilogue, on a NaN-filled scratch; the algorithm `choose` gives 3-D convs; a whole 5-D net
against the reference plan and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.runtime.fast import conv as fast_conv
from graphnet.runtime.fast import memory as fast_memory
from graphnet.runtime.kernels.conv import conv
from tests.oracles import float32_bound, winograd_bound


def _bound(x, w, pads, m, extra):
    """The float32 rounding bound of the 3-D form: each output frame t is a 2-D Winograd conv
    of the kt C channels (frame t + dt of the temporally padded input, channel c) with the
    kernel w[:, c, dt] (that is the GEMM's depth), so `winograd_bound` of that 2-D conv applies
    (its C-term sum then has kt C terms)."""
    n, c = x.shape[:2]
    kt = w.shape[2]
    xt = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[3]), (0, 0), (0, 0)))
    to = xt.shape[2] - kt + 1
    frames = np.stack([xt[:, :, t : t + kt] for t in range(to)], axis=1)  # (n, to, C, kt, H, W)
    x2 = frames.transpose(0, 1, 3, 2, 4, 5).reshape(n * to, kt * c, *x.shape[3:])
    w2 = w.transpose(0, 2, 1, 3, 4).reshape(w.shape[0], kt * c, 3, 3)
    b2 = winograd_bound(x2, w2, (pads[1], pads[2], pads[4], pads[5]), m)
    b2 = b2.reshape(n, to, *b2.shape[1:]).transpose(0, 2, 1, 3, 4)
    # (the bound is linear in the magnitudes plus `extra`: the 2-D one with extra 0, plus
    # extra times the same gamma factor, which float32_bound(extra) gives alone)
    terms = kt * c + 2 * (m + 2) + 2 * 3 + 2 * (m + 2) + 2
    return b2 + float32_bound(extra, terms)


def _case(batch, c, mo, size, pads, algo, kt, seed):
    """A kt x 3 x 3 conv's random x, w, bias and residual (`seed`: batch * seed + c), its spec and
    prepared weight, a NaN-filled scratch, the Epilogue (bias, residual, ReLU) and a NaN-filled
    output."""
    rng = np.random.default_rng(batch * seed + c)
    x = rng.standard_normal((batch, c, *size)).astype(np.float32)
    w = rng.standard_normal((mo, c, kt, 3, 3)).astype(np.float32)
    b = rng.standard_normal(mo).astype(np.float32)
    ks = (kt, 3, 3)
    outs = tuple(size[i] + pads[i] + pads[3 + i] - ks[i] + 1 for i in range(3))
    residual = rng.standard_normal((batch, mo, *outs)).astype(np.float32)
    spec = fast_conv.ConvSpec(ks, (1, 1, 1), pads, (1, 1, 1), 1, c, mo)
    wp = fast_conv.prepare_weight(algo, w, 1, np.float32)
    sc = fast_memory.Scratch()
    sc.take(0, 1 << 20, np.float32)
    sc.reset()
    sc._buf.view(np.float32)[:] = np.nan
    epi = fast_conv.Epilogue(bias=b, residual=lambda: residual, activation=("relu",))
    out = np.full((batch, mo, *outs), np.nan, np.float32)
    return x, w, b, residual, spec, wp, sc, epi, out


def _assert_within_bound(out, x, w, b, residual, pads, m):
    """`out` is ReLU(conv(x, w) + b + residual) of the float64 plain conv within F(m)'s float32
    bound (`_bound`, with |b| + |residual| added before the last rounding)."""
    f64 = np.float64
    kw = dict(strides=(1, 1, 1), pads=pads, dilations=(1, 1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(f64), w.astype(f64), b.astype(f64), **kw) + residual
    extra = np.abs(b.astype(f64))[:, None, None, None] + np.abs(residual.astype(f64))
    assert (np.abs(out - np.maximum(exact, 0)) <= _bound(x, w, pads, m, extra)).all()


@pytest.mark.parametrize("gather", ["channels_last", "take", "copy"])
@pytest.mark.parametrize("row_blocks", [True, False])
@pytest.mark.parametrize(
    ("batch", "c", "mo", "size", "pads", "algo"),
    [
        (1, 3, 16, (5, 9, 11), (1, 1, 1, 1, 1, 1), "wino3d-f4"),  # 3 channels, cropped tiles
        (3, 5, 7, (3, 7, 6), (0, 1, 2, 1, 0, 1), "wino3d-f4"),  # asymmetric, no temporal pad
        (2, 8, 12, (4, 8, 8), (1, 1, 1, 1, 1, 1), "wino3d-f4"),  # exact tiles
        (2, 6, 9, (3, 5, 5), (2, 0, 1, 0, 1, 1), "wino3d-f2"),  # a temporal pad of 2
        (1, 16, 8, (1, 4, 6), (1, 1, 1, 1, 1, 1), "wino3d-f2"),  # one frame
        (2, 4, 6, (6, 5, 7), (2, 1, 1, 2, 1, 1), "wino3d-f4(5)"),  # 5x3x3
        (1, 5, 3, (4, 6, 5), (0, 1, 1, 0, 1, 1), "wino3d-f4(1)"),  # 1x3x3: per frame
        (3, 3, 4, (5, 4, 4), (1, 0, 0, 0, 0, 0), "wino3d-f2(2)"),  # 2x3x3, no spatial pads
    ],
)
def test_winograd3d_matches_the_plain_conv(
    batch, c, mo, size, pads, algo, row_blocks, gather, monkeypatch
):
    takes = _gather(gather, monkeypatch)
    monkeypatch.setattr(fast_conv, "WINOGRAD_GEMM_MAX_MNK", 0 if row_blocks else 1 << 40)
    monkeypatch.setattr(fast_conv, "BLOCKED_GEMMS", True)
    monkeypatch.setattr(fast_conv, "WINOGRAD_GEMM_MIN_ROWS", 5)
    # with the row blocks, the transforms in blocks of 64 columns too (blocked_matmul)
    monkeypatch.setattr(fast_conv, "SMALL_GEMM_MNK", 36 * 64 if row_blocks else 1 << 40)
    algo, _, taps = algo.partition("(")  # "wino3d-f4(5)": a 5x3x3 kernel
    kt = int(taps.rstrip(")") or 3)
    x, w, b, residual, spec, wp, sc, epi, out = _case(batch, c, mo, size, pads, algo, kt, 1000)
    # batch chunks of one image when the workspace is small (the loop over chunks)
    monkeypatch.setattr(fast_conv, "WINOGRAD_WORKSPACE_BYTES", 1 if batch > 2 else 2 << 20)
    fast_conv.conv_chunked(algo, spec, x, wp, out, epi, sc)
    assert bool(takes) == (gather == "take")  # (the gather the case claims to test ran)
    _assert_within_bound(out, x, w, b, residual, pads, int(algo[-1]))


def _gather(gather: str, monkeypatch) -> list:
    """Forces `_winograd3d`'s tile gather: "channels_last" (from 0 channels: no volume's bytes a
    multiple of 2^40), or NCHW by "take" (`np.take` over `_tile_row_index`, any tiles across) or
    the strided "copy"; returns the list of the index geometries the takes used."""
    cl = gather == "channels_last"
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_CHANNELS_LAST_MIN", 0 if cl else 1 << 30)
    monkeypatch.setattr(fast_conv, "WINOGRAD_ALIASED_PLANE_BYTES", 1 << 40)
    take = gather == "take"
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_TAKE_MAX_TILES_ACROSS", 1 << 30 if take else 0)
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_ONE_CHUNK_ONLY", False)  # (takes in chunks too)
    takes: list = []
    index = fast_conv._tile_row_index

    def spy(*args):
        takes.append(args)
        return index(*args)

    monkeypatch.setattr(fast_conv, "_tile_row_index", spy)
    return takes


def test_tile_row_index_is_the_strided_gather():
    """`_tile_row_index` at row offset i picks what the strided tile view holds (odd sizes,
    batch 2): the flat indices of xp[n, c, f, th m + i, tw m + j] in (j, c, n, f, th, tw)."""
    shape, m, th, tw = (2, 3, 5, 11, 12), 4, 2, 2
    xp = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    s = xp.strides
    t = m + 2
    tiles = np.lib.stride_tricks.as_strided(
        xp, (2, 3, 5, th, tw, t, t), (s[0], s[1], s[2], m * s[3], m * s[4], s[3], s[4])
    ).transpose(5, 6, 1, 0, 2, 3, 4)
    idx = fast_conv._tile_row_index(shape, m, th, tw)
    for i in range(t):
        got = np.take(xp.reshape(-1)[i * shape[4] :], idx, mode="wrap")
        np.testing.assert_array_equal(got, tiles[i].reshape(-1))


def test_winograd3d_without_bias_or_activation():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3, 3)).astype(np.float32)
    pads = (1,) * 6
    spec = fast_conv.ConvSpec((3, 3, 3), (1, 1, 1), pads, (1, 1, 1), 1, 4, 5)
    out = np.empty((2, 5, 3, 6, 7), np.float32)
    wp = fast_conv.prepare_weight("wino3d-f4", w, 1, np.float32)
    fast_conv.conv_chunked(
        "wino3d-f4", spec, x, wp, out, fast_conv.Epilogue(), fast_memory.Scratch()
    )
    kw = dict(strides=(1, 1, 1), pads=pads, dilations=(1, 1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(np.float64), w.astype(np.float64), None, **kw)
    assert (np.abs(out - exact) <= _bound(x, w, pads, 4, 0.0)).all()


@pytest.mark.parametrize(
    ("kernel", "strides", "dilations", "group", "out", "want"),
    [
        ((3, 3, 3), (1, 1, 1), (1, 1, 1), 1, (8, 32, 32), "wino3d-f4"),
        ((3, 3, 3), (1, 1, 1), (1, 1, 1), 1, (4, 3, 8), "wino3d-f2"),  # under 4 rows
        ((5, 3, 3), (1, 1, 1), (1, 1, 1), 1, (8, 16, 16), "wino3d-f4"),
        ((3, 3, 3), (1, 2, 2), (1, 1, 1), 1, (8, 16, 16), "im2col"),
        ((3, 3, 3), (1, 1, 1), (2, 1, 1), 1, (8, 16, 16), "im2col"),
        ((3, 3, 3), (1, 1, 1), (1, 1, 1), 2, (8, 16, 16), "im2col"),
        ((1, 3, 3), (1, 1, 1), (1, 1, 1), 1, (8, 16, 16), "im2col"),  # 4 channels, 1 tap
        ((2, 3, 3), (1, 1, 1), (1, 1, 1), 1, (8, 16, 16), "im2col"),
        ((3, 5, 5), (1, 1, 1), (1, 1, 1), 1, (8, 16, 16), "im2col"),
    ],
)
def test_choose_runs_3x3x3_stride_1_convs_as_winograd3d(
    kernel, strides, dilations, group, out, want
):
    pads = tuple(k // 2 for k in kernel) * 2
    spec = fast_conv.ConvSpec(kernel, strides, pads, dilations, group, 4, 8)
    assert fast_conv.choose(spec, out)[0] == want
    # 1 or 2 temporal taps from WINOGRAD3D_FEW_TAPS_MIN_CHANNELS input channels
    wide = fast_conv.ConvSpec(kernel, strides, pads, dilations, group, 32, 8)
    if kernel[0] < 3 and kernel[1:] == (3, 3):
        assert fast_conv.choose(wide, out)[0] == "wino3d-f4"


@pytest.mark.parametrize("batch", [1, 3])
def test_video3d_matches_the_reference_plan_and_onnxruntime(batch):
    """The suite's video3d (three 3x3x3 convs, BN folded, ReLU, 3-D pools) on the fast plan:
    every conv runs wino3d; outputs against the reference plan and onnxruntime (the softmax's
    probabilities: well conditioned; the tolerance covers F(4x4)'s float32 rounding, ~1e-5 of
    the logits' scale, through three convs)."""
    ort = pytest.importorskip("onnxruntime")
    from graphnet import runtime
    from graphnet.bench import suite
    from graphnet.onnx_io.export import to_onnx
    from graphnet.passes.manager import optimize

    g = optimize(suite.build("video3d"), "inference")[0]
    name = g.inputs[0]
    x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 32, 32)).astype(np.float32)
    sess = runtime.Session(g)
    got = sess.run({name: x})
    algos = {s.algo for s in sess._fast(training=False, keep_all=False).steps if s.op == "Conv"}
    assert algos == {"wino3d-f4"}
    want = runtime.Session(g, plan="reference").run({name: x})
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5)
    model = to_onnx(g)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (o,) = ref.run(None, {name: x})
    np.testing.assert_allclose(next(iter(got.values())), o, rtol=1e-4, atol=1e-5)


def test_winograd3d_gemms_split_over_threads_match_one_thread():
    """One image with `split` (ConvStep's batch-1 path for a large conv): the GEMMs of each
    block split by tile position over two threads; the same result as one thread's."""
    from graphnet.runtime.fast.threads import Parallel

    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 6, 5, 9, 10)).astype(np.float32)
    w = rng.standard_normal((11, 6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 1, 6, 11)
    wp = fast_conv.prepare_weight("wino3d-f4", w, 1, np.float32)
    one, two = (np.empty((1, 11, 5, 9, 10), np.float32) for _ in range(2))
    epi = fast_conv.Epilogue(bias=b, activation=("relu",))
    fast_conv.conv_chunked("wino3d-f4", spec, x, wp, one, epi, fast_memory.Scratch())
    par = Parallel(2)

    def split(n, fn, flops):  # always past the threads' thresholds
        par(n, fn, 1e12)

    split.workers = 2  # type: ignore[attr-defined]
    fast_conv.conv_chunked("wino3d-f4", spec, x, wp, two, epi, par.scratch[0], split=split)
    np.testing.assert_array_equal(one, two)


def _conv_pool3d(c, size, m, pool, act, bias):
    from graphnet.ir import Graph

    rng = np.random.default_rng(c * 100 + m)
    g = Graph("conv_pool3d")
    g.add_input("x", (None, c, *size))
    g.add_param("w", (rng.standard_normal((m, c, 3, 3, 3)) / (27 * c) ** 0.5).astype(np.float32))
    ins = ["x", "w"]
    if bias:
        g.add_param("b", rng.standard_normal(m).astype(np.float32))
        ins.append("b")
    y = g.add_node("Conv", ins, {"pads": [1] * 6}, name="conv").outputs[0]
    if act:
        y = g.add_node("Relu", [y], name="relu").outputs[0]
    out = g.add_node(
        "MaxPool", [y], {"kernel_shape": list(pool), "strides": list(pool)}, name="pool"
    )
    g.mark_output(out.outputs[0])
    return g, out.outputs[0]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    ("c", "size", "m", "pool", "act", "bias"),
    [
        (3, (4, 8, 12), 5, (1, 2, 2), True, True),  # video3d's first pool
        (4, (6, 8, 8), 6, (2, 2, 2), True, False),
        (2, (3, 4, 8), 7, (3, 4, 2), False, True),  # 3 frames, a 4-wide window
        (5, (2, 12, 4), 3, (2, 1, 4), True, True),
        (3, (5, 4, 4), 4, (5, 1, 1), True, True),  # over frames only
    ],
)
def test_pool_fused_into_wino3d_equals_unfused_plan_and_reference(
    batch, c, size, m, pool, act, bias, monkeypatch
):
    """A tiling 3-D MaxPool after a wino3d-f4 conv (`CompiledPlan._tile_pool3d`,
    `conv._pool_tiles3d`): the max over the pool's windows straight from Winograd's Y, bias
    (in Y) and ReLU after the max: equal to the plan with the fusion off (max and ReLU are
    exact), and to the reference plan within F(4x4)'s float32 rounding."""
    from graphnet import runtime
    from graphnet.runtime.fast import compile as fast_compile

    g, out = _conv_pool3d(c, size, m, pool, act, bias)
    x = np.random.default_rng(batch).standard_normal((batch, c, *size)).astype(np.float32)
    fused = runtime.Session(g)
    got = fused.run({"x": x})[out]
    steps = fused._fast(training=False, keep_all=False).steps
    assert [s.op for s in steps] == ["Conv"] and steps[0].algo == "wino3d-f4"
    assert steps[0].pool == pool and "pool" in steps[0].fused
    with monkeypatch.context() as mp:
        mp.setattr(fast_compile.CompiledPlan, "_tile_pool3d", lambda self, v, n: None)
        plain = runtime.Session(g)
        want = plain.run({"x": x})[out]
        assert [s.op for s in plain._fast(training=False, keep_all=False).steps][-1] == "MaxPool"
    assert got.shape == want.shape and np.array_equal(got, want)
    ref = runtime.Session(g, plan="reference").run({"x": x})[out]
    # 27 c terms of |x w| ~ 1 / sqrt(27 c) each, F(4x4)'s transforms amplify the rounding up
    # to ~1e2 x float32's: well within 1e-4
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("size", "pool"),
    [((4, 6, 8), (1, 2, 2)), ((4, 12, 12), (1, 3, 3)), ((3, 8, 8), (2, 2, 2))],
)
def test_no_3d_pool_fusion_past_whole_tiles(size, pool):
    """Heights or widths not a multiple of 4 (cropped tiles), windows not dividing 4, frames
    not divisible: the MaxPool stays a step of its own."""
    from graphnet import runtime

    g, out = _conv_pool3d(2, size, 3, pool, True, True)
    sess = runtime.Session(g)
    x = np.random.default_rng(0).standard_normal((2, 2, *size)).astype(np.float32)
    got = sess.run({"x": x})[out]
    assert [s.op for s in sess._fast(training=False, keep_all=False).steps][-1] == "MaxPool"
    ref = runtime.Session(g, plan="reference").run({"x": x})[out]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_winograd3d_workspace_is_each_slot_at_its_largest():
    """video3d's first conv at batch 1 (3 -> 16 at 8x32x32, pads 1, its fused 1x2x2 pool): each
    scratch slot placed once at its largest size (t = 6, 8 x 8 tiles of 4 x 4, 10 padded
    frames): 0 the padded input 3 x 10 x 34 x 34 = 34680 values; 1 d / V / M / Y, the largest M
    36 x 16 x 8 x 64 = 294912; 2 V1 / S / Y1, the largest Y1 4 x 6 x 16 x 8 x 64 = 196608, then
    the pool's tile-row stage, Y / 2 = 16 x 8 x 32 x 32 / 2 = 65536, in its place (a slot 3 of
    its own held 256 KiB more). 526200 float32 = 2.01 MiB (the slots growing in stages, each
    move to the end leaving its earlier place empty: 3.15)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 8, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3, 3)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 1, 3, 16)
    wp = fast_conv.prepare_weight("wino3d-f4", w, 1, np.float32)
    out = np.empty((1, 16, 8, 16, 16), np.float32)
    sc = fast_memory.Scratch()
    epi = fast_conv.Epilogue(activation=("relu",), pool=(1, 2, 2))
    fast_conv.conv_chunked("wino3d-f4", spec, x, wp, out, epi, sc)
    sizes = (34680, 294912, 196608)
    assert sc.used() == sum(-(-4 * s // fast_memory.ALIGN) * fast_memory.ALIGN for s in sizes)


@pytest.mark.parametrize(
    ("batch", "frames", "hw", "frame_bytes"),
    [(7, 8, 12, 1 << 20), (1, 40, 24, 1 << 20), (1, 3, 64, 1 << 18)],
)
def test_winograd3d_chunks_stay_within_their_budgets(batch, frames, hw, frame_bytes):
    """Chunks of images within WINOGRAD_WORKSPACE_BYTES (8 -> 8 at 8x12x12: 0.40 MiB an image,
    5 images a chunk, then 2), a video too large for one in chunks of frames within
    WINOGRAD3D_FRAME_BYTES (1 MiB here; 40 frames at 24x24 take ~7.5 MiB), and one whose single
    frame is too large in bands of tile rows (at 64x64 one frame takes ~1.6 MiB; 256 KiB)."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 8, frames, hw, hw)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3, 3)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 1, 8, 8)
    wp = fast_conv.prepare_weight("wino3d-f4", w, 1, np.float32)
    out = np.empty((batch, 8, frames, hw, hw), np.float32)
    sc = fast_memory.Scratch()
    budget = fast_conv.WINOGRAD_WORKSPACE_BYTES if batch > 1 else frame_bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast_conv, "WINOGRAD3D_FRAME_BYTES", frame_bytes)
        fast_conv.conv_chunked("wino3d-f4", spec, x, wp, out, fast_conv.Epilogue(), sc)
    assert budget // 2 < sc.used() <= budget
    kw = dict(strides=(1, 1, 1), pads=(1,) * 6, dilations=(1, 1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(np.float64), w.astype(np.float64), None, **kw)
    assert (np.abs(out - exact) <= _bound(x, w, (1,) * 6, 4, 0.0)).all()


@pytest.mark.parametrize("rows", [True, False])
@pytest.mark.parametrize("gather", ["channels_last", "take", "copy"])
@pytest.mark.parametrize(
    ("batch", "c", "mo", "size", "pads", "algo"),
    [
        (1, 3, 7, (11, 9, 11), (1, 1, 1, 1, 1, 1), "wino3d-f4"),  # cropped tiles
        (2, 5, 6, (9, 8, 8), (2, 1, 0, 0, 1, 2), "wino3d-f4"),  # a front pad of 2, none at the end
        (1, 4, 5, (7, 5, 6), (0, 1, 1, 0, 1, 1), "wino3d-f2"),  # no temporal pads
        (1, 4, 6, (8, 6, 7), (2, 1, 1, 2, 1, 1), "wino3d-f4(5)"),  # 5x3x3
    ],
)
def test_winograd3d_in_chunks_of_frames_matches_the_plain_conv(
    batch, c, mo, size, pads, algo, gather, rows, monkeypatch
):
    """An image past WINOGRAD3D_FRAME_BYTES in chunks of output frames (two of them a chunk,
    reading kt + 1 padded input frames, some of them the pads), or with 1 byte in chunks of one
    frame and one row of tiles (`rows`: bands reading 6 padded input rows, some of them the
    pads), against the plain conv in float64, with bias, residual and ReLU (the residual read
    per chunk), on a NaN-filled scratch; each tile gather (`_gather`)."""
    takes = _gather(gather, monkeypatch)
    algo, _, taps = algo.partition("(")
    kt = int(taps.rstrip(")") or 3)
    m = int(algo[-1])
    th, tw = (-(-(size[i] + pads[i] + pads[3 + i] - 2) // m) for i in (1, 2))
    exact = all((size[i] + pads[i] + pads[3 + i] - 2) % m == 0 for i in (1, 2))
    big = (th * m + 2) * (tw * m + 2) * (1 if exact else -1)
    two = fast_conv._winograd3d_slots(m, c, mo, kt, kt + 1, 2, th * tw, big, ())
    frame_bytes = 1 if rows else 4 * sum(two) + 5 * fast_memory.ALIGN
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_FRAME_BYTES", frame_bytes)
    x, w, b, residual, spec, wp, sc, epi, out = _case(batch, c, mo, size, pads, algo, kt, 100)
    fast_conv.conv_chunked(algo, spec, x, wp, out, epi, sc)
    if not rows:  # chunks of frames ran: the workspace stayed within the frame budget
        assert sc.used() <= frame_bytes
    assert bool(takes) == (gather == "take")
    _assert_within_bound(out, x, w, b, residual, pads, int(algo[-1]))


@pytest.mark.parametrize("pool", [(2, 2, 2), (3, 1, 2)])
def test_winograd3d_fused_pool_in_chunks_of_frames(pool, monkeypatch):
    """The fused pool with frame chunks (each a whole number of pool windows over frames)
    against the max over windows of the float64 conv: a max moves by at most the largest
    error in its window (so the conv's bound's window maxima bound it)."""
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_FRAME_BYTES", 1)
    rng = np.random.default_rng(sum(pool))
    kt, kh, kw_ = pool
    size = (4 * kt, 8, 8)
    x = rng.standard_normal((2, 4, *size)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3, 3), (1, 1, 1), (1,) * 6, (1, 1, 1), 1, 4, 5)
    wp = fast_conv.prepare_weight("wino3d-f4", w, 1, np.float32)
    pooled = tuple(s // k for s, k in zip(size, pool, strict=True))
    out = np.full((2, 5, *pooled), np.nan, np.float32)
    epi = fast_conv.Epilogue(bias=b, activation=("relu",), pool=pool)
    fast_conv.conv_chunked("wino3d-f4", spec, x, wp, out, epi, fast_memory.Scratch())
    kw = dict(strides=(1, 1, 1), pads=(1,) * 6, dilations=(1, 1, 1), group=1, kernel_shape=None)
    exact = conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    bound = _bound(x, w, (1,) * 6, 4, np.abs(b.astype(np.float64))[:, None, None, None])

    def windows(a):
        return a.reshape(2, 5, pooled[0], kt, pooled[1], kh, pooled[2], kw_).max(axis=(3, 5, 7))

    assert (np.abs(out - np.maximum(windows(exact), 0)) <= windows(bound)).all()


@pytest.mark.parametrize("shifted", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("pool", [(1, 2, 2), (2, 2, 2), (3, 4, 1), (1, 1, 4), (2, 1, 1), (1, 1, 1)])
def test_pool_tiles3d_is_the_max_over_windows_into_a_strided_output(
    batch, pool, shifted, monkeypatch
):
    """`_pool_tiles3d` from Winograd's Y layout (m, M, b, T, th, tw, m) equals the max over the
    pool's windows of the output it stands for (b, M, T, th * m, tw * m), written into a frame
    and row band of a larger NaN-filled array (a chunk's strided view of the output); nothing
    outside the band is written; the kw stage by shifted maxima or strided windows
    (WINOGRAD3D_POOL_SHIFTED_MAX). Max is exact: equality."""
    monkeypatch.setattr(fast_conv, "WINOGRAD3D_POOL_SHIFTED_MAX", shifted)
    m, mo, kt, kh, kw = 4, 3, *pool
    to, th, tw = 2 * kt, 2, 3
    rng = np.random.default_rng(sum(pool) + batch)
    y = rng.standard_normal((m, mo, batch, to, th, tw, m)).astype(np.float32)
    full = y.transpose(2, 1, 3, 4, 0, 5, 6).reshape(batch, mo, to, th * m, tw * m)
    want = full.reshape(batch, mo, to // kt, kt, th * m // kh, kh, tw * m // kw, kw)
    want = want.max(axis=(3, 5, 7))
    big = np.full((batch + 1, mo, to // kt + 2, th * m // kh + 3, tw * m // kw), np.nan, np.float32)
    band = big[1:, :, 1 : 1 + to // kt, 2 : 2 + th * m // kh]
    sc = fast_memory.Scratch()
    fast_conv._pool_tiles3d(y, pool, band, sc)
    assert np.array_equal(band, want)
    assert np.isnan(big).sum() == big.size - band.size


def test_winograd3d_weights_transformed_per_run_past_the_bound(monkeypatch):
    """An 8 -> 16 3x3x3 conv at 5x8x8 (20 F(4x4) columns an image, 36 x 16 x 24 x 20 = 276480
    GEMM multiply-adds each) with WINO3D_PER_RUN_MIN_MACS at 4 images' worth: at batch 2 U'
    stays in the step's prepared-weight cache; at batch 4 the step transforms the weights on
    every run (the kernel re-laid into its workspace) and keeps none. Both match the plain conv
    within the 3-D Winograd bound, the first (recorded) run and the replays."""
    from graphnet import runtime
    from graphnet.ir import Graph
    from graphnet.runtime.fast.steps import linear

    monkeypatch.setattr(linear, "WINO3D_PER_RUN_MIN_MACS", 4 * 276480)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((16, 8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    g = Graph("conv3d")
    g.add_input("x", (None, 8, 5, 8, 8))
    g.add_param("w", w)
    g.add_param("b", b)
    y = g.add_node("Conv", ["x", "w", "b"], {"pads": [1] * 6}, name="conv").outputs[0]
    g.mark_output(g.add_node("Relu", [y], {}, name="relu").outputs[0])
    pads = (1,) * 6
    kw = dict(strides=(1, 1, 1), pads=pads, dilations=(1, 1, 1), group=1, kernel_shape=None)
    for batch, kept in ((2, True), (4, False)):
        x = rng.standard_normal((batch, 8, 5, 8, 8)).astype(np.float32)
        exact = conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
        bound = _bound(x, w, pads, 4, np.abs(b.astype(np.float64))[:, None, None, None])
        sess = runtime.Session(g)
        for _ in range(3):  # recorded, then replayed from the arena
            out = sess.run({"x": x})[g.outputs[0]]
            assert (np.abs(out - np.maximum(exact, 0)) <= bound).all()
        step = next(s for s in sess._fast(training=False, keep_all=False).steps if s.name == "conv")
        assert step.ran == "wino3d-f4"
        assert ("wino3d-f4" in step._prepared) is kept
