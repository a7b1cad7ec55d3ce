"""`FastBackprop`: the training step on the fast plan. Same API and results as `Backprop` (the
plain oracle, which it extends), faster:

- `forward` runs the graph's compiled fast plan (`graphnet.runtime.fast`: its conv algorithms,
  batch slices on the worker threads, single-threaded BLAS) compiled to keep every value (no
  buffer reuse, no fused epilogues: the backward reads the intermediates). Three kinds of step
  also keep what the backward needs besides the values: train-mode BatchNorm records its batch
  mean, 1/std and x - mean; Conv runs as batch-last im2col (and keeps its columns for dW, in a
  buffer the step reuses from one forward to the next, when they are small: `KEEP_COLUMNS`);
  plain-kernel steps keep everything their kernel returned (a Dropout's mask, drawn from the
  caller's generator exactly as the plain forward draws it).
- `backward` walks the nodes as `Backprop.backward` does and calls the fast rule of a node's op
  (`fast_rules`) where there is one, else its plain rule.

A forward with `params` (float64 copies for a gradient check) runs the plain kernels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from graphnet.errors import GraphNetError, InputError
from graphnet.ir import Graph
from graphnet.runtime.fast.compile import CompiledPlan
from graphnet.runtime.fast.steps import BatchNormStep, ConvStep, KernelStep, Run
from graphnet.runtime.fast.threads import Parallel
from graphnet.runtime.gradients.backprop import Backprop, Tape, _Step
from graphnet.runtime.gradients.fast_conv import conv_forward
from graphnet.runtime.gradients.fast_norm import batch_norm_forward
from graphnet.runtime.gradients.fast_rules import FastContext, get_fast_gradient

__all__ = ["FastBackprop", "CONV_WORKERS", "KEEP_COLUMNS"]

KEEP_COLUMNS = 512 << 10
"""The recording forward keeps a conv's im2col columns for the backward's dW (which otherwise
builds them again from X, chunk by chunk in its thread's scratch) when they take at most this
many bytes. Measured on the 2-core machine of benchmarks/README.md shared with other jobs
(in-process A/B of the template CNN's training step at batch 64, interleaved rounds, medians of
ratios): never keeping against always keeping took 0.92-0.97x the time at load 2.1-2.4 (four
runs of 300-600 rounds) and 0.99-1.0x at load 3.4-5 (1,000-1,500 rounds, wall and thread CPU
time); this threshold against always, 0.95-1.0x at load 2.4-5 (five runs of 400-1,500
rounds: 0.946, 0.960, 0.976, 0.990, 0.999), batch 1 unchanged (0.993). Large columns (9x
the conv's input: 2.4 MiB for the template's 16->16 conv on 8x8 images, batch 64) go to memory
in the forward and come back in the backward, where columns rebuilt in the reused scratch stay
in cache; and the step holds 4.2 MiB less. Small ones stay kept (batch 1 never keeping:
1.063x the time, rebuilding them costs more Python than it saves)."""

CONV_WORKERS = 1
"""Threads for the training step's convolutions (the recording forward's and the backward's).
One: measured on the 2-core machine of benchmarks/README.md (quiet), the template CNN's convs at
batch 64 ran slower split over two threads than on one (16->16 channels at 8x8: forward 0.84 vs
0.51 ms, backward 1.10 vs 0.96 ms; the whole step 10.4 -> 8.9 ms with every plan on one thread):
their padded batch-last copies take about half their time and ran 2x slower per image on two
threads (0.12 vs 0.06 ms for 64 images' copies), while their GEMMs alone scale. The inference
plan keeps its own threads (`graphnet.runtime.fast.threads.WORKERS`)."""


@dataclass
class _KeepingKernel(KernelStep):
    """A plain-kernel step that keeps everything its kernel returned in the last run (outputs
    the node does not declare included: a Dropout's mask)."""

    kept: tuple = ()

    def _compute(self, run: Run, args: list) -> list:
        outs = super()._compute(run, args)
        self.kept = tuple(outs)
        return outs


@dataclass
class _RecordingBatchNorm(BatchNormStep):
    """Train-mode BatchNorm that keeps (batch mean, 1/sqrt(batch var + eps), xc, r) for the
    backward (`fast_norm.batch_norm_forward`). The running statistics are updated as the plain
    kernel does (running = momentum * running + (1 - momentum) * batch, the batch variance
    biased), through `Graph.set_param`."""

    graph: Graph | None = None
    kept: tuple = ()

    def __call__(self, run: Run) -> None:
        if not run.training:
            super().__call__(run)
            return
        x = run.get(self.inputs[0])
        scale, bias, mean, var = (run.get(i) for i in self.inputs[1:5])
        y = run.alloc(self.outputs[0], x.shape, x.dtype)
        mu, batch_var, inv, xc, r = batch_norm_forward(x, scale, bias, self.epsilon, y)
        new = {
            1: self.momentum * mean.astype(np.float64) + (1.0 - self.momentum) * mu,
            2: self.momentum * var.astype(np.float64) + (1.0 - self.momentum) * batch_var,
        }
        for k, pname in self.state.items():
            value = new[k].astype(run.params[pname].dtype)
            if self.graph is not None:
                self.graph.set_param(pname, value)
            else:
                run.params[pname] = value
        for k, slot in enumerate(self.outputs[1:], start=1):
            if slot >= 0:
                run.env[slot] = new[k].astype(run.get(self.inputs[k + 2]).dtype)
        self.kept = (mu, inv, xc, r)


@dataclass
class _RecordingConv(ConvStep):
    """Train-mode Conv by batch-last im2col (`fast_conv.conv_forward`), keeping its columns for
    the backward's dW when they fit in `KEEP_COLUMNS` bytes (read at each run). A conv it does
    not cover (another dtype, negative pads, a fused epilogue) runs as the plan compiled it and
    keeps nothing."""

    kept: Any = None
    parallel: Parallel | None = None  # the training step's conv threads, else the plan's
    # The columns' buffer, reused from step to step: a fresh multi-MiB array per step cost more
    # in page faults (the allocator returns freed large blocks to the system) than the backward
    # saves. A tape made before the buffer's reuse sees its record as stale (`generation`), and
    # its backward builds the columns again.
    buffer: np.ndarray | None = None
    generation: int = 0

    def __call__(self, run: Run) -> None:
        x = run.get(self.inputs[0])
        w = run.get(self.inputs[1])
        spec = self.spec
        if (
            not run.training
            or spec is None
            or self.residual is not None
            or self.activation
            or x.dtype not in (np.float32, np.float64)
            or w.dtype != x.dtype
            or min(spec.pads, default=0) < 0
        ):
            super().__call__(run)
            return
        k = x.ndim - 2
        outs = tuple(
            (x.shape[2 + i] + spec.pads[i] + spec.pads[k + i] - spec.dilations[i] * (kk - 1) - 1)
            // spec.strides[i]
            + 1
            for i, kk in enumerate(spec.kernel)
        )
        y = run.alloc(self.outputs[0], (x.shape[0], spec.c_out, *outs), x.dtype)
        shape = (
            spec.group,
            spec.c_in // spec.group * math.prod(spec.kernel),
            x.shape[0] * math.prod(outs),
        )
        keep = math.prod(shape) * x.dtype.itemsize <= KEEP_COLUMNS
        if not keep:
            self.buffer = None
        elif self.buffer is None or self.buffer.shape != shape or self.buffer.dtype != x.dtype:
            self.buffer = np.empty(shape, x.dtype)
        self.generation += 1
        generation = self.generation
        try:
            kept = conv_forward(
                x,
                w,
                run.get(self.epilogue_bias),
                y,
                strides=spec.strides,
                pads=spec.pads,
                dilations=spec.dilations,
                group=spec.group,
                parallel=self.parallel or run.parallel,
                buffer=self.buffer,
                keep=keep,
            )
        finally:
            if self.parallel is not None:  # the plan resets its own threads' scratch per step
                _reset_scratch(self.parallel)
        if kept is not None:
            kept.current = lambda: self.generation == generation
        self.kept = kept


def _reset_scratch(parallel: Parallel) -> None:
    """End a step's use of `parallel`'s thread scratch: its places are free again and each
    buffer grows to the largest step's total (as the compiled plan does after every step)."""
    for scratch in parallel.scratch:
        scratch.reset()


def _copy_as(cls: type, step: Any, **extra: Any) -> Any:
    """`step` re-made as its subclass `cls` (same field values)."""
    kw = {f.name: getattr(step, f.name) for f in fields(step)}
    return cls(**kw, **extra)


class FastBackprop(Backprop):
    """A graph planned for training on the fast plan (see the module docstring). Not for
    concurrent use: a plan keeps its last run's records."""

    def __init__(self, graph: Graph, *, conv_workers: int = CONV_WORKERS) -> None:
        super().__init__(graph)
        self.parallel = Parallel(max(1, int(conv_workers)))  # the convs' threads (both ways)
        self._plans: dict[bool, CompiledPlan] = {}

    def _plan(self, training: bool) -> CompiledPlan:
        plan = self._plans.get(training)
        if plan is None:
            plan = CompiledPlan(self.graph, training=training, fuse=False, reuse=False)
            for i, s in enumerate(plan.steps):
                if type(s) is BatchNormStep and training:
                    plan.steps[i] = _copy_as(_RecordingBatchNorm, s, graph=self.graph)
                elif type(s) is ConvStep and training:
                    plan.steps[i] = _copy_as(_RecordingConv, s, parallel=self.parallel)
                elif type(s) is KernelStep and not s.constant:
                    plan.steps[i] = _copy_as(_KeepingKernel, s)
            self._plans[training] = plan
        return plan

    def forward(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        training: bool = True,
        rng: np.random.Generator | None = None,
        params: dict[str, np.ndarray] | None = None,
    ) -> Tape:
        """As `Backprop.forward`; on the fast plan unless `params` is given."""
        if params is not None:
            return super().forward(feeds, training=training, rng=rng, params=params)
        g = self.graph
        missing = [i for i in g.inputs if i not in feeds]
        if missing:
            raise GraphNetError(f"graph '{g.name}': missing input(s) {missing}")
        fed = {}
        for name in g.inputs:
            arr = np.asarray(feeds[name])
            want = g.values[name].dtype
            if str(arr.dtype) != want:
                raise InputError(f"input '{name}' must be {want}, got {arr.dtype}")
            fed[name] = arr
        rng = rng if rng is not None else np.random.default_rng()
        plan = self._plan(training)
        values: dict[str, np.ndarray] = dict(g.params)  # as read: before BN's updates
        values.update(plan.run(fed, rng, keep_all=True))
        values.update(fed)
        tape = Tape(values, [], training)
        by_node = {s.name: s for s in plan.steps}
        for st in self._steps:
            n = st.node
            fs = by_node.get(n.name)
            if isinstance(fs, _KeepingKernel):
                tape.results.append(fs.kept)
            else:
                tape.results.append(tuple(values.get(o) if o else None for o in n.outputs))
            if isinstance(fs, (_RecordingBatchNorm, _RecordingConv)) and training and fs.kept:
                tape.records[n.name] = fs.kept
            if isinstance(fs, _RecordingConv):
                fs.kept = None
            elif isinstance(fs, (_KeepingKernel, _RecordingBatchNorm)):
                fs.kept = ()  # the tape holds them now (a conv keeps only its buffer)
        return tape

    def _differentiate(
        self,
        k: int,
        step: _Step,
        dy: np.ndarray,
        args: list,
        kwargs: dict,
        tape: Tape,
        needs: tuple[bool, ...],
    ) -> Any:
        fast = get_fast_gradient(step.node.op)
        if fast is not None:
            kw = dict(kwargs, training=tape.training, needs=needs)
            ctx = FastContext(self.parallel, tape.records.get(step.node.name))
            try:
                result = fast(dy, *args, ctx=ctx, **kw)
            finally:  # a rule's workspaces live for its call only (the Scratch contract)
                _reset_scratch(self.parallel)
            if result is not NotImplemented:
                return result
        return super()._differentiate(k, step, dy, args, kwargs, tape, needs)
