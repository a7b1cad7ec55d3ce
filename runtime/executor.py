"""The executor: plan a graph once (node order, resolved attributes, when each buffer dies), then
run it many times.

Two plans, one API: `Session(graph)` compiles the fast plan (`graphnet.runtime.fast`: fast conv
algorithms, fused epilogues, pooled buffers reused by liveness, in-place element-wise ops, batch
slices on two threads); `Session(graph, plan="reference")` runs the plain kernels node by node,
the oracle every fast path is tested against. `Session.describe()` says what runs for each node.

- Inputs are checked by name, dtype and shape before anything runs.
- Each intermediate value is released right after its last reader ran (unless `keep_all`).
- A kernel failure is re-raised as `KernelError` naming the node, its op, input shapes and
  attributes.
- Train mode: Dropout draws from the session's seeded generator; BatchNorm normalizes with batch
  statistics and writes its new running averages into the graph's parameters (the graph is state).
"""

from __future__ import annotations

import functools
import inspect
import threading
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.dims import bind_shape
from graphnet.errors import GraphNetError, InputError, KernelError, UnsupportedOpError
from graphnet.ir import Graph, Node, format_shape
from graphnet.runtime.fast.compile import (
    MEMORY_PLANS,
    CompiledPlan,
    describe_call,
    needs_late_resolve,
)
from graphnet.runtime.kernels import Kernel, get_kernel

__all__ = ["Session", "run", "MODES"]

MODES = ("inference", "train")
PLANS = ("fast", "reference")


@dataclass
class _Step:
    node: Node
    kernel: Kernel
    attrs: dict[str, Any]
    free_after: list[str]  # values whose last reader is this node
    state: dict[int, str]  # train mode: extra kernel output index -> parameter name it replaces
    extra: dict[str, Any]  # {"num_outputs": n} for kernels that take it (skip optional outputs)
    late: bool = False  # attributes resolved at run time (input ranks unknown when planned)


class Session:
    """A planned graph, ready to run many times.

    `Session(graph).run({"x": array}, mode="train", seed=0)` returns {output name: array}.
    The session reads the graph's parameters at run time, so train-mode updates of BatchNorm
    statistics are seen by the next run. Rebuild the session after changing the graph's structure.

    `plan="fast"` (the default) compiles the graph (see `graphnet.runtime.fast`; `describe()`
    says what runs per node, `profile(feeds)` where the time goes); `plan="reference"` runs the
    plain kernels node by node (the oracle, and for debugging). The fast plan keeps prepared
    weights (re-laid kernels; Winograd-transformed ones on batches with few tiles, larger ones
    transform theirs every run) between runs, in either mode, while a parameter stays the same
    array object: replace a parameter with `graph.set_param` (as the Trainer does; after an
    in-place edit, `set_param` with the same array) rather than only writing into its array in
    place (a batch that reads the kept copy and one that does not would disagree). Threads may
    share a session: its fast plan runs one call at a time (the others wait).
    `memory="lean"` plans the fast plan under a memory budget (at batch 1, 1.25x the parameters
    and the largest set of live activations: weights multiplied as views of the parameters
    where the budget has no room for a prepared copy, smaller workspaces; slower: see
    `graphnet.runtime.fast.lean`); "default" spends memory for speed.
    """

    def __init__(self, graph: Graph, *, plan: str = "fast", memory: str = "default") -> None:
        if plan not in PLANS:
            raise InputError(f"plan must be one of {PLANS}, got {plan!r}")
        if memory not in MEMORY_PLANS:
            raise InputError(f"memory must be one of {MEMORY_PLANS}, got {memory!r}")
        if plan != "fast" and memory != "default":
            raise InputError(f"memory={memory!r} plans the fast plan; plan={plan!r} has no plan")
        self.plan = plan
        self.memory = memory
        graph.verify()
        self.graph = graph
        self._rng = np.random.default_rng()  # unseeded runs draw from it (see `seed`)
        self._pending: np.random.Generator | None = None  # the last seed's, not yet continued
        self._continuing = threading.Lock()  # (one thread makes `_current`'s copy)
        self._seeded = threading.local()  # .hit: (this thread's last int seed, its state, rng)
        self._compiled: dict[tuple[bool, bool], CompiledPlan] = {}
        self._checked: tuple = ()  # the last feeds `check_inputs` passed (see `_checked_again`)
        self._steps: list[_Step] = []
        if plan == "fast":
            off = self.lean_off  # (compile errors surface here)
            if off:
                warnings.warn(f"memory={memory!r} is off: {off}", RuntimeWarning, stacklevel=2)
            return
        last_use: dict[str, int] = {}
        for k, n in enumerate(graph.nodes):
            for i in n.inputs:
                if i:
                    last_use[i] = k
        keep = set(graph.outputs) | set(graph.params)
        frees: dict[int, list[str]] = {}
        for name, k in last_use.items():
            if name not in keep:
                frees.setdefault(k, []).append(name)
        for k, n in enumerate(graph.nodes):
            spec = ops.get(n.op)
            if n.op == "Opaque":
                domain = n.attrs.get("domain") or "ai.onnx"
                raise UnsupportedOpError(
                    f"no kernel for op '{n.attrs.get('op_type')}' ({domain}) at node '{n.name}'"
                )
            kern = get_kernel(n.op, n.name)
            values = [graph.values.get(i) if i else None for i in n.inputs]
            attrs = ops.attrs_of(n, values)
            state = {}
            for out_k, in_k in spec.state.items():
                if in_k < len(n.inputs) and n.inputs[in_k] in graph.params:
                    state[out_k] = n.inputs[in_k]
            # A kernel with a `num_outputs` parameter can skip work for optional outputs the node
            # does not have (MaxPool's Indices).
            extra = (
                {"num_outputs": len(n.outputs)}
                if "num_outputs" in inspect.signature(kern.fn).parameters
                else {}
            )
            late = needs_late_resolve(spec, values)
            self._steps.append(_Step(n, kern, attrs, frees.get(k, []), state, extra, late))

    def _fast(self, *, training: bool, keep_all: bool) -> CompiledPlan:
        key = (training, keep_all)
        if key not in self._compiled:
            self._compiled[key] = CompiledPlan(
                self.graph,
                training=training,
                fuse=not keep_all,
                reuse=not keep_all,
                memory=self.memory,
            )
        return self._compiled[key]

    @property
    def lean_off(self) -> str:
        """Why `memory="lean"` could not plan its budget (the default plan runs then: a value
        whose size is unknown at batch 1 at compile time), "" when it did or was not asked."""
        budget = self._fast(training=False, keep_all=False).budget
        return budget.off if budget is not None else ""

    @property
    def held_bytes(self) -> int:
        """Bytes the session keeps between runs for its own use: the arena of activation
        buffers and conv workspaces, thread scratch, results of constant steps (prepared
        weights are not counted: `graphnet bench` measures them with tracemalloc)."""
        return sum(p.held_bytes() for p in self._compiled.values())

    def describe(self, *, mode: str = "inference") -> str:
        """What runs for each node, and why: a table (node, op, algorithm, fused nodes, why)."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        if self.plan == "reference":
            rows = [
                (s.node.name, s.node.op, "kernel", "", "plain kernel (reference plan)")
                for s in self._steps
            ]
        else:
            rows = [
                (r["node"], r["op"], r["algorithm"], "+".join(r["fused"]), r["why"])
                for r in self._fast(training=mode == "train", keep_all=False).describe()
            ]
        head = ("node", "op", "algorithm", "fused", "why")
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(head[:-1])
        ]
        lines = []
        if self.plan == "fast" and self.lean_off:
            lines.append(f"(memory={self.memory!r} is off: {self.lean_off}; the default plan)")
        for r in [head, *rows]:
            lines.append(
                "  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            )
        return "\n".join(lines)

    def profile(
        self, feeds: Mapping[str, np.ndarray], *, runs: int = 5, mode: str = "inference"
    ) -> list[tuple[str, str, str, float]]:
        """Where a run's time goes: (node, op, algorithm, median ms over `runs` runs after one
        warm-up) per step of the fast plan, in plan order (a fused node is timed with the node it
        was fused into)."""
        if self.plan != "fast":
            raise InputError("profile() times the fast plan's steps; this session is 'reference'")
        plan = self._fast(training=mode == "train", keep_all=False)
        fed = self.check_inputs(feeds)
        rng = self._current()
        plan.run(fed, rng, False)
        samples: dict[str, list[float]] = {}
        for _ in range(runs):
            t: dict[str, float] = {}
            plan.run(fed, rng, False, timings=t)
            for k, v in t.items():
                samples.setdefault(k, []).append(v)
        return [
            (s.name, s.op, s.algo, float(np.median(samples[s.name])) * 1e3)
            for s in plan.steps
            if s.name in samples
        ]

    def seed(self, seed: int | None) -> np.random.Generator:
        """Reset the generator that train-mode kernels (Dropout) draw from; returns it. The int
        seed of this thread's last reset again restores the initial state kept then in that
        thread's generator (the same generator as a fresh np.random.default_rng(seed): its bit
        generator's state is all it holds), 1 us against 10-20 for a fresh one: a batch-1 LeNet
        train run (seeded every call by the bench) is ~130 us. The generator is the seeding
        thread's alone: a seeded run draws from it and no other run does (unseeded runs
        continue from a copy of its state, `_current`), so threads sharing a session get their
        seeds' masks whatever the others run (a generator reset in place by one thread while
        another's run drew from it gave wrong masks)."""
        local = self._seeded
        hit = getattr(local, "hit", None)
        if hit is not None and type(seed) is int and hit[0] == seed:
            rng = hit[2]
            rng.bit_generator.state = hit[1]
        else:
            rng = np.random.default_rng(seed)
            local.hit = (seed, rng.bit_generator.state, rng) if type(seed) is int else None
        self._pending = rng
        return rng

    def _current(self) -> np.random.Generator:
        """The generator an unseeded run draws from: after a seed, a new one with the state the
        seeded generator has now (where a fresh default_rng(seed) would be after the same
        draws), made once; else the session's."""
        if self._pending is None:
            return self._rng
        with self._continuing:  # (another thread waits for the copy, then draws from it too)
            p = self._pending
            if p is not None:
                bg = p.bit_generator
                with bg.lock:  # (not mid-draw of a seeded run in another thread)
                    state = bg.state
                rng = np.random.Generator(type(bg)())
                rng.bit_generator.state = state
                self._rng = rng  # (before `_pending` clears: a reader without the lock)
                self._pending = None
            return self._rng

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate the feeds against the graph's inputs; return them as arrays."""
        again = self._checked_again(feeds)
        if again is not None:
            return again
        g = self.graph
        if not isinstance(feeds, Mapping):
            example = ", ".join(f"{i!r}: ..." for i in g.inputs)
            raise InputError(
                f"graph '{g.name}': feeds must be a mapping {{input name: array}}, not a "
                f"{type(feeds).__name__}: e.g. run(graph, {{{example}}})"
            )
        unknown = sorted(set(feeds) - set(g.inputs))
        missing = [i for i in g.inputs if i not in feeds]
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"missing input(s) {missing}")
            if unknown:
                parts.append(f"unknown input(s) {unknown}")
            raise InputError(f"graph '{g.name}': {'; '.join(parts)}; expected {list(g.inputs)}")
        out = {}
        sizes: dict[str, int] = {}  # symbol -> its size in this run: every "N" is one size
        for name in g.inputs:
            arr = np.asarray(feeds[name])
            want = g.values[name]
            wanted = _dtype(want.dtype)  # (str(arr.dtype) costs ~8 us a call)
            if arr.dtype != wanted if wanted is not None else str(arr.dtype) != want.dtype:
                raise InputError(f"input '{name}' must be {want.dtype}, got {arr.dtype}")
            if want.shape is not None:
                wrong = bind_shape(want.shape, arr.shape, sizes)
                if wrong:
                    raise InputError(
                        f"input '{name}' must have shape {format_shape(want.shape)}, got "
                        f"{format_shape(arr.shape)} ({wrong})"
                    )
            out[name] = arr
        if type(feeds) is dict and all(feeds[name] is out[name] for name in g.inputs):
            self._checked = tuple(
                (name, weakref.ref(a), a.shape, a.dtype, v, v.shape, v.dtype)
                for name, a in out.items()
                for v in (g.values[name],)
            )
        return out

    def _checked_again(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The feeds as `check_inputs` returns them when they are the arrays it passed last
        (the same objects, shapes and dtypes, against the same input Values, shapes and
        dtypes): a batch-1 run repeats its ~5 us of checks otherwise (lenet5@1 runs in ~50).
        None: check them."""
        last = self._checked
        g = self.graph
        if type(feeds) is not dict or len(feeds) != len(last) or len(g.inputs) != len(last):
            return None
        values = g.values
        for name, ref, shape, dtype, v, vshape, vdtype in last:  # (a loop over the inputs)
            a = feeds.get(name)
            if (
                a is None
                or ref() is not a
                or a.shape != shape
                or a.dtype != dtype
                or values.get(name) is not v
                or v.shape != vshape
                or v.dtype != vdtype
            ):
                return None
        return dict(feeds)

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        mode: str = "inference",
        seed: int | None = None,
        keep_all: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run the graph. `mode` is "inference" or "train"; `seed` reseeds the generator that
        train-mode Dropout draws from (None keeps drawing from the current one). With `keep_all`,
        every intermediate value is returned too (keyed by value name)."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        training = mode == "train"
        rng = self._current() if seed is None else self.seed(seed)  # (this run's: not re-read)
        g = self.graph
        if self.plan == "fast":
            fed = self.check_inputs(feeds)
            return self._fast(training=training, keep_all=keep_all).run(fed, rng, keep_all)
        env: dict[str, np.ndarray] = dict(self.check_inputs(feeds))
        params = g.params
        for step in self._steps:
            n = step.node
            args = [None if not i else (env[i] if i in env else params[i]) for i in n.inputs]
            attrs = ops.attrs_for_arrays(n, args) if step.late else step.attrs
            kwargs = dict(attrs, **step.extra)
            if step.kernel.context:
                kwargs["training"] = training
                kwargs["rng"] = rng
            try:
                result = step.kernel.fn(*args, **kwargs)
            except GraphNetError as exc:
                raise type(exc)(f"while executing {_describe(n, args, step.attrs)}: {exc}") from exc
            except Exception as exc:  # a kernel bug or an input the infer rules let through
                raise KernelError(
                    f"while executing {_describe(n, args, step.attrs)}: {type(exc).__name__}: {exc}"
                ) from exc
            outs = list(result) if isinstance(result, (tuple, list)) else [result]
            for name, arr in zip(n.outputs, outs, strict=False):
                env[name] = arr
            if training:
                for out_k, pname in step.state.items():
                    params[pname] = outs[out_k].astype(params[pname].dtype, copy=False)
            if not keep_all:
                for name in step.free_after:
                    env.pop(name, None)
        if keep_all:
            return env
        return {o: env[o] if o in env else params[o] for o in g.outputs}


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:  # not a NumPy type name: compared as text
        return None


def _describe(n: Node, args: list, attrs: Mapping[str, Any]) -> str:
    return describe_call(n.name, n.op, args, attrs)


def run(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    *,
    mode: str = "inference",
    seed: int | None = None,
    keep_all: bool = False,
) -> dict[str, np.ndarray]:
    """Plan and run a graph once (see `Session.run`)."""
    return Session(graph).run(feeds, mode=mode, seed=seed, keep_all=keep_all)
