"""The steps of a compiled plan. Each step reads its inputs from the run's value table, writes
its outputs there, and says how (in `why`, for `Session.describe()`).

Ownership: a value either lives in a buffer of the plan's `Pool` (it can be reused once every
value viewing it is dead, or overwritten in place by the node that reads it last), or it is
someone else's array (a feed, a parameter, a plain kernel's result that may be a view): those
are never written to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphnet.runtime.fast import conv as _conv
from graphnet.runtime.fast.conv import (
    ConvSpec,
    Epilogue,
    conv_chunked,
    prepare_weight,
)
from graphnet.runtime.fast.memory import Pool, Scratch
from graphnet.runtime.fast.threads import ELEMENT_FLOPS, ROW_SPLIT_MIN_FLOPS, SPLIT_MIN_FLOPS

__all__ = [
    "Run",
    "Step",
    "KernelStep",
    "ConvStep",
    "GemmStep",
    "UnaryStep",
    "BinaryStep",
    "AliasStep",
    "BatchNormStep",
    "MaxPoolStep",
    "ConcatStep",
    "NormStep",
    "SoftmaxStep",
    "GlobalAveragePoolStep",
]


class Run:
    """The state of one run: values by slot, their buffers, the pool and scratch, the mode."""

    __slots__ = (
        "env",
        "owner",
        "refs",
        "foreign",
        "pool",
        "scratch",
        "params",
        "training",
        "rng",
        "outputs",
        "parallel",
        "placements",
        "placed",
    )

    def __init__(
        self,
        nslots: int,
        pool: Pool,
        scratch: list[Scratch],
        params: dict,
        training: bool,
        rng: np.random.Generator,
        outputs: frozenset,
        parallel: Callable,
        placements: dict | None = None,
    ) -> None:
        self.env: list[Any] = [None] * nslots
        self.owner: list[np.ndarray | None] = [None] * nslots
        self.refs: dict[int, int] = {}
        self.foreign: set[int] = set()  # adopted buffers: writable, but never pooled
        self.pool, self.scratch, self.params = pool, scratch, params
        self.training, self.rng, self.outputs = training, rng, outputs
        self.parallel = parallel
        # value slot -> (concat slot, first channel, end channel, concat's channels): the value
        # is written straight into its channel slice of a Concat's buffer (see ConcatStep)
        self.placements = placements or {}
        self.placed: set[int] = set()

    def alloc(self, slot: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A buffer for value `slot`: fresh for a graph output (the caller keeps it), a channel
        slice of its Concat's buffer when it is placed there, else from the pool."""
        if self.placements and slot in self.placements:
            view = self._place(slot, shape, np.dtype(dtype))
            if view is not None:
                return view
        if slot in self.outputs:
            arr = np.empty(shape, dtype)
        else:
            arr, buf = self.pool.take(shape, np.dtype(dtype))
            self.owner[slot] = buf
            self.refs[id(buf)] = 1
        self.env[slot] = arr
        return arr

    def _place(self, slot: int, shape: tuple, dtype: np.dtype) -> np.ndarray | None:
        """Value `slot` as its channel slice of the Concat's buffer (allocated by the first of
        its inputs to be computed); None when the shapes do not fit or for more than one image
        (the Concat then copies). One image's slice is contiguous; with more, the slices are
        strided GEMM outputs and the Concat's buffer lives from the first branch on: measured
        on inception_bn@32, no gain and 7% more pooled memory."""
        if shape[0] != 1:
            return None
        target, c0, c1, total = self.placements[slot]
        full = self.env[target]
        if full is None:
            full = self.alloc(target, (shape[0], total, *shape[2:]), dtype)
        view = full[:, c0:c1]
        if view.shape != tuple(shape) or full.dtype != dtype:
            return None
        self.env[slot] = view
        buf = self.owner[target]
        if buf is not None:  # the slice holds the buffer like a view (see `alias`)
            self.owner[slot] = buf
            self.refs[id(buf)] += 1
        self.placed.add(slot)
        return view

    def adopt(self, slot: int, arr: np.ndarray, inputs: list) -> None:
        """Store a plain kernel's result. A fresh array (owns its data, is none of the inputs)
        may be overwritten in place by the node that reads it last; it is dropped, not pooled,
        when it dies (the kernel allocates it anew every run: pooling it would grow the pool by
        one array per run)."""
        self.env[slot] = arr
        if (
            slot not in self.outputs
            and isinstance(arr, np.ndarray)
            and arr.flags.owndata
            and arr.flags.c_contiguous
            and not any(arr is a for a in inputs)
        ):
            buf = arr.reshape(-1)
            self.owner[slot] = buf
            self.refs[id(buf)] = 1
            self.foreign.add(id(buf))

    def alias(self, slot: int, arr: np.ndarray, src: int) -> None:
        """Value `slot` is a view of value `src`: they share a buffer."""
        self.env[slot] = arr
        buf = self.owner[src]
        if buf is not None:
            self.owner[slot] = buf
            self.refs[id(buf)] += 1

    def steal(self, src: int, dst: int) -> np.ndarray:
        """Value `dst` takes over `src`'s buffer (an in-place op on `src`'s last read)."""
        arr = self.env[src]
        self.owner[dst], self.owner[src] = self.owner[src], None
        self.env[src] = None
        self.env[dst] = arr
        return arr

    def writable(self, slot: int) -> bool:
        """Whether value `slot` may be overwritten: it is in a pool buffer nothing else views."""
        buf = self.owner[slot]
        return buf is not None and self.refs[id(buf)] == 1

    def free(self, slot: int) -> None:
        buf = self.owner[slot]
        self.env[slot] = None
        if buf is not None:
            self.owner[slot] = None
            k = id(buf)
            self.refs[k] -= 1
            if self.refs[k] == 0:
                del self.refs[k]
                if k in self.foreign:
                    self.foreign.discard(k)
                else:
                    self.pool.give(buf)

    def get(self, ref: int | str | None) -> Any:
        """An input: a slot number, a parameter name, or None (omitted)."""
        if ref is None:
            return None
        if isinstance(ref, str):
            return self.params[ref]
        return self.env[ref]


@dataclass
class Step:
    """One node (or a node with the element-wise nodes fused into it)."""

    name: str
    op: str
    inputs: list  # slot numbers, parameter names or None
    outputs: list[int]
    algo: str = "kernel"
    why: str = ""
    fused: list[str] = field(default_factory=list)

    def __call__(self, run: Run) -> None:  # pragma: no cover - every step overrides it
        raise NotImplementedError


@dataclass
class KernelStep(Step):
    """The plain kernel of the op (the reference runtime's), with its resolved attributes."""

    fn: Callable = print
    attrs: dict = field(default_factory=dict)
    context: bool = False
    state: dict = field(default_factory=dict)  # kernel output index -> parameter name
    late: Any = None  # the Node, when its attributes are resolved from the arrays at run time
    constant: bool = False  # every input is a parameter or another constant step's output
    _cached: tuple = ((), None, None)

    def __call__(self, run: Run) -> None:
        args = [run.get(i) for i in self.inputs]
        if self.constant:
            # Same input arrays as last run (the cache holds them, so their ids stay theirs):
            # the same result, computed once. A weight generator (ConstantOfShape) is not redone
            # every run; its result is never written in place (it is not adopted).
            key = tuple(
                (id(a), a.ctypes.data) if isinstance(a, np.ndarray) else id(a) for a in args
            )
            if self._cached[0] != key:
                self._cached = (key, args, self._compute(run, args))
            for slot, arr in zip(self.outputs, self._cached[2], strict=False):
                if slot >= 0:
                    run.env[slot] = arr
            return
        outs = self._compute(run, args)
        for slot, arr in zip(self.outputs, outs, strict=False):
            if slot >= 0:
                run.adopt(slot, arr, args)
        if run.training:
            for k, pname in self.state.items():
                run.params[pname] = outs[k].astype(run.params[pname].dtype, copy=False)

    def held(self) -> int:
        return sum(a.nbytes for a in self._cached[2] or () if isinstance(a, np.ndarray))

    def _compute(self, run: Run, args: list) -> list:
        kw = dict(self.attrs)
        if self.late is not None:
            from graphnet import ops

            kw.update(ops.attrs_for_arrays(self.late, args))
        if self.context:
            kw["training"] = run.training
            kw["rng"] = run.rng
        result = self.fn(*args, **kw)
        return list(result) if isinstance(result, (tuple, list)) else [result]


@dataclass
class AliasStep(Step):
    """An op whose output is a view of its input (Reshape, Flatten, Squeeze, Unsqueeze, an
    inference Dropout that is the identity): no copy."""

    view: Callable = print

    def __call__(self, run: Run) -> None:
        src = self.inputs[0]
        x = run.get(src)
        y = self.view(x, *[run.get(i) for i in self.inputs[1:]])
        if isinstance(src, int):
            run.alias(self.outputs[0], y, src)
        else:
            run.env[self.outputs[0]] = y
        for extra in self.outputs[1:]:  # Dropout's mask: all True at inference
            if extra >= 0:
                run.alloc(extra, x.shape, np.dtype(bool)).fill(True)


TRAIN_WINOGRAD_BATCH = 8
"""In train mode a batch smaller than this runs Winograd convs as colstack or im2col (see
ConvStep)."""


@dataclass
class ConvStep(Step):
    """Conv with a fast algorithm (pointwise / winograd / im2col) and a fused epilogue."""

    spec: ConvSpec | None = None
    group: int = 1
    epilogue_bias: int | str | None = None
    residual: int | None = None
    activation: tuple = ()
    const_weight: bool = True
    # algorithm -> (weight array, dtype, prepared weight); input shape -> (output shape, flops,
    # algorithm): per-run Python work done once (a batch-1 run is mostly such overhead).
    _prepared: dict = field(default_factory=dict)
    _shapes: dict = field(default_factory=dict)
    ran: str = ""  # the algorithm of the last run (`algo`, or im2col for too few tiles)

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
        objects in inference (the cache holds them: their ids cannot be reused); prepared
        afresh in train mode (a trainer may update weights in place) and for a weight computed
        by the graph."""
        algo = algo or self.algo
        hit = self._prepared.get(algo)
        if (
            training
            or not self.const_weight
            or hit is None
            or hit[0] is not w
            or hit[1] is not bias
            or hit[2] != dtype
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
        algo = self.algo
        if algo.startswith("winograd"):
            m = 4 if algo.endswith("f4") else 2
            columns = shape[0] * math.prod(-(-o // m) for o in outs)
            if columns < _conv.MIN_WINOGRAD_COLUMNS or (
                training and shape[0] < TRAIN_WINOGRAD_BATCH
            ):
                # Too few tiles for its GEMMs (e.g. batch 1 at 16x16: 16 columns), or train
                # mode, which prepares the weight on every run, on a few images: the transforms
                # cost more than they save; colstack or im2col multiplies the weight as it is.
                algo = _conv.few_tiles_fallback(spec)
        return out_shape, flops, algo

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        w = run.get(self.inputs[1])
        key = (x.shape, run.training)
        geo = self._shapes.get(key)
        if geo is None:
            geo = self._shapes[key] = self._geometry(x.shape, run.training)
        out_shape, flops, algo = geo
        self.ran = algo
        y = run.alloc(self.outputs[0], out_shape, x.dtype)
        b = run.get(self.epilogue_bias)
        epi = Epilogue(
            bias=None if b is None else b.astype(x.dtype, copy=False),
            residual=None if self.residual is None else (lambda: run.env[self.residual]),
            activation=self.activation,
        )
        # A parameter bias rides in the im2col GEMM (prepared once with the weight).
        wp = self.weight(
            w, x.dtype, run.training, algo, b if isinstance(self.epilogue_bias, str) else None
        )
        spec = self.spec
        if x.shape[0] >= run.parallel.workers:  # split the batch
            run.parallel(
                x.shape[0],
                lambda lo, hi, scratch: conv_chunked(algo, spec, x, wp, y, epi, scratch, lo, hi),
                flops,
            )
        elif flops < ROW_SPLIT_MIN_FLOPS:  # too little work to hand any to another thread
            conv_chunked(algo, spec, x, wp, y, epi, run.parallel.scratch[0])
        else:  # too few images: split each GEMM's output rows instead
            conv_chunked(algo, spec, x, wp, y, epi, run.parallel.scratch[0], split=run.parallel)


@dataclass
class GemmStep(Step):
    """Gemm with alpha = beta = 1, no transA, a 1-D or row bias: Y = A @ B' (+ bias) and a fused
    activation, into a pooled buffer."""

    trans_b: bool = False
    activation: tuple = ()

    def __call__(self, run: Run) -> None:
        a = run.get(self.inputs[0])
        w = run.get(self.inputs[1])
        b = w.T if self.trans_b else w
        y = run.alloc(self.outputs[0], (a.shape[0], b.shape[1]), a.dtype)
        bt = b.astype(a.dtype, copy=False)
        flops = 2.0 * y.size * a.shape[1]
        if flops < SPLIT_MIN_FLOPS:  # a classifier at batch 1: one call, no slicing
            np.matmul(a, bt, out=y)
        else:  # split by output columns (a batch of 32 is too few rows to split)
            run.parallel(
                bt.shape[1],
                lambda lo, hi, scratch: np.matmul(a, bt[:, lo:hi], out=y[:, lo:hi]),
                flops,
            )
        if len(self.inputs) > 2 and self.inputs[2] is not None:
            y += run.get(self.inputs[2]).astype(a.dtype, copy=False)
        if self.activation:
            _conv.activate(y, self.activation)


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


POOL_CHUNK_BYTES = 1 << 20
"""A tiling or pairwise MaxPool split over threads works on chunks of at least this many input
bytes, a quarter of it inline, more when its thread's scratch already holds more (a conv's
workspaces): on two threads every NumPy call is a GIL hand-over (256 KiB chunks were slower
than the strided passes there, 1 MiB chunks 0.8-0.9x); inline, small chunks cost little and
hold less scratch."""

TILED_MIN_ELEMENTS = 1 << 13
"""Smaller tiling MaxPools keep the strided passes (fewer Python operations: LeNet's at batch 1
took 1.08x as long the tiled way)."""

TILED_SPLIT_MIN_ELEMENTS = 1 << 19
"""A tiling or pairwise MaxPool splits its batch over the threads from this many input
elements: its few NumPy calls on small slices contend for the GIL (LeNet's 150k-element pools
at batch 32 took 1.9x longer on two threads than on one; 1M elements took 0.55x)."""


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
    _shapes: dict = field(default_factory=dict)

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
    def _pairwise_part(x: np.ndarray, y: np.ndarray, scratch: Scratch, chunk: int) -> None:
        """The 3-wide "same" max along each axis (last first) in two contiguous flat passes and
        no border fix-up: a[k] = max(src[k], src[k+B]) (B: the axis's block size), the last
        row of every plane set to -inf (where the pair read the next plane: the -inf padding
        instead), then y[k] = max(a[k-B], a[k]) (row 0 takes a's -inf row of the plane
        before, and the very first row a itself). The flat pass over the three taps fixed its
        first and last rows afterwards with strided maxima over every plane, which cost as much
        as the flat passes themselves; this takes 0.55-0.8x of its time (16x16 and 8x8, 32-144
        channels, batch 1 and 32). Exact: max is. Over chunks of whole (image, channel)
        volumes, `a` in the thread's scratch (as large as the scratch already is, `chunk` bytes
        at least): no pooled temporary as large as the input."""
        shape = x.shape
        vol = math.prod(shape[2:])
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
                np.maximum(src[: size - block], src[block:], out=af[: size - block])
                af.reshape(-1, m, block)[:, m - 1, :] = -np.inf
                np.maximum(af[: size - block], af[block:], out=yf[block:])
                yf[:block] = af[:block]
                src = yf

    def _tiled(self, sizes: tuple) -> tuple[int, int] | None:
        """(kh, kw) when the pool tiles its last two axes exactly (kernel = stride, no padding,
        no dilation, sizes divisible: LeNet's and VGG's 2x2 / 2) and every earlier spatial axis
        is the identity (video's (1, 2, 2)): then `_tiled_part` computes it; else None."""
        k = len(self.kernel_shape)
        if k < 2 or any(p != 0 for p in self.pads) or any(d != 1 for d in self.dilations):
            return None
        if any(self.kernel_shape[i] != 1 or self.strides[i] != 1 for i in range(k - 2)):
            return None
        kh, kw = self.kernel_shape[-2:]
        if (kh, kw) != self.strides[-2:] or sizes[-2] % kh or sizes[-1] % kw:
            return None
        return kh, kw

    @staticmethod
    def _tiled_part(
        x: np.ndarray, y: np.ndarray, kh: int, kw: int, scratch: Scratch, chunk: int
    ) -> None:
        """A tiling kh x kw pool over chunks of whole (H, W) planes: m = the max of the kh
        row-shifted flat planes, m2 = the max of the kw shifted flat m (both contiguous 1-D
        passes: they also compute the windows between tiles, which are dropped), then one
        strided copy of the tile corners into y: 0.7-0.9x the time of the two passes over
        strided slices (2x2 pools at batch 32, 10x10-32x32, 6-144 channels; video3d's
        (1, 2, 2) 0.7x), whose NumPy inner loops ran over one row (16-32 values) or over every
        second value. Chunks of planes as large as the thread's scratch already
        hold, `POOL_CHUNK_BYTES` at least (no pooled memory)."""
        h, w = x.shape[-2:]
        plane = h * w
        xp = x.reshape(-1, plane)
        yp = y.reshape(-1, (h // kh) * (w // kw))
        n = xp.shape[0]
        room = scratch.room(x.dtype) // 2  # for m and m2
        step = max(1, max(chunk // x.itemsize, room) // plane)
        for p0 in range(0, n, step):  # a loop over chunks of planes sized by the scratch
            p1 = min(n, p0 + step)
            src = xp[p0:p1].reshape(-1)
            rows = src.size - (kh - 1) * w
            m = scratch.take(2, rows, x.dtype)
            if kh > 1:
                np.maximum(src[:rows], src[w : w + rows], out=m)
                for t in range(2, kh):  # a loop over the window's rows
                    np.maximum(m, src[t * w : t * w + rows], out=m)
            else:
                m = src
            cols = rows - (kw - 1)
            # m2 spans whole planes (its tail, past `cols`, is never computed nor read) so the
            # tile corners are a reshape and a slice of it (as_strided costs ~10 us a call)
            m2 = scratch.take(1, src.size, x.dtype)
            if kw > 1:
                np.maximum(m[:cols], m[1 : 1 + cols], out=m2[:cols])
                for t in range(2, kw):  # a loop over the window's columns
                    np.maximum(m2[:cols], m[t : t + cols], out=m2[:cols])
            else:
                m2[:cols] = m[:cols]
            corners = m2.reshape(p1 - p0, h // kh, kh, w // kw, kw)[:, :, 0, :, 0]
            np.copyto(yp[p0:p1].reshape(corners.shape), corners)

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        # the pairwise pass writes -inf rows: floating inputs only (MaxPool also takes ints)
        key = (x.shape[2:], x.dtype.kind == "f")
        geo = self._shapes.get(key)
        if geo is None:
            geo = self._shapes[key] = self._geometry(*key)
        outs, plan, tiled = geo
        if tiled is not None and x.flags.c_contiguous and x.size >= TILED_MIN_ELEMENTS:
            y = run.alloc(self.outputs[0], (*x.shape[:2], *outs), x.dtype)
            kh, kw = tiled
            if x.shape[0] < 2 or x.size < TILED_SPLIT_MIN_ELEMENTS:
                self._tiled_part(x, y, kh, kw, run.scratch[0], POOL_CHUNK_BYTES // 4)
            else:
                run.parallel(
                    x.shape[0],
                    lambda lo, hi, sc: self._tiled_part(
                        x[lo:hi], y[lo:hi], kh, kw, sc, POOL_CHUNK_BYTES
                    ),
                    SPLIT_MIN_FLOPS,
                )
            return
        if plan is None:  # the pairwise "same" pool, on flat views
            x = np.ascontiguousarray(x)
            y = run.alloc(self.outputs[0], x.shape, x.dtype)
            if x.shape[0] < 2 or x.size < TILED_SPLIT_MIN_ELEMENTS:
                self._pairwise_part(x, y, run.scratch[0], POOL_CHUNK_BYTES // 4)
            else:
                run.parallel(
                    x.shape[0],
                    lambda lo, hi, sc: self._pairwise_part(
                        x[lo:hi], y[lo:hi], sc, POOL_CHUNK_BYTES
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


@dataclass
class ConcatStep(Step):
    """Concat written straight into a pooled buffer (np.concatenate(out=)), batch slices on
    the plan's threads when it is not along the batch axis. When `placed` (see
    `CompiledPlan._place_concats`), its inputs were written into their channel slices of its
    buffer by the convolutions that computed them: nothing is left to copy."""

    axis: int = 1
    placed: bool = False

    def __call__(self, run: Run) -> None:
        if self.placed and all(i in run.placed for i in self.inputs):
            return  # every input already sits in its slice of env[self.outputs[0]]
        xs = [run.get(i) for i in self.inputs]
        axis = self.axis % xs[0].ndim
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        y = run.env[self.outputs[0]]  # allocated already when some input was placed in it
        if y is None or y.shape != tuple(shape):
            y = run.alloc(self.outputs[0], tuple(shape), xs[0].dtype)
        work = y.size * ELEMENT_FLOPS
        if axis == 0 or y.shape[0] < 2 or work < SPLIT_MIN_FLOPS:
            np.concatenate(xs, axis=axis, out=y)
        else:  # batch slices on the plan's threads (a copy releases the GIL)
            run.parallel(
                y.shape[0],
                lambda lo, hi, _: np.concatenate([x[lo:hi] for x in xs], axis=axis, out=y[lo:hi]),
                work,
            )


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
