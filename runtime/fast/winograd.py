"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3, stride-1, undilated, ungrouped convs.

For one output tile Y (m x m) of one (input, output) channel pair, with d the (m+2) x (m+2) input
tile and g the 3 x 3 kernel (cross-correlation, as ONNX's Conv):

    Y = A^T [ (G g G^T) . (B^T d B) ] A

("." element-wise). Summed over input channels, the element-wise products become (m+2)^2
independent GEMMs of (output channels x input channels) @ (input channels x tiles): 2.25x
(F(2x2)) or 4x (F(4x4)) fewer multiplications than direct convolution. The transforms are GEMMs
too, on tiles laid out contiguously as (m+2, m+2, everything else): B^T on the first tile axis
(one GEMM), then on the second (a stack of GEMMs), no transposes in between; the weight
transform likewise, G on the kernel rows then on its columns, in float32 (train mode prepares
the weights on every run).

The matrices are those of Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural
Networks", with interpolation points 0, +-1, +-2 (F(4x4)) and 0, +-1 (F(2x2)). F(4x4)'s
transforms have entries up to 8 and 5: rounding grows with the tiles' dynamic range (max error
~1e-4 relative on typical activations), which is inside the whole-model tolerance; F(2x2)'s are
exact in float32 up to the GEMM's own rounding.

The 2-D convs multiply U^T, ((m+2)^2, C, M) (`weight_transform(..., transposed=True)`):
conv._winograd_cl runs V (tiles, C) @ U^T (C, M) on V's planes as the transforms leave them.
The transformed weights are kept (ConvStep's prepared-weight cache) only for GEMMs with few
columns; with more, a step transforms them on every run into its workspace
(PER_RUN_MIN_COLUMNS, `transformed`), as U^T only while that fits L2
(PER_RUN_TRANSPOSED_MAX_BYTES), else as U, ((m+2)^2, M, C), for conv._winograd_m: a large U^T
took 1.1-1.2x the time of U (its kernels re-laid (3, 3, C, M), a copy reading C x 9 values
apart; 64-256 channels, one thread). Train mode transforms U on every run too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import ceil, gcd

import numpy as np

from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.fast.threads import ELEMENT_FLOPS

__all__ = [
    "BLOCK_BYTES",
    "KernelBlocks",
    "block_bytes",
    "block_rows",
    "transform_block",
    "PER_RUN_MIN_COLUMNS",
    "TRANSFORMS",
    "SEPARABLE",
    "per_run",
    "per_run_transposed",
    "transformed",
    "weight_transform",
]


TRANSPOSE_L1_SETS, TRANSPOSE_L1_WAYS, CACHE_LINE = 64, 8, 64
"""The L1 data cache's geometry (32 KiB, 8 ways of 64 sets of 64-byte lines: AMD EPYC and Intel
cores alike). A transposing copy into channels-last reads one value of each channel plane per
pixel: the planes' lines share the few sets their stride allows (planes 1 KiB apart map to 4 of
the 64 sets, 4 KiB apart to one), and more channels than those sets' ways hold evict each other
before the next pixels' values, on the same lines, are read. `transpose_block` therefore copies
the channels in blocks of as many as the sets' ways hold."""


def transpose_block(plane_bytes: int) -> int:
    """Channels per block of a transposing copy whose planes are `plane_bytes` apart: the lines
    of one pixel's values then stay in L1 (see TRANSPOSE_L1_SETS). Measured (`conv._padded_
    channels_last`, one thread, in-process interleaved medians of ratios against one copy of all
    channels): 16x16 planes (1 KiB) blocks of 32: 0.55-0.60x the time at 128 channels batch 1-2
    and 64 channels batch 4 (blocks of 16: 0.60-0.70x, 64: 1.0x); 8x8 (256 B) blocks of 128:
    0.63-0.77x at 256 channels batch 1-8 (32: 0.73-1.11x); 32x32 (4 KiB) blocks of 8: 0.24-0.39x
    at 32-64 channels batch 1-2 (4: 0.41-0.65x, 16: 0.36-0.56x); 28x28 and 24x24 planes at 32-64
    channels were slower in blocks of 8-32 (1.05-1.9x): their lines spread over 64 and 16 sets,
    which hold 512 and 128 channels."""
    lines = CACHE_LINE * TRANSPOSE_L1_SETS
    sets = min(TRANSPOSE_L1_SETS, lines // max(CACHE_LINE, gcd(plane_bytes, lines)))
    return TRANSPOSE_L1_WAYS * sets


def _f2() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
    return bt, g, at


def _f4() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt = np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float64,
    )
    g = np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    )
    at = np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        np.float64,
    )
    return bt, g, at


def _kron(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bt, g, at = _f2() if m == 2 else _f4()
    # Tiles are flattened row-major (row i, column j -> i * t + j): B^T d B on the flattened tile
    # is kron(B^T, B^T) @ vec(d); likewise G g G^T and A^T M A.
    return (
        np.kron(bt, bt).astype(np.float32),
        np.kron(g, g),  # float64 (the oracle of weight_transform's tests)
        np.kron(at, at).astype(np.float32),
    )


TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {m: _kron(m) for m in (2, 4)}
"""m -> (kron(B^T, B^T) float32, kron(G, G) float64, kron(A^T, A^T) float32)."""

SEPARABLE: dict[int, tuple[np.ndarray, np.ndarray]] = {
    m: (f()[0].astype(np.float32), f()[2].astype(np.float32)) for m, f in ((2, _f2), (4, _f4))
}
"""m -> (B^T, A^T) float32: the input and output transforms applied one tile axis at a time
(B^T d B = two GEMMs with K = m+2): 3x fewer multiplications than the Kronecker form."""


_G32: dict[int, np.ndarray] = {m: f()[1].astype(np.float32) for m, f in ((2, _f2), (4, _f4))}


def weight_transform(w: np.ndarray, m: int, transposed: bool = False) -> np.ndarray:
    """U[xi, o, c] = (G w[o, c] G^T) flattened: ((m+2)^2, M, C) float32. The kernel re-laid as
    (3, 3, M*C) (one copy), then G on its rows (one GEMM, K = 3) and on its columns (a stack of
    t GEMMs): 324 multiply-adds per kernel where the Kronecker form kron(G, G) @ vec(w) took
    648, in float32 on contiguous operands where that ran in float64 on a transposed one: 0.6x
    the time at 32 -> 32 channels, 0.4x at 64-128, 0.6x at 256 (one thread, min of 20; 3.1 ms
    for 256 x 256 became 1.9: writing U, 4x the kernel, is most of it), which train mode paid on
    every run before it kept U (see TRAIN_KEEP_WEIGHTS in steps/linear.py). Its rounding stays
    float32's: 2.6e-8 of the largest value, where float64 rounded once gave 1.3e-8 (256 x 256
    random kernels)."""
    g = _G32[m]
    t = m + 2
    mo, c = w.shape[:2]
    if transposed:  # U^T[xi] (C, M): the kernel re-laid as (3, 3, C*M)
        w9 = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(9, c * mo), dtype=np.float32)
    else:  # (3 rows, 3 cols, M*C)
        w9 = np.ascontiguousarray(w.reshape(mo * c, 9).T, dtype=np.float32)
    rows = g @ w9.reshape(3, 3 * mo * c)  # (t, 3, M*C): G on the kernel rows
    u = np.matmul(g, rows.reshape(t, 3, mo * c))  # (t, t, M*C): and on its columns
    return u.reshape(t * t, c, mo) if transposed else u.reshape(t * t, mo, c)


PER_RUN_MIN_COLUMNS = 128
"""In inference, a Winograd conv whose GEMMs have at least this many columns (images x tiles:
batch 32 at 8x8 output, batch 2 at 32x32) transforms its weights on every run into its step's
workspace (`transformed`) instead of keeping U, (m+2)^2 / 9 = 4x (F(4x4)) the kernel's bytes,
beside the parameters for the session's life. In the arena U lives during its step only, and
the convs with the largest U (the most channels) run late, where the activations are small.
Measured (benchmarks/memory_breakdown.py, peak / floor): vgg_bn@32 1.91 -> 1.16 (17.4 MiB of U
kept beside 6.4 of parameters and 16 of activations; the arena 18.8 -> 19.5 MiB, its peak at
conv2 again: 16 MiB of values, 3.5 of workspace; see conv.WINOGRAD_CHUNK_COLUMNS for the
256 -> 256 conv's U beside its chunks), resnet20@32 1.52 -> 1.02, inception_bn@32 1.20 -> 1.14
(with the transform's scratch in the conv's dtype key, F32). Time: the transform writes U once
(its GEMMs read it once per chunk): against them, (m+2)^2 x M x C x columns multiply-adds, its
cost falls as 1 / columns. Whole models against U kept (in-process interleaved, medians of
ratios, 300-400 rounds, a noisy shared machine): vgg_bn@32 1.03x (load 1.5) and 1.00x (load 3),
resnet20@32 1.01x, inception_bn@32 0.99x; in the model the transforms took ~1-2 ms of vgg_bn@32's
~45 (64 -> 64 0.1 ms ... 256 -> 256 0.6-1.0 ms on two threads). Under this many columns U is
kept (ConvStep's prepared-weight cache): a batch-1 run races PyTorch, and there every Winograd
conv of the suite is under it (64 tiles at 32x32, 16 at 16x16). Transforming at batch 1 too:
vgg_bn@1 1.08x the time for peak / floor 1.79 -> 1.66 (measured before its 8x8 convs ran
F(2x2) at batch 1, whose kept U made it 2.71; transformed every run 1.92); inception_bn@1 1.03x
and norms_acts@1 1.08x for a higher peak (2.20 -> 2.48, 2.53 -> 2.96: U and the temporaries
beside tiny activations)."""

TRANSFORM_BLOCK_BYTES = 1 << 20
"""`transform_into` works on blocks of output channels (of input channels for U^T) whose two
temporaries (the kernel re-laid, 9 x M_block x C, and G applied to its rows, 3(m+2) x M_block x
C) take at most this many bytes:
they stay in cache, and only U goes to memory. 256 -> 256 F(4x4) into a warm U (one thread,
medians of 30): 1.84 ms in one block (temporaries of 7 MiB), 0.71 in blocks of 1 MiB, 0.85 in
512 KiB, 0.94 in 256 KiB; into a fresh U (the cached path's) 1.71. 128 -> 128: 0.18, 0.16, 0.18,
0.18 and 0.21 ms. vgg_bn's 64-channel conv, the arena's peak, needs 0.43 MiB in one block."""

F32 = np.dtype(np.float32)
"""The dtype the transform takes its scratch in: a dtype object, as the conv kernels' takes
(x.dtype) are. Scratch places are keyed by (slot, dtype), and np.float32 (the type) hashes
apart from np.dtype(np.float32): with the type, the conv's slot 0 was a place of its own after
the temporaries instead of growing over them (vgg_bn@32's arena 21.0 MiB instead of 19.5)."""

U_SLOT, TEMP_SLOT = 8, 0
"""Scratch slots: U (in scratch 0, read by every thread's slice of the conv: past the slots the
conv kernels take, 0-7) and the transform's temporaries (in the scratch of the thread that
computes a block): slot 0, the conv's first take, which then grows where they were (see
`Scratch.take`) rather than being placed after them."""


TRANSFORM_PASSES = 3
"""A transform counts as this many element-wise passes over U against the threads' split
threshold (its temporaries written and read, U written): from 128 -> 128 channels (F(4x4)) it is
split over two threads. Split against one thread (warm scratch, in-process interleaved medians
of 60, load 0.8): 64 -> 64 1.64x the time (0.10 vs 0.06 ms: the hand-off), 128 -> 128 0.80x,
256 -> 128 0.68x, 256 -> 256 0.69x (0.57 vs 0.80 ms)."""


PER_RUN_TRANSPOSED_MAX_BYTES = 1 << 20
"""A per-run transform writes U^T (conv._winograd_cl's layout) when it takes at most this many
bytes (the L2 cache of one core), else U (conv._winograd_m's): a larger U^T costs 1.2-1.4x
U's transform and its GEMMs miss the warm U that U's order reads (see conv._winograd). Whole
models, per-run U^T everywhere against U everywhere (two sessions alternated, 40 rounds,
medians of ratios, load 1-2): resnet20@32 (32 and 64 channels: U^T of 147 and 590 KiB)
0.95-0.97x, vgg_bn@32 1.01-1.02x."""


def per_run_transposed(c: int, mo: int, m: int) -> bool:
    """Whether a per-run transform of a C -> M conv's weights writes U^T (see
    PER_RUN_TRANSPOSED_MAX_BYTES; float32)."""
    return (m + 2) ** 2 * c * mo * 4 <= PER_RUN_TRANSPOSED_MAX_BYTES


def per_run(batch: int, out_hw: tuple, m: int) -> bool:
    """Whether a Winograd F(m x m) conv with this batch and output height and width transforms
    its weights on every run (see PER_RUN_MIN_COLUMNS)."""
    return batch * ceil(out_hw[0] / m) * ceil(out_hw[1] / m) >= PER_RUN_MIN_COLUMNS


def transform_into(
    w: np.ndarray,
    m: int,
    u: np.ndarray,
    lo: int,
    hi: int,
    scratch: Scratch,
    transposed: bool = False,
) -> None:
    """u[:, lo:hi] = weight_transform(w, m, transposed)[:, lo:hi] (u: ((m+2)^2, M, C), or
    ((m+2)^2, C, M) `transposed`, float32), in blocks of output channels (input channels when
    `transposed`: U^T's rows) whose temporaries fit TRANSFORM_BLOCK_BYTES, taken from `scratch`:
    the same operations as `weight_transform`, on a block's kernels."""
    g = _G32[m]
    t = m + 2
    mo, c = w.shape[:2]
    inner = mo if transposed else c  # the other channel count: a block row's length
    step = max(1, TRANSFORM_BLOCK_BYTES // (3 * (3 + t) * inner * 4))
    uf = u.reshape(t, t, mo * c)
    for o0 in range(lo, hi, step):  # a loop over blocks of (output or input) channels
        o1 = min(hi, o0 + step)
        n = (o1 - o0) * inner
        temp = scratch.take(TEMP_SLOT, (9 + 3 * t) * n, F32)
        w9 = temp[: 9 * n].reshape(9, n)
        if transposed:  # (3, 3, C block, M), in blocks of output channels (kernels C x 9 apart)
            w9t, wt = w9.reshape(3, 3, o1 - o0, mo), w[:, o0:o1].transpose(2, 3, 1, 0)
            ob = transpose_block(c * 9 * w.itemsize)
            for q0 in range(0, mo, ob):  # a loop over blocks of output channels
                np.copyto(w9t[..., q0 : q0 + ob], wt[..., q0 : q0 + ob])
        else:
            np.copyto(w9, w[o0:o1].reshape(n, 9).T)
        rows = temp[9 * n :].reshape(t, 3 * n)
        np.matmul(g, w9.reshape(3, 3 * n), out=rows)
        np.matmul(g, rows.reshape(t, 3, n), out=uf[:, :, o0 * inner : o1 * inner])


def transformed(
    w: np.ndarray, m: int, parallel: Callable, scratch: Scratch, transposed: bool = False
) -> np.ndarray:
    """U of `w` (as `weight_transform`, U^T when `transposed`) in `scratch`'s U_SLOT (the
    plan's scratch 0, alive for the step), computed over `parallel`'s threads by blocks of
    output channels (input channels for U^T; see TRANSFORM_PASSES)."""
    t = m + 2
    mo, c = w.shape[:2]
    u = scratch.take(U_SLOT, t * t * mo * c, F32)
    u = u.reshape((t * t, c, mo) if transposed else (t * t, mo, c))
    parallel(
        c if transposed else mo,
        lambda lo, hi, s: transform_into(w, m, u, lo, hi, s, transposed),
        TRANSFORM_PASSES * ELEMENT_FLOPS * u.size,
    )
    return u


BLOCK_BYTES = 1 << 20
"""A conv whose weight the lean plan transforms block by block (`KernelBlocks`) takes U in
blocks of output channels whose U block and transform temporaries take at most this many bytes
(or the plan's smaller budget for the conv; at least BLOCK_MIN_ROWS channels): the block stays
in cache between its transform and its GEMMs, and only one block is ever in memory (no U of
(m+2)^2 / 9 times the kernel kept, nor a whole one in the workspace)."""

BLOCK_MIN_ROWS = 8
"""Output channels of a U block at least (fewer make GEMMs too thin for BLAS: a stack of
(m+2)^2 of them per block)."""


@dataclass(frozen=True)
class KernelBlocks:
    """A 2-D Winograd conv's kernel `w` (M, C, 3, 3), transformed on every run block by block of
    `rows` output channels as the conv's GEMMs need them (conv._u_block: U's block
    ((m+2)^2, rows, C) in the conv's workspace, then that block's GEMMs): the lean plan's
    Winograd, with no transformed weight kept beside the parameters. Each block runs
    `transform_into`'s operations (non-transposed) on its kernels."""

    w: np.ndarray
    rows: int


def _row_bytes(c: int, m: int) -> int:
    """Bytes of one output channel's U block row and its transform temporaries (float32)."""
    t = m + 2
    return (t * t + 3 * t) * c * 4


def block_rows(c: int, mo: int, m: int, budget: int = BLOCK_BYTES) -> int:
    """Output channels per U block of a C -> M F(m x m) conv: equal blocks whose U and
    temporaries take at most `budget` bytes (at least BLOCK_MIN_ROWS channels, all M when
    fewer)."""
    rows = max(BLOCK_MIN_ROWS, min(budget, BLOCK_BYTES) // _row_bytes(c, m))
    if rows >= mo:
        return mo
    return -(-mo // -(-mo // rows))


def block_bytes(c: int, mo: int, m: int, budget: int = BLOCK_BYTES) -> int:
    """Workspace bytes of a `KernelBlocks` conv's block (`block_rows`): U's block and its
    transform's two temporaries (the kernels re-laid, 9 x rows x C, and G applied to their
    rows, 3(m+2) x rows x C), from above (the temporaries take the padded input's dead place
    where it fits)."""
    return _row_bytes(c, m) * block_rows(c, mo, m, budget)


U_BLOCK_SLOT, U_BLOCK_TEMP_SLOT = 6, 0
"""Scratch slots of a `KernelBlocks` conv's U block (past the slots the 2-D Winograd kernels
take, 0-4) and its transform's temporaries: slot 0, the padded input's, dead once the tiles
are gathered (before the GEMMs); it grows where it is or moves past the others when they do
not fit (see `Scratch.take`)."""


def transform_block(
    wb: KernelBlocks, m: int, m0: int, m1: int, scratch: Scratch, call: Callable
) -> np.ndarray:
    """U's block for output channels m0:m1 of `wb`'s kernel, ((m+2)^2, m1 - m0, C) float32 in
    `scratch` (U_BLOCK_SLOT): `transform_into`'s operations on the block's kernels, every NumPy
    call made through `call(fn, *args, **kw)` (conv's recording `_call`): the kernels re-laid
    (3, 3, rows, C) from a view of the parameter (no copy of it), G on their rows (one GEMM,
    K = 3), G on their columns (a stack of m+2 GEMMs) into the block."""
    g = _G32[m]
    t = m + 2
    w = wb.w
    c = w.shape[1]
    n = (m1 - m0) * c
    u = scratch.take(U_BLOCK_SLOT, t * t * n, F32)
    w9 = u[: 9 * n]  # (the re-laid kernels in the block's place: dead once G took their rows)
    call(np.copyto, w9.reshape(3, 3, m1 - m0, c), w[m0:m1].transpose(2, 3, 0, 1))
    rows = scratch.take(U_BLOCK_TEMP_SLOT, 3 * t * n, F32).reshape(t, 3 * n)
    call(np.matmul, g, w9.reshape(3, 3 * n), out=rows)
    call(np.matmul, g, rows.reshape(t, 3, n), out=u.reshape(t, t, n))
    return u.reshape(t * t, m1 - m0, c)
