"""`graphnet viz MODEL.onnx -o GRAPH.svg [--format svg|dot] [--optimized]`: the graph alone, as
an SVG drawing (a layered layout, boxes coloured by op family, shapes on the edges) or as DOT text
for Graphviz (`dot -Tpng`)."""

from __future__ import annotations

import argparse
import os

from graphnet.cli.common import (
    EXIT_OK,
    CliError,
    check_output,
    count,
    load_graph,
    write_text,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "draw a model's graph as SVG, or write it as Graphviz DOT text"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ONNX model")
    p.add_argument("-o", "--output", required=True, metavar="GRAPH.svg", help='"-": stdout')
    p.add_argument(
        "--format",
        choices=("svg", "dot"),
        help="default: from the output's extension (.dot, .gv: dot), else svg",
    )
    p.add_argument(
        "--optimized",
        action="store_true",
        help="draw the graph after optimize, with what each pass changed marked",
    )


def run(args: argparse.Namespace) -> int:
    from graphnet.report import graph_dot, graph_svg

    if args.output != "-":
        check_output(args.output, inputs=[args.model])
    fmt = args.format
    ext = os.path.splitext(args.output)[1].lower()
    if fmt is None:
        if ext not in ("", ".svg", ".dot", ".gv"):  # e.g. g.png: SVG text in it would not open
            raise CliError(
                f"-o {args.output}: viz writes SVG (.svg) or DOT text (.dot, .gv), not {ext}; "
                "give --format to write one of them under another name"
            )
        fmt = "dot" if ext in (".dot", ".gv") else "svg"
    graph = load_graph(args.model)
    marks = None
    if args.optimized:
        from graphnet.passes.manager import optimize
        from graphnet.report.changes import diff_graphs

        after, rep = optimize(graph)
        marks = diff_graphs(graph, after, rep).after
        graph = after
    if fmt == "dot":
        text = graph_dot(graph, marks=marks)
    else:
        text = graph_svg(graph, marks=marks)
    write_text(args.output, text)
    if args.output != "-":
        print(f"wrote {args.output}: {count(len(graph.nodes), 'node')} ({fmt})")
    return EXIT_OK
