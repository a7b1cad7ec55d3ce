"""`graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] [--report R.json] [-v | -q]`.

Contract:
- the output passes `onnx.checker.check_model(full_check=True)` whenever the input did (onnx's
  own shape inference has known bugs: an input it rejects is held to the plain check only);
- the input is never written: an output (`-o`, `--report`) that is the input file under any
  spelling or link is refused before any work, as is an output whose folder does not exist or
  cannot be written; every file is written atomically, so a failure or Ctrl-C leaves no partial
  file;
- `--verify` runs the NumPy runtime before and after every pass on seeded random inputs (through
  the pass manager), and in every case compares the written model with the input model under
  onnxruntime; a difference beyond tolerance refuses to write anything (exit 1). Models that
  the NumPy runtime cannot run (opaque ops) are verified with onnxruntime alone.
- Output: a short summary (nodes, parameters, BatchNormalization and Dropout before/after,
  declined folds, time); `-v` adds every pass's changes and declines, `-q` prints nothing but
  errors; `--report FILE.json` (or `-` for standard output, the summary then going to stderr)
  holds everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from graphnet.cli.common import (
    CHECK_ATOL,
    CHECK_RTOL,
    EXIT_BUG,
    EXIT_DIFF,
    EXIT_OK,
    CliError,
    check_distinct,
    check_inputs_exist,
    check_output,
    declares_training,
    load_model,
    onnx_softmax_outputs,
    ort_outputs,
    parse_passes,
    steps,
    write_text,
)

__all__ = ["HELP", "add_arguments", "run", "output_opset"]

HELP = "optimize an ONNX model for inference"

USAGE = "usage: graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] [--report R.json]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="the ONNX model to optimize (never modified)")
    p.add_argument("-o", "--output", help="where to write the optimized model (required)")
    p.add_argument(
        "--passes",
        help="comma-separated pass or pipeline names (default: the 'inference' pipeline)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="run before/after on seeded inputs; refuse to write a result that differs",
    )
    p.add_argument(
        "--report", metavar="FILE.json", help="write the full report as JSON ('-': stdout)"
    )
    p.add_argument(
        "--fold-large-constants",
        nargs="?",
        type=int,
        const=2**31,
        default=None,
        metavar="BYTES",
        help=(
            "also materialise constant results up to BYTES (default 2 GiB): fewer "
            "nodes, bigger file"
        ),
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of --verify's random inputs (default 0)"
    )
    p.add_argument(
        "--list-passes", action="store_true", help="list the passes and pipelines, then exit"
    )
    loud = p.add_mutually_exclusive_group()
    loud.add_argument(
        "-v", "--verbose", action="store_true", help="print every pass's changes and declines"
    )
    loud.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def output_opset(graph) -> int:
    """The opset an optimized model is written at: its own when graphnet can write it (17+),
    else 17, the oldest graphnet writes (opaque nodes are carried over by onnx's converter)."""
    from graphnet.onnx_io.export import MIN_OPSET

    return max(int(graph.meta.get("opset") or MIN_OPSET), MIN_OPSET)


def _full_check_ok(model) -> bool:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:
        return False


def _runnable(graph) -> bool:
    from graphnet import runtime
    from graphnet.errors import UnsupportedOpError

    try:
        runtime.Session(graph)
        return True
    except UnsupportedOpError:
        return False


def _ort_compare(original, optimized, graph, seed: int):
    """`Comparison` per graph output: onnxruntime on both models, seeded inputs (Softmax outputs
    through their logits, which the two models may call differently)."""
    from graphnet.runtime.compare import compare_outputs
    from graphnet.runtime.feeds import random_inputs

    feeds = random_inputs(graph, batch=2, seed=seed)
    sa, sb = onnx_softmax_outputs(original), onnx_softmax_outputs(optimized)
    a = ort_outputs(original, feeds, extra=[s.logits for s in sa.values()])
    b = ort_outputs(optimized, feeds, extra=[s.logits for s in sb.values()])
    names = [o.name for o in original.graph.output]
    return compare_outputs(
        b, a, names=names, rtol=CHECK_RTOL, atol=CHECK_ATOL, softmax=sa, actual_softmax=sb
    )


# The phrase fold-constants uses when a result is too big to materialise by default.
_LARGE_CONSTANT = "all inputs are constant, but its result"


def short_summary(report, elapsed: float) -> list[str]:
    """The default output: totals, the ops a user watches, declined folds counted."""
    ob, oa = report.ops_before, report.ops_after
    watched = ", ".join(
        f"{op} {ob.get(op, 0)} -> {oa.get(op, 0)}" for op in ("BatchNormalization", "Dropout")
    )
    lines = [
        f"optimized '{report.graph}' (pipeline {report.pipeline}) in {elapsed * 1e3:.0f} ms: "
        f"nodes {report.nodes_before:,} -> {report.nodes_after:,}, stored parameters "
        f"{report.params_before:,} -> {report.params_after:,}, {watched}"
    ]
    declines = [d for p in report.passes for d in p.declines]
    if declines:
        large = sum(1 for d in declines if _LARGE_CONSTANT in d)
        text = f"  {len(declines)} opportunit{'y' if len(declines) == 1 else 'ies'} declined"
        if large:
            text += (
                f" ({large} constant result{'s' if large > 1 else ''} too large to write by "
                "default: --fold-large-constants writes them)"
            )
        lines.append(text + "; -v or --report lists each with its reason")
    return lines


def run(args: argparse.Namespace) -> int:
    import onnx

    from graphnet.errors import PassError
    from graphnet.onnx_io.export import to_onnx, write_model
    from graphnet.onnx_io.importer import from_onnx
    from graphnet.passes.manager import describe_passes, optimize

    if args.list_passes:
        print(describe_passes())
        return EXIT_OK
    src = args.model
    if not src or not args.output:
        raise CliError(USAGE)
    # Every promise about files is checked before any work.
    check_inputs_exist([src])
    check_output(args.output, inputs=[src])
    if args.report and args.report != "-":
        check_output(args.report, inputs=[src], flag="--report")
    check_distinct({"-o": args.output, "--report": args.report})
    pipeline = parse_passes(args.passes)
    # With the report on stdout, the human-readable lines go to stderr.
    say = _printer(quiet=args.quiet, stream=sys.stderr if args.report == "-" else sys.stdout)

    from graphnet.passes.manager import resolve_pipeline

    _, names = resolve_pipeline(pipeline)
    total = len(names) + (5 if args.verify else 4)
    with steps(total, enabled=not args.quiet, desc="optimize") as step:
        step("reading")
        original = load_model(src)
        was_valid = _full_check_ok(original)
        t0 = time.perf_counter()
        step("importing")
        graph = from_onnx(original)
        runnable = _runnable(graph)
        checked = " (and verifying it)" if args.verify and runnable else ""
        try:
            opt, report = optimize(
                graph,
                pipeline,
                verify=bool(args.verify and runnable),
                seed=args.seed,
                max_constant_bytes=args.fold_large_constants,
                progress=lambda name: step(f"pass {name}{checked}"),
            )
        except PassError as exc:  # a pass broke the graph or its numerics
            raise CliError(f"{exc}; nothing written", EXIT_DIFF) from None
        step("exporting")
        model = to_onnx(opt, opset=output_opset(graph))
        elapsed = time.perf_counter() - t0
        try:
            onnx.checker.check_model(model, full_check=was_valid)
        except Exception as exc:
            raise CliError(
                f"the optimized model fails onnx's checker ({str(exc).splitlines()[0]}); "
                "nothing written",
                EXIT_BUG,
            ) from None
        checks, training = [], False
        if args.verify:
            step("verifying with onnxruntime")
            # A model exported in training mode computes batch statistics and random masks under
            # onnxruntime; its inference meaning is the imported graph written in inference mode.
            training = declares_training(original)
            reference = to_onnx(graph, opset=output_opset(graph)) if training else original
            checks = _ort_compare(reference, model, graph, args.seed)
            bad = [c for c in checks if not c.ok]
            if bad:
                raise CliError(
                    "verification failed, nothing written: onnxruntime outputs differ ("
                    + "; ".join(c.describe() for c in bad)
                    + f"; rtol {CHECK_RTOL:g}, atol {CHECK_ATOL:g})",
                    EXIT_DIFF,
                )
        step("writing")
        size = write_model(model, args.output)

    if args.verbose:
        say(report.format())
    else:
        for line in short_summary(report, elapsed):
            say(line)
    if args.verify:
        how = (
            "NumPy runtime after every pass and "
            if runnable
            else "(the NumPy runtime cannot run it: opaque ops) "
        )
        against = (
            " (against the input written in inference mode: it was exported in training mode)"
            if training
            else ""
        )
        say(
            f"verified: {how}onnxruntime end to end{against}: "
            + "; ".join(c.describe() for c in checks)
        )
    say(f"wrote {args.output} ({size:,} bytes, opset {model.opset_import[0].version})")
    if args.report:
        doc = report.to_dict()
        doc.update(
            {
                "input": src,
                "output": args.output,
                "output_bytes": size,
                "opset": model.opset_import[0].version,
                "seconds": elapsed,
                "verify": [
                    {"output": c.name, "max_abs_diff": c.max_abs, "ok": c.ok, "note": c.note}
                    for c in checks
                ]
                if args.verify
                else None,
            }
        )
        write_text(args.report, json.dumps(doc, indent=2, default=_json_default) + "\n")
    return EXIT_OK


def _printer(*, quiet: bool, stream):
    def say(text: str) -> None:
        if not quiet:
            print(text, file=stream)

    return say


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    return str(o)
