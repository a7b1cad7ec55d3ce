"""Fast convolution algorithms for the compiled plan. NCHW in, NCHW out, no transpose after a GEMM:
each algorithm writes the output's own layout straight from the GEMM (weights on the left).

- `pointwise`: 1x1 kernel, no padding: Y[n] = W (M, C) @ X[n] (C, pixels); a stride is one
  strided gather first. No im2col at all.
- `winograd`: 3x3, stride 1, undilated, ungrouped, 24+ channels (see `winograd.py`):
  F(4x4, 3x3), or F(2x2, 3x3) when the output is under 4x4 or, for a wide conv, when a batch
  has too few F(4x4) tiles but enough of F(2x2)'s (steps.linear.FEW_TILES_F2_MIN_CHANNELS).
  Takes and writes channels-last arrays held as NCHW views (`is_channels_last`): the plan's
  hand-off between Winograd convs (CHANNELS_LAST_MIN_IMAGES), no transposing copy at either end.
- `wino3d`: kt x 3 x 3, stride 1, undilated, ungrouped (kt >= 3, or 32+ input channels: see
  WINOGRAD3D_FEW_TAPS_MIN_CHANNELS): F(4x4) (F(2x2) under 4 output rows or columns) over (H, W)
  with the kt temporal taps stacked in the GEMM's depth (see `_winograd3d`). Measured against
  im2col (wide rows; one thread, in-process interleaved medians of ratios, 30 rounds, pads 1,
  bias + ReLU; batch 1 / 16): video3d's convs 3 -> 16 at 8x32x32 0.87 / 0.91x, 16 -> 32 at
  8x16x16 0.55 / 0.53x, 32 -> 64 at 4x8x8 0.52 / 0.49x; F(2x2) 1.38 / 1.31x, 0.78 / 0.77x,
  0.57 / 0.57x.
- `colstack`: 2-D, ungrouped, unit stride and dilation along the width, 16 to 47 input and
  under 48 output channels (ResNet's 16-channel 3x3 convs), or fewer input channels with a deep
  enough GEMM (LeNet's 6 -> 16 5x5, see COLSTACK_NARROW_MIN_DEPTH), or a kernel one column wide
  (Inception's 3x1, under 128 output channels: see `_colstack_fits`), or one row wide
  (Inception's 1x3: the input itself is the operand, see COLSTACK_ONE_ROW): the kernel's columns
  stacked in the GEMM's rows, Z (kw*M, pixels) = W' (kw*M, C*kh) @ rows (C*kh, pixels), then
  Y = sum_j Z_j shifted by j along the width: a third of im2col's copy (kh row-shifted
  copies, not kh*kw) and a GEMM kw times taller (M=16 GEMMs run at ~2/3 of BLAS's rate).
  The rows are the input's own whenever the width is padded (no padded copy: the shifted
  sum's reads past a row's ends land on zeroed columns) or the kernel is one row (the input
  itself), else padded rows.
  Also what a conv planned as Winograd runs, under 128 output channels, on a batch with too few
  tiles (`few_tiles_fallback`), unless F(2x2) has enough tiles and the conv is wide (ConvStep,
  FEW_TILES_F2_MIN_CHANNELS); and a float64 graph's 3x3 convs (Winograd rounds in float32).
  Under a fused tiling MaxPool, from BATCH_LAST_MIN_IMAGES images (LeNet's second conv at
  batch 32; input planes not a multiple of 4 KiB, see `_batch_last`), `_im2col_batch_last`
  instead: exact im2col columns of an images-innermost copy of the input (each a run of output
  width x images values).
- `phasepool`: a 2-D conv with under 8 output channels whose output a fused MaxPool tiles, its
  window at most PHASE_POOL_MAX_WORK times the kernel (LeNet's first): the pool's tile
  positions stacked in the GEMM's rows over one operand of the input's phases, the pool a max
  over the GEMM's row blocks (see `_phase_pool`); from PHASE_POOL_BATCH_LAST_MIN_IMAGES images
  with the images innermost (exact columns, one GEMM over the chunk: `_phase_pool_batch_last`);
  a chunk with an inf or NaN input runs im2col (the phases' zero taps would make 0 * inf).
  Both batch-last paths also read an input and write an output held batch-last (the plan's
  hand-off between LeNet's two convs and into its first Gemm, see `images_innermost`): no
  transposing copy at either end.
- `im2col`: everything else (any rank, stride, dilation, group): the padded input's window view
  copied once into (C/group * taps, pixels) columns, then Y[n, g] = W[g] @ cols[n, g].

All five work on batch chunks sized so their workspaces stay near `WORKSPACE_BYTES` (the whole
batch at once would need a 2-10x larger im2col matrix than the activations themselves: the peak
memory target); im2col splits an image too large for it into slabs of output rows
(SLAB_MIN_COLUMNS). Workspaces come from a `Scratch` shared by all steps. The bias and a
following element-wise op (ReLU, LeakyReLU, a residual Add) are applied to each chunk while it
is in cache (an "epilogue"); ReLU as `relu_`, NumPy's maximum against a block of zeros
(RELU_BLOCK: against the scalar 0 it misses NumPy's SIMD loop).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from math import ceil, prod

import numpy as np

from graphnet.runtime.fast.memory import ALIGN, Scratch
from graphnet.runtime.fast.winograd import (
    SEPARABLE,
    KernelBlocks,
    transform_block,
    transpose_block,
    weight_transform,
)

__all__ = [
    "ConvSpec",
    "activate",
    "choose",
    "prepare_weight",
    "conv_chunked",
    "strided_windows",
    "padded",
    "view",
    "WORKSPACE_BYTES",
    "BIAS_COLUMN_MAX_DEPTH",
    "COLSTACK_OVERWRITE_MIN_BATCH",
    "Epilogue",
    "wide_rows",
    "few_tiles_fallback",
    "is_channels_last",
    "CHANNELS_LAST_MIN_IMAGES",
    "overwrites_residual",
    "relu_",
    "phase_pool",
    "taps_workspace",
    "TAPS_MAX_CHANNELS",
]

WORKSPACE_BYTES = 1 << 20  # per chunk: stays in cache and bounds the peak memory
WINOGRAD_WORKSPACE_BYTES = 2 << 20
"""Winograd's chunks are larger: its (m+2)^2 GEMMs have only `images x tiles` columns, and
under ~64 of them (e.g. 256 channels at 8x8: 4 tiles per image, 1 image per MiB) the GEMMs run
at a fraction of BLAS's rate (measured: 19 ms at 1 MiB, 10 ms at 16 MiB for 16 images). With
WINOGRAD_CHUNK_COLUMNS as the floor, 2 MiB was as fast as 4 MiB or faster (0.93-1.0x, 32-256
channels at 8x8-32x32, batch 16, one thread) and holds half the scratch. Re-checked on two
threads at batch 32 (resnet20's 32 -> 32 16x16 and 64 -> 64 8x8, bias + residual + ReLU,
interleaved medians of ratios, load 4-5): 1 MiB 1.05-1.07x the time, 3 MiB 1.01-1.10x, 4 MiB
1.01-1.02x; even chunk sizes (8 + 8 images instead of 15 + 1, as many chunks) 0.99x at 32
channels but 1.05x at 64 channels 8x8 (one thread, batch 16). A last chunk under a quarter of
the others' images is spread over them instead (`_winograd`; the others then hold up to a
quarter more: resnet20@16's held bytes 3.90 -> 4.02 MiB, unchanged at batch 32): 64 -> 64 8x8 as
16 images in one chunk instead of 15 + 1, 0.91-0.92x the time on one thread (batch 16), 0.94x
on two (batch 32), 100 interleaved rounds."""
WINOGRAD_CHUNK_COLUMNS = 32
"""A Winograd batch chunk holds at least this many tile columns when the batch has them. It was
64: vgg_bn@32's 256-channel 8x8 convs then took 16 images a chunk, 7 MiB of workspace per
thread, which with their transformed weights in the step's workspace (winograd.PER_RUN_MIN_COLUMNS,
9 MiB for 256 -> 256) set the arena (27 MiB, for 18.8 at its 16 MiB of activations); with 32,
21 MiB. 32 against 64 (two threads, whole batch, 40 interleaved rounds, medians of ratios):
0.93x at 256 -> 256 8x8 batch 32, 0.98x 128 -> 256 8x8, 0.90x 128 -> 128 16x16, 1.01x 256 ->
256 8x8 batch 16, 0.99x at batch 8."""
MIN_WINOGRAD_COLUMNS = 16
"""Fewer tile columns in the whole batch than this (batch 1 at 8x8: 4 with F(4x4)) run im2col
(ConvStep): measured at batch 1, one thread, interleaved min times, F(4x4) took 0.76-0.83x of
im2col's time with 16 columns (64-128 channels at 16x16) and 1.3-1.5x with 4 (128-256 at
8x8): its (m+2)^2 transformed weights are then read for too few columns. Re-measured with 4
columns at 64 channels (resnet20@1's 64 -> 64 8x8, colstack's fallback; bias + residual +
ReLU): F(4x4) alone 0.77-0.80x colstack's time (U hot in L2), but resnet20@1 with its five
such convs on F(4x4) 0.987-0.995x (two sessions, in-process interleaved, 400-600 rounds,
quartiles 0.91-1.08) for 2.2 MiB more kept weights (U, 4x the kernel): not taken."""
NARROW_MIN_WINOGRAD_COLUMNS = 32
"""... and this many for a narrow conv (input and output channels under COLSTACK_MAX_CHANNELS,
which the fallback runs as colstack): at batch 1 with 16 columns (32 channels at 16x16) colstack
was faster; whole-model A/B in one process (interleaved, min of 10 runs, 30 rounds, AMD EPYC 2
cores): resnet20@1 0.93x and inception_bn@1 0.96x the time with 16 columns sent to colstack,
while vgg_bn@1's 64-128 channel convs were 1.05x slower sent to im2col (hence narrow only).
Re-measured: resnet20@1's 32 -> 32 16x16 convs alone on F(4x4) 0.91x colstack's time (bias +
residual + ReLU), the model 1.006x with 16 columns (600 rounds): unchanged."""
WINOGRAD_ALIASED_PLANE_BYTES = 4096
"""Winograd pads its input channels-last, (b, hp, wpad, C), so that the tile gather copies
runs of C contiguous values (from NCHW its inner loop read one value per channel plane), unless
an input plane's bytes are a multiple of this: the transposing copy then reads C values 4 KiB
apart (32x32 float32 planes), which alias in the cache (measured 4-9x slower than the padded
NCHW copy at 64 channels, 32x32, batch 1-4; 24x24, 28x28 and 40x40 planes transposed fast).
Pad and gather together took 0.44-0.87x the time of NCHW's (8x8-28x28, 32-256 channels, batch 1
and 16); whole convs (one thread, interleaved, medians of ratios): 0.85-0.96x at batch 16
(24-64 channels, 8x8-16x16), 0.86x at 256 channels 8x8 batch 1, others equal. Aliasing planes
now gather straight into the GEMMs' (C, tiles) order (no V copy): against that, channels-last
with its pad in channel blocks (`transpose_block`), its gather and V's copy took 1.11x the time
(64 channels, 32x32, batch 1; 2.4x with the pad in one block), at 16x16 and 8x8 0.28-0.63x
(benchmarks/winograd_layouts.py)."""
CHANNELS_LAST_MIN_IMAGES = 1
"""A Winograd conv the plan hands off channels-last (ConvStep.channels_last: every reader is
another Winograd conv) writes its output so from this many images, else NCHW (either layout
goes to any reader, see `is_channels_last`). Channels-last in and out, one conv (one thread,
in-process interleaved medians of ratios, 40-400 rounds; `_winograd_cl`): 0.83x the time at
32 -> 32 16x16 batch 16 with a residual (0.90x without), 0.89x 64 -> 64 8x8 batch 16 (0.90x at
batch 1), 0.83x 128 -> 128 16x16 batch 16, 0.94x at batch 1, 0.95x F(2x2) 256 -> 256 8x8 batch 1;
with U (`_winograd_m`, per-run weights past winograd.PER_RUN_TRANSPOSED_MAX_BYTES) 0.95-1.04x.
Whole models (in-process interleaved medians of ratios, a loaded machine, load 2-4):
resnet20@32 0.956-0.982x (two sessions; its 32- and 64-channel convs per step 0.91-0.96x),
vgg_bn@32 0.97x; vgg_bn@1 0.974-0.982x (one session, the steps' flags toggled between runs,
600-800 rounds; min times 0.98-1.01x), where two sessions each way differed by up to 4% from
the arena's placement alone (four sessions: on / off 0.955-1.016, off / off 1.036)."""
WINOGRAD_MIN_CHANNELS = 24
"""3x3 stride-1 convs run Winograd from this many input and output channels: measured against
colstack and im2col at batch 16 (one thread, interleaved min times), F(4x4) took 0.92x of
colstack's time at 24-32 -> 32 channels (16x16), 0.77-0.82x at 32 -> 48-64; at 16 -> 16
(32x32) 1.19x (its GEMMs, 16 deep, are then too cheap to pay for the transforms).
Re-measured at 16 -> 16 (32x32, batch 16): F(4x4) 1.24x colstack's time, F(2x2) 1.9x. F(4x4)'s
parts for the 16 images: GEMMs 0.5 ms, the tile copy 0.3-0.7, input transform 0.9, output
transform 0.45-0.8, copy out 0.2-0.4; colstack's GEMM alone takes 1.2 ms (72 GFLOP/s, near
BLAS's 85 on one core), the rest 0.9. An HWNC tile layout made F(4x4)'s transforms 1.5-2x
cheaper, but the NCHW <-> HWNC transposes at both ends cost more than that (a prototype took
1.5x colstack's time): Winograd would pay at 16 channels inside a channels-last stage only.
Re-measured with the bias added in M (resnet20's 16 -> 16 at 32x32, bias + residual + ReLU,
in-process interleaved medians of ratios, a loaded machine): F(4x4) 1.07-1.13x colstack's time
on one thread (batch 16), 0.97-1.07x on two (batch 32), F(2x2) 1.34-1.42x; forced channels-last
1.27-1.29x. F(4x4)'s parts (NCHW, batch 16, one thread): the tile gather 30% (NumPy inner loops
of tw = 8 values 16 bytes apart), the two B^T GEMMs 21%, the GEMMs 14%, the pad 8%, the copy out
with the residual 8%; channels-last, without its two transposes, the rest still took ~1.2x
colstack's whole time (one run): a channels-last stage alone would not make it pay either."""
COLSTACK_MIN_CHANNELS = 16
COLSTACK_MAX_CHANNELS = 48
"""`colstack` from 16 input channels, under 48 in and out: measured against im2col with wide
rows at batch 16 (interleaved, one thread, min times): 0.84-0.87x the time at 16 -> 16
channels (3x3, 32x32), 0.77x (5x5, 16x16), 0.93x at 32 -> 32 (16x16); equal from 48 output
channels (im2col's GEMM is no longer thin); 1.3-1.6x slower at 1-6 input channels (its kw-1
extra passes over the output then cost more than the copies it saves)."""
COLSTACK_ONE_ROW = 0.7
"""A 1xk kernel (one row, no row padding or stride) runs colstack on the input itself (its
rows are the GEMM's operand: no copy at all, see `_colstack`) when the copy im2col makes (c_in x
k rows) is at least this fraction of the passes colstack adds over its GEMM's output (c_out x
(k - 1) rows): measured against im2col's exact columns (one thread, in-process interleaved
medians, batch 16 / 1): 16 -> 24 1x3 at 16x16 0.75 / 0.81x, 16 -> 32 at 8x8 0.89 / 0.80x,
8 -> 16 at 16x16 0.94 / 0.84x, 64 -> 64 at 8x8 0.64 / 0.74x, 256 -> 256 at 8x8 0.89 / 0.89x,
128 -> 128 1x7 at 17x17 0.91 / 0.90x, 64 -> 64 at 32x32 0.95x; below it slower: 4 -> 8 1x5
1.36x, 32 -> 192 1x7 at 17x17 1.31x, 3 -> 16 1x3 1.9x (padded rows there)."""
COLSTACK_ONE_COLUMN_MAX_OUT = 128
"""A kx1 kernel runs colstack under this many output channels (see `_colstack_fits`)."""
COLSTACK_MIN_DEPTH = 48
"""... and a GEMM depth (input channels x kernel rows) from this (kernels of more than one row):
1x3 kernels at 8-16 channels on padded rows (depth 8-16) ran 1.2-1.5x slower than im2col (thin
GEMMs, and kw passes over the output); a 1xk kernel on the input itself goes by
COLSTACK_ONE_ROW instead."""
COLSTACK_NARROW_MIN_DEPTH = 30
COLSTACK_DEPTH_PER_OUTPUT = 1.75
"""Under 16 input channels, colstack from a depth of 30 that is also at least 1.75x the output
channels: it saves kw-1 of kw copies of the input columns (c * kh rows each) and adds kw-1 passes
over the output (M rows), so it wins when the depth is large against M. Measured against im2col
(with the Z_0 in-place sum; one thread, 20 interleaved rounds, min times, batch 16 / batch 1):
6 -> 16 5x5 at 14x14 (LeNet's second conv, depth 30) 0.87 / 0.88x, 12 -> 16 3x3 at 16x16
0.87 / 0.82x, 12 -> 32 5x5 0.94 / 0.88x, 6 -> 6 5x5 0.71 / 0.73x; at depth / M of 1.1-1.5
(6 or 8 -> 16 3x3) 0.98-0.99x at batch 16; below 1.3 slower (8 -> 32 5x5 1.05x, 3 -> 16 5x5
1.15x, 1x3 kernels at 8-16 channels on padded rows 1.07-1.27x)."""


COLSTACK_STACKED_MIN_MNK = 500_000
"""colstack's GEMM (kw x M rows) runs as kw GEMMs of M rows each, one stacked np.matmul, when
each is of at least this size (M x depth x columns) and at most SMALL_GEMM_MNK (unblocked: the
small-matrix kernels). Measured against the one GEMM cut into blocks of columns (one thread,
in-process interleaved medians of ratios, GEMMs alone): 16 x 49 x 1024 (ResNet-20's 16 -> 16,
2-3 images) 0.96-0.97x the time, 32 x 97 x 256 0.99x, 32 x 73 x 256 0.99x, 64 x 193 x 64
(8 images) 0.86x; from 1.2M (48 x 97 x 256) 1.015x; under 100K (LeNet's 16 x 31 x 140, 20 x
49 x 99) 1.04-1.05x: more and smaller calls."""


@dataclass(frozen=True)
class ConvSpec:
    """A Conv node's resolved, static facts the algorithm depends on."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    c_in: int
    c_out: int


@dataclass
class Epilogue:
    """What is applied to each output chunk after the GEMM, in order: bias (per output
    channel), an optional residual added element-wise (a graph value, read per chunk), and an
    activation ("relu" or ("leaky", alpha))."""

    bias: np.ndarray | None = None
    residual: Callable[[], np.ndarray] | None = None
    activation: tuple = ()
    names: list[str] = field(default_factory=list)  # fused nodes, for describe()
    aliased: bool = False
    """The output is the residual's own buffer (the residual dies at this conv, which writes over
    it: see `overwrites_residual`): a chunk's residual is read before its output is written."""

    # (kh, kw) of a MaxPool tiling the output (kernel = stride, no padding), fused by im2col,
    # colstack, phasepool ((kt, kh, kw) by wino3d): the output holds the pooled values; bias
    # and activation go after the max (both monotone per channel), no residual
    pool: tuple = ()


COLSTACK_OVERWRITE_MIN_BATCH = 8
"""colstack writes over a dying residual (`overwrites_residual`) from this many images: over
it, its own rows cannot take the output as the sum's base (a third GEMM output plane in the
workspace instead). Measured (16 -> 16 channels 3x3 at 32x32, bias + residual + ReLU, one
thread, in-process interleaved medians of ratios, over the residual / into a buffer of its
own): 1.025x the time at batch 1, 1.027x at 2, 1.013x at 4, 0.997x at 16; 32 channels at 16x16
batch 4 0.98x. Under 8 images resnet20's arena peak is at its convs' workspaces, not at a block
(the same arena at batch 1-4 either way; 3.40 -> 2.90 MiB at batch 8, 7.90 -> 6.52 at 32)."""


def overwrites_residual(algo: str, spec: ConvSpec, out_shape: Sequence[int]) -> bool:
    """Whether `algo` writes its output over the residual's buffer (`Epilogue.aliased`) when
    the residual dies at the conv: it adds the residual while copying a chunk's result out of
    a workspace, never writing the output first. colstack (its own rows without the output as
    the sum's base, or padded rows: a crop; from COLSTACK_OVERWRITE_MIN_BATCH images) and an
    exact Winograd (tiles that cover the output: the copy out adds it; 0.99x the time at 64
    channels 8x8 batch 16) do; pointwise, im2col and a cropped Winograd write their GEMM or
    tiles into the output first, then add the residual."""
    if algo == "colstack":
        return out_shape[0] >= COLSTACK_OVERWRITE_MIN_BATCH
    if algo.startswith("winograd") and len(out_shape) == 4:
        m = 4 if algo.endswith("f4") else 2
        return out_shape[2] % m == 0 and out_shape[3] % m == 0
    return False


def choose(spec: ConvSpec, spatial_out: Sequence[int | str | None]) -> tuple[str, str]:
    """(algorithm, why) for a conv; `spatial_out` may hold non-int dims (dynamic)."""
    k = len(spec.kernel)
    if any(p < 0 for p in spec.pads):
        return "reference", "negative pads (a crop) are left to the plain kernel"
    if (
        all(v == 1 for v in spec.kernel)
        and not any(spec.pads)
        and all(d == 1 for d in spec.dilations)
    ):
        return "pointwise", "1x1 kernel without padding: a plain matmul per image"
    if (
        k == 3
        and spec.kernel[1:] == (3, 3)
        and spec.strides == (1, 1, 1)
        and spec.dilations == (1, 1, 1)
        and spec.group == 1
        and (spec.kernel[0] >= 3 or spec.c_in >= WINOGRAD3D_FEW_TAPS_MIN_CHANNELS)
    ):
        small = all(isinstance(d, int) for d in spatial_out) and min(spatial_out[1:]) < 4
        return ("wino3d-f2" if small else "wino3d-f4"), (
            f"{spec.kernel[0]}x3x3 stride 1: a 2-D Winograd over (H, W), the temporal taps "
            "stacked in the GEMM's depth (see `_winograd3d`)"
        )
    if (
        k == 2
        and spec.kernel == (3, 3)
        and spec.strides == (1, 1)
        and spec.dilations == (1, 1)
        and spec.group == 1
    ):
        if spec.c_in < WINOGRAD_MIN_CHANNELS or spec.c_out < WINOGRAD_MIN_CHANNELS:
            if _colstack_fits(spec):
                return "colstack", (
                    f"{spec.c_in} input channels: kernel columns stacked in the GEMM's rows "
                    "(a third of im2col's copy, a taller GEMM); Winograd's transforms would "
                    "cost what they save"
                )
            # Per output and input channel, direct conv does 9*M multiplications; F(4x4) does
            # 2.25*M in its GEMMs plus ~27 + 9*M/C in its transforms, which move 2.25x the
            # input through memory several times (see WINOGRAD_MIN_CHANNELS).
            return "im2col", (
                f"3x3 with under {WINOGRAD_MIN_CHANNELS} input or output channels: Winograd's "
                "transforms would cost what they save"
            )
        small = all(isinstance(d, int) for d in spatial_out) and min(spatial_out) < 4
        if small:
            return "winograd-f2", "3x3 stride 1, output under 4x4: F(2x2,3x3), 2.25x fewer MACs"
        return "winograd-f4", "3x3 stride 1: F(4x4,3x3), 4x fewer multiplications in the GEMMs"
    if _colstack_fits(spec):
        if spec.kernel[1] == 1:
            return "colstack", (
                "kernel one column wide: its rows' shifted copies of the input, one contiguous "
                "run per channel, as the GEMM's operand"
            )
        return "colstack", (
            f"{spec.c_in} input channels, unit stride along the width: kernel columns stacked "
            "in the GEMM's rows (a third of im2col's copy, a taller GEMM)"
        )
    return "im2col", "general kernel/stride/dilation/group: im2col + one GEMM per group"


def few_tiles_fallback(spec: ConvSpec) -> str:
    """What a conv planned as Winograd runs on a batch with too few tiles (ConvStep), unless
    F(2x2) has enough (see steps.linear.FEW_TILES_F2_MIN_CHANNELS): colstack under 128 output
    channels, else im2col (with exact columns there, see `wide_rows`).
    Measured at batch 1 (one thread, interleaved min times, benchmarks/conv_algorithms.py):
    colstack took 0.81x of im2col's time at 64 -> 64 channels, 8x8; 1.12x at 256 -> 256."""
    if spec.c_out < WIDE_MAX_OUT_CHANNELS and spec.c_in * spec.kernel[0] >= COLSTACK_MIN_DEPTH:
        return "colstack"
    return "im2col"


def _colstack_fits(spec: ConvSpec) -> bool:
    """Whether colstack runs this 2-D conv (see COLSTACK_*). A kx1 kernel (one column, k > 1
    rows) runs it with any input channels: Z is then the whole GEMM (no shifted sum) over
    operand rows that are the kh row-shifted copies of the padded input, one contiguous run per
    channel (exact im2col copies one output row at a time). Measured against im2col
    (benchmarks/conv_algorithms.py, one thread, interleaved min times): Inception's 3x1 convs
    (16-32 channels, 8x8-16x16) took 0.76-0.87x of wide rows' time and 0.93-0.95x of exact
    columns' at batch 16, 0.80-0.85x of exact columns' at batch 1; 4 -> 8 and 8 -> 16 at 16x16
    0.75-0.84x, 64 -> 64 at 8x8 0.86-0.90x, 3 -> 16 5x1 at 32x32 0.83-0.98x, 128 -> 128 7x1 at
    8x8 0.97-1.0x. From COLSTACK_ONE_COLUMN_MAX_OUT output channels its pass from Z to the
    output costs what the copy saves: Inception-v3's 7x1 at 17x17 to 192 channels took 1.0x
    (128 or 192 in) and 1.07x (32 in) of exact columns' time at batch 16: im2col there."""
    if not (
        len(spec.kernel) == 2
        and spec.strides[1] == 1
        and spec.dilations[1] == 1
        and spec.group == 1
    ):
        return False
    if spec.kernel[1] == 1:
        return spec.kernel[0] > 1 and spec.c_out < COLSTACK_ONE_COLUMN_MAX_OUT  # kx1: above
    if spec.kernel[0] == 1:  # 1xk: the input itself is the GEMM's operand (see COLSTACK_ONE_ROW)
        return (
            spec.strides[0] == 1
            and not (spec.pads[0] or spec.pads[2])
            and spec.c_in * spec.kernel[1] >= COLSTACK_ONE_ROW * spec.c_out * (spec.kernel[1] - 1)
        )
    if not (spec.c_in < COLSTACK_MAX_CHANNELS and spec.c_out < COLSTACK_MAX_CHANNELS):
        return False
    depth = spec.c_in * spec.kernel[0]
    if spec.c_in >= COLSTACK_MIN_CHANNELS:
        return depth >= COLSTACK_MIN_DEPTH
    return depth >= COLSTACK_NARROW_MIN_DEPTH and depth >= COLSTACK_DEPTH_PER_OUTPUT * spec.c_out


def prepare_weight(
    algo: str, w: np.ndarray, group: int, dtype: np.dtype, bias: np.ndarray | None = None
) -> np.ndarray:
    """The weight in the layout `algo` multiplies with: (G, M/G, C/G * taps) for im2col and
    pointwise, ((m+2)^2, C, M) transformed (U^T) for Winograd, (kw * M, C * kh) for colstack (row
    (j, m), column (c, i) holds w[m, c, i, j]). With `bias` (im2col and colstack), the bias is
    one more column, multiplied by a row of ones that the algorithm adds to its columns: the
    GEMM adds the bias, saving a pass over the output (colstack: in the rows of the middle
    kernel column kw // 2 only, zeros in the others, as the shifted rows are summed: the base of
    the sum on the input's own rows with "same" padding). im2col takes the bias column
    only under BIAS_COLUMN_MAX_DEPTH: deeper, its weight is a view of `w` (no copy when `w` is
    contiguous and of `dtype`) and the kernel adds the bias in its epilogue."""
    if algo.startswith("winograd"):
        return weight_transform(w, 4 if algo.endswith("f4") else 2, transposed=True)
    if algo == "tapgemm":  # the kernel as it is: each tap's (M, C) matrix a view of it
        return w.astype(dtype, copy=False)
    if algo.startswith("wino3d"):  # U'[p, m, (dt, c)]: each temporal tap's 3x3 transformed
        mo, c = w.shape[:2]
        w2 = w.transpose(0, 2, 1, 3, 4).reshape(mo, w.shape[2] * c, 3, 3)
        return np.ascontiguousarray(weight_transform(w2, 4 if algo.endswith("f4") else 2), dtype)
    m = w.shape[0]
    if algo.startswith("phasepool"):
        return _phase_pool_weight(w, _phase_pool_tile(algo), dtype, bias)
    if algo == "colstack":
        kw = w.shape[3]
        ws = w.transpose(3, 0, 1, 2).reshape(kw * m, -1)
        if bias is not None:  # in the rows of the middle kernel column (see `_colstack`)
            col = np.zeros((kw * m, 1), ws.dtype)
            col[kw // 2 * m : (kw // 2 + 1) * m, 0] = bias
            ws = np.concatenate([ws, col], axis=1)
        return np.ascontiguousarray(ws, dtype=dtype)
    wg = w.reshape(group, m // group, -1)
    if bias is not None and algo == "im2col" and wg.shape[-1] < BIAS_COLUMN_MAX_DEPTH:
        wg = np.concatenate([wg, bias.reshape(group, m // group, 1).astype(wg.dtype)], axis=2)
    return np.ascontiguousarray(wg, dtype=dtype)


BIAS_COLUMN_MAX_DEPTH = 1024
"""im2col's weight carries the bias column (a copy of the weight) only for a GEMM depth (input
channels per group x taps) under this; deeper, the weight is a view of the parameter and the
bias is added in the epilogue (in the crop of wide rows or a slab's copy out, else a pass over
each output chunk). The pass costs time in proportion to the output (M x pixels), the copy
memory in proportion to the weight (M x depth): dropping the column pays most where the depth
is large against the pixels, the late convs of a net (VGG's 128-256 channels at 4x4-8x8, depth
1152-2304: 3.4 MiB of copies, half of vgg_bn's parameters, when its 8x8 convs ran im2col at
batch 1; they run F(2x2) there now, see ConvStep). The weight is prepared once for every
input shape, so the depth alone decides.
Measured per conv against the bias column (one thread, 30 interleaved rounds, min times, batch
1 / 8, bias + fused ReLU): depth 25-27 1.05-1.09 / 1.08-1.22x the time, 81-864 (video3d's,
ResNet-20's strided) 0.98-1.03 / 1.01-1.03x, 1152-2304 1.00-1.03 / 0.99-1.02x; whole models
(in-process, interleaved, 40 rounds; an A/A pair of the same plan differed by up to 7% in min
time on this busy VM): vgg_bn@1 1.00-1.12x min, 0.96-1.03x median for peak/floor 2.29 ->
1.80; views from depth 256 also took video3d@32 1.05-1.07x (0.26 MiB saved of 32)."""

RELU_BLOCK = 1 << 16
"""ReLU runs as np.maximum(y, zeros) over blocks of this many elements of a contiguous y:
NumPy's maximum against a scalar (a stride-0 operand) misses its SIMD loop (NumPy 2.4, AVX2)
and ran 3.5-5x slower than against a contiguous array of zeros. Measured in place on random
float32 data (min of 200 runs): blocks of 64K elements took 0.3x of np.maximum(y, 0)'s time at
1 MiB, 0.34x at 8 MiB, 0.6-0.7x at 16-256 KiB; 4K-element blocks were 1.3x slower at 8 MiB
(per-call cost), 32K-64K the fastest. The zeros are one read-only block per dtype, as large as
the largest array seen up to RELU_BLOCK elements (256 KiB of float32; see `_zeros`).
An array of at most one block (batch 1's activations) takes one call against the zeros viewed
in its shape (`_ZERO_VIEWS`): the block loop's Python cost ~1.5 us there, and np.maximum(y, 0)
ran 2.1 against 0.8 us at 4K elements."""
_ZEROS: dict[np.dtype, np.ndarray] = {}
_ZERO_VIEWS: dict[tuple, np.ndarray] = {}
"""(shape, dtype) -> the zeros block viewed in that shape: a contiguous array of at most
RELU_BLOCK elements takes its ReLU in one call against it."""


def _zeros(dtype: np.dtype, n: int) -> np.ndarray:
    """The read-only zeros of `dtype`, at least n of them: the block grows to the largest
    array seen (up to RELU_BLOCK: LeNet's batch-1 ReLUs hold 4.6 KiB of zeros, not 256 KiB
    allocated at the first call, which `graphnet bench`'s traced peak counts)."""
    zeros = _ZEROS.get(dtype)
    if zeros is None or zeros.size < n:
        zeros = np.zeros(n, dtype)
        zeros.flags.writeable = False
        _ZEROS[dtype] = zeros
        _ZERO_VIEWS.clear()  # (views of the smaller block: let it go)
    return zeros


BIND_ALGORITHMS = (
    *("pointwise", "colstack", "im2col", "phasepool-2x2", "phasepool-3x3", "tapgemm"),
    *("winograd-f2", "winograd-f4", "wino3d-f2", "wino3d-f4"),
)
"""Algorithms whose NumPy calls `conv_chunked` records (`rec`) for a step to replay them bound
to their arrays (see ConvStep in steps.linear): a batch-1 call is mostly Python that resolves
views, branches and chunk sizes, the same on every run with the same arrays."""


_POSITIONAL_OUT = frozenset({np.add, np.subtract, np.multiply, np.matmul})
"""Ufuncs a recorded call passes `out` to as a positional argument: NumPy parses a keyword `out`
per call (a bound np.add on 16 floats: 0.77 us positional, 1.26 us with out=). np.maximum and
np.minimum take it as a keyword only (positional out is deprecated there)."""


def _call(rec: list | None, fn: Callable, *args: object, **kw: object) -> None:
    """fn(*args, **kw), recorded in `rec` (when given) as a call bound to these arguments."""
    fn(*args, **kw)
    if rec is not None:
        if fn is _fill:  # (the array's own method: 0.29-0.42 us a call against 0.46-0.67)
            rec.append(partial(args[0].fill, args[1]))  # type: ignore[attr-defined]
        elif fn in _POSITIONAL_OUT and len(kw) == 1 and "out" in kw:
            rec.append(partial(fn, *args, kw["out"]))
        else:
            rec.append(partial(fn, *args, **kw))


def _unbound(rec: list | None, marker: object = None) -> None:
    """A path whose calls are not recorded (threads, slabs, batch-last): no replay (`marker`
    AGAIN: this run's values chose it; the next run may record)."""
    if rec is not None:
        rec.append(marker)


def _view(rec: list | None, a: np.ndarray, *shape: int) -> np.ndarray:
    """a.reshape(shape) for the calls that read it; when NumPy has to copy (a strided `a`,
    e.g. a Fortran-ordered feed) a replay would read this run's values: not recorded."""
    v = a.reshape(shape)
    if rec is not None and v.size and not np.may_share_memory(v, a):
        _unbound(rec)
    return v


AGAIN = False
"""`_unbound`'s marker of a path chosen by the values (phasepool's non-finite input)."""


def _fill(a: np.ndarray, value: float) -> None:
    a.fill(value)


def _finite(x: np.ndarray) -> bool:
    """A replayed phasepool's guard: False (stop the replay) when x has an inf or a NaN."""
    return bool(np.isfinite(x).all())


def _leaky(y: np.ndarray, alpha: float) -> None:
    np.maximum(y, y * y.dtype.type(alpha), out=y)


def relu_(
    y: np.ndarray,
    x: np.ndarray | None = None,
    ufunc: np.ufunc = np.maximum,
    rec: list | None = None,
) -> None:
    """y = max(x, 0) (x defaults to y: in place), elementwise as np.maximum (a NaN stays NaN),
    see RELU_BLOCK; x and y of the same shape and dtype. With `ufunc` np.minimum, y = min(x, 0)
    (ELU's and PReLU's negative part: 0.44x the time of np.minimum(x, 0) on 32 x 64 x 16 x 16
    float32; ELU steps, in-process interleaved medians of ratios, 40 rounds: 0.81x the time
    there, 0.84x on 32 x 32 x 32 x 32, 0.93x on 1 x 64 x 16 x 16).
    Contiguous arrays of at most one block (batch 1's activations) take one call against the
    zeros block viewed in their shape (a view kept per shape): 0.35-0.5x the time of the
    block loop or the scalar form there (4K-16K elements: 0.8-1.0 us against 2.3; see
    `_ZERO_VIEWS`)."""
    x = y if x is None else x
    if not (y.flags.c_contiguous and x.flags.c_contiguous and x.dtype == y.dtype):
        _call(rec, ufunc, x, 0, out=y)
        return
    if y.size <= RELU_BLOCK:
        key = (y.shape, y.dtype)
        zv = _ZERO_VIEWS.get(key)
        if zv is None:
            if len(_ZERO_VIEWS) >= 1024:  # (shapes vary without bound only in odd uses)
                _ZERO_VIEWS.clear()
            zv = _zeros(y.dtype, y.size)[: y.size].reshape(y.shape)
            _ZERO_VIEWS[key] = zv
        _call(rec, ufunc, x, zv, out=y)
        return
    zeros = _zeros(y.dtype, RELU_BLOCK)
    src, dst = x.reshape(-1), y.reshape(-1)
    for i in range(0, dst.size, RELU_BLOCK):  # a loop over fixed-size memory blocks
        part = dst[i : i + RELU_BLOCK]
        _call(rec, ufunc, src[i : i + RELU_BLOCK], zeros[: part.size], out=part)


def _epilogue(
    y: np.ndarray, epi: Epilogue, n0: int, n1: int, bias_done: bool, rec: list | None = None
) -> None:
    if epi.bias is not None and not bias_done:
        _call(rec, np.add, y, epi.bias.reshape((1, -1) + (1,) * (y.ndim - 2)), out=y)
    if epi.residual is not None:
        _call(rec, np.add, y, epi.residual()[n0:n1], out=y)
    activate(y, epi.activation, rec)


def _pool_tiles(
    z: np.ndarray,
    valid: int,
    pool: tuple,
    yb: np.ndarray,
    scratch: Scratch,
    rec: list | None = None,
) -> None:
    """yb (b, M, H / kh, valid / kw) = the max over kh x kw tiles of z (b, M, H, W)[..., :valid]
    (a GEMM result or colstack's wide sums: each image's (M, H, W) contiguous, the images
    possibly apart; W >= valid: a wide one's extra columns are never read). With W a multiple
    of kw, on each image's flat array: m = the max of the kh row-shifted z, then over z (a
    workspace) the max of the kw shifted m (long contiguous passes that also compute windows
    between tiles, dropped), then the tile corners copied into yb (as `steps.pool`'s tiling
    MaxPool); else the max of each tile's rows, then strided maxima. Replaces the crop and the
    MaxPool step's passes over the conv's output: LeNet's first conv (9 images, wide rows of
    32) 18.5 us against 46 for the crop with its ReLU and the MaxPool step's share; its second
    (colstack, 32 images, rows of 14 for 10 valid columns): lenet5@32 0.97x, @1 0.93x the time
    (the crop, ReLU and MaxPool step against the fused pool, in-process interleaved medians)."""
    kh, kw = pool
    nb, mo, h, w = z.shape
    if w % kw:  # (an odd wide row) the max of each tile's rows, then strided column maxima
        rows2 = z.reshape(nb, -1, kh, w)
        t2 = scratch.take(3, nb * rows2.shape[1] * w, z.dtype).reshape(nb, -1, w)
        _call(rec, np.maximum, rows2[:, :, 0], rows2[:, :, 1], out=t2)
        for t in range(2, kh):  # a loop over the tile's rows
            _call(rec, np.maximum, t2, rows2[:, :, t], out=t2)
        it = t2.itemsize
        tiles = view(t2, (nb, t2.shape[1], valid // kw, kw), (*t2.strides[:2], kw * it, it))
        yv = yb.reshape(nb, t2.shape[1], valid // kw)
        _call(rec, np.maximum, tiles[..., 0], tiles[..., 1], out=yv)
        for t in range(2, kw):  # a loop over the tile's columns
            _call(rec, np.maximum, yv, tiles[..., t], out=yv)
        return
    # one flat run of the whole batch when z is contiguous (im2col's GEMM result: per image,
    # conv1 of lenet5@32 took 1.03x the time), else one per image
    runs = 1 if z.flags.c_contiguous else nb
    size = nb * mo * h * w // runs
    src = z.reshape(runs, size)
    rows = size - (kh - 1) * w
    m = scratch.take(3, runs * rows, z.dtype).reshape(runs, rows)
    _call(rec, np.maximum, src[:, :rows], src[:, w : w + rows], out=m)
    for t in range(2, kh):  # a loop over the tile's rows
        _call(rec, np.maximum, m, src[:, t * w : t * w + rows], out=m)
    cols = rows - (kw - 1)
    m2 = src  # (z is read no more) whole planes: the corners are a reshape of it
    _call(rec, np.maximum, m[:, :cols], m[:, 1 : 1 + cols], out=m2[:, :cols])
    for t in range(2, kw):  # a loop over the tile's columns
        _call(rec, np.maximum, m2[:, :cols], m[:, t : t + cols], out=m2[:, :cols])
    corners = m2.reshape(nb, mo, h // kh, kh, w // kw, kw)[:, :, :, 0, : valid // kw, 0]
    _call(rec, np.copyto, yb, corners)


def _crop(
    valid: np.ndarray,
    yb: np.ndarray,
    epi: Epilogue,
    n0: int,
    n1: int,
    augmented: bool,
    rec: list | None = None,
) -> None:
    """yb = the epilogue applied to `valid` (a strided crop of a wide GEMM result): the crop
    applies the bias (when the weight has no bias column) or the residual in the same pass,
    then the activation. A ReLU after a plain crop runs in place on the contiguous copy: 0.4x
    the time of np.maximum(valid, 0, out=yb) (its strided operand and scalar both miss NumPy's
    SIMD loop; see RELU_BLOCK)."""
    if epi.residual is not None:  # the crop, the bias (augmented) and the residual in one
        # (first: yb may be the residual's buffer)
        _call(rec, np.add, valid, epi.residual()[n0:n1], out=yb)
        if epi.bias is not None and not augmented:
            _call(rec, np.add, yb, epi.bias.reshape((1, -1) + (1,) * (valid.ndim - 2)), out=yb)
        activate(yb, epi.activation, rec)
        return
    if epi.bias is not None and not augmented:
        _call(rec, np.add, valid, epi.bias.reshape((1, -1) + (1,) * (valid.ndim - 2)), out=yb)
    elif epi.activation and epi.activation[0] == "relu":
        _call(rec, np.copyto, yb, valid)
        relu_(yb, rec=rec)
        return
    else:
        _call(rec, np.copyto, yb, valid)
    _epilogue(yb, epi, n0, n1, True, rec)


_PAD_GEOMETRY: dict[tuple, tuple] = {}


def _pad_geometry(shape: tuple, pads: tuple, extra: tuple) -> tuple:
    """(padded shape, border index tuples, interior index tuple) of `padded`, computed once per
    (shape, pads, extra): the plan calls it for every conv of every run."""
    key = (shape, pads, extra)
    geo = _PAD_GEOMETRY.get(key)
    if geo is not None:
        return geo
    k = len(shape) - 2
    begins, ends = pads[:k], pads[k:]
    full = shape[:2] + tuple(shape[2 + i] + begins[i] + ends[i] + extra[i] for i in range(k))
    borders = []
    inner: list[slice] = [slice(None), slice(None)]
    for i in range(k):  # a loop over the spatial rank: the two borders of axis i
        lo, hi = begins[i], begins[i] + shape[2 + i]
        if lo:
            borders.append((*inner, slice(0, lo)))
        if hi < full[2 + i]:
            borders.append((*inner, slice(hi, None)))
        inner.append(slice(None))
    interior = (
        slice(None),
        slice(None),
        *[slice(b, b + n) for b, n in zip(begins, shape[2:], strict=True)],
    )
    if len(_PAD_GEOMETRY) > 4096:  # shapes vary without bound only in odd uses: stay small
        _PAD_GEOMETRY.clear()
    geo = _PAD_GEOMETRY[key] = (full, tuple(borders), interior)
    return geo


def activate(y: np.ndarray, act: tuple, rec: list | None = None) -> None:
    """The fused activation `act` (() none, ("relu",), ("leaky", alpha)) applied to y in place."""
    if not act:
        return
    if act[0] == "relu":
        relu_(y, rec=rec)
    else:  # ("leaky", alpha): y if y >= 0 else alpha * y == max(y, alpha * y) for alpha <= 1
        _call(rec, _leaky, y, act[1])


def padded(
    x: np.ndarray,
    pads: Sequence[int],
    extra: Sequence[int],
    buf: np.ndarray,
    value: float = 0,
    borders: bool = True,
    rec: list | None = None,
) -> np.ndarray:
    """x (b, C, *s) copied into `buf` with borders of `value`: `pads` (begins, ends) plus
    `extra` more at each axis' end. Only the borders are written (the scratch is shared); not
    even those without `borders` (a later batch chunk in the same memory: the first wrote them)."""
    full, edges, interior = _pad_geometry(x.shape, tuple(pads), tuple(extra))
    xp = buf[: prod(full)].reshape(full)
    if borders:
        for b in edges:
            _call(rec, _fill, xp[b], value)
    if rec is None:
        xp[interior] = x
    else:
        _call(rec, np.copyto, xp[interior], x)
    return xp


def view(base: np.ndarray, shape: tuple, strides: tuple) -> np.ndarray:
    """A strided view of `base` (its first element at the view's origin): `as_strided` without
    its ~15 us of Python (an ndarray over base's buffer, the extent checked by NumPy); a
    non-contiguous base goes through `as_strided`."""
    if base.flags.c_contiguous:
        return np.ndarray(shape, base.dtype, buffer=base, strides=strides)
    return np.lib.stride_tricks.as_strided(base, shape, strides, writeable=False)


def strided_windows(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    outs: Sequence[int],
) -> np.ndarray:
    """The (N, C, *out, *kernel) window view of a padded array, built directly from its strides
    (the same view as `kernels._windows.windows`, without sliding_window_view's checks: this
    runs once per conv per run)."""
    st = xp.strides[2:]
    return view(
        xp,
        (*xp.shape[:2], *outs, *kernel),
        (
            *xp.strides[:2],
            *(s * t for s, t in zip(strides, st, strict=True)),
            *(d * t for d, t in zip(dilations, st, strict=True)),
        ),
    )


def _chunk(per_item: int, n: int, budget: int | None = None) -> int:
    return max(1, min(n, (budget or WORKSPACE_BYTES) // max(per_item, 1)))


def conv_chunked(
    algo: str,
    spec: ConvSpec,
    x: np.ndarray,
    wp: np.ndarray,
    out: np.ndarray,
    epi: Epilogue,
    scratch: Scratch,
    lo: int = 0,
    hi: int | None = None,
    split: Callable | None = None,
    u_transposed: bool = True,
    workspace: int | None = None,
    rec: list | None = None,
) -> None:
    """Y[lo:hi] = conv(X[lo:hi]) with the prepared weight `wp`, written into `out`
    (N, M, *spatial_out). Disjoint [lo, hi) ranges may run in parallel threads, each with its
    own `scratch`. With `split` (a `threads.Parallel`, when the batch is too small to split),
    each GEMM is split by its output rows over the threads instead (an im2col image in slabs:
    the threads share out its slabs, see `_im2col_slabs`). Only the GEMMs: splitting
    the whole conv (copies, transforms, epilogue) by output rows, or Winograd's output side by
    output channels, was no faster at batch 1 (measured on this 2-core VM, 32-128 channels,
    8x8-32x32): a part of ~20 NumPy calls waits on the other thread for the GIL between calls
    (each half of a 32-channel 16x16 conv took 3-4x its time alone), and a part of a few large
    calls gained nothing over the GEMM split. Re-measured (each thread the whole conv of its
    output rows, or Winograd tile rows, as a conv of its own with the pads its rows read; one
    conv at batch 1, in-process interleaved medians of ratios against one thread, load 0.2-0.5):
    F(4x4) 64 -> 64 at 32x32 1.06x, 64 -> 128 at 16x16 1.55x, 128 -> 128 1.17x (the GEMM split
    0.98x, 1.09x, 0.96x), im2col 128 -> 256 at 8x8 0.86x, 256 -> 256 0.70-1.14x (the GEMM split
    0.65-1.02x); vgg_bn@1 1.30x (load 1.4). A split call hands the GIL over at every NumPy call
    of the two parts: a woken thread starts ~15-30 us late on this VM, the caller waits ~15-27 us
    more for the helper's end, so only a few large calls per part can pay.
    Nor does BLAS thread a GEMM here (see `threads`): one im2col GEMM on OpenBLAS's two threads
    at batch 1 took 0.63-0.80x of one thread's time alone (128-512 channels at 4x4-16x16,
    38-75 MFLOP; our row split 1.08-1.32x there) and vgg_bn@1 0.84-0.96x on a quiet machine,
    but 1.96x (video3d@1 1.18x) while another session's process ran (a nice level does not
    reach across sessions' autogroups): its threads spin at the end of every call, waiting for
    the descheduled one. Winograd's transforms gained nothing from BLAS's threads (1.0x).
    `workspace`: im2col's workspace budget in bytes (the lean plan's, see `lean`), else
    WORKSPACE_BYTES. `rec`: a list that gets the NumPy calls made, each bound to its arrays
    (`functools.partial`; a guard returns False when the replay must stop), or None for a
    path that does not record them (see BIND_ALGORITHMS): calling them in order again
    recomputes Y[lo:hi] as long as the arrays (x, wp, out, the bias, the residual, the
    scratch's) are the same objects."""
    hi = x.shape[0] if hi is None else hi
    if rec is not None and (split is not None or algo not in BIND_ALGORITHMS):
        _unbound(rec)
        rec = None
    if algo.startswith("wino3d"):
        gemm = _split_gemm(split) if rec is None else _recorded_plain_gemm(rec)
        m = 4 if algo.endswith("f4") else 2
        _winograd3d(m, spec, x, wp, out, epi, scratch, lo, hi, gemm, rec)
        return
    if algo.startswith("winograd"):
        gemm = _split_gemm(split) if rec is None else _recorded_plain_gemm(rec)
        m = 4 if algo.endswith("f4") else 2
        _winograd(m, spec, x, wp, out, epi, scratch, lo, hi, gemm, u_transposed, rec)
        return
    gemm = _split_gemm(split, blocked=True) if rec is None else _recorded_gemm(rec)
    if algo == "pointwise":
        _pointwise(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec)
    elif algo == "colstack":
        _colstack(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec)
    elif algo == "tapgemm":
        _taps(spec, x, wp, out, epi, scratch, lo, hi, workspace, rec)
    elif algo.startswith("phasepool"):
        # Its GEMM multiplies window taps outside each phase's kernel by zero weights: an inf
        # or NaN input there would make NaN where the conv has none (0 * inf), so a chunk with
        # one runs im2col. (isfinite(x).all(): 1.5 us for LeNet's 1x28x28 image, 3.4 for 32 of
        # them, ~4% / 1.5% of that conv; a sum under np.errstate took 2.6 and 6.7 us.)
        if np.isfinite(x[lo:hi]).all():
            if rec is not None:
                rec.append(partial(_finite, x[lo:hi]))
            _phase_pool(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec)
        else:
            _unbound(rec, AGAIN)
            w = _phase_pool_plain_weight(wp, spec, epi.pool)
            _im2col(spec, x, w, out, epi, scratch, lo, hi, gemm, split, workspace)
    else:
        _im2col(spec, x, wp, out, epi, scratch, lo, hi, gemm, split, workspace, rec)


SMALL_GEMM_MNK = 1_000_000
"""OpenBLAS (SkylakeX kernels) multiplies without packing its operands when M x N x K is at most
100^3 (its small-matrix kernels); above, it packs both, which costs as much as the products when
M is small (a thin GEMM: each packed element of the columns is used M times). `blocked_matmul`
therefore cuts a larger GEMM along N into blocks under this size. Measured (one thread, in-process
interleaved medians, 4 MFLOP per call; GFLOP/s whole -> in blocks): 16 x 145 x 1024 (ResNet's
16-channel 3x3 as im2col) 46-49 -> 103-108 (blocks of 256, 128 or 64 columns alike), 48 x 49 x
1088 (its colstack) 93 -> 108, 32 x 145 x 256 85 -> 111, 32 x 289 x 256 89 -> 110, 64 x 64 x
1024 70 -> 101, 128 x 49 x 1024 64 -> 86, 16 x 81 x 8192 38 -> 86; where M x K x block stayed
above 1e6, the blocks ran at the whole GEMM's rate (64-128 x 145-577: 72-79 either way).
Blocks along K instead (M x N too large for column blocks: batch-1 im2col, 128-256 x 64-256
columns, depth 1152-2304), accumulated in place or summed from a stack, took 1.06-1.25x of the
whole GEMM's time (one thread, interleaved medians)."""
GEMM_BLOCK_STEP = 64
"""The blocks' columns are a multiple of this: 64 to 384 columns ran at 103-112 GFLOP/s alike
(16-128 x 27-289), 96 and 160 at 88-107, 48 at 61-95, 416 (with a 192-column remainder) at 81.
A GEMM with M x K over SMALL_GEMM_MNK / GEMM_BLOCK_STEP (no block fits) runs whole."""


SMALL_GEMM_CORES = ("skylakex", "cooperlake", "sapphirerapids")
"""OpenBLAS cores whose kernels include the small-matrix GEMMs (they share SkylakeX's kernel
list). With other kernels the blocks only add calls: with OPENBLAS_CORETYPE=Haswell on the same
machine, blocks of 384 columns ran at 0.94-0.95x of the whole GEMMs' rate."""
BLOCKED_GEMMS: bool | None = None
"""Whether `blocked_matmul` (and Winograd's row blocks) cut GEMMs into blocks: None until the
first call, which asks NumPy which BLAS it was built with and threadpoolctl which kernels every
loaded OpenBLAS runs (blocks when NumPy's is OpenBLAS and all run one of SMALL_GEMM_CORES)."""


WINOGRAD_GEMM_MAX_MNK = SMALL_GEMM_MNK  # the same OpenBLAS bound
WINOGRAD_GEMM_MIN_ROWS = 16
"""Winograd's GEMMs run in blocks of output channels of at most this many M*C*tiles (and at
least WINOGRAD_GEMM_MIN_ROWS): (tiles x C) @ (C x M) on V's planes as they are and U^T's column
blocks from a channels-last input (`_winograd_cl`), (M x C) @ (C x tiles) on contiguous (C,
tiles) planes (`_winograd_m`: gathered so from NCHW, copied from (tiles, C) planes from
channels-last).
OpenBLAS runs GEMMs up to 100^3 with its SkylakeX small-matrix
kernels, without packing: ~105 GFLOP/s on one core where the packed path ran 68-90 (256 x 256
by 15 columns: 300 us, by 16: 426), and its small kernel for a transposed right operand (V's
planes passed as a view) 45-74. Row-blocked plain GEMMs took 0.65-0.85x the time of the one
transposed-operand GEMM (36 positions, 64-256 channels, 4-256 columns), equal at 256 x 256 by
128. Whole convs against the former (the view, copied only under 1M; one thread, 30
interleaved rounds, medians of ratios): 0.87x at 256 -> 256 8x8 batch 16, 0.70x at batch 4,
0.70x at 512 -> 512 4x4, 0.88x at 128 -> 128 16x16 batch 16, equal where the copy already ran.
Against the transposed view alone, the copy made small convs 0.80-0.85x at batch 1 (64-128
channels, 16x16-32x32) and 0.85-0.89x at batch 16 (32-64 channels): vgg_bn@1 0.87x. The
blocks only where the BLAS has those kernels (BLOCKED_GEMMS): under OPENBLAS_CORETYPE=Haswell
on the same machine they took 1.00-1.08x of one GEMM's time (16 x 256 x 8x8 the 1.08x)."""


def _blocked_gemms() -> bool:
    global BLOCKED_GEMMS
    if BLOCKED_GEMMS is None:
        try:
            from threadpoolctl import threadpool_info

            # NumPy's BLAS must be OpenBLAS, and every OpenBLAS loaded (another package may
            # bring its own: which one NumPy calls is not reported) on a small-matrix core
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
            cores = [
                str(i.get("architecture", "")).lower()
                for i in threadpool_info()
                if i.get("internal_api") == "openblas"
            ]
            BLOCKED_GEMMS = (
                "openblas" in str(blas).lower()
                and bool(cores)
                and all(c in SMALL_GEMM_CORES for c in cores)
            )
        except Exception:  # threadpoolctl missing or unable to inspect: plain GEMMs
            BLOCKED_GEMMS = False
    return BLOCKED_GEMMS


def blocked_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, rec: list | None = None) -> None:
    """out = a @ b (a (..., M, K), b (..., K, N), out (..., M, N), broadcast like np.matmul),
    cut along N into blocks of at most SMALL_GEMM_MNK / (M x K) columns (see SMALL_GEMM_MNK):
    one np.matmul over the whole blocks (views: a block axis before the matrix axes), one more
    for the remainder. One np.matmul when the BLAS has no small-matrix kernels (BLOCKED_GEMMS)."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    blk = SMALL_GEMM_MNK // max(m * k, 1) // GEMM_BLOCK_STEP * GEMM_BLOCK_STEP
    if m * k * n <= SMALL_GEMM_MNK or blk == 0 or not (BLOCKED_GEMMS or _blocked_gemms()):
        _call(rec, np.matmul, a, b, out=out)
        return
    whole = n // blk
    full = whole * blk
    # Splitting the last axis in two is a view of any strided operand (NumPy never copies to
    # split one uniformly strided axis: `out` is written in place); the block axis then goes
    # before the matrix axes, the matrices are (M, blk) and (K, blk) with the operand's own row
    # strides.
    bv = b[..., :full].reshape(*b.shape[:-1], whole, blk).swapaxes(-2, -3)
    ov = out[..., :full].reshape(*out.shape[:-1], whole, blk).swapaxes(-2, -3)
    _call(rec, np.matmul, a[..., None, :, :], bv, out=ov)
    if full < n:
        _call(rec, np.matmul, a, b[..., full:], out=out[..., full:])


def _plain_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
    np.matmul(a, b, out=out)


def _blocked_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
    blocked_matmul(a, b, out)


def _recorded_gemm(rec: list) -> Callable:
    """gemm(a, b, out, rows_axis) for one thread, in blocks (`blocked_matmul`), recorded."""

    def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
        blocked_matmul(a, b, out, rec)

    return gemm


def _recorded_plain_gemm(rec: list) -> Callable:
    """gemm(a, b, out, rows_axis) for one thread, one np.matmul (as `_plain_gemm`), recorded."""

    def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
        _call(rec, np.matmul, a, b, out=out)

    return gemm


def _split_gemm(split: Callable | None, blocked: bool = False) -> Callable:
    """gemm(a, b, out, rows_axis): out = a @ b, split over a's (and out's) axis `rows_axis`
    by `split`, else one call (`blocked`: in blocks of columns, see `blocked_matmul`; without
    a split, a module function: no closure made for every conv call)."""
    if split is None:
        return _blocked_gemm if blocked else _plain_gemm

    def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
        rows = a.shape[axis]
        flops = 2.0 * out.size * a.shape[-1]

        def part(lo: int, hi: int, _scratch: object) -> None:
            sl = (slice(None),) * axis + (slice(lo, hi),)
            bs = b[sl] if b.ndim == a.ndim and axis < a.ndim - 2 else b
            np.matmul(
                a[sl], bs, out=out[(slice(None),) * (out.ndim - a.ndim + axis) + (slice(lo, hi),)]
            )

        split(rows, part, flops)

    return gemm


def _pointwise(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec=None) -> None:
    # The whole slice at once, the epilogue after it: in batch chunks of 0.25-1 MiB of output
    # (the epilogue on each while in cache) the convs took 1.0-1.08x the time (1.2x at 256 KiB;
    # 16-128 channels at 8x8-32x32, batch 16, one thread, interleaved medians): the chunks'
    # extra GEMM calls cost more than the cached passes save.
    x, out = x[lo:hi], out[lo:hi]
    n, c = x.shape[:2]
    g = spec.group
    if max(spec.strides) > 1:
        sl = (slice(None), slice(None), *[slice(None, None, s) for s in spec.strides])
        sub = x[sl]
        buf = scratch.take(0, sub.size, x.dtype)
        xs = buf.reshape(sub.shape)
        _call(rec, np.copyto, xs, sub)
        x = xs
    p = prod(out.shape[2:])
    y = out.reshape(n, g, spec.c_out // g, p)
    gemm(wp, _view(rec, x, n, g, c // g, p), y, 1)  # split by output channels of each group
    _epilogue(out, epi, lo, hi, False, rec)


MAX_WIDE_WASTE = 1.5
"""`_im2col` computes each output row over the padded row's full width (then drops the extra
columns) when that is at most this many times the output width: see `_im2col`."""
WIDE_MAX_OUT_CHANNELS = 128
WIDE_MIN_DEPTH_PER_OUT = 3
"""... and when the output is not large against the copy the wide rows speed up: from this
many output channels per group, or with a GEMM depth (input channels of the group x taps)
under WIDE_MIN_DEPTH_PER_OUT x the output channels of the group, exact columns.
Wide rows waste (padded width / output width - 1) of the GEMM's work (25% at 8x8, 3x3) and add
a pass over the output (the crop); measured at batch 1 and 16 (one thread, interleaved min
times), exact columns took 0.88-0.95x the time from 128 output channels (128-256 in, 8x8-16x16)
and with 3 input channels (16-64 out, 32x32: the crop moves 5-21x the input), 1.02-1.15x at
1-64 channels with at most 2.7x as many out (LeNet's 5x5, ResNet's 16 and 64) and 1.04-1.07x
for LeNet's first (1 -> 6 channels: a small output in absolute terms). 1-D and 2-D only: a 3-D
conv's exact columns are short runs along two axes (3 -> 16 channels, 8x32x32: 1.13x slower).
The depth rule, measured at batch 16 (benchmarks/conv_algorithms.py): exact columns took
0.81-0.93x of wide rows' time on Inception's 1x3 convs (8-16 -> 16-32 channels, depth 1.5-2x
the output channels), 0.87x at 1 -> 6 3x3 (28x28, depth 1.5x), 0.91x at 3 -> 12 3x3,
0.94-0.99x at 4 -> 8 1x5, 8 -> 8 1x3 and 8 -> 28 3x3 (depth 0.86-2.5x); equal at 1 -> 6 and
2 -> 6 5x5 (depth 4.2-8.3x); wide rows 0.97-0.98x at 16 -> 16 and 32 -> 32 3x3 (depth 9x). The
rule it replaces (wide under 4 output channels per input channel, or under 16) took wide rows
for all of the 1x3 and small-channel shapes above."""


SLAB_MIN_COLUMNS = 1024
"""`_im2col`'s slabs of one image hold at least this many GEMM columns: video3d's second conv
(16 -> 32 channels, 4x16x16, 288 wide columns per depth plane) ran 1.09x slower in slabs of one
plane than whole (one thread, batch 1); its first (1088 columns per plane) in one-plane slabs
took the time of the whole image (1.00x) in 0.95 MiB of scratch instead of 3.4."""
SHARED_SLAB_MIN_COLUMNS = 256
"""... and from this many when the threads share out one image's slabs (`_im2col_slabs`): each
thread's slab GEMMs run while the other thread copies its columns. Measured on video3d@1
(in-process, interleaved against the whole image's split GEMMs, 40 rounds): slabs of at least
1024 columns took 0.93x the time in the same 4.65 MiB (the second conv's 4-plane slabs, one
per thread, hold what the whole image did), 512: 0.90-0.95x in 2.61 MiB, 256 (one plane of
each conv): 0.95-0.96x in 1.59 MiB."""


LEAN_SLAB_MIN_COLUMNS = 64
"""... and from this many under the lean plan's workspace budget on wide rows (`lean`; 3-D
convs: a slab of the budget's size may have fewer columns than SLAB_MIN_COLUMNS: slower GEMMs,
less memory). Exact columns under the lean budget take `lean_slab_rows` (at least a row)."""


def wide_rows(spec: ConvSpec, padded_width: int, out_width: int, images: int) -> bool:
    """Whether `_im2col` computes over wide rows (see MAX_WIDE_WASTE, WIDE_MAX_OUT_*) for a
    slice of `images` images. In 1-D and 2-D, one image takes exact columns: measured at batch
    1 (one thread, benchmarks/conv_algorithms.py), exact columns took 0.78-0.97x of wide rows'
    time on every 2-D shape of the suite (LeNet's 5x5 convs 0.78-0.89x, lenet5@1 0.95x); 3-D
    convs keep wide rows (video3d@1 was 1.06-1.11x slower with exact columns)."""
    mg, cg = spec.c_out // spec.group, spec.c_in // spec.group
    return (
        spec.strides[-1] == 1
        and padded_width <= MAX_WIDE_WASTE * out_width
        and (
            len(spec.kernel) > 2
            or (
                images > 1
                and mg < WIDE_MAX_OUT_CHANNELS
                and cg * prod(spec.kernel) >= WIDE_MIN_DEPTH_PER_OUT * mg
            )
        )
    )


def _im2col(
    spec, x, wp, out, epi, scratch, lo, hi, gemm, split=None, workspace=None, rec=None
) -> None:
    n, c = x.shape[:2]
    k = x.ndim - 2
    g = spec.group
    outs = out.shape[2:]
    if epi.pool:  # the output holds the pooled conv: the conv's own sizes are kh, kw times
        outs = tuple(o * kk for o, kk in zip(outs, epi.pool, strict=True))
    ks = spec.kernel
    taps = prod(ks)
    padded_sizes = tuple(x.shape[2 + i] + spec.pads[i] + spec.pads[k + i] for i in range(k))
    # "Wide" columns: with a unit stride along the last axis, output row r's windows start at
    # consecutive elements of the padded rows, so computing every row over the padded width
    # (not just the output width) makes each tap's columns ONE contiguous run of the padded
    # input per channel (rows x padded width) instead of one short run per output row: the
    # copy runs at memcpy speed (measured 1.1-1.7x faster convs, LeNet's 5x5 and 3x3 at 8x8 to
    # 32x32). The GEMM writes the wide rows to a workspace and the bias is added while the
    # valid columns are copied out. Reads past a row's end land in the next row (dropped
    # columns); the padded buffer has `slack` more elements for the last row's.
    wide_w = padded_sizes[-1]
    wide = wide_rows(spec, wide_w, outs[-1], hi - lo)
    if wide:
        p = prod(outs[:-1]) * wide_w
        slack = (ks[-1] - 1) * spec.dilations[-1]
        pad_size = c * prod(padded_sizes)
        per_item = pad_size + c * taps * p + spec.c_out * p
    else:
        p = prod(outs)
        slack = 0
        pad_size = c * prod(padded_sizes) if any(spec.pads) else 0
        per_item = pad_size + c * taps * p
    kg = (c // g) * taps  # GEMM depth per group
    augmented = wp.shape[-1] == kg + 1  # the bias is the weight's last column (prepare_weight)
    rows = kg + augmented
    cols_size = g * rows * p
    per_item += g * augmented * p
    budget = workspace or WORKSPACE_BYTES
    b = _chunk(per_item * x.itemsize, hi - lo, budget)
    # An image whose columns alone pass the budget (video3d's first conv: 3.5 MiB of columns
    # and GEMM output for a 0.5 MiB output) runs in slabs of output rows (depth planes in
    # 3-D): the workspace stays near the budget instead of growing with the image. When its
    # GEMMs would be split over the threads (`split`: one image, a big conv), the threads
    # share out the slabs instead, each with its own scratch, and the budget is split between
    # them (see `_im2col_slabs`).
    slab = 0
    # (the lean plan's exact columns: slabs that pad only their own input rows, in 1-D too)
    lean_rows = workspace is not None and not wide and not epi.pool
    if lean_rows and per_item * x.itemsize > budget:
        threads = 1 if split is None else max(1, getattr(split, "workers", 1))
        room = budget // threads // x.itemsize
        slab = lean_slab_rows(spec, x.shape[2:], outs, room, augmented)
        # Slabs beside the image's padded copy where that takes no more slabs (fewer NumPy
        # calls a slab: norms_acts@1 took 1.13x the time with every slab padding its rows)
        per_row = (per_item - pad_size + spec.c_out * p) // outs[0]
        whole = (room - pad_size) // per_row
        if whole >= 1 and -(-outs[0] // whole) <= -(-outs[0] // slab):
            slab = whole
        elif slab < outs[0]:
            _unbound(rec)
            chunk = 0 if augmented or slab > 1 else lean_depth_chunk(spec, x.shape[2:], outs, room)
            for n0 in range(lo, hi):
                rows_of = partial(_padded_rows, spec, x, n0, outs)
                _im2col_slabs(spec, rows_of, outs, wp, out, epi, scratch, n0, slab, split, chunk)
            return
        slab = 0 if slab >= outs[0] else slab
    elif k >= 2 and per_item * x.itemsize > budget:
        threads = 1 if split is None else max(1, getattr(split, "workers", 1))
        per_row = (per_item - pad_size + (0 if wide else spec.c_out * p)) // outs[0]
        slab = max(1, (budget // threads // x.itemsize - pad_size) // per_row)
        least = SLAB_MIN_COLUMNS if split is None else SHARED_SLAB_MIN_COLUMNS
        if workspace is not None:  # (a lean budget: thinner slabs, see LEAN_SLAB_MIN_COLUMNS)
            least = min(least, LEAN_SLAB_MIN_COLUMNS)
        slab = max(slab, -(-least // (p // outs[0])))
        slab = 0 if slab >= outs[0] or epi.pool else slab
    windows_all = None
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        xb = x[n0:n1]
        if pad_size:
            buf = scratch.take(0, nb * pad_size + slack, x.dtype)
            # (later chunks take the same memory: the first one's borders are still there)
            xb = padded(xb, spec.pads, (0,) * k, buf, borders=n0 == lo, rec=rec)
            # The slack is shared scratch: whatever a previous step left there (an inf, a NaN)
            # would reach the dropped columns and raise NumPy's overflow / invalid warnings.
            _call(rec, _fill, buf[nb * pad_size : nb * pad_size + slack], 0)
        # The window view is made once per call (~6 us each): over the padded copy, which
        # every chunk writes into the same memory, or over the input's [lo, hi) images.
        if wide:
            if windows_all is None:
                st = xb.strides[2:]
                windows_all = view(  # (b, C, *out[:-1], padded width, *ks)
                    buf,
                    (nb, c, *outs[:-1], wide_w, *ks),
                    (
                        *xb.strides[:2],
                        *(s * t for s, t in zip(spec.strides[:-1], st[:-1], strict=True)),
                        st[-1],
                        *(d * t for d, t in zip(spec.dilations, st, strict=True)),
                    ),
                )
            windows = windows_all[:nb]
            cols_shape = (nb, g, c // g, *ks, *outs[:-1], wide_w)
        else:
            # A stride along the width makes these columns short strided runs. Copying the
            # input's stride phases first (each tap's columns then one contiguous run per
            # channel of a phase, wide or exact) took 1.08-1.32x this time (3-64 -> 16-128
            # channels, 3x3 stride 2, 8x8-32x32, batch 1 and 16): the phase copies and the
            # memset cost more than the strided gather.
            if windows_all is None:
                src = xb if pad_size else x[lo:hi]
                windows_all = strided_windows(src, ks, spec.strides, spec.dilations, outs)
            windows = windows_all[:nb] if pad_size else windows_all[n0 - lo : n1 - lo]
            cols_shape = (nb, g, c // g, *ks, *outs)
        if slab:
            _unbound(rec)
            dims = cols_shape[3 + k :]
            rows_of = partial(_window_rows, windows)
            _im2col_slabs(spec, rows_of, dims, wp, out, epi, scratch, n0, slab, split)
            continue
        cols2 = scratch.take(1, nb * cols_size, x.dtype).reshape(nb, g, rows, p)
        if augmented and n0 == lo:  # (later chunks take the same memory)
            _call(rec, _fill, cols2[:, :, kg], 1)  # the row of ones the bias column multiplies
        cols = cols2[:, :, :kg].reshape(cols_shape)
        v = windows.reshape((nb, g, c // g, *cols_shape[3 + k :], *ks))
        perm = (0, 1, 2, *range(3 + k, 3 + 2 * k), *range(3, 3 + k))
        _call(rec, np.copyto, cols, v.transpose(perm))
        yb = out[n0:n1]
        if not wide and not epi.pool:
            gemm(wp, cols2, yb.reshape(nb, g, -1, p), 1)
            _epilogue(yb, epi, n0, n1, augmented, rec)
            continue
        yw = scratch.take(2, nb * spec.c_out * p, x.dtype)
        gemm(wp, cols2, yw.reshape(nb, g, -1, p), 1)
        if epi.pool:  # the max over the pool's tiles straight from the GEMM's result
            zw = yw.reshape(nb, spec.c_out, *outs[:-1], -1)
            _pool_tiles(zw, outs[-1], epi.pool, yb, scratch, rec)
            _epilogue(yb, epi, n0, n1, augmented, rec)
            continue
        valid = yw.reshape(nb, spec.c_out, *outs[:-1], wide_w)[..., : outs[-1]]
        _crop(valid, yb, epi, n0, n1, augmented, rec)


TAPS_MAX_CHANNELS = 48
"""The lean plan runs `_taps` rather than im2col under this many input and output channels.
Measured per conv against im2col in the lean plan (one thread at batch 1, `Session.profile`
medians of 15 interleaved rounds): ResNet-20's 16 -> 16 at 32x32 0.82-0.84x the time, 32 -> 32
at 16x16 0.85-0.86x; Inception's 48 -> 64 at 8x8 0.98x, 16 -> 32 1x3 0.99x; 64 -> 64 1.0-1.07x
(32x32 and 8x8), VGG's 64 -> 128 to 256 -> 256 1.10-1.43x (nine GEMMs and eight passes over the
output against one deep GEMM)."""


def taps_workspace(spec: ConvSpec, in_hw: Sequence[int], out_h: int) -> int:
    """Elements of `_taps`'s workspace for one image: the padded input (with the last row's
    slack) and two wide outputs (the sum and one tap's product)."""
    hp = in_hw[0] + spec.pads[0] + spec.pads[2]
    wp = in_hw[1] + spec.pads[1] + spec.pads[3]
    return spec.c_in * hp * wp + 2 * spec.c_out * out_h * wp


def _taps(spec, x, w, out, epi, scratch, lo, hi, workspace=None, rec=None) -> None:
    """A 2-D conv with unit strides, ungrouped, as a sum over the kernel's taps of GEMMs on the
    padded input's wide rows: Y (M, H x Wp) = sum_ij w[:, :, i, j] (M, C) @ Xp[:, shift_ij :
    shift_ij + H x Wp] (shift_ij = (i x Wp + j) x dilation), each tap's operand a view of the
    padded input (rows of Wp values: reads past a row's end land in the next row's, columns
    the crop drops) and its weight a strided view of the kernel: no im2col columns (kh x kw
    copies of the input) and no prepared weight. Its workspace: the padded input and two wide
    outputs (`taps_workspace`). The lean plan's algorithm for convs whose own prepared weight
    does not fit its budget (`lean`). Measured against im2col (one thread, batch 1, medians):
    16 -> 16 3x3 at 32x32 104 against 169 us."""
    n, c = x.shape[:2]
    kh, kw = spec.kernel
    dh, dw = spec.dilations
    h_out, w_out = out.shape[2:]
    hp = x.shape[2] + spec.pads[0] + spec.pads[2]
    wpad = x.shape[3] + spec.pads[1] + spec.pads[3]
    slack = (kw - 1) * dw
    length = h_out * wpad  # one image's wide output
    per_item = taps_workspace(spec, x.shape[2:], h_out) * x.itemsize
    b = _chunk(per_item, hi - lo, workspace)
    plane = c * hp * wpad
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        buf = scratch.take(0, nb * plane + slack, x.dtype)
        padded(x[n0:n1], spec.pads, (0, 0), buf, borders=n0 == lo, rec=rec)
        _call(rec, _fill, buf[nb * plane :], 0)  # (the slack: see _im2col)
        xf = view(
            buf,
            (nb, c, plane // c + slack),
            (plane * x.itemsize, hp * wpad * x.itemsize, x.itemsize),
        )
        ys = scratch.take(2, 2 * nb * spec.c_out * length, x.dtype).reshape(
            2, nb, spec.c_out, length
        )
        y, t = ys[0], ys[1]
        _call(rec, _tap_gemms, w, xf, y, t, _tap_offsets(kh, kw, dh, dw, wpad), length)
        valid = y.reshape(nb, spec.c_out, h_out, wpad)[..., :w_out]
        _crop(valid, out[n0:n1], epi, n0, n1, False, rec)


@cache
def _tap_offsets(kh: int, kw: int, dh: int, dw: int, wpad: int) -> tuple:
    """`_taps`' (kernel row, column, offset in the padded input's wide rows) of each tap."""
    return tuple((i, j, i * dh * wpad + j * dw) for i in range(kh) for j in range(kw))


def _tap_gemms(w, xf, y, t, taps, length) -> None:
    """y = sum over the taps of w[:, :, i, j] @ xf[:, :, off : off + length] (t: one tap's
    product). One call for a bound `_taps` to record: its views made on each call (~0.2 us
    each) rather than held, two per tap, by the bound calls (resnet20's lean plan held ~105 KiB
    of bound calls and views with a recorded call per GEMM and per sum, 46 KiB so: its lean
    peak / floor 1.23 -> 1.27 against the 1.3 budget)."""
    for k, (i, j, off) in enumerate(taps):  # a loop over the kernel's taps (GEMMs of a chunk)
        np.matmul(w[:, :, i, j], xf[:, :, off : off + length], t if k else y)
        if k:
            np.add(y, t, y)


def lean_slab_rows(
    spec: ConvSpec, in_sizes: Sequence[int], outs: Sequence[int], room: int, bias_row: bool
) -> int:
    """Output rows (first spatial axis) per slab of `_padded_rows`' slabs in `room` elements
    (at least 1: one row past the room runs anyway): a slab of r rows takes its columns and
    GEMM output, r x (depth + C_out) x the row's pixels, and the padded input rows its
    windows read, C x ((r - 1) x stride + the kernel's span) x the padded row's size."""
    k = len(outs)
    q = prod(outs[1:])
    rest = prod(in_sizes[i] + spec.pads[i] + spec.pads[k + i] for i in range(1, k))
    span = (spec.kernel[0] - 1) * spec.dilations[0] + 1
    s0 = spec.strides[0]
    depth = (spec.c_in // spec.group) * prod(spec.kernel) + bias_row  # (the bias column's)
    per_row = spec.group * depth * q + spec.c_out * q + spec.c_in * s0 * rest
    return max(1, (room - spec.c_in * (span - s0) * rest) // per_row)


def lean_depth_chunk(
    spec: ConvSpec, in_sizes: Sequence[int], outs: Sequence[int], room: int
) -> int:
    """Input channels per GEMM of a one-row slab whose whole depth of columns passes `room`
    elements (`_im2col_slabs`' depth chunks: the GEMM's products over channel chunks, summed),
    0 when the row fits whole or the conv is grouped. A chunk takes its columns, the row's GEMM
    output and one partial product (2 x C_out x the row's pixels) beside the padded rows."""
    k = len(outs)
    q = prod(outs[1:])
    taps = prod(spec.kernel)
    rest = prod(in_sizes[i] + spec.pads[i] + spec.pads[k + i] for i in range(1, k))
    padded = spec.c_in * ((spec.kernel[0] - 1) * spec.dilations[0] + 1) * rest
    if spec.group != 1 or spec.c_in * taps * q + spec.c_out * q + padded <= room:
        return 0
    return min(spec.c_in - 1, max(1, (room - 2 * spec.c_out * q - padded) // (taps * q)))


def _window_rows(windows, r0, r1, scratch) -> np.ndarray:
    """Output rows [r0, r1) of a whole image's window view (`_im2col_slabs`)."""
    return windows[:, :, r0:r1]


def _padded_rows(spec, x, n0, outs, r0, r1, scratch) -> np.ndarray:
    """The window view (1, C, r1 - r0, *outs[1:], *kernel) of output rows [r0, r1) of image
    n0 over a padded copy of only the input rows they read (scratch 0), for the lean plan's
    slabs: no padded copy of the whole image beside its slabs' columns."""
    k = len(outs)
    s0, pt = spec.strides[0], spec.pads[0]
    first = r0 * s0 - pt
    end = (r1 - 1) * s0 + (spec.kernel[0] - 1) * spec.dilations[0] - pt + 1
    lo_r, hi_r = min(max(first, 0), x.shape[2]), max(min(end, x.shape[2]), 0)
    lo_r = min(lo_r, hi_r)
    pads = (lo_r - first, *spec.pads[1:k], end - hi_r, *spec.pads[k + 1 :])
    rest = prod(x.shape[3 + i] + spec.pads[1 + i] + spec.pads[k + 1 + i] for i in range(k - 1))
    buf = scratch.take(0, x.shape[1] * (end - first) * rest, x.dtype)
    xp = padded(x[n0 : n0 + 1, :, lo_r:hi_r], pads, (0,) * k, buf)
    return strided_windows(xp, spec.kernel, spec.strides, spec.dilations, (r1 - r0, *outs[1:]))


def _im2col_slabs(
    spec, rows_of, dims, wp, out, epi, scratch, n0, slab, split=None, chunk=0
) -> None:
    """`_im2col` for the one image n0, `slab` output rows (first spatial axis) at a time:
    `rows_of(r0, r1, scratch)` is the window view (1, C, r1 - r0, *dims[1:], *kernel) of
    output rows [r0, r1) (`dims` the output's, wide or exact: `_window_rows` of the image's,
    or `_padded_rows`),
    each slab's columns and GEMM output are workspaces, copied out into its rows of `out`; the
    epilogue runs once over the image after the last slab. With `split` (a `threads.Parallel`)
    the threads take contiguous runs of the slabs, each in its own scratch, each slab's GEMM
    whole on its thread: one handoff per conv. A split GEMM per slab paid a handoff per slab
    (video3d@1 1.04-1.06x the time of the whole image's split GEMM), and the whole image's
    workspace held 3.4 MiB for video3d's first conv where its one-plane slabs hold 2 x 0.4."""
    c, g, ks, k = spec.c_in, spec.group, spec.kernel, len(dims)
    kg = (c // g) * prod(ks)
    augmented = wp.shape[-1] == kg + 1
    rows = kg + augmented
    yb = out[n0 : n0 + 1]
    rest = prod(dims[1:])
    perm = (0, 1, 2, *range(3 + k, 3 + 2 * k), *range(3, 3 + k))
    # Without the bias column, the copy out adds the bias (no pass of its own).
    bias = None if augmented or epi.bias is None else epi.bias.reshape((1, -1) + (1,) * k)

    def part(s0: int, s1: int, scratch: Scratch) -> None:
        for r0 in range(s0 * slab, min(dims[0], s1 * slab), slab):  # a loop over row slabs
            r1 = min(dims[0], r0 + slab)
            sp = (r1 - r0) * rest
            if chunk:
                yw = _depth_chunks(spec, rows_of(r0, r1, scratch), wp, scratch, sp, chunk, perm)
                valid = yw.reshape(1, spec.c_out, r1 - r0, *dims[1:])[..., : yb.shape[-1]]
                if bias is None:
                    np.copyto(yb[:, :, r0:r1], valid)
                else:
                    np.add(valid, bias, out=yb[:, :, r0:r1])
                continue
            cols2 = scratch.take(1, g * rows * sp, out.dtype).reshape(1, g, rows, sp)
            if augmented:
                cols2[:, :, kg] = 1  # the row of ones the bias column multiplies
            cols = cols2[:, :, :kg].reshape((1, g, c // g, *ks, r1 - r0, *dims[1:]))
            v = rows_of(r0, r1, scratch).reshape((1, g, c // g, r1 - r0, *dims[1:], *ks))
            np.copyto(cols, v.transpose(perm))
            yw = scratch.take(2, spec.c_out * sp, out.dtype)
            blocked_matmul(wp, cols2, yw.reshape(1, g, -1, sp))
            valid = yw.reshape(1, spec.c_out, r1 - r0, *dims[1:])[..., : yb.shape[-1]]
            if bias is None:
                np.copyto(yb[:, :, r0:r1], valid)
            else:
                np.add(valid, bias, out=yb[:, :, r0:r1])

    slabs = -(-dims[0] // slab)
    if split is None:
        part(0, slabs, scratch)
    else:
        split(slabs, part, 2.0 * spec.c_out * kg * prod(dims))
    _epilogue(yb, epi, n0, n0 + 1, True)


_COLSTACK_GEOMETRY: dict[tuple, tuple] = {}


def _colstack_geometry(spec: ConvSpec, h: int, w: int, ho: int, wo: int, direct: bool) -> tuple:
    """`_colstack`'s (fills, copies, sides, adds) for an input of h x w and an output of ho x
    wo, computed once per (spec, sizes, direct): every run asks for them (a batch-1 run of
    resnet20 16 times). fills: (kernel row i, the output rows outside the input: its top /
    bottom padding, zeros); copies: (kernel row i, the output rows [r0, r1) inside the input,
    the input rows they read); sides: the slice of kernel columns whose GEMMs run stacked
    (direct), or None; adds: per kernel column j != pl, (shift j - pl, z's plane, the columns
    zeroed there: those the flat shifted sum reads across a row's end, or None)."""
    # (the fields it reads: a frozen dataclass hashes through Python, ~1 us)
    key = (spec.kernel, spec.pads, spec.strides, spec.dilations, h, w, ho, wo, direct)
    geo = _COLSTACK_GEOMETRY.get(key)
    if geo is not None:
        return geo
    kh, kw = spec.kernel
    pt, pl = spec.pads[0], spec.pads[1]
    sh, dh = spec.strides[0], spec.dilations[0]
    fills, copies = [], []  # kernel row i: output rows [r0, r1) read input rows y0, y0 + sh, ...
    for i in range(kh):  # a loop over the kernel's rows
        y0 = i * dh - pt  # the input row output row 0 reads
        r0 = min(ho, max(0, -(y0 // sh)))  # ceil(-y0 / sh): the first row inside the input
        r1 = max(r0, min(ho, -((y0 - h) // sh)))  # ceil((h - y0) / sh): the first one past it
        if r0:
            fills.append((i, slice(0, r0)))
        if r1 < ho:
            fills.append((i, slice(r1, None)))
        if r1 > r0:
            ya = y0 + r0 * sh
            copies.append((i, slice(r0, r1), slice(ya, ya + (r1 - r0 - 1) * sh + 1, sh)))
    sides = None
    if direct and kw > 1 and (pl in (0, kw - 1) or kw == 3):
        sides = slice(1, kw) if pl == 0 else slice(0, pl) if pl == kw - 1 else slice(0, 3, 2)
    # Columns shifted by the whole width or more read only padding (wo <= w): no sum.
    adds = []
    for j in range(kw):  # a loop over the kernel's columns
        sft = j - pl
        if j == pl or abs(sft) >= w:
            continue
        if sft > 0:  # columns the last outputs of the row before read
            zero = slice(None, wo + sft - w) if wo + sft > w else None
        else:  # columns the first outputs of the next row read
            zero = slice(w + sft, None)
        adds.append((sft, j - (j > pl) if direct else j, zero))
    if len(_COLSTACK_GEOMETRY) > 4096:  # shapes vary without bound only in odd uses
        _COLSTACK_GEOMETRY.clear()
    geo = _COLSTACK_GEOMETRY[key] = (tuple(fills), tuple(copies), sides, tuple(adds))
    return geo


def _depth_chunks(spec, v, wp, scratch, sp, chunk, perm) -> np.ndarray:
    """The GEMM output (1, 1, C_out, sp) of one slab's windows `v` (1, C, rows, ..., *kernel),
    ungrouped, without a bias column: the products of `chunk` input channels' columns at a time
    (scratch 1) with their columns of the weight, summed into scratch 2 (each later one's in
    scratch 3): the lean plan's slabs of one row whose whole depth passes the workspace."""
    c, ks, taps = spec.c_in, spec.kernel, prod(spec.kernel)
    rows = v.shape[2]
    yw = scratch.take(2, spec.c_out * sp, v.dtype).reshape(1, 1, spec.c_out, sp)
    for c0 in range(0, c, chunk):  # a loop over the channel chunks (a few)
        c1 = min(c, c0 + chunk)
        d = (c1 - c0) * taps
        cols = scratch.take(1, d * sp, v.dtype).reshape(1, 1, d, sp)
        part = v[:, c0:c1].reshape((1, 1, c1 - c0, *v.shape[2:]))
        np.copyto(
            cols.reshape((1, 1, c1 - c0, *ks, rows, *v.shape[3 : 2 + len(ks)])),
            part.transpose(perm),
        )
        wk = wp[..., c0 * taps : c1 * taps]
        if c0 == 0:
            blocked_matmul(wk, cols, yw)
        else:
            t = scratch.take(3, spec.c_out * sp, v.dtype).reshape(yw.shape)
            blocked_matmul(wk, cols, t)
            np.add(yw, t, out=yw)
    return yw


def _colstack(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec=None) -> None:
    # The input's own rows, no padded copy: Z_j's columns are the input's width w (not the
    # padded width), and output column q reads Z_j at column q + j - pl (pl the left pad):
    #   Y[m, r, q] = sum_j Z[j, m, r, q + j - pl],
    #   Z[j, m, r, c] = sum_(c', i) w[m, c', i, j] x[c', r*sh + i*dh - pt, c]
    # (rows outside the input: zeros in the operand, the top / bottom padding). With the
    # planes flat, a read at q + j - pl outside [0, w) lands in the row before or after: in a
    # column that no output reads legitimately (it would be input column < 0 or >= w), which is
    # zeroed first, so the wrapped read adds the padding's zero. The sum accumulates into Z_pl
    # (shift 0), whose rows carry the bias column's values when pl is the middle column, as
    # prepared (else the bias is added after). When the output is as wide as the input ("same"
    # padding), Z_pl is the output itself: its GEMM writes there and the other columns' are
    # added in place (no crop). Compared with the padded rows below: no pass over the input to
    # pad it, and (pl + pr) fewer GEMM columns per row. Output rows wider than the input (pads
    # wider than the kernel) take those.
    # Which rows: the input's own when the width is padded (or the kernel is one row: the
    # input itself), else the padded rows. Measured against the padded rows (one thread,
    # in-process interleaved medians, 3x3 pads 1, bias + ReLU; batch 16 / 2 / 1): 16 channels
    # at 32x32 (ResNet-20's) 0.93 / 0.93 / 0.96x, 32 at 16x16 0.85x / - / 0.91x, 64 at 8x8
    # (ResNet-20's few-tiles fallbacks at batch 1) 0.82x at batch 1, 6 -> 16 5x5 pads 2 at
    # 14x14 0.95x; 16 at 16x16 0.83x at batch 16 but 1.1x at batch 1 (a 40 us conv: its three
    # GEMM calls). Without width pads: LeNet's 6 -> 16 5x5 (its output narrower than the
    # input: Z_pl and a crop) took 1.12 / - / 1.36x on its own rows, a 3x1 kernel with row
    # pads 0.82x at batch 16 but 1.08x at batch 1: padded rows there.
    ho, wo = out.shape[2:]
    n, c, h, w = x.shape
    one_row = spec.kernel[0] == 1 and spec.strides[0] == 1 and not (spec.pads[0] or spec.pads[2])
    if epi.pool or wo > w or not (one_row or spec.pads[1] or spec.pads[3]):
        _colstack_padded(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec)
        return
    kh, kw = spec.kernel
    mo = spec.c_out
    pl = spec.pads[1]
    p = ho * w
    kg = c * kh
    augmented = wp.shape[-1] == kg + 1  # the bias is the weight's last column (prepare_weight)
    if augmented and (one_row or pl != kw // 2):
        # (a 1xk kernel multiplies the input itself, below: no row of ones) the epilogue adds it
        wp, augmented = wp[:, :kg], False
    isz = out.itemsize
    # (a 1xk kernel's GEMMs are small: one call, and the bias in the crop's pass)
    # (not over the residual's own buffer: its GEMM would write there before the sum reads it)
    direct = (
        wo == w and out.strides[1:] == (p * isz, w * isz, isz) and not one_row and not epi.aliased
    )
    rows = kg + augmented
    ml = mo * p
    b = _chunk((rows * p + (kw - direct) * ml) * x.itemsize, hi - lo)
    fills, copies, sides, adds = _colstack_geometry(spec, h, w, ho, wo, direct)
    # The side columns' GEMM (every j but pl, into z in the order of j) as one call when they
    # are evenly spaced (3x3: j = 0 and 2; pl at an end), on a stack of their weight rows (a
    # view of the prepared weight); else one call for each side of pl.
    w3 = None if sides is None else wp.reshape(kw, mo, rows)[sides]
    stacked = COLSTACK_STACKED_MIN_MNK <= mo * rows * p <= SMALL_GEMM_MNK
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        xb = x[n0:n1]
        if one_row:  # a 1xk kernel over every input row multiplies the input itself
            cols = _view(rec, xb, nb, c, p)
        else:
            cols = scratch.take(1, nb * rows * p, x.dtype).reshape(nb, rows, p)
            shifted = cols[:, :kg].reshape(nb, c, kh, ho, w)
            if n0 == lo:  # the rows of ones and of zeros: later chunks take the same memory
                if augmented:
                    _call(rec, _fill, cols[:, kg], 1)  # the row of ones the bias column multiplies
                for i, rows_out in fills:  # kernel rows' top / bottom padding
                    _call(rec, _fill, shifted[:, :, i, rows_out], 0)
            for i, rows_out, rows_in in copies:  # kernel rows: one copy for every channel
                _call(rec, np.copyto, shifted[:, :, i, rows_out], xb[:, :, rows_in])
        yb = out[n0:n1]
        z = scratch.take(2, nb * (kw - direct) * ml, x.dtype).reshape(nb, -1)
        if direct:  # kernel column pl's GEMM into the output, the others' (j < pl, j > pl) to z
            gemm(wp[pl * mo : (pl + 1) * mo], cols, yb.reshape(nb, mo, p), 0)
            if w3 is not None:
                gemm(w3, cols[:, None], z.reshape(nb, kw - 1, mo, p), 1)
            else:
                for part, j0, j1 in ((0, 0, pl), (pl * ml, pl + 1, kw)):  # the two sides of pl
                    if j1 > j0:
                        zs = z[:, part : part + (j1 - j0) * ml].reshape(nb, (j1 - j0) * mo, p)
                        gemm(wp[j0 * mo : j1 * mo], cols, zs, 0)
            acc = yb.reshape(nb, ml)
        elif stacked:  # a GEMM per kernel column (split by output channels)
            gemm(wp.reshape(kw, mo, rows), cols[:, None], z.reshape(nb, kw, mo, p), 1)
            acc = z[:, pl * ml : (pl + 1) * ml]
        else:
            gemm(wp, cols, z.reshape(nb, kw * mo, p), 0)  # split by rows (output channels x j)
            acc = z[:, pl * ml : (pl + 1) * ml]
        zp = z.reshape(nb, -1, ml) if adds else z
        for sft, t, zero in adds:  # a loop over the kernel's columns
            zj = zp[:, t]
            if zero is not None:
                _call(rec, _fill, zj.reshape(nb, mo, ho, w)[..., zero], 0)
            if sft > 0:
                _call(rec, np.add, acc[:, : ml - sft], zj[:, sft:], out=acc[:, : ml - sft])
            else:
                _call(rec, np.add, acc[:, -sft:], zj[:, : ml + sft], out=acc[:, -sft:])
        if direct:
            _epilogue(yb, epi, n0, n1, augmented, rec)
        else:
            _crop(acc.reshape(nb, mo, ho, w)[..., :wo], yb, epi, n0, n1, augmented, rec)


def _colstack_padded(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec=None) -> None:
    # Output row r, column q (xp the padded input, sh / dh the row stride / dilation):
    #   Y[m, r, q] = sum_j sum_(c, i) w[m, c, i, j] xp[c, r*sh + i*dh, q + j]
    #              = sum_j Z[j, m, r, q + j],
    #   Z[j, m, r, q'] = sum_(c, i) w[m, c, i, j] xp[c, r*sh + i*dh, q'].
    # Z is one GEMM over "wide" rows (every column q' of the padded width, as `_im2col`'s wide
    # rows): its operand holds, per channel, the kh row-shifted copies of the padded input
    # (contiguous runs of rows x padded width). The shifted sum reads Z_j from offset j: with a
    # unit stride along the width, q + j < padded width for every valid q, so no read crosses a
    # row (nor the buffer's end).
    if epi.pool and min(epi.pool) > 1 and _batch_last(x, hi - lo, BATCH_LAST_MIN_IMAGES):
        _unbound(rec)
        _im2col_batch_last(spec, x, _batch_last_weight(wp, spec), out, epi, scratch, lo, hi, gemm)
        return
    n, c = x.shape[:2]
    kh, kw = spec.kernel
    mo = spec.c_out
    ho, wo = out.shape[2:]
    if epi.pool:  # the output holds the pooled conv: the conv's own sizes are kh, kw times
        ho, wo = ho * epi.pool[0], wo * epi.pool[1]
    hp = x.shape[2] + spec.pads[0] + spec.pads[2]
    wpad = x.shape[3] + spec.pads[1] + spec.pads[3]
    p = ho * wpad
    kg = c * kh
    augmented = wp.shape[-1] == kg + 1  # the bias is the weight's last column (prepare_weight)
    rows = kg + augmented
    pad_size = c * hp * wpad if any(spec.pads) else 0
    ml = mo * p
    per_item = pad_size + rows * p + kw * ml
    b = _chunk(per_item * x.itemsize, hi - lo)
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        xb = x[n0:n1]
        if pad_size:  # (later chunks take the same memory: the first one's borders are there)
            buf = scratch.take(0, nb * pad_size, x.dtype)
            xb = padded(xb, spec.pads, (0, 0), buf, borders=n0 == lo, rec=rec)
        s = xb.strides
        shifted = view(  # (b, C, kh, ho, padded width): row r*sh + i*dh of each channel
            xb,
            (nb, c, kh, ho, wpad),
            (s[0], s[1], spec.dilations[0] * s[2], spec.strides[0] * s[2], s[3]),
        )
        cols = scratch.take(1, nb * rows * p, x.dtype).reshape(nb, rows, p)
        if augmented and n0 == lo:  # (later chunks take the same memory)
            _call(rec, _fill, cols[:, kg], 1)  # the row of ones the bias column multiplies
        _call(rec, np.copyto, cols[:, :kg].reshape(nb, c, kh, ho, wpad), shifted)
        z = scratch.take(2, nb * kw * mo * p, x.dtype)
        gemm(wp, cols, z.reshape(nb, kw * mo, p), 0)  # split by rows (output channels x j)
        # The shifted sum over whole wide planes, each image's Z_j as one flat run: element f
        # of Z_0 plus element f + j of Z_j (f = (m, r, q)); flat, the NumPy inner loops run
        # over M x rows x padded width values instead of one output row (convs 0.94-1.0x the
        # time of the sum over cropped 4-D views, batch 1-16). Sums at the last kw-1 positions read
        # past the image's Z: they and every f with q >= wo are dropped by the crop below.
        # The sum accumulates into Z_0 itself (each element only reads its own position there):
        # no buffer for it, so a 1 MiB chunk holds 2 images of ResNet's 16-channel 32x32 convs
        # instead of 1 (the conv 0.9x the time at batch 16, one thread).
        zf = z.reshape(nb, kw * ml)
        n_ = ml - (kw - 1)
        wide = zf[:, :ml]
        for j in range(1, kw):  # a loop over the kernel's columns
            _call(rec, np.add, wide[:, :n_], zf[:, j * ml + j : j * ml + j + n_], out=wide[:, :n_])
        yb = out[n0:n1]
        if epi.pool:  # the max over the pool's tiles straight from the wide sums
            _pool_tiles(wide.reshape(nb, mo, ho, wpad), wo, epi.pool, yb, scratch, rec)
            _epilogue(yb, epi, n0, n1, augmented, rec)
            continue
        valid = wide.reshape(nb, mo, ho, wpad)[..., :wo]
        _crop(valid, yb, epi, n0, n1, augmented, rec)


def _gemm_rows(mo: int, kn: int) -> int:
    """Output channels per Winograd GEMM block, for GEMMs of depth x columns = `kn`: equal
    blocks of at most WINOGRAD_GEMM_MAX_MNK // kn rows, or WINOGRAD_GEMM_MIN_ROWS when that is
    fewer (the last block holds the rest)."""
    rows = WINOGRAD_GEMM_MAX_MNK // kn
    if rows < WINOGRAD_GEMM_MIN_ROWS:
        return WINOGRAD_GEMM_MIN_ROWS
    return -(-mo // -(-mo // rows))


def _padded_channels_last(
    x: np.ndarray,
    pads: Sequence[int],
    size: tuple[int, int],
    buf: np.ndarray,
    rec: list | None = None,
) -> np.ndarray:
    """x (b, C, h, w) transposed into `buf` as (b, hp, wpad, C) = `size`, zero borders: `pads`
    (top, left, bottom, right) and up to `size` at the ends. Only the borders are written.
    `rec`: see `conv_chunked`."""
    nb, c, h, w = x.shape
    top, left = pads[0], pads[1]
    xp = buf[: nb * size[0] * size[1] * c].reshape(nb, size[0], size[1], c)
    bottom, right = size[0] - top - h, size[1] - left - w
    if top == bottom == 1:  # ("same" pads on exact tiles: the first and last rows, one call)
        _call(rec, _fill, xp[:, :: size[0] - 1], 0)
    else:
        if top:
            _call(rec, _fill, xp[:, :top], 0)
        if bottom > 0:
            _call(rec, _fill, xp[:, top + h :], 0)
    rows = xp[:, top : top + h]
    if left == right == 1:  # (the first and last columns, one call)
        _call(rec, _fill, rows[:, :, :: size[1] - 1], 0)
    else:
        if left:
            _call(rec, _fill, rows[:, :, :left], 0)
        if right > 0:
            _call(rec, _fill, rows[:, :, left + w :], 0)
    inner, xt = rows[:, :, left : left + w], x.transpose(0, 2, 3, 1)
    if xt.flags.c_contiguous:  # x is channels-last already (`is_channels_last`): a plain copy
        _call(rec, np.copyto, inner, xt)
        return xp
    block = transpose_block(h * w * x.itemsize)
    for c0 in range(0, c, block):  # a loop over blocks of channels (see transpose_block)
        _call(rec, np.copyto, inner[..., c0 : c0 + block], xt[..., c0 : c0 + block])
    return xp


def _winograd(m, spec, x, wp, out, epi, scratch, lo, hi, gemm, u_transposed=True, rec=None) -> None:
    """Y = conv(X) by F(m x m, 3 x 3) with U^T (`wp`: ((m+2)^2, C, M), see winograd.py) or U
    (((m+2)^2, M, C), not `u_transposed`), on batch chunks: `_winograd_cl` from a channels-last
    padded input with U^T, else `_winograd_m` (channels-last, or NCHW where the input's planes
    alias: WINOGRAD_ALIASED_PLANE_BYTES). ConvStep passes U in train mode without kept weights
    (TRAIN_KEEP_WEIGHTS off: it transforms them on every run; U^T took 1.13-1.2x that
    transform's time) and where inference
    transforms them on every run (winograd.PER_RUN_MIN_COLUMNS: batch 32) into more than L2's
    bytes
    (winograd.PER_RUN_TRANSPOSED_MAX_BYTES): U^T there took 1.2-1.4x the transform's
    time (its kernels re-laid (3, 3, C, M)) and `_winograd_cl` missed the warm U the old order
    reads (256 -> 256 8x8 at batch 16, one thread: 6.0 ms after a per-run U^T, 6.0 with a kept
    one; `_winograd_m` 5.7 after a per-run U, 6.3 with a kept one): whole convs with their
    per-run transform took 1.07-1.11x the time at 128 -> 256 and 256 -> 256 8x8, 1.05x
    64 -> 128 16x16, 0.98x 128 -> 128 16x16 (batch 16, in-process interleaved)."""
    t = m + 2
    n, c = x.shape[:2]
    mo = spec.c_out
    ho, wo = out.shape[2:]
    th, tw = ceil(ho / m), ceil(wo / m)
    hp, wpad = th * m + 2, tw * m + 2
    h, w = x.shape[2:]
    tiles = th * tw
    per_item = (c * hp * wpad + 2 * t * t * c * tiles + t * t * mo * tiles) * x.itemsize
    per_item += max(0, m * m * mo * tiles - t * t * c * tiles) * x.itemsize
    exact = ho == th * m and wo == tw * m
    channels_last = (h * w * x.itemsize) % WINOGRAD_ALIASED_PLANE_BYTES != 0 or is_channels_last(x)
    if not exact and not (channels_last and u_transposed):
        per_item += mo * th * m * tw * m * x.itemsize
    b = max(
        _chunk(per_item, hi - lo, WINOGRAD_WORKSPACE_BYTES),
        min(hi - lo, ceil(WINOGRAD_CHUNK_COLUMNS / tiles)),
    )
    tail = (hi - lo) % b
    if tail and tail * 4 < b:  # a small last chunk: spread over the others (see
        # WINOGRAD_WORKSPACE_BYTES)
        b += ceil(tail / ((hi - lo) // b))
    blocks = isinstance(wp, KernelBlocks)  # (U transformed block by block: `_u_block`)
    u = wp if blocks or not u_transposed else wp.transpose(0, 2, 1)  # (t^2, M, C): `_winograd_m`
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        if channels_last and (u_transposed or blocks):
            _winograd_cl(m, spec, x, wp, out, epi, scratch, n0, n1, gemm, rec)
        else:
            _winograd_m(m, spec, x, u, out, epi, scratch, n0, n1, gemm, channels_last, rec)


def _winograd_cl(m, spec, x, wp, out, epi, scratch, n0, n1, gemm, rec=None) -> None:
    """Images n0:n1 from a channels-last padded input: the tiles gathered channel-innermost
    (contiguous runs of C), V = B^T d B, each tile position's GEMM V (tiles, C) @ U^T (C, M)
    (M^T: V's planes as they are, where M = U V needed them copied to (C, tiles) first),
    Y = A^T M A, Y re-laid channels-last (b, H, W, M) and transposed into the NCHW output in
    blocks of rows. Whole convs against that former (U V after V's copy; one thread,
    in-process interleaved, 80-150 rounds, medians of ratios, bias + ReLU): batch 1 0.92-0.94x
    at 128 -> 128 16x16, 0.94-1.0x 64 -> 128, F(2x2) 0.90-0.96x 128 -> 256 and 0.95x 256 -> 256
    at 8x8; in chunks of 2-16 images 0.91x 64 -> 64 16x16 (batch 4), 0.94-0.97x 128 -> 128
    16x16 (batch 2-16), 0.98x 64 -> 128 16x16 at batch 6 but 1.05x at 16, 0.83x 128 -> 256 8x8,
    0.96x 256 -> 256 8x8, 0.91x 32 -> 32 16x16 + residual, 0.83x 64 -> 64 8x8 + residual, 0.89x
    48 -> 40 13x13 (cropped tiles)."""
    bt, at = SEPARABLE[m]
    t = m + 2
    nb, c = n1 - n0, x.shape[1]
    mo = spec.c_out
    ho, wo = out.shape[2:]
    th, tw = ceil(ho / m), ceil(wo / m)
    hp, wpad = th * m + 2, tw * m + 2
    buf = scratch.take(0, nb * c * hp * wpad, x.dtype)
    xp = _padded_channels_last(x[n0:n1], spec.pads, (hp, wpad), buf, rec)  # (b, hp, wpad, C)
    s = xp.strides
    tiles_view = view(
        xp, (nb, th, tw, t, t, c), (s[0], m * s[1], m * s[2], s[1], s[2], s[3])
    ).transpose(3, 4, 0, 1, 2, 5)
    cols = nb * th * tw
    x_cols = c * cols
    # The tiles with the channel innermost, (t, t, b, th, tw, C): the copy's inner loop runs
    # over the C channels of one tile element (from NCHW, its inner loop had the tw tiles of a
    # row: 4-8 values per NumPy inner loop at 16x16-32x32, measured 2-3x slower).
    d = scratch.take(1, t * t * x_cols, x.dtype)
    _call(rec, np.copyto, d.reshape(t, t, nb, th, tw, c), tiles_view)
    # V = B^T d B: B^T on the first tile axis, then on the second (see winograd.py).
    v1 = scratch.take(2, t * t * x_cols, x.dtype)
    _call(rec, np.matmul, bt, d.reshape(t, -1), out=v1.reshape(t, -1))
    v = d  # d is dead: V takes its place
    _call(rec, np.matmul, bt, v1.reshape(t, t, x_cols), out=v.reshape(t, t, x_cols))
    # M^T in V1's dead place, in blocks of output channels (U^T's and M^T's column blocks, see
    # WINOGRAD_GEMM_MAX_MNK), split by tile position over threads.
    vt = v.reshape(t * t, cols, c)
    mx = scratch.take(2, t * t * cols * mo, x.dtype).reshape(t * t, cols, mo)
    rows = _gemm_rows(mo, c * cols) if (BLOCKED_GEMMS or _blocked_gemms()) else mo
    blocks = isinstance(wp, KernelBlocks)
    if blocks:
        rows = min(rows, wp.rows)
    for m0 in range(0, mo, rows):  # a loop over GEMM blocks of output channels
        if blocks:  # U^T's block: a transposed view of U's, as the transform leaves it
            ub = _u_block(wp, m, m0, min(mo, m0 + rows), scratch, rec).transpose(0, 2, 1)
        else:
            ub = wp[:, :, m0 : m0 + rows]
        gemm(vt, ub, mx[:, :, m0 : m0 + rows], 0)
    if epi.bias is not None:  # (see _winograd_m)
        _call(rec, np.add, mx[t + 1], epi.bias, out=mx[t + 1])
    # Y = A^T M A, one tile axis at a time (two GEMMs on contiguous operands, K = t): Y1 in V's
    # place, Y (m, m, b, th, tw, M) in M's.
    y_cols = cols * mo
    y1 = scratch.take(1, m * t * y_cols, x.dtype)
    _call(rec, np.matmul, at, mx.reshape(t, -1), out=y1.reshape(m, -1))
    y = scratch.take(2, m * m * y_cols, x.dtype)
    _call(rec, np.matmul, at, y1.reshape(m, t, y_cols), out=y.reshape(m, m, y_cols))
    yb = out[n0:n1]
    if is_channels_last(yb):
        _winograd_out_cl(m, y, yb, epi, scratch, n0, n1, th, tw, rec)
        return
    # Channels-last (b, th, m, tw, m, M) in Y1's dead place (runs of M values copied whole),
    # then the NCHW output, cropped to ho x wo, from its transposed view, adding the residual in
    # the same pass. That copy's inner loop runs over an output plane's pixels, reading values M
    # apart: in blocks of output rows whose pixels' lines stay in L1 (`transpose_block` of M
    # values apart, as the input's pad by channels): 0.46-0.64x the time of whole planes (or
    # of blocks of channels) at 128-256 channels 8x8-16x16, batch 1-8, equal at 64 and 8x8.
    ycl = scratch.take(1, m * m * y_cols, x.dtype).reshape(nb, th, m, tw, m, mo)
    _call(rec, np.copyto, ycl, y.reshape(m, m, nb, th, tw, mo).transpose(2, 3, 0, 4, 1, 5))
    src = ycl.reshape(nb, th * m, tw * m, mo)[:, :ho, :wo].transpose(0, 3, 1, 2)
    res = None if epi.residual is None else epi.residual()[n0:n1]
    block = max(1, transpose_block(mo * x.itemsize) // wo)
    for r0 in range(0, ho, block):  # a loop over blocks of output rows
        part = (slice(None), slice(None), slice(r0, r0 + block))
        if res is None:
            _call(rec, np.copyto, yb[part], src[part])
        else:  # (elementwise: yb may be the residual's own buffer)
            _call(rec, np.add, src[part], res[part], out=yb[part])
    if epi.activation and epi.activation[0] == "relu":  # contiguous: see _crop
        relu_(yb, rec=rec)
    else:
        activate(yb, epi.activation, rec)


def _u_block(wb: KernelBlocks, m: int, m0: int, m1: int, scratch, rec=None) -> np.ndarray:
    """U's block ((m+2)^2, m1 - m0, C) of a kernel transformed block by block (the lean plan's
    Winograd: `winograd.KernelBlocks`), its calls recorded for a replay (`rec`)."""
    return transform_block(wb, m, m0, m1, scratch, partial(_call, rec))


def is_channels_last(y: np.ndarray) -> bool:
    """Whether `y` (N, C, H, W) is the NCHW view of a contiguous channels-last (N, H, W, C)
    array (a Winograd conv's hand-off to another, see ConvStep.channels_last)."""
    return y.ndim == 4 and y.shape[1] > 1 and y.transpose(0, 2, 3, 1).flags.c_contiguous


def _winograd_out_cl(m, y, yb, epi, scratch, n0, n1, th, tw, rec=None) -> None:
    """`_winograd_cl`'s output side into a channels-last `yb` (see `is_channels_last`): Y (m, m,
    b, th, tw, M) re-laid (b, th, m, tw, m, M) straight into yb's (b, H, W, M) array when the
    tiles cover it exactly (with the residual added in the same pass), else through a
    channels-last workspace cropped into it; then the activation over the contiguous array."""
    nb, mo, ho, wo = yb.shape
    dest = yb.transpose(0, 2, 3, 1)  # (b, H, W, M), contiguous
    yv = y[: m * m * nb * th * tw * mo].reshape(m, m, nb, th, tw, mo).transpose(2, 3, 0, 4, 1, 5)
    res = None if epi.residual is None else epi.residual()[n0:n1].transpose(0, 2, 3, 1)
    if ho == th * m and wo == tw * m:
        d6 = dest.reshape(nb, th, m, tw, m, mo)
        if res is None:
            _call(rec, np.copyto, d6, yv)
        else:  # (elementwise: yb may be the residual's own buffer)
            _call(rec, np.add, yv, res.reshape(d6.shape), out=d6)
    else:
        ycl = scratch.take(1, m * m * nb * th * tw * mo, yb.dtype).reshape(nb, th, m, tw, m, mo)
        _call(rec, np.copyto, ycl, yv)
        src = ycl.reshape(nb, th * m, tw * m, mo)[:, :ho, :wo]
        if res is None:
            _call(rec, np.copyto, dest, src)
        else:
            _call(rec, np.add, src, res, out=dest)
    activate(dest, epi.activation, rec)


def _winograd_m(m, spec, x, u, out, epi, scratch, n0, n1, gemm, channels_last, rec=None) -> None:
    """Images n0:n1, M = U V per tile position (U: ((m+2)^2, M, C), a transposed view of U^T
    at 1.01-1.02x the time of a contiguous U at 32-128 channels, 64-256 columns) on (C, tiles)
    planes: from an NCHW padded input (planes that alias, see WINOGRAD_ALIASED_PLANE_BYTES) the
    tiles gathered straight into the GEMMs' (t, t, C, tiles) order; from channels-last (train
    mode, and per-run U past winograd.PER_RUN_TRANSPOSED_MAX_BYTES) gathered channel-innermost,
    V's (tiles, C) planes then copied to (C, tiles). V = B^T d B, Y = A^T M A copied out to NCHW.
    From NCHW against `_winograd_cl` here: 0.98x (64 -> 64 32x32, batch 1-2), 0.95x 32 -> 32
    and 64 -> 128, 0.88x 16 -> 32 batch 4 (one thread, in-process interleaved, 80 rounds)."""
    bt, at = SEPARABLE[m]
    t = m + 2
    nb, c = n1 - n0, x.shape[1]
    mo = spec.c_out
    ho, wo = out.shape[2:]
    th, tw = ceil(ho / m), ceil(wo / m)
    hp, wpad = th * m + 2, tw * m + 2
    h, w = x.shape[2:]
    extra = (hp - (h + spec.pads[0] + spec.pads[2]), wpad - (w + spec.pads[1] + spec.pads[3]))
    tiles = th * tw
    buf = scratch.take(0, nb * c * hp * wpad, x.dtype)
    if channels_last:
        xp = _padded_channels_last(x[n0:n1], spec.pads, (hp, wpad), buf, rec)  # (b, hp, wpad, C)
        s = xp.strides
        tiles_view = view(
            xp, (nb, th, tw, t, t, c), (s[0], m * s[1], m * s[2], s[1], s[2], s[3])
        ).transpose(3, 4, 0, 1, 2, 5)
    else:
        xp = padded(x[n0:n1], spec.pads, extra, buf, rec=rec)
        s = xp.strides
        tiles_view = view(
            xp, (nb, c, th, tw, t, t), (s[0], s[1], m * s[2], m * s[3], s[2], s[3])
        ).transpose(4, 5, 1, 0, 2, 3)
    x_cols = c * nb * tiles
    # From NCHW straight into (t, t, C, b, th, tw): 0.88x the time of an NCHW pad, a
    # channel-innermost gather and V's copy to (C, tiles) (64 channels at 32x32, batch 1, one
    # thread, in-process interleaved).
    d = scratch.take(1, t * t * x_cols, x.dtype)
    _call(rec, np.copyto, d.reshape(tiles_view.shape), tiles_view)
    # V = B^T d B: B^T on the first tile axis, then on the second (see winograd.py).
    v1 = scratch.take(2, t * t * x_cols, x.dtype)
    _call(rec, np.matmul, bt, d.reshape(t, -1), out=v1.reshape(t, -1))
    v = d  # d is dead: V takes its place
    _call(rec, np.matmul, bt, v1.reshape(t, t, x_cols), out=v.reshape(t, t, x_cols))
    if channels_last:  # V's (tiles, C) planes copied to (C, tiles) in V1's dead place
        vc = v1.reshape(t * t, c, nb * tiles)
        _call(rec, np.copyto, vc, v.reshape(t * t, nb * tiles, c).transpose(0, 2, 1))
        m_slot, y1_slot = 1, 2
    else:
        vc = v.reshape(t * t, c, nb * tiles)
        m_slot, y1_slot = 2, 1
    # M in V1's (or V's) dead place, Y1 in V's (V1's), Y in M's: three places of t^2 x tiles
    # planes. The GEMMs run on blocks of output channels (see WINOGRAD_GEMM_MAX_MNK).
    mx = scratch.take(m_slot, t * t * mo * nb * tiles, x.dtype).reshape(t * t, mo, nb * tiles)
    rows = _gemm_rows(mo, c * nb * tiles) if (BLOCKED_GEMMS or _blocked_gemms()) else mo
    blocks = isinstance(u, KernelBlocks)
    if blocks:
        rows = min(rows, u.rows)
    for m0 in range(0, mo, rows):  # a loop over GEMM blocks of output channels
        if blocks:  # (U's block, transformed here)
            ub = _u_block(u, m, m0, min(mo, m0 + rows), scratch, rec)
        else:
            ub = u[:, m0 : m0 + rows]
        gemm(ub, vc, mx[:, m0 : m0 + rows], 0)  # split by tile position
    if epi.bias is not None:
        # Y = A^T M A, and A's row 1 (A^T's column 1) is all ones: b added at tile position
        # (1, 1) of M adds b to every output of the tile: a pass over one of M's (m+2)^2
        # planes, where Y1's column 1 (after A^T on the tile rows) held m times its values.
        _call(rec, np.add, mx[t + 1], epi.bias.reshape(mo, 1), out=mx[t + 1])
    # Y = A^T M A, one tile axis at a time again: A^T on the tile rows, then A on the tile
    # columns from the right (Y1^T's operand is a transposed view: BLAS takes it as it is),
    # which leaves each tile's columns innermost: an output row of a tile row is one
    # contiguous run of tw * m values in both Y and the NCHW output, and the copy out below
    # moves whole runs (with the tile-column axis outermost, it gathered single values
    # from (m+2)^2 far-apart planes: 2-3x slower, measured at 16-32 channels).
    y_cols = mo * nb * tiles
    y1 = scratch.take(y1_slot, m * t * y_cols, x.dtype)
    _call(rec, np.matmul, at, mx.reshape(t, -1), out=y1.reshape(m, -1))
    y = scratch.take(m_slot, m * m * y_cols, x.dtype)
    _call(
        rec,
        np.matmul,
        y1.reshape(m, t, y_cols).transpose(0, 2, 1),
        at.T,
        out=y.reshape(m, y_cols, m),
    )
    yv = y.reshape(m, mo, nb, th, tw, m).transpose(2, 1, 3, 0, 4, 5)  # (b, M, th, m, tw, m)
    yb = out[n0:n1]
    if not (ho == th * m and wo == tw * m):
        dest = scratch.take(4, nb * mo * th * m * tw * m, x.dtype).reshape(nb, mo, th, m, tw, m)
        _call(rec, np.copyto, dest, yv)
        _call(rec, np.copyto, yb, dest.reshape(nb, mo, th * m, tw * m)[:, :, :ho, :wo])
        _epilogue(yb, epi, n0, n1, True, rec)
        return
    # The copy out to NCHW applies the residual in the same pass (ReLU after it).
    dest = yb.reshape(nb, mo, th, m, tw, m)
    if epi.residual is not None:
        _call(rec, np.add, yv, epi.residual()[n0:n1].reshape(dest.shape), out=dest)
        activate(yb, epi.activation, rec)
    elif epi.activation and epi.activation[0] == "relu":  # see _im2col
        _call(rec, np.copyto, dest, yv)
        relu_(yb, rec=rec)
    else:
        _call(rec, np.copyto, dest, yv)
        activate(yb, epi.activation, rec)


PHASE_POOL_MAX_OUT = 8
"""A 2-D conv (unit stride and dilation, ungrouped) with a fused tiling MaxPool runs
`_phase_pool` under this many output channels (else im2col with `_pool_tiles`): its GEMM does
(U1 * kh_pool * V1 * kw_pool) / (kh * kw) times the conv's multiplications (1.44x for 5x5
under a 2x2 pool) for a copy of a third of im2col's columns and no pass of its own for the
pool's rows and columns: it pays where the GEMM is thin (a few output channels) and the copy
and the pool are most of the time. Measured against im2col with its fused pool (one thread,
in-process interleaved medians, bias + ReLU, 2x2 pool): LeNet's first conv (1 -> 6 5x5 pads 2,
28x28) 0.93x the time at batch 32, 0.80x at batch 1; 3 -> 6 5x5 at batch 8 0.76x; slower from
16 output channels: 3 -> 16 3x3 at 32x32 1.05-1.1x, 6 -> 16 5x5 at 14x14 1.2-1.3x. Whole
models (in-process, interleaved, 40 rounds, medians of ratios, with the bias as a GEMM
column): lenet5@32 0.93x, lenet5@1 0.92x the time; the bias column against a pass over the
pooled output 0.99x / 0.97x."""


def phase_pool(spec: ConvSpec, pool: tuple) -> str:
    """The algorithm name of `_phase_pool` for `spec` under a fused `pool` (kh, kw), or ""
    when it does not apply (see PHASE_POOL_MAX_OUT, PHASE_POOL_MAX_WORK)."""
    fits = (
        len(spec.kernel) == 2
        and len(pool) == 2
        and spec.strides == (1, 1)
        and spec.dilations == (1, 1)
        and spec.group == 1
        and spec.c_out < PHASE_POOL_MAX_OUT
        and min(spec.pads) >= 0
    )
    if not fits:
        return ""
    (kh, kw), (ph, pw) = spec.kernel, pool
    window = -(-(ph + kh - 1) // ph) * ph * -(-(pw + kw - 1) // pw) * pw
    return f"phasepool-{ph}x{pw}" if window <= PHASE_POOL_MAX_WORK * kh * kw else ""


PHASE_POOL_MAX_WORK = 2.0
"""`_phase_pool`'s GEMM multiplies each pool phase's kernel placed in a (U1 kh_p) x (V1 kw_p)
window of zeros: that many over kh x kw times the conv's products. It runs up to this ratio:
5x5 under a 2x2 pool 1.44 (LeNet's first conv), 3x3 under 2x2 1.78 (0.96x im2col's time with
its fused pool); 3x3 under 4x4 (7.1) took 2.44x, under 8x8 8.3x (one thread, 3 -> 6 channels
at 64x64, batch 8, min of 7)."""


def _phase_pool_plain_weight(wp: np.ndarray, spec: ConvSpec, pool: tuple) -> np.ndarray:
    """im2col's (1, M, C * kh * kw [+ 1]) weight from `_phase_pool_weight`'s `wp`: the first
    phase's rows hold the kernel at the window's corner (and the bias column, if any); made
    once per prepared array (see `_derived`). For chunks with non-finite inputs."""

    def make() -> np.ndarray:
        mo, c, (kh, kw), (ph, pw) = spec.c_out, spec.c_in, spec.kernel, pool
        u1, v1 = -(-(ph + kh - 1) // ph), -(-(pw + kw - 1) // pw)
        k = c * u1 * ph * v1 * pw
        win = wp[:mo, :k].reshape(mo, c, u1 * ph, v1 * pw)[:, :, :kh, :kw].reshape(mo, -1)
        if wp.shape[1] == k + 1:  # the bias column
            win = np.concatenate([win, wp[:mo, k:]], axis=1)
        return np.ascontiguousarray(win).reshape(1, mo, -1)

    return _derived(_PLAIN_WEIGHTS, wp, make)


_PLAIN_WEIGHTS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _derived(cache: dict, wp: np.ndarray, make: Callable[[], np.ndarray]) -> np.ndarray:
    """`make()`, a weight derived from the prepared weight `wp`, made once per `wp` and held
    only while `wp` lives (a weak reference: the entry goes when the step's prepared weight
    does, not a dead plan's weights kept by the cache)."""
    hit = cache.get(id(wp))
    if hit is not None and hit[0]() is wp:
        return hit[1]
    w = make()
    cache[id(wp)] = (weakref.ref(wp), w)
    weakref.finalize(wp, cache.pop, id(wp), None)
    return w


def _phase_pool_tile(algo: str) -> tuple[int, int]:
    ph, pw = algo.split("-")[1].split("x")
    return int(ph), int(pw)


def _phase_pool_weight(
    w: np.ndarray, pool: tuple[int, int], dtype: np.dtype, bias: np.ndarray | None
) -> np.ndarray:
    """(kh_p * kw_p * M, C * U1 * kh_p * V1 * kw_p) for `_phase_pool`: row (a, b, m) holds the
    kernel of output channel m placed at offset (a, b) in a (U1 * kh_p, V1 * kw_p) window of
    zeros, columns ordered (c, u1, u0, v1, v0) for the window's row u1 * kh_p + u0 and column
    v1 * kw_p + v0; with `bias`, one more column holding b[m] in every row (m's bias is the
    same at every tile position: the max adds it once)."""
    m, c, kh, kw = w.shape
    ph, pw = pool
    u1, v1 = -(-(ph + kh - 1) // ph), -(-(pw + kw - 1) // pw)
    full = np.zeros((ph, pw, m, c, u1 * ph, v1 * pw), np.float64)
    for a in range(ph):  # a loop over the pool tile's rows
        for b in range(pw):  # ... and columns: each output phase's placed kernel
            full[a, b, :, :, a : a + kh, b : b + kw] = w
    wp = full.reshape(ph * pw * m, -1)
    if bias is not None:
        wp = np.concatenate([wp, np.tile(bias.astype(np.float64), ph * pw)[:, None]], axis=1)
    return np.ascontiguousarray(wp, dtype=dtype)


def _copy_phases(
    xb: np.ndarray, xq: np.ndarray, pt: int, pl: int, pool: tuple, rec: list | None = None
) -> None:
    """xq (b, C, kh_p, kw_p, hq, wq), any strides, gets the pool's phases of xb (b, C, h, w)
    at the pads' offsets: xq[:, :, u0, v0, r, q] = xb[:, :, kh_p r + u0 - pt, kw_p q + v0 - pl]
    wherever that is inside xb (the rest is left: the caller zeroed it). With the pads and sizes
    multiples of the pool's, every phase has the same rows and columns: one copy of xb split
    into (rows, kh_p, columns, kw_p) (LeNet's first conv: 0.39x the time of the four phases'
    copies at batch 4, 0.57x at 32, batch-last), else a copy per phase."""
    ph, pw = pool
    h, w = xb.shape[2:]
    hq, wq = xq.shape[4:]
    if pt % ph == 0 and pl % pw == 0 and h % ph == 0 and w % pw == 0:
        r0, q0 = pt // ph, pl // pw
        nr, nq = min(hq - r0, h // ph), min(wq - q0, w // pw)
        if nr > 0 and nq > 0:
            src = xb[:, :, : nr * ph, : nq * pw].reshape(*xb.shape[:2], nr, ph, nq, pw)
            _call(
                rec, np.copyto, xq[..., r0 : r0 + nr, q0 : q0 + nq], src.transpose(0, 1, 3, 5, 2, 4)
            )
        return
    for u0 in range(ph):  # a loop over the input's phases: rows
        r0 = max(0, -((u0 - pt) // ph))  # the first phase row inside the input
        r1 = min(hq, -((u0 - pt - h) // ph))
        for v0 in range(pw):  # ... and columns
            q0 = max(0, -((v0 - pl) // pw))
            q1 = min(wq, -((v0 - pl - w) // pw))
            if r1 > r0 and q1 > q0:
                ys, xs = ph * r0 + u0 - pt, pw * q0 + v0 - pl
                src = xb[:, :, ys::ph, xs::pw][:, :, : r1 - r0, : q1 - q0]
                _call(rec, np.copyto, xq[:, :, u0, v0, r0:r1, q0:q1], src)


def _phase_pool(spec, x, wp, out, epi, scratch, lo, hi, gemm, rec=None) -> None:
    # A conv whose output a kh_p x kw_p MaxPool tiles, with the pool's tile positions (a, b)
    # (the output's phases) stacked in the GEMM's rows. Output pixel (kh_p R + a, kw_p Q + b)
    # at tap (i, j) reads the padded input at row kh_p R + u, column kw_p Q + v (u = a + i,
    # v = b + j), and with u = kh_p u1 + u0 that is phase (u0, v0) of the input at (R + u1,
    # Q + v1): every output phase reads the same operand, the input's phases (a copy of the
    # input, each phase a plane of hq x wq) at the window offsets (u1, v1), U1 x V1 of them, and
    # the phases differ in their weights only (zeros at the window taps outside their kernel,
    # see `_phase_pool_weight`). Per image, Z (kh_p kw_p M, pooled rows x wq) = W' @ cols, the
    # operand's rows each one contiguous run of the phase plane (wide rows: wq columns of
    # which the pooled width are valid, as `_im2col`'s), then the pool is the max over Z's
    # kh_p kw_p row blocks, the last into the output, and the epilogue (the activation, and the
    # bias unless it rode in the GEMM as a column: see `_phase_pool_weight`) runs on the
    # pooled output.
    if _batch_last(x, hi - lo, PHASE_POOL_BATCH_LAST_MIN_IMAGES):
        _unbound(rec)
        _phase_pool_batch_last(spec, x, wp, out, epi, scratch, lo, hi, gemm)
        return
    n, c, h, w = x.shape
    ph, pw = epi.pool
    kh, kw = spec.kernel
    mo = spec.c_out
    hr, wr = out.shape[2:]
    u1, v1 = -(-(ph + kh - 1) // ph), -(-(pw + kw - 1) // pw)
    hq, wq = hr + u1 - 1, wr + v1 - 1
    plane = hq * wq
    pt, pl = spec.pads[0], spec.pads[1]
    k = c * u1 * ph * v1 * pw
    augmented = wp.shape[-1] == k + 1  # the bias is the weight's last column
    rows = k + augmented
    p = hr * wq
    phases = ph * pw
    per_item = c * phases * plane + rows * p + phases * mo * p
    b = _chunk(per_item * x.itemsize, hi - lo)
    slack = v1 - 1  # the last wide row's reads past the last plane (dropped columns)
    it = x.itemsize
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        size = nb * c * phases * plane
        buf = scratch.take(0, size + slack, x.dtype)
        _call(rec, _fill, buf, 0)  # the padding (and the windows' rows and columns past it)
        xq = buf[:size].reshape(nb, c, ph, pw, hq, wq)
        _copy_phases(x[n0:n1], xq, pt, pl, (ph, pw), rec)
        s = xq.strides
        windows = view(  # (b, C, u1, u0, v1, v0, pooled rows, wq): rows of phase planes
            buf, (nb, c, u1, ph, v1, pw, hr, wq), (s[0], s[1], wq * it, s[2], it, s[3], wq * it, it)
        )
        cols = scratch.take(1, nb * rows * p, x.dtype).reshape(nb, rows, p)
        if augmented:
            _call(rec, _fill, cols[:, k], 1)  # the row of ones the bias column multiplies
        _call(rec, np.copyto, cols[:, :k].reshape(windows.shape), windows)
        z = scratch.take(2, nb * phases * mo * p, x.dtype).reshape(nb, phases, mo * p)
        gemm(wp, cols, z.reshape(nb, phases * mo, p), 0)  # split by rows
        acc = z[:, 0]
        for t in range(1, phases - 1):  # a loop over the pool tile's positions
            _call(rec, np.maximum, acc, z[:, t], out=acc)
        yb = out[n0:n1]
        last = z[:, phases - 1].reshape(nb, mo, hr, wq)[..., :wr]
        _call(rec, np.maximum, acc.reshape(nb, mo, hr, wq)[..., :wr], last, out=yb)
        _epilogue(yb, epi, n0, n1, augmented, rec)


WINOGRAD3D_FEW_TAPS_MIN_CHANNELS = 32
"""A kt x 3 x 3 conv runs `_winograd3d` with kt >= 3 temporal taps whatever its channels, with
1 or 2 (a GEMM depth of kt x C) from this many input channels, else im2col. Measured against
im2col (one thread, in-process interleaved medians, pads kt // 2 and 1, bias + ReLU; batch 1 /
8): 3x3x3 3 -> 16 at 8x32x32 0.87-0.91x (see the module's list), 8 -> 8 at 8x16x16 0.85 /
0.85x, 5x3x3 3 -> 16 0.64 / 0.56x, 16 -> 32 at 8x16x16 0.26 / 0.41x; 1x3x3 3 -> 16 1.39 /
1.45x, 16 -> 32 0.94 / 1.41x, 32 -> 64 at 4x8x8 0.63 / 0.57x, 64 -> 64 0.49 / 0.17x."""
WINOGRAD3D_CHANNELS_LAST_MIN = 32
"""`_winograd3d` pads its input channels-last, (b, frames, hp, wpad, C), from this many input
channels (unless a volume's bytes alias, see WINOGRAD_ALIASED_PLANE_BYTES): the tile gather
then copies runs of C values (NCHW: runs of the tw tiles of a row) and the stacking copy
transposes V's planes. Measured against NCHW (one thread, in-process interleaved medians of
ratios, batch 1 / 16): 32 -> 64 at 4x8x8 0.74 / 0.77x, 16 -> 32 at 8x16x16 0.97 / 1.06x,
3 -> 16 at 8x32x32 1.18 / 1.37x."""


WINOGRAD3D_BLOCKED_TRANSFORMS = True
"""`_winograd3d` applies B^T and A^T (6 x 6 and 4 x 6 on the left of a (6, columns) operand) by
`blocked_matmul`: over 100^3 multiply-adds OpenBLAS packs both operands, which for a 4- or 6-row
product costs more than the product. Measured alone (one thread, in-process interleaved
medians): A^T on 49K columns (video3d's first conv at batch 1) 0.50x the time, B^T 0.73x; on
786K columns (batch 16) 0.48x both."""


def _row_blocked_matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, rec: list | None = None
) -> None:
    """out = a @ b for a (B, R, K) (any strides), b (K, N) small, out (B, R, N) contiguous: in
    blocks of rows of at most SMALL_GEMM_MNK multiply-adds each (a block axis before the
    matrix axes, one np.matmul over the whole blocks, one for the rest), so that OpenBLAS
    runs its small-matrix kernels instead of packing a many-row, N-column product (see
    WINOGRAD3D_BLOCKED_TRANSFORMS)."""
    nb_, r, k = a.shape
    n = b.shape[1]
    blk = SMALL_GEMM_MNK // max(k * n, 1)
    if r * k * n <= SMALL_GEMM_MNK or blk == 0 or not (BLOCKED_GEMMS or _blocked_gemms()):
        _call(rec, np.matmul, a, b, out=out)
        return
    whole = r // blk
    full = whole * blk
    _call(
        rec,
        np.matmul,
        a[:, :full].reshape(nb_, whole, blk, k),
        b,
        out=out[:, :full].reshape(nb_, whole, blk, n),
    )
    if full < r:
        _call(rec, np.matmul, a[:, full:], b, out=out[:, full:])


def _padded_channels_last3(
    x: np.ndarray,
    pads: Sequence[int],
    size: tuple[int, int, int],
    buf: np.ndarray,
    rec: list | None = None,
) -> np.ndarray:
    """x (b, C, f, h, w) transposed into `buf` as (b, *size, C), zero borders: `pads` (front,
    top, left, ...) and up to `size` at the ends. Only the borders are written."""
    nb, c, f, h, w = x.shape
    front, top, left = pads[0], pads[1], pads[2]
    xp = buf[: nb * prod(size) * c].reshape(nb, *size, c)
    _call(rec, _fill, xp[:, :front], 0)
    _call(rec, _fill, xp[:, front + f :], 0)
    frames = xp[:, front : front + f]
    _call(rec, _fill, frames[:, :, :top], 0)
    _call(rec, _fill, frames[:, :, top + h :], 0)
    rows = frames[:, :, top : top + h]
    _call(rec, _fill, rows[:, :, :, :left], 0)
    _call(rec, _fill, rows[:, :, :, left + w :], 0)
    _call(rec, np.copyto, rows[:, :, :, left : left + w], x.transpose(0, 2, 3, 4, 1))
    return xp


WINOGRAD3D_FRAME_BYTES = 4 * WINOGRAD_WORKSPACE_BYTES
"""`_winograd3d` runs an image whose workspaces exceed this in chunks of output frames that fit
it (F output frames read F + kt - 1 padded input frames: the kt - 1 shared with the next chunk
are gathered and transformed again; chunks of images fit WINOGRAD_WORKSPACE_BYTES), and when
the fewest frames (one, or a fused pool's window) do not fit, in bands of tile rows of them (R
tile rows read R m + 2 padded input rows). Measured (one thread, in-process interleaved medians
of ratios against the whole image): video3d@1 with its first conv (2.26 MiB for one image) in
two chunks of 4 frames at 2 MiB took 1.18x the time, hence 4x the images' budget; 64 -> 64 at
16x56x56 batch 1 (128.5 MiB for the whole image) 1.04x in bands at 8 MiB (7.35 MiB used),
1.12x at 2 MiB (1.90 MiB); one frame a chunk (12.8 MiB) 1.02x; 3 -> 64 at 16x112x112 0.92x
(186 -> 11.9 MiB), 32 -> 32 at 16x64x64 1.08x (84 -> 8.4 MiB)."""


WINOGRAD3D_ONE_CHUNK_ONLY = True
"""`_winograd3d`'s take gather (WINOGRAD3D_TAKE_MAX_TILES_ACROSS) and its pool's shifted kw
stage (WINOGRAD3D_POOL_SHIFTED_MAX) run only when the call is one chunk (all its images, frames
and tile rows at once: batch 1 and small slices; tests lift it to run them in chunks): at
video3d@32 (one image a chunk at its second conv, both cores) they took 1.013x and 1.004x the
time (in-process interleaved, 300 rounds, medians of ratios; 1.028x together) where video3d@1
took 0.970x and 0.980x."""
WINOGRAD3D_TAKE_MAX_TILES_ACROSS = 4
"""`_winograd3d` gathers an NCHW-padded input's tiles by `np.take` over precomputed indices
(`_tile_row_index`: one take per tile row offset, mode "wrap": NumPy's fast path without a
bounds branch) when a padded row holds at most this many tiles: the strided copy's inner loop
then ran over tw values (4 at video3d's second conv, 16 -> 32 at 8x16x16), NumPy's per-loop
overhead paid for every 4 values. Measured alone (one thread, in-process interleaved medians,
batch 1): 16 channels 8x16x16 0.54x the copy's time (51 vs 94 us), 32 at 4x8x8 (tw 2) 0.43x; 3
at 8x32x32 (tw 8) 1.08x: not taken there."""
WINOGRAD3D_TAKE_MAX_INDEX = 1 << 15
"""`_winograd3d`'s take gather (WINOGRAD3D_TAKE_MAX_TILES_ACROSS) only while one tile row's
index holds at most this many entries (intp: 256 KiB), cached per geometry (video3d@1's second
conv 15,360 entries, 120 KiB); larger chunks (batch 32) copy as before."""
_TILE_ROW_INDEX: dict[tuple, np.ndarray] = {}


def _tile_row_index(shape: tuple, m: int, th: int, tw: int) -> np.ndarray:
    """Flat indices into a C-contiguous padded input of `shape` (b, C, frames, hp, wpad) of
    Winograd's tiles' first rows in the gather's layout (t, C, b, frames, th, tw): tile (i, j)
    of input row offset `i` is the take at flat offset i * wpad (`_winograd3d_chunk`). Cached
    per geometry (a few such shapes per plan)."""
    key = (shape, m, th, tw)
    idx = _TILE_ROW_INDEX.get(key)
    if idx is None:
        nb, c, tp, hp, wpad = shape
        t = m + 2
        o = (
            np.arange(t).reshape(t, 1, 1, 1, 1, 1)
            + np.arange(c).reshape(1, c, 1, 1, 1, 1) * (tp * hp * wpad)
            + np.arange(nb).reshape(1, 1, nb, 1, 1, 1) * (c * tp * hp * wpad)
            + np.arange(tp).reshape(1, 1, 1, tp, 1, 1) * (hp * wpad)
            + np.arange(th).reshape(1, 1, 1, 1, th, 1) * (m * wpad)
            + np.arange(tw).reshape(1, 1, 1, 1, 1, tw) * m
        )
        idx = np.ascontiguousarray(o.reshape(-1), dtype=np.intp)
        if len(_TILE_ROW_INDEX) >= 64:  # (a bound for processes compiling many shapes)
            _TILE_ROW_INDEX.clear()
        _TILE_ROW_INDEX[key] = idx
    return idx


def _winograd3d_slots(
    m: int, c: int, mo: int, kt: int, tp: int, to: int, tiles: int, big: int, pool: tuple
) -> tuple[int, ...]:
    """Elements of `_winograd3d`'s scratch slots 0-4 for ONE image of tp padded input frames and
    to output frames (`big`: the padded input's elements per frame): 0 the padded input; 1 d,
    then V in its place, M, Y; 2 V1, then S, Y1 (each taken at its largest size first, so later
    takes reuse the place: a slot that grew in stages moved to the end and left its earlier
    places empty, 3.15 MiB for 2.26 at video3d's first conv); the fused pool's first
    intermediate axis (`_pool_tiles3d`) in slot 2 (Y1 is dead by then, and larger), its second
    in 3; 4 the uncropped output (`big` < 0: inexact tiles). Every slot but 0 scales with the
    frames: the caller's chunks over frames rely on it."""
    t = m + 2
    exact = big >= 0
    ys = mo * to * tiles * m * m  # Y (and the output's uncropped tiles)
    s1 = t * t * tiles * max(c * tp, mo * to)
    s2 = max(t * t * c * tp * tiles, t * t * kt * c * to * tiles, m * t * mo * to * tiles)
    s3 = s4 = 0
    if not exact:
        s4 = ys
    elif pool:
        ks = [k for k in (pool[1], pool[0], pool[2]) if k > 1]  # (kh, kt, kw: the stages' order)
        if len(ks) == 3:  # (the first of two intermediate stages is in slot 2: ys / k <= s2)
            s3 = ys // ks[0] // ks[1]
    return (c * tp * abs(big), s1, s2, s3, s4)


def _winograd3d(m, spec, x, wp, out, epi, scratch, lo, hi, gemm, rec=None) -> None:
    """A kt x 3 x 3 conv (stride 1, undilated, ungrouped) as a 2-D Winograd F(m x m, 3x3) over
    (H, W) with the kt temporal taps stacked in the GEMM's depth:
      Y[:, t] = sum_dt conv2d(X[:, t + dt], w[:, :, dt])
    so at tile position p, M[p] (M, cols) = U'[p] (M, kt C) @ S[p] (kt C, cols), the rows of S
    (dt, c) holding V[p] of input frame t + dt for the column (image, frame t, tile), U' the
    weight transformed per temporal tap (`prepare_weight`). V is computed once per padded input
    frame (B^T d B as in `_winograd`, layout (t^2, C, b, frames, tiles)); S is its kt
    frame-shifted views copied side by side (runs of frames x tiles values); the output
    transform and copy out as `_winograd`'s, with a frame axis.
    Chunks of images whose workspaces (`_winograd3d_slots`) fit WINOGRAD_WORKSPACE_BYTES; an
    image past WINOGRAD3D_FRAME_BYTES runs in chunks of output frames (F of them read F + kt - 1
    padded input frames: the kt - 1 shared with the next chunk are gathered and transformed
    again), and one frame past it in bands of tile rows (the two rows of input between bands
    likewise)."""
    c = x.shape[1]
    mo = spec.c_out
    to, ho, wo = out.shape[2:]
    pool = epi.pool
    if pool:  # the output holds the pooled conv: the conv's own sizes are k times
        to, ho, wo = (o * k for o, k in zip(out.shape[2:], pool, strict=True))
    th, tw = ceil(ho / m), ceil(wo / m)
    hp, wpad = th * m + 2, tw * m + 2
    tf, h, w = x.shape[2:]
    front = spec.pads[0]
    tp = tf + front + spec.pads[3]
    kt = spec.kernel[0]
    tiles = th * tw
    exact = ho == th * m and wo == tw * m
    big = hp * wpad if exact else -hp * wpad
    it = x.itemsize
    one = sum(_winograd3d_slots(m, c, mo, kt, tp, to, tiles, big, pool)) * it  # one image
    b = _chunk(one, hi - lo, WINOGRAD_WORKSPACE_BYTES - 5 * ALIGN)  # (the slots are aligned)
    frames = to
    if one > WINOGRAD3D_FRAME_BYTES:  # the most frames of one image that fit, at least a pool's
        step = pool[0] if pool else 1  # (whole pool windows)
        lo_f, hi_f = step, to
        while lo_f < hi_f:  # a bisection over frame counts (planning, not a kernel loop)
            mid = max(lo_f + step, (lo_f + hi_f + 1) // 2 // step * step)
            if mid > hi_f:
                break
            need = sum(_winograd3d_slots(m, c, mo, kt, mid + kt - 1, mid, tiles, big, pool))
            if need * it <= WINOGRAD3D_FRAME_BYTES - 5 * ALIGN:
                lo_f = mid
            else:
                hi_f = mid - 1
        frames = lo_f
    band = th  # tile rows a chunk: all, unless one chunk of the fewest frames is too large
    if frames == (pool[0] if pool else 1) and one > WINOGRAD3D_FRAME_BYTES:
        lo_r, hi_r = 1, th
        while lo_r < hi_r:  # a bisection over tile rows (planning, not a kernel loop)
            mid = (lo_r + hi_r + 1) // 2
            rows_big = (mid * m + 2) * wpad * (1 if exact else -1)
            need = sum(
                _winograd3d_slots(m, c, mo, kt, frames + kt - 1, frames, mid * tw, rows_big, pool)
            )
            if need * it <= WINOGRAD3D_FRAME_BYTES - 5 * ALIGN:
                lo_r = mid
            else:
                hi_r = mid - 1
        band = lo_r
    if frames < to or band < th:  # chunks of one image: the frame budget is per image
        b = 1
    bias = None if epi.bias is None else epi.bias.reshape(mo, 1)
    transform = blocked_matmul if WINOGRAD3D_BLOCKED_TRANSFORMS else np.matmul
    if rec is not None:
        transform = _recorded_transform(rec)
    channels_last = (
        c >= WINOGRAD3D_CHANNELS_LAST_MIN and (tf * h * w * it) % WINOGRAD_ALIASED_PLANE_BYTES != 0
    )
    one_chunk = not WINOGRAD3D_ONE_CHUNK_ONLY or (b >= hi - lo and frames >= to and band >= th)
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        for f0 in range(0, to, frames):  # a loop over frame CHUNKS (one, unless b == 1)
            f1 = min(to, f0 + frames)
            for r0 in range(0, th, band):  # a loop over bands of tile rows (one, unless ...)
                _winograd3d_chunk(
                    m, spec, x, wp, out, epi, scratch, gemm, transform, bias, channels_last,
                    (n0, n1, f0, f1, r0, min(th, r0 + band)), (to, th, tw, wpad, exact, one_chunk),
                    rec,
                )  # fmt: skip


def _recorded_transform(rec: list) -> Callable:
    """`_winograd3d`'s transform(a, b, out) (WINOGRAD3D_BLOCKED_TRANSFORMS), recorded."""

    def transform(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        if WINOGRAD3D_BLOCKED_TRANSFORMS:
            blocked_matmul(a, b, out, rec)
        else:
            _call(rec, np.matmul, a, b, out=out)

    return transform


def _winograd3d_chunk(
    m, spec, x, wp, out, epi, scratch, gemm, transform, bias, channels_last, part, geo, rec=None
) -> None:
    """`_winograd3d` on images [n0, n1), output frames [f0, f1) and tile rows [r0, r1) (of the
    unpooled conv: output rows [r0 m, r1 m))."""
    n0, n1, f0, f1, r0, r1 = part
    to_all, th_all, tw, wpad, exact, one_chunk = geo
    th = r1 - r0
    hp = th * m + 2  # the padded input rows [r0 m, r1 m + 2) this chunk reads
    big = hp * wpad if exact else -hp * wpad
    bt, at = SEPARABLE[m]
    t = m + 2
    c = x.shape[1]
    mo = spec.c_out
    kt = spec.kernel[0]
    tf, h, w = x.shape[2:]
    front, top, left = spec.pads[:3]
    nb = n1 - n0
    tiles = th * tw
    to = f1 - f0
    tp = to + kt - 1  # the padded input frames [f0, f1 + kt - 1) this chunk reads
    pool = epi.pool
    sizes = _winograd3d_slots(m, c, mo, kt, tp, to, tiles, big, pool)
    xs, xe = max(0, f0 - front), min(tf, f1 + kt - 1 - front)
    xe = max(xe, xs)
    fp = max(0, front - f0)
    ys, ye = max(0, r0 * m - top), min(h, r0 * m + hp - top)
    ye = max(ye, ys)
    rp = max(0, top - r0 * m)
    pads = (fp, rp, left, tp - fp - (xe - xs), hp - rp - (ye - ys), spec.pads[5])
    extra = (0, 0, wpad - (w + left + spec.pads[5]))
    xc = x[n0:n1] if (xs, xe, ys, ye) == (0, tf, 0, h) else x[n0:n1, :, xs:xe, ys:ye]
    buf = scratch.take(0, nb * sizes[0], x.dtype)
    d = scratch.take(1, nb * sizes[1], x.dtype)  # (at their largest first: see the slots)
    v1 = scratch.take(2, nb * sizes[2], x.dtype)
    x_cols = c * nb * tp * tiles
    if channels_last:  # (b, frames, hp, wpad, C): the gather copies runs of C values
        xp = _padded_channels_last3(xc, pads[:3], (tp, hp, wpad), buf, rec)
        s = xp.strides
        tiles_view = view(
            xp,
            (nb, tp, th, tw, t, t, c),
            (s[0], s[1], m * s[2], m * s[3], s[2], s[3], s[4]),
        ).transpose(4, 5, 0, 1, 2, 3, 6)
        _call(rec, np.copyto, d[: t * t * x_cols].reshape(t, t, nb, tp, th, tw, c), tiles_view)
    elif (
        one_chunk
        and tw <= WINOGRAD3D_TAKE_MAX_TILES_ACROSS
        and t * x_cols <= WINOGRAD3D_TAKE_MAX_INDEX
    ):
        # (b, C, frames, hp, wpad): gathered by indices
        xp = padded(xc, pads, extra, buf, rec=rec)
        flat = xp.reshape(-1)
        idx = _tile_row_index(xp.shape, m, th, tw)
        rows = d[: t * t * x_cols].reshape(t, -1)
        for i in range(t):  # a loop over the tile's rows (t = m + 2 takes)
            _call(rec, np.take, flat[i * wpad :], idx, out=rows[i], mode="wrap")
    else:  # (b, C, frames, hp, wpad): runs of tw values
        xp = padded(xc, pads, extra, buf, rec=rec)
        s = xp.strides
        tiles_view = view(
            xp, (nb, c, tp, th, tw, t, t), (s[0], s[1], s[2], m * s[3], m * s[4], s[3], s[4])
        ).transpose(5, 6, 1, 0, 2, 3, 4)
        _call(rec, np.copyto, d[: t * t * x_cols].reshape(t, t, c, nb, tp, th, tw), tiles_view)
    d = d[: t * t * x_cols]
    v1 = v1[: t * t * x_cols]
    transform(bt, d.reshape(t, -1), v1.reshape(t, -1))
    v = d  # (d is dead)
    transform(bt, v1.reshape(t, t, x_cols), v.reshape(t, t, x_cols))
    # S (t^2, 3, C, b, to, tiles): frame t + dt of V for row (dt, c), in V1's dead place
    # (channels-last, the copy transposes V's (tiles, C) planes too)
    cols = nb * to * tiles
    it = v.itemsize
    if channels_last:  # V (t^2, b, frames, tiles, C)
        st = (c * nb * tp * tiles, tiles * c, 1, tp * tiles * c, tiles * c, c)
    else:  # V (t^2, C, b, frames, tiles)
        st = (c * nb * tp * tiles, tiles, nb * tp * tiles, tp * tiles, tiles, 1)
    shifted = view(v, (t * t, kt, c, nb, to, tiles), tuple(e * it for e in st))
    sc = scratch.take(2, t * t * kt * c * cols, x.dtype)
    _call(rec, np.copyto, sc.reshape(t * t, kt, c, nb, to, tiles), shifted)
    sc = sc.reshape(t * t, kt * c, cols)
    mx = scratch.take(1, t * t * mo * cols, x.dtype).reshape(t * t, mo, cols)
    rows = _gemm_rows(mo, kt * c * cols) if (BLOCKED_GEMMS or _blocked_gemms()) else mo
    for m0 in range(0, mo, rows):  # a loop over GEMM blocks of output channels
        gemm(wp[:, m0 : m0 + rows], sc, mx[:, m0 : m0 + rows], 0)
    if bias is not None:  # at M's tile position (1, 1): see `_winograd` (A's row 1 is all
        # ones); Y1's column 1 held m times as many values (video3d@1 0.98x)
        _call(rec, np.add, mx[t + 1], bias, out=mx[t + 1])
    y_cols = mo * cols
    y1 = scratch.take(2, m * t * y_cols, x.dtype)
    transform(at, mx.reshape(t, -1), y1.reshape(m, -1))
    y = scratch.take(1, m * m * y_cols, x.dtype)
    y1t = y1.reshape(m, t, y_cols).transpose(0, 2, 1)
    if WINOGRAD3D_BLOCKED_TRANSFORMS:
        _row_blocked_matmul(y1t, at.T, y.reshape(m, y_cols, m), rec)
    else:
        _call(rec, np.matmul, y1t, at.T, out=y.reshape(m, y_cols, m))
    # (b, M, frames, th, m, tw, m)
    yv = y.reshape(m, mo, nb, to, th, tw, m).transpose(2, 1, 3, 4, 0, 5, 6)
    k0, k1 = pool[:2] if pool else (1, 1)
    whole = (f0, f1, r0, r1) == (0, to_all, 0, th_all)
    yb = out[n0:n1]
    if not whole:  # (NumPy clips the last band's rows to the output's)
        yb = yb[:, :, f0 // k0 : f1 // k0, r0 * m // k1 : r1 * m // k1]
    res = None
    if epi.residual is not None:
        res = epi.residual()[n0:n1]
        res = res if whole else res[:, :, f0:f1, r0 * m : r1 * m]
    if not exact:
        dest = scratch.take(4, nb * mo * to * th * m * tw * m, x.dtype)
        dest = dest.reshape(nb, mo, to, th, m, tw, m)
        _call(rec, np.copyto, dest, yv)
        ho, wo = yb.shape[3:]  # (a fused pool takes exact tiles only)
        valid = dest.reshape(nb, mo, to, th * m, tw * m)[..., :ho, :wo]
        if res is not None:
            _call(rec, np.add, valid, res, out=yb)
        else:
            _call(rec, np.copyto, yb, valid)
        activate(yb, epi.activation, rec)
        return
    if pool:  # the max over the pool's tiles straight from Y (exact tiles)
        _pool_tiles3d(y.reshape(m, mo, nb, to, th, tw, m), pool, yb, scratch, one_chunk, rec)
        activate(yb, epi.activation, rec)
        return
    dest = yb.reshape(nb, mo, to, th, m, tw, m)  # (a view: only axes split)
    if res is not None:
        _call(rec, np.add, yv, res.reshape(dest.shape), out=dest)
        activate(yb, epi.activation, rec)
    elif epi.activation and epi.activation[0] == "relu":
        _call(rec, np.copyto, dest, yv)
        relu_(yb, rec=rec)
    else:
        _call(rec, np.copyto, dest, yv)
        activate(yb, epi.activation, rec)


WINOGRAD3D_POOL_SHIFTED_MAX = True
"""`_pool_tiles3d`'s last stage (kw, over each tile's columns) as a running np.maximum of the
contiguous stage input with itself shifted by 1 .. kw - 1 values (SIMD loops over the whole
array; the values past a window's first are computed and not read), then a copy of every kw-th
value into the output: NumPy's maximum over two stride-kw operands ran a scalar loop. Measured
alone (one thread, in-process interleaved medians): video3d's first conv's kw stage (65K values
in, 32K out) 0.58x the time (21.7 vs 37.2 us)."""


def _pool_tiles3d(
    y: np.ndarray,
    pool: tuple,
    yb: np.ndarray,
    scratch: Scratch,
    shifted: bool = True,
    rec: list | None = None,
) -> None:
    """yb (b, M, T / kt, H / kh, W / kw) = the max over kt x kh x kw tiles of the conv's output,
    given as Winograd's Y `y` (m, M, b, T, th, tw, m) as its output transform leaves it (tile
    row, channel, image, frame, tile position, tile column; exact tiles, kh and kw dividing m):
    one axis at a time, each a running np.maximum of the window's slices into a workspace, the
    last one into yb. The order: tile rows (kh: slices of whole (M, b, T, th, tw, m) blocks, one
    contiguous run each), frames (kt: runs of th x tw x m), then tile columns (kw: stride-kw
    reads, the fewest elements left), written into yb's rows. Taken over the (b, M, T, th, m,
    tw, m) view in the order kw, kh, kt, every stage's inner loops ran over a few elements (a
    tile's m // kw columns across tw tiles): video3d's three fused pools at batch 1 (one
    thread, in-process interleaved medians of ratios, 400 rounds) took 0.60x, 0.47x and 0.52x
    that time (56 vs 93 us, 35 vs 75, 21 vs 41); kw first (stride-kw reads over all of Y)
    0.77-0.82x. Replaces the copy out of the whole output, its activation and the MaxPool
    step's pass (bias and activation are monotone per channel: the caller applies the
    activation after the max). The intermediate stages take scratch slots 2 and 3: `y` is
    not in them (`_winograd3d_chunk`'s Y is slot 1, its dead Y1 slot 2)."""
    m, mo, nb, to, th, tw, _ = y.shape
    kt, kh, kw = pool
    # yb as (m / kh, M, b, T / kt, th, tw, m / kw), the order of y's axes (only split and
    # permuted: a view, also of a band or batch slice of the output)
    dst_all = yb.reshape((nb, mo, to // kt, th, m // kh, tw, m // kw), copy=False).transpose(
        4, 1, 0, 2, 3, 5, 6
    )
    stages = [(k, axis) for k, axis in ((kh, 0), (kt, 3), (kw, 6)) if k > 1]
    if not stages:
        _call(rec, np.copyto, dst_all, y)
        return
    cur = y
    for i, (k, axis) in enumerate(stages):  # a loop over the pool's axes
        shape = cur.shape
        if axis == 6 and shifted and WINOGRAD3D_POOL_SHIFTED_MAX:  # (the last stage: see it)
            flat = cur.reshape(-1)  # (contiguous: Y or a stage's workspace)
            n = flat.size - k + 1
            # the dead slot: Y1's (2) when Y is `cur` or the first stage's is dead, else Y's
            tmp = scratch.take(1 if len(stages) == 2 else 2, flat.size, y.dtype)
            _call(rec, np.maximum, flat[:n], flat[1 : n + 1], out=tmp[:n])
            for j in range(2, k):  # a loop over the pool window along W
                _call(rec, np.maximum, tmp[:n], flat[j : n + j], out=tmp[:n])
            _call(rec, np.copyto, dst_all, tmp.reshape(*shape[:6], shape[6] // k, k)[..., 0])
            return
        win = cur.reshape(*shape[:axis], shape[axis] // k, k, *shape[axis + 1 :])
        lead = (slice(None),) * (axis + 1)
        if i == len(stages) - 1:
            dst = dst_all
        else:  # (the first in slot 2, the output transform's dead Y1: no room of its own)
            dshape = (*shape[:axis], shape[axis] // k, *shape[axis + 1 :])
            dst = scratch.take(2 + i, prod(dshape), y.dtype).reshape(dshape)
        _call(rec, np.maximum, win[(*lead, 0)], win[(*lead, 1)], out=dst)
        for j in range(2, k):  # a loop over the pool window along this axis
            _call(rec, np.maximum, dst, win[(*lead, j)], out=dst)
        cur = dst


BATCH_LAST_MIN_IMAGES = 4
"""A 2-D conv under a fused tiling MaxPool that colstack would run (LeNet's second) runs
`_im2col_batch_last` on slices of at least this many images. Measured against colstack with
its fused pool (LeNet's 6 -> 16 5x5 at 14x14, bias + ReLU + 2x2 pool, one thread, in-process
interleaved medians of ratios, 100 rounds): 0.70x the time at batch 32, 0.79x at 16, 0.91x at
8, 0.94x at 4, 1.09x at 2. The same path for LeNet's first conv (1 -> 6, pads 2, 28x28:
phasepool's) took 1.0x phasepool's time at batch 8-32 (its larger output's pool and transposing
copy cost what the exact GEMM saves), 1.08-1.25x at 2-4: not taken there."""
BATCH_LAST_WORKSPACE_BYTES = WORKSPACE_BYTES
"""`_im2col_batch_last`'s workspace: chunks of as many images as leave room for a slab of one
pool tile's rows each, then slabs of as many such rows as fit (its copy's runs are output
width x images long: all of a chunk's images in each slab's runs). LeNet's second conv at batch
32 (one thread, in-process interleaved, 100 rounds, medians of ratios against colstack): 0.78x
the time with 1 MiB (32 images in 5 slabs of 2 output rows), 0.73x with 2 MiB (slabs of 6 and
4 rows) or 4 MiB (the whole batch at once, 2.3 MiB), 0.86x with 512 KiB; chunks of 11 images
whole (1 MiB before the slabs) took 0.90x. The 2.3 MiB made lenet5@32's arena peak / floor 2.24
(1.36 before); with 1 MiB and both batch-last paths 0.96. An input read as it lies (the
plan's batch-last hand-off) takes no room: LeNet's second conv at batch 32 then runs 3 slabs of
up to 4 output rows instead of 5 of 2, lenet5@32 0.98x the time (in-process interleaved, 800
rounds, medians of ratios, load 3-4), 1.00x at 16."""
_BATCH_LAST_WEIGHTS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def _batch_last_weight(wp: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The plain (M, C * kh * kw) weight, columns (c, i, j), from colstack's prepared weight
    `wp` ((kw * M, C * kh [+ 1]): w[m, c, i, j] at row (j, m), column (c, i)); computed once
    per prepared array (see `_derived`)."""

    def make() -> np.ndarray:
        mo, c, (kh, kw) = spec.c_out, spec.c_in, spec.kernel
        w4 = wp[:, : c * kh].reshape(kw, mo, c, kh)
        return np.ascontiguousarray(w4.transpose(1, 2, 3, 0).reshape(mo, -1))

    return _derived(_BATCH_LAST_WEIGHTS, wp, make)


BATCH_LAST_HANDOFF_MIN_IMAGES = 4
"""A conv whose readers all take a batch-last input (`takes_batch_last`; the plan decides, see
compile.`CompiledPlan._batch_last_handoffs`) writes its output batch-last from this many images
(the batch-last paths' own threshold): the phasepool's or im2col's batch-last paths then keep
the images innermost end to end (no transposing copy out of the first conv nor into the
second, the Flatten a view whose transpose is the first Gemm's contiguous operand). lenet5
against the same plan without the hand-off (in-process interleaved, 400 rounds, medians of
ratios, load 6): 0.93x the time at batch 32 (min 621 vs 660 us), 0.96x at 8, 1.00x at 1."""


def images_innermost(x: np.ndarray) -> bool:
    """Whether `x` (N, C, *spatial) is the NCHW view of a contiguous batch-last array (C,
    *spatial, N): a batch-last hand-off between two steps (see BATCH_LAST_HANDOFF_MIN_IMAGES)."""
    return (
        x.ndim >= 2
        and x.strides[0] == x.itemsize
        and (x.transpose(*range(1, x.ndim), 0).flags.c_contiguous)
    )


def takes_batch_last(algo: str, pool: tuple) -> bool:
    """Whether a conv planned as `algo` under a fused `pool` reads a batch-last input without a
    transposing copy from BATCH_LAST_HANDOFF_MIN_IMAGES images: phasepool's and
    `_im2col_batch_last`'s copies of the input read it as it lies."""
    if len(pool) != 2:
        return False
    return algo.startswith("phasepool") or (algo == "colstack" and min(pool) > 1)


def writes_batch_last(x: np.ndarray) -> bool:
    """Whether a conv the plan hands off batch-last (`CompiledPlan._batch_last_handoffs`) writes
    its output so on input x: from BATCH_LAST_HANDOFF_MIN_IMAGES images, and only when its own
    batch-last path runs on x (`_batch_last`: not on planes that alias in the cache, where it
    runs per image and a batch-last output would be a strided write; lenet5-shaped at 32x32,
    batch 32, in-process interleaved: 1.05x the time of NCHW). Else NCHW: every reader takes
    either (a batch-last output is held as its NCHW view)."""
    return _batch_last(x, x.shape[0], BATCH_LAST_HANDOFF_MIN_IMAGES)


def _batch_last(x: np.ndarray, images: int, least: int) -> bool:
    """Whether a batch-last path runs on `images` images of x (at least `least`): not when x's
    planes are a multiple of WINOGRAD_ALIASED_PLANE_BYTES, where the transposing copy of the
    input (the images innermost) reads values that alias in the cache. Measured (one thread,
    interleaved min times, benchmarks/conv_algorithms.py --pool 2, batch 32; with "same" pads),
    the batch-last path against the NCHW one at 32x32 planes: 1 -> 6 3x3 1.26x the time, 3 -> 6
    3x3 1.32x, 3 -> 6 5x5 1.14x; 1 -> 4 5x5 at 64x64 1.76x; elsewhere 0.6-0.9x (16x16-28x28:
    1-4 -> 6 5x5, 3 -> 6 3x3, 6-8 -> 16 5x5), but 8 -> 6 3x3 at 16x16 1.07x."""
    return images >= least and (
        (x.shape[2] * x.shape[3] * x.itemsize) % WINOGRAD_ALIASED_PLANE_BYTES != 0
        or images_innermost(x)  # (already batch-last: no transposing copy)
    )


def _batch_last_chunks(budget: int, n: int, whole: int, per_row: int, rows: int) -> tuple:
    """(images a chunk, rows a slab) of the batch-last paths for `n` images within `budget`
    elements: `whole` per image plus `per_row` per image and slab row. Chunks of as many images
    as leave room for a one-row slab each, in equal chunks; then the slabs (`_batch_last_slab`)."""
    images = _chunk(whole + per_row, n, budget)
    images = -(-n // -(-n // images))  # equal chunks
    return images, _batch_last_slab(budget, images, whole, per_row, rows)


def _batch_last_slab(budget: int, images: int, whole: int, per_row: int, rows: int) -> int:
    """Rows per slab of the batch-last paths: as many of `rows` as fit in `budget` elements
    beside `whole` per image (at least one), in equal slabs."""
    slab = max(1, min(rows, (budget - images * whole) // (images * per_row)))
    return -(-rows // -(-rows // slab))


def _im2col_batch_last(spec, x, w, out, epi, scratch, lo, hi, gemm) -> None:
    # A conv under a fused kh_p x kw_p tiling MaxPool with the images innermost: the chunk's
    # input copied to (C, padded rows, padded width, b), so that each exact im2col row (c, i,
    # j) is, per output row, ONE contiguous run of (output width x b) values of that copy
    # (NCHW's exact columns are runs of the output width: 10 values for LeNet's second conv,
    # wide rows or colstack compute 1.4x the products there). One GEMM (M, C kh kw) @ (C kh
    # kw, rows x width x b) gives the conv batch-last, (M, rows, width, b): the pool's maxima
    # run over contiguous runs (a pair of output rows, then of b-value pixel columns), and the
    # pooled (M, rows, width, b) is copied to NCHW with the bias, then the activation runs in
    # place. Only the rows and columns the pool tiles are computed.
    n, c, h, wi = x.shape
    kh, kw = spec.kernel
    ph, pw = epi.pool
    mo = spec.c_out
    hr, wr = out.shape[2:]
    ho, wo = hr * ph, wr * pw
    pt, pl = spec.pads[0], spec.pads[1]
    sh, dh = spec.strides[0], spec.dilations[0]  # (unit along the width: colstack's)
    hp, wpad = (ho - 1) * sh + (kh - 1) * dh + 1, wo + kw - 1  # the padded input the outputs read
    if hr == 0 or wr == 0 or hi <= lo:
        return
    kg = c * kh * kw
    r0, r1 = max(0, pt), min(hp, pt + h)  # the padded rows and columns inside the input
    q0, q1 = max(0, pl), min(wpad, pl + wi)
    bias = None if epi.bias is None else epi.bias.astype(x.dtype, copy=False).reshape(1, mo, 1, 1)
    # A batch-last input (a hand-off: images_innermost) needing no padding is read as it lies
    inner = r0 == 0 and r1 == hp and q0 == 0 and q1 == wpad and images_innermost(x)
    # Workspace per image: the input copy (unless read as it lies) and the pooled rows
    # (whole), and per slab of ph output rows, its columns and GEMM result. A chunk holds as
    # many images as leave room for one such slab each, then its slabs as many rows as fit
    # (long runs: all images).
    whole = (0 if inner else c * hp * wpad) + mo * hr * wo + mo * hr * wr
    pair = ph * wo * (kg + mo)
    nb, pairs = _batch_last_chunks(
        BATCH_LAST_WORKSPACE_BYTES // x.itemsize, hi - lo, whole, pair, hr
    )
    for n0 in range(lo, hi, nb):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + nb)
        b = n1 - n0
        if inner:
            xt = x[n0:n1, :, :hp, :wpad].transpose(1, 2, 3, 0)
        else:
            xt = scratch.take(0, c * hp * wpad * b, x.dtype).reshape(c, hp, wpad, b)
            if r0 > 0 or r1 < hp or q0 > 0 or q1 < wpad:
                xt[...] = 0  # the padding
            if r1 > r0 and q1 > q0:
                src = x[n0:n1, :, r0 - pt : r1 - pt, q0 - pl : q1 - pl]
                np.copyto(xt[:, r0:r1, q0:q1], src.transpose(1, 2, 3, 0))
        s = xt.strides  # (its width and images axes merge in the copy: NumPy coalesces them)
        windows = view(xt, (c, kh, kw, ho, wo, b), (s[0], dh * s[1], s[2], sh * s[1], s[2], s[3]))
        m1 = scratch.take(3, mo * hr * wo * b, x.dtype).reshape(mo, hr, wo * b)
        for g0 in range(0, hr, pairs):  # a loop over slabs of pooled rows (ph output rows each)
            g1 = min(hr, g0 + pairs)
            rs = (g1 - g0) * ph
            cols = scratch.take(1, kg * rs * wo * b, x.dtype)
            np.copyto(cols.reshape(c, kh, kw, rs, wo, b), windows[:, :, :, g0 * ph : g1 * ph])
            y = scratch.take(2, mo * rs * wo * b, x.dtype)
            gemm(w, cols.reshape(kg, -1), y.reshape(mo, -1), 0)
            yr = y.reshape(mo, g1 - g0, ph, wo * b)
            ms = m1[:, g0:g1]
            np.maximum(yr[:, :, 0], yr[:, :, 1], out=ms)
            for t in range(2, ph):  # a loop over the pool tile's rows
                np.maximum(ms, yr[:, :, t], out=ms)
        mc = m1.reshape(mo, hr, wr, pw, b)
        yb = out[n0:n1]
        yt = yb.transpose(1, 2, 3, 0)
        if yt.flags.c_contiguous:  # a batch-last output (a hand-off): no transposing copy
            np.maximum(mc[..., 0, :], mc[..., 1, :], out=yt)  # (the columns' max into it)
            for t in range(2, pw):  # a loop over the pool tile's columns
                np.maximum(yt, mc[..., t, :], out=yt)
            if bias is not None:
                yt += bias.reshape(mo, 1, 1, 1)
            activate(yt, epi.activation)
            continue
        m2 = scratch.take(4, mo * hr * wr * b, x.dtype).reshape(mo, hr, wr, b)
        np.maximum(mc[..., 0, :], mc[..., 1, :], out=m2)
        for t in range(2, pw):  # a loop over the pool tile's columns
            np.maximum(m2, mc[..., t, :], out=m2)
        if bias is None:
            np.copyto(yb, m2.transpose(3, 0, 1, 2))
        else:
            np.add(m2.transpose(3, 0, 1, 2), bias, out=yb)
        activate(yb, epi.activation)


PHASE_POOL_BATCH_LAST_MIN_IMAGES = 4
"""`_phase_pool` runs `_phase_pool_batch_last` on slices of at least this many images. Measured
against the per-image phasepool (LeNet's first conv, 1 -> 6 5x5 pads 2 at 28x28, bias + ReLU +
2x2 pool, one thread, in-process interleaved medians of ratios, 100 rounds): 0.72x the time at
batch 32, 0.82x at 16, 0.89x at 8, 0.97x at 4, 1.09x at 2."""
PHASE_POOL_BATCH_LAST_BYTES = WORKSPACE_BYTES
"""... its workspace, in chunks of images and slabs of pooled rows as `_im2col_batch_last`'s
(BATCH_LAST_WORKSPACE_BYTES). LeNet's first conv at batch 32 (one thread, interleaved, 100
rounds, medians of ratios against the per-image phasepool): 0.72x the time with 1 MiB (32
images in 2 slabs of 7 pooled rows), 0.68x with 2 MiB (all 14 rows, 1.7 MiB), 0.79x with 512
KiB. lenet5@32 with both paths (in-process interleaved, 30 rounds, medians of ratios, load
2.8, against neither): 0.82x the time with 1 MiB, 0.78x with 2 MiB, 0.76x with 4 MiB (arena
peak / floor 0.96 with 1 MiB, 1.67 with 2 MiB for the phases and 4 MiB for colstack's)."""


def _phase_pool_batch_last(spec, x, wp, out, epi, scratch, lo, hi, gemm) -> None:
    # `_phase_pool` with the images innermost: the input's phases copied to (C, kh_p, kw_p,
    # phase rows, phase columns, b), so that an operand row (c, u1, u0, v1, v0) is, per pooled
    # row, ONE contiguous run of (pooled width x b) values: exact columns (NCHW's contiguous
    # runs needed wide phase rows, wq of which the pooled width are valid: 16 for 14 in LeNet's
    # first conv, 1.14x the GEMM's columns). One GEMM (kh_p kw_p M, rows) @ (rows, pooled
    # pixels x b) over the chunk; each pool position's result is one contiguous block, the max
    # over them runs on whole blocks, the last into the NCHW output (transposing).
    n, c, h, w = x.shape
    ph, pw = epi.pool
    kh, kw = spec.kernel
    mo = spec.c_out
    hr, wr = out.shape[2:]
    if hr == 0 or wr == 0 or hi <= lo:
        return
    u1, v1 = -(-(ph + kh - 1) // ph), -(-(pw + kw - 1) // pw)
    hq, wq = hr + u1 - 1, wr + v1 - 1
    pt, pl = spec.pads[0], spec.pads[1]
    k = c * u1 * ph * v1 * pw
    augmented = wp.shape[-1] == k + 1  # the bias is the weight's last column
    rows = k + augmented
    phases = ph * pw
    # Workspace per image: the phases (whole), and per pooled row its columns and GEMM result;
    # a chunk holds as many images as leave room for one pooled row each, then its slabs as
    # many pooled rows as fit (runs over all of the chunk's images).
    whole = c * phases * hq * wq
    row = (rows + phases * mo) * wr
    b, slab = _batch_last_chunks(PHASE_POOL_BATCH_LAST_BYTES // x.itemsize, hi - lo, whole, row, hr)
    it = x.itemsize
    for n0 in range(lo, hi, b):  # a loop over batch CHUNKS sized by the workspace, not items
        n1 = min(hi, n0 + b)
        nb = n1 - n0
        xq = scratch.take(0, c * phases * hq * wq * nb, x.dtype).reshape(c, ph, pw, hq, wq, nb)
        xq[...] = 0  # the padding (and the windows' rows and columns past it)
        _copy_phases(x[n0:n1], xq.transpose(5, 0, 1, 2, 3, 4), pt, pl, (ph, pw))
        s = xq.strides
        windows = view(  # (C, u1, u0, v1, v0, pooled rows, pooled width x b)
            xq, (c, u1, ph, v1, pw, hr, wr * nb), (s[0], s[3], s[1], s[4], s[2], s[3], it)
        )
        yb = out[n0:n1]
        yt = yb.transpose(1, 2, 3, 0)
        for g0 in range(0, hr, slab):  # a loop over slabs of pooled rows
            g1 = min(hr, g0 + slab)
            ps = (g1 - g0) * wr * nb
            cols = scratch.take(1, rows * ps, x.dtype).reshape(rows, ps)
            if augmented:
                cols[k] = 1  # the row of ones the bias column multiplies
            np.copyto(cols[:k].reshape(c, u1, ph, v1, pw, g1 - g0, -1), windows[..., g0:g1, :])
            z = scratch.take(2, phases * mo * ps, x.dtype).reshape(phases, mo * ps)
            gemm(wp, cols, z.reshape(phases * mo, ps), 0)
            acc = z[0]
            for t in range(1, phases - 1):  # a loop over the pool tile's positions
                np.maximum(acc, z[t], out=acc)
            last = z[phases - 1].reshape(mo, g1 - g0, wr, nb)
            np.maximum(acc.reshape(mo, g1 - g0, wr, nb), last, out=yt[:, g0:g1])
        if yt.flags.c_contiguous:  # a batch-last output (a hand-off): the epilogue on it
            _epilogue(yt[None], epi, n0, n1, augmented)  # (the channels on axis 1)
        else:
            _epilogue(yb, epi, n0, n1, augmented)
