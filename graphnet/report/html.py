"""The report page: one HTML file with everything inline (SVG drawings, CSS, script, PNG data URIs),
so it opens from file:// with no network access and nothing to install.

Sections: the graph (original and optimized drawings, toggled, with pan/zoom, a minimap, search and
a panel for the clicked node), what optimize did (totals, then every pass's changes and declines;
a click on a line shows its nodes), the per-layer tables, the activations, and the learning curves
when a training history is given. The page's script only adds interaction: without it every
section is still there to read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

from graphnet.ir import Graph, format_shape
from graphnet.report.activations import Activations
from graphnet.report.changes import Changes
from graphnet.report.drawing import FAMILY_COLOURS, SVG_CSS, draw_graph
from graphnet.summary import count

if TYPE_CHECKING:
    from graphnet.passes.base import PipelineReport

__all__ = ["ReportParts", "render_html"]


@dataclass
class ReportParts:
    """Everything the page shows. `after`/`pipeline` are None when optimize was not run (or
    failed: `optimize_error` then says why); `history` holds chart SVGs."""

    graph: Graph
    title: str
    source: str = ""
    after: Graph | None = None
    pipeline: PipelineReport | None = None
    changes: Changes | None = None
    activations: Activations | None = None
    optimize_error: str | None = None
    history: list[str] = field(default_factory=list)
    history_error: str | None = None


def _asset(name: str) -> str:
    return resources.files("graphnet.report").joinpath("assets", name).read_text("utf-8")


def _n(v: int) -> str:
    return f"{v:,}"


def _pct(a: int, b: int) -> str:
    return f" ({(b - a) / a:+.1%})" if a else ""


def _legend() -> str:
    fams = "".join(
        f'<span><i style="border-color:{stroke};background:{fill}"></i>{fam}</span>'
        for fam, (stroke, fill) in FAMILY_COLOURS.items()
        if fam != "io"
    )
    states = (
        '<span><i style="border-color:var(--removed);border-style:dashed"></i>removed</span>'
        '<span><i style="border-color:var(--changed)"></i>changed</span>'
        '<span><i style="border-color:var(--added)"></i>added</span>'
        '<span><i style="border-color:var(--declined);border-style:dotted"></i>declined</span>'
    )
    return f'<div class="legend">{fams}{states}</div>'


def _graph_section(parts: ReportParts) -> str:
    ch = parts.changes
    before = draw_graph(
        parts.graph, marks=ch.before if ch else None, id_prefix="before", standalone=False
    )
    n_before = count(len(parts.graph.nodes), "node")
    buttons = f'<button data-show="before" class="on">original ({n_before})</button>'
    views = f'<div class="view" data-view="before">{before.svg}</div>'
    if parts.after is not None:
        after = draw_graph(
            parts.after, marks=ch.after if ch else None, id_prefix="after", standalone=False
        )
        n_after = count(len(parts.after.nodes), "node")
        buttons += f'<button data-show="after">optimized ({n_after})</button>'
        views += f'<div class="view hidden" data-view="after">{after.svg}</div>'
    colours = {fam: stroke for fam, (stroke, _) in FAMILY_COLOURS.items()}
    return (
        '<section id="graph"><h2>Graph</h2><div class="toolbar">'
        f"{buttons}"
        '<input id="search" type="search" placeholder="find a node (Enter: next)">'
        '<button id="fitwidth">fit width</button><button id="fit">whole graph</button>'
        f"{_legend()}</div>"
        '<div class="stage">'
        f'<div class="viewport" id="vp" data-colours={quoteattr(json.dumps(colours))}>'
        f"{views}</div>"
        '<canvas id="minimap" title="minimap: click or drag to move"></canvas>'
        '<aside id="panel"><p class="hint">Click a node for its shapes, parameters, MACs, '
        "attributes, what optimize did to it and its activations. Wheel: zoom; drag: pan; "
        "double click: whole graph. Hover a node for a summary.</p></aside>"
        "</div></section>"
    )


def _optimize_section(parts: ReportParts) -> str:
    out = ['<section id="optimize"><h2>What optimize did</h2>']
    if parts.optimize_error:
        out.append(f'<p class="error">optimize failed: {escape(parts.optimize_error)}</p>')
    rep = parts.pipeline
    if rep is None:
        if not parts.optimize_error:
            out.append("<p>optimize was not run.</p>")
        out.append("</section>")
        return "".join(out)
    out.append(
        f"<p>pipeline <b>{escape(str(rep.pipeline))}</b>: every pass rewrites only what is "
        "exactly equivalent and says what it declined and why.</p>"
        '<table class="totals"><tr><th></th><th class="num">original</th>'
        '<th class="num">optimized</th><th class="num">change</th></tr>'
    )
    for label, a, b in (
        ("nodes", rep.nodes_before, rep.nodes_after),
        ("parameters", rep.params_before, rep.params_after),
        ("MACs per example", rep.macs_before, rep.macs_after),
    ):
        out.append(
            f'<tr><td>{label}</td><td class="num">{_n(a)}</td><td class="num">{_n(b)}</td>'
            f'<td class="num">{_pct(a, b).strip() or "0"}</td></tr>'
        )
    out.append("</table>")
    ch = parts.changes
    if ch is not None:
        out.append(
            f"<p>{count(ch.count('removed'), 'node')} removed, {ch.count('changed')} changed, "
            f"{ch.count('added', after=True)} added, {ch.count('declined')} with a declined "
            "change (marked on the drawing).</p>"
        )
    lines_by_pass: dict[int, list] = {}
    for line in ch.lines if ch is not None else []:
        lines_by_pass.setdefault(line.pass_index, []).append(line)
    out.append('<div class="passes">')
    for k, p in enumerate(rep.passes):
        summary = escape(p.summary())
        items = []
        for line in lines_by_pass.get(k, []):
            cls = "declined" if line.declined else "did"
            text = ("declined: " if line.declined else "") + line.text
            items.append(
                f'<li class="{cls}" data-nodes={quoteattr(json.dumps(line.nodes))}>'
                f"{escape(text)}</li>"
            )
        body = f"<ul>{''.join(items)}</ul>" if items else ""
        opened = " open" if items and len(items) <= 40 else ""
        out.append(f"<details{opened}><summary>{summary}</summary>{body}</details>")
    out.append("</div></section>")
    return "".join(out)


def _layers_table(graph: Graph, view: str, hidden: bool) -> str:
    from graphnet.summary import summarize

    rows = summarize(graph)
    total = sum(r.macs for r in rows) or 1
    body = []
    for k, r in enumerate(rows):
        share = r.macs / total
        body.append(
            f"<tr data-node={quoteattr(r.name)}>"
            f'<td class="num" data-v="{k}">{k + 1}</td><td>{escape(r.name)}</td>'
            f"<td>{escape(r.op)}</td><td>{escape(r.output_shape)}</td>"
            f'<td class="num" data-v="{r.params}">{_n(r.params)}</td>'
            f'<td class="num" data-v="{r.macs}">{_n(r.macs)}</td>'
            f'<td class="num" data-v="{share:.6f}"><span class="share" '
            f'style="width:{share * 60:.1f}px"></span>{share:.1%}</td></tr>'
        )
    ins = ", ".join(f"{i}{format_shape(graph.values[i].shape)}" for i in graph.inputs)
    foot = (
        f'<tr><td></td><td colspan="3">total: {count(len(rows), "node")}; inputs {escape(ins)}</td>'
        f'<td class="num">{_n(graph.num_params())}</td>'
        f'<td class="num">{_n(sum(r.macs for r in rows))}</td><td class="num">100%</td></tr>'
    )
    return (
        f'<div class="tablewrap layers-table{" hidden" if hidden else ""}" data-view="{view}">'
        f'<table class="sortable" data-view="{view}"><thead><tr><th class="num">#</th>'
        '<th>layer</th><th>op</th><th>output shape</th><th class="num">params</th>'
        '<th class="num">MACs</th><th class="num">share of MACs</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table></div>"
    )


def _layers_section(parts: ReportParts) -> str:
    tables = _layers_table(parts.graph, "before", hidden=False)
    if parts.after is not None:
        tables += _layers_table(parts.after, "after", hidden=True)
    return (
        '<section id="layers"><h2>Layers</h2><p>Parameters are counted at their first reader; '
        "MACs are multiply-accumulates per example (dynamic dims count 1). The table follows the "
        "graph shown above; click a header to sort, a row to find the node.</p>"
        f"{tables}</section>"
    )


def _activations_section(parts: ReportParts) -> str:
    acts = parts.activations
    out = ['<section id="activations"><h2>Activations</h2>']
    if acts is None:
        out.append("<p>Not computed.</p></section>")
        return "".join(out)
    out.append(
        f"<p>Values of the original graph on {escape(acts.source)}, computed by graphnet's "
        "NumPy runtime: the input and the channel maps of each conv and pool layer (first batch "
        "item; one grey scale per layer, black = its minimum, white = its maximum), the output "
        "vector of each fully connected layer, the most likely classes, and each "
        "BatchNormalization's running statistics.</p>"
    )
    if acts.error:
        out.append(f'<p class="error">{escape(acts.error)}</p>')
    out.append('<div class="acts">')
    for v in acts.visuals:
        label = v.node.split(":", 1)[1] if v.op in ("input", "output") else v.node
        kind = {"bn": "BatchNorm statistics", "probs": "class probabilities"}.get(v.kind, v.op)
        out.append(
            f'<figure class="act act-{v.kind}" data-node={quoteattr(v.node)}>'
            f"<figcaption><b>{escape(label)}</b> {escape(kind)}<br>{escape(v.caption)}"
            f"</figcaption>{v.html}</figure>"
        )
    out.append("</div></section>")
    return "".join(out)


def _history_section(parts: ReportParts) -> str:
    if not parts.history and not parts.history_error:
        return ""
    body = "".join(parts.history)
    err = f'<p class="error">{escape(parts.history_error)}</p>' if parts.history_error else ""
    return (
        '<section id="history"><h2>Learning curves</h2>'
        f'{err}<div class="charts">{body}</div></section>'
    )


def render_html(parts: ReportParts) -> str:
    """The whole page."""
    from graphnet import __version__
    from graphnet.summary import graph_macs

    g = parts.graph
    meta = (
        f"{escape(parts.source) + ' · ' if parts.source else ''}{count(len(g.nodes), 'node')} · "
        f"{count(g.num_params(), 'parameter')} · {_n(graph_macs(g))} MACs per example"
    )
    if parts.after is not None:
        meta += (
            f" · optimized: {count(len(parts.after.nodes), 'node')}, "
            f"{count(parts.after.num_params(), 'parameter')}"
        )
    nav = (
        '<nav><a href="#graph">graph</a><a href="#optimize">optimize</a>'
        '<a href="#layers">layers</a><a href="#activations">activations</a>'
        + ('<a href="#history">learning curves</a>' if parts.history else "")
        + "</nav>"
    )
    # "</" cannot appear inside the inline script or style (it would end the element early).
    js = _asset("report.js").replace("</", "<\\/")
    css = (_asset("report.css") + SVG_CSS).replace("</", "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="graphnet {__version__}">'
        f"<title>{escape(parts.title)}</title><style>{css}</style></head><body>"
        f'<header><h1>{escape(parts.title)}</h1><p class="meta">{meta}</p></header>{nav}'
        f"{_graph_section(parts)}{_optimize_section(parts)}{_layers_section(parts)}"
        f"{_activations_section(parts)}{_history_section(parts)}"
        f"<script>{js}</script></body></html>\n"
    )
