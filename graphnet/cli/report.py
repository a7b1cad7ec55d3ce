"""`graphnet report MODEL.onnx [-i NAME=X.npy] [-o REPORT.html] [--history H.json]`: one
self-contained HTML file (no network, nothing to install) showing the graph before and after
optimize, what each pass changed, the per-layer table, the activations of every layer on one input
and, given a training history, the learning curves."""

from __future__ import annotations

import argparse
import os

from graphnet.cli.common import (
    EXIT_OK,
    CliError,
    check_inputs_exist,
    check_output,
    load_graph,
    steps,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "an HTML report: the graph before/after optimize, layers, activations, learning curves"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
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
    from graphnet.cli.run import _input_paths, _read_inputs
    from graphnet.report import build_report

    paths = _input_paths(args.input)
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise CliError(f"input '{name}': {path}: no such file")
    extra = [args.history] if args.history else []
    check_inputs_exist([args.model, *extra])
    out = args.output or os.path.splitext(os.path.basename(args.model))[0] + ".html"
    check_output(out, inputs=[args.model, *paths.values(), *extra])
    passes = args.passes.split(",") if "," in args.passes else args.passes
    with steps(5 if not args.no_optimize else 4, desc="report") as step:
        step("importing")
        graph = load_graph(args.model)
        feeds = _read_inputs(paths) if paths else None
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
    after = f", {len(report.optimized.nodes)} after optimize" if report.optimized else ""
    print(f"wrote {out} ({report.size}): {len(graph.nodes)} nodes{after}")
    if report.activations.error:
        print(f"note: no activations: {report.activations.error}")
    return EXIT_OK
