"""`graphnet report MODEL.onnx [-i NAME=X.npy] [-o REPORT.html] [--history H.json]`: one
self-contained HTML file (no network, nothing to install) showing the graph before and after
optimize, what each pass changed, the per-layer table, the activations of every layer on one input
and, given a training history, the learning curves."""

from __future__ import annotations

import argparse
import os

from graphnet.cli.common import (
    EXIT_OK,
    check_inputs_exist,
    check_output,
    count,
    input_paths,
    load_graph,
    parse_passes,
    read_inputs,
    steps,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "an HTML report: the graph before/after optimize, layers, activations, learning curves"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to report on (never modified)")
    p.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH.npy",
        help="the input to show activations for (default: a seeded random input)",
    )
    p.add_argument(
        "-o", "--output", metavar="REPORT.html", help="default: MODEL's name with .html, here"
    )
    p.add_argument(
        "--history", metavar="H.json", help="a training history (graphnet train --history)"
    )
    p.add_argument(
        "--passes",
        default="inference",
        metavar="PIPELINE|a,b",
        help="the pipeline or passes optimize runs (default: inference)",
    )
    p.add_argument("--no-optimize", action="store_true", help="show the graph as it is only")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")


def run(args: argparse.Namespace) -> int:
    from graphnet.report import build_report

    paths = input_paths(args.input)
    extra = [args.history] if args.history else []
    check_inputs_exist([args.model, *extra])
    out = args.output or os.path.splitext(os.path.basename(args.model))[0] + ".html"
    check_output(out, inputs=[args.model, *paths.values(), *extra])
    passes = parse_passes(args.passes)  # a misspelled name fails here, before any work
    with steps(5 if not args.no_optimize else 4, desc="report") as step:
        step("importing")
        graph = load_graph(args.model)
        feeds = read_inputs(paths) if paths else None
        report = build_report(
            graph,
            inputs=feeds,
            seed=args.seed,
            optimize=not args.no_optimize,
            pipeline=passes,
            history=args.history,
            source=os.path.basename(args.model),
            input_source=", ".join(f"{k}={v}" for k, v in paths.items()) or None,
            progress=step,
        )
        step("writing")
        report.write(out)
    after = f", {len(report.optimized.nodes):,} after optimize" if report.optimized else ""
    print(f"wrote {out} ({report.size}): {count(len(graph.nodes), 'node')}{after}")
    if report.optimize_error:
        print(
            f"note: optimize failed, the report shows the graph as it is: {report.optimize_error}"
        )
    if report.activations.error:
        print(f"note: no activations: {report.activations.error}")
    return EXIT_OK
