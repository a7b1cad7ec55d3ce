"""What every pass shares: the registry (name -> pass), `PassReport` and `PipelineReport`.

A pass is a function `fn(graph, report) -> None` that rewrites `graph` IN PLACE and writes what it
did into `report` (`report.did(...)`) and what it declined, with the reason
(`report.declined(...)`). It is registered explicitly under a kebab-case name:

    @register_pass("fold-batchnorm")
    def fold_batchnorm(graph: Graph, report: PassReport) -> None: ...

A pass may also take keyword-only options after `report` (e.g. fold-constants'
`max_constant_bytes`); `run_pass(p, graph, **options)` hands each pass only the options its
signature names, so the manager can offer one set of options to a whole pipeline.

`run_pass(name, graph)` (or calling the registered `Pass`) fills in the before/after sizes.
The manager (`passes.manager.optimize`) works on a copy and checks the graph after every pass, so
a pass may assume a valid graph on entry and must leave one behind.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphnet.errors import PassError
from graphnet.ir import Graph

__all__ = [
    "PassFn",
    "Pass",
    "PassReport",
    "PipelineReport",
    "register_pass",
    "unregister_pass",
    "get_pass",
    "all_passes",
    "run_pass",
    "graph_macs",
]


class PassFn(Protocol):
    """The signature of a pass body: rewrite `graph` in place, describe it in `report`."""

    def __call__(self, graph: Graph, report: PassReport) -> None: ...


@dataclass
class PassReport:
    """What one pass did to one graph.

    `lines` holds one human sentence per change ("folded bn1 into conv1") and per declined
    opportunity ("declined: bn3: conv_3 output also feeds add_7"); `changed` is True as soon as
    the pass reported a change. Sizes: node count, parameter scalars and MACs per example
    (dynamic dims counted as 1) before and after.
    """

    name: str
    changed: bool = False
    lines: list[str] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds: float = 0.0

    DECLINED = "declined: "

    def did(self, line: str) -> None:
        """Record a change the pass made."""
        self.changed = True
        self.lines.append(line)

    def declined(self, line: str) -> None:
        """Record an opportunity the pass saw but left alone, with the reason."""
        self.lines.append(self.DECLINED + line)

    @property
    def changes(self) -> list[str]:
        return [ln for ln in self.lines if not ln.startswith(self.DECLINED)]

    @property
    def declines(self) -> list[str]:
        return [ln[len(self.DECLINED) :] for ln in self.lines if ln.startswith(self.DECLINED)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "changed": self.changed,
            "changes": self.changes,
            "declined": self.declines,
            "nodes": [self.nodes_before, self.nodes_after],
            "params": [self.params_before, self.params_after],
            "macs": [self.macs_before, self.macs_after],
            "seconds": round(self.seconds, 6),
        }

    def summary(self) -> str:
        """One line: the name and the size change, or "no change"."""
        if not self.changed:
            return f"{self.name}: no change"
        return (
            f"{self.name}: nodes {self.nodes_before} -> {self.nodes_after}, "
            f"params {self.params_before:,} -> {self.params_after:,}, "
            f"MACs {self.macs_before:,} -> {self.macs_after:,}"
        )

    def format(self) -> str:
        out = [self.summary()]
        out += [f"  - {ln}" for ln in self.lines]
        return "\n".join(out)


@dataclass
class PipelineReport:
    """The reports of every pass a pipeline ran, and the totals over the whole pipeline."""

    pipeline: str
    graph: str
    passes: list[PassReport] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    verified: bool = False

    @property
    def changed(self) -> bool:
        return any(p.changed for p in self.passes)

    def __getitem__(self, name: str) -> PassReport:
        """The (first) report of the pass `name`."""
        for p in self.passes:
            if p.name == name:
                return p
        raise KeyError(f"pass '{name}' did not run in pipeline {self.pipeline}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `json.dump`."""
        return {
            "pipeline": self.pipeline,
            "graph": self.graph,
            "changed": self.changed,
            "verified": self.verified,
            "totals": {
                "nodes": [self.nodes_before, self.nodes_after],
                "params": [self.params_before, self.params_after],
                "macs": [self.macs_before, self.macs_after],
                "ops": [dict(self.ops_before), dict(self.ops_after)],
            },
            "passes": [p.to_dict() for p in self.passes],
        }

    def format(self) -> str:
        """A human-readable report: totals, then each pass with its changes and declines."""

        def pct(a: int, b: int) -> str:
            return f" ({(b - a) / a:+.1%})" if a else ""

        head = (
            f"optimize '{self.graph}' (pipeline {self.pipeline}"
            f"{', numerics verified after every pass' if self.verified else ''}):\n"
            f"  nodes  {self.nodes_before:,} -> "
            f"{self.nodes_after:,}{pct(self.nodes_before, self.nodes_after)}\n"
            f"  params {self.params_before:,} -> "
            f"{self.params_after:,}{pct(self.params_before, self.params_after)}\n"
            f"  MACs   {self.macs_before:,} -> {self.macs_after:,} per example"
            f"{pct(self.macs_before, self.macs_after)}"
        )
        gone = {
            k: v - self.ops_after.get(k, 0)
            for k, v in self.ops_before.items()
            if v > self.ops_after.get(k, 0)
        }
        new = {
            k: v - self.ops_before.get(k, 0)
            for k, v in self.ops_after.items()
            if v > self.ops_before.get(k, 0)
        }
        if gone:
            head += "\n  removed ops: " + ", ".join(f"{k} x{v}" for k, v in sorted(gone.items()))
        if new:
            head += "\n  added ops:   " + ", ".join(f"{k} x{v}" for k, v in sorted(new.items()))
        return "\n".join([head] + [p.format() for p in self.passes])


@dataclass(frozen=True)
class Pass:
    """A registered pass: its name, its body, the first paragraph of its docstring and the
    keyword-only options its body accepts."""

    name: str
    fn: PassFn
    doc: str = ""
    options: frozenset[str] = frozenset()

    def __call__(self, graph: Graph, **options: Any) -> PassReport:
        return run_pass(self, graph, **options)


_PASSES: dict[str, Pass] = {}


def register_pass(name: str, *, doc: str | None = None) -> Callable[[PassFn], PassFn]:
    """Register `fn(graph, report)` as the pass `name` (once per name)."""

    def deco(fn: PassFn) -> PassFn:
        if name in _PASSES:
            raise PassError(f"a pass named '{name}' is registered twice")
        text = doc if doc is not None else (fn.__doc__ or "").strip().split("\n\n")[0]
        opts = frozenset(
            k for k, prm in inspect.signature(fn).parameters.items() if prm.kind is prm.KEYWORD_ONLY
        )
        _PASSES[name] = Pass(name, fn, " ".join(text.split()), opts)
        return fn

    return deco


def unregister_pass(name: str) -> None:
    """Remove a pass from the registry (tests register throw-away passes)."""
    _PASSES.pop(name, None)


def get_pass(name: str) -> Pass:
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"no pass named '{name}'; known passes: {sorted(_PASSES)}") from None


def all_passes() -> dict[str, Pass]:
    """A copy of the registry, name -> pass."""
    return dict(_PASSES)


def run_pass(
    p: Pass | str, graph: Graph, *, sizes: tuple[int, int, int] | None = None, **options: Any
) -> PassReport:
    """Run one pass in place on `graph` and return its report (sizes filled in).

    `options` the pass does not accept are ignored (see the module docstring). `sizes`: the
    graph's (nodes, parameter scalars, MACs) when the caller already knows them (the manager
    passes the previous pass's "after"): counting MACs walks every node, and doing it twice per
    pass was a third of optimizing a small model. A pass that reports no change keeps them."""
    p = get_pass(p) if isinstance(p, str) else p
    report = PassReport(p.name)
    before = _sizes(graph) if sizes is None else sizes
    report.nodes_before, report.params_before, report.macs_before = before
    t0 = time.perf_counter()
    p.fn(graph, report, **{k: v for k, v in options.items() if k in p.options})
    report.seconds = time.perf_counter() - t0
    # The manager checks that "no change" is true; run alone, a pass is trusted on it.
    after = _sizes(graph) if report.changed else before
    report.nodes_after, report.params_after, report.macs_after = after
    return report


def _sizes(graph: Graph) -> tuple[int, int, int]:
    return len(graph.nodes), graph.num_params(), graph_macs(graph)


_MACS_CACHE: dict[tuple, int] = {}


def graph_macs(graph: Graph) -> int:
    """Multiply-accumulates of one run per example (see `graphnet.summary.node_macs`).

    The report counts MACs after every pass that changed something, and resolving every node's
    attributes each time was a tenth of optimizing a large model. A node's MACs are a function of
    its op, its attributes and its input / output shapes, so they are cached under exactly that
    key (nodes whose attributes are not hashable, e.g. hold arrays, are counted afresh)."""
    from graphnet import ops
    from graphnet.summary import node_macs

    total = 0
    values = graph.values
    for n in graph.nodes:
        if ops.get(n.op).macs is None:
            continue
        shapes = tuple(values[i].shape if i and i in values else None for i in n.inputs)
        key = (
            n.op,
            shapes,
            tuple(values[o].shape if o in values else None for o in n.outputs),
            tuple(sorted(n.attrs.items())),
        )
        try:
            macs = _MACS_CACHE.get(key)
        except TypeError:  # an unhashable attribute (an array): no caching
            total += node_macs(graph, n)
            continue
        if macs is None:
            macs = node_macs(graph, n)
            if len(_MACS_CACHE) > 50_000:
                _MACS_CACHE.clear()
            _MACS_CACHE[key] = macs
        total += macs
    return total
