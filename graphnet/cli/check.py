"""`graphnet check MODEL.onnx [--batch N] [--seed S]`: the NumPy runtime against onnxruntime on
seeded random inputs; exit 0 when every output agrees, 1 when one differs."""

from __future__ import annotations

import argparse

from graphnet.cli.common import (
    CHECK_ATOL,
    CHECK_RTOL,
    EXIT_DIFF,
    EXIT_OK,
    CliError,
    load_graph,
    load_model,
    ort_outputs,
    steps,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "compare the NumPy runtime with onnxruntime on seeded inputs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1, help="size of dynamic dims (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=CHECK_RTOL)
    p.add_argument("--atol", type=float, default=CHECK_ATOL)


def run(args: argparse.Namespace) -> int:
    from graphnet import runtime
    from graphnet.runtime.compare import compare_outputs, with_logits
    from graphnet.runtime.feeds import random_inputs

    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    with steps(4, desc="check") as step:
        step("importing")
        model = load_model(args.model)
        graph = load_graph(args.model, model)
        feeds = random_inputs(graph, batch=args.batch, seed=args.seed)
        # Softmax outputs are compared through their logits (graphnet.runtime.compare).
        probe, softmax = with_logits(graph)
        step("NumPy runtime")
        ours = runtime.Session(probe).run(feeds)
        step("onnxruntime")
        theirs = ort_outputs(model, feeds, extra=[s.logits for s in softmax.values()])
        step("comparing")
        results = compare_outputs(
            ours, theirs, names=graph.outputs, softmax=softmax, rtol=args.rtol, atol=args.atol
        )
    for c in results:
        shape = tuple(ours[c.name].shape) if c.name in ours else "?"
        verdict = "OK" if c.ok else "MISMATCH"
        print(f"{c.name}: shape {shape}  {c.describe(with_name=False)}  {verdict}")
    ok = all(c.ok for c in results)
    print(f"{'agree' if ok else 'DIFFER'} (rtol {args.rtol:g}, atol {args.atol:g})")
    return EXIT_OK if ok else EXIT_DIFF
