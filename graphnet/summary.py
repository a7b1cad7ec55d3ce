"""Per-layer summary of a graph: op, output shape, parameters, multiply-accumulates.

Parameters are what the network's computing nodes read that does not depend on its inputs: a
parameter array read directly (a Conv's weight), or the result of a constant sub-graph (a weight
that `ConstantOfShape` / `Expand` generates, a kernel that weight standardization computes from a
stored one). Each is counted once, at the first computing node that reads it, with the size of
what that node reads; the nodes of a constant sub-graph count 0 and so do the arrays only they
read (shape tensors, the raw kernel before standardization), and integer constants (shapes,
axes, indices) are not parameters. So the rows add up to the total,
and a model whose weights are generated counts its weights, not their shape vectors. A
BatchNormalization counts its four per-channel arrays (scale, bias, running mean, running
variance): 4 * C, as docs/formulas.md counts it. MACs are per example (every non-static dim counts
as 1), from each op's `macs` rule; ops without one count 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from graphnet import ops
from graphnet.value import Value, format_shape

if TYPE_CHECKING:  # `Graph.summary` imports this module: no import of graphnet.ir back
    from graphnet.ir import Graph

__all__ = [
    "LayerRow",
    "summarize",
    "format_summary",
    "summary_dict",
    "node_macs",
    "graph_macs",
    "constant_values",
    "count",
]


@dataclass
class LayerRow:
    """One node: its name, op, output shapes, parameters (scalars and bytes) and MACs."""

    name: str
    op: str
    output_shapes: list[tuple | None]
    params: int
    macs: int
    param_bytes: int = 0
    constant: bool = False  # a node of a constant sub-graph (its result counts at its reader)
    outputs: list[str] = field(default_factory=list)

    @property
    def output_shape(self) -> str:
        return ", ".join(format_shape(s) for s in self.output_shapes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "outputs": list(self.outputs),
            "output_shapes": [_json_shape(s) for s in self.output_shapes],
            "params": self.params,
            "param_bytes": self.param_bytes,
            "macs": self.macs,
            "constant": self.constant,
        }


def _json_shape(shape: tuple | None) -> list | None:
    """A shape as a JSON list: ints, symbols as strings, null for an unknown dim; null for an
    unknown rank."""
    if shape is None:
        return None
    return [d if isinstance(d, (int, str)) else None for d in shape]


def _per_example(v: Value | None) -> Value | None:
    if v is None or v.shape is None:
        return v
    return Value(v.name, tuple(d if isinstance(d, int) else 1 for d in v.shape), v.dtype)


def node_macs(graph: Graph, n) -> int:
    """Multiply-accumulates of one node per example (dynamic dims count 1), from its op's `macs`
    rule; 0 for ops without one and for nodes whose shapes are unknown."""
    spec = ops.get(n.op)
    if spec.macs is None:
        return 0
    ins = [_per_example(graph.values.get(i)) if i else None for i in n.inputs]
    outs = [_per_example(graph.values.get(o)) for o in n.outputs]
    if any(v is None for v in outs) or any(v is not None and v.shape is None for v in ins + outs):
        return 0
    return int(spec.macs(ins, outs, ops.attrs_of(n, ins)))


def graph_macs(graph: Graph) -> int:
    """Multiply-accumulates of one run per example."""
    return sum(node_macs(graph, n) for n in graph.nodes)


def constant_values(graph: Graph) -> set[str]:
    """Names of the values that do not depend on the graph's inputs: parameters and the outputs
    of nodes (of deterministic ops) whose inputs are all such values."""
    const = set(graph.params)
    for n in graph.nodes:
        spec = ops.get(n.op)
        if n.op in ("Opaque", "Dropout") or getattr(spec, "state", None):
            continue  # unknown semantics, random masks, train-mode state: not constants
        if all(not i or i in const for i in n.inputs):
            const.update(o for o in n.outputs if o)
    return const


def _size(graph: Graph, name: str) -> tuple[int, int]:
    """(elements, bytes) of a constant value: from its array, else its static shape."""
    if name in graph.params:
        arr = graph.params[name]
        return int(arr.size), int(arr.nbytes)
    v = graph.values.get(name)
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return 0, 0
    n = int(np.prod(v.shape, dtype=np.int64))
    return n, n * np.dtype(v.dtype).itemsize


def _is_float(graph: Graph, name: str) -> bool:
    v = graph.values.get(name)
    return v is not None and np.dtype(v.dtype).kind in "fc"


def summarize(graph: Graph) -> list[LayerRow]:
    """One row per node, in graph order."""
    const = constant_values(graph)
    seen: set[str] = set()
    rows = []
    for n in graph.nodes:
        is_const = all(o in const for o in n.outputs if o) and any(o for o in n.outputs)
        params = nbytes = 0
        if not is_const:
            for i in n.inputs:
                if i and i in const and i not in seen and _is_float(graph, i):
                    seen.add(i)
                    k, b = _size(graph, i)
                    params += k
                    nbytes += b
        op = n.op if n.op != "Opaque" else f"Opaque[{n.attrs.get('op_type')}]"
        shapes = [graph.values[o].shape if o in graph.values else None for o in n.outputs if o]
        rows.append(
            LayerRow(
                n.name,
                op,
                shapes,
                params,
                node_macs(graph, n),
                nbytes,
                is_const,
                [o for o in n.outputs if o],
            )
        )
    return rows


def _values(graph: Graph, names: list[str]) -> str:
    if not names:
        return "(none)"
    return ", ".join(
        f"{i} {graph.values[i].dtype}{format_shape(graph.values[i].shape)}" for i in names
    )


def count(n: int, noun: str) -> str:
    """ "1 node", "2 nodes", "1,746 nodes": a count in words, for messages and pages."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_summary(
    graph: Graph, rows: list[LayerRow] | None = None, *, file_bytes: int | None = None
) -> str:
    """A fixed-width table with totals, the graph's inputs and outputs and the model's size
    (parameter bytes; the file's when `file_bytes` is given)."""
    rows = summarize(graph) if rows is None else rows
    head = ("layer", "op", "output shape", "params", "MACs")
    body = [(r.name, r.op, r.output_shape, f"{r.params:,}", f"{r.macs:,}") for r in rows]
    total_params = sum(r.params for r in rows)
    total_bytes = sum(r.param_bytes for r in rows)
    total_macs = sum(r.macs for r in rows)
    foot = ("total", count(len(rows), "node"), "", f"{total_params:,}", f"{total_macs:,}")
    widths = [max(len(row[k]) for row in [head, *body, foot]) for k in range(5)]

    def line(row: tuple) -> str:
        cells = [row[k].ljust(widths[k]) if k < 3 else row[k].rjust(widths[k]) for k in range(5)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    size = f"parameters: {total_params:,} ({_bytes(total_bytes)})"
    if file_bytes is not None:
        size += f"; file: {file_bytes:,} bytes ({_bytes(file_bytes)})"
    generated = sum(1 for r in rows if r.constant)
    if generated:
        verb = "computes" if generated == 1 else "compute"
        size += f"; {count(generated, 'node')} {verb} constants (counted where they are read)"
    out = [
        f"graph '{graph.name}'",
        f"inputs:  {_values(graph, graph.inputs)}",
        f"outputs: {_values(graph, graph.outputs)}",
        line(head),
        rule,
        *map(line, body),
        rule,
        line(foot),
        size,
    ]
    return "\n".join(out)


def summary_dict(
    graph: Graph, rows: list[LayerRow] | None = None, *, file_bytes: int | None = None
) -> dict[str, Any]:
    """The summary as plain data for `json.dumps` (shapes as lists, null for unknown dims)."""
    rows = summarize(graph) if rows is None else rows

    def values(names: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "name": i,
                "dtype": graph.values[i].dtype,
                "shape": _json_shape(graph.values[i].shape),
            }
            for i in names
        ]

    return {
        "graph": graph.name,
        "inputs": values(graph.inputs),
        "outputs": values(graph.outputs),
        "params": sum(r.params for r in rows),
        "param_bytes": sum(r.param_bytes for r in rows),
        "file_bytes": file_bytes,
        "macs": sum(r.macs for r in rows),
        "layers": [r.to_dict() for r in rows],
    }
