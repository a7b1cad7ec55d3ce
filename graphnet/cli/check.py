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
    declared_mode,
    describe_mode,
    load_graph,
    load_model,
    ort_outputs,
    steps,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "compare the NumPy runtime with onnxruntime on seeded inputs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to check (never modified)")
    p.add_argument("--batch", type=int, default=1, help="size of dynamic dims (default 1)")
    p.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="size of the symbolic input dim NAME (e.g. --dim height=224); others take --batch",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--rtol",
        type=float,
        default=CHECK_RTOL,
        help=f"relative tolerance (default {CHECK_RTOL:g})",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=CHECK_ATOL,
        help=f"absolute tolerance (default {CHECK_ATOL:g})",
    )
    p.add_argument(
        "--mode",
        choices=("inference", "train"),
        default=None,
        help="run both sides in this mode (default: the mode the model declares: train when "
        "it has training-mode BatchNormalization or Dropout)",
    )


def run(args: argparse.Namespace) -> int:
    from graphnet import runtime
    from graphnet.cli.train_mode import (
        UPDATED,
        onnx_updated_statistics,
        zero_dropout,
        zero_onnx_dropout,
    )
    from graphnet.onnx_io.export import to_onnx
    from graphnet.runtime.compare import compare_outputs, with_logits
    from graphnet.runtime.feeds import random_inputs

    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    for flag, tol in (("--rtol", args.rtol), ("--atol", args.atol)):
        if not tol >= 0:  # also NaN: a tolerance nothing could meet or that meets anything
            raise CliError(f"{flag} must be a number >= 0, got {tol}")
    with steps(4, desc="check") as step:
        step("importing")
        model = load_model(args.model)
        graph = load_graph(args.model, model)
        feeds = random_inputs(
            graph, batch=args.batch, seed=args.seed, sizes=_dim_sizes(args.dim, graph)
        )
        declared = declared_mode(model)
        mode = args.mode or declared
        notes = [describe_mode(mode, declared, args.mode is not None)]
        stats: dict[str, str] = {}
        probe = graph.copy() if mode == "train" else graph
        if mode == "train":
            dropped = zero_dropout(probe)
            if declared == "train":
                reference, _ = zero_onnx_dropout(model)
            else:  # like with like: onnxruntime runs the graph's train-mode export
                reference = to_onnx(probe, mode="train")
            reference, stats = onnx_updated_statistics(reference)
            if dropped:
                notes.append(
                    f"{dropped} Dropout compared with ratio 0 on both sides (their masks are "
                    "random)"
                )
            if stats:
                notes.append(f"{len(stats)} updated BatchNorm running statistics compared")
        else:
            # A model exported in training mode means its inference form here (BN with running
            # statistics, Dropout the identity): onnxruntime runs that form, written by graphnet.
            reference = to_onnx(graph, mode="inference") if declared == "train" else model
        # Softmax outputs are compared through their logits (graphnet.runtime.compare).
        probe, softmax = with_logits(probe)
        step("NumPy runtime")
        ours = runtime.Session(probe).run(feeds, mode=mode, seed=args.seed)
        step("onnxruntime")
        extra = [s.logits for s in softmax.values()] + list(stats.values())
        theirs = ort_outputs(reference, feeds, extra=extra)
        for param, value in stats.items():
            if value in graph.outputs:  # a train-mode export outputs it: compared as an output
                continue
            if param in probe.params and value in theirs:
                ours[UPDATED.format(param)] = probe.params[param]
                theirs[UPDATED.format(param)] = theirs[value]
        step("comparing")
        names = list(graph.outputs) + [k for k in ours if k.endswith(UPDATED.format(""))]
        results = compare_outputs(
            ours, theirs, names=names, softmax=softmax, rtol=args.rtol, atol=args.atol
        )
    for line in notes:
        print(line)
    for c in results:
        shape = tuple(ours[c.name].shape) if c.name in ours else "?"
        verdict = "OK" if c.ok else "MISMATCH"
        print(f"{c.name}: shape {shape}  {c.describe(with_name=False)}  {verdict}")
    ok = all(c.ok for c in results)
    print(f"{'agree' if ok else 'DIFFER'} (rtol {args.rtol:g}, atol {args.atol:g})")
    return EXIT_OK if ok else EXIT_DIFF


def _dim_sizes(items: list[str], graph) -> dict[str, int]:
    """`--dim NAME=SIZE` options; NAME must be a symbol of the graph's inputs."""
    from graphnet import dims

    known = {s for i in graph.inputs for d in graph.values[i].shape or () for s in dims.atoms(d)}
    sizes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise CliError(f"--dim expects NAME=SIZE with a size >= 1, got {item!r}")
        if name not in known:
            raise CliError(
                f"--dim {name}: the inputs have no dim named {name!r} (symbolic dims: "
                f"{', '.join(sorted(known)) or 'none'})"
            )
        sizes[name] = int(value)
    return sizes
