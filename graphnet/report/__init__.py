"""Pictures of a network: a self-contained HTML report and the graph alone as SVG or DOT.

    from graphnet.report import build_report, graph_svg, graph_dot
    report = build_report(graph)            # optimize, run, draw: a Report
    report.write("report.html")             # atomic; or graph.report("report.html")
    open("graph.svg", "w").write(graph_svg(graph))

The report shows the graph before and after `optimize` (what each pass changed marked on the
nodes), the per-layer table, the activations of every conv, pool and FC layer on one input
(`inputs`, else a seeded random one), the class probabilities, BatchNorm statistics, and learning
curves when a training history is given. See `graphnet.report.html` for the page and
`graphnet.report.layout` for how the graph is laid out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graphnet.errors import GraphNetError
from graphnet.ir import Graph
from graphnet.report.dot import graph_dot
from graphnet.report.drawing import Mark, draw_graph, graph_svg
from graphnet.report.layout import Layout, layered_layout

if TYPE_CHECKING:
    from graphnet.passes.base import PipelineReport
    from graphnet.report.activations import Activations
    from graphnet.report.changes import Changes

__all__ = [
    "Report",
    "build_report",
    "write_report",
    "graph_svg",
    "graph_dot",
    "draw_graph",
    "layered_layout",
    "Layout",
    "Mark",
]


@dataclass
class Report:
    """A built report: the page (`html`) and what it was made from (`optimize_error`: why the
    pipeline failed, when it did: the page then shows the graph as it is)."""

    html: str
    graph: Graph
    optimized: Graph | None
    pipeline: PipelineReport | None
    changes: Changes | None
    activations: Activations
    optimize_error: str | None = None

    @property
    def size(self) -> str:
        """The page's size for people: "85 KB", "3.1 MB"."""
        n = len(self.html.encode("utf-8"))
        return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"

    def write(self, path: str | os.PathLike) -> None:
        """Write the page atomically (a failure leaves no half-written file)."""
        from graphnet.onnx_io.export import atomic_write

        atomic_write(path, self.html.encode("utf-8"))


def build_report(
    graph: Graph,
    *,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    optimize: bool = True,
    pipeline: str | Sequence[str] = "inference",
    history: Any = None,
    title: str | None = None,
    source: str = "",
    input_source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Build the report of `graph` (left unchanged).

    `inputs`: arrays by input name for the activations (default: seeded standard-normal inputs,
    `seed`, dynamic dims of size 1); a bad input raises `InputError` naming it. `optimize`: also
    run the pass pipeline `pipeline` and show the optimized graph (a pass that fails is reported
    on the page, not raised). `history`: a training history (path or parsed JSON, see
    `graphnet.report.history`); a history that cannot be read raises `InputError`.
    `title`/`source` head the page; `input_source` says where `inputs` came from. `progress` is
    called with the name of each step as it starts (the CLI's progress bar)."""
    from graphnet.report.activations import compute_activations
    from graphnet.report.changes import diff_graphs
    from graphnet.report.history import history_charts, load_history, load_steps
    from graphnet.report.html import ReportParts, render_html

    if inputs is not None:
        from graphnet.runtime import Session

        Session(graph).check_inputs(inputs)  # InputError naming the input, before any work
    charts: list[str] = []
    if history is not None:
        charts = history_charts(*load_history(history))
        steps = load_steps(history)  # graphnet's fit(eval_every=k): test metrics every k steps
        if steps is not None:
            charts += history_charts(*steps, xlabel="step")
    parts = ReportParts(graph, title or f"graphnet report: {graph.name}", source, history=charts)
    step = progress or (lambda what: None)
    if optimize:
        from graphnet.passes.manager import optimize as run_pipeline

        step("optimizing")
        try:
            parts.after, parts.pipeline = run_pipeline(graph, pipeline)
            parts.changes = diff_graphs(graph, parts.after, parts.pipeline)
        except GraphNetError as exc:
            parts.optimize_error = f"{type(exc).__name__}: {exc}"
    step("running the NumPy runtime")
    parts.activations = compute_activations(graph, inputs, seed=seed, source=input_source)
    step("drawing")
    html = render_html(parts)
    return Report(
        html,
        graph,
        parts.after,
        parts.pipeline,
        parts.changes,
        parts.activations,
        parts.optimize_error,
    )


def write_report(graph: Graph, path: str | os.PathLike, **options: Any) -> Report:
    """`build_report(graph, **options)` written to `path` atomically."""
    report = build_report(graph, **options)
    report.write(path)
    return report
