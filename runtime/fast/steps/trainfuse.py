"""Train-mode fusions: a merged 1x1 conv with the BatchNorms of its outputs
(`ConvBatchNormStep`); a BatchNorm's affine (and ReLU) after the MaxPool reading it
(`AffineMaxPoolStep`).

Inference folds each BatchNorm into the conv before it; train mode cannot (the statistics are
the batch's), so an Inception block's sibling 1x1 convs (one `MergedPointwiseStep`) are each
followed by a BatchNorm step: at batch 1 each of those is a few dozen NumPy calls on a few
thousand values, where a call's overhead is worth more than its arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from graphnet.runtime.fast.conv import AGAIN, Epilogue, conv_chunked, relu_
from graphnet.runtime.fast.steps import base as _base
from graphnet.runtime.fast.steps import linear as _linear
from graphnet.runtime.fast.steps.base import Run, Step, TakeLog, may_record, retaken
from graphnet.runtime.fast.steps.elementwise import (
    UNBUFFERED_MIN_ROW,
    BatchNormGroupStep,
    BatchNormStep,
    bound_calls,
    pass_calls,
    row_dots,
    running_stacked,
    running_tail,
)
from graphnet.runtime.fast.steps.linear import MERGED_SCRATCH_SLOT, MergedPointwiseStep
from graphnet.runtime.fast.steps.pool import MaxPoolStep

__all__ = ["AffineMaxPoolStep", "ConvBatchNormStep"]


@dataclass
class ConvBatchNormStep(Step):
    """Train mode: a `MergedPointwiseStep` (stride 1, no padding, no fused activation) and the
    `BatchNormGroupStep` of its outputs as one step at the conv's place
    (`CompiledPlan._group_batchnorms`). At batch 1 the stacked GEMM result Z (all the convs'
    channels, in the thread's scratch, as the merged conv computes it) is normalized there as
    one (channels, pixels) matrix: the shift, D = Z - m, the BLAS sums of D and D * D, the
    per-channel arithmetic, the affine and the ReLU in place, 7 passes over Z instead of 7 over
    each member's buffer; then each BN's channels are copied out into its output (a pooled
    buffer, or its slice of a Concat's), the copy the merged conv made of the raw rows. The
    convs' outputs are never made. Any other batch runs the conv, then the group, as their
    own steps would (the convs' output slots are this step's outputs too: nothing reads them,
    so they die here, see `CompiledPlan._liveness`). `outputs`: the BNs', then the convs'."""

    conv: Any = None  # the MergedPointwiseStep
    group: Any = None  # the BatchNormGroupStep of its outputs

    _bound: tuple | None = None  # batch 1: the calls bound to their arrays (`_replay`)
    _no_record: tuple = ()  # (input shape, mode) whose calls are not recorded (`may_record`)
    _replayed: bool = False  # the bound calls were replayed at least once

    def __call__(self, run: Run) -> None:
        conv: MergedPointwiseStep = self.conv
        group: BatchNormGroupStep = self.group
        x = run.get(conv.inputs[0])
        bound = self._bound
        if bound is not None and x is bound[0] and run.training and self._replay(run, bound):
            return
        if not run.training or x.shape[0] != 1 or not x.size:
            conv(run)
            group(run)
            return
        out_shape = conv._cached_geometry(x.shape, True)[0]
        conv.ran = "pointwise"
        dt = x.dtype
        wp, b = conv.stacked(run, dt)
        scratch = run.parallel.scratch[0]
        record = self._may_bind(run, x)
        sc = TakeLog(scratch) if record else scratch
        rec: list | None = [] if record else None
        total, length = out_shape[1], math.prod(out_shape[2:])
        z = sc.take(MERGED_SCRATCH_SLOT, total * length, dt).reshape(out_shape)
        conv_chunked("pointwise", conv.spec, x, wp, z, Epilogue(bias=b), sc, rec=rec)  # type: ignore[arg-type]
        z2 = z.reshape(total, length)
        places = sc.places() if isinstance(sc, TakeLog) else None
        if rec is not None and None not in rec and AGAIN not in rec and places is not None:
            self._bind(run, x, wp, z, length, rec, places)
        elif UNBUFFERED_MIN_ROW <= length < np.getbufsize():  # (never above a lean run's)
            old = np.setbufsize(length - length % 16)  # (see BatchNormStep._single)
            try:
                self._normalize(run, z2, length)
            finally:
                np.setbufsize(old)
        else:
            self._normalize(run, z2, length)
        self._copy_out(run, z)

    def _copy_out(self, run: Run, z: np.ndarray) -> None:
        """Each BN's channels of the normalized Z into its output."""
        c0 = 0
        for bn, c in zip(self.group.members, self.conv.channels, strict=True):  # (2-4 members)
            y = run.alloc(bn.outputs[0], (1, c, *z.shape[2:]), z.dtype)
            np.copyto(y, z[:, c0 : c0 + c])
            c0 += c

    def _may_bind(self, run: Run, x: np.ndarray) -> bool:
        """Whether this batch-1 run records its calls bound to their arrays (`_bind`): a
        replayed run, the members' running statistics parameters updated here (no statistics
        outputs), a float dtype, the prepared weights kept between runs."""
        return (
            _base.BIND_CALLS
            and run.pool.replaying
            and _linear.TRAIN_KEEP_WEIGHTS
            and x.dtype in (np.float32, np.float64)
            and all(
                b.state == {1: b.inputs[3], 2: b.inputs[4]} and max(b.outputs[1:], default=-1) < 0
                for b in self.group.members
            )
            and may_record(self, (x.shape, True))
        )

    def _bind(
        self,
        run: Run,
        x: np.ndarray,
        wp: np.ndarray,
        z: np.ndarray,
        length: int,
        rec: list,
        places: tuple,
    ) -> None:
        """`_normalize` as NumPy calls bound to Z (the scratch region the conv's recorded
        calls wrote it in), the members' parameters and workspaces of this step's own (the same
        operations in the same dtypes: `BatchNormGroupStep._bind_group`), run now; the conv's
        calls `rec` and these are replayed by the next runs with the same arrays (`_replay`).
        The copies into the outputs stay unbound (after the running statistics, as here)."""
        group: BatchNormGroupStep = self.group
        dt = z.dtype
        z2 = z.reshape(-1, length)
        w, ones = group._vectors(length, length, dt)
        channels = list(self.conv.channels)
        vec, ws, params, spans = group.vector_calls(run, channels, dt, length)
        m, sums, q, st_dt, momenta = ws
        calls = pass_calls(z2, z2, w, ones, m, sums)
        calls += [
            *vec,
            partial(np.multiply, z2, st_dt[0, :, None], z2),
            partial(np.add, z2, st_dt[1, :, None], z2),
        ]
        self._bound = None
        bound_calls(calls, length)
        relus = [b.relu for b, _, _ in spans]
        if all(relus):
            relu_(z2, rec=calls)  # (run, then recorded)
        else:
            for b, c0, c1 in spans:
                if b.relu:
                    relu_(z2[c0:c1], rec=calls)
        tail = running_tail(q, momenta, spans)
        running_stacked(run, tail)
        bound = (x, wp, params, places, (*rec, *calls), tail, length, spans, z)
        self._bound, self._replayed = bound, False

    def _replay(self, run: Run, bound: tuple) -> bool:
        """The calls `_bind` bound, again: the same input, prepared weights, members' scale and
        bias, the running statistics they stored last run, and scratch region. False (nothing
        done) when one differs; else the step is done."""
        _, wp, params, places, calls, tail, length, spans, z = bound
        conv: MergedPointwiseStep = self.conv
        if conv.stacked(run, z.dtype)[0] is not wp:
            return False
        get = run.get
        for (b, _, _), (scale, bias) in zip(spans, params, strict=True):
            stats = b._stats
            if (
                get(b.inputs[1]) is not scale
                or get(b.inputs[2]) is not bias
                or not stats
                or get(b.inputs[3]) is not stats[0]
                or get(b.inputs[4]) is not stats[1]
            ):
                return False
        if not retaken(run.parallel.scratch[0], places):
            return False
        conv.ran = "pointwise"
        bound_calls(calls, length)
        running_stacked(run, tail)
        self._copy_out(run, z)
        self._replayed = True
        return True

    def _normalize(self, run: Run, z2: np.ndarray, length: int) -> None:
        """The group's train-mode BN of the stacked (channels, pixels) matrix z2, in place
        (with each member's ReLU), and the members' running statistics."""
        group: BatchNormGroupStep = self.group
        members = group.members
        dt = z2.dtype
        total = z2.shape[0]
        w, ones = group._vectors(length, length, dt)
        m = np.matmul(z2, w)  # the shift
        np.subtract(z2, m[:, None], out=z2)
        sums = np.empty((2, total), dt)  # D . 1, D . D
        np.matmul(z2, ones, out=sums[0])
        row_dots(z2, sums[1])
        s, t, new = group._statistics(run, m, sums, length)
        np.multiply(z2, s.astype(dt)[:, None], out=z2)
        z2 += t.astype(dt)[:, None]
        relus = [b.relu for b in members]
        c0 = 0
        for b, c in zip(members, self.conv.channels, strict=True):
            if b.relu and not all(relus):
                relu_(z2[c0 : c0 + c])
            b._running(run, new[:, c0 : c0 + c], ())  # (no statistics outputs: see grouping)
            c0 += c
        if all(relus):
            relu_(z2)


@dataclass
class AffineMaxPoolStep(MaxPoolStep):
    """Train mode: a MaxPool whose input only a BatchNorm step `bn` (no residual, no statistics
    outputs) writes, the pool its only reader (`CompiledPlan._defer_bn_affines`). When every
    scale s of the run's batch statistics is > 0, the BN leaves D = x - m in its output and
    hands (s, t, relu) over (`BatchNormStep.deferred`): the pool takes the max of D, then
    y * s + t and the ReLU on the pooled output, a quarter of the BN's passes under a 2x2
    pool (the same bits: those operations are non-decreasing in D for s > 0, see
    `BatchNormStep._deferring`). Else the BN applied its affine itself: a plain pool."""

    bn: Any = None  # the BatchNormStep

    def __call__(self, run: Run) -> None:
        super().__call__(run)
        bn: BatchNormStep = self.bn
        got = bn.deferred
        if got is None:
            return
        bn.deferred = None
        s, t, relu = got
        y = run.get(self.outputs[0])
        if y.flags.c_contiguous:  # (N, C, pixels): one inner loop per image and channel
            y = y.reshape(y.shape[0], y.shape[1], -1)
            s, t = s[:, None], t[:, None]
        else:  # (a Concat's channel slice)
            axes = (-1,) + (1,) * (y.ndim - 2)
            s, t = s.reshape(axes), t.reshape(axes)
        np.multiply(y, s, out=y)
        y += t
        if relu:
            relu_(y)
