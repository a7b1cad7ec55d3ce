"""Conv (a fast algorithm with a fused epilogue) and Gemm steps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphnet.runtime.fast import conv as _conv
from graphnet.runtime.fast.conv import (
    WORKSPACE_BYTES,
    ConvSpec,
    Epilogue,
    conv_chunked,
    prepare_weight,
)
from graphnet.runtime.fast.steps import base as _base
from graphnet.runtime.fast.steps.base import (
    Run,
    Step,
    TakeLog,
    may_record,
    no_record,
    retaken,
    taped,
    unbind,
)
from graphnet.runtime.fast.steps.elementwise import OWN_OUTPUT_MAX_BYTES, softmax
from graphnet.runtime.fast.threads import ROW_SPLIT_MIN_FLOPS, SPLIT_MIN_FLOPS
from graphnet.runtime.fast.winograd import (
    KernelBlocks,
    block_rows,
    per_run,
    per_run_transposed,
    transformed,
    weight_transform,
)

__all__ = [
    "TRAIN_KEEP_WEIGHTS",
    "TRAIN_WINOGRAD_BATCH",
    "TRANSPOSED_GEMM_MIN_COLUMNS",
    "TRANSPOSED_GEMM_MIN_ROWS",
    "ConvStep",
    "GemmStep",
    "MergedPointwiseStep",
]


TRAIN_WINOGRAD_BATCH = 1
"""In train mode a batch smaller than this runs Winograd convs as colstack or im2col (see
ConvStep). It was 8 while train mode transformed the weights on every run; with the separable
float32 weight transform (winograd.py), Winograd paid in train mode from batch 1 (train forward,
16 interleaved rounds, medians of ratios, against 8): vgg_bn 0.91x the time at batch 1, 0.82x at
2, 0.74x at 4; resnet20 0.97-0.98x, inception_bn 1.00-0.97x (the few-tile rules still apply).
(Measured while train mode transformed the weights on every run; it now keeps them, see
TRAIN_KEEP_WEIGHTS.)"""

TRAIN_KEEP_WEIGHTS = True
"""Train mode keeps each conv's prepared weight (Winograd's U^T, colstack's or im2col's re-laid
kernel) between runs while the parameter stays the same array object, as inference does, and
runs the same algorithms (F(2x2) for too few F(4x4) tiles; U transformed every run into the
step's workspace where inference does so, see `winograd.PER_RUN_MIN_COLUMNS`). An update is seen
by the next run when it replaces the array (`Graph.set_param`, as the Trainer does with the
optimizer's new arrays), not when it writes into it in place (the Session's rule in both modes).
It had prepared afresh on every run. Measured (train forward, in-process interleaved, medians of
ratios against False, 15-40 rounds, load 0.1-0.7): vgg_bn@1 0.79x the time (train / inference
1.51 -> 1.20), inception_bn@1 0.94x, resnet20@1 0.96x, vgg_bn@32 0.94x, resnet20@32 1.03x
(q25-75 0.94-1.05: noise). A check of the contents against a copy on every run (bit for bit:
in-place writes seen) cost ~0.5 ms of vgg_bn@1's 3.4 (the weights and copies read from memory:
~9 MiB), most of the gain: not done. False: every weight prepared afresh on every run, Winograd
from U (not U^T), convs with too few F(4x4) tiles on the fallback (colstack or im2col)."""


FEW_TILES_F2_MIN_CHANNELS = 96
"""A conv planned as F(4x4) Winograd with too few tiles for it (MIN_WINOGRAD_COLUMNS: batch 1 at
8x8) runs F(2x2) when that has MIN_WINOGRAD_COLUMNS tiles (8x8 at batch 1: 16) and its fallback
would be im2col (128 output channels or more) or both channel counts are at least this (colstack
is faster on thinner ones). F(2x2)'s GEMMs do 2.25x fewer multiplications than im2col's and
its transforms are cheap at 8x8. Measured at batch 1 (one thread, in-process interleaved
medians of ratios, 3x3 pads 1, bias + ReLU, against im2col): 128 -> 256 and 256 -> 256 at 8x8
(vgg_bn's last convs) 0.72x and 0.68x, 128 -> 128 0.64x, 64 -> 128 0.75x (colstack 0.93x),
96 -> 96 0.73x (colstack 0.87x); thinner, colstack wins: 64 -> 64 0.79x (colstack 0.77x),
48 -> 48 0.86x (0.80x), 32 -> 32 1.06x (0.95x); 4 tiles (4x4 outputs) 1.16x. In train mode
the weight is transformed on every run: the fallback stays. The transformed weight is 16/9 of
the conv's (kept, like F(4x4)'s: vgg_bn@1 +6.3 MiB for its two 8x8 convs)."""


def _few_tiles_f2(spec: ConvSpec, fallback: str, columns: int) -> bool:
    """Whether a conv with too few F(4x4) tiles runs F(2x2) on its `columns` F(2x2) tiles
    rather than `fallback` (see FEW_TILES_F2_MIN_CHANNELS)."""
    return columns >= _conv.MIN_WINOGRAD_COLUMNS and (
        fallback == "im2col" or min(spec.c_in, spec.c_out) >= FEW_TILES_F2_MIN_CHANNELS
    )


WINO3D_PER_RUN_MIN_MACS = 1 << 24
"""In inference, a wino3d conv whose GEMMs do at least this many multiply-adds ((m+2)^2 x M x
kt C x images x output frames x tiles) transforms its weights on every run into its step's
workspace (as winograd.PER_RUN_MIN_COLUMNS for 2-D convs), else keeps U', 4x the kernel. The
per-run transform costs ~20-30 us of fixed work per conv (the kernel re-laid, the transform's
calls), against the conv's GEMMs: a bound on their size, not on their columns (video3d@1 has
512 and 128 columns in its first two convs, each well under 1 ms). Measured on video3d (whole
model, in-process interleaved medians of ratios, 200 rounds, load 1.0-1.3) against U' kept,
per-run from 128 columns (its first two convs at batch 1-4, all three from 8): batch 1 1.03-1.04x
the time, 2 1.02x, 4 1.00x, 8 0.98-1.04x, 32 0.99x (kept U' 1.07 MiB). With this bound: the
first conv (3 -> 16, 2.65 M multiply-adds an image) keeps U' up to batch 4, the second up to
batch 2 (7-14 M), the third (32 -> 64 at 4x8x8, U' 0.84 MiB) up to batch 4 (28 M at batch 8)."""
WINO3D_KERNEL_SLOT = 9
"""Scratch slot (of the plan's scratch 0) of a wino3d conv's kernel re-laid as a 2-D one,
(M, kt x C, 3, 3), which `transformed` reads when the step transforms its weights per run:
past the conv kernels' slots 0-7 and the transform's U (winograd.U_SLOT)."""


def _wino3d_transformed(w: np.ndarray, m: int, run: Run) -> np.ndarray:
    """A wino3d conv's U' (`conv.prepare_weight`'s) in the step's workspace: the kernel re-laid
    with each temporal tap's channels stacked ((M, C, kt, 3, 3) -> (M, kt C, 3, 3), a copy of the
    kernel's size), then `transformed` as a 2-D F(m x m) weight (see PER_RUN_MIN_COLUMNS in
    winograd.py: the GEMMs' columns are images x output frames x tiles)."""
    mo, c, kt = w.shape[:3]
    scratch = run.parallel.scratch[0]
    w2 = scratch.take(WINO3D_KERNEL_SLOT, w.size, np.dtype(np.float32))
    np.copyto(w2.reshape(mo, kt, c, 3, 3), w.transpose(0, 2, 1, 3, 4))
    return transformed(w2.reshape(mo, kt * c, 3, 3), m, run.parallel, scratch)


@dataclass
class ConvStep(Step):
    """Conv with a fast algorithm (pointwise / winograd / colstack / im2col / phasepool) and a
    fused epilogue."""

    spec: ConvSpec | None = None
    group: int = 1
    epilogue_bias: int | str | None = None
    residual: int | None = None
    activation: tuple = ()
    pool: tuple = ()  # a fused tiling MaxPool's kernel: see conv.Epilogue
    const_weight: bool = True
    # the residual dies here (set by the plan): the output may take its buffer (see __call__)
    overwrite: bool = False
    # every reader takes a batch-last input (set by the plan): the output is written batch-last
    # from conv.BATCH_LAST_HANDOFF_MIN_IMAGES images, held as its NCHW view (see conv)
    batch_last: bool = False
    # every reader is a Winograd conv (set by the plan): a Winograd run writes the output
    # channels-last, (N, H, W, M) held as its NCHW view (see conv.is_channels_last)
    channels_last: bool = False
    # the lean plan (see fast.lean): im2col's workspace budget in bytes (None: the default), and
    # whether a parameter bias rides in im2col's GEMM as a weight column (a copy of the weight)
    workspace: int | None = None
    bias_column: bool = True
    # the lean plan's Winograd (see fast.lean): U transformed on every run block by block of
    # output channels (winograd.KernelBlocks), none kept; where the run's shape takes another
    # algorithm than Winograd, im2col on the parameter's view
    blocks: int = 0  # (bytes of a block: winograd.block_rows; 0: off)
    # algorithm -> (weight array, dtype, prepared weight); input shape -> (output shape, flops,
    # algorithm): per-run Python work done once (a batch-1 run is mostly such overhead).
    _prepared: dict = field(default_factory=dict)
    _shapes: dict = field(default_factory=dict)
    ran: str = ""  # the algorithm of the last run (`algo`, or its fallback for too few tiles)
    _epi: tuple = (None, None)  # (bias array, its Epilogue): see `_epilogue`
    _per_run: dict = field(default_factory=dict)  # input shape -> Winograd U in a workspace?
    _bound: tuple | None = None  # the last replay's calls bound to their arrays: see `_replay`
    _no_record: tuple = ()  # (input shape, mode) whose calls are not recorded (`may_record`)
    _replayed: bool = False  # the bound calls were replayed at least once

    def weight(
        self,
        w: np.ndarray,
        dtype: np.dtype,
        training: bool,
        algo: str = "",
        bias: np.ndarray | None = None,
    ) -> np.ndarray:
        """The prepared weight for `algo` (default: the step's), with `bias` as its last column
        for im2col (see `prepare_weight`), cached while the parameter arrays stay the same
        objects (the cache holds them: their ids cannot be reused), in train mode too (see
        TRAIN_KEEP_WEIGHTS); prepared afresh for a weight computed by the graph."""
        algo = algo or self.algo
        hit = self._prepared.get(algo)
        if self.blocks and algo.startswith("winograd"):  # (no copy: a view of the parameter)
            if hit is None or hit[0] is not w:
                m = 4 if algo[-1] == "4" else 2
                spec = self.spec
                rows = block_rows(spec.c_in, spec.c_out, m, self.blocks)  # type: ignore[union-attr]
                hit = self._prepared[algo] = (w, None, dtype, KernelBlocks(w, rows))
            return hit[3]
        if (
            not self.const_weight
            or hit is None
            or hit[0] is not w
            or hit[1] is not bias
            or hit[2] != dtype
            or (training and not TRAIN_KEEP_WEIGHTS)
        ):
            wp = prepare_weight(algo, w, self.group, dtype, bias)
            hit = self._prepared[algo] = (w, bias, dtype, wp)
        return hit[3]

    def _geometry(self, shape: tuple, training: bool) -> tuple:
        spec = self.spec
        k = len(shape) - 2
        outs = tuple(
            (
                shape[2 + i]
                + spec.pads[i]
                + spec.pads[k + i]
                - spec.dilations[i] * (spec.kernel[i] - 1)
                - 1
            )
            // spec.strides[i]
            + 1
            for i in range(k)
        )
        out_shape = (shape[0], spec.c_out, *outs)
        flops = 2.0 * math.prod(out_shape) * (spec.c_in // spec.group) * math.prod(spec.kernel)
        if self.pool:  # the output holds the pooled conv (its last len(pool) axes)
            kp = len(self.pool)
            pooled = (o // kk for o, kk in zip(outs[-kp:], self.pool, strict=True))
            out_shape = (*out_shape[:-kp], *pooled)
        algo = self.algo
        if algo.startswith("winograd"):
            m = 4 if algo.endswith("f4") else 2
            columns = shape[0] * math.prod(-(-o // m) for o in outs)
            narrow = max(spec.c_in, spec.c_out) < _conv.COLSTACK_MAX_CHANNELS
            least = _conv.NARROW_MIN_WINOGRAD_COLUMNS if narrow else _conv.MIN_WINOGRAD_COLUMNS
            if columns < least or (training and shape[0] < TRAIN_WINOGRAD_BATCH):
                # Too few tiles for its GEMMs (e.g. batch 1 at 8x8: 4 columns; a narrow conv
                # at 16x16: 16, where colstack is faster), or train mode on fewer images than
                # TRAIN_WINOGRAD_BATCH: the transforms cost more than they save; colstack or
                # im2col multiplies the weight as it is, or F(2x2) with enough of its smaller
                # tiles (see FEW_TILES_F2_MIN_CHANNELS; train mode too: it keeps U).
                algo = _conv.few_tiles_fallback(spec)
                f2 = shape[0] * math.prod(-(-o // 2) for o in outs)
                if (
                    m == 4
                    and (TRAIN_KEEP_WEIGHTS or not training)
                    and _few_tiles_f2(spec, algo, f2)
                ):
                    algo = "winograd-f2"
            if self.blocks and not algo.startswith("winograd"):
                algo = "im2col"  # (the lean plan: no prepared weight for the fallback)
        return out_shape, flops, algo

    def _cached_geometry(self, shape: tuple, training: bool) -> tuple:
        """`_geometry`, computed once per (input shape, mode): every run asks for it."""
        key = (shape, training)
        geo = self._shapes.get(key)
        if geo is None:
            geo = self._shapes[key] = self._geometry(shape, training)
        return geo

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        bound = self._bound
        if bound is not None and x is bound[0] and self._replay(run, x, bound):
            return
        self._compute(run, x)

    def _replay(self, run: Run, x: np.ndarray, bound: tuple) -> bool:
        """The NumPy calls the step made in the run that bound them (`_compute`), again: the
        same input, weight, bias, residual, output and workspace arrays (the same objects, so
        the same memory and shapes: a replayed run's arena views), mode and threads. False
        (nothing done) when an input differs; else the step is done (computed afresh into the
        output it took when the output or a workspace differs)."""
        _, w, b, res, training, workers, out_shape, y0, takes, calls, algo, steal, yt = bound
        r = self.residual
        if (
            run.get(self.inputs[1]) is not w
            or run.get(self.epilogue_bias) is not b
            or run.training is not training
            or run.parallel.workers != workers
            or (r is not None and (run.env[r] is not res or (steal and run.writable(r))))
        ):
            return False
        y = run.alloc(self.outputs[0], out_shape, x.dtype)  # (channels-last: (N, H, W, C))
        if y is y0 and retaken(run.parallel.scratch[0], takes):
            if yt is not None:  # its NCHW view, the same object as in the bound run
                run.env[self.outputs[0]] = yt
            self.ran = algo
            for call in calls:  # a loop over the step's NumPy calls
                if call() is False:  # a guard (phasepool's finite input) says no
                    break
            else:
                self._replayed = True
                taped(run, self, calls)
                return True
        unbind(self, (x.shape, run.training))
        if yt is not None:
            run.env[self.outputs[0]] = yt = y.transpose(0, 3, 1, 2)
            self._compute(run, x, yt, y)
        else:
            self._compute(run, x, y)
        return True

    def _compute(
        self,
        run: Run,
        x: np.ndarray,
        given: np.ndarray | None = None,
        given_base: np.ndarray | None = None,
    ) -> None:
        """The step, resolving its algorithm, weight, epilogue and output (`given`: the output
        already allocated, `given_base` its channels-last array when it is a channels-last
        view); its NumPy calls are recorded for `_replay` where they can be."""
        w = run.get(self.inputs[1])
        out_shape, flops, algo = self._cached_geometry(x.shape, run.training)
        self.ran = algo
        b = run.get(self.epilogue_bias)
        epi = self._epilogue(run, b, x.dtype)  # (a fresh one when there is a residual)
        r = self.residual
        plain = False  # the output in a buffer of its own (not the residual's, not batch-last)
        base = None  # a channels-last output's (N, H, W, C) array (y: its NCHW view)
        if given is not None:
            y, plain, base = given, True, given_base
        elif (
            self.overwrite
            and run.writable(r)
            and run.env[r].shape == out_shape
            and run.env[r].dtype == x.dtype
            and _conv.overwrites_residual(algo, self.spec, out_shape)
            and (
                not _conv.is_channels_last(run.env[r])
                or (self.channels_last and algo.startswith("winograd"))
            )
        ):  # (over a channels-last residual only a conv whose readers take channels-last)
            # The output over the residual's buffer (one activation less alive: resnet20@32's
            # arena 7.90 -> 6.52 MiB); the conv adds each chunk's residual as it writes it.
            y = run.steal(r, self.outputs[0])
            epi.residual, epi.aliased = (lambda: y), True
        elif self.batch_last and _conv.writes_batch_last(x):
            yl = run.alloc(self.outputs[0], (*out_shape[1:], out_shape[0]), x.dtype)
            y = run.env[self.outputs[0]] = yl.transpose(yl.ndim - 1, *range(yl.ndim - 1))
        elif (
            self.channels_last
            and algo.startswith("winograd")  # (only Winograd writes it)
            and out_shape[0] >= _conv.CHANNELS_LAST_MIN_IMAGES
        ):
            yl = run.alloc(self.outputs[0], (out_shape[0], *out_shape[2:], out_shape[1]), x.dtype)
            y = run.env[self.outputs[0]] = yl.transpose(0, 3, 1, 2)
            plain, base = True, yl
        else:
            y, plain = run.alloc(self.outputs[0], out_shape, x.dtype), True
        if (
            algo.startswith("winograd")
            and run.training
            and not TRAIN_KEEP_WEIGHTS
            and not self.blocks
        ):
            # U, transformed on every run (U^T took 1.13-1.2x its time, 32-256 channels, one
            # thread; see conv._winograd)
            wp = weight_transform(w, 4 if algo[-1] == "4" else 2)
            self._convolve(run, algo, x, wp, y, epi, flops, u_transposed=False)
            return
        if (
            algo.startswith("winograd")
            and not self.blocks
            and self._winograd_per_run(x.shape, out_shape, algo)
        ):
            # U in this step's workspace, not kept (see winograd.PER_RUN_MIN_COLUMNS); U^T only
            # when small (see winograd.PER_RUN_TRANSPOSED_MAX_BYTES)
            m = 4 if algo[-1] == "4" else 2
            ut = per_run_transposed(self.spec.c_in, self.spec.c_out, m)
            wp = transformed(w, m, run.parallel, run.parallel.scratch[0], ut)
            self._convolve(run, algo, x, wp, y, epi, flops, u_transposed=ut)
            return
        if (
            algo.startswith("wino3d")
            and (TRAIN_KEEP_WEIGHTS or not run.training)
            and x.dtype == np.float32
            and self._winograd_per_run(x.shape, out_shape, algo)
        ):  # U' in this step's workspace, not kept (see WINO3D_PER_RUN_MIN_MACS)
            wp = _wino3d_transformed(w, 4 if algo[-1] == "4" else 2, run)
            self._convolve(run, algo, x, wp, y, epi, flops)
            return
        # A parameter bias rides in the im2col GEMM (prepared once with the weight).
        column = self.bias_column and isinstance(self.epilogue_bias, str)
        wp = self.weight(w, x.dtype, run.training, algo, b if column else None)
        if (
            _base.BIND_CALLS
            and run.pool.replaying
            and algo in _conv.BIND_ALGORITHMS
            and self.const_weight
            and (TRAIN_KEEP_WEIGHTS or not run.training)
            and (b is None or b.dtype == x.dtype)
            and plain
            and self.outputs[0] not in run.outputs  # (a graph output: a fresh array every run)
            and may_record(self, (x.shape, run.training))
            and (
                run.parallel.workers == 1  # (`_convolve` then calls it inline, whatever the batch)
                or (x.shape[0] < run.parallel.workers and flops < ROW_SPLIT_MIN_FLOPS)
            )
        ):  # one call on this thread: recorded, replayed by the next runs (see `_replay`)
            sc = TakeLog(run.parallel.scratch[0])
            rec: list = []
            conv_chunked(algo, self.spec, x, wp, y, epi, sc, workspace=self.workspace, rec=rec)  # type: ignore[arg-type]
            steal = (
                self.overwrite
                and r is not None
                and run.env[r] is not None
                and run.env[r].shape == out_shape
                and run.env[r].dtype == x.dtype
                and _conv.overwrites_residual(algo, self.spec, out_shape)
            )
            self._bound = None
            places = sc.places()
            if None in rec:  # (a batch-last or slab path: every run with this shape)
                no_record(self, (x.shape, run.training), 1 << 30)
            elif _conv.AGAIN not in rec and places is not None:
                res = None if r is None else run.env[r]
                self._replayed = False
                shape, y0, yt = out_shape, y, None
                if base is not None:  # channels-last: the replay allocates base, sets y
                    shape, y0, yt = base.shape, base, y
                self._bound = (
                    *(x, w, b, res, run.training, run.parallel.workers, shape, y0),
                    *(places, tuple(rec), algo, steal, yt),
                )
            return
        self._convolve(run, algo, x, wp, y, epi, flops)

    def _winograd_per_run(self, shape: tuple, out_shape: tuple, algo: str) -> bool:
        hit = self._per_run.get(shape)
        if hit is None:
            m = 4 if algo[-1] == "4" else 2
            if algo.startswith("wino3d"):  # GEMM columns: images x output frames x tiles
                outs = out_shape[2:]
                if self.pool:  # (the output holds the pooled conv)
                    outs = tuple(o * k for o, k in zip(outs, self.pool, strict=True))
                columns = shape[0] * outs[0] * math.ceil(outs[1] / m) * math.ceil(outs[2] / m)
                depth = self.spec.kernel[0] * self.spec.c_in
                hit = (m + 2) ** 2 * self.spec.c_out * depth * columns >= WINO3D_PER_RUN_MIN_MACS
            else:
                hit = per_run(shape[0], out_shape[2:], m)
            self._per_run[shape] = hit
        return hit

    def _epilogue(self, run: Run, b: np.ndarray | None, dtype: np.dtype) -> Epilogue:
        """The step's Epilogue; without a residual (which reads this run's values) and with the
        bias already in `dtype` (used as it is, not a converted copy that could go stale), the
        one of the last run: a batch-1 run is mostly such per-step Python."""
        if self.residual is None and (b is None or b.dtype == dtype):
            hit = self._epi
            if hit[0] is b and hit[1] is not None and hit[1].activation == self.activation:
                # (the fused pool is set at compile time, like the activation)
                return hit[1]
            epi = Epilogue(bias=b, activation=self.activation, pool=self.pool)
            self._epi = (b, epi)
            return epi
        return Epilogue(
            bias=None if b is None else b.astype(dtype, copy=False),
            residual=None if self.residual is None else (lambda: run.env[self.residual]),
            activation=self.activation,
            pool=self.pool,
        )

    def _convolve(
        self,
        run: Run,
        algo: str,
        x: np.ndarray,
        wp: np.ndarray,
        y: np.ndarray,
        epi: Epilogue,
        flops: float,
        u_transposed: bool = True,
    ) -> None:
        """y = conv(x) by `algo` with the prepared weight, on the plan's threads: batch slices,
        or each GEMM's output rows when there are fewer images than threads (`u_transposed`:
        see conv._winograd)."""
        spec = self.spec
        ut, ws = u_transposed, self.workspace
        if x.shape[0] >= run.parallel.workers:  # split the batch
            run.parallel(
                x.shape[0],
                lambda lo, hi, sc: conv_chunked(
                    algo, spec, x, wp, y, epi, sc, lo, hi, None, ut, ws
                ),
                flops,
            )
        elif flops < ROW_SPLIT_MIN_FLOPS:  # too little work to hand any to another thread
            sc = run.parallel.scratch[0]
            conv_chunked(algo, spec, x, wp, y, epi, sc, u_transposed=ut, workspace=ws)
        else:  # too few images: split each GEMM's output rows instead
            sc = run.parallel.scratch[0]
            conv_chunked(
                algo, spec, x, wp, y, epi, sc, split=run.parallel, u_transposed=ut, workspace=ws
            )


TRANSPOSED_GEMM_MIN_ROWS = 2
TRANSPOSED_GEMM_MIN_COLUMNS = 16
"""With a transposed weight (transB), at least this many rows and output columns, GemmStep
computes Y' = W @ A' (the weight as stored, row-major) and adds the bias while copying Y' out
transposed; otherwise (a GEMV, a classifier's few columns) it multiplies by W's transposed view.
Two and three rows were on the view (min 4): there OpenBLAS took 2.5-3x as long as Y' = W @ A'
(one thread, in-process interleaved medians, GEMM + bias: 2x4096x128 338 vs 111 us, 3x4096x128
381 vs 164, 3x1024x512 382 vs 157, 2x2048x1000 1374 vs 526 us), equal on small ones (2x400x120
1.00x, 2x120x84 1.05x, 2x84x10 1.02x: 3 us calls).
OpenBLAS multiplies by a transposed B slowly (one thread, in-process interleaved medians, GEMM
+ bias, against A @ W' + bias): 32x400x120 (LeNet's fc1) took 0.74x the time, 32x120x84 0.87x,
16x256x128 0.62x, 4x4096x128 0.36x, 32x4096x128 0.70x; 2x400x120 1.03x, 32x84x10 1.09x (in
lenet5@32, per-step medians: fc1 0.061 vs 0.078 ms, fc2 0.021 both, fc3 0.009 vs 0.006). A
contiguous copy of W' (a prepared weight) was faster still (0.69x, 0.60x, 0.41x, 0.28x, 0.66x)
but holds a second copy of every FC weight (+236 KiB for lenet5, +2 MiB for vgg_bn); Y' takes
m x n floats of the thread's scratch."""

GEMM_SCRATCH_SLOT = 0

GEMV_SPLIT_MIN_BYTES = 1 << 20
"""GemmStep multiplies by a weight of this many bytes or more split by output columns over the
plan's threads whatever its flops (a batch-1 GEMV): reading the weight, evicted from the caches
by the convs between runs, is its time, and two cores read faster. vgg_bn@1 (fc1, 4096 x 128
float32, 2 MiB, ~0.12 ms of ~3.2): bias-cancelled in-process A/B 0.962-0.972 on a quiet machine,
0.971-0.973 with one core busy (a spinning process), but 1.03-1.05 at load 4-6 (both cores
taken by other processes)."""


@dataclass
class GemmStep(Step):
    """Gemm with alpha = beta = 1, no transA, a bias broadcast to the output (or none): Y = A @ B'
    (+ bias) and a fused activation, into a pooled buffer. A transposed B (transB, the weight
    as (N, K)) with `TRANSPOSED_GEMM_MIN_ROWS` rows or more and `TRANSPOSED_GEMM_MIN_COLUMNS`
    columns or more: Y' = B @ A' into the scratch, then Y = Y' transposed + bias in one pass."""

    trans_b: bool = False
    activation: tuple = ()
    softmax: bool = False  # a Softmax along the last axis fused (in place on Y; see compile)
    flatten: bool = False  # A is a Flatten's input (axis 1), viewed here as (N, -1)

    _bound: tuple | None = None  # the last replay's calls bound to their arrays (see ConvStep)
    _replayed: bool = False
    _no_record: tuple = ()

    def __call__(self, run: Run) -> None:
        a = run.get(self.inputs[0])
        bound = self._bound
        if (
            bound is not None
            and a is bound[0]
            and run.get(self.inputs[1]) is bound[1]
            and (len(self.inputs) < 3 or run.get(self.inputs[2]) is bound[2])
        ):
            y = run.alloc(self.outputs[0], bound[3], a.dtype)
            own = bound[7]  # (a graph output: the calls write the step's own buffer)
            if (y is bound[4] or own is not None) and retaken(run.parallel.scratch[0], bound[5]):
                for call in bound[6]:  # a loop over the step's NumPy calls
                    call()
                if own is not None:
                    np.copyto(y, own)
                self._replayed = True
                taped(run, self, bound[6], None if own is None else {self.outputs[0]: own})
                return
            unbind(self, (a.shape, False))
            self._compute(run, a, y)
            return
        self._compute(run, a)

    def _compute(self, run: Run, a0: np.ndarray, given: np.ndarray | None = None) -> None:
        """The step (`given`: its output already allocated); without a split over the threads,
        its NumPy calls are recorded for the next runs to replay (see ConvStep._replay)."""
        a = a0
        if self.flatten:
            a = a.reshape(a.shape[0], math.prod(a.shape[1:]))
        w0 = run.get(self.inputs[1])
        w = w0.astype(a.dtype, copy=False)
        c = run.get(self.inputs[2]) if len(self.inputs) > 2 else None
        bias = None if c is None else c.astype(a.dtype, copy=False)
        m = a.shape[0]
        n = w.shape[0] if self.trans_b else w.shape[1]
        y = run.alloc(self.outputs[0], (m, n), a.dtype) if given is None else given
        flops = 2.0 * m * n * a.shape[1]
        # (calls bound to the parameters themselves, not to converted copies)
        rec: list | None = None
        sc = run.parallel.scratch[0]
        result, own = y, None
        output = self.outputs[0] in run.outputs  # (a fresh array every run)
        if (
            _base.BIND_CALLS
            and run.pool.replaying
            and w is w0
            and bias is c
            and (a is a0 or np.may_share_memory(a, a0))  # (a flatten's copy: this run's values)
            and (not output or y.nbytes <= GEMM_OWN_OUTPUT_MAX_BYTES)
            and may_record(self, (a0.shape, False))
        ):
            rec, sc = [], TakeLog(sc)
            if output:  # the calls write a buffer of the step's own (see GEMM_OWN_OUTPUT_...)
                y = own = np.empty(y.shape, y.dtype)
        if self.trans_b and m >= TRANSPOSED_GEMM_MIN_ROWS and n >= TRANSPOSED_GEMM_MIN_COLUMNS:
            # a column slice of the bias where it has one value per column, else all of it
            per_column = bias is not None and bias.ndim > 0 and bias.shape[-1] != 1

            def part(lo: int, hi: int, scratch) -> None:
                yt = scratch.take(GEMM_SCRATCH_SLOT, (hi - lo) * m, a.dtype).reshape(hi - lo, m)
                _conv._call(rec, np.matmul, w[lo:hi], a.T, out=yt)
                if bias is None:
                    _conv._call(rec, np.copyto, y[:, lo:hi], yt.T)
                else:
                    sl = bias[..., lo:hi] if per_column else bias
                    _conv._call(rec, np.add, yt.T, sl, out=y[:, lo:hi])

            if flops < SPLIT_MIN_FLOPS:
                part(0, n, sc)
            else:  # split by output columns (Y's rows are too few to split)
                rec = None
                run.parallel(n, part, flops)
        else:
            bt = w.T if self.trans_b else w
            # a large weight at a small batch: reading it is the time (see GEMV_SPLIT_MIN_BYTES)
            work = SPLIT_MIN_FLOPS if w.nbytes >= GEMV_SPLIT_MIN_BYTES and n >= 2 else flops
            if work < SPLIT_MIN_FLOPS:  # a classifier at batch 1: one call, no slicing
                _conv._call(rec, np.matmul, a, bt, out=y)
            else:  # split by output columns (a batch of 32 is too few rows to split)
                # (recorded as one call: the split's slices take no workspace, and compute
                # the same bits inline or on the threads)
                _conv._call(
                    rec,
                    run.parallel,
                    n,
                    lambda lo, hi, scratch: np.matmul(a, bt[:, lo:hi], out=y[:, lo:hi]),
                    max(flops, work),
                )
            if bias is not None:
                _conv._call(rec, np.add, y, bias, out=y)
        if self.activation:
            _conv.activate(y, self.activation, rec)
        if self.softmax:
            _conv._call(rec, softmax, y, y, 1)
        if own is not None:
            np.copyto(result, own)
        if rec is not None:
            places = sc.places()  # type: ignore[union-attr]
            if places is not None:
                bound = (a0, w0, c, (m, n), y, places, tuple(rec), own)
                self._bound, self._replayed = bound, False


GEMM_OWN_OUTPUT_MAX_BYTES = OWN_OUTPUT_MAX_BYTES
"""A Gemm writing a graph output (a fresh array every run, which bound calls cannot name) of at
most this many bytes (a classifier's logits) records its calls into an output buffer of its own
and copies that into the run's output: the replay then pays one small copy instead of the
step's Python (lenet5@1's fc3 with its Softmax)."""


MERGED_SCRATCH_SLOT = 7
"""The scratch slot of `MergedPointwiseStep`'s stacked GEMM output (the pointwise conv itself
takes slot 0 for a strided input)."""


@dataclass
class MergedPointwiseStep(ConvStep):
    """Several 1x1 convs of one input (same strides, no padding, ungrouped, parameter weights,
    no residual) as one pointwise GEMM: their weights stacked along the output channels, their
    biases likewise (zeros for a conv without one). Over chunks of images, Z (images, sum M_i,
    pixels) = W @ X goes into the thread's scratch with the bias (and the activation, when all
    convs share it) applied while it is in cache, then each conv's channel rows are copied into
    its own output buffer (contiguous, pooled with its own lifetime, or its slice of a Concat's
    buffer at batch 1), where a conv's own activation is applied otherwise. `outputs` holds the
    convs' slots in stacking order.

    Why: an Inception block's branches open with thin 1x1 convs of the same input (8-48
    output channels); one GEMM with M = sum M_i runs at a higher BLAS rate than several thin
    ones, reads X once, and pays the step's Python overhead once. Why the copy: as channel
    slices of one buffer, the outputs all lived as long as the longest-lived one (the branch
    read by the block's Concat): inception_bn@32's arena grew from 13 to 16 MiB."""

    weights: list = field(default_factory=list)  # parameter names, one per conv
    biases: list = field(default_factory=list)  # parameter names, or None for no bias
    activations: list = field(default_factory=list)  # each conv's fused activation
    channels: list = field(default_factory=list)  # each conv's output channels
    _stack: tuple = ((), (), None, None)  # (key, the arrays, stacked weight, stacked bias)

    def stacked(self, run: Run, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray | None]:
        """(prepared stacked weight, stacked bias or None) in `dtype`, built once while the
        parameter arrays stay the same objects (the cache holds them, so their ids stay
        theirs), in either mode (see TRAIN_KEEP_WEIGHTS)."""
        ws = [run.get(w) for w in self.weights]
        bs = [None if b is None else run.get(b) for b in self.biases]
        key = (*(id(a) for a in ws), *(id(b) for b in bs), np.dtype(dtype).str)
        if (run.training and not TRAIN_KEEP_WEIGHTS) or self._stack[0] != key:
            w = np.concatenate([a.astype(np.float64) for a in ws], axis=0)
            wp = prepare_weight("pointwise", w, 1, dtype)
            b = None
            if any(v is not None for v in bs):
                b = np.concatenate(
                    [
                        np.zeros(c) if v is None else v.astype(np.float64).reshape(-1)
                        for v, c in zip(bs, self.channels, strict=True)
                    ]
                ).astype(dtype)
            self._stack = (key, (ws, bs), wp, b)
        return self._stack[2], self._stack[3]

    def _same_params(self, run: Run) -> bool:
        """Whether `stacked` would return the arrays it holds (the same parameter objects, a
        mode that keeps them): its check without building the key (4.5 us a call for three
        convs; a bound batch-1 step pays it every run)."""
        if run.training and not TRAIN_KEEP_WEIGHTS:
            return False
        ws, bs = self._stack[1]
        get = run.get
        for name, a in zip(self.weights, ws, strict=True):  # a loop over the merged convs
            if get(name) is not a:
                return False
        for name, b in zip(self.biases, bs, strict=True):  # (None: no bias, then and now)
            if name is not None and get(name) is not b:
                return False
        return True

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        bound = self._bound
        if (
            bound is not None
            and x is bound[0]
            and run.training is bound[1]
            and run.parallel.workers == bound[2]
        ):
            # (`stacked` would return bound[3]: its arrays are the bound ones, and the same
            # parameter objects as when it stacked them)
            if self._stack[2] is bound[3] and self._same_params(run):
                outs = [run.alloc(slot, shape, x.dtype) for slot, shape in bound[4]]
                if all(y is y0 for y, y0 in zip(outs, bound[5], strict=True)) and retaken(
                    run.parallel.scratch[0], bound[6]
                ):
                    for call in bound[7]:  # a loop over the step's NumPy calls
                        call()
                    self._replayed = True
                    taped(run, self, bound[7])
                    return
                unbind(self, (x.shape, run.training))
                self._compute(run, x, outs)
                return
        self._compute(run, x)

    def _compute(self, run: Run, x: np.ndarray, given: list | None = None) -> None:  # type: ignore[override]
        """The step (`given`: its outputs already allocated); one image on this thread records
        its NumPy calls for the next runs to replay (see ConvStep._replay)."""
        out_shape, flops, _ = self._cached_geometry(x.shape, run.training)
        self.ran = "pointwise"
        wp, b = self.stacked(run, x.dtype)
        acts = self.activations
        same = all(a == acts[0] for a in acts)
        epi = Epilogue(bias=b, activation=acts[0] if same else ())
        shapes = [
            (slot, (out_shape[0], c, *out_shape[2:]))
            for slot, c in zip(self.outputs, self.channels, strict=True)
        ]
        outs = given or [run.alloc(slot, shape, x.dtype) for slot, shape in shapes]
        spec = self.spec
        per_image = math.prod(out_shape[1:]) * x.itemsize
        rec: list | None = None

        def part(lo: int, hi: int, scratch) -> None:
            step = max(1, WORKSPACE_BYTES // max(per_image, 1))
            for n0 in range(lo, hi, step):  # a loop over chunks of images
                n1 = min(hi, n0 + step)
                z = scratch.take(MERGED_SCRATCH_SLOT, (n1 - n0) * per_image // x.itemsize, x.dtype)
                z = z.reshape(n1 - n0, *out_shape[1:])
                conv_chunked("pointwise", spec, x[n0:n1], wp, z, epi, scratch, rec=rec)
                c0 = 0
                for y, c, act in zip(outs, self.channels, acts, strict=True):  # over the convs
                    _conv._call(rec, np.copyto, y[n0:n1], z[:, c0 : c0 + c])
                    if not same:
                        _conv.activate(y[n0:n1], act, rec)
                    c0 += c

        if x.shape[0] >= run.parallel.workers > 1:  # split the batch
            run.parallel(x.shape[0], part, flops)
        elif (
            _base.BIND_CALLS
            and run.pool.replaying
            and (TRAIN_KEEP_WEIGHTS or not run.training)
            and not any(slot in run.outputs for slot in self.outputs)  # (fresh every run)
            and may_record(self, (x.shape, run.training))
        ):  # recorded, replayed by the next runs
            sc = TakeLog(run.parallel.scratch[0])
            rec = []
            part(0, x.shape[0], sc)
            self._bound = None
            places = sc.places()
            if None not in rec and places is not None:
                self._bound = (
                    *(x, run.training, run.parallel.workers, wp, shapes, outs),
                    *(places, tuple(rec)),
                )
                self._replayed = False
        else:
            part(0, x.shape[0], run.parallel.scratch[0])
