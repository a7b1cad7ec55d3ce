"""Element-wise steps (unary, binary, BatchNorm's affine) and the per-row reductions (Group /
Instance / Layer normalization, Softmax, GlobalAveragePool)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphnet.runtime.fast.steps.base import Run, Step
from graphnet.runtime.fast.threads import ELEMENT_FLOPS, SPLIT_MIN_FLOPS

__all__ = [
    "UnaryStep",
    "BinaryStep",
    "BatchNormStep",
    "NormStep",
    "SoftmaxStep",
    "GlobalAveragePoolStep",
]


@dataclass
class UnaryStep(Step):
    """An element-wise op with an `out=` form, in place when its input dies here."""

    ufunc: Callable = print
    inplace: bool = False
    temp: bool = False  # ufunc(x, y, t, *params) needs a scratch array t shaped like x

    def __call__(self, run: Run) -> None:
        src = self.inputs[0]
        x = run.get(src)
        params = [run.get(i) for i in self.inputs[1:]]
        t = buf = None
        if self.temp:  # computed before y is written: y may be x itself
            t, buf = run.pool.take(x.shape, x.dtype)
        if self.inplace and run.writable(src):
            y = run.steal(src, self.outputs[0])
        else:
            y = run.alloc(self.outputs[0], x.shape, x.dtype)
        fn = self.ufunc
        # Batch slices on the plan's threads (NumPy releases the GIL in ufuncs), unless a
        # parameter varies along the batch axis itself.
        batched = x.ndim >= 2 and all(p.ndim < x.ndim or p.shape[0] == 1 for p in params)
        if not batched or x.shape[0] < 2 or x.size * ELEMENT_FLOPS < SPLIT_MIN_FLOPS:
            if self.temp:
                fn(x, y, t, *params)
            else:
                fn(x, y)
        elif self.temp:
            run.parallel(
                x.shape[0],
                lambda lo, hi, _: fn(x[lo:hi], y[lo:hi], t[lo:hi], *params),
                x.size * ELEMENT_FLOPS,
            )
        else:
            run.parallel(
                x.shape[0], lambda lo, hi, _: fn(x[lo:hi], y[lo:hi]), x.size * ELEMENT_FLOPS
            )
        if buf is not None:
            run.pool.give(buf)


@dataclass
class BinaryStep(Step):
    """Add / Sub / Mul / Div of same-dtype floats; in place in the first input when it dies here
    and already has the output's shape."""

    ufunc: Callable = np.add
    inplace: bool = False

    def __call__(self, run: Run) -> None:
        a, b = run.get(self.inputs[0]), run.get(self.inputs[1])
        shape = np.broadcast_shapes(a.shape, b.shape)
        src = self.inputs[0]
        if self.inplace and a.shape == shape and run.writable(src):
            y = run.steal(src, self.outputs[0])
        else:
            y = run.alloc(self.outputs[0], shape, a.dtype)
        self.ufunc(a, b, out=y)


@dataclass
class BatchNormStep(Step):
    """BatchNorm as the per-channel affine y = x * s + t, s = scale / sqrt(var + eps),
    t = B - mean * s (computed in float64 each run, cast to x's dtype), in place when x dies
    here, batch slices on the plan's threads. Inference uses the running statistics; train
    mode the biased batch statistics (corrected two-pass, float32 BLAS sums added in float64),
    and updates the running ones as the plain kernel does: running = momentum * running +
    (1 - momentum) * batch."""

    epsilon: float = 1e-5
    momentum: float = 0.9
    state: dict = field(default_factory=dict)  # output index -> running-stat parameter name
    inplace: bool = False

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        scale, bias, mean, var = (run.get(i).astype(np.float64) for i in self.inputs[1:5])
        dt = x.dtype
        n, c = x.shape[0], x.shape[1]
        x3 = x.reshape(n, c, -1)
        src = self.inputs[0]
        if self.inplace and run.writable(src):
            y = run.steal(src, self.outputs[0])
        else:
            y = run.alloc(self.outputs[0], x.shape, dt)
        y3 = y.reshape(n, c, -1)
        work = x.size * 3 * ELEMENT_FLOPS
        if run.training:
            # Batch statistics by the corrected two-pass algorithm (see NormStep), per channel
            # over the images and positions: float32 BLAS sums per image and channel, added up
            # in float64 over the images; D = x - mean is written into y and becomes y.
            count = x3.shape[0] * x3.shape[2]
            ones = np.ones(x3.shape[2], dt)
            sums: dict[int, np.ndarray] = {}

            def first(lo: int, hi: int, _) -> None:
                sums[lo] = np.matmul(x3[lo:hi], ones).sum(axis=0, dtype=np.float64)

            run.parallel(n, first, work)
            mu = (sum(sums.values()) / count).astype(dt)
            res: dict[int, tuple] = {}

            def second(lo: int, hi: int, _) -> None:
                d = y3[lo:hi]
                np.subtract(x3[lo:hi], mu[None, :, None], out=d)
                sq = np.matmul(d[:, :, None, :], d[:, :, :, None]).reshape(hi - lo, c)
                res[lo] = (
                    np.matmul(d, ones).sum(axis=0, dtype=np.float64),
                    sq.sum(axis=0, dtype=np.float64),
                )

            run.parallel(n, second, work)
            r = sum(v[0] for v in res.values()) / count  # the mean of D
            batch_var = np.maximum(sum(v[1] for v in res.values()) / count - r * r, 0.0)
            batch_mean = mu.astype(np.float64) + r
            new = {
                1: self.momentum * mean + (1.0 - self.momentum) * batch_mean,
                2: self.momentum * var + (1.0 - self.momentum) * batch_var,
            }
            for k, pname in self.state.items():
                run.params[pname] = new[k].astype(run.params[pname].dtype)
            for k, slot in enumerate(self.outputs[1:], start=1):
                if slot >= 0:
                    run.env[slot] = new[k].astype(run.get(self.inputs[k + 2]).dtype)
            s = scale / np.sqrt(batch_var + self.epsilon)
            t = bias - r * s  # y = (D - r) * s + B
            src3 = y3
        else:
            s = scale / np.sqrt(var + self.epsilon)
            t = bias - mean * s
            src3 = x3
        s32 = s.astype(dt)[None, :, None]
        t32 = t.astype(dt)[None, :, None]

        def affine(lo: int, hi: int, _) -> None:
            out = y3[lo:hi]
            np.multiply(src3[lo:hi], s32, out=out)
            out += t32

        run.parallel(n, affine, work)
        if not run.training:
            for k, slot in enumerate(self.outputs[1:], start=3):
                if slot >= 0:  # optional running-stat outputs: unchanged at inference
                    run.env[slot] = run.get(self.inputs[k])


@dataclass
class NormStep(Step):
    """GroupNormalization / InstanceNormalization / LayerNormalization (Y only) in float32
    without float64 copies, x viewed as (rows, groups, elements), by the corrected two-pass
    algorithm: the mean m as a BLAS sum (x @ ones / n), D = x - m written into the output
    buffer, then the residual r = sum(D) / n (what m's float32 rounding left over) and the
    biased variance sum(D * D) / n - r**2 (BLAS dot products); Y = D * a + (B - r * a) with
    a = scale / sqrt(var + eps) per row and channel, in place. The rows are split over the
    plan's threads."""

    kind: str = "group"  # "group" (per-channel affine), "layer" (affine broadcast from `axis`)
    groups: int = 0  # group: number of groups (0: one per channel, instance norm)
    axis: int = 1  # layer: first normalized axis
    epsilon: float = 1e-5

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        scale = run.get(self.inputs[1]) if len(self.inputs) > 1 else None
        bias = run.get(self.inputs[2]) if len(self.inputs) > 2 else None
        dt = x.dtype
        if self.kind == "layer":
            axis = self.axis % x.ndim
            rows, g = math.prod(x.shape[:axis]), 1
        else:
            rows, g = x.shape[0], self.groups or x.shape[1]
        xg = x.reshape(rows, g, -1)
        n = xg.shape[2]
        y = run.alloc(self.outputs[0], x.shape, dt)
        yg = y.reshape(rows, g, -1)
        ones = np.ones(n, dt)
        eps = self.epsilon
        if self.kind == "layer":
            sc = None if scale is None else scale.astype(dt, copy=False)
            bi = None if bias is None else bias.astype(dt, copy=False)
        else:
            c = x.shape[1]
            sc = np.ones(c) if scale is None else scale.astype(np.float64)
            bi = np.zeros(c) if bias is None else bias.astype(np.float64)
            tail = (1,) * (x.ndim - 2)

        def part(lo: int, hi: int, _) -> None:
            xs, ys = xg[lo:hi], yg[lo:hi]
            m = np.matmul(xs, ones) / dt.type(n)  # (rows, g)
            np.subtract(xs, m[:, :, None], out=ys)
            r = np.matmul(ys, ones).astype(np.float64) / n
            sq = np.matmul(ys[:, :, None, :], ys[:, :, :, None]).reshape(hi - lo, g)
            var = np.maximum(sq.astype(np.float64) / n - r * r, 0.0)
            inv = 1.0 / np.sqrt(var + eps)  # (rows, g), float64
            if self.kind == "layer":
                # Per row: D * inv - r * inv, then the element-wise affine of the normalized axes
                ys *= inv.astype(dt)[:, :, None]
                ys -= (r * inv).astype(dt)[:, :, None]
                yv = y.reshape(rows, *x.shape[axis:])[lo:hi]
                if sc is not None:
                    yv *= sc
                if bi is not None:
                    yv += bi
                return
            # Per image and channel: a = scale * inv of the channel's group, b = B - r * a.
            per = c // g
            a = sc[None, :] * np.repeat(inv, per, axis=1)  # (rows, C)
            b = bi[None, :] - np.repeat(r, per, axis=1) * a
            yc = y[lo:hi]
            yc *= a.astype(dt).reshape(hi - lo, c, *tail)
            yc += b.astype(dt).reshape(hi - lo, c, *tail)

        run.parallel(rows, part, x.size * 6 * ELEMENT_FLOPS)


@dataclass
class SoftmaxStep(Step):
    """Softmax along one axis into a pooled buffer: y = exp(x - max) in place, then y /= sum
    (the plain kernel's formula, float32 like it; the reductions as ufunc.reduce without
    np.max / np.sum's Python wrappers, a classifier's output being a few dozen numbers)."""

    axis: int = -1

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        axis = self.axis % x.ndim
        y = run.alloc(self.outputs[0], x.shape, x.dtype)
        np.subtract(x, np.maximum.reduce(x, axis=axis, keepdims=True), out=y)
        np.exp(y, out=y)
        y /= np.add.reduce(y, axis=axis, keepdims=True)


@dataclass
class GlobalAveragePoolStep(Step):
    """The mean over every spatial axis, (N, C, 1, ..., 1), into a pooled buffer: each
    (image, channel) row summed in x's dtype by one matrix-vector product with a ones vector
    (BLAS's sgemv, single-threaded in a run: 0.2-0.3x the time of np.add.reduce over the rows,
    whose pairwise sum ran one NumPy inner loop per row of 4-64 values; the same float32
    error against the float64 mean), then divided by the row length."""

    _ones: dict = field(default_factory=dict)

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        n, c = x.shape[:2]
        y = run.alloc(self.outputs[0], (n, c) + (1,) * (x.ndim - 2), x.dtype)
        rows = x.reshape(n * c, -1)
        length = rows.shape[1]
        ones = self._ones.get((length, x.dtype))
        if ones is None:
            ones = self._ones[length, x.dtype] = np.ones(length, x.dtype)
        y1 = y.reshape(n * c)
        np.matmul(rows, ones, out=y1)
        y1 /= x.dtype.type(length)
