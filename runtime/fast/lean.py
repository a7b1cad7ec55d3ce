"""The lean memory plan (`Session(graph, memory="lean")`): a memory budget for the fast plan.

The default plan spends memory for speed: prepared weights beside the graph's parameters
(Winograd's transformed ones, 4x a 3x3 kernel for F(4x4); colstack's re-laid kernels; im2col's
copies with a bias column; merged 1x1 convs' stacked weights) and conv workspaces of up to
`conv.WORKSPACE_BYTES` (Winograd's larger): at batch 1 the fast plan's peak was 2.1-3.0x the
memory floor (the parameters + the largest set of activations alive at once; vgg_bn 2.66,
video3d 3.02). The lean plan holds the peak under `LEAN_RATIO` x that floor at batch 1:

- the budget: LEAN_RATIO x (parameters + the largest live set at batch 1, graph order, from the
  graph's static shapes, `static_floor`) - the parameters, for everything the plan holds; its
  room: the budget less the live set;
- the default plan itself when all its prepared weights and its largest workspace (estimated
  from above, `workspace_estimate`) fit the room under DEFAULT_RATIO (LeNet);
- else im2col multiplies a conv's weight as a view of the parameter (OIHW reshaped, the bias
  added in the epilogue): no copy; a conv sent off its own algorithm with unit strides, no
  groups and under conv.TAPS_MAX_CHANNELS channels runs `conv._taps` instead when an image's
  padded input and two wide outputs fit the workspace (a GEMM per kernel tap on views: no
  columns, no copy; CompiledPlan._lean_taps);
- prepared weights go to the convs whose own algorithm buys the most time per byte (the conv's
  multiply-adds at batch 1 x LEAN_GAIN, the share of im2col's time its algorithm saves, over
  its prepared weight's bytes), greedily while the weights and the largest workspace of the
  granted convs (at least LEAN_RESERVE of the room) fit the room;
- a 2-D Winograd conv without a kept U runs Winograd still where its workspace and a block of U
  fit beside the activations alive at it (LEAN_BLOCKS_SHARE): its weight transformed on every
  run block by block of output channels (winograd.KernelBlocks: a block's transform, then its
  GEMMs; the block in cache, none kept). vgg_bn@1: 1.9 -> 1.4x the default plan's time;
  against a kept U a conv takes 1.1x (64 -> 64 at 32x32) to 1.7x (128 -> 128 at 16x16, 256 ->
  256 at 8x8): the transform re-lays the kernel (a strided copy, ~10 GB/s) and writes U, 16/9
  or 4x its bytes, every run;
- each conv's im2col workspace is its own (LEAN_STEP_SHARE of what the budget leaves beside
  the activations alive at it: early convs' large activations no longer shrink the late ones');
  a norm step takes its MaxPool where its pre-pool activation fits that share at the norm;
- im2col's workspace budget (`ConvStep.workspace`, a MaxPool's chunks too, inline or each
  thread's) is LEAN_WORKSPACE_SHARE of what the granted weights leave: an image's columns past
  it run in slabs of output rows (`conv._im2col`; exact columns, 1-D too: `conv.lean_slab_rows`
  rows a slab, at least one, each slab padding only the input rows it reads where the image's
  padded copy would take more slabs; a one-row slab still past it: its GEMM over chunks of
  input channels, `conv.lean_depth_chunk`; wide rows, 3-D: from LEAN_SLAB_MIN_COLUMNS columns);
- MaxPools' default workspaces (`pool_workspace`) count in whether the default plan fits; under
  the lean workspace a pool's chunks are bands of kh rows where a plane passes half of it, a
  3 x 3 stride-1 "same" pool's (the pairwise pass) bands of output rows with a one-row halo
  where a volume passes it (`MaxPoolStep._pairwise_bands`; one 256 x 256 channel after a conv:
  1.51 -> 1.20x the floor);
- NumPy's ufunc buffers (per strided operand of a call, outside every workspace) at
  `LEAN_BUFSIZE` elements while the plan runs;
- sizes at each value's itemsize;
- a MaxPool tiling an im2col conv's output is fused only when an image's columns fit the
  workspace (the fused pool takes the whole image's GEMM output: no slabs);
- no merged 1x1 convs (their stacked weight is a copy), no Concat written in place by its
  branches (`CompiledPlan._place_concats`: its buffer lives from the first branch on).

The batch is each graph input's leading dim, whatever its name ("N", "batch_size", unnamed):
1 for the budget; the other sizes come from shape inference at batch 1 with shape arithmetic
folded (`batch_shapes`: a Reshape to `(x.size(0), -1)` is sized). A graph with a value still
unsized (an input's dim other than the batch unknown, a data-dependent shape) keeps the default
plan and says so: `LeanPlan.off`, in describe(), a warning from `Session(memory="lean")`.

Not held yet (found by review, left for a later change): a Concat read by a pool
(`pool_channels`) chunks by whole images of its widest branch (within the bound in every shape
tried); float16 graphs run the plain kernels, whose temporaries no budget sizes.

Measured at batch 1 (see README, runtime section) against the default plan and PyTorch eager.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Value
from graphnet.runtime.fast.conv import (
    COLSTACK_MAX_CHANNELS,
    MIN_WINOGRAD_COLUMNS,
    NARROW_MIN_WINOGRAD_COLUMNS,
    WORKSPACE_BYTES,
    ConvSpec,
    phase_pool,
)
from graphnet.runtime.fast.steps.pool import POOL_CHUNK_BYTES
from graphnet.runtime.fast.winograd import BLOCK_BYTES, block_bytes
from graphnet.runtime.kernels import get_kernel

__all__ = [
    "LEAN_RATIO",
    "LEAN_GAIN",
    "LEAN_BUFSIZE",
    "lean_itemsize",
    "LeanPlan",
    "batch_shapes",
    "batch1_tile",
    "lean_plan",
    "pool_workspace",
    "pooled_algorithm",
    "static_floor",
    "workspace_estimate",
]

LEAN_RATIO = 1.25
"""The lean plan's peak at batch 1 is planned under this many times the memory floor (the
issue's target is 1.3: the rest is a margin for what the plan does not size, a run's outputs,
element-wise temporaries, other steps' workspaces, the arena's packing)."""

DEFAULT_RATIO = 1.3
"""The default plan is kept when its prepared weights and its largest workspace (estimated from
above, `workspace_estimate`) fit beside the live set under this many times the floor (the issue's
target itself: the estimates are the margin; LeNet's default plan peaks at 1.25x)."""

LEAN_GAIN = {
    "winograd-f4": 0.45,
    "winograd-f2": 0.3,
    "wino3d-f4": 0.35,
    "wino3d-f2": 0.25,
    "colstack": 0.15,
    "phasepool": 0.2,
}
"""The share of im2col's time an algorithm saves at batch 1 (ranks the convs that keep a
prepared weight): from the measurements in conv.py (F(4x4) 0.76-0.83x at 16 tile columns, less
with more: vgg_bn@1 took 1.7x the time with every conv on im2col; colstack 0.8-0.9x; phasepool
0.8x on LeNet's first conv; wino3d 0.5-0.9x on video3d's convs)."""

LEAN_WORKSPACE_SHARE = 0.75
"""im2col's workspace budget is this share of what the budget leaves beside the live set and
the granted weights (the rest: a run's outputs and temporaries, other steps' workspaces, the
arena's packing; with all of it, resnet20@1 peaked at 1.32x its floor)."""

LEAN_RESERVE = 0.5
"""Prepared weights are granted while this share of the room (at least) stays for the
workspaces (im2col's, in slabs, and the granted convs' own). With 0.25, vgg_bn@1 kept conv3's
F(4x4) weights (1.15 MiB; peak / floor 1.15 -> 1.24) for 0.995x the time (in-process
interleaved, medians of ratios, 20 rounds, load 3-4): not worth its memory."""

LEAN_BUFSIZE = 1024
"""NumPy's ufunc buffer size (elements, `np.setbufsize`) while a lean plan runs (NumPy's default:
8192). A ufunc over strided operands (a MaxPool's row pairs, a pool's or a conv's strided views)
allocates a buffer of up to that many elements per operand for the call, outside every
workspace: 64 KiB for two float32 operands, most of what a small graph's first run held past
its budget (x(1, 3, 64, 64) -> 3x3 conv, 4 channels -> ReLU -> 2x2 MaxPool: peak / floor 1.42,
a conv of 8 channels on 40x37: 1.44; 0.99 / 1.03 with 1024, and replays too: they held the
arena plus these buffers). Set per run (`CompiledPlan.run`, np.setbufsize: ~2 us a call),
in the thread that runs it (threads split work only past batch 1)."""

LEAN_STEP_SHARE = 0.55
"""A conv's im2col workspace budget (`LeanPlan.workspaces`) is this share of what the budget
leaves beside the kept weights and the activations alive at the conv (graph order, batch 1),
at least the plan-wide one (`LeanPlan.workspace`, sized beside the largest live set): the
arena's packing and what no estimate sizes take the rest. Peak / floor at batch 1 with shares
0 (the plan-wide workspace only) / 0.4 / 0.55 / 0.75, time against the default plan
(in-process interleaved, medians of ratios, 12 rounds): norms_acts 1.24 / 1.24 / 1.24 / 1.31
at 2.38 / 2.30 / 1.87 / 1.75x, inception_bn 1.26 / 1.25 / 1.26 / 1.34 at 2.15 / 2.07 / 1.75 /
1.73x; the others unchanged (lenet5 keeps the default plan; vgg_bn 1.15-1.18, resnet20 1.22,
video3d 1.10)."""

LEAN_BLOCKS_SHARE = 1.0
"""A 2-D Winograd conv without a kept U transforms its weights block by block on every run
(`LeanPlan.blocks`, winograd.KernelBlocks) where its Winograd workspace (`workspace_estimate`,
at the tile a batch-1 run takes) and a block of at least winograd.BLOCK_MIN_ROWS output
channels fit this share of what the budget leaves beside the kept weights and the activations
alive at the conv: the estimates are the Winograd kernels' own sizes (`conv._winograd_cl` /
`_winograd_m`'s places), the block's from above. vgg_bn@1 with shares 0.55 / 0.7 / 0.85 / 1.0:
peak / floor 1.16 / 1.19 / 1.21 / 1.25 at 1.71 / 1.77 / 1.68 / 1.44x the default plan's time
(its 64 -> 64 32x32 conv took blocks only at 1.0); the other suite models unchanged (no conv
runs Winograd at batch 1 in their budgets)."""
LEAN_MIN_WORKSPACE = 16 << 10
"""The lean workspace budget is at least this (a smaller one runs im2col in slabs too thin for
its GEMMs)."""


@dataclass
class LeanPlan:
    """What the lean budget allows: `algorithms` (conv node name -> the algorithm it keeps, a
    prepared weight; absent: im2col or pointwise on views of the parameters), `workspace` (bytes
    of an im2col conv's workspace), and the numbers it came from (bytes, for describe())."""

    budget: int = 0
    floor: int = 0
    workspace: int | None = None  # None: the default plan's
    weights: int = 0  # bytes of the prepared weights granted
    algorithms: dict[str, str] = field(default_factory=dict)
    # the 2-D Winograd convs without a kept weight that transform it block by block on every
    # run (winograd.KernelBlocks) where its blocks and their workspace fit beside the
    # activations alive at the conv
    blocks: dict[str, int] = field(default_factory=dict)  # name -> bytes of its U block
    # conv node name -> its workspace budget: LEAN_WORKSPACE_SHARE of what the budget leaves
    # beside the kept weights and the activations alive at the conv (`workspace` past it)
    workspaces: dict[str, int] = field(default_factory=dict)
    # node name -> bytes the budget leaves beside the kept weights and the activations alive
    # at the node (graph order, batch 1)
    room_at: dict[str, int] = field(default_factory=dict)
    off: str = ""  # why the budget could not be planned (sizes unknown): the default plan runs


def lean_itemsize(dtype: str | None) -> int:
    """Bytes of an element of a value's declared `dtype` (8 when unknown: from above)."""
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 8


Shapes = dict[str, tuple[int, ...]]

FOLD_MAX = 1024
"""`batch_shapes` evaluates a node whose inputs are all known (parameters, folded values) when
they hold at most this many elements: shape arithmetic (Shape, Gather, Concat, ...) that feeds
a Reshape, as `x.view(x.size(0), -1)` exports."""


def batch_shapes(graph: Graph, batch: int = 1) -> tuple[Shapes, str]:
    """Every value's shape when each graph input's leading dim (the batch, whatever its name,
    or unnamed) is `batch`: shape inference over the graph in order (the graph is not changed),
    with shape arithmetic folded (`FOLD_MAX`). Returns (name -> shape of the values sized,
    why not every value is: "" when all are)."""
    values: dict[str, Value] = {}
    consts: dict[str, np.ndarray] = dict(graph.params)
    for name, a in graph.params.items():
        values[name] = Value(name, tuple(a.shape), str(a.dtype))
    for name in graph.inputs:
        v = graph.values[name]
        if v.shape is None:
            return {}, f"input '{name}' has no declared shape"
        lead = v.shape[0] if v.shape and is_static(v.shape[0]) else batch
        shape = (lead, *v.shape[1:]) if v.shape else ()
        values[name] = Value(name, shape, v.dtype)
    for n in graph.nodes:
        ins = [values.get(i) if i else None for i in n.inputs]
        try:
            types = ops.infer(n, ins, [consts.get(i) if i else None for i in n.inputs])
        except GraphNetError:  # (a rule that needs what is unknown here: the node stays unsized)
            types = [(None, None)] * len(n.outputs)
        for o, (shape, dtype) in zip(n.outputs, types, strict=False):
            if o:
                values[o] = Value(o, shape, dtype)
        _fold(n, values, consts)
    shapes: Shapes = {}
    missing = []
    for name, v in values.items():
        if v.shape is not None and all(is_static(d) for d in v.shape):
            shapes[name] = tuple(int(d) for d in v.shape)  # type: ignore[arg-type]
        elif name not in graph.params:
            missing.append(name)
    why = ""
    if missing:
        v = values[missing[0]]
        shape = "unknown" if v.shape is None else "(" + ", ".join(map(str, v.shape)) + ")"
        why = (
            f"the size of {len(missing)} value(s) is unknown at batch {batch} at compile time "
            f"(first: '{missing[0]}', shape {shape})"
        )
    return shapes, why


def _fold(n, values: dict[str, Value], consts: dict[str, np.ndarray]) -> None:
    """Evaluate `n` into `consts` when its inputs are known and small (`batch_shapes`); a Shape
    reads its input's static shape (a zero-stride array of it: no memory)."""
    spec = ops.get(n.op)
    if spec.mode_dependent or n.op == "Opaque" or not n.inputs:
        return
    args: list = []
    for k, i in enumerate(n.inputs):
        if not i:
            args.append(None)
        elif i in consts and consts[i].size <= FOLD_MAX:
            args.append(consts[i])
        elif n.op == "Shape" and k == 0 and i in values:
            shape = values[i].shape
            if shape is None or not all(is_static(d) for d in shape):
                return
            args.append(np.broadcast_to(np.zeros((), np.float32), shape))
        else:
            return
    try:
        kern = get_kernel(n.op, n.name)
        if kern.context:
            return
        kw = dict(ops.attrs_for_arrays(n, args))
        if "num_outputs" in inspect.signature(kern.fn).parameters:
            kw["num_outputs"] = len(n.outputs)
        result = kern.fn(*args, **kw)
    except Exception:  # (not foldable here: the node keeps what inference gave)
        return
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    for o, a in zip(n.outputs, outs, strict=False):
        a = np.asarray(a)  # (a kernel may give a NumPy scalar)
        if o and a.dtype != object and a.size <= FOLD_MAX:
            consts[o] = a
            values[o] = Value(o, tuple(a.shape), str(a.dtype))


def static_floor(
    graph: Graph,
    batch: int = 1,
    shapes: Shapes | None = None,
    at: dict[str, int] | None = None,
) -> tuple[int, int] | None:
    """(parameter bytes, the largest bytes of activations alive at once in graph order) at
    `batch` (each input's leading dim), from the graph's shapes (`batch_shapes`, or `shapes`
    from it; `bench.floor.memory_floor` on a run's shapes); None when a value's size is unknown
    at compile time. `at`: gets each node's bytes alive while it runs (its inputs and
    outputs among them)."""
    if shapes is None:
        shapes = batch_shapes(graph, batch)[0]
    params = sum(int(a.nbytes) for a in graph.params.values())
    last: dict[str, int] = {}
    for k, node in enumerate(graph.nodes):
        for i in node.inputs:
            if i and i not in graph.params:
                last[i] = k
    for o in graph.outputs:
        last[o] = len(graph.nodes)
    live: dict[str, int] = {}

    def size(name: str) -> int | None:
        s = shapes.get(name)
        return None if s is None else math.prod(s) * lean_itemsize(graph.values[name].dtype)

    for i in graph.inputs:
        n = size(i)
        if n is None:
            return None
        live[i] = n
    peak = sum(live.values())
    for k, node in enumerate(graph.nodes):
        for o in node.outputs:
            if o:
                n = size(o)
                if n is None:
                    return None
                live[o] = n
        alive = sum(live.values())
        peak = max(peak, alive)
        if at is not None:
            at[node.name] = alive
        for name in [v for v in live if last.get(v, -1) <= k]:
            del live[name]
    return params, peak


def _prepared_bytes(algo: str, spec: ConvSpec, itemsize: int) -> int:
    """Bytes of `conv.prepare_weight`'s array for `algo` (an upper bound: the bias column)."""
    taps = math.prod(spec.kernel)
    depth = spec.c_in // spec.group * taps + 1
    if algo.startswith("winograd"):
        m = 4 if algo.endswith("f4") else 2
        return (m + 2) ** 2 * spec.c_in * spec.c_out * itemsize
    if algo.startswith("wino3d"):
        m = 4 if algo.endswith("f4") else 2
        return (m + 2) ** 2 * spec.kernel[0] * spec.c_in * spec.c_out * itemsize
    if algo.startswith("phasepool"):
        ph, pw = (int(v) for v in algo.split("-")[1].split("x"))
        kh, kw = spec.kernel
        window = -(-(ph + kh - 1) // ph) * ph * -(-(pw + kw - 1) // pw) * pw
        return ph * pw * spec.c_out * (spec.c_in * window + 1) * itemsize
    return spec.c_out * depth * itemsize


def workspace_estimate(
    algo: str, spec: ConvSpec, in_shape: tuple, out_shape: tuple, itemsize: int
) -> int:
    """An estimate (from above) of the workspace `algo` takes for one image of `in_shape`
    (batch-1 sizes): the padded input and the GEMM's operand and result."""
    c, m = spec.c_in, spec.c_out
    spatial_in, spatial_out = in_shape[2:], out_shape[2:]
    k = len(spatial_in)
    padded = c * math.prod(s + spec.pads[i] + spec.pads[k + i] for i, s in enumerate(spatial_in))
    if algo.startswith(("winograd", "wino3d")):
        mm = 4 if algo.endswith("f4") else 2
        tiles = math.prod(-(-s // mm) for s in spatial_out[-2:]) * math.prod(spatial_out[:-2])
        depth = c * (spec.kernel[0] if algo.startswith("wino3d") else 1)
        return ((mm + 2) ** 2 * (depth + m) * tiles + padded) * itemsize
    pixels = math.prod(spatial_out)
    columns = (c // spec.group) * math.prod(spec.kernel) * pixels
    if algo == "colstack":  # kh row-shifted copies and kw GEMM planes, over padded rows
        kh, kw = spec.kernel
        wide = spatial_out[0] * (spatial_in[1] + spec.pads[1] + spec.pads[3])
        return (padded + c * kh * wide + kw * m * wide) * itemsize
    if algo.startswith("phasepool"):  # the input's phases and the stacked GEMM's output
        return (2 * padded + columns // 2 + m * pixels) * itemsize
    return (padded + columns + m * pixels) * itemsize


def lean_plan(
    graph: Graph,
    choices: dict[str, tuple[ConvSpec, str, tuple, tuple]],
    shapes: Shapes | None = None,
    off: str = "",
    pools: list[int] | None = None,
) -> LeanPlan:
    """The lean budget for `graph` (see the module docstring). `choices`: conv node name ->
    (spec, the algorithm the default plan picks, batch-1 input shape, batch-1 output shape)
    for the convs with parameter weights; an algorithm "phasepool" means a fused pool that
    phasepool would run. `shapes`, `off`: `batch_shapes(graph, 1)`'s; `pools`: the default
    plan's workspace bytes of each MaxPool (`pool_workspace`): a graph whose pools' workspaces
    pass the budget gets the lean workspace for them too (a lone 16x64x64 pool: 1.82x the floor
    with its default chunks)."""
    if shapes is None:
        shapes, off = batch_shapes(graph, 1)
    alive: dict[str, int] = {}
    floor = None if off else static_floor(graph, 1, shapes, alive)
    if floor is None:  # sizes unknown at compile time: the default plan, and it says why
        return LeanPlan(off=off or "the memory floor is unknown at compile time")
    params, live = floor
    budget = int(LEAN_RATIO * (params + live)) - params
    room = max(0, budget - live)
    plan = LeanPlan(budget=budget, floor=params + live)
    ranked = []
    im2col_ws = []  # the workspace of each conv that runs im2col (or pointwise) anyway
    inputs = {n.name: n.inputs[0] for n in graph.nodes}
    for name, (spec, algo, x_shape, y_shape) in choices.items():
        x = graph.values.get(inputs.get(name, ""))
        itemsize = lean_itemsize(None if x is None else x.dtype)  # (the conv's input's)
        gain = next((g for a, g in LEAN_GAIN.items() if algo.startswith(a)), 0.0)
        if not gain:  # im2col, pointwise: views already
            im2col_ws.append(workspace_estimate(algo, spec, x_shape, y_shape, itemsize))
            continue
        nbytes = _prepared_bytes(algo, spec, itemsize)
        ws = workspace_estimate(algo, spec, x_shape, y_shape, itemsize)
        macs = math.prod(y_shape) * spec.c_in // spec.group * math.prod(spec.kernel)
        ranked.append((macs * gain / max(nbytes, 1), nbytes, ws, name, algo))
    # The arena holds at most the live set and the largest workspace of a step: the prepared
    # weights take what the budget leaves beside both. The default plan when all of them fit
    # beside the default workspaces (LeNet: its 20 KiB of prepared weights).
    every = [ws for _, _, ws, _, _ in ranked] + [min(WORKSPACE_BYTES, w) for w in im2col_ws]
    every += pools or []
    loose = int(DEFAULT_RATIO * (params + live)) - params - live
    if sum(r[1] for r in ranked) + max(every, default=0) <= loose:
        plan.algorithms = {name: algo for _, _, _, name, algo in ranked}
        plan.weights = sum(r[1] for r in ranked)
        plan.workspace = None
        return plan
    # Else the weights that buy the most time per byte, leaving LEAN_RESERVE of the room at
    # least for the workspaces
    largest = 0
    for _, nbytes, ws, name, algo in sorted(ranked, reverse=True):
        if plan.weights + nbytes + max(largest, ws, int(LEAN_RESERVE * room)) <= room:
            plan.weights += nbytes
            largest = max(largest, ws)
            plan.algorithms[name] = algo
    spare = int(LEAN_WORKSPACE_SHARE * (room - plan.weights))
    plan.workspace = max(LEAN_MIN_WORKSPACE, min(WORKSPACE_BYTES, spare))
    # The other 2-D Winograd convs transform their weights block by block on every run where
    # the blocks and the Winograd workspace fit what the budget leaves beside the kept
    # weights and the activations alive at the conv (LEAN_WORKSPACE_SHARE of it, as im2col's)
    plan.room_at = {k: budget - plan.weights - v for k, v in alive.items()}
    for name, (spec, algo, x_shape, y_shape) in choices.items():
        here = int(LEAN_STEP_SHARE * (budget - plan.weights - alive.get(name, live)))
        plan.workspaces[name] = max(plan.workspace, min(WORKSPACE_BYTES, here))
        if name in plan.algorithms or not algo.startswith("winograd") or len(spec.kernel) != 2:
            continue
        x = graph.values.get(inputs.get(name, ""))
        itemsize = lean_itemsize(None if x is None else x.dtype)
        here = int(LEAN_BLOCKS_SHARE * (budget - plan.weights - alive.get(name, live)))
        m = batch1_tile(spec, y_shape)
        ws = workspace_estimate(f"winograd-f{m}", spec, x_shape, y_shape, itemsize)
        ws += _winograd_moved(m, spec, y_shape, itemsize)
        blk = max(0, min(BLOCK_BYTES, here - ws))
        if ws + block_bytes(spec.c_in, spec.c_out, m, blk) <= here:
            plan.blocks[name] = blk or BLOCK_BYTES
    return plan


def _winograd_moved(m: int, spec: ConvSpec, out_shape: tuple, itemsize: int) -> int:
    """Bytes a 2-D Winograd conv's workspace takes past `workspace_estimate` at batch 1: Y1 (A^T
    on M's tile rows, m(m+2) x tiles x M) is taken in the tiles' place (slot 1, (m+2)^2 x tiles
    x C), and moves past the other places where it does not fit there (M > (m+2) / m x C: a
    32 -> 64 conv at 16x16 took 96 KiB more than estimated)."""
    t = m + 2
    tiles = math.prod(-(-s // m) for s in out_shape[-2:])
    y1, d = m * t * tiles * spec.c_out, t * t * tiles * spec.c_in
    return y1 * itemsize if y1 > d else 0


def batch1_tile(spec: ConvSpec, out_shape: tuple) -> int:
    """The tile (4 or 2) of a 2-D Winograd conv at batch 1 (as ConvStep picks it: F(2x2) for
    too few F(4x4) tiles)."""
    h, w = out_shape[-2:]
    narrow = max(spec.c_in, spec.c_out) < COLSTACK_MAX_CHANNELS
    least = NARROW_MIN_WINOGRAD_COLUMNS if narrow else MIN_WINOGRAD_COLUMNS
    return 4 if math.ceil(h / 4) * math.ceil(w / 4) >= least else 2


def pool_workspace(in_shape: tuple[int, ...], itemsize: int) -> int:
    """An estimate (from above) of a MaxPool's workspace in the default plan at batch 1: its
    tiling chunks' two planes (m, m2: `POOL_CHUNK_BYTES` / 4 of input a chunk), at most two
    copies of the input."""
    return 2 * min(math.prod(in_shape) * itemsize, POOL_CHUNK_BYTES // 4)


def pooled_algorithm(spec: ConvSpec, pool: tuple) -> str:
    """The algorithm a conv fused with a tiling `pool` runs in the default plan (phasepool or
    im2col), for `lean_plan`'s choices."""
    return phase_pool(spec, pool) or "im2col"
