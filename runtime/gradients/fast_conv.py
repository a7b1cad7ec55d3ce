"""Conv gradients for the fast training plan: the maths of `conv.py`'s rule (its oracle), laid out
for speed. Y = conv(X, W) + B with W of shape (M, C/g, *k); every product is one GEMM per group
and batch chunk, and the chunks run on the fast plan's worker threads with single-threaded BLAS
and workspaces from each thread's scratch arena.

Layout: batch last. A chunk of b images is copied once, padded, as (C, *padded spatial, b). In
that layout a kernel tap's window over the chunk is, for every channel, a run of out_w * b
contiguous numbers (b with a stride), where NCHW gives runs of out_w: on the small images of a
digits CNN (4x4, 8x8) the im2col copies are a few times faster, and the GEMMs see the same
operands (their inner dimension is positions * images, in either order).

- Y (the training forward, `conv_forward`) = W[g] (M/g, C/g*taps) @ cols[g] (C/g*taps, P*b),
  the columns kept for the backward when small (`fast_plan.KEEP_COLUMNS`).
- dW[g] = dY[g] (M/g, P*b) @ cols[g]^T (P*b, C/g*taps), summed over the chunks (and threads);
  cols the forward's when it kept them, else built again from X. Computed transposed, as
  cols[g] @ dY[g]^T (C/g*taps, M/g), and transposed once at the end: OpenBLAS ran that form
  1.5-2.3x faster on the template CNN's shapes (its long inner dimension P*b in both operands'
  rows, the thin M/g as the output's columns).
- dX, stride 1 with pads within the kernel's reach d*(k-1): the adjoint convolution
  dX = conv(dY, W~), W~ the kernel flipped in space with input and output channels swapped per
  group, pads d*(k-1) - p: the im2col of dY (batch last), one GEMM, then the (C, *X, b) result
  written into dX's NCHW chunk.
- dX otherwise (strides, wider pads): col2im: cols = W[g]^T @ dY[g] (one GEMM), then one strided
  add per kernel tap into a zeroed padded frame, cropped into dX's NCHW chunk.
- dB = sum of dY over batch and positions (in the rule).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from graphnet.runtime.fast import conv as _fast
from graphnet.runtime.fast.memory import Scratch
from graphnet.runtime.fast.threads import Parallel
from graphnet.runtime.gradients.pooling import window_frame

__all__ = [
    "ConvColumns",
    "conv_forward",
    "conv_backward",
    "flipped_weight",
    "batch_last",
    "transpose_batch",
    "WORKSPACE_BYTES",
    "FORWARD_WORKSPACE_BYTES",
]

WORKSPACE_BYTES = 4 << 20
"""Workspace per thread and batch chunk (the im2col columns of X and of dY, their batch-last
copies). Larger than the inference plan's 1 MiB: batch-last runs are out_w * images long, and
the template CNN's backward convs (batch 64, 8x8 and 4x4) measured 1.2-1.4x faster with 4 MiB
chunks than with 1 MiB ones (no further gain at 16 MiB). Training keeps every activation for the
backward anyway; two threads' workspaces add 8 MiB."""

FORWARD_WORKSPACE_BYTES = 2 << 20
"""Workspace per thread and batch chunk of a forward that does not keep its columns (they are
in it, with the padded batch-last copy of X and the GEMM's output). Measured on the template
CNN's training step at batch 64 (in-process A/B, thread CPU time, 800-1,200 rounds, load
~3): 2 MiB took 0.974x and 0.981x the time of 4 MiB (one chunk for the 16->16 conv on 8x8),
1 MiB 0.979x, 512 KiB 1.030x (more, smaller GEMMs). The backward's chunks stayed at
`WORKSPACE_BYTES` (2 MiB there: 1.034x)."""


def flipped_weight(w: np.ndarray, group: int) -> np.ndarray:
    """W (M, C/g, *k) -> W~ (C, M/g, *k): per group, input and output channels swapped, the
    taps reversed in space (the kernel of the adjoint convolution)."""
    m, cg = w.shape[:2]
    ks = w.shape[2:]
    wt = w.reshape(group, m // group, cg, *ks).swapaxes(1, 2).reshape(group * cg, m // group, *ks)
    return wt[(slice(None), slice(None), *[slice(None, None, -1)] * len(ks))]


def transpose_batch(src: np.ndarray, dst: np.ndarray, tmp: np.ndarray, *, to_last: bool) -> None:
    """dst = src moved between (b, C, *S) and batch-last (C, *S, b) (`to_last` says which way),
    through (C, b, *S) in `tmp` (at least src.size numbers): a copy with runs of prod(S) numbers,
    then one (b, S) <-> (S, b) transpose per channel, small enough to stay in cache. Measured 5x
    faster than numpy's one-step transpose copy on (64, 16, 8, 8), whose writes stride across
    the whole array."""
    k = src.ndim - 2
    if to_last:
        mid = tmp[: src.size].reshape(src.shape[1], src.shape[0], *src.shape[2:])
        np.copyto(mid, src.transpose(1, 0, *range(2, 2 + k)))
        np.copyto(dst, mid.transpose(0, *range(2, 2 + k), 1))
    else:
        c, b = src.shape[0], src.shape[-1]
        mid = tmp[: src.size].reshape(c, b, *src.shape[1:-1])
        np.copyto(mid, src.transpose(0, 1 + k, *range(1, 1 + k)))
        np.copyto(dst, mid.transpose(1, 0, *range(2, 2 + k)))


def batch_last(
    src: np.ndarray,
    begins: Sequence[int],
    ends: Sequence[int],
    buf: np.ndarray,
    tmp: np.ndarray,
) -> np.ndarray:
    """src (b, C, *S) copied into `buf` as (C, *(S + begins + ends), b) with zero borders
    (`tmp`: a workspace of src.size numbers). Only the borders are zeroed (the scratch is
    shared)."""
    b, c = src.shape[:2]
    sizes = src.shape[2:]
    k = len(sizes)
    shape = (c, *[sizes[i] + begins[i] + ends[i] for i in range(k)], b)
    out = buf[: prod(shape)].reshape(shape)
    lead: list[slice] = [slice(None)]
    for i in range(k):  # a loop over the spatial rank: zero the two borders of axis i
        lo, hi = begins[i], begins[i] + sizes[i]
        if lo:
            out[(*lead, slice(0, lo))] = 0
        if hi < shape[1 + i]:
            out[(*lead, slice(hi, None))] = 0
        lead.append(slice(None))
    inner = tuple(slice(bg, bg + s) for bg, s in zip(begins, sizes, strict=True))
    transpose_batch(src, out[(slice(None), *inner, slice(None))], tmp, to_last=True)
    return out


def _windows(
    xt: np.ndarray,
    group: int,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    outs: Sequence[int],
) -> np.ndarray:
    """The read-only (g, C/g, *kernel, *outs, b) window view of a batch-last padded array
    (C, *padded, b): view[g, c, t..., o..., n] = xt[g*C/g + c, o*stride + t*dilation ..., n]."""
    st = xt.strides
    k = len(kernel)
    cg = xt.shape[0] // group
    # The ndarray constructor over xt's memory: the view as_strided makes, at ~1 us instead of
    # ~6 (a conv's forward and backward make up to three of these per batch chunk).
    view = np.ndarray(
        (group, cg, *kernel, *outs, xt.shape[-1]),
        xt.dtype,
        xt,
        0,
        (
            cg * st[0],
            st[0],
            *(d * st[1 + i] for i, d in enumerate(dilations)),
            *(s * st[1 + i] for i, s in enumerate(strides)),
            st[1 + k],
        ),
    )
    view.flags.writeable = False  # overlapping windows: never written through
    return view


@dataclass
class ConvColumns:
    """What a recording conv forward keeps for dW: the im2col columns of every image, (g,
    C/g * taps, P * N), laid out by the forward's batch chunks (chunk [n0, n1) holds columns
    P*n0 .. P*n1, ordered (position, image)), and those chunks, in batch order."""

    cols: np.ndarray
    chunks: list[tuple[int, int]]
    current: Callable[[], bool] = lambda: True
    """False once the buffer holding `cols` was reused by a later forward (a stale tape)."""


def conv_forward(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    y: np.ndarray,
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    parallel: Parallel,
    buffer: np.ndarray | None = None,
    keep: bool = True,
) -> ConvColumns | None:
    """y = conv(x, w) + bias (y preallocated, x's dtype), by batch-last im2col and one GEMM per
    group and chunk. With `keep`, the columns are kept for the backward's dW GEMM, which then
    reads them instead of building them again: `buffer` (of the columns' shape and x's dtype)
    receives them, else a new array. Without, each chunk's columns live in the thread's
    scratch during that chunk only (the chunks sized with them in the workspace) and the result
    is None. Keeping costs the columns' memory (taps x the input) until the backward, and
    their trip through memory: see `fast_plan.KEEP_COLUMNS` for which pays."""
    k = x.ndim - 2
    n, c = x.shape[:2]
    m = w.shape[0]
    ks = tuple(int(v) for v in w.shape[2:])
    g = int(group)
    cg, mg = c // g, m // g
    xs, outs = x.shape[2:], y.shape[2:]
    p, taps = prod(outs), prod(ks)
    dtype = x.dtype
    begins, ends = tuple(pads[:k]), tuple(pads[k:])
    x_padded = prod(xs[i] + begins[i] + ends[i] for i in range(k))
    spare = max(m, c) * max(p, prod(xs))  # the transposes' workspace
    per_image = c * x_padded + m * p + spare + (0 if keep else c * taps * p)
    budget = WORKSPACE_BYTES if keep else FORWARD_WORKSPACE_BYTES
    chunk_images = max(1, budget // max(per_image * dtype.itemsize, 1))
    cols = None
    if keep:
        cols = np.empty((g, cg * taps, p * n), dtype) if buffer is None else buffer
    wg = w.reshape(g, mg, cg * taps).astype(dtype, copy=False)
    bg = None if bias is None else bias.astype(dtype, copy=False).reshape(g, mg, 1)
    chunks: list[tuple[int, int]] = []

    def work(lo: int, hi: int, scratch: Scratch) -> None:
        for n0 in range(lo, hi, chunk_images):  # a loop over batch CHUNKS sized by the workspace
            n1 = min(hi, n0 + chunk_images)
            b = n1 - n0
            tmp = scratch.take(6, b * spare, dtype)
            xt = batch_last(x[n0:n1], begins, ends, scratch.take(1, b * c * x_padded, dtype), tmp)
            if cols is None:
                block = scratch.take(2, b * c * taps * p, dtype).reshape(g, cg * taps, p * b)
            else:
                block = cols[:, :, p * n0 : p * n1]
            np.copyto(
                block.reshape(g, cg, *ks, *outs, b), _windows(xt, g, ks, strides, dilations, outs)
            )
            yt = scratch.take(0, b * m * p, dtype).reshape(g, mg, p * b)
            _fast.blocked_matmul(wg, block, yt)
            if bg is not None:
                yt += bg
            transpose_batch(yt.reshape(m, *outs, b), y[n0:n1], tmp, to_last=False)
            chunks.append((n0, n1))  # list.append is atomic: the threads share the list

    parallel(n, work, 2.0 * n * m * cg * taps * p)
    if cols is None:
        return None
    chunks.sort()
    return ConvColumns(cols, chunks)


def conv_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    *,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    need_dx: bool,
    need_dw: bool,
    parallel: Parallel,
    kept: ConvColumns | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dX, dW) of Y = conv(X, W) (None where not needed). x, w and dy share one float dtype;
    pads are non-negative. With `kept` (the forward's columns, `conv_forward`), dW reads them
    and the batch is walked in the forward's chunks."""
    k = x.ndim - 2
    n, c = x.shape[:2]
    m = w.shape[0]
    ks = tuple(int(v) for v in w.shape[2:])
    g = int(group)
    cg, mg = c // g, m // g
    xs, outs = x.shape[2:], dy.shape[2:]
    p, taps, npix = prod(outs), prod(ks), prod(xs)
    dtype = x.dtype
    begins, ends = tuple(pads[:k]), tuple(pads[k:])
    reach = [dilations[i] * (ks[i] - 1) for i in range(k)]
    adj_begins = tuple(reach[i] - begins[i] for i in range(k))
    adj_ends = tuple(reach[i] - ends[i] for i in range(k))
    by_conv = all(s == 1 for s in strides) and min(adj_begins + adj_ends, default=0) >= 0

    x_padded = prod(xs[i] + begins[i] + ends[i] for i in range(k))
    adj_padded = prod(outs[i] + adj_begins[i] + adj_ends[i] for i in range(k))
    per_image = m * p + max(m, c) * max(p, npix)  # dY batch last; the transposes' workspace
    if need_dw and kept is None:
        per_image += c * x_padded + c * taps * p
    wt = wcol = None
    frame: list[int] = []
    if need_dx and by_conv:
        # W~ per group as (g, C/g, M/g * taps): the adjoint conv's weight, ready for the GEMM
        wt = np.ascontiguousarray(flipped_weight(w, g).reshape(g, cg, mg * taps))
        # (dX's columns take dW's place in the scratch, but the chunks stay sized for both:
        # measured, the larger chunks of counting one gained less, 0.98-0.99x against 0.96)
        per_image += m * adj_padded + m * taps * npix + c * npix
    elif need_dx:
        wcol = np.ascontiguousarray(w.reshape(g, mg, cg * taps).transpose(0, 2, 1))
        frame = window_frame(xs, outs, ks, strides, dilations, pads)
        per_image += c * taps * p + c * prod(frame)
    chunk_images = max(1, WORKSPACE_BYTES // max(per_image * dtype.itemsize, 1))
    dx = np.empty(x.shape, dtype) if need_dx else None
    parts: dict[int, np.ndarray] = {}

    if kept is not None:
        chunks = kept.chunks
    else:  # the batch split between the threads, each slice in chunks sized by the workspace
        w_ = max(1, min(parallel.workers, n))
        chunks = [
            (n0, min(hi, n0 + chunk_images))
            for lo, hi in ((n * i // w_, n * (i + 1) // w_) for i in range(w_))
            for n0 in range(lo, hi, chunk_images)
        ]

    def work(lo: int, hi: int, scratch: Scratch) -> None:
        # dW^T per group (C/g * taps, M/g): the GEMM as cols @ dY^T (the module's note on dW)
        acc = np.zeros((g, cg * taps, mg), dtype) if need_dw else None
        for n0, n1 in chunks[lo:hi]:
            b = n1 - n0
            dyt = scratch.take(0, b * m * p, dtype).reshape(g, mg, p * b)
            dyp = None
            if wt is not None:  # dY batch last and padded for the adjoint conv: transposed once
                dyp = batch_last(
                    dy[n0:n1],
                    adj_begins,
                    adj_ends,
                    scratch.take(3, b * m * adj_padded, dtype),
                    scratch.take(6, b * max(m, c) * max(p, npix), dtype),
                )
                if acc is not None:  # its interior (runs of out_w * b numbers) for the dW GEMM
                    inner = tuple(slice(bg, bg + o) for bg, o in zip(adj_begins, outs, strict=True))
                    np.copyto(dyt.reshape(m, *outs, b), dyp[(slice(None), *inner, slice(None))])
            else:
                transpose_batch(
                    dy[n0:n1],
                    dyt.reshape(m, *outs, b),
                    scratch.take(6, b * max(m, c) * max(p, npix), dtype),
                    to_last=True,
                )
            if acc is not None and kept is not None:
                acc += np.matmul(kept.cols[:, :, p * n0 : p * n1], dyt.transpose(0, 2, 1))
            elif acc is not None:
                xt = batch_last(
                    x[n0:n1],
                    begins,
                    ends,
                    scratch.take(1, b * c * x_padded, dtype),
                    scratch.take(6, b * max(m, c) * max(p, npix), dtype),
                )
                cols = scratch.take(2, b * c * taps * p, dtype).reshape(g, cg, *ks, *outs, b)
                np.copyto(cols, _windows(xt, g, ks, strides, dilations, outs))
                # dY's transpose is a BLAS flag, not a copy
                acc += np.matmul(cols.reshape(g, cg * taps, p * b), dyt.transpose(0, 2, 1))
            if dx is None:
                continue
            if dyp is not None:
                assert wt is not None  # dyp is made only on the adjoint-conv path
                # in the place of dW's columns (done with): a smaller scratch stays in cache
                cols2 = scratch.take(2, b * m * taps * npix, dtype).reshape(g, mg, *ks, *xs, b)
                np.copyto(cols2, _windows(dyp, g, ks, (1,) * k, dilations, xs))
                dxt = scratch.take(5, b * c * npix, dtype).reshape(g, cg, npix * b)
                _fast.blocked_matmul(wt, cols2.reshape(g, mg * taps, npix * b), dxt)
                transpose_batch(
                    dxt.reshape(c, *xs, b),
                    dx[n0:n1],
                    scratch.take(6, b * max(m, c) * max(p, npix), dtype),
                    to_last=False,
                )
            else:
                assert wcol is not None
                colt = scratch.take(3, b * c * taps * p, dtype).reshape(g, cg * taps, p * b)
                _fast.blocked_matmul(wcol, dyt, colt)
                dxp = scratch.take(4, b * c * prod(frame), dtype).reshape(c, *frame, b)
                dxp.fill(0)
                cv = colt.reshape(c, *ks, *outs, b)
                for tap in itertools.product(*[range(kk) for kk in ks]):  # kernel taps
                    index = tuple(
                        slice(t * d, t * d + (o - 1) * s + 1, s)
                        for t, d, o, s in zip(tap, dilations, outs, strides, strict=True)
                    )
                    at: tuple[slice | int, ...] = (slice(None), *tap)
                    dxp[(slice(None), *index)] += cv[at]
                crop = tuple(slice(bg, bg + s) for bg, s in zip(begins, xs, strict=True))
                transpose_batch(
                    dxp[(slice(None), *crop)],
                    dx[n0:n1],
                    scratch.take(6, b * max(m, c) * max(p, npix), dtype),
                    to_last=False,
                )
        if acc is not None:
            parts[lo] = acc

    flops = 2.0 * n * m * cg * taps * p * (int(need_dx) + int(need_dw))
    parallel(len(chunks), work, flops)
    dw = None
    if need_dw:
        total = np.zeros((g, cg * taps, mg), dtype)
        for lo in sorted(parts):
            total += parts[lo]
        dw = np.ascontiguousarray(total.transpose(0, 2, 1)).reshape(w.shape)
    return dx, dw
