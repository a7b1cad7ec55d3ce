"""Winograd's layouts (`runtime/fast/conv.py`, `_winograd`): the input padded channels-last or
NCHW (WINOGRAD_ALIASED_PLANE_BYTES); the GEMMs in one block or in blocks of output channels
(WINOGRAD_GEMM_MAX_MNK), with a kept U^T, a per-run U, or U transformed block by block on every
run (`winograd.KernelBlocks`, the lean plan's). Each combination is checked against the plain
conv in float64, on odd shapes, with every epilogue, and on a NaN-filled scratch (a stage
reading a dead place or an unwritten border would show)."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.runtime.fast import conv as fast_conv
from graphnet.runtime.fast import memory as fast_memory
from graphnet.runtime.fast.winograd import KernelBlocks, transform_block, weight_transform
from graphnet.runtime.kernels.conv import conv
from tests.oracles import float32_bound, winograd_bound


def winograd_case(batch, c, mo, hw, pads, algo, u_transposed, seed):
    """The operands of a Winograd kernel test: x (batch, c, *hw), w (mo, c, 3, 3), bias,
    residual (the output's shape), the ConvSpec (stride 1, `pads`), the prepared weight (U^T as
    the plan keeps it, or U as a per-run transform gives it) and a scratch whose memory is NaN
    (a read of a dead place or an unwritten border shows in the output)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, *hw)).astype(np.float32)
    w = rng.standard_normal((mo, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(mo).astype(np.float32)
    ho, wo = hw[0] + pads[0] + pads[2] - 2, hw[1] + pads[1] + pads[3] - 2
    residual = rng.standard_normal((batch, mo, ho, wo)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3), (1, 1), pads, (1, 1), 1, c, mo)
    if u_transposed:
        wp = fast_conv.prepare_weight(algo, w, 1, np.dtype(np.float32))
    else:
        wp = weight_transform(w, int(algo[-1]))
    sc = fast_memory.Scratch()
    sc.take(0, 1 << 20, np.float32)
    sc.reset()
    sc._buf.view(np.float32)[:] = np.nan
    return x, w, b, residual, spec, wp, sc


def _conv_and_bound(x, w, b, residual, pads, m):
    """The float64 plain conv (+ bias + residual, then ReLU) and the float32 rounding bound of
    Winograd F(m x m)'s (`winograd_bound`: relative to the transformed tiles; ReLU only shrinks
    an error)."""
    kw = dict(strides=(1, 1), pads=pads, dilations=(1, 1), group=1, kernel_shape=None)
    f64 = np.float64
    exact = conv(x.astype(f64), w.astype(f64), b.astype(f64), **kw) + residual
    extra = np.abs(b.astype(f64))[:, None, None] + np.abs(residual)
    return np.maximum(exact, 0), winograd_bound(x, w, pads, m, extra)


@pytest.mark.parametrize("u_transposed", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("row_blocks", [True, False])
@pytest.mark.parametrize(
    ("batch", "c", "mo", "hw", "pads", "algo"),
    [
        (1, 24, 40, (9, 11), (1, 1, 1, 1), "winograd-f4"),  # M > C: M moves past V's place
        (3, 48, 24, (13, 7), (1, 0, 2, 1), "winograd-f4"),  # asymmetric pads, cropped tiles
        (2, 33, 33, (8, 8), (1, 1, 1, 1), "winograd-f4"),  # exact tiles
        (5, 25, 31, (5, 6), (0, 0, 0, 0), "winograd-f2"),  # 3x4 out
        (1, 40, 56, (6, 7), (1, 1, 1, 1), "winograd-f2"),
        (2, 24, 24, (7, 8), (2, 0, 0, 1), "winograd-f4"),  # a pad of 2, none on two sides
    ],
)
def test_winograd_operand_layouts_match_the_plain_conv(
    batch, c, mo, hw, pads, algo, row_blocks, channels_last, u_transposed, monkeypatch
):
    """Every path of `_winograd`: channels-last with U^T (`_winograd_cl`) or U (`_winograd_m`,
    a per-run transform's), NCHW with U^T's transposed view or U."""
    # Blocks of 7 output channels or fewer (the last one smaller), or one block of all.
    monkeypatch.setattr(fast_conv, "WINOGRAD_GEMM_MAX_MNK", 0 if row_blocks else 1 << 40)
    monkeypatch.setattr(fast_conv, "BLOCKED_GEMMS", True)  # whatever kernels this BLAS runs
    monkeypatch.setattr(fast_conv, "WINOGRAD_GEMM_MIN_ROWS", 7)
    # Every plane's bytes are a multiple of 1 (NCHW), none of 2^40 (channels-last).
    monkeypatch.setattr(
        fast_conv, "WINOGRAD_ALIASED_PLANE_BYTES", (1 << 40) if channels_last else 1
    )
    x, w, b, residual, spec, wp, sc = winograd_case(
        batch, c, mo, hw, pads, algo, u_transposed, seed=batch * 1000 + c
    )
    epi = fast_conv.Epilogue(bias=b, residual=lambda: residual, activation=("relu",))
    out = np.full(residual.shape, np.nan, np.float32)
    fast_conv.conv_chunked(algo, spec, x, wp, out, epi, sc, u_transposed=u_transposed)
    exact, bound = _conv_and_bound(x, w, b, residual.astype(np.float64), pads, int(algo[-1]))
    assert (np.abs(out - exact) <= bound).all()


def test_winograd_gemm_blocks_stay_under_the_small_matrix_bound():
    """vgg_bn@1's 64 -> 64 conv at 32x32 (64 tiles, 262k) runs one block; 256 -> 256 on 64 tiles
    (4.2M) five equal blocks (61 rows fit: 52, the last 48); a 1-column GEMM one block."""
    rows = fast_conv._gemm_rows
    assert rows(64, 64 * 64) == 64
    assert rows(256, 256 * 64) == 52 and 52 * 256 * 64 <= fast_conv.WINOGRAD_GEMM_MAX_MNK
    assert rows(256, 256) == 256
    assert rows(40, 1 << 30) == fast_conv.WINOGRAD_GEMM_MIN_ROWS


@pytest.mark.parametrize("ways", [1, 8])
@pytest.mark.parametrize(
    ("batch", "c", "hw", "pads", "size"),
    [
        (1, 37, (16, 16), (1, 1, 1, 1), (18, 18)),  # blocks of 4 (ways 1), the last one of 1
        (3, 9, (8, 5), (2, 0, 0, 1), (12, 9)),  # 160 B planes; borders past the pads
        (2, 70, (32, 32), (0, 0, 0, 0), (34, 34)),  # blocks of 1 or 8 channels
        (1, 3, (6, 6), (1, 0, 1, 2), (8, 8)),  # one row each end (one call), columns apart
        (2, 4, (5, 6), (2, 1, 0, 1), (7, 8)),  # one column each end, rows apart
    ],
)
def test_padded_channels_last_in_channel_blocks_matches_numpy_pad(
    batch, c, hw, pads, size, ways, monkeypatch
):
    """`_padded_channels_last` copies the channels in blocks (`transpose_block`: here as few
    ways as 1, blocks of one channel for 4 KiB planes): exactly np.pad's values, transposed,
    into a NaN-filled buffer (an unwritten border or channel would show)."""
    from graphnet.runtime.fast import winograd

    monkeypatch.setattr(winograd, "TRANSPOSE_L1_WAYS", ways)
    x = np.random.default_rng(c).standard_normal((batch, c, *hw)).astype(np.float32)
    buf = np.full(batch * c * size[0] * size[1] + 5, np.nan, np.float32)
    got = fast_conv._padded_channels_last(x, pads, size, buf)
    after = (size[0] - hw[0] - pads[0], size[1] - hw[1] - pads[1])
    want = np.pad(x, ((0, 0), (0, 0), (pads[0], after[0]), (pads[1], after[1])))
    assert got.shape == (batch, *size, c)
    assert np.array_equal(got, want.transpose(0, 2, 3, 1))


def test_transpose_blocks_keep_one_pixels_lines_in_l1():
    """Planes 4 KiB apart share one L1 set (8 channels a block), 1 KiB four (32), 256 B
    sixteen (128); planes whose lines spread over all 64 sets (28x28, 3136 B) make blocks of
    512 channels."""
    blk = fast_conv.transpose_block
    assert [blk(n * n * 4) for n in (32, 16, 8, 28)] == [8, 32, 128, 512]


def test_winograd_pads_channels_last_unless_planes_alias():
    """32x32 float32 planes (4 KiB apart) stay NCHW; 16x16, 28x28 and 8x8 go channels-last."""
    alias = fast_conv.WINOGRAD_ALIASED_PLANE_BYTES
    assert (32 * 32 * 4) % alias == 0
    assert all((n * n * 4) % alias for n in (8, 16, 28))


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(("mo", "c"), [(1, 1), (5, 7), (33, 24)])
def test_weight_transform_matches_the_kronecker_form_in_float64(m, mo, c):
    """weight_transform (separable, float32) against kron(G, G) @ vec(w) in float64, within the
    float32 rounding bound of its terms: each U element sums 9 products of two G entries and a
    weight (G's entries such as 1/6 rounded to float32 too: 9 + 2 roundings of the sums)."""
    from graphnet.runtime.fast.winograd import TRANSFORMS, weight_transform

    w = np.random.default_rng(mo * 100 + c).standard_normal((mo, c, 3, 3)).astype(np.float32)
    kg = TRANSFORMS[m][1]
    flat = w.astype(np.float64).reshape(mo * c, 9).T
    exact = (kg @ flat).reshape(-1, mo, c)
    mags = (np.abs(kg) @ np.abs(flat)).reshape(-1, mo, c)
    got = weight_transform(w, m)
    assert got.dtype == np.float32 and got.shape == ((m + 2) ** 2, mo, c)
    assert got.flags.c_contiguous
    assert (np.abs(got - exact) <= float32_bound(mags, 9 + 2)).all()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(
    ("mo", "c", "dtype"), [(1, 1, np.float32), (13, 7, np.float32), (33, 24, np.float64)]
)
def test_weight_transform_in_blocks_over_threads_matches_the_one_piece(
    m, mo, c, dtype, transposed, monkeypatch
):
    """`transformed` (U in scratch 0, blocks of output channels split over two threads: blocks
    of 2 channels here, the last one smaller for odd M; U^T ((m+2)^2, C, M) `transposed`, in
    blocks of input channels) gives `weight_transform`'s U (U^T), also from a float64 kernel:
    both within the float32 bound of the Kronecker form in float64, and equal to each other
    within it (the same operations on each block's kernels). The scratches are NaN-filled
    first: an unwritten element of U would show."""
    from graphnet.runtime.fast import threads as fast_threads
    from graphnet.runtime.fast import winograd

    monkeypatch.setattr(fast_threads, "SPLIT_MIN_FLOPS", 0)  # every transform split
    inner = mo if transposed else c  # blocks of 2 (input or output) channels
    monkeypatch.setattr(winograd, "TRANSFORM_BLOCK_BYTES", 2 * (9 + 3 * (m + 2)) * inner * 4)
    w = np.random.default_rng(mo * 100 + c).standard_normal((mo, c, 3, 3)).astype(dtype)
    par = fast_threads.Parallel(2)
    for sc in par.scratch:
        sc.take(0, 1 << 16, np.float32)
        sc.reset()
        sc._buf.view(np.float32)[:] = np.nan
    got = winograd.transformed(w, m, par, par.scratch[0], transposed)
    kg = winograd.TRANSFORMS[m][1]
    flat = w.astype(np.float64).reshape(mo * c, 9).T
    exact = (kg @ flat).reshape(-1, mo, c)
    bound = float32_bound((np.abs(kg) @ np.abs(flat)).reshape(-1, mo, c), 9 + 2)
    if transposed:
        exact, bound = exact.transpose(0, 2, 1), bound.transpose(0, 2, 1)
    assert got.dtype == np.float32 and got.shape == exact.shape
    assert (np.abs(got - exact) <= bound).all()
    assert (np.abs(got - winograd.weight_transform(w, m, transposed)) <= bound).all()
    assert np.shares_memory(got, par.scratch[0].take(winograd.U_SLOT, got.size, winograd.F32))


@pytest.mark.parametrize("workers", [1, 2])
def test_conv_workspace_grows_over_the_weight_transforms_temporaries(workers, monkeypatch):
    """U sits in scratch 0 before the transform's temporaries (slot 0); the conv's first take,
    slot 0 in its input's dtype (a dtype object, not the np.float32 type), is the same place
    grown where it is: scratch 0 holds U plus the larger of the two, not their sum (with the
    type as the key the conv's slot was a place of its own after the temporaries: 1 MiB more
    per thread in vgg_bn@32's arena)."""
    from graphnet.runtime.fast import threads as fast_threads
    from graphnet.runtime.fast import winograd
    from graphnet.runtime.fast.memory import ALIGN

    monkeypatch.setattr(fast_threads, "SPLIT_MIN_FLOPS", 0)
    w = np.random.default_rng(5).standard_normal((64, 48, 3, 3)).astype(np.float32)
    par = fast_threads.Parallel(workers)
    sc = par.scratch[0]
    u = winograd.transformed(w, 4, par, sc)
    u_bytes = -(-u.nbytes // ALIGN) * ALIGN
    temps = sc.used() - u_bytes
    x = np.zeros((2, 48, 16, 16), np.float32)
    conv_bytes = 4 * temps  # larger than the temporaries
    sc.take(0, conv_bytes // 4, x.dtype)
    assert temps > 0 and sc.used() == u_bytes + conv_bytes


@pytest.mark.parametrize("m", [2, 4])
def test_weight_transform_transposed_is_u_transposed(m):
    """U^T (`transposed`, contiguous ((m+2)^2, C, M)): U's planes transposed (the same float32
    operations on each kernel, in another order of the kernels: BLAS may round the 3-term sums
    differently for other operand widths: within float32's bound of each)."""
    from graphnet.runtime.fast import winograd
    from graphnet.runtime.fast.winograd import weight_transform

    w = np.random.default_rng(m).standard_normal((11, 6, 3, 3)).astype(np.float32)
    got = weight_transform(w, m, transposed=True)
    assert got.flags.c_contiguous and got.shape == ((m + 2) ** 2, 6, 11)
    # each is within float32's bound of kron(G, G) vec(w) in float64 (two 3-term passes and
    # the stores): their difference within twice it
    kg = np.abs(winograd.TRANSFORMS[m][1])
    mags = (kg @ np.abs(w.astype(np.float64)).reshape(66, 9).T).reshape(-1, 11, 6)
    bound = 2 * float32_bound(mags.transpose(0, 2, 1), 9 + 2)
    assert (np.abs(got - weight_transform(w, m).transpose(0, 2, 1)) <= bound).all()


def test_winograd_weights_kept_only_for_few_columns():
    """A 32 -> 40 3x3 conv on 16x16 (F(4x4): 16 tiles an image): at batch 2 (32 columns, under
    PER_RUN_MIN_COLUMNS) its U stays in the step's prepared-weight cache; at batch 8 (128) it
    is transformed on every run into the step's workspace and not kept. Both match the plain
    conv within Winograd's float32 bound, the first run (recorded) and the replays alike, also
    in one session alternating the two batches."""
    from graphnet import runtime
    from graphnet.ir import Graph
    from graphnet.runtime.fast import winograd

    rng = np.random.default_rng(5)
    w = rng.standard_normal((40, 32, 3, 3)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    g = Graph("conv")
    g.add_input("x", (None, 32, 16, 16))
    g.add_param("w", w)
    g.add_param("b", b)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    y = g.add_node("Conv", ["x", "w", "b"], attrs, name="conv").outputs[0]
    g.mark_output(g.add_node("Relu", [y], {}, name="relu").outputs[0])
    for batch, kept in ((2, True), (8, False)):
        assert winograd.per_run(batch, (16, 16), 4) is not kept
        x = rng.standard_normal((batch, 32, 16, 16)).astype(np.float32)
        exact, bound = _conv_and_bound(x, w, b, 0.0, (1, 1, 1, 1), 4)
        sess = runtime.Session(g)
        for _ in range(3):  # recorded, then replayed from the arena
            out = sess.run({"x": x})[g.outputs[0]]
            assert (np.abs(out - exact) <= bound).all()
        step = next(s for s in sess._fast(training=False, keep_all=False).steps if s.name == "conv")
        assert step.ran == "winograd-f4"
        assert ("winograd-f4" in step._prepared) is kept
    # One session alternating the two batches (one arena layout each; U kept from batch 2 on)
    sess = runtime.Session(g)
    xs = {n: rng.standard_normal((n, 32, 16, 16)).astype(np.float32) for n in (2, 8)}
    for n in (8, 2, 8, 2, 8):
        exact, bound = _conv_and_bound(xs[n], w, b, 0.0, (1, 1, 1, 1), 4)
        assert (np.abs(sess.run({"x": xs[n]})[g.outputs[0]] - exact) <= bound).all()


@pytest.mark.parametrize(("c", "transposed"), [(64, True), (128, False)])
def test_square_conv_per_run_layouts_across_modes_and_batches(c, transposed):
    """A square C -> C 3x3 conv on 8x8 (C == M: a U / U^T mix-up gives wrong numbers, not a
    shape error): at batch 32 (128 columns) its weights are transformed every run, as U^T for
    64 channels (576 KiB), as U for 128 (2.25 MiB, over PER_RUN_TRANSPOSED_MAX_BYTES); at
    batch 4 kept; train mode (U on every run) in between. Every run within Winograd's float32
    bound of the float64 conv."""
    from graphnet import runtime
    from graphnet.ir import Graph
    from graphnet.runtime.fast.winograd import per_run, per_run_transposed

    assert per_run(32, (8, 8), 4) and not per_run(4, (8, 8), 4)
    assert per_run_transposed(c, c, 4) is transposed
    rng = np.random.default_rng(c)
    w = (rng.standard_normal((c, c, 3, 3)) / (3 * c**0.5)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    g = Graph("square")
    g.add_input("x", (None, c, 8, 8))
    g.add_param("w", w)
    g.add_param("b", b)
    y = g.add_node("Conv", ["x", "w", "b"], {"pads": [1, 1, 1, 1]}, name="conv").outputs[0]
    g.mark_output(g.add_node("Relu", [y], {}, name="relu").outputs[0])
    sess = runtime.Session(g)
    xs = {n: rng.standard_normal((n, c, 8, 8)).astype(np.float32) for n in (4, 32)}
    for n, mode in ((32, "inference"), (4, "inference"), (32, "train"), (32, "inference"),
                    (4, "train"), (4, "inference"), (32, "inference")):  # fmt: skip
        exact, bound = _conv_and_bound(xs[n], w, b, 0.0, (1, 1, 1, 1), 4)
        out = sess.run({"x": xs[n]}, mode=mode)[g.outputs[0]]
        assert (np.abs(out - exact) <= bound).all(), (n, mode)
    step = next(s for s in sess._fast(training=False, keep_all=False).steps if s.name == "conv")
    assert step.ran == "winograd-f4"


def test_per_run_transforms_write_u_transposed_only_when_small():
    """U^T ((m+2)^2 x C x M float32) up to PER_RUN_TRANSPOSED_MAX_BYTES: ResNet's 32- and
    64-channel F(4x4) (144 and 576 KiB), not VGG's 64 -> 128 (1.1 MiB) or 128 -> 128."""
    from graphnet.runtime.fast.winograd import per_run_transposed

    assert per_run_transposed(32, 32, 4) and per_run_transposed(64, 64, 4)
    assert not per_run_transposed(64, 128, 4) and not per_run_transposed(128, 128, 4)
    assert per_run_transposed(128, 128, 2)  # F(2x2): 16 planes, 1 MiB


@pytest.mark.parametrize(
    ("batch", "per_chunk", "chunks"),
    [
        (17, 8, [(0, 9), (9, 17)]),  # a last image joins: 9 + 8, not 8 + 8 + 1
        (13, 6, [(0, 7), (7, 13)]),
        (9, 4, [(0, 4), (4, 8), (8, 9)]),  # a quarter of 4: stays a chunk of its own
        (12, 4, [(0, 4), (4, 8), (8, 12)]),  # no remainder
    ],
)
def test_winograd_small_last_chunk_joins_the_one_before(batch, per_chunk, chunks, monkeypatch):
    """A last chunk under a quarter of the others' images is spread over them (`_winograd`),
    and the conv still matches the plain one (NaN-filled scratch: a chunk reading past what
    it wrote would show)."""
    # 8x8 outputs: 4 F(4x4) tiles an image; chunks of `per_chunk` images by the column floor
    monkeypatch.setattr(fast_conv, "WINOGRAD_WORKSPACE_BYTES", 1)
    monkeypatch.setattr(fast_conv, "WINOGRAD_CHUNK_COLUMNS", 4 * per_chunk)
    seen = []
    real = fast_conv._winograd_cl

    def spy(m, spec, x, wp, out, epi, scratch, n0, n1, gemm, rec=None):
        seen.append((n0, n1))
        real(m, spec, x, wp, out, epi, scratch, n0, n1, gemm, rec)

    monkeypatch.setattr(fast_conv, "_winograd_cl", spy)
    monkeypatch.setattr(fast_conv, "WINOGRAD_ALIASED_PLANE_BYTES", 1 << 40)  # channels-last
    rng = np.random.default_rng(batch)
    c, mo, pads = 5, 7, (1, 1, 1, 1)
    x = rng.standard_normal((batch, c, 8, 8)).astype(np.float32)
    w = rng.standard_normal((mo, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(mo).astype(np.float32)
    residual = rng.standard_normal((batch, mo, 8, 8)).astype(np.float32)
    spec = fast_conv.ConvSpec((3, 3), (1, 1), pads, (1, 1), 1, c, mo)
    wp = fast_conv.prepare_weight("winograd-f4", w, 1, np.float32)
    sc = fast_memory.Scratch()
    sc.take(0, 1 << 20, np.float32)
    sc.reset()
    sc._buf.view(np.float32)[:] = np.nan
    epi = fast_conv.Epilogue(bias=b, residual=lambda: residual, activation=("relu",))
    out = np.full((batch, mo, 8, 8), np.nan, np.float32)
    fast_conv.conv_chunked("winograd-f4", spec, x, wp, out, epi, sc)
    assert seen == chunks
    exact, bound = _conv_and_bound(x, w, b, residual.astype(np.float64), pads, 4)
    assert (np.abs(out - exact) <= bound).all()


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize(("mo", "c", "rows"), [(40, 24, 7), (33, 33, 33), (64, 48, 16)])
def test_weight_blocks_are_the_whole_transforms_columns_exactly(m, mo, c, rows):
    """`transform_block` (the lean plan's per-run blocks) runs `weight_transform`'s operations
    on a block's kernels: the same U, bit for bit, whatever the block (the last one smaller),
    in a NaN-filled scratch (its temporaries in the padded input's slot, taken larger before)."""
    w = np.random.default_rng(mo + c).standard_normal((mo, c, 3, 3)).astype(np.float32)
    want = weight_transform(w, m)
    sc = fast_memory.Scratch()
    calls: list = []
    for m0 in range(0, mo, rows):  # a loop over the blocks
        sc.take(0, 1 << 16, np.float32)[:] = np.nan
        m1 = min(mo, m0 + rows)
        got = transform_block(
            KernelBlocks(w, rows), m, m0, m1, sc, lambda f, *a, **k: calls.append(f) or f(*a, **k)
        )
        assert got.shape == ((m + 2) ** 2, m1 - m0, c)
        assert np.array_equal(got, want[:, m0:m1])
        sc.reset()
    assert len(calls) == 3 * -(-mo // rows)  # (the re-laying copy and two GEMMs a block)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("rows", [5, 16, 1000])
@pytest.mark.parametrize(
    ("batch", "c", "mo", "hw", "pads", "algo"),
    [
        (1, 24, 40, (9, 11), (1, 1, 1, 1), "winograd-f4"),  # M > C: M moves past V's place
        (3, 48, 24, (13, 7), (1, 0, 2, 1), "winograd-f4"),  # asymmetric pads, cropped tiles
        (2, 33, 33, (8, 8), (1, 1, 1, 1), "winograd-f4"),  # exact tiles
        (1, 40, 56, (6, 7), (1, 1, 1, 1), "winograd-f2"),
    ],
)
def test_winograd_on_weight_blocks_matches_the_plain_conv_and_replays(
    batch, c, mo, hw, pads, algo, rows, channels_last, monkeypatch
):
    """A conv whose kernel is transformed block by block (winograd.KernelBlocks: the lean plan's
    Winograd without a kept U), on both layouts (`_winograd_cl`: U^T's blocks as transposed
    views; `_winograd_m`: U's), in blocks of 5 output channels (the last one smaller), 16, or
    all: within Winograd's float32 bound of the float64 plain conv (the blocks are U's columns
    exactly, see above), on a NaN-filled scratch; its recorded calls replayed into a fresh
    output give the same values bit for bit."""
    monkeypatch.setattr(
        fast_conv, "WINOGRAD_ALIASED_PLANE_BYTES", (1 << 40) if channels_last else 1
    )
    x, w, b, residual, spec, _, sc = winograd_case(
        batch, c, mo, hw, pads, algo, True, seed=batch * 1000 + c + rows
    )
    epi = fast_conv.Epilogue(bias=b, residual=lambda: residual, activation=("relu",))
    out = np.full(residual.shape, np.nan, np.float32)
    rec: list = []
    kb = KernelBlocks(w, rows)
    fast_conv.conv_chunked(algo, spec, x, kb, out, epi, sc, rec=rec)
    exact, bound = _conv_and_bound(x, w, b, residual.astype(np.float64), pads, int(algo[-1]))
    assert (np.abs(out - exact) <= bound).all()
    first = out.copy()
    out[:] = np.nan
    for call in rec:  # (the arrays are the same objects: a replay)
        call()
    assert np.array_equal(out, first)
