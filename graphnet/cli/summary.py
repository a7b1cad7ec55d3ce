"""`graphnet summary MODEL.onnx [--json]`: per-layer table (op, output shape, parameters, MACs),
the graph's inputs and outputs, and the model's size."""

from __future__ import annotations

import argparse
import json
import os

from graphnet.cli.common import EXIT_OK, load_graph, load_model

__all__ = ["HELP", "add_arguments", "run"]

HELP = "per-layer table of an ONNX model: op, output shape, parameters, MACs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an ONNX model")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from graphnet.summary import format_summary, summarize, summary_dict

    model = load_model(args.model)
    graph = load_graph(args.model, model)
    rows = summarize(graph)
    size = os.path.getsize(args.model)
    if args.json:
        print(json.dumps(summary_dict(graph, rows, file_bytes=size), indent=2))
    else:
        print(format_summary(graph, rows, file_bytes=size))
    return EXIT_OK
