"""Per-layer summary of a graph: op, output shape, parameters, multiply-accumulates.

Parameters are counted at the first node that reads them (a shared weight is counted once), so
a BatchNormalization counts its four per-channel arrays (scale, bias, running mean, running
variance): 4 * C, as the lecture counts it. MACs are per example (a dynamic batch counts as 1),
from each op's `macs` rule; ops without one count 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from graphnet import ops
from graphnet.ir import Graph, Value, format_shape

__all__ = ["LayerRow", "summarize", "format_summary", "node_macs", "graph_macs"]


@dataclass
class LayerRow:
    name: str
    op: str
    output_shape: str
    params: int
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def _per_example(v: Value | None) -> Value | None:
    if v is None or v.shape is None:
        return v
    return Value(v.name, tuple(1 if d is None else d for d in v.shape), v.dtype)


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


def summarize(graph: Graph) -> list[LayerRow]:
    """One row per node, in graph order."""
    seen: set[str] = set()
    rows = []
    for n in graph.nodes:
        params = 0
        for i in n.inputs:
            if i in graph.params and i not in seen:
                seen.add(i)
                params += int(graph.params[i].size)
        macs = node_macs(graph, n)
        shape = ", ".join(
            format_shape(graph.values[o].shape) for o in n.outputs if o in graph.values
        )
        op = n.op if n.op != "Opaque" else f"Opaque[{n.attrs.get('op_type')}]"
        rows.append(LayerRow(n.name, op, shape, params, macs))
    return rows


def format_summary(graph: Graph, rows: list[LayerRow] | None = None) -> str:
    """A fixed-width table with totals."""
    rows = summarize(graph) if rows is None else rows
    head = ("layer", "op", "output shape", "params", "MACs")
    body = [(r.name, r.op, r.output_shape, f"{r.params:,}", f"{r.macs:,}") for r in rows]
    total_params = graph.num_params()
    total_macs = sum(r.macs for r in rows)
    foot = ("total", f"{len(rows)} nodes", "", f"{total_params:,}", f"{total_macs:,}")
    widths = [max(len(row[k]) for row in [head, *body, foot]) for k in range(5)]

    def line(row: tuple) -> str:
        cells = [row[k].ljust(widths[k]) if k < 3 else row[k].rjust(widths[k]) for k in range(5)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    ins = ", ".join(f"{i}{format_shape(graph.values[i].shape)}" for i in graph.inputs)
    out = [
        f"graph '{graph.name}'  inputs: {ins}",
        line(head),
        rule,
        *map(line, body),
        rule,
        line(foot),
    ]
    return "\n".join(out)
