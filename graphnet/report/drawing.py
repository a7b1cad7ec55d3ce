"""The graph as a picture: an SVG of the layered layout (DOT text for Graphviz users is in
`graphnet.report.dot`).

Every node of the graph is one `<g class="node">` (so a test, or a script, counts the drawn nodes
with one selector), coloured by its op family (the `family` of its entry in the op table), with
the op and its main attributes on the first line and the node's name on the second. Each edge
is labelled once, under its producer, with the shape of the value it carries. Hovering a node
shows its output shapes, parameters, MACs and attributes (an SVG `<title>`, so it works in a plain
SVG viewer too). Graph inputs and outputs are drawn as pills (`class="io"`), parameters are not
drawn (they are counted on their reader).

A `Mark` per node (from `graphnet.report.changes`) adds a status class (`st-removed`,
`st-changed`, `st-added`, `st-declined`), a badge (e.g. `+BN` on a Conv that absorbed a
BatchNormalization) and notes to the hover text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from graphnet import ops
from graphnet.ir import Graph, Node, format_shape
from graphnet.report.layout import Layout, layered_layout

__all__ = [
    "Mark",
    "Drawing",
    "FAMILY_COLOURS",
    "draw_graph",
    "graph_svg",
    "op_label",
    "op_family",
    "io_label",
    "SVG_CSS",
]

# (stroke, fill) per op family: the op table's families, plus "opaque" and "io".
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "conv": ("#2f6db5", "#dbe8f7"),
    "pooling": ("#3f8f3a", "#dcf0da"),
    "activation": ("#c96d12", "#fde7d0"),
    "normalization": ("#8a4f9e", "#eedff3"),
    "linear": ("#c23b3d", "#f8dcdc"),
    "tensor": ("#23817b", "#d5efed"),
    "math": ("#6b6b6b", "#ececec"),
    "shape": ("#8c7b57", "#f3eee3"),
    "opaque": ("#333333", "#cfcfcf"),
    "io": ("#444444", "#ffffff"),
}

_FAMILY_CSS = "".join(
    f"svg.gn-graph .f-{fam} rect.box {{ stroke: {stroke}; fill: {fill}; }}\n"
    for fam, (stroke, fill) in FAMILY_COLOURS.items()
)
# Family colours first: a status (same specificity, later) then overrides the outline.
SVG_CSS = (
    _FAMILY_CSS
    + """
svg.gn-graph { font-family: ui-sans-serif, system-ui, "DejaVu Sans", sans-serif; }
svg.gn-graph .edge { fill: none; stroke: #8a8f98; stroke-width: 1.2; }
svg.gn-graph .elabel { font-size: 9px; fill: #6a6f78; }
svg.gn-graph .node rect, svg.gn-graph .io rect { stroke-width: 1.4; }
svg.gn-graph .node text { font-size: 11px; text-anchor: middle; fill: #1d1f23; }
svg.gn-graph .node text.op { font-weight: 600; }
svg.gn-graph .node text.nm { font-size: 9px; fill: #4b4f57; }
svg.gn-graph .io text { font-size: 10px; text-anchor: middle; fill: #1d1f23; }
svg.gn-graph .badge rect { fill: #e0a800; stroke: none; }
svg.gn-graph .badge text { font-size: 9px; font-weight: 700; fill: #1d1f23; }
svg.gn-graph .st-removed { opacity: 0.45; }
svg.gn-graph .st-removed rect.box { stroke: #c0392b; stroke-dasharray: 4 3; stroke-width: 2; }
svg.gn-graph .st-changed rect.box { stroke: #e0a800; stroke-width: 3; }
svg.gn-graph .st-added rect.box { stroke: #1e9e4a; stroke-width: 3; }
svg.gn-graph .st-declined rect.box { stroke: #d35400; stroke-dasharray: 2 2; stroke-width: 2.5; }
svg.gn-graph .hl rect.box { stroke: #ff2d95; stroke-width: 4; }
svg.gn-graph .edge.hl-edge { stroke: #ff2d95; stroke-width: 2.5; }
"""
)

_BOX_H = 34.0
_IO_H = 24.0
_CHAR_OP = 6.9  # px per character at 11px semi-bold
_CHAR_NAME = 5.4  # px per character at 9px
_NAME_MAX = 28  # longer names are cut in the box (the hover text has them whole)

# Short names for badges ("+BN") and labels.
_SHORT = {
    "BatchNormalization": "BN",
    "InstanceNormalization": "IN",
    "LayerNormalization": "LN",
    "GroupNormalization": "GN",
    "Dropout": "Drop",
    "ConstantOfShape": "ConstOfShape",
}


@dataclass
class Mark:
    """How a node is shown in a before/after view: `status` one of "", "removed", "changed",
    "added", "declined"; `badge` a short text on the box; `notes` lines for the hover text."""

    status: str = ""
    badge: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Drawing:
    """An SVG drawing of a graph and the layout behind it (keys: node names, and ("in", name) /
    ("out", name) for the graph's input and output pills)."""

    svg: str
    layout: Layout
    node_count: int


def op_family(node: Node) -> str:
    """The op family of a node (the op table's `family`), "opaque" for ops outside the table."""
    if node.op == "Opaque" or not ops.has(node.op):
        return "opaque"
    return ops.get(node.op).family or "math"


def _dims(t) -> str:
    return "\u00d7".join(str(int(d)) for d in t)


def op_label(graph: Graph, node: Node) -> str:
    """The first line of a node's box: its op and the attributes that shape it
    ("Conv 3×3 /2 g32", "MaxPool 2×2 /2", "Concat axis 1")."""
    if node.op == "Opaque":
        return str(node.attrs.get("op_type", "Opaque"))
    label = node.op
    try:
        attrs = ops.attrs_of(node, [graph.values.get(i) if i else None for i in node.inputs])
    except Exception:  # an attribute the spec rejects: the label falls back to the op name
        attrs = dict(node.attrs)
    fam = op_family(node)
    if fam in ("conv", "pooling") and attrs.get("kernel_shape"):
        label += " " + _dims(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides") or ())
        if any(int(s) != 1 for s in strides):
            label += " /" + (str(strides[0]) if len(set(strides)) == 1 else _dims(strides))
        if int(attrs.get("group", 1) or 1) != 1:
            label += f" g{attrs['group']}"
    elif node.op == "Concat":
        label += f" axis {attrs.get('axis')}"
    elif node.op == "Dropout":
        p = attrs.get("drop_prob")
        if p is not None:
            label += f" {float(p):g}"
    return label


def _node_size(graph: Graph, node: Node) -> tuple[float, float]:
    name = _short_name(node.name)
    w = max(len(op_label(graph, node)) * _CHAR_OP, len(name) * _CHAR_NAME) + 18
    return max(64.0, round(w)), _BOX_H


def _short_name(name: str) -> str:
    return name if len(name) <= _NAME_MAX else name[: _NAME_MAX - 1] + "\u2026"


def io_label(graph: Graph, name: str) -> str:
    """The text of a graph input's or output's pill: its name and shape."""
    v = graph.values.get(name)
    return f"{name} {format_shape(v.shape) if v is not None else '?'}"


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def node_title(graph: Graph, node: Node, params: int, macs: int, mark: Mark | None = None) -> str:
    """The hover text of a node: name and op, output shapes, parameters, MACs, attributes, and
    what the optimizer did to it."""
    lines = [f"{node.name} ({op_label(graph, node) if node.op == 'Opaque' else node.op})"]
    for o in node.outputs:
        v = graph.values.get(o)
        lines.append(f"out {o}: {format_shape(v.shape) if v is not None else '?'}")
    lines.append(f"params {_fmt_int(params)} \u00b7 MACs {_fmt_int(macs)}")
    shown = {k: v for k, v in node.attrs.items() if k != "value"}
    if shown:
        text = ", ".join(f"{k}={_attr_text(v)}" for k, v in sorted(shown.items()))
        lines.append(text if len(text) < 160 else text[:157] + "...")
    if mark is not None:
        lines += mark.notes
    return "\n".join(lines)


def _attr_text(v) -> str:
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(map(str, v)) + "]"
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"array{format_shape(v.shape)}"
    return str(v)


def _layout_inputs(graph: Graph):
    """Sizes (graph order: inputs, nodes, outputs), edges with the value each carries, and the
    floating nodes (those that no graph input reaches)."""
    sizes: dict = {}
    for i in graph.inputs:
        sizes[("in", i)] = (max(60.0, len(io_label(graph, i)) * 6.2 + 16), _IO_H)
    for n in graph.nodes:
        sizes[n.name] = _node_size(graph, n)
    for o in graph.outputs:
        sizes[("out", o)] = (max(60.0, len(io_label(graph, o)) * 6.2 + 16), _IO_H)
    source: dict[str, object] = {("in", i)[1]: ("in", i) for i in graph.inputs}
    edges: list[tuple[object, object, str]] = []
    reached = set(graph.inputs)
    floating = set()
    for n in graph.nodes:
        ins = [i for i in n.inputs if i]
        if not any(i in reached for i in ins):
            floating.add(n.name)
        else:
            reached.update(n.outputs)
        for i in dict.fromkeys(ins):
            if i in source:
                edges.append((source[i], n.name, i))
        for o in n.outputs:
            source[o] = n.name
    for o in graph.outputs:
        if o in source:
            edges.append((source[o], ("out", o), o))
    return sizes, edges, floating


def _path(points: list[tuple[float, float]]) -> str:
    """A smooth path through the route: vertical tangents at every point (edges leave and enter
    boxes vertically, and pass straight through the layers they cross)."""
    (x0, y0), rest = points[0], points[1:]
    # Whole pixels: a tenth of a pixel is invisible and costs a fifth of a big report's size.
    d = [f"M{x0:.0f},{y0:.0f}"]
    for x1, y1 in rest:
        if abs(x1 - x0) < 0.5:
            d.append(f"V{y1:.0f}")
        else:
            my = (y0 + y1) / 2
            d.append(f"C{x0:.0f},{my:.0f} {x1:.0f},{my:.0f} {x1:.0f},{y1:.0f}")
        x0, y0 = x1, y1
    return "".join(d)


def draw_graph(
    graph: Graph,
    *,
    marks: Mapping[str, Mark] | None = None,
    id_prefix: str = "g",
    standalone: bool = True,
) -> Drawing:
    """Lay out and draw `graph`. `marks`: per node name, how the optimizer changed it.
    `id_prefix` keeps element ids unique when several drawings share a page; `standalone` adds
    the drawing's stylesheet so the SVG file renders alone (a page that holds several drawings
    includes `SVG_CSS` once instead)."""
    from graphnet.summary import node_macs

    marks = marks or {}
    sizes, edges, floating = _layout_inputs(graph)
    layout = layered_layout(sizes, [(u, v) for u, v, _ in edges], floating=floating)
    boxes = layout.boxes
    w, h = round(layout.width), round(layout.height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gn-graph" id="{id_prefix}" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" data-nodes="{len(graph.nodes)}">'
    ]
    if standalone:
        out.append(f"<style>{SVG_CSS}</style>")
    arrow = f"{id_prefix}-arrow"
    out.append(
        # Arrowheads in drawing units: a highlighted (thicker) edge keeps the same head.
        f'<defs><marker id="{arrow}" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="8" '
        f'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path d="M0,0L8,4L0,8z" fill="#8a8f98"/></marker></defs>'
    )
    # Every drawn item has an index (data-k) and every edge names its two ends by index (data-e),
    # so the page can light up a node's edges and list its neighbours.
    index = {key: k for k, key in enumerate(boxes)}
    out.append('<g class="edges">')
    for route in layout.edges:
        out.append(
            f'<path class="edge" data-e="{index[route.src]} {index[route.dst]}" '
            f'd="{_path(route.points)}" marker-end="url(#{arrow})"/>'
        )
    out.append("</g>")
    # One label per value, under the box that produces it (a node's k-th output one line lower),
    # on the side of the start where no edge leaves: right of it unless only edges to the right
    # leave (then left, right-aligned), so the label does not sit on a curve.
    out.append('<g class="elabels">')
    labelled: set[str] = set()
    out_index = {o: k for n in graph.nodes for k, o in enumerate(n.outputs)}
    leaving: dict[object, list[float]] = {}
    for route in layout.edges:
        leaving.setdefault(route.src, []).append(route.points[1][0] - route.points[0][0])
    for u, _, value in edges:
        if value in labelled or u not in boxes:
            continue
        labelled.add(value)
        b = boxes[u]
        k = 0 if isinstance(u, tuple) else out_index.get(value, 0)
        v = graph.values.get(value)
        text = escape(format_shape(v.shape) if v is not None else "?")
        y = b.bottom + 11 + 10 * k
        dx = leaving.get(u, [])
        if any(d > 2 for d in dx) and not any(d < -2 for d in dx):
            out.append(
                f'<text class="elabel" x="{b.x - 5:.0f}" y="{y:.0f}" text-anchor="end">'
                f"{text}</text>"
            )
        else:
            out.append(f'<text class="elabel" x="{b.x + 5:.0f}" y="{y:.0f}">{text}</text>')
    out.append("</g>")
    out.append('<g class="nodes">')
    for key, b in boxes.items():
        if isinstance(key, tuple):
            kind, name = key
            out.append(
                f'<g class="io f-io io-{kind}" data-k="{index[key]}" data-value={quoteattr(name)} '
                f'transform="translate({b.left:.0f},{b.y:.0f})">'
                f'<rect class="box" width="{b.w:.0f}" height="{b.h:.0f}" rx="{b.h / 2:.0f}" '
                f'fill="#fff" stroke="#444"/>'
                f'<text x="{b.w / 2:g}" y="{b.h / 2 + 4:g}">'
                f"{escape(io_label(graph, name))}</text></g>"
            )
    params_at = _params_per_node(graph)
    for n in graph.nodes:
        b = boxes[n.name]
        mark = marks.get(n.name)
        fam = op_family(n)
        stroke, fill = FAMILY_COLOURS.get(fam, FAMILY_COLOURS["math"])
        # A page styles boxes by their family class; a standalone file also says it inline
        # for viewers that ignore <style>.
        colours = f' fill="{fill}" stroke="{stroke}"' if standalone else ""
        cls = f"node f-{fam}" + (f" st-{mark.status}" if mark and mark.status else "")
        title = node_title(graph, n, params_at.get(n.name, 0), node_macs(graph, n), mark)
        out.append(
            f'<g class="{cls}" data-k="{index[n.name]}" data-node={quoteattr(n.name)} '
            f'data-op="{escape(n.op)}" '
            f'transform="translate({b.left:.0f},{b.y:.0f})">'
            f"<title>{escape(title)}</title>"
            f'<rect class="box" width="{b.w:.0f}" height="{b.h:.0f}" rx="4"{colours}/>'
            f'<text class="op" x="{b.w / 2:g}" y="14">{escape(op_label(graph, n))}</text>'
            f'<text class="nm" x="{b.w / 2:g}" y="27">{escape(_short_name(n.name))}</text>'
        )
        if mark and mark.badge:
            bw = len(mark.badge) * 6 + 8
            out.append(
                f'<g class="badge" transform="translate({b.w - bw / 2:.1f},-8)">'
                f'<rect width="{bw}" height="14" rx="7"/>'
                f'<text x="{bw / 2:.1f}" y="10.5" text-anchor="middle">{escape(mark.badge)}</text>'
                "</g>"
            )
        out.append("</g>")
    out.append("</g></svg>")
    return Drawing("".join(out), layout, len(graph.nodes))


def _params_per_node(graph: Graph) -> dict[str, int]:
    """Parameter scalars per node, counted at a parameter's first reader (as `summary` does)."""
    seen: set[str] = set()
    out: dict[str, int] = {}
    for n in graph.nodes:
        total = 0
        for i in n.inputs:
            if i in graph.params and i not in seen:
                seen.add(i)
                total += int(graph.params[i].size)
        out[n.name] = total
    return out


def graph_svg(graph: Graph, *, marks: Mapping[str, Mark] | None = None) -> str:
    """A standalone SVG document of the graph (`graphnet viz`)."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + draw_graph(graph, marks=marks).svg + "\n"
