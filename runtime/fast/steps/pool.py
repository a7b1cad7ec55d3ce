"""MaxPool: separable tap slices, the pairwise "same" pool and the tiling pool on flat views."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from graphnet.runtime.fast.conv import _call, _fill
from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.fast.steps import base as _base
from graphnet.runtime.fast.steps.base import Run, Step, TakeLog, may_record, retaken, taped
from graphnet.runtime.fast.threads import ELEMENT_FLOPS, SPLIT_MIN_FLOPS

__all__ = [
    "HALVING",
    "POOL_CHUNK_BYTES",
    "PAIRS_MAX_ELEMENTS",
    "PAIRWISE_INLINE_CHUNK_BYTES",
    "TILED_MIN_ELEMENTS",
    "TILED_SLABS_MIN_ELEMENTS",
    "TILED_SPLIT_MIN_ELEMENTS",
    "MaxPoolStep",
    "halving_calls",
]


HALVING = sys.byteorder == "little"
"""A tiling MaxPool of float32 with kh x 2 windows (kh >= 2) over several images pools its
planes by `halving_calls` (its int64 -> int32 cast keeps the first float of each pair on a
little-endian machine only); False: the tile passes (the tests' other path)."""

POOL_CHUNK_BYTES = 1 << 20
"""A tiling or pairwise MaxPool split over threads works on chunks of at least this many input
bytes, a quarter of it inline (a tiling pool; a pairwise one: PAIRWISE_INLINE_CHUNK_BYTES),
more when its thread's scratch already holds more (a conv's workspaces): on two threads every
NumPy call is a GIL hand-over (256 KiB chunks were slower than the strided passes there, 1 MiB
chunks 0.8-0.9x); inline, small chunks cost little and hold less scratch."""

PAIRWISE_INLINE_CHUNK_BYTES = POOL_CHUNK_BYTES
"""An inline pairwise "same" pool (`_pairwise_part`) works on chunks of this many input bytes,
not a quarter: its two passes per axis, a fill and a copy cost fixed Python per chunk. Measured
(one thread, MaxPool sessions in-process interleaved, 300 rounds, medians of ratios, against
256 KiB, two runs): 0.87-0.915x the time on Inception's (32, 32, 16, 16), 0.89-0.91x on (32,
128, 8, 8), for 1 MiB of workspace instead of 256 KiB (inception_bn@32's arena unchanged: its
peak is elsewhere); an input under 256 KiB (batch 1-4) runs as one chunk either way (1.02x
there: the harness's bias between two identical sessions)."""

TILED_MIN_ELEMENTS = 1 << 13
"""Smaller tiling MaxPools keep the strided passes (fewer Python operations: LeNet's at batch 1
took 1.08x as long the tiled way)."""

TILED_SLABS_MIN_ELEMENTS = 1 << 17
"""A tiling MaxPool that pools an earlier axis too (video's 2x2x2) takes the flat passes from
this many input elements: single-thread, in-process A/B (30 rounds, min of 5 runs) against
the strided passes: 0.75x the time at batch 32 on (32, 8, 16, 16) and 0.80x on (64, 4, 8, 8),
but 0.99-1.09x at batch 1 (65k and 16k elements: its slab pass is one more NumPy call)."""

PAIRS_MAX_ELEMENTS = 1 << 14
"""A tiling MaxPool of at most this many input elements (every earlier axis the identity) takes
`_pairs_part`: two NumPy calls for a 2x2 pool, where the flat passes pay ~9 us of fixed costs
(single thread, min of 300 calls, 2x2 / 2 at 8x8-32x32: 0.3-0.5x the flat passes' time up to
~3k elements, 0.55-0.8x up to 13k, 0.85-1.25x around 25-50k, 1.1-1.45x beyond)."""

TILED_SPLIT_MIN_ELEMENTS = 1 << 19
"""A tiling or pairwise MaxPool splits its batch over the threads from this many input
elements: its few NumPy calls on small slices contend for the GIL (LeNet's 150k-element pools
at batch 32 took 1.9x longer on two threads than on one; 1M elements took 0.55x)."""


def halving_views(m: np.ndarray, m2: np.ndarray, size: int, w: int, kh: int) -> tuple:
    """The views of `halving_calls`' passes on its scratch m and m2 (`size - (kh - 1) * w` and
    `size // kh` elements at least) for `size` input values in planes of width w: (m2's rows
    and every kh-th row of m as void items of w floats, the 1-shifted pair of m2 and m's part
    they max into, the int64 view of m whose low halves are the pooled values)."""
    half = size // kh
    row = np.dtype((np.void, w * m.itemsize))
    return (
        m2[:half].view(row),
        m[: size - (kh - 1) * w].view(row)[::kh],  # (rows 0, kh, ..., the last window's first)
        m2[: half - 1],
        m2[1:half],
        m[: half - 1],
        m[:half].view(np.int64),
    )


def halving_calls(pre: np.ndarray, m: np.ndarray, m2: np.ndarray, kh: int) -> tuple:
    """A kh x 2 tiling max pool (kh >= 2) of `pre`'s contiguous float32 (h, w) planes (h a
    multiple of kh, w even) as NumPy calls bound to their views, through m (`pre.size - (kh -
    1) * w` elements, as the tile passes' m) and m2 (`pre.size // kh`): m = the max of the
    kh row-shifted flat `pre` (its window rows' maxima at every kh-th row), those rows copied
    into m2 as blocks of w * 4 bytes (one void item a row), m = the max of the 1-shifted flat
    m2 (the window's maxima at its even positions); and the int64 view of m whose low halves
    are the pooled values: the last call, np.copyto(the output's int32 view, it,
    casting="unsafe") (little-endian), is a contiguous loop where the strided copy of the tile
    corners (16-value inner loops at stride 2) took as long as a whole pass over `pre`. The
    same values as the tile passes (the same np.maximum operands in the same order; bits
    copied)."""
    w, size = pre.shape[-1], pre.size
    src = pre.reshape(-1)
    rows = size - (kh - 1) * w
    calls = [partial(np.maximum, src[:rows], src[w : w + rows], out=m[:rows])]
    calls += [
        partial(np.maximum, m[:rows], src[t * w : t * w + rows], out=m[:rows]) for t in range(2, kh)
    ]
    rows2, corners, a, b, out, pairs = halving_views(m, m2, size, w, kh)
    calls.append(partial(np.copyto, rows2, corners))
    calls.append(partial(np.maximum, a, b, out=out))
    return calls, pairs


@dataclass
class MaxPoolStep(Step):
    """MaxPool without Indices, separable (the max over a box is the max along each spatial
    axis in turn): along axis i, each tap is one strided slice of the previous stage, clipped
    to the outputs whose window sees the input there, so no padded copy is made; the first two
    taps that cover every output go into one np.maximum(out=), the others fold in with
    np.maximum(out=) on their clipped ranges (outputs no tap reaches first get -inf, as over
    -inf padding). Output sizes and the ceil_mode overhang follow the plain kernel's formula;
    the slices are computed once per input shape."""

    kernel_shape: tuple = ()
    strides: tuple = ()
    pads: tuple = ()
    dilations: tuple = ()
    ceil_mode: int = 0
    # the lean plan's (fast.lean) workspace budget in bytes for a tiling or pairwise pool's
    # chunks, inline or each thread's (None: POOL_CHUNK_BYTES // 4 inline, POOL_CHUNK_BYTES a
    # thread; PAIRWISE_INLINE_CHUNK_BYTES). With it, a tiling pool's pairs pass (its scratch
    # a whole input / kh) runs only within it, and a plane past half of it is chunked in bands
    # of kh rows (else a chunk's m and m2 took two planes at least)
    workspace: int | None = None
    _shapes: dict = field(default_factory=dict)
    # the pairwise pool's NumPy calls bound to their arrays in a replayed run, replayed by the
    # next runs with the same arrays (see ConvStep._replay): (x, y, workspace places, calls)
    _bound: tuple | None = None
    _replayed: bool = False
    _no_record: tuple = ()  # (see steps.base.may_record)

    def _taps(self, i: int, n: int, out: int) -> list[tuple[int, int, int]]:
        """(tap offset on the input, first output it reaches, one past its last) for each tap
        of axis i that reaches the input at all (input length n, `out` outputs)."""
        kk, s, d, pb = self.kernel_shape[i], self.strides[i], self.dilations[i], self.pads[i]
        taps = []
        for t in range(kk):  # a loop over the window's taps along axis i
            lo = max(0, -((t * d - pb) // s))  # first output whose tap t lands on the input
            hi = min(out, (n - 1 - t * d + pb) // s + 1)  # one past the last
            if hi > lo:
                taps.append((t * d - pb, lo, hi))
        return taps

    def _axis_ops(self, i: int, n: int, out: int, first: int, last: int) -> list[tuple]:
        """The operations computing outputs [first, last) of axis i: ("max2", dst, a, b),
        ("copy", dst, a), ("fill", dst), ("max", dst, a); dst and a, b are slices of the
        axis (the other axes whole)."""
        s = self.strides[i]
        taps = []
        for off, lo, hi in self._taps(i, n, out):
            lo, hi = max(lo, first), min(hi, last)
            if hi > lo:
                start = lo * s + off
                taps.append((lo, hi, slice(start, start + (hi - lo - 1) * s + 1, s)))
        if not taps:  # every window here lies in the padding (the kernel refuses it)
            return [("fill", slice(first, last))]
        # Taps covering every output first: they need no fill and can start with max2.
        taps.sort(key=lambda tap: tap[1] - tap[0], reverse=True)
        full = [tap for tap in taps if (tap[0], tap[1]) == (first, last)]
        ops: list[tuple] = []
        if len(full) >= 2:
            ops.append(("max2", slice(first, last), full[0][2], full[1][2]))
            rest = taps[2:]
        else:
            lo, hi, src = taps[0]
            ops.append(("copy", slice(lo, hi), src))
            if lo > first:
                ops.append(("fill", slice(first, lo)))
            if hi < last:
                ops.append(("fill", slice(hi, last)))
            rest = taps[1:]
        ops.extend(("max", slice(lo, hi), src) for lo, hi, src in rest)
        return ops

    def _geometry(self, sizes: tuple, pairwise: bool = True) -> tuple:
        """Output sizes, per spatial axis (ops on slices of it, flat pass or None), and
        `_tiled`'s answer. A
        stride-1 axis whose output is as long as its input (a "same" pool) is done on the
        flattened arrays: tap t is the whole array shifted by its offset times the block size
        of the axis (contiguous 1-D np.maximum, ~4x faster than the same maximum over strided
        slices); the few border planes whose windows leave the input, where the shift reads a
        neighbouring row, are then recomputed from clipped slices. A 3-wide pad-1 "same" pool
        on every axis returns None for the axes: `_pairwise_part` does it without fix-ups."""
        from graphnet.runtime.kernels._windows import out_size

        k = len(self.kernel_shape)
        outs = tuple(
            out_size(n, kk, s, d, b, e, ceil=bool(self.ceil_mode))
            for n, kk, s, d, b, e in zip(
                sizes,
                self.kernel_shape,
                self.strides,
                self.dilations,
                self.pads[:k],
                self.pads[k:],
                strict=True,
            )
        )
        tiled = self._tiled(sizes)
        if pairwise and self._pairwise(sizes):
            return outs, None, tiled  # see _pairwise_part
        plan = []
        for i in range(k):  # a loop over the spatial rank
            identity = self.kernel_shape[i] == 1 and self.strides[i] == 1
            if identity and self.pads[i] == self.pads[k + i] == 0 and (plan or i < k - 1):
                continue  # a video pool's (1, 2, 2): no stage (and no buffer) for axis T
            lead = (slice(None),) * (2 + i)
            n, out = sizes[i], outs[i]
            taps = self._taps(i, n, out)
            left = max((lo for _, lo, _ in taps), default=out)
            right = out - min((hi for _, _, hi in taps), default=0)
            flat = None
            if self.strides[i] == 1 and out == n and len(taps) >= 2 and left + right < out:
                block = math.prod(sizes[i + 1 :])
                flat = (left * block, right * block, [off * block for off, _, _ in taps])
                ranges = [(0, left), (out - right, out)]
            else:
                ranges = [(0, out)]
            ops = [
                (op[0], *(lead + (sl,) for sl in op[1:]))
                for first, last in ranges
                if last > first
                for op in self._axis_ops(i, n, out, first, last)
            ]
            plan.append((i, ops, flat))
        return outs, plan, tiled

    def _pairwise(self, sizes: tuple) -> bool:
        """Whether every spatial axis is a kernel-3, stride-1, pad-1 "same" pool (Inception's
        pool branch) over at least 2 inputs: then `_pairwise_part` computes it."""
        k = len(self.kernel_shape)
        return all(
            self.kernel_shape[i] == 3
            and self.strides[i] == 1
            and self.dilations[i] == 1
            and self.pads[i] == self.pads[k + i] == 1
            and sizes[i] >= 2
            for i in range(k)
        )

    @staticmethod
    def _pairwise_part(
        x: np.ndarray,
        y: np.ndarray,
        scratch: Scratch,
        chunk: int,
        bands: bool = False,
        rec: list | None = None,
    ) -> None:
        """The 3-wide "same" max along each axis (last first) in two contiguous flat passes and
        no border fix-up: a[k] = max(src[k], src[k+B]) (B: the axis's block size), the last
        row of every plane set to -inf (where the pair read the next plane: the -inf padding
        instead), then y[k] = max(a[k-B], a[k]) (row 0 takes a's -inf row of the plane
        before, and the very first row a itself). The flat pass over the three taps fixed its
        first and last rows afterwards with strided maxima over every plane, which cost as much
        as the flat passes themselves; this takes 0.55-0.8x of its time (16x16 and 8x8, 32-144
        channels, batch 1 and 32). Exact: max is. Over chunks of whole (image, channel)
        volumes, `a` in the thread's scratch (as large as the scratch already is, `chunk` bytes
        at least): no pooled temporary as large as the input. With `bands` (the lean plan) a
        volume past `chunk` bytes runs in bands of its first spatial axis
        (`_pairwise_bands`)."""
        shape = x.shape
        vol = math.prod(shape[2:])
        if bands and vol * x.itemsize > chunk:
            if rec is not None:
                rec.append(None)  # (not recorded)
            MaxPoolStep._pairwise_bands(x, y, scratch, chunk)
            return
        xv, yv = x.reshape(-1, vol), y.reshape(-1, vol)
        n = xv.shape[0]
        step = max(1, max(chunk // x.itemsize, scratch.room(x.dtype)) // vol)
        for p0 in range(0, n, step):  # a loop over chunks of volumes sized by the scratch
            p1 = min(n, p0 + step)
            src, yf = xv[p0:p1].reshape(-1), yv[p0:p1].reshape(-1)
            size = src.size
            af = scratch.take(2, size, x.dtype)
            for i in range(len(shape) - 1, 1, -1):  # a loop over the spatial rank
                block, m = math.prod(shape[i + 1 :]), shape[i]
                _call(rec, np.maximum, src[: size - block], src[block:], out=af[: size - block])
                _call(rec, _fill, af.reshape(-1, m, block)[:, m - 1, :], -np.inf)
                _call(rec, np.maximum, af[: size - block], af[block:], out=yf[block:])
                _call(rec, np.copyto, yf[:block], af[:block])
                src = yf

    @staticmethod
    def _pairwise_bands(x: np.ndarray, y: np.ndarray, scratch: Scratch, chunk: int) -> None:
        """`_pairwise_part` for volumes past `chunk` bytes (the lean plan): bands of output rows
        [r0, r1) of the first spatial axis over a group of (image, channel) volumes at once,
        each band's input rows [r0 - 1, r1 + 1) clipped to the volume copied into a workspace
        `b`; the later axes pooled in place there (the flat passes, pairs in `a`), then the
        first axis's pairs into `a` and y's rows the max of two of them (a volume's first and
        last rows take one pair: -inf beyond its edges). Two workspaces of half the chunk
        each at most (at least 3 rows of one volume). Exact: max is."""
        shape = x.shape
        n, h = math.prod(shape[:2]), shape[2]
        block = math.prod(shape[3:])
        xv, yv = x.reshape(n, h, block), y.reshape(n, h, block)
        row = block * x.itemsize
        half = chunk // 2
        planes = max(1, min(n, half // (4 * row)))  # (4 rows a volume at least: 2 out + halo)
        rows = min(h, max(3, half // (planes * row)))  # input rows of a band, its halo in
        out = max(1, rows - 2)
        size = planes * rows * block
        bf, af = scratch.take(3, size, x.dtype), scratch.take(2, size, x.dtype)
        for p0 in range(0, n, planes):  # a loop over groups of volumes sized by the chunk
            p1 = min(n, p0 + planes)
            for r0 in range(0, h, out):  # a loop over bands of rows
                r1 = min(h, r0 + out)
                lo, hi = max(0, r0 - 1), min(h, r1 + 1)
                hb = hi - lo
                m = (p1 - p0) * hb * block
                b, a = bf[:m], af[:m]
                b3, a3 = b.reshape(-1, hb, block), a.reshape(-1, hb, block)
                b3[...] = xv[p0:p1, lo:hi]
                for i in range(len(shape) - 1, 2, -1):  # a loop over the later spatial axes
                    blk, k = math.prod(shape[i + 1 :]), shape[i]
                    np.maximum(b[: m - blk], b[blk:], out=a[: m - blk])
                    a.reshape(-1, k, blk)[:, k - 1, :] = -np.inf
                    np.maximum(a[: m - blk], a[blk:], out=b[blk:])
                    b[:blk] = a[:blk]
                np.maximum(b3[:, :-1], b3[:, 1:], out=a3[:, :-1])  # pairs (j, j + 1)
                yb = yv[p0:p1, r0:r1]
                s, e = r0 - lo, r1 - lo  # y's rows in the band
                if r0 == 0:  # the volume's first row: rows 0 and 1
                    yb[:, 0] = a3[:, 0]
                    s += 1
                if r1 == h:  # its last row: rows h - 2 and h - 1
                    yb[:, -1] = a3[:, hb - 2]
                    e -= 1
                if e > s:
                    np.maximum(
                        a3[:, s - 1 : e - 1], a3[:, s:e], out=yb[:, s - (r0 - lo) : e - (r0 - lo)]
                    )

    def _tiled(self, sizes: tuple) -> tuple[int, ...] | None:
        """The kernel when the pool tiles its input exactly (kernel = stride on every spatial
        axis, no padding, no dilation, sizes divisible: LeNet's and VGG's 2x2 / 2, video's
        (1, 2, 2) and 2x2x2 / 2): then `_tiled_part` computes it; else None."""
        k = len(self.kernel_shape)
        if k < 2 or any(p != 0 for p in self.pads) or any(d != 1 for d in self.dilations):
            return None
        if tuple(self.kernel_shape) != tuple(self.strides):
            return None
        if any(n % kk for n, kk in zip(sizes, self.kernel_shape, strict=True)):
            return None
        return tuple(self.kernel_shape)

    @staticmethod
    def _halves(x: np.ndarray, kernel: tuple) -> bool:
        """Whether `_tiled_part` pools x's planes by `halving_calls`: float32, kh x 2 windows
        (kh >= 2), several images (batch 1 keeps the tile passes: one call fewer)."""
        return (
            HALVING
            and x.dtype == np.float32
            and x.shape[0] >= 2
            and kernel[-1] == 2
            and kernel[-2] >= 2
        )

    @staticmethod
    def _tiled_part(
        x: np.ndarray,
        y: np.ndarray,
        kernel: tuple,
        scratch: Scratch,
        chunk: int,
        images: int = 0,
        rec: list | None = None,
        halving: bool = False,
    ) -> None:
        """A tiling pool over chunks of whole volumes (of (H, W) planes when every earlier axis
        is the identity). An earlier axis with a kernel kt > 1 (video's T) goes first: the max
        of its kt strided slabs, each a contiguous run of the later axes (H * W values or
        more), into the scratch: kt - 1 passes that leave 1/kt of the data for the planes.
        Then, on the planes: m = the max of the kh row-shifted flat planes, m2 = the max of
        the kw shifted flat m (both contiguous 1-D passes: they also compute the windows
        between tiles, which are dropped), then one strided copy of the tile corners into y:
        0.7-0.9x the time of the two passes over strided slices (2x2 pools at batch 32,
        10x10-32x32, 6-144 channels; video3d's (1, 2, 2) 0.7x), whose NumPy inner loops ran
        over one row (16-32 values) or over every second value. Chunks as large as the
        thread's scratch already holds, `POOL_CHUNK_BYTES` at least (no pooled memory)."""
        sizes = x.shape[2:]
        h, w = sizes[-2:]
        kh, kw = kernel[-2:]
        lead = kernel[:-2]
        plane = h * w
        # the unit of a chunk: a whole volume when an earlier axis is pooled, else a plane
        vol = math.prod(sizes) if any(kk > 1 for kk in lead) else plane
        outs = math.prod(n // kk for n, kk in zip(sizes, kernel, strict=True))
        xp = x.reshape(-1, vol)
        # y may be a channel slice of a larger output (`pool_channels`): its images are then
        # apart, so chunks are of whole images (`images` of them when given) and each chunk's
        # corners go to its images
        whole = y.flags.c_contiguous
        yp = y.reshape(-1, (h // kh) * (w // kw) if vol == plane else outs) if whole else y
        per_image = xp.shape[0] // max(1, x.shape[0])  # volumes per image
        per = 1 if whole else per_image  # the unit a chunk is a multiple of
        n = xp.shape[0]
        room = scratch.room(x.dtype) // (2 if vol == plane else 3)  # for m, m2 (and a slab)
        views = None
        y32 = (yp if whole else y).view(np.int32) if halving else None
        if images:  # whole images, contiguous y or not (at least 1: batch 0 has no images)
            step = max(1, images * per_image)
        else:
            step = max(1, max(chunk // x.itemsize, room) // vol // per) * per
        for p0 in range(0, n, step):  # a loop over chunks of volumes sized by the scratch
            p1 = min(n, p0 + step)
            src = xp[p0:p1].reshape(-1)
            dims = [p1 - p0, *sizes] if vol != plane else [p1 - p0]
            for i, kk in enumerate(lead if vol != plane else ()):  # the earlier axes
                if kk == 1:
                    continue
                outer, inner = math.prod(dims[: i + 1]), math.prod(dims[i + 2 :])
                slabs = src.reshape(outer, dims[i + 1] // kk, kk, inner)
                t = scratch.take(3 + i % 2, slabs[:, :, 0].size, x.dtype)
                tv = t.reshape(slabs[:, :, 0].shape)
                _call(rec, np.maximum, slabs[:, :, 0], slabs[:, :, 1], out=tv)
                for j in range(2, kk):  # a loop over the window's slabs
                    _call(rec, np.maximum, tv, slabs[:, :, j], out=tv)
                dims[i + 1] //= kk
                src = t
            planes = src.size // plane
            if halving:  # (`halving_calls`' passes; the caller checked: float32, kh x 2)
                size = src.size
                rows = size - (kh - 1) * w
                if views is None or views[0] != size:  # (the scratch's views: once a size)
                    # (the tile passes' takes: the same workspace places either way)
                    m = scratch.take(2, rows, x.dtype)
                    m2 = scratch.take(1, size, x.dtype)
                    views = (size, m[:rows], *halving_views(m, m2, size, w, kh))
                mr = views[1]
                _call(rec, np.maximum, src[:rows], src[w : w + rows], out=mr)
                for t_ in range(2, kh):  # a loop over the window's rows
                    _call(rec, np.maximum, mr, src[t_ * w : t_ * w + rows], out=mr)
                _call(rec, np.copyto, views[2], views[3])
                _call(rec, np.maximum, views[4], views[5], out=views[6])
                dst = y32[p0:p1] if whole else y32[p0 // per : p1 // per]
                _call(rec, np.copyto, dst, views[7].reshape(dst.shape), casting="unsafe")
                continue
            rows = src.size - (kh - 1) * w
            m = scratch.take(2, rows, x.dtype)
            if kh > 1:
                _call(rec, np.maximum, src[:rows], src[w : w + rows], out=m)
                for t_ in range(2, kh):  # a loop over the window's rows
                    _call(rec, np.maximum, m, src[t_ * w : t_ * w + rows], out=m)
            else:
                m = src
            cols = rows - (kw - 1)
            # m2 spans whole planes (its tail, past `cols`, is never computed nor read) so the
            # tile corners are a reshape and a slice of it (as_strided costs ~10 us a call)
            m2 = scratch.take(1, src.size, x.dtype)
            if kw > 1:
                _call(rec, np.maximum, m[:cols], m[1 : 1 + cols], out=m2[:cols])
                for t_ in range(2, kw):  # a loop over the window's columns
                    _call(rec, np.maximum, m2[:cols], m[t_ : t_ + cols], out=m2[:cols])
            else:
                _call(rec, np.copyto, m2[:cols], m[:cols])
            corners = m2.reshape(planes, h // kh, kh, w // kw, kw)[:, :, 0, :, 0]
            if whole:
                _call(rec, np.copyto, yp[p0:p1].reshape(corners.shape), corners)
            else:  # (a split of the first axis: a view)
                _call(rec, np.copyto, y[p0 // per : p1 // per], corners.reshape(-1, *y.shape[1:]))

    def _recorded(self, run: Run, x: np.ndarray, y: np.ndarray, part: Callable) -> None:
        """part(x, y, scratch, rec) on this thread: its NumPy calls recorded (`rec`) in a
        replayed run, for the next runs with the same x, y and workspace region to replay them
        (see `__call__`, ConvStep._replay)."""
        if (
            _base.BIND_CALLS
            and run.pool.replaying
            and self.outputs[0] not in run.outputs
            and x is run.get(self.inputs[0])
            and may_record(self, (x.shape, False))
        ):
            sc, rec = TakeLog(run.scratch[0]), []  # type: ignore[var-annotated]
            part(x, y, sc, rec)
            places = sc.places()
            ok = None not in rec and places is not None
            self._bound = (x, y.shape, y, places, tuple(rec), part) if ok else None
            self._replayed = False
            return
        part(x, y, run.scratch[0])

    @staticmethod
    def _pairs_part(
        x: np.ndarray, y: np.ndarray, kh: int, kw: int, scratch: Scratch, rec: list | None = None
    ) -> None:
        """A small tiling kh x kw pool in two strided passes over the whole input: the max of
        each window's kh rows (x viewed as (rows / kh, kh, W): whole rows of W values) into
        the scratch, then the max of each kw values of that (viewed as (-1, kw)) into y."""
        w = x.shape[-1]
        src = x.reshape(-1, kh, w)
        if kh > 1:
            t = scratch.take(2, src.shape[0] * w, x.dtype).reshape(-1, w)
            _call(rec, np.maximum, src[:, 0], src[:, 1], out=t)
            for j in range(2, kh):  # a loop over the window's rows
                _call(rec, np.maximum, t, src[:, j], out=t)
        else:
            t = src[:, 0]
        cols = t.reshape(-1, kw)
        yf = y.reshape(-1)
        if kw > 1:
            _call(rec, np.maximum, cols[:, 0], cols[:, 1], out=yf)
            for j in range(2, kw):  # a loop over the window's columns
                _call(rec, np.maximum, yf, cols[:, j], out=yf)
        else:
            _call(rec, np.copyto, yf, cols[:, 0])

    def pooled_sizes(self, sizes: tuple) -> tuple | None:
        """The output's spatial sizes when this pool tiles 2-D inputs of `sizes` exactly (then
        `pool_channels` computes it), else None."""
        tiled = self._tiled(sizes)
        if tiled is None or len(sizes) != 2:
            return None
        return tuple(n // k for n, k in zip(sizes, tiled, strict=True))

    def pool_channels(self, run: Run, xs: list, y: np.ndarray) -> None:
        """y = this pool of the channel concatenation of `xs` (ConcatStep with the pool fused,
        see `CompiledPlan._pool_concats`): each input pooled straight into its channel slice of
        y by `_tiled_part`, no concatenated copy (the max is per channel plane). Only where
        `pooled_sizes` gives y's sizes. Threads over images as `__call__` from
        TILED_SPLIT_MIN_ELEMENTS input elements in all."""
        tiled = self._tiled(xs[0].shape[2:])
        assert tiled is not None  # (see pooled_sizes)
        parts = []
        c0 = 0
        for x in xs:  # a loop over the concatenated inputs (a few branches)
            c = x.shape[1]
            parts.append((np.ascontiguousarray(x), y[:, c0 : c0 + c]))
            c0 += c
        # Chunks of the same images for every input, the widest input first: the later ones'
        # workspaces fit in its places (a larger later take would move its slot past the
        # others: 1 MiB more arena on inception_bn@32).
        parts.sort(key=lambda p: -p[0].shape[1])
        image = xs[0].itemsize * math.prod(xs[0].shape[2:]) * parts[0][0].shape[1]
        n = y.shape[0]
        halves = self._halves(parts[0][0], tiled)
        if n < 2 or sum(x.size for x in xs) < TILED_SPLIT_MIN_ELEMENTS:
            images = max(1, POOL_CHUNK_BYTES // 4 // image)
            for x, yc in parts:  # a loop over the inputs
                self._tiled_part(x, yc, tiled, run.scratch[0], 0, images, None, halves)
        else:
            images = max(1, POOL_CHUNK_BYTES // image)

            def part(lo: int, hi: int, sc: Scratch) -> None:
                for x, yc in parts:  # a loop over the inputs
                    self._tiled_part(x[lo:hi], yc[lo:hi], tiled, sc, 0, images, None, halves)

            run.parallel(n, part, SPLIT_MIN_FLOPS)

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        bound = self._bound
        if bound is not None and x is bound[0]:
            y = run.alloc(self.outputs[0], bound[1], x.dtype)
            if y is bound[2] and retaken(run.scratch[0], bound[3]):
                for call in bound[4]:  # a loop over the step's NumPy calls
                    call()
                self._replayed = True
                taped(run, self, bound[4])
                return
            self._bound = None
            bound[5](x, y, run.scratch[0])  # (the path's computation, afresh)
            return
        # the pairwise pass writes -inf rows: floating inputs only (MaxPool also takes ints)
        key = (x.shape[2:], x.dtype.kind == "f")
        geo = self._shapes.get(key)
        if geo is None:
            geo = self._shapes[key] = self._geometry(*key)
        outs, plan, tiled = geo
        slabs = tiled is not None and max(tiled[:-2], default=1) > 1
        least = TILED_SLABS_MIN_ELEMENTS if slabs else TILED_MIN_ELEMENTS
        # (a lean budget holds a chunk's two workspaces, m and m2, inline or each thread's)
        lean = (self.workspace or 0) // 2
        if tiled is not None and not slabs and x.size <= PAIRS_MAX_ELEMENTS:
            if not lean or x.size // tiled[-2] * x.itemsize <= 2 * lean:
                x = np.ascontiguousarray(x)
                y = run.alloc(self.outputs[0], (*x.shape[:2], *outs), x.dtype)
                kh, kw = tiled[-2:]
                self._recorded(
                    run, x, y, lambda x, y, sc, rec=None: self._pairs_part(x, y, kh, kw, sc, rec)
                )
                return
            least = 0  # (lean: the pairs' scratch passes the workspace: the tiled chunks)
        if tiled is not None and x.flags.c_contiguous and x.size >= least:
            y = run.alloc(self.outputs[0], (*x.shape[:2], *outs), x.dtype)
            xs, ys, kernel = x, y, tiled
            if lean and not slabs and x.itemsize * x.shape[-2] * x.shape[-1] > lean:
                # (lean: a plane passes a chunk: chunks of bands of kh rows, an output row each)
                kh, kw = tiled[-2:]
                xs = x.reshape(x.shape[0], -1, kh, x.shape[-1])
                ys = y.reshape(y.shape[0], -1, 1, y.shape[-1])
                kernel = (kh, kw)
            halves = self._halves(x, kernel)
            if x.shape[0] < 2 or x.size < TILED_SPLIT_MIN_ELEMENTS:
                chunk = lean or POOL_CHUNK_BYTES // 4
                if xs is x and ys is y:  # (not the lean plan's bands)
                    self._recorded(
                        run,
                        x,
                        y,
                        lambda x, y, sc, rec=None: self._tiled_part(
                            x, y, kernel, sc, chunk, 0, rec, halves
                        ),
                    )
                else:
                    self._tiled_part(xs, ys, kernel, run.scratch[0], chunk, 0, None, halves)
            else:
                chunk = lean or POOL_CHUNK_BYTES
                run.parallel(
                    x.shape[0],
                    lambda lo, hi, sc: self._tiled_part(
                        xs[lo:hi], ys[lo:hi], kernel, sc, chunk, 0, None, halves
                    ),
                    SPLIT_MIN_FLOPS,
                )
            return
        if plan is None:  # the pairwise "same" pool, on flat views
            x = np.ascontiguousarray(x)
            y = run.alloc(self.outputs[0], x.shape, x.dtype)
            if x.shape[0] < 2 or x.size < TILED_SPLIT_MIN_ELEMENTS:
                chunk = self.workspace or PAIRWISE_INLINE_CHUNK_BYTES
                bands = bool(self.workspace)
                self._recorded(
                    run,
                    x,
                    y,
                    lambda x, y, sc, rec=None: self._pairwise_part(x, y, sc, chunk, bands, rec),
                )
            else:
                run.parallel(
                    x.shape[0],
                    lambda lo, hi, sc: self._pairwise_part(
                        x[lo:hi],
                        y[lo:hi],
                        sc,
                        self.workspace or POOL_CHUNK_BYTES,
                        bool(self.workspace),
                    ),
                    SPLIT_MIN_FLOPS,
                )
            return
        y = run.alloc(self.outputs[0], (*x.shape[:2], *outs), x.dtype)
        low = -np.inf
        temps = []
        stages = []
        shape = list(x.shape)
        for i, _, _ in plan[:-1]:  # a loop over the spatial rank: the intermediate stages
            shape[2 + i] = outs[i]
            arr, buf = run.pool.take(tuple(shape), x.dtype)
            temps.append(buf)
            stages.append(arr)
        stages.append(y)
        maximum = np.maximum

        def part(src: np.ndarray, dsts: list) -> None:
            for (_, ops, flat), dst in zip(plan, dsts, strict=True):  # a loop over the rank
                if flat is not None:
                    head, tail, offs = flat
                    sf, df = src.reshape(-1), dst.reshape(-1)
                    lo, hi = head, df.size - tail
                    out = df[lo:hi]
                    maximum(
                        sf[lo + offs[0] : hi + offs[0]], sf[lo + offs[1] : hi + offs[1]], out=out
                    )
                    for off in offs[2:]:  # a loop over the window's taps
                        maximum(out, sf[lo + off : hi + off], out=out)
                for op in ops:  # a loop over the window's taps (of the border planes)
                    kind = op[0]
                    if kind == "max":
                        maximum(dst[op[1]], src[op[2]], out=dst[op[1]])
                    elif kind == "max2":
                        maximum(src[op[2]], src[op[3]], out=dst[op[1]])
                    elif kind == "copy":
                        dst[op[1]] = src[op[2]]
                    else:
                        dst[op[1]] = low
                src = dst

        work = float(y.size * sum(self.kernel_shape)) * ELEMENT_FLOPS
        if x.shape[0] < 2 or work < SPLIT_MIN_FLOPS:
            part(x, stages)
        else:
            run.parallel(
                x.shape[0], lambda lo, hi, scratch: part(x[lo:hi], [a[lo:hi] for a in stages]), work
            )
        for buf in temps:
            run.pool.give(buf)
