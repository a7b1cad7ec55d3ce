"""The run state and the steps that need nothing of an op family: the plain kernel, views,
and Concat. Ownership: a value either lives in a buffer of the plan's `Pool` (it can be reused
once every value viewing it is dead, or overwritten in place by the node that reads it last), or
it is someone else's array (a feed, a parameter, a plain kernel's result that may be a view):
those are never written to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from graphnet.runtime.fast.memory import Pool, Scratch
from graphnet.runtime.fast.threads import ELEMENT_FLOPS, SPLIT_MIN_FLOPS

__all__ = [
    "BIND_CALLS",
    "Run",
    "Step",
    "KernelStep",
    "AliasStep",
    "ConcatStep",
    "TakeLog",
    "may_record",
    "no_record",
    "retaken",
    "taped",
    "unbind",
]

BIND_CALLS = True
"""A step on one thread (a batch-1 conv, see `conv.BIND_ALGORITHMS`, Winograd included; a merged
pointwise conv, a Gemm, a max pool; a train-mode BatchNorm, its groups and the conv + BN step;
NormStep's batch-1 group norm under a fused pool and one-row layer norm) records its NumPy
calls, bound to their arrays, in a replayed run, and the next runs with the same arrays replay
them (ConvStep's `_replay`): no per-call Python of the algorithm (views, branches, chunk sizes,
epilogue). False: every run computes afresh (the oracle of the tests). Read when a step
records: a step that bound its calls before the switch went off keeps replaying them (the
tests give the unbound runs a session of their own)."""


class TakeLog:
    """A thread's `Scratch` whose takes are logged (slot, size, dtype, the array returned): a
    step recording its NumPy calls for a replay (see ConvStep) takes them again there and
    replays only when it gets the same arrays (`retaken`)."""

    __slots__ = ("scratch", "takes")

    def __init__(self, scratch: Scratch) -> None:
        self.scratch = scratch
        self.takes: list[tuple[int, int, Any, np.ndarray]] = []

    def take(self, slot: int, size: int, dtype: Any) -> np.ndarray:
        arr = self.scratch.take(slot, size, dtype)
        self.takes.append((slot, size, dtype, arr))
        return arr

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scratch, name)

    def places(self) -> tuple | None:
        """What a replay of the logged takes needs: () for none, the scratch's `region()`
        when they were all placed in a pool's arena, else None (not replayable)."""
        if not self.takes:
            return ()
        return self.scratch.region()


RECORD_BACKOFF_MAX = 64
"""A step whose recorded calls were never replayed (an input that is a new array every run: a
batch-last view made anew, a feed the caller allocates each time) records again after 1, 2, 4,
... up to this many runs with the same input shape: the recording's cost (~0.3 us a call) is
paid that rarely."""


def may_record(step: Any, key: tuple) -> bool:
    """Whether `step` (with `_bound`, `_replayed`, `_no_record`) records its calls in a run
    with `key` (its input's shape, the mode): not while it backs off (`RECORD_BACKOFF_MAX`,
    `no_record`)."""
    if step._bound is not None and not step._replayed:  # its last recording never replayed
        no_record(step, key)
        return False
    skip = step._no_record
    if skip and skip[0] == key and skip[1] > 0:
        step._no_record = (key, skip[1] - 1, skip[2])
        return False
    return True


def no_record(step: Any, key: tuple, runs: int = 0) -> None:
    """`step` records no calls in the next `runs` runs with `key` (default: twice as many as
    the last time, at most RECORD_BACKOFF_MAX)."""
    last = step._no_record
    if not runs:
        runs = min(2 * last[2], RECORD_BACKOFF_MAX) if last and last[0] == key else 1
    step._bound, step._no_record = None, (key, runs, runs)


def unbind(step: Any, key: tuple) -> None:
    """`step`'s bound calls did not fit this run (another output or workspace): dropped; when
    they never replayed (an output that is a new array every run: a Concat slice of a graph
    output), the step backs off from recording as `may_record` does (`no_record`)."""
    if step._replayed:
        step._bound = None
    else:
        no_record(step, key)


def retaken(scratch: Scratch, places: tuple) -> bool:
    """Whether the step's takes, logged while recording its calls (`TakeLog.places`), get the
    same memory now: none, or the same region of the same arena (a replayed run binds each
    step's workspaces to their recorded places; a take's place depends on the takes before it
    in the step alone, see `Scratch.take`). The replay then uses the logged arrays."""
    return not places or scratch.in_region(places)


def taped(run: Run, step: Any, calls: tuple, out: dict | None = None) -> None:
    """`step` ran as `calls` alone in this run (its bound calls, replayed; nothing else it did
    matters to a rerun with the same arrays: no value computed by Python in between, no take
    from the pool): noted for the plan's whole-run replay (`Run.tape`, see compile.py's
    `_Tape`). `calls` are callables of no arguments (a guard among them returns False when it
    says no); `out`: graph output slot -> the step's own array the calls write it into (the
    run hands the caller a copy). A step calls this last, after its replay; a step fusing
    another (a Concat's pool) calls it after the fused step did.
    The calls may name only arrays every run with the same feeds, parameters and arena gives
    the step again: the arena's views (a replayed layout's), the plan's view of a feed, the
    parameters, arrays of the step's own; never a graph output or another array made anew
    each run (a step replaying calls it bound in an earlier run, to the same input objects,
    has none: such an array is never the same object twice)."""
    tape = run.tape
    if tape is not None:
        tape.append((step, calls, out))


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
        "views",
        "tape",
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
        views: dict | None = None,
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
        # value slot -> (the Concat's buffer, the slot's slice of it) of an earlier run (the
        # plan's, kept between runs): a replayed run's buffer is the same array, and so is the
        # slice (a replayed step finds the output it bound its calls to; see ConvStep)
        self.views = {} if views is None else views
        # (step, calls, outputs) per step that replayed its bound calls in this run, while the
        # plan records a whole-run replay (see `taped`); None: not recording
        self.tape: list | None = None

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
        hit = self.views.get(slot)
        if hit is not None and hit[0] is full:
            view = hit[1]
        else:
            view = full[:, c0:c1]
            self.views[slot] = (full, view)
        if view.shape != tuple(shape) or full.dtype != dtype:
            return None
        self.env[slot] = view
        buf = self.owner[target]
        if buf is not None:  # the slice holds the buffer like a view (see `alias`)
            self.owner[slot] = buf
            self.refs[id(buf)] += 1
        self.placed.add(slot)
        return view

    def adopt(self, slot: int, arr: np.ndarray, inputs: list, refs: Sequence = ()) -> None:
        """Store a plain kernel's result. A fresh array (owns its data, is none of the inputs)
        may be overwritten in place by the node that reads it last; it is dropped, not pooled,
        when it dies (the kernel allocates it anew every run: pooling it would grow the pool by
        one array per run). A view of an input held in a buffer (`refs`: the inputs' slots; a
        Transpose of a pooled value, a Reshape the plan could not make a view step) is copied
        first: once that input dies its buffer is reused (the arena's next take there, from
        the second run on) or written in place by its last reader, while the view lives on."""
        if not isinstance(arr, np.ndarray):
            self.env[slot] = arr
            return
        fresh = arr.flags.owndata and not any(arr is a for a in inputs)
        if not fresh and any(
            r.__class__ is int and self.owner[r] is not None and np.may_share_memory(arr, a)
            for r, a in zip(refs, inputs, strict=False)
        ):
            arr, fresh = arr.copy(), True
        self.env[slot] = arr
        if fresh and slot not in self.outputs and arr.flags.c_contiguous:
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
        if ref.__class__ is int:  # the common case first (a batch-1 run calls this ~4x a step)
            return self.env[ref]  # type: ignore[index]
        if ref is None:
            return None
        if isinstance(ref, str):
            return self.params[ref]
        return self.env[ref]  # an int subclass


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
                run.adopt(slot, arr, args, self.inputs)
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
    # (the inputs of the last run, its view, the values of its other inputs; x in the arena):
    # the same input objects with the same shape / axes values give the same view object
    # again, so the steps reading it can replay calls bound to it (`taped`); dropped with the
    # arena (CompiledPlan.unbind)
    _bound: tuple | None = field(default=None, repr=False, compare=False)

    def __call__(self, run: Run) -> None:
        src = self.inputs[0]
        args = [run.get(i) for i in self.inputs]
        x = args[0]
        last = self._bound
        if (
            last is not None
            and len(last[0]) == len(args)
            and all(a is b for a, b in zip(last[0], args, strict=True))
            and _values(args) == last[2]  # (a shape fed, changed in place: a new view)
        ):
            y = last[1]
            again = True
        else:
            y = self.view(*args)
            again, self._bound = False, None
            if (
                BIND_CALLS
                and run.pool.replaying
                and src.__class__ is int
                and run.owner[src] is not None
            ):
                # (x in the arena: kept between runs anyway)
                self._bound = (tuple(args), y, _values(args))
        if isinstance(src, int):
            run.alias(self.outputs[0], y, src)
        else:
            run.env[self.outputs[0]] = y
        extras = False
        for extra in self.outputs[1:]:  # Dropout's mask: all True at inference
            if extra >= 0:
                run.alloc(extra, x.shape, np.dtype(bool)).fill(True)
                extras = True
        if again and not extras and self.outputs[0] not in run.outputs:
            # (a view: nothing to compute; the shape / axes inputs' values checked again)
            taped(run, self, (partial(_same_values, args, last[2]),) if last[2] else ())


def _values(args: list) -> tuple:
    """The values of an alias op's inputs past its first (a Reshape's shape, Squeeze's axes):
    they decide the view's geometry, and a fed one can change in place."""
    return tuple(a.tolist() if isinstance(a, np.ndarray) else a for a in args[1:])


def _same_values(args: list, values: tuple) -> bool:
    """A whole-run replay's guard for an alias step's view (see `taped`): False when a shape
    or axes input's values changed since it was made."""
    return _values(args) == values


@dataclass
class ConcatStep(Step):
    """Concat written straight into a pooled buffer (np.concatenate(out=)), batch slices on
    the plan's threads when it is not along the batch axis. When `placed` (see
    `CompiledPlan._place_concats`), its inputs were written into their channel slices of its
    buffer by the convolutions that computed them: nothing is left to copy."""

    axis: int = 1
    placed: bool = False
    pool: Any = None
    """The MaxPool step reading the concatenation, when it is fused here (see
    `CompiledPlan._pool_concats`; outputs are then [concatenation, pooled]): each input is
    pooled into its channel slice of the pooled output (`MaxPoolStep.pool_channels`) and the
    concatenation is never made, unless its inputs were placed in it (batch 1: the pool then
    runs on it)."""
    _bound: tuple | None = field(default=None, repr=False, compare=False)
    """(inputs, output, the np.concatenate call bound to them) of the last inline run in a
    replayed layout: a run with the same arrays makes the call again (see `taped`)."""

    def __call__(self, run: Run) -> None:
        if self.placed and all(i in run.placed for i in self.inputs):
            if self.pool is None:
                taped(run, self, ())  # (nothing to do)
            else:
                self.pool(run)  # on the concatenation its inputs were written into
                tape = run.tape
                if tape and tape[-1][0] is self.pool:  # (its calls are the step's)
                    taped(run, self, ())
            return  # every input already sits in its slice of env[self.outputs[0]]
        xs = [run.get(i) for i in self.inputs]
        if self.pool is not None and self._pool_inputs(run, xs):
            return
        axis = self.axis % xs[0].ndim
        shape = list(xs[0].shape)
        shape[axis] = sum(x.shape[axis] for x in xs)
        y = run.env[self.outputs[0]]  # allocated already when some input was placed in it
        if y is None or y.shape != tuple(shape):
            y = run.alloc(self.outputs[0], tuple(shape), xs[0].dtype)
        work = y.size * ELEMENT_FLOPS
        again = False
        if axis == 0 or y.shape[0] < 2 or work < SPLIT_MIN_FLOPS:
            bound = self._bound
            if (
                bound is not None
                and bound[1] is y
                and len(bound[0]) == len(xs)
                and all(a is b for a, b in zip(bound[0], xs, strict=True))
            ):  # (the arrays of the last run: its call again, see `taped`)
                bound[2]()
                again = True
            else:
                call = partial(np.concatenate, tuple(xs), axis=axis, out=y)
                call()
                self._bound = None
                if BIND_CALLS and run.pool.replaying and self.outputs[0] not in run.outputs:
                    self._bound = (tuple(xs), y, call)
        else:  # batch slices on the plan's threads (a copy releases the GIL)
            run.parallel(
                y.shape[0],
                lambda lo, hi, _: np.concatenate([x[lo:hi] for x in xs], axis=axis, out=y[lo:hi]),
                work,
            )
        if again:  # (with a pool: the pool's calls next, the step whole only when it taped)
            taped(run, self if self.pool is None else None, (self._bound[2],))  # type: ignore[index]
        if self.pool is not None:
            self.pool(run)
            tape = run.tape
            if again and tape and tape[-1][0] is self.pool:
                taped(run, self, ())

    def _pool_inputs(self, run: Run, xs: list) -> bool:
        """The fused pool of the inputs into its output (allocated here), or False when the
        concatenation is needed (a pool that does not tile them, a partly placed batch)."""
        if run.env[self.outputs[0]] is not None or any(x.ndim != 4 for x in xs):
            return False
        pool = self.pool
        shape = (xs[0].shape[0], sum(x.shape[1] for x in xs), *xs[0].shape[2:])
        outs = pool.pooled_sizes(shape[2:])
        if outs is None:
            return False
        y = run.alloc(self.outputs[1], (*shape[:2], *outs), xs[0].dtype)
        pool.pool_channels(run, xs, y)
        return True
