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
- im2col's workspace budget (`ConvStep.workspace`, an inline MaxPool's chunks too) is
  LEAN_WORKSPACE_SHARE of what the granted weights leave: an image's columns past it run in
  slabs of output rows (`conv._im2col`, from LEAN_SLAB_MIN_COLUMNS columns);
- a MaxPool tiling an im2col conv's output is fused only when an image's columns fit the
  workspace (the fused pool takes the whole image's GEMM output: no slabs);
- no merged 1x1 convs (their stacked weight is a copy), no Concat written in place by its
  branches (`CompiledPlan._place_concats`: its buffer lives from the first branch on).

A graph whose sizes are unknown at compile time (a dimension that is neither static nor an
expression of the batch) keeps the default plan.

Measured at batch 1 (see README, runtime section) against the default plan and PyTorch eager.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphnet.dims import BATCH, evaluate
from graphnet.ir import Graph
from graphnet.runtime.fast.conv import WORKSPACE_BYTES, ConvSpec, phase_pool

__all__ = [
    "LEAN_RATIO",
    "LEAN_GAIN",
    "LeanPlan",
    "lean_plan",
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


def _itemsize(dtype: str | None) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 8


def _shape(graph: Graph, name: str, batch: int) -> tuple[int, ...] | None:
    v = graph.values.get(name)
    if v is None or v.shape is None:
        return None
    dims = [evaluate(d, {BATCH: batch}) for d in v.shape]
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)  # type: ignore[arg-type]


def static_floor(graph: Graph, batch: int = 1) -> tuple[int, int] | None:
    """(parameter bytes, the largest bytes of activations alive at once in graph order) at
    `batch`, from the graph's static shapes (`bench.floor.memory_floor` on a run's shapes);
    None when a value's size is unknown at compile time."""
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
        s = _shape(graph, name, batch)
        return None if s is None else math.prod(s) * _itemsize(graph.values[name].dtype)

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
        peak = max(peak, sum(live.values()))
        for name in [v for v in live if last.get(v, -1) <= k]:
            del live[name]
    return params, peak


def _prepared_bytes(algo: str, spec: ConvSpec, itemsize: int) -> int:
    """Bytes of `conv.prepare_weight`'s array for `algo` (an upper bound: the bias column)."""
    taps = math.prod(spec.kernel)
    depth = spec.c_in // spec.group * taps + 1
    if algo.startswith("winograd"):
        m = 4 if algo.endswith("f4") else 2
        return (m + 2) ** 2 * spec.c_in * spec.c_out * 4
    if algo.startswith("wino3d"):
        m = 4 if algo.endswith("f4") else 2
        return (m + 2) ** 2 * spec.kernel[0] * spec.c_in * spec.c_out * 4
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
        return ((mm + 2) ** 2 * (depth + m) * tiles + padded) * 4
    pixels = math.prod(spatial_out)
    columns = (c // spec.group) * math.prod(spec.kernel) * pixels
    if algo == "colstack":  # kh row-shifted copies and kw GEMM planes, over padded rows
        kh, kw = spec.kernel
        wide = spatial_out[0] * (spatial_in[1] + spec.pads[1] + spec.pads[3])
        return (padded + c * kh * wide + kw * m * wide) * itemsize
    if algo.startswith("phasepool"):  # the input's phases and the stacked GEMM's output
        return (2 * padded + columns // 2 + m * pixels) * itemsize
    return (padded + columns + m * pixels) * itemsize


def lean_plan(graph: Graph, choices: dict[str, tuple[ConvSpec, str, tuple, tuple]]) -> LeanPlan:
    """The lean budget for `graph` (see the module docstring). `choices`: conv node name ->
    (spec, the algorithm the default plan picks, batch-1 input shape, batch-1 output shape)
    for the convs with parameter weights; an algorithm "phasepool" means a fused pool that
    phasepool would run."""
    floor = static_floor(graph, 1)
    if floor is None:  # sizes unknown at compile time: views and the default workspace
        return LeanPlan()
    params, live = floor
    budget = int(LEAN_RATIO * (params + live)) - params
    room = max(0, budget - live)
    plan = LeanPlan(budget=budget, floor=params + live)
    ranked = []
    im2col_ws = []  # the workspace of each conv that runs im2col (or pointwise) anyway
    for name, (spec, algo, x_shape, y_shape) in choices.items():
        gain = next((g for a, g in LEAN_GAIN.items() if algo.startswith(a)), 0.0)
        if not gain:  # im2col, pointwise: views already
            im2col_ws.append(workspace_estimate(algo, spec, x_shape, y_shape, 4))
            continue
        itemsize = 4
        nbytes = _prepared_bytes(algo, spec, itemsize)
        ws = workspace_estimate(algo, spec, x_shape, y_shape, itemsize)
        macs = math.prod(y_shape) * spec.c_in // spec.group * math.prod(spec.kernel)
        ranked.append((macs * gain / max(nbytes, 1), nbytes, ws, name, algo))
    # The arena holds at most the live set and the largest workspace of a step: the prepared
    # weights take what the budget leaves beside both. The default plan when all of them fit
    # beside the default workspaces (LeNet: its 20 KiB of prepared weights).
    every = [ws for _, _, ws, _, _ in ranked] + [min(WORKSPACE_BYTES, w) for w in im2col_ws]
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
    return plan


def pooled_algorithm(spec: ConvSpec, pool: tuple) -> str:
    """The algorithm a conv fused with a tiling `pool` runs in the default plan (phasepool or
    im2col), for `lean_plan`'s choices."""
    return phase_pool(spec, pool) or "im2col"
