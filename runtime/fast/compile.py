"""Compile a graph into a fast plan: a list of steps over numbered value slots.

At compile time (once per session and mode):
- every node gets a step: a fast one where the op and its inputs allow it (Conv with a constant
  weight: pointwise / Winograd / im2col; Gemm; element-wise ops with `out=`; BatchNorm as an
  affine (batch statistics in train mode); Group/Instance/LayerNorm; MaxPool; Softmax;
  GlobalAveragePool; Concat; views for Reshape / Flatten / (Un)Squeeze / inference Dropout),
  otherwise the plain kernel with its resolved attributes;
- a Conv or Gemm whose only reader is a ReLU / LeakyReLU (or, for a Conv, a residual Add and then
  a ReLU) takes those nodes into its epilogue (`fuse`), an inference im2col or colstack Conv
  also a MaxPool tiling its output (`_tiling_pool`); 1x1 Convs of one input become one
  stacked GEMM (`_merge_pointwise`); a channel Concat of such Convs' outputs has them written
  into its buffer at batch 1 (`_place_concats`); a channel Concat read only by a MaxPool tiling
  it pools each input into its slice of the pool's output instead (`_pool_concats`); a conv with
  a fused pool whose readers all take it batch-last (a conv's batch-last path, a Flatten read by
  Gemms) writes its output so (`_batch_last_handoffs`: LeNet's two convs); a Group / Instance /
  Layer norm takes the activation that alone reads it into its last pass, and a MaxPool that
  alone reads that (`_fuse_norm_activation`, `_fuse_norm_pool`: a monotone activation then
  runs on the pooled values);
- an inference plan runs its steps in the topological order that lowers the peak of live
  activations, when one does (`_schedule`: Inception's pool branches first);
- each value's last reader is known, so its buffer returns to the pool right after it; an
  element-wise op on a value it reads last overwrites it in place (`reuse`), and a conv writes
  its output over the residual it adds there (see `conv.overwrites_residual`); the first run with
  given input shapes records the pool's takes and each step's workspaces, later ones replay
  them in one arena (`memory.Pool`).
`keep_all` compiles with none of these (every intermediate must survive, unfused).
"""

from __future__ import annotations

import inspect
import math
import operator
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import fields
from functools import partial
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.dims import BATCH, evaluate
from graphnet.errors import GraphNetError, KernelError, UnsupportedOpError
from graphnet.ir import Graph, Node, format_shape
from graphnet.runtime.fast import lean as _lean
from graphnet.runtime.fast.conv import (
    TAPS_MAX_CHANNELS,
    ConvSpec,
    choose,
    few_tiles_fallback,
    overwrites_residual,
    phase_pool,
    relu_,
    takes_batch_last,
    taps_workspace,
)
from graphnet.runtime.fast.lean import (
    LEAN_BUFSIZE,
    LeanPlan,
    batch_shapes,
    lean_itemsize,
    lean_plan,
    pool_workspace,
    pooled_algorithm,
    workspace_estimate,
)
from graphnet.runtime.fast.memory import Pool
from graphnet.runtime.fast.steps import (
    AliasStep,
    BatchNormGroupStep,
    BatchNormStep,
    BinaryStep,
    ConcatStep,
    ConvStep,
    GemmStep,
    GlobalAveragePoolStep,
    KernelStep,
    MaxPoolStep,
    MergedPointwiseStep,
    NormStep,
    Run,
    SoftmaxStep,
    Step,
    UnaryStep,
)
from graphnet.runtime.fast.steps.elementwise import elu_expm1, greatest, least
from graphnet.runtime.fast.steps.trainfuse import AffineMaxPoolStep, ConvBatchNormStep
from graphnet.runtime.fast.threads import (
    WORKERS,
    Parallel,
    blas_one_thread,
    blas_restore,
    blas_single_threaded,
)
from graphnet.runtime.kernels import get_kernel

__all__ = ["CompiledPlan", "MEMORY_PLANS", "REPLAY_RUNS", "describe_call", "needs_late_resolve"]

REPLAY_RUNS = True
"""Whole-run replay: after an inference run in which every step replayed its bound calls
(`steps.base.taped`: the same arena, feeds and parameters as when they bound), the next runs
with the same feed arrays (the same objects, shapes and strides), the same parameter objects,
threads and arena make those calls as one flat list: no Run, no pool takes and gives, no
per-step checks. At the first difference (a guard among the calls says no, a call raises) the
run starts over by the normal path, which computes every value afresh from the feeds. False:
every run by the normal path (the tests' oracle); read at each run."""

MEMORY_PLANS = ("default", "lean")
"""`memory=` of a plan: "default" spends memory for speed (prepared weights, 1 MiB
workspaces), "lean" plans under a memory budget (see `fast.lean`)."""

_FLOATS = ("float32", "float64")

SCHEDULE_BATCH = 32
"""The batch size at which `CompiledPlan._schedule` compares orders (every activation of a CNN
scales with it; a value without the batch axis weighs as it is)."""

_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _relu(x, y):
    relu_(y, x)  # (against a block of zeros: np.maximum with the scalar 0 misses NumPy's SIMD)


def _leaky(alpha, x, y, t):
    np.multiply(x, x.dtype.type(alpha), out=t)
    np.maximum(x, t, out=y)  # x if x >= 0 else alpha * x, for 0 <= alpha <= 1


def _prelu(x, y, t, slope):
    # x if x >= 0 else slope * x: with every slope <= 1 that is max(x, slope * x), with every
    # slope >= 1 min(x, slope * x) (two passes); mixed slopes: max(x, 0) + slope * min(x, 0).
    s = slope.astype(x.dtype, copy=False)
    lo, hi = least(s), greatest(s)  # (argmin / argmax: see `least`)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # an inf or NaN slope: x where x >= 0
        np.multiply(x, s, out=t)  # (inf * 0 is NaN in both formulas below)
        negative = np.less(x, 0)
        if y is not x:
            np.copyto(y, x)
        np.copyto(y, t, where=negative)
    elif hi <= 1.0 or lo >= 1.0:
        np.multiply(x, s, out=t)
        (np.maximum if hi <= 1.0 else np.minimum)(x, t, out=y)
    else:
        relu_(t, x, np.minimum)  # min(x, 0): against zeros, see relu_
        t *= s
        relu_(y, x)
        y += t


def _bn_group(members: list, head: BatchNormStep, what: str) -> BatchNormGroupStep:
    """One step for the train-mode BatchNorms `members` (the same epsilon and momentum), named
    and placed as `head`, one of them (`_group_concat_batchnorms`, `_group_batchnorms`)."""
    others = ", ".join(b.name for b in members if b is not head)
    return BatchNormGroupStep(
        name=head.name,
        op="BatchNormalization",
        inputs=[i for b in members for i in b.inputs],
        outputs=[b.outputs[0] for b in members],
        algo="affine",
        why=f"{head.why}; with {others} ({what}): batch 1's per-channel arithmetic once",
        fused=[f for b in members for f in ([b.name] if b is not head else []) + b.fused],
        epsilon=head.epsilon,
        momentum=head.momentum,
        members=members,
    )


def _untemp(fn, x, y, t):
    fn(x, y)  # an activation without a scratch array, called as one with (see NormStep)


def _may_grow(x_shape: tuple, p_shape: tuple) -> bool:
    """Whether a parameter of shape `p_shape` may broadcast an element-wise op's output past
    its input's `x_shape` in some run: unless every parameter dim (aligned from the right) is 1
    or the same int as x's."""
    tail = x_shape[len(x_shape) - len(p_shape) :]
    return len(p_shape) > len(x_shape) or not all(
        p == 1 or (isinstance(p, int) and p == d) for p, d in zip(p_shape, tail, strict=True)
    )


def _scale(k, x, y):
    np.multiply(x, x.dtype.type(k), out=y)


_DISPATCHED = type(np.copyto)
"""NumPy's functions with __array_function__ dispatch (np.copyto, np.take, ...): each call runs
a Python dispatcher first. A whole-run replay calls their `_implementation` (the C function
itself: the same operation, ~0.14 us less a call; its arrays are plain ndarrays, which
dispatch to it anyway): np.copyto on 128 floats 0.31 -> 0.17 us (in-process, interleaved)."""


def _direct(call: Any) -> Any:
    """`call` (a bound call of a whole-run replay) without NumPy's dispatch, when it has one
    (see `_DISPATCHED`)."""
    if isinstance(call, partial) and type(call.func) is _DISPATCHED:
        impl = getattr(call.func, "_implementation", None)
        if impl is not None:
            return partial(impl, *call.args, **call.keywords)
    return call


class _Tape:
    """A whole-run replay (see `REPLAY_RUNS`): the run's calls, where its graph outputs are
    (arrays the calls write; the caller gets copies) and what it is valid for."""

    __slots__ = ("calls", "outputs", "feeds", "params", "values", "arena", "workers")

    def __init__(self, calls: tuple, outputs: tuple, feeds: tuple, params: dict, arena) -> None:
        self.calls, self.outputs, self.feeds = calls, outputs, feeds
        # (the parameter objects, by identity: set_param stores a new one; a train run's
        # running statistics are new arrays)
        self.params, self.values = params, tuple(params.values())
        self.arena, self.workers = arena, WORKERS

    def valid(self, feeds: Mapping[str, np.ndarray], params: dict, arena) -> bool:
        """Whether a run with `feeds` would replay every step's calls as the recorded run
        did: the same feed objects, shapes and strides (weakly held: an array given a new
        shape in place is the same object), parameter objects, threads and arena."""
        if (
            params is not self.params
            or arena is not self.arena
            or WORKERS != self.workers
            or len(feeds) != len(self.feeds)
            or len(params) != len(self.values)
            or not all(map(operator.is_, params.values(), self.values))
        ):
            return False
        for name, ref, shape, strides in self.feeds:  # (a loop over the graph's inputs)
            arr = feeds.get(name)
            if arr is None or ref() is not arr or arr.shape != shape or arr.strides != strides:
                return False
        return True


class CompiledPlan:
    """The steps of one graph for one mode; `run(feeds)` executes them. Runs of one plan are
    serialized (a lock): its buffer pool, arena and thread scratch serve one run at a time, so
    threads sharing a Session wait for each other rather than write into each other's buffers."""

    def __init__(
        self, graph: Graph, *, training: bool, fuse: bool, reuse: bool, memory: str = "default"
    ) -> None:
        self.graph = graph
        self.training = training
        self.fuse, self.reuse = fuse, reuse
        self.memory = memory
        self.budget: LeanPlan | None = None  # the lean budget (memory="lean"): `_lean_plan`
        self.lean: LeanPlan | None = None  # ... when it changes the default plan
        self._b1: dict[str, tuple[int, ...]] = {}  # (lean: each value's shape at batch 1)
        self.parallel = Parallel(WORKERS)
        self.pool = Pool(self.parallel.scratch)  # (places the threads' workspaces too)
        self._lock = threading.Lock()
        self.slots: dict[str, int] = {}
        for name in graph.inputs:
            self._slot(name)
        self.steps: list[Step] = []
        self.frees: list[list[int]] = []
        self.static: set[int] = set()  # slots of constant steps' outputs (computed once)
        self.placements: dict[int, tuple[int, int, int, int]] = {}
        self._placed_views: dict[int, tuple] = {}  # see Run.views
        self._feeds: dict[str, tuple] = {}  # input -> weakly (last array, shape, strides, view)
        self._runs_first: dict[str, str] = {}  # shortcut conv -> the conv it runs before
        self._tape: _Tape | None = None  # the whole-run replay (see REPLAY_RUNS)
        self.replayed_runs = 0  # runs made by the whole-run replay (tests, profiling)
        self._compile()
        self._output_slots = frozenset(self.slots[o] for o in graph.outputs if o in self.slots)

    # ------------------------------------------------------------------ compile
    def _slot(self, name: str) -> int:
        if name not in self.slots:
            self.slots[name] = len(self.slots)
        return self.slots[name]

    def _ref(self, name: str):
        if not name:
            return None
        if name in self.graph.params and name not in self.slots:
            return name
        return self._slot(name)

    def _readers(self) -> dict[str, list[Node]]:
        readers: dict[str, list[Node]] = {}
        for n in self.graph.nodes:
            for i in dict.fromkeys(n.inputs):
                if i:
                    readers.setdefault(i, []).append(n)
        return readers

    def _compile(self) -> None:
        g = self.graph
        readers = self._readers()
        order = {n.name: k for k, n in enumerate(g.nodes)}
        outputs = set(g.outputs)
        fused: set[str] = set()
        if self.memory == "lean":
            self.budget = self._lean_plan(readers, outputs)
            # (the default plan when it fits the budget: no workspace limit then)
            self.lean = self.budget if self.budget.workspace is not None else None
        for n in g.nodes:
            if n.name in fused:
                continue
            if n.op == "Opaque":
                domain = n.attrs.get("domain") or "ai.onnx"
                raise UnsupportedOpError(
                    f"no kernel for op '{n.attrs.get('op_type')}' ({domain}) at node '{n.name}'"
                )
            attrs = ops.attrs_of(n, [g.values.get(i) if i else None for i in n.inputs])
            step = None if self._is_constant(n) else self._fast_step(n, attrs)
            if step is None:
                step = self._kernel_step(n, attrs)
            if self.fuse and isinstance(step, (ConvStep, GemmStep)):
                self._fuse(step, n, readers, order, outputs, fused)
                if isinstance(step, GemmStep):
                    self._fuse_softmax(step, readers, outputs, fused)
            elif self.fuse and isinstance(step, BatchNormStep):
                value = self._fuse_bn_residual(step, n, readers, order, outputs, fused)
                nxt = self._single_reader(value, readers, outputs)
                if nxt is not None and nxt.op == "Relu":  # (train mode: no Conv took the BN)
                    step.relu = True
                    step.fused.append(nxt.name)
                    fused.add(nxt.name)
                    step.outputs[0] = self._slot(nxt.outputs[0])
            elif self.fuse and isinstance(step, NormStep):
                self._fuse_norm_activation(step, n, readers, outputs, fused)
            elif self.fuse and isinstance(step, GlobalAveragePoolStep):
                self._fuse_flatten(step, n, readers, outputs, fused)
            self.steps.append(step)
        for st in self.steps:
            if st.name in self._runs_first:
                st.why += f"; runs before {self._runs_first[st.name]} (its residual there)"
        self._flatten_into_gemm(readers, outputs)
        if self.lean is not None:  # (lean: the pools' chunks within its workspace budget)
            for st in self.steps:
                if isinstance(st, MaxPoolStep):
                    st.workspace = self.lean.workspace
        self._merge_pointwise()
        self._group_batchnorms()
        self._group_concat_batchnorms()
        self._topological()
        self._pool_concats()
        self._place_concats()
        self._defer_bn_affines()
        self._schedule()
        self._liveness()
        self._batch_last_handoffs()
        self._channels_last_handoffs()

    def _channels_last_handoffs(self) -> None:
        """A 2-D Winograd conv whose every reader is another one, reading its output as the
        input or the residual, writes it channels-last (ConvStep.channels_last: (N, H, W, M),
        held as its NCHW view) when it runs Winograd: its output transform lays the tiles out
        channels-last, which then goes into the output as it is (no transposing copy out), and
        the reader's channels-last padded input is a plain copy of it (no transposing copy in).
        A reader that runs another algorithm on a batch (too few tiles) reads the view as any
        strided input. Inference only; not a graph output or a Concat's slice (NCHW there)."""
        if self.training or not self.fuse:
            return
        readers: dict[int, list[Step]] = {}
        for s in self.steps:
            for r in dict.fromkeys(self._reads(s)):
                readers.setdefault(r, []).append(s)
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}

        def winograd(step: Step) -> bool:
            return (
                isinstance(step, ConvStep)
                and step.algo.startswith("winograd")
                and not step.pool
                and not step.batch_last
            )

        def takes(step: Step, slot: int) -> bool:
            return (
                winograd(step)
                and slot not in step.inputs[1:]
                and step.epilogue_bias != slot
                and (step.inputs[0] == slot or step.residual == slot)
            )

        for s in self.steps:
            if not winograd(s):
                continue
            slot = s.outputs[0]
            rs = readers.get(slot, [])
            if slot in keep or slot in self.placements or not rs:
                continue
            if all(takes(r, slot) for r in rs):
                s.channels_last = True
                s.why += "; its output channels-last for " + ", ".join(r.name for r in rs)

    def _defer_bn_affines(self) -> None:
        """Train mode: a MaxPool whose input a BatchNorm step writes (its ReLU fused or not; no
        residual, no statistics outputs), read by nothing else (not a graph output, not a
        Concat's slice), becomes an `AffineMaxPoolStep`: the BN leaves x - m there and the
        pool applies the affine and the ReLU to its max when every scale is positive (VGG's
        block ends, Inception's stem)."""
        if not (self.training and self.fuse):
            return
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}
        reads: dict[int, int] = {}
        for st in self.steps:
            for r in self._reads(st):
                reads[r] = reads.get(r, 0) + 1
        producer = {o: st for st in self.steps for o in st.outputs if o >= 0}
        for k, pool in enumerate(self.steps):
            if type(pool) is not MaxPoolStep:
                continue
            slot = pool.inputs[0]
            bn = producer.get(slot)
            if (
                type(bn) is not BatchNormStep
                or bn.residual
                or bn.outputs[0] != slot
                or any(o >= 0 for o in bn.outputs[1:])
                or slot in keep
                or slot in self.placements
                or reads.get(slot) != 1
            ):
                continue
            bn.defer = True
            kept = {f.name: getattr(pool, f.name) for f in fields(pool) if f.init}
            what = "affine and ReLU" if bn.relu else "affine"
            self.steps[k] = AffineMaxPoolStep(**kept, bn=bn)
            self.steps[k].why += f"; {bn.name}'s {what} after the max (see its step)"
            bn.why += f"; its {what} in {pool.name}, after the max, when every scale is > 0"

    def _batch_last_handoffs(self) -> None:
        """A conv under a fused tiling pool whose every reader takes its output batch-last
        writes it so (ConvStep.batch_last: (C, H, W, N), held as its NCHW view): a conv whose
        batch-last path reads it as it lies (conv.`takes_batch_last`: LeNet's second), or a
        Flatten from axis 1 (a view of the batch-last array: (N, C*H*W) with the images
        innermost, the transposed operand of a GEMM) read only by Gemms, or a Gemm that took
        such a Flatten in (`_flatten_into_gemm`: the same view). Any other reader, a
        graph output or a Concat's slice gets NCHW. Train mode too: the forward is the same
        and nobody else reads the conv's output (keep_all and the training step's recording
        forward compile with fuse=False)."""
        if not self.fuse:
            return
        readers: dict[int, list[Step]] = {}
        for s in self.steps:
            for r in dict.fromkeys(self._reads(s)):
                readers.setdefault(r, []).append(s)
        nodes = {n.name: n for n in self.graph.nodes}
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}

        def takes(step: Step, slot: int) -> bool:
            if slot in keep or slot in self.placements:
                return False
            if isinstance(step, ConvStep):
                return (
                    step.inputs[0] == slot
                    and slot not in self._reads(step)[1:]
                    and takes_batch_last(step.algo, step.pool)
                )
            if isinstance(step, GemmStep):  # a Flatten taken in (`_flatten_into_gemm`)
                return step.flatten and step.inputs[0] == slot and slot not in step.inputs[1:]
            node = nodes.get(step.name)
            if isinstance(step, AliasStep) and node is not None and self._flattens_rows(node):
                out = step.outputs[0]
                return (
                    out not in keep
                    and bool(readers.get(out))
                    and all(
                        isinstance(r, GemmStep) and r.inputs[0] == out and out not in r.inputs[1:]
                        for r in readers[out]
                    )
                )
            return False

        for s in self.steps:
            if not (isinstance(s, ConvStep) and takes_batch_last(s.algo, s.pool)):
                continue
            slot = s.outputs[0]
            rs = readers.get(slot, [])
            if rs and all(takes(r, slot) for r in rs):
                s.batch_last = True
                s.why += "; its output batch-last (images innermost) for " + ", ".join(
                    r.name for r in rs
                )

    def _fuse_bn_residual(self, step: BatchNormStep, node: Node, readers, order, outputs, fused):
        """Train mode: the residual Add after a BatchNorm (ResNet's block end: BN -> Add ->
        Relu) in the BN's affine pass, when the Add is the BN's only reader, its other input
        (not the BN's input, not a parameter) is computed before the BN in graph order and
        has the same static shape and dtype: y = x * s + t, then y += residual, as the Add
        would (same float32 operations: the same bits), one step and buffer hand-off less.
        The residual becomes the BN's sixth input. Returns the value the BN now writes."""
        value = node.outputs[0]
        nxt = self._single_reader(value, readers, outputs)
        if (
            not self.training
            or nxt is None
            or nxt.op != "Add"
            or nxt.name in fused
            or len(nxt.inputs) != 2
            or nxt.inputs[0] == nxt.inputs[1]
        ):
            return value
        g = self.graph
        other = nxt.inputs[1] if nxt.inputs[0] == value else nxt.inputs[0]
        ov, yv, av = g.values.get(other), g.values.get(value), g.values.get(nxt.outputs[0])
        if (
            other == node.inputs[0]
            or other in g.params
            or ov is None
            or yv is None
            or av is None
            or ov.shape is None
            or ov.shape != yv.shape
            or av.shape != yv.shape
            or not (ov.dtype == yv.dtype == av.dtype)
            or not all(isinstance(d, int) for d in ov.shape[1:])
            or not (
                other in g.inputs or any(other in m.outputs for m in g.nodes[: order[node.name]])
            )
        ):
            return value
        step.inputs.append(self._ref(other))
        step.residual = True
        step.fused.append(nxt.name)
        fused.add(nxt.name)
        step.outputs[0] = self._slot(nxt.outputs[0])
        step.why += ", + the residual"
        return nxt.outputs[0]

    def _fuse_norm_activation(self, step: NormStep, node: Node, readers, outputs, fused) -> None:
        """The activation after a Group / Instance / Layer normalization (PReLU, ELU,
        LeakyReLU; Relu), when it is the norm's only reader and its parameters are the graph's,
        in the norm's last pass: in place on the norm's output, no step or buffer of its own
        (a step's calls and buffer hand-off are worth a pass over a batch-1 activation)."""
        nxt = self._single_reader(node.outputs[0], readers, outputs)
        if nxt is None or nxt.op not in ("PRelu", "Elu", "LeakyRelu", "Relu"):
            return
        g = self.graph
        act = self._fast_step(
            nxt, ops.attrs_of(nxt, [g.values.get(i) if i else None for i in nxt.inputs])
        )
        yv, av = g.values.get(node.outputs[0]), g.values.get(nxt.outputs[0])
        if (
            not isinstance(act, UnaryStep)
            or not all(isinstance(i, str) for i in act.inputs[1:])  # parameters only
            or yv is None
            or av is None
            or yv.shape is None
            or yv.dtype != av.dtype
            or yv.shape != av.shape
            # a parameter along the batch axis ((N, C, 1, 1) slope) would broadcast the
            # output past the norm's when the run's batch differs: the PReLU step keeps it
            or any(
                g.params[i].ndim == len(yv.shape) and g.params[i].shape[0] != 1
                for i in act.inputs[1:]
            )
            or act.grows  # so would one on a dim known at run time only ((C, H, 1) slope)
        ):
            return
        if nxt.op == "Elu":  # (expm1: faster here than exp - 1, and more accurate)
            step.activation = partial(elu_expm1, float(ops.attrs_of(nxt, [yv])["alpha"]))
        else:
            step.activation = act.ufunc if act.temp else partial(_untemp, act.ufunc)
        step.act_temp = act.temp
        step.act_inputs = len(act.inputs) - 1
        step.inputs.extend(act.inputs[1:])
        step.outputs[0] = act.outputs[0]
        step.fused.append(nxt.name)
        fused.add(nxt.name)
        self._fuse_norm_pool(step, nxt, readers, outputs, fused)

    def _fuse_norm_pool(self, step: NormStep, act: Node, readers, outputs, fused) -> None:
        """A MaxPool (its fast step) that alone reads the norm's fused activation, into the norm
        step (NormStep.pool): a monotone activation then runs on the pooled values only
        (max(f(a), f(b)) = f(max(a, b)) for a non-decreasing f, over any window of at least
        one input, padded or not: a quarter of them under a 2 x 2 pool, norms_acts' GroupNorm +
        PReLU and InstanceNorm + ELU). Not when an activation parameter varies along a
        spatial axis (it would not broadcast against the pooled values), nor where a window
        could see padding only (dilated or ceil_mode pools; pads are narrower than the kernel:
        the max there is -inf, which the activation would turn into f(-inf); NormStep checks
        for an empty spatial axis at run time), nor under the lean
        plan where the pre-pool activation (the step's scratch) does not fit the room beside
        the activations alive at the norm (`_lean_norm_pool`: the separate pool takes its
        chunks within the budget's workspace; norms_acts@1's InstanceNorm takes its pool, its
        GroupNorm not: 1.87 -> 1.80x the default plan's time, peak / floor 1.24 -> 1.26)."""
        nxt = self._single_reader(act.outputs[0], readers, outputs)
        if nxt is None or nxt.op != "MaxPool" or not self._lean_norm_pool(step, act):
            return
        g = self.graph
        vals = [g.values.get(i) if i else None for i in nxt.inputs]
        pool = self._fast_step(nxt, ops.attrs_of(nxt, vals))
        v = g.values.get(act.outputs[0])
        if not isinstance(pool, MaxPoolStep) or v is None or v.shape is None:
            return
        if pool.ceil_mode or any(d != 1 for d in pool.dilations):
            return  # (a window could hold padding only: -inf there, not f(-inf))
        spatial = v.shape[2:]
        alpha = float(act.attrs.get("alpha", 0.0)) if act.op in ("LeakyRelu", "Elu") else 0.0
        params = [g.params[i] for i in step.inputs[len(step.inputs) - step.act_inputs :]]
        if alpha < 0 or any(any(d != 1 for d in p.shape[-len(spatial) :]) for p in params):
            return
        step.pool = pool
        step.sink = "slopes" if act.op == "PRelu" else "always"
        step.why += "; the pool after it fused, the activation on the pooled values"
        step.outputs[0] = pool.outputs[0]
        step.fused.append(nxt.name)
        fused.add(nxt.name)

    def _fuse_flatten(
        self, step: GlobalAveragePoolStep, node: Node, readers, outputs, fused
    ) -> None:
        """A Flatten (axis 1) that is the only reader of a GlobalAveragePool's output: the pool
        writes (N, C) directly (a view step less in every CNN's classifier tail)."""
        nxt = self._single_reader(node.outputs[0], readers, outputs)
        if nxt is None or not self._flattens_rows(nxt):
            return
        step.flat = True
        step.outputs[0] = self._slot(nxt.outputs[0])
        step.fused.append(nxt.name)
        fused.add(nxt.name)

    def _flatten_into_gemm(self, readers, outputs) -> None:
        """A Flatten (axis 1) whose output only a GemmStep reads, as its first input: the Gemm
        takes the Flatten's input and views it as (N, -1) itself (a view step less before a
        classifier: vgg_bn, lenet5)."""
        if not self.fuse:
            return
        nodes = {n.name: n for n in self.graph.nodes}
        gemms = {st.name: st for st in self.steps if isinstance(st, GemmStep)}
        drop = set()
        for st in self.steps:
            node = nodes.get(st.name)
            if not isinstance(st, AliasStep) or node is None or not self._flattens_rows(node):
                continue
            nxt = self._single_reader(node.outputs[0], readers, outputs)
            gemm = gemms.get(nxt.name) if nxt is not None else None
            if gemm is None or gemm.inputs[0] != st.outputs[0] or st.outputs[0] in gemm.inputs[1:]:
                continue
            gemm.inputs[0] = st.inputs[0]
            gemm.flatten = True
            gemm.fused.insert(0, st.name)
            drop.add(id(st))
        self.steps = [st for st in self.steps if id(st) not in drop]

    def _flattens_rows(self, node: Node) -> bool:
        """Whether `node` is a Flatten from axis 1 (negative: counted from the end) of a value
        of known rank: (N, the rest), each image's values one row."""
        if node.op != "Flatten":
            return False
        xv = self.graph.values.get(node.inputs[0])
        if xv is None or xv.shape is None or len(xv.shape) < 2:
            return False
        return int(ops.attrs_of(node, [xv])["axis"]) % len(xv.shape) == 1

    def _fuse_softmax(self, step: GemmStep, readers, outputs, fused) -> None:
        """A Softmax along the last axis that is the only reader of a Gemm's (2-D) output, in
        the Gemm's epilogue, in place on Y: a classifier's tail is one step (at batch 1 a step's
        calls and buffer hand-off are worth more than a softmax of a few numbers)."""
        g = self.graph
        value = next(k for k, v in self.slots.items() if v == step.outputs[0])
        nxt = self._single_reader(value, readers, outputs)
        if nxt is None or nxt.op != "Softmax" or nxt.name in fused:
            return
        yv, sv = g.values.get(value), g.values.get(nxt.outputs[0])
        axis = int(ops.attrs_of(nxt, [yv])["axis"])
        if yv is None or sv is None or yv.dtype != sv.dtype or axis not in (-1, 1):
            return
        step.softmax = True
        step.outputs = [self._slot(nxt.outputs[0])]
        step.fused.append(nxt.name)
        fused.add(nxt.name)

    def _merge_pointwise(self) -> None:
        """1x1 convs of the same input with the same strides (parameter weights, no residual)
        become one `MergedPointwiseStep` at the first one's place: computing a later conv's
        output earlier is sound (its input and weights exist already); its value lives a few
        steps longer."""
        if not self.fuse or self.lean is not None:  # (lean: the stacked weight is a copy)
            return
        groups: dict[tuple, list[ConvStep]] = {}
        for st in self.steps:
            if (
                type(st) is ConvStep
                and st.algo == "pointwise"
                and st.spec is not None
                and st.group == 1
                and st.residual is None
                and st.const_weight
                and isinstance(st.inputs[0], int)
                and isinstance(st.inputs[1], str)
                and (st.epilogue_bias is None or isinstance(st.epilogue_bias, str))
            ):
                spec = st.spec
                key = (st.inputs[0], spec.kernel, spec.strides, spec.c_in)
                groups.setdefault(key, []).append(st)
        for convs in groups.values():
            if len(convs) < 2:
                continue
            first = convs[0]
            spec = first.spec
            assert spec is not None  # (checked above)
            total = sum(c.spec.c_out for c in convs if c.spec is not None)
            others = [c.name for c in convs[1:]]
            merged = MergedPointwiseStep(
                name=first.name,
                op="Conv",
                inputs=[first.inputs[0], *[c.inputs[1] for c in convs]],
                outputs=[c.outputs[0] for c in convs],
                algo="pointwise",
                why=f"1x1 convs of one input as one GEMM (with {', '.join(others)}): "
                "weights stacked, each output's channels copied out",
                fused=[f for c in convs for f in ([c.name] if c is not first else []) + c.fused],
                spec=ConvSpec(
                    kernel=spec.kernel,
                    strides=spec.strides,
                    pads=spec.pads,
                    dilations=spec.dilations,
                    group=1,
                    c_in=spec.c_in,
                    c_out=total,
                ),
                weights=[c.inputs[1] for c in convs],
                biases=[c.epilogue_bias for c in convs],
                activations=[c.activation for c in convs],
                channels=[c.spec.c_out for c in convs if c.spec is not None],
            )
            drop = {id(c) for c in convs[1:]}
            self.steps = [merged if s is first else s for s in self.steps if id(s) not in drop]

    def _group_concat_batchnorms(self) -> None:
        """Train mode: the BatchNorms (no residual, no statistics outputs, the same epsilon and
        momentum) whose outputs only one Concat reads, each once (an Inception block's branch
        ends: bn4, bn7, bn8), become one `BatchNormGroupStep` at the last one's place: batch
        1's per-channel arithmetic and the step's Python once. Nothing reads their outputs
        before the Concat, so each BN may run later; their inputs live until then (not
        under the lean budget, planned on graph order's lifetimes; the default arena held the
        same: inception_bn@32 10.25 MiB). Their scale, bias and running statistics must be
        parameters that no other step reads (as `_group_batchnorms`): a step between a member's
        place and the group's (another BN's running mean as its scale) would otherwise see them
        before or after this run's update where graph order has the other. One divergence is
        left: a train run that raises between the members leaves the earlier members' running
        statistics as they were, where the reference plan had updated them (a failed run leaves
        them partly updated in either plan)."""
        if not (self.training and self.fuse) or self.budget is not None:
            return
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}
        readers: dict[int, list[Step]] = {}
        params: dict[str, int] = {}  # parameter name -> steps reading it
        for st in self.steps:
            for r in set(self._reads(st)):
                readers.setdefault(r, []).append(st)
            for r in set(st.inputs):
                if isinstance(r, str):
                    params[r] = params.get(r, 0) + 1
        for cat in [st for st in self.steps if isinstance(st, ConcatStep)]:
            members = []
            for r in dict.fromkeys(cat.inputs):
                b = next((st for st in self.steps if r in st.outputs), None)
                if (
                    type(b) is BatchNormStep
                    and b.outputs[0] == r
                    and cat.inputs.count(r) == 1
                    and readers.get(r) == [cat]
                    and r not in keep
                    and not b.residual
                    and all(k < 0 for k in b.outputs[1:])
                    and all(isinstance(v, str) and params.get(v, 0) == 1 for v in b.inputs[1:5])
                ):  # (scale, bias and running stats: parameters only it reads, see the doc)
                    members.append(b)
            members = [
                b
                for b in members
                if (b.epsilon, b.momentum) == (members[0].epsilon, members[0].momentum)
            ]
            if len(members) < 2:
                continue
            order = {id(st): k for k, st in enumerate(self.steps)}
            members.sort(key=lambda b: order[id(b)])
            last = members[-1]
            group = _bn_group(members, last, f"the BNs of {cat.name}'s inputs")
            gone = {id(b) for b in members[:-1]}
            self.steps = [group if st is last else st for st in self.steps if id(st) not in gone]

    def _group_batchnorms(self) -> None:
        """Train mode: the BatchNorms reading the outputs of one `MergedPointwiseStep` (each
        output read only by its BN, the BN with no residual and no statistics outputs, all
        with the same epsilon and momentum) become one `BatchNormGroupStep` at the first
        BN's place (the merged conv computed all their inputs before it).

        The group computes every member at that place (the fused `ConvBatchNormStep` at the
        conv's), earlier than the graph puts the later members, which is the same computation
        only when nothing a member reads or writes besides its input and output is shared:
        each member's scale, bias, running mean and variance is a graph parameter (not a
        computed value: it could depend on another member's output) read by no other node
        (no node can see a running statistic before or after its update other than in graph
        order; two BNs tied to one running mean update it one after the other). Then moving
        a member earlier changes nothing another step sees: its output only exists sooner (its
        readers come after its graph place), and a BN draws no random numbers (the Dropout
        masks keep graph order). The members must also run in conv-stacking order in the
        graph: the group then sits at the earliest one's place (a later place would make a
        reader of an earlier member's output move past other steps, e.g. Dropouts), and writes
        the running statistics in graph order (`_running`, member by member: a run failing
        inside the step keeps the statistics of the members written before, as the
        reference plan keeps those of the BNs that ran before the failing node)."""
        if not (self.training and self.fuse):
            return
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}
        readers: dict[int, list[Step]] = {}
        for st in self.steps:
            for r in set(self._reads(st)):
                readers.setdefault(r, []).append(st)
        param_readers = {
            name: len(nodes) for name, nodes in self._readers().items() if name in self.graph.params
        }
        place = {id(st): k for k, st in enumerate(self.steps)}
        drop: dict[int, Step | None] = {}
        for st in self.steps:
            if not isinstance(st, MergedPointwiseStep):
                continue
            members = []
            for o in st.outputs:
                rs = readers.get(o, [])
                b = rs[0] if len(rs) == 1 else None
                if (
                    type(b) is BatchNormStep
                    and b.inputs[0] == o
                    and not b.residual
                    and o not in keep
                    and all(k < 0 for k in b.outputs[1:])
                    and b.inputs.count(o) == 1
                    and len(b.inputs) == 5
                    and all(param_readers.get(p) == 1 for p in b.inputs[1:])  # (str: a param)
                ):
                    members.append(b)
            members = [
                b
                for b in members
                if (b.epsilon, b.momentum) == (members[0].epsilon, members[0].momentum)
            ]
            places = [place[id(b)] for b in members]
            if len(members) < 2 or places != sorted(places):
                continue
            first = members[0]
            group = _bn_group(members, first, "the BNs of one merged 1x1 conv")
            drop.update((id(b), None) for b in members[1:])
            spec = st.spec
            if (
                spec is not None
                and [b.inputs[0] for b in members] == st.outputs
                and not any(st.activations)
                and all(v == 1 for v in spec.strides)
                and not any(spec.pads)
            ):
                drop[id(first)] = None
                drop[id(st)] = ConvBatchNormStep(
                    name=st.name,
                    op="Conv",
                    inputs=[*st.inputs, *[i for b in members for i in b.inputs[1:]]],
                    outputs=[*group.outputs, *st.outputs],
                    algo="pointwise",
                    why=f"{st.why}; train mode, with the BNs of its outputs ({group.name}): "
                    "batch 1 normalizes the stacked GEMM result in place, then copies out",
                    fused=[*st.fused, group.name, *group.fused],
                    conv=st,
                    group=group,
                )
            else:
                drop[id(first)] = group
        if drop:
            self.steps = [drop.get(id(s), s) for s in self.steps if drop.get(id(s), s) is not None]

    def _place_concats(self) -> None:
        """A Concat along the channels whose inputs are each the output of a Conv step (its
        fused epilogue included) or of a BatchNorm step (train mode: not folded; it then
        does not write over its input) read by nothing else: the convolutions write into their
        channel slices of the Concat's buffer (`Run.alloc`), which then copies nothing (an
        Inception block's branches, at batch 1: see `Run._place`). Not under the lean plan:
        the Concat's buffer then lives from its first branch's conv on, beside the block's
        input and the other branches' work (inception_bn@1's peak 1.37 -> 1.29x its floor)."""
        if not self.fuse or self.lean is not None:
            return
        g = self.graph
        names = {slot: name for name, slot in self.slots.items()}
        readers = self._readers()
        producer = {o: s for s in self.steps for o in s.outputs if o >= 0}
        outputs = {self.slots[o] for o in g.outputs if o in self.slots}
        for st in self.steps:
            if not isinstance(st, ConcatStep):
                continue
            out = g.values.get(names[st.outputs[0]])
            ins = st.inputs
            if (
                out is None
                or out.shape is None
                or st.axis % len(out.shape) != 1
                or len(set(ins)) != len(ins)
                or not all(isinstance(i, int) for i in ins)
            ):
                continue
            chans = []
            for i in ins:
                p, v = producer.get(i), g.values.get(names[i])
                if (
                    not isinstance(p, (ConvStep, BatchNormStep, ConvBatchNormStep))  # (train: BN)
                    or (
                        p.outputs[0] != i
                        and not isinstance(
                            p, (MergedPointwiseStep, BatchNormGroupStep, ConvBatchNormStep)
                        )
                    )
                    or i in outputs
                    or i in self.placements
                    or v is None
                    or v.shape is None
                    or not isinstance(v.shape[1], int)
                    or len(readers.get(names[i], [])) != 1
                ):
                    break
                chans.append(v.shape[1])
            else:
                c0, total = 0, sum(chans)
                for i, c in zip(ins, chans, strict=True):
                    self.placements[i] = (st.outputs[0], c0, c0 + c, total)
                    c0 += c
                st.placed = True
                st.why = "batch 1: no copy, its Conv / BN inputs write into their channel slices"

    def _pool_concats(self) -> None:
        """A channel Concat (4-D) whose only reader is a MaxPool tiling it (kernel = strides,
        static sizes divisible by it) takes the pool: each input is pooled into its channel
        slice of the pool's output and the concatenation is not made (inception_bn's second
        block and the 2x2 pool after it; see `ConcatStep.pool`). A Concat placed at batch 1
        (`_place_concats`) still is, there: the pool then runs on it. Both ops compute the same
        in train mode (its forward fuses too; the backward's plan fuses nothing)."""
        if not self.fuse:
            return
        g = self.graph
        names = {slot: name for name, slot in self.slots.items()}
        readers = self._readers()
        outputs = {self.slots[o] for o in g.outputs if o in self.slots}
        pools = {st.inputs[0]: st for st in self.steps if isinstance(st, MaxPoolStep)}
        fused: set[int] = set()
        for st in self.steps:
            if not isinstance(st, ConcatStep) or len(st.outputs) != 1:
                continue
            slot = st.outputs[0]
            out = g.values.get(names[slot])
            pool = pools.get(slot)
            if (
                pool is None
                or slot in outputs
                or len(readers.get(names[slot], [])) != 1
                or len(pool.outputs) != 1
                or out is None
                or out.shape is None
                or len(out.shape) != 4
                or st.axis % 4 != 1
                or not all(isinstance(d, int) for d in out.shape[2:])
                or pool.pooled_sizes(tuple(out.shape[2:])) is None
            ):
                continue
            st.pool = pool
            st.outputs = [slot, pool.outputs[0]]
            st.fused += [pool.name, *pool.fused]
            st.why += f"; {pool.name} fused: each input pooled into its channel slice"
            fused.add(id(pool))
        self.steps = [s for s in self.steps if id(s) not in fused]

    def _reads(self, step: Step) -> list[int]:
        """The value slots a step reads (its inputs, and a conv's epilogue operands)."""
        reads = list(step.inputs)
        if isinstance(step, ConvStep):
            reads += [step.epilogue_bias, step.residual]
        return [r for r in reads if isinstance(r, int)]

    def _schedule(self) -> None:
        """Reorder the steps of an inference plan to lower the peak of live activations: list
        scheduling that runs next, of the steps whose inputs exist, the one that adds the
        fewest bytes (its outputs, less the inputs it reads last; one step of lookahead),
        ties in graph order; kept only when its simulated peak (value sizes at batch
        SCHEDULE_BATCH) is lower than graph order's, or as low with less memory alive over
        the steps. E.g. an Inception block's pool branch (the MaxPool and the 1x1 conv that
        shrinks its output) runs first: the block's input can die with its last other reader,
        before the 3x3 branch's Winograd conv and its workspaces (inception_bn@32's arena
        peaked there with the block input alive). Train mode keeps graph order (the Dropout
        masks are drawn in that order)."""
        if self.training or not self.reuse or not self.fuse:
            return
        names = {slot: name for name, slot in self.slots.items()}
        size: dict[int, int] = {}
        for slot, name in names.items():
            v = self.graph.values.get(name)
            if v is None or v.shape is None:
                return
            dims = [evaluate(d, {BATCH: SCHEDULE_BATCH}) for d in v.shape]
            if any(d is None for d in dims):
                return  # a size unknown at compile time: keep graph order
            try:
                itemsize = np.dtype(v.dtype).itemsize
            except TypeError:
                itemsize = 8
            # (a constant step's result is computed once and held by the step, not pooled)
            size[slot] = 0 if slot in self.static else math.prod(dims) * itemsize
        steps = self.steps
        producer = {o: k for k, st in enumerate(steps) for o in st.outputs if o >= 0}
        reads = [sorted(set(self._reads(st))) for st in steps]
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}
        order = self._greedy_order(steps, reads, producer, size, keep)
        if order is None:
            return
        identity = list(range(len(steps)))
        if order == identity:
            return
        new = self._simulated_peak(steps, order, reads, size, keep)
        old = self._simulated_peak(steps, identity, reads, size, keep)
        if new[0] <= old[0] and new < old:
            self.steps = [steps[k] for k in order]

    def _greedy_order(self, steps, reads, producer, size, keep) -> list[int] | None:
        """The list schedule of `_schedule` (step indices), or None when it could not place
        every step (a step waiting on itself: impossible in a plan compiled from a valid
        graph, then graph order stays)."""
        readers: dict[int, int] = {}
        for rs in reads:
            for r in rs:
                readers[r] = readers.get(r, 0) + 1
        waiting = [sum(1 for r in rs if r in producer) for rs in reads]
        users: dict[int, list[int]] = {}
        for k, rs in enumerate(reads):
            for r in rs:
                if r in producer:
                    users.setdefault(producer[r], []).append(k)
        # A step that adds no bytes (a constant step, whose result the step holds: size 0)
        # runs as soon as it is ready, in graph order: it cannot raise the peak, and left in
        # `ready` it made every pick rescan it (DenseNet-121's ~600 weight generators: 0.8 s)
        free = [all(size[o] == 0 for o in st.outputs if o >= 0) for st in steps]
        ready = [k for k, w in enumerate(waiting) if w == 0 and not free[k]]
        ready_free = deque(k for k, w in enumerate(waiting) if w == 0 and free[k])
        left = dict(readers)
        order: list[int] = []

        def grow(k: int, done: int = -1) -> int:
            """Bytes step k adds (outputs less the inputs it reads last), after `done` ran."""
            g = sum(size[o] for o in steps[k].outputs if o >= 0)
            for r in reads[k]:
                n = left[r] - (1 if done >= 0 and r in reads[done] else 0)
                if r in producer and r not in keep and n == 1:
                    g -= size[r]
            return g

        def key(k: int) -> tuple[int, int]:
            """Bytes step k adds, with one step of lookahead: a step whose follower frees
            memory at once (a pool and the 1x1 conv that shrinks its output) counts with that
            follower; ties go to graph order."""
            after = [
                grow(u, k)
                for u in dict.fromkeys(users.get(k, []))
                if waiting[u] == sum(1 for r in reads[u] if producer.get(r) == k)
            ]
            return grow(k) + min([0, *after]), k

        while ready or ready_free:  # a loop over the steps (quadratic in the ready ones)
            if ready_free:
                best = ready_free.popleft()
            else:
                best = min(ready, key=key)
                ready.remove(best)
            order.append(best)
            for r in reads[best]:
                left[r] -= 1
            for u in dict.fromkeys(users.get(best, [])):
                waiting[u] -= sum(1 for r in reads[u] if producer.get(r) == best)
                if waiting[u] == 0:
                    (ready_free if free[u] else ready).append(u)
        return order if len(order) == len(steps) else None

    @staticmethod
    def _simulated_peak(steps, order, reads, size, keep) -> tuple[int, int]:
        """(The largest total size of the values steps produce alive at once when they run in
        `order`, the sum over the steps of that total): a value lives from its step to its
        last reader, a graph output to the end. The sum breaks ties of the peak: the conv
        workspaces the simulation leaves out may put the arena's peak elsewhere (Inception's
        3x3 branches), where fewer values alive still lower it."""
        last: dict[int, int] = {}
        for t, k in enumerate(order):
            for r in reads[k]:
                last[r] = t
        dies: dict[int, list[int]] = {}
        for slot, t in last.items():
            dies.setdefault(t, []).append(slot)
        live = peak = area = 0
        born: set[int] = set()
        for t, k in enumerate(order):
            for o in steps[k].outputs:
                if o >= 0 and o not in born:
                    born.add(o)
                    live += size[o]
            peak = max(peak, live)
            area += live
            for o in steps[k].outputs:  # read by nothing: dies at once
                if o >= 0 and o not in last and o not in keep:
                    live -= size[o]
            for slot in dies.get(t, []):
                if slot in born and slot not in keep:
                    live -= size[slot]
        return peak, area

    def _single_reader(self, value: str, readers, outputs) -> Node | None:
        r = readers.get(value, [])
        if len(r) != 1 or value in outputs:
            return None
        return r[0]

    def _fuse(self, step, node, readers, order, outputs, fused) -> None:
        """Take the element-wise nodes after a Conv / Gemm into its epilogue."""
        g = self.graph
        value = node.outputs[0]
        nxt = self._single_reader(value, readers, outputs)
        if (
            isinstance(step, ConvStep)
            and nxt is not None
            and nxt.op == "Add"
            and nxt.name not in fused  # (taken by the conv on its other input)
            and len(nxt.inputs) == 2
            and nxt.inputs[0] != nxt.inputs[1]
        ):
            other = nxt.inputs[1] if nxt.inputs[0] == value else nxt.inputs[0]
            ov, yv = g.values.get(other), g.values.get(value)
            produced_before = other in g.inputs or any(
                other in m.outputs for m in g.nodes[: order[node.name]]
            )
            shortcut = None
            if not produced_before and nxt.name not in fused:
                # (the projection shortcut computed after this conv: it runs first instead)
                shortcut = self._shortcut_first(step, node, nxt, other, readers, order)
                produced_before = shortcut is not None
            same = (
                ov is not None
                and yv is not None
                and ov.shape is not None
                and ov.shape == yv.shape
                and ov.dtype == yv.dtype
                and all(isinstance(d, int) for d in ov.shape[1:])
                and g.values[nxt.outputs[0]].shape == yv.shape
            )
            if same and produced_before and other not in g.params:
                if shortcut is not None:  # (noted only when the Add is fused: it moves then)
                    self._runs_first[shortcut] = node.name
                step.residual = self._ref(other)
                step.fused.append(nxt.name)
                fused.add(nxt.name)
                value = nxt.outputs[0]
                nxt = self._single_reader(value, readers, outputs)
        act = self._fused_activation(nxt)
        if act:
            step.activation = act
            step.fused.append(nxt.name)
            fused.add(nxt.name)
            value = nxt.outputs[0]
        if (
            isinstance(step, ConvStep)
            and step.algo in ("im2col", "colstack", "wino3d-f4")
            and step.residual is None
        ):  # (train mode too: the forward is the same, and only keep_all or the training
            # step's recording forward, both compiled with fuse=False, read the conv's output;
            # lenet5 train / inference 1.22 -> 1.04 at batch 1, 1.49 -> 0.98 at 32)
            nxt = self._single_reader(value, readers, outputs)
            if step.algo.startswith("wino3d"):
                pool = self._tile_pool3d(value, nxt)
            else:
                pool = self._tiling_pool(value, nxt)
            if pool and not self._lean_pools(step, node):
                pool = None  # (lean: an image's im2col columns pass the workspace budget)
            if pool:  # (im2col and colstack pool their GEMM's result: see conv._pool_tiles;
                # wino3d its tiles)
                step.pool = pool[0]
                step.fused.append(pool[1].name)
                fused.add(pool[1].name)
                value = pool[1].outputs[0]
                phases = phase_pool(step.spec, step.pool) if step.algo == "im2col" else ""
                if phases and self.lean is not None and node.name not in self.lean.algorithms:
                    phases = ""  # (lean: its weight would be a copy)
                if phases:
                    step.algo = phases
                    step.why = (
                        "a few output channels under a tiling MaxPool: its phases in the GEMM"
                    )
        step.outputs = [self._slot(value)]

    @staticmethod
    def _fused_activation(nxt: Node | None) -> tuple:
        """The activation a conv / Gemm epilogue takes from `nxt` (its output's single reader):
        ("relu",), ("leaky", alpha) for 0 <= alpha <= 1, else ()."""
        if nxt is not None and nxt.op == "Relu":
            return ("relu",)
        if nxt is not None and nxt.op == "LeakyRelu":
            alpha = float(ops.attrs_of(nxt, [])["alpha"])
            if 0.0 <= alpha <= 1.0:
                return ("leaky", alpha)
        return ()

    def _shortcut_first(self, step, node, add, other, readers, order) -> str | None:
        """The name of the conv computing `other` when the residual Add `add` after conv `node`
        (whose algorithm can write over a
        residual that dies there, see `conv.overwrites_residual`) may take as its residual
        `other`, computed later in graph order by a 1x1 Conv (ResNet's projection shortcut,
        which adds a residual only after its GEMM wrote the output) whose inputs exist before
        `node` and whose output only the Add reads: that conv then runs first (`_topological`).
        Inference plans only (train mode keeps graph order). ResNet's downsampling blocks
        then hold the block's input, the first conv's output, the shortcut's (the second conv
        writes over it), not the input beside both convs' outputs and the Winograd workspaces:
        resnet20@32's arena 6.52 -> 5.90 MiB. None otherwise."""
        g = self.graph
        spec, out = step.spec, g.values[node.outputs[0]].shape
        if self.training or spec is None or out is None:
            return None
        batch = evaluate(out[0], {BATCH: SCHEDULE_BATCH})
        if batch is None or not all(isinstance(d, int) for d in out[1:]):
            return None
        if not overwrites_residual(step.algo, spec, (batch, *out[1:])):
            return None
        producer = next((m for m in g.nodes if other in m.outputs), None)
        if (
            producer is None
            or producer.op != "Conv"
            or [r.name for r in readers.get(other, [])] != [add.name]
            or other in g.outputs
        ):
            return None
        w = g.params.get(producer.inputs[1])
        if w is None or any(d != 1 for d in w.shape[2:]):
            return None
        before = {o for m in g.nodes[: order[node.name]] for o in m.outputs}
        if not all(not i or i in g.inputs or i in g.params or i in before for i in producer.inputs):
            return None
        return producer.name

    def _topological(self) -> None:
        """Restore a topological order of the steps after `_shortcut_first` (a step reads a
        value a later step computes): each step runs as early as its inputs allow, else in its
        place (stable)."""
        steps = self.steps
        producer = {o: k for k, st in enumerate(steps) for o in st.outputs if o >= 0}
        reads = [[producer[r] for r in self._reads(st) if r in producer] for st in steps]
        if all(p < k for k, ps in enumerate(reads) for p in ps):
            return
        done: set[int] = set()
        order: list[int] = []
        while len(order) < len(steps):  # a loop over the steps (quadratic: a rare fix)
            k = next((k for k in range(len(steps)) if k not in done and set(reads[k]) <= done), -1)
            if k < 0:  # (impossible: the moved conv reads values computed before its place)
                left = [steps[k].name for k in range(len(steps)) if k not in done]
                raise GraphNetError(f"fast plan: no order runs steps {left} after their inputs")
            done.add(k)
            order.append(k)
        self.steps = [steps[k] for k in order]

    def _tiling_pool(self, value: str, nxt: Node | None) -> tuple | None:
        """((kh, kw), node) when `nxt` is a 2-D MaxPool tiling `value` (a conv's output) exactly:
        kernel = strides, no padding or dilation, static sizes divisible by the kernel."""
        got = self._pool_after(value, nxt, 2)
        if got is None:
            return None
        kernel, sizes = got
        ok = (
            all(isinstance(n, int) and n % k == 0 for n, k in zip(sizes, kernel, strict=True))
            and min(kernel) >= 2  # (a 1-wide axis: the flat passes' shifts need 2)
        )
        return (kernel, nxt) if ok else None

    def _tile_pool3d(self, value: str, nxt: Node | None) -> tuple | None:
        """((kt, kh, kw), node) when `nxt` is a 3-D MaxPool tiling `value` (a wino3d-f4 conv's
        output, see conv.`_winograd3d`) inside its F(4x4) tiles: kernel = strides, no padding
        or dilation, kh and kw dividing 4, static sizes with whole tiles (heights and widths
        multiples of 4) and frames divisible by kt."""
        got = self._pool_after(value, nxt, 3)
        if got is None:
            return None
        kernel, sizes = got
        ok = (
            all(isinstance(n, int) for n in sizes)
            and sizes[0] % kernel[0] == 0
            and all(n % 4 == 0 and 4 % k == 0 for n, k in zip(sizes[1:], kernel[1:], strict=True))
        )
        return (kernel, nxt) if ok else None

    def _pool_after(self, value: str, nxt: Node | None, rank: int) -> tuple | None:
        """(kernel, spatial sizes of `value`) when `nxt` is a MaxPool of `value` (rank spatial
        dims) with one output, kernel = strides, no padding, no dilation; else None."""
        if nxt is None or nxt.op != "MaxPool" or len(nxt.outputs) != 1:
            return None
        yv = self.graph.values.get(value)
        if yv is None or yv.shape is None or len(yv.shape) != rank + 2:
            return None
        a = ops.attrs_of(nxt, [yv])
        kernel = tuple(a["kernel_shape"])
        ok = (
            len(kernel) == rank
            and tuple(a["strides"]) == kernel
            and not any(a["pads"])
            and all(d == 1 for d in a["dilations"])
        )
        return (kernel, yv.shape[2:]) if ok else None

    def _is_constant(self, n: Node) -> bool:
        """Every input is a parameter or a constant step's output, and the op computes the same
        in both modes: computed once, on the first run (a weight generator, shape arithmetic)."""
        if ops.get(n.op).mode_dependent or get_kernel(n.op, n.name).context or not n.inputs:
            return False
        refs = [self._ref(i) for i in n.inputs]
        return all(r is None or isinstance(r, str) or r in self.static for r in refs)

    def _kernel_step(self, n: Node, attrs: dict) -> KernelStep:
        spec = ops.get(n.op)
        kern = get_kernel(n.op, n.name)
        kw = dict(attrs)
        if "num_outputs" in inspect.signature(kern.fn).parameters:
            kw["num_outputs"] = len(n.outputs)
        state = {}
        for out_k, in_k in spec.state.items():
            if in_k < len(n.inputs) and n.inputs[in_k] in self.graph.params:
                state[out_k] = n.inputs[in_k]
        values = [self.graph.values.get(i) if i else None for i in n.inputs]
        constant = self._is_constant(n)
        if constant:
            self.static.update(self._slot(o) for o in n.outputs if o)
        return KernelStep(
            n.name,
            n.op,
            [self._ref(i) for i in n.inputs],
            [self._slot(o) if o else -1 for o in n.outputs],
            algo="kernel",
            fn=kern.fn,
            attrs=kw,
            context=kern.context,
            state=state,
            late=n if needs_late_resolve(spec, values) else None,
            constant=constant,
            why="plain kernel, computed once (constant inputs)" if constant else "plain kernel",
        )

    def _fast_step(self, n: Node, attrs: dict) -> Step | None:
        g = self.graph
        ins = [g.values.get(i) if i else None for i in n.inputs]
        x = ins[0] if ins else None
        if x is None or x.dtype not in _FLOATS or x.shape is None:
            return None
        refs = [self._ref(i) for i in n.inputs]
        outs = [self._slot(o) if o else -1 for o in n.outputs]
        common = dict(name=n.name, op=n.op, inputs=refs, outputs=outs)
        if n.op == "Conv":
            return self._conv_step(n, attrs, common)
        if n.op == "Gemm":
            w = g.params.get(n.inputs[1])
            c = g.params.get(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
            ok = (
                float(attrs["alpha"]) == 1.0
                and (c is None or float(attrs["beta"]) == 1.0)
                and not attrs["transA"]
                and len(x.shape) == 2
                and w is not None
                and w.ndim == 2
                and (len(n.inputs) < 3 or not n.inputs[2] or (c is not None and c.ndim <= 2))
            )
            if not ok:
                return None
            return GemmStep(
                **common,
                algo="gemm",
                why="one matmul, bias added in place",
                trans_b=bool(attrs["transB"]),
            )
        if n.op == "Relu":
            return UnaryStep(
                **common,
                algo="ufunc",
                why="np.maximum against zeros, out=",
                ufunc=_relu,
                inplace=self.reuse,
            )
        if n.op == "LeakyRelu" and 0.0 <= float(attrs["alpha"]) <= 1.0:
            return UnaryStep(
                **common,
                algo="ufunc",
                why="max(x, alpha*x), out=",
                ufunc=partial(_leaky, float(attrs["alpha"])),
                temp=True,
                inplace=self.reuse,
            )
        if n.op == "Elu":
            return UnaryStep(
                **common,
                algo="ufunc",
                why="x if x >= 0 else alpha * expm1(x) (elu_expm1), out=",
                ufunc=partial(elu_expm1, float(attrs["alpha"])),
                inplace=self.reuse,
                temp=True,
            )
        if (
            n.op == "PRelu"
            and ins[1] is not None
            and ins[1].dtype == x.dtype
            and ins[1].shape is not None
            and len(ins[1].shape) <= len(x.shape)
        ):
            return UnaryStep(
                **common,
                algo="ufunc",
                why="max(x, slope*x) (min for slopes >= 1), out=",
                ufunc=_prelu,
                inplace=self.reuse,
                temp=True,
                grows=_may_grow(x.shape, ins[1].shape),
            )
        if n.op in _BINARY and len(ins) == 2 and ins[1] is not None and ins[1].dtype == x.dtype:
            return BinaryStep(
                **common, algo="ufunc", why="ufunc(out=)", ufunc=_BINARY[n.op], inplace=self.reuse
            )
        if n.op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
            fn = partial(get_kernel(n.op).fn, **attrs)
            return AliasStep(**common, algo="view", why="a view, no copy", view=fn)
        if n.op == "Dropout" and not self.training and len(n.inputs) == 1:
            if attrs["scheme"] == "inverted":
                return AliasStep(
                    **common, algo="view", why="inference: the identity", view=lambda a: a
                )
            if len(n.outputs) == 1:
                keep = 1.0 - float(attrs["drop_prob"])
                return UnaryStep(
                    **common,
                    algo="ufunc",
                    why="inference: x * keep",
                    ufunc=partial(_scale, keep),
                    inplace=self.reuse,
                )
        if n.op == "BatchNormalization" and all(r is not None for r in refs[1:5]):
            # Running statistics computed by the graph (not parameters) are not state: the plain
            # kernel does not write them back either.
            state = {
                k: n.inputs[i] for k, i in ((1, 3), (2, 4)) if n.inputs[i] in self.graph.params
            }
            return BatchNormStep(
                **common,
                algo="affine",
                why=(
                    "train: batch statistics (float32 BLAS sums, float64 per-channel totals), then"
                    if self.training
                    else "inference:"
                )
                + " per-channel x*s + t, in place",
                epsilon=float(attrs["epsilon"]),
                momentum=float(attrs["momentum"]),
                state=state,
            )
        if n.op in ("GroupNormalization", "InstanceNormalization") and len(x.shape) >= 3:
            groups = int(attrs["num_groups"]) if n.op == "GroupNormalization" else 0
            return NormStep(
                **common,
                algo="norm",
                why="float32 BLAS statistics, mean's rounding corrected, in the output buffer",
                kind="group",
                groups=groups,
                epsilon=float(attrs["epsilon"]),
            )
        if n.op == "LayerNormalization" and len(n.outputs) == 1:
            return NormStep(
                **common,
                algo="norm",
                why="float32 BLAS statistics, mean's rounding corrected, in the output buffer",
                kind="layer",
                axis=int(attrs["axis"]),
                epsilon=float(attrs["epsilon"]),
            )
        if n.op == "Concat" and all(v is not None and v.dtype == x.dtype for v in ins):
            return ConcatStep(
                **common, algo="concat", why="into a pooled buffer", axis=int(attrs["axis"])
            )
        if n.op == "Softmax" and x.shape is not None:
            return SoftmaxStep(
                **common, algo="ufunc", why="exp(x - max) / sum, out=", axis=int(attrs["axis"])
            )
        if n.op == "GlobalAveragePool" and len(x.shape) >= 3:
            return GlobalAveragePoolStep(
                **common, algo="gemv", why="row sums as a matrix-vector product / size"
            )
        if n.op == "MaxPool" and len(n.outputs) == 1 and min(attrs["pads"], default=0) >= 0:
            return MaxPoolStep(
                **common,
                algo="taps",
                why="max over strided tap slices, out=",
                kernel_shape=tuple(attrs["kernel_shape"]),
                strides=tuple(attrs["strides"]),
                pads=tuple(attrs["pads"]),
                dilations=tuple(attrs["dilations"]),
                ceil_mode=int(attrs["ceil_mode"]),
            )
        return None

    def _conv_step(self, n: Node, attrs: dict, common: dict) -> Step | None:
        g = self.graph
        # The weight's shape must be static; its values may be computed at run time (then it is
        # prepared on every run), unless a constant step computes it once (a ConstantOfShape
        # fill): then it is prepared once, like a parameter.
        wv = g.params.get(n.inputs[1])
        if wv is None and self.slots.get(n.inputs[1]) in self.static:
            wv = g.values[n.inputs[1]]
        w_shape = wv.shape if wv is not None else getattr(g.values.get(n.inputs[1]), "shape", None)
        x = g.values[n.inputs[0]]
        if (
            w_shape is None
            or not all(isinstance(d, int) for d in w_shape)
            or attrs.get("strides") is None
            or len(x.shape) != len(w_shape)
        ):
            return None
        k = len(w_shape) - 2
        spec = _conv_spec(w_shape, attrs)
        out = g.values[n.outputs[0]].shape or (None,) * (k + 2)
        algo, why = choose(spec, out[2:])
        if algo == "reference":
            return None
        if algo.startswith(("winograd", "wino3d")) and x.dtype != "float32":
            # Its transformed weights and transforms are float32 (winograd.weight_transform):
            # a float64 graph would get float32's rounding (6e-7 relative, measured at 64
            # channels) where every other algorithm keeps float64's.
            algo, why = (
                few_tiles_fallback(spec) if algo.startswith("winograd") else "im2col",
                f"{x.dtype}: Winograd's transforms round in float32",
            )
        if algo.startswith(("winograd", "wino3d")) and wv is None:
            # A computed weight would be transformed on every run (for ResNet-50's 3x3 layers at
            # batch 1, more than the convolutions themselves): im2col multiplies it as it is.
            algo, why = (
                "im2col",
                "3x3, but the weight is computed at run time: no Winograd transform",
            )
        bias = self._ref(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else None
        step = ConvStep(
            **common,
            algo=algo,
            why=why,
            spec=spec,
            group=spec.group,
            epilogue_bias=bias,
            const_weight=wv is not None,
        )
        step.inputs = step.inputs[:2]
        if self.lean is not None:
            self._lean_step(step, n)
        return step

    # ------------------------------------------------------------------ the lean plan
    def _lean_plan(self, readers, outputs) -> LeanPlan:
        """The lean budget (`fast.lean`) from the algorithm the default plan would give each
        conv with a parameter weight (phasepool for one under a tiling MaxPool where it
        applies) and its batch-1 shapes (`batch_shapes`: each input's leading dim is 1)."""
        g = self.graph
        self._b1, off = batch_shapes(g, 1)
        choices = {}
        for n in g.nodes:
            w = g.params.get(n.inputs[1]) if n.op == "Conv" and len(n.inputs) > 1 else None
            shapes = self._lean_shapes(n)
            if w is None or shapes is None or len(shapes[0]) != w.ndim:
                continue
            attrs = ops.attrs_of(n, [g.values.get(n.inputs[0]), g.values.get(n.inputs[1])])
            if attrs.get("strides") is None:
                continue
            spec = _conv_spec(w.shape, attrs)
            algo = choose(spec, shapes[1][2:])[0]
            if algo == "im2col":
                # (as `_fuse`: a residual Add after the conv keeps the pool apart)
                nxt = self._single_reader(n.outputs[0], readers, outputs)
                value = n.outputs[0]
                if self._fused_activation(nxt):
                    assert nxt is not None
                    value = nxt.outputs[0]
                    nxt = self._single_reader(value, readers, outputs)
                pool = self._tiling_pool(value, nxt)
                if pool:
                    algo = pooled_algorithm(spec, pool[0])
            choices[n.name] = (spec, algo, *shapes)
        pools = [  # (a MaxPool's workspace in the default plan: see MaxPoolStep.__call__)
            pool_workspace(self._b1[n.inputs[0]], self._itemsize(n.inputs[0]))
            for n in g.nodes
            if n.op == "MaxPool" and n.inputs[0] in self._b1
        ]
        return lean_plan(g, choices, self._b1, off, pools)

    def _itemsize(self, value: str) -> int:
        """Bytes of an element of `value` (its declared dtype; 8 when unknown: from above)."""
        v = self.graph.values.get(value)
        return 8 if v is None else lean_itemsize(v.dtype)

    def _lean_shapes(self, node: Node) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """`node`'s first input's and output's shapes at batch 1 (`batch_shapes`), None when
        either is unknown."""
        x, y = (self._b1.get(v) for v in (node.inputs[0], node.outputs[0]))
        return None if x is None or y is None else (x, y)

    def _lean_step(self, step: ConvStep, node: Node) -> None:
        """A conv under the lean budget: its algorithm where the budget grants its prepared
        weight, else im2col (pointwise stays) on a view of the parameter, the bias in the
        epilogue; im2col's workspace budget."""
        assert self.lean is not None and self.lean.workspace is not None
        step.workspace = self.lean.workspaces.get(node.name, self.lean.workspace)
        budget = f"{self.lean.budget / 2**20:.2f} MiB"
        if node.name in self.lean.algorithms:  # (its prepared weight, bias column and all)
            step.why += f"; its prepared weight within the lean budget of {budget}"
            return
        step.bias_column = False
        shapes = self._lean_shapes(node)
        if node.name in self.lean.blocks and step.const_weight and shapes is not None:
            step.blocks = self.lean.blocks[node.name]  # (where a batch-1 run takes Winograd:
            if not step._geometry(shapes[0], False)[2].startswith("winograd"):  # else as before)
                step.blocks = 0
        if step.blocks:
            step.why += (
                f"; lean: its weight transformed on every run in blocks of output channels "
                f"(within the budget of {budget}; none kept)"
            )
            return
        if step.algo in ("pointwise", "im2col") or not step.const_weight:
            if step.algo == "im2col":
                step.why += f"; lean: {step.workspace // 1024} KiB of workspace (slabs)"
            return
        kib = step.workspace // 1024
        if self._lean_taps(step, node):
            step.why = (
                f"lean memory plan: a GEMM per kernel tap on views of the padded input and of "
                f"the parameter, in {kib} KiB of workspace ({step.algo}'s prepared weight is not "
                f"within the budget of {budget})"
            )
            step.algo = "tapgemm"
            return
        step.why = (
            f"lean memory plan: im2col on the parameter's own weight in {kib} KiB of workspace "
            f"({step.algo}'s prepared weight is not within the budget of {budget})"
        )
        step.algo = "im2col"

    def _lean_taps(self, step: ConvStep, node: Node) -> bool:
        """Whether a conv the lean budget sends off its algorithm runs `conv._taps` (2-D, unit
        strides, ungrouped, an image's padded input and wide outputs within the workspace)
        rather than im2col."""
        spec = step.spec
        if spec is None or len(spec.kernel) != 2 or spec.strides != (1, 1) or spec.group != 1:
            return False
        if max(spec.c_in, spec.c_out) >= TAPS_MAX_CHANNELS:
            return False
        shapes = self._lean_shapes(node)
        if shapes is None:
            return False
        dims = [*shapes[0][2:], shapes[1][2]]  # (in H, in W, out H)
        need = taps_workspace(spec, dims[:2], dims[2]) * self._itemsize(node.inputs[0])
        return self.lean is not None and need <= (step.workspace or 0)

    def _lean_norm_pool(self, step: NormStep, act: Node) -> bool:
        """Whether a MaxPool may fuse into a norm step under the memory plan: always by default;
        under the lean plan where the pre-pool activation at batch 1 (the step's scratch) fits
        LEAN_STEP_SHARE of what the budget leaves beside the activations alive at the norm."""
        if self.memory != "lean":
            return True
        budget = self.budget
        shape = self._b1.get(act.outputs[0])
        if budget is None or budget.off or shape is None:
            return False
        room = min(budget.room_at.get(n, 0) for n in (step.name, act.name))
        return math.prod(shape) * self._itemsize(act.outputs[0]) <= _lean.LEAN_STEP_SHARE * room

    def _lean_pools(self, step: Step, node: Node) -> bool:
        """Whether a tiling MaxPool may fuse into `step` under the lean plan: always for an
        algorithm the budget granted, for im2col when an image's columns and GEMM output fit
        its workspace (the fused pool takes the whole image's: no slabs)."""
        if self.lean is None or not isinstance(step, ConvStep) or step.spec is None:
            return True
        if node.name in self.lean.algorithms or step.algo != "im2col":
            return True
        dims = self._lean_shapes(node)
        if dims is None:
            return False
        itemsize = self._itemsize(node.inputs[0])
        need = workspace_estimate("im2col", step.spec, dims[0], dims[1], itemsize)
        return need <= (step.workspace or 0)

    def _liveness(self) -> None:
        last: dict[int, int] = {}
        for k, s in enumerate(self.steps):
            for r in self._reads(s):
                last[r] = k
        keep = {self.slots[o] for o in self.graph.outputs if o in self.slots}
        self.frees = [[] for _ in self.steps]
        if not self.reuse:
            return
        for slot, k in last.items():
            if slot not in keep:
                self.frees[k].append(slot)
        # A step's own outputs that nothing reads (e.g. an unused Dropout mask) die at once.
        read = set(last)
        for k, s in enumerate(self.steps):
            for o in s.outputs:
                if o >= 0 and o not in read and o not in keep:
                    self.frees[k].append(o)
        for k, s in enumerate(self.steps):
            if isinstance(s, ConvStep) and isinstance(s.residual, int):
                # The residual dies here: the conv may write its output over it (when its
                # algorithm adds the residual while copying out of a workspace, see ConvStep).
                s.overwrite = (
                    (s.algo == "colstack" or s.algo.startswith("winograd"))  # (the only ones)
                    and s.residual in self.frees[k]
                    and s.residual not in s.inputs
                    and s.outputs[0] not in keep
                    and s.outputs[0] not in self.placements
                )
                if s.overwrite:
                    s.why += "; over its residual's buffer where the algorithm allows"
            grp = s.group if isinstance(s, ConvBatchNormStep) else s
            for b in grp.members if isinstance(grp, BatchNormGroupStep) else ():
                b.inplace = (
                    isinstance(b.inputs[0], int)
                    and b.inputs[0] in self.frees[k]
                    and b.outputs[0] not in keep
                )
            if isinstance(s, (UnaryStep, BinaryStep, BatchNormStep, NormStep)):
                src = s.inputs[0]
                s.inplace = (
                    self.reuse
                    and isinstance(src, int)
                    and src in self.frees[k]
                    and s.outputs[0] not in keep
                )

    # ---------------------------------------------------------------------- run
    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        rng: np.random.Generator,
        keep_all: bool,
        timings: dict[str, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Execute the steps. With `timings`, each step's wall time (s) is added under its
        node's name (profiling). One run at a time (see the class)."""
        with self._lock:
            if self.budget is None:
                return self._run(feeds, rng, keep_all, timings)
            # memory="lean": NumPy's ufunc buffers at `LEAN_BUFSIZE` elements (they are outside
            # every workspace; see there), the caller's error modes kept
            old = np.setbufsize(LEAN_BUFSIZE)
            try:
                return self._run(feeds, rng, keep_all, timings)
            finally:
                np.setbufsize(old)

    def _run(
        self,
        feeds: Mapping[str, np.ndarray],
        rng: np.random.Generator,
        keep_all: bool,
        timings: dict[str, float] | None,
    ) -> dict[str, np.ndarray]:
        g = self.graph
        tape = self._tape
        if tape is not None and REPLAY_RUNS and timings is None and not keep_all:
            self._tape = None  # (until the replay succeeds)
            if tape.valid(feeds, g.params, self.pool.arena):
                result = self._replay(tape)
                if result is not None:
                    self._tape = tape
                    self.replayed_runs += 1
                    return result
        outputs = self._output_slots
        run = Run(
            len(self.slots),
            self.pool,
            self.parallel.scratch,
            g.params,
            self.training,
            rng,
            outputs,
            self.parallel,
            self.placements,
            self._placed_views,
        )
        # The steps read a feed through a view of the plan's own, the same object while the
        # caller passes the same array with the same shape and strides: a step replaying calls
        # bound to it (ConvStep._replay) then knows its layout too (an array given a new shape
        # in place, `x.shape = ...`, is a new view).
        # (weak references: a feed nothing else holds is not kept alive by the plan; its view
        # lives on only where a bound step holds it)
        seen = self._feeds
        for name, arr in feeds.items():
            last = seen.get(name)
            view = None
            if last is not None and last[0]() is arr and last[1:3] == (arr.shape, arr.strides):
                view = last[3]()
            if view is None:
                view = arr.view()
                seen[name] = (weakref.ref(arr), arr.shape, arr.strides, weakref.ref(view))
            run.env[self.slots[name]] = view
        self.parallel.workers = WORKERS
        if self.reuse:  # (keep_all hands every buffer to the caller: nothing is reused)
            self.pool.begin(tuple([(a.shape, a.dtype) for a in feeds.values()]))
        for scratch in run.scratch:  # (a failed run may have left places)
            scratch.reset()
        if (
            REPLAY_RUNS
            and self.reuse
            and not self.training
            and not keep_all
            and timings is None
            and self.pool.replaying
        ):
            run.tape = []  # (every step's bound calls, when each replays them: `taped`)
        with blas_single_threaded():
            pool = self.pool
            free = run.free
            step = self.steps[0] if self.steps else None
            try:
                for k, (step, frees) in enumerate(zip(self.steps, self.frees, strict=True)):
                    pool.step_begin(k)
                    if timings is None:
                        step(run)
                        if run.tape is not None and (not run.tape or run.tape[-1][0] is not step):
                            run.tape = None  # (the step did not replay bound calls alone)
                    else:
                        t0 = time.perf_counter()
                        step(run)
                        timings[step.name] = timings.get(step.name, 0.0) + (
                            time.perf_counter() - t0
                        )
                    pool.step_end(k)  # the step's workspaces are free for the next one
                    for slot in frees:
                        free(slot)
            except GraphNetError as exc:
                self.pool.abort()
                raise type(exc)(f"while executing {_where(step, run)}: {exc}") from exc
            except Exception as exc:
                self.pool.abort()
                raise KernelError(
                    f"while executing {_where(step, run)}: {type(exc).__name__}: {exc}"
                ) from exc
        if self.reuse:
            arena = self.pool.arena
            replayed = self.pool.replaying  # (the recorded layout to the end)
            self.pool.end()
            if self.pool.arena is not arena:  # (views of the former one: drop them)
                self.unbind()
            elif run.tape is not None and replayed:
                self._tape = self._taped(run.tape, feeds)
        if keep_all:  # constant steps' results are the plan's own: the caller gets copies
            return {
                name: run.env[s].copy() if s in self.static else run.env[s]
                for name, s in self.slots.items()
                if run.env[s] is not None
            }
        result = {}
        fed = {id(a) for a in feeds.values()}
        for o in g.outputs:
            arr = run.env[self.slots[o]] if o in self.slots else g.params[o]
            if (
                o not in self.slots
                or id(arr) in fed
                or not arr.flags.owndata
                or self.slots[o] in self.static
            ):
                arr = np.array(arr)  # never hand out a feed, a parameter or a view of either
            result[o] = arr
        return result

    def _taped(self, tape: list, feeds: Mapping[str, np.ndarray]) -> _Tape | None:
        """The whole-run replay of a run whose every step replayed its bound calls (`tape`:
        see `steps.base.taped`), or None when a graph output is not an array of a step's own
        (the calls cannot name the fresh array a run hands out)."""
        written: dict[int, np.ndarray] = {}
        for _, _, out in tape:
            if out:
                written.update(out)
        outputs = []
        for o in self.graph.outputs:
            arr = written.get(self.slots.get(o, -1))
            if arr is None:
                return None
            outputs.append((o, arr))
        seen = self._feeds
        fed = tuple((name, seen[name][0], arr.shape, arr.strides) for name, arr in feeds.items())
        calls = tuple([_direct(c) for _, cs, _ in tape for c in cs])
        return _Tape(calls, tuple(outputs), fed, self.graph.params, self.pool.arena)

    def _replay(self, tape: _Tape) -> dict[str, np.ndarray] | None:
        """The run by `tape`'s calls (see REPLAY_RUNS); None when a guard said no or a call
        raised (the values computed so far are recomputed by the normal path)."""
        blas = blas_one_thread()  # (as blas_single_threaded, without its ~1.1 us)
        try:
            for call in tape.calls:  # (one flat list: every step's calls in order)
                if call() is False:
                    return None
        except Exception:
            return None
        finally:
            blas_restore(blas)
        return {name: arr.copy() for name, arr in tape.outputs}

    def unbind(self) -> None:
        """Forget every step's calls bound to arrays (ConvStep's `_bound`) and the Concat slices
        kept (`Run.views`): they hold views of the pool's arena, which was replaced; and the
        whole-run replay."""
        self._tape = None
        self._placed_views.clear()
        for s in self.steps:
            if getattr(s, "_bound", None) is not None:
                s._bound = None  # type: ignore[attr-defined]

    def held_bytes(self) -> int:
        """Memory the plan keeps between runs: the pool's arena (activation buffers and the
        steps' workspaces), the threads' own scratch, results of constant steps."""
        cached = sum(s.held() for s in self.steps if isinstance(s, KernelStep))
        return self.pool.held() + self.parallel.held() + cached

    def describe(self) -> list[dict]:
        """One row per step: node, op, algorithm, why, fused nodes."""
        return [
            {"node": s.name, "op": s.op, "algorithm": s.algo, "why": s.why, "fused": list(s.fused)}
            for s in self.steps
        ]


def _conv_spec(w_shape: tuple, attrs: Mapping[str, Any]) -> ConvSpec:
    """A Conv node's ConvSpec from its static weight shape and resolved attributes."""
    return ConvSpec(
        kernel=tuple(int(d) for d in w_shape[2:]),
        strides=tuple(attrs["strides"]),
        pads=tuple(attrs["pads"]),
        dilations=tuple(attrs["dilations"]),
        group=int(attrs["group"]),
        c_in=int(w_shape[1]) * int(attrs["group"]),
        c_out=int(w_shape[0]),
    )


def needs_late_resolve(spec: ops.OpSpec, values: list) -> bool:
    """Whether a node's attributes can only be resolved once its input arrays are known: its op
    resolves rank-dependent defaults and some input's rank is unknown when the graph is planned
    (an import whose shapes ONNX could not infer)."""
    return spec.resolve is not None and any(v is not None and v.shape is None for v in values)


def describe_call(name: str, op: str, args: list, attrs: Mapping[str, Any]) -> str:
    """`conv3 (Conv): x(1,3,32,32) w(16,3,3,3) strides=(1, 1) ...`: a node, its op, its inputs'
    shapes labelled with the op table's input names, its attributes (error messages). Inputs
    past the op's own (a fast step's fused nodes' operands: a residual, a PReLU slope) are
    labelled `fused`."""
    declared = ops.get(op).inputs
    names = [s.strip("*?") for s in declared]
    variadic = bool(declared) and declared[-1].startswith("*")
    shapes = []
    for k, a in enumerate(args):
        if k < len(names):
            label = names[k]
        else:
            label = names[-1] if variadic else "fused"
        shape = format_shape(a.shape) if isinstance(a, np.ndarray) else "<none>"
        shapes.append(f"{label.lower()}{shape}")
    at = " ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{name} ({op}): {' '.join(shapes)}{(' ' + at) if at else ''}"


def _where(step: Step, run: Run) -> str:
    args = [run.get(r) if r is not None else None for r in step.inputs]
    attrs = step.attrs if isinstance(step, KernelStep) else {}
    fused = f", fused: {', '.join(step.fused)}" if step.fused else ""
    return describe_call(step.name, step.op, args, attrs) + f" [fast plan: {step.algo}{fused}]"
