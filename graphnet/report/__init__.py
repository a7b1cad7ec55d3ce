"""Pictures of a network: the graph as a layered drawing (SVG) or as DOT text.

    from graphnet.report import graph_svg, graph_dot
    open("graph.svg", "w").write(graph_svg(graph))

See `graphnet.report.layout` for how the graph is laid out.
"""

from __future__ import annotations

from graphnet.report.drawing import Mark, draw_graph, graph_dot, graph_svg
from graphnet.report.layout import Layout, layered_layout

__all__ = ["graph_svg", "graph_dot", "draw_graph", "layered_layout", "Layout", "Mark"]
