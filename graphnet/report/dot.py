"""The graph as Graphviz DOT text (`graphnet viz --format dot`), for users who render with Graphviz:
the same labels, family colours and optimize marks as the SVG drawing."""

from __future__ import annotations

from collections.abc import Mapping

from graphnet.ir import Graph
from graphnet.report.drawing import FAMILY_COLOURS, Mark, io_label, op_family, op_label
from graphnet.value import format_shape

__all__ = ["graph_dot"]


def _dot_id(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_STATUS_DOT = {
    "removed": 'color="#c0392b", style="rounded,filled,dashed", penwidth=2',
    "changed": 'color="#e0a800", penwidth=3',
    "added": 'color="#1e9e4a", penwidth=3',
    "declined": 'color="#d35400", style="rounded,filled,dotted", penwidth=2.5',
}


def graph_dot(graph: Graph, *, marks: Mapping[str, Mark] | None = None) -> str:
    """The graph as Graphviz DOT text (`graphnet viz --format dot`): boxes filled by op family,
    edges labelled with shapes, `marks` as outlines (and badges in the label); render it with
    `dot -Tsvg` where Graphviz is installed."""
    marks = marks or {}
    lines = [
        f"digraph {_dot_id(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, color="#8a8f98"];',
    ]
    source: dict[str, str] = {}
    for i in graph.inputs:
        key = f"in:{i}"
        source[i] = key
        lines.append(
            f"  {_dot_id(key)} [label={_dot_id(io_label(graph, i))}, shape=oval, "
            'fillcolor="#ffffff"];'
        )
    for n in graph.nodes:
        stroke, fill = FAMILY_COLOURS.get(op_family(n), FAMILY_COLOURS["math"])
        mark = marks.get(n.name)
        label = f"{op_label(graph, n)}\n{n.name}"
        style = f'color="{stroke}"'
        if mark is not None:
            label += f"\n{mark.badge}" if mark.badge else ""
            style = _STATUS_DOT.get(mark.status, style)
        lines.append(f'  {_dot_id(n.name)} [label={_dot_id(label)}, {style}, fillcolor="{fill}"];')
        for i in dict.fromkeys(i for i in n.inputs if i):
            if i in source:
                v = graph.values.get(i)
                shape = format_shape(v.shape) if v is not None else "?"
                lines.append(
                    f"  {_dot_id(source[i])} -> {_dot_id(n.name)} [label={_dot_id(shape)}];"
                )
        for o in n.outputs:
            source[o] = n.name
    for o in graph.outputs:
        key = f"out:{o}"
        lines.append(
            f"  {_dot_id(key)} [label={_dot_id(io_label(graph, o))}, shape=oval, "
            'fillcolor="#ffffff"];'
        )
        if o in source:
            lines.append(f"  {_dot_id(source[o])} -> {_dot_id(key)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
