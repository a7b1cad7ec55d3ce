"""Fast backward rules: second implementations of the heavy plain rules (Conv, BatchNormalization
in train mode, MaxPool, Relu) for `FastBackprop`. The plain rules stay the oracle: tests compare
the two on odd shapes, and a fast rule that does not cover a case returns `NotImplemented`, which
sends the node to its plain rule.

A fast rule is registered by op name like the plain ones and takes what the plain rule takes
(dY, the inputs, `out`, the resolved attributes, `needs`, `training`) plus `ctx`: the plan's
thread pool and what the recording forward kept for this node (BatchNorm's batch statistics).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphnet.runtime.fast.threads import Parallel
from graphnet.runtime.gradients.fast_conv import ConvColumns, conv_backward
from graphnet.runtime.gradients.fast_norm import batch_norm_backward
from graphnet.runtime.gradients.pooling import window_frame

__all__ = ["FastContext", "fast_gradient", "get_fast_gradient", "all_fast_gradients"]

_FAST: dict[str, Callable] = {}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class FastContext:
    """What a fast rule gets besides the plain rule's arguments: the thread pool, and the
    node's record from the forward (None if it kept none)."""

    parallel: Parallel
    record: Any = None


def fast_gradient(op: str) -> Callable[[Callable], Callable]:
    """Register `fn` as the fast backward rule of `op`."""

    def deco(fn: Callable) -> Callable:
        if op in _FAST:
            raise ValueError(f"a fast gradient for op '{op}' is registered twice")
        _FAST[op] = fn
        return fn

    return deco


def get_fast_gradient(op: str) -> Callable | None:
    return _FAST.get(op)


def all_fast_gradients() -> dict[str, Callable]:
    return dict(_FAST)


def _same_float(*arrays: np.ndarray | None) -> bool:
    """Every given array has the first one's dtype, float32 or float64."""
    present = [a for a in arrays if a is not None]
    return present[0].dtype in _FLOATS and all(a.dtype == present[0].dtype for a in present)


@fast_gradient("Conv")
def conv(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    out: tuple,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    kernel_shape: Sequence[int] | None,
    needs: tuple[bool, ...],
    training: bool,
    ctx: FastContext,
) -> Any:
    """dX, dW as in `fast_conv.conv_backward`; dB = sum of dY over batch and positions."""
    if not _same_float(dy, x, w) or x.ndim < 3 or min(pads, default=0) < 0:
        return NotImplemented
    dx, dw = conv_backward(
        dy,
        x,
        w,
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
        need_dx=needs[0],
        need_dw=needs[1],
        parallel=ctx.parallel,
        # the forward's columns, unless a later forward has reused their buffer
        kept=ctx.record if isinstance(ctx.record, ConvColumns) and ctx.record.current() else None,
    )
    db = None
    if b is not None and needs[2]:
        db = dy.sum(axis=(0, *range(2, dy.ndim))).astype(b.dtype, copy=False)
    return dx, dw, db


@fast_gradient("Relu")
def relu(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    out: tuple,
    needs: tuple[bool, ...],
    training: bool,
    ctx: FastContext,
) -> Any:
    """dx = dy * [x > 0]: one multiply by the boolean mask (np.where, the plain rule's form,
    measured 8x slower here). A multiply makes inf * 0 = NaN where the plain rule gives 0, so a
    non-finite result (its sum says so, in one cheap pass) is redone as the plain rule does."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 is handled below
        dx = np.multiply(dy, x > 0)
        finite = np.isfinite(dx.sum())
    if not finite:
        return NotImplemented
    return (dx,)


@fast_gradient("BatchNormalization")
def batch_normalization(
    dy: np.ndarray,
    x: np.ndarray,
    scale: np.ndarray,
    b: np.ndarray,
    input_mean: np.ndarray,
    input_var: np.ndarray,
    *,
    out: tuple,
    epsilon: float,
    momentum: float,
    needs: tuple[bool, ...],
    training: bool,
    ctx: FastContext,
) -> Any:
    """Train mode, from the forward's record (batch mean, 1/sqrt(batch var + eps) in float64,
    xc and r as `fast_norm.batch_norm_forward` returns them): `fast_norm.batch_norm_backward`.
    Inference mode (a per-channel affine of constants) and a forward that kept no record go to
    the plain rule."""
    rec = ctx.record
    if not training or rec is None or not _same_float(dy, x) or x.ndim < 2:
        return NotImplemented
    _, inv, xc, r = rec
    dx, dgamma, dbeta = batch_norm_backward(dy, xc, inv, scale, needs[0], r)
    return dx, dgamma.astype(scale.dtype), dbeta.astype(b.dtype), None, None


@fast_gradient("MaxPool")
def max_pool(
    dy: np.ndarray,
    x: np.ndarray,
    *,
    out: tuple,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: int,
    storage_order: int,
    needs: tuple[bool, ...],
    training: bool,
    ctx: FastContext,
) -> Any:
    """Each window's gradient goes to its first tap (row-major over the kernel) equal to the
    window's maximum Y, found tap by tap with a mask of the windows already served: the same
    choice as the plain rule's argmax, in a few element-wise passes per tap over dY-sized arrays
    instead of an argmax over a strided window view. Windows that do not overlap (stride >= the
    dilated kernel) write their taps' slices directly. A window whose maximum is NaN sends
    nothing here, so NaN inputs go to the plain rule."""
    y = out[0]
    if not _same_float(dy, x, y) or np.isnan(y).any():
        return NotImplemented
    k = len(kernel_shape)
    sizes, outs = x.shape[2:], dy.shape[2:]
    frame = window_frame(sizes, outs, kernel_shape, strides, dilations, pads)
    ends = [frame[i] - sizes[i] - pads[i] for i in range(k)]
    begins = list(pads[:k])
    inner = (slice(None), slice(None)) + tuple(
        slice(b, b + s) for b, s in zip(begins, sizes, strict=True)
    )
    if any(begins) or any(ends):
        xp = np.full((*x.shape[:2], *frame), -np.inf, x.dtype)  # padding is never a maximum
        xp[inner] = x
    else:
        xp = x
    disjoint = all(
        s >= d * (kk - 1) + 1 for s, d, kk in zip(strides, dilations, kernel_shape, strict=True)
    )
    # Windows that tile the frame exactly (stride = kernel, no dilation) write every element.
    tiled = all(
        s == kk and d == 1 and f == o * kk
        for s, kk, d, f, o in zip(strides, kernel_shape, dilations, frame, outs, strict=True)
    )
    dxp = (np.empty if tiled else np.zeros)((*x.shape[:2], *frame), dy.dtype)
    served = np.zeros(dy.shape, bool)
    hit = np.empty(dy.shape, bool)
    taps = list(itertools.product(*[range(kk) for kk in kernel_shape]))
    for j, tap in enumerate(taps):  # a loop over the window's taps, never over pixels
        index = (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, outs, strides, strict=True)
        )
        np.equal(xp[index], y, out=hit)
        if j:
            np.greater(hit, served, out=hit)  # hit and not served (booleans: 1 > 0 only)
        if j < len(taps) - 1:
            np.logical_or(served, hit, out=served)
        if disjoint:
            np.multiply(dy, hit, out=dxp[index])
        else:
            dxp[index] += dy * hit
    if xp is x:
        return (dxp,)
    return (np.ascontiguousarray(dxp[inner]),)
