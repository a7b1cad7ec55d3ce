"""`graphnet bench MODEL.onnx [--batch 1,32] [--runs N] [--json FILE]` and `graphnet bench
--suite`: time the NumPy runtime against onnxruntime on the same inputs, in one process.

Engines, every one on the same seeded inputs: ours (the fast plan) on the optimized graph, the
reference plan on it, ours on the original graph, ours in train mode (when the graph has
BatchNorm or Dropout), onnxruntime with all graph optimizations and with none (2 intra-op
threads), PyTorch eager on the optimized graph when it is installed (`graphnet.bench.torch_engine`
converts our IR to torch.nn.functional; --no-torch leaves it out), the bare GEMMs the
convolutions need (the floor), and once `onnx.reference` (skipped past --ref-cap seconds).
Timing is in interleaved blocks (see `graphnet.bench.engines`); the table gives medians, the JSON
medians, 25-75% spreads, run counts, GFLOP/s against the BLAS rate measured in the same run, and
peak memory against the floor (parameters + the largest set of live activations); ours is the
parameters + what a fresh session allocates and still holds at the peak of its second run:
prepared weights (Winograd's transformed ones, 4x the kernels, only for convs with too few tiles
to transform them every run: batch 1), the arena of
activations and workspaces, the run's outputs.
Outputs of every engine are compared with onnxruntime's: a difference is exit code 1, whatever
the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from graphnet.cli.common import (
    EXIT_DIFF,
    EXIT_OK,
    CliError,
    check_output,
    load_graph,
    steps,
    write_text,
)

if TYPE_CHECKING:
    from graphnet.ir import Graph

__all__ = ["HELP", "add_arguments", "run"]

HELP = "time the NumPy runtime against onnxruntime (a model, or the built-in suite)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="an ONNX model (or --suite)")
    p.add_argument("--suite", action="store_true", help="the six built-in DSL models")
    p.add_argument("--models", help="with --suite: comma-separated names (default: all)")
    p.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default 1,32)")
    p.add_argument("--runs", type=int, default=5, help="timing rounds per engine (default 5)")
    p.add_argument("--block", type=float, default=0.3, help="seconds per timing block")
    p.add_argument("--ref-cap", type=float, default=20.0, help="onnx.reference time cap (s)")
    p.add_argument("--no-reference", action="store_true", help="skip onnx.reference")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument(
        "--lean",
        action="store_true",
        help="also time the lean memory plan (Session(memory='lean')) and give its peak memory",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="onnxruntime and PyTorch intra-op threads (graphnet's own: GRAPHNET_NUM_THREADS)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the inputs and of the suite's weights (default 0)",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")


def _batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise CliError(f"--batch must be comma-separated integers, got {text!r}") from None
    if not out or any(b < 1 for b in out):
        raise CliError(f"--batch sizes must be >= 1, got {text!r}")
    return out


def run(args: argparse.Namespace) -> int:
    from graphnet.bench import suite
    from graphnet.bench.floor import blas_gflops
    from graphnet.bench.machine import machine
    from graphnet.bench.run import TOLERANCE, bench_graph, format_rows, geomean

    if args.suite == bool(args.model):
        raise CliError("give a MODEL.onnx or --suite (not both)")
    if args.runs < 1:
        raise CliError(f"--runs must be >= 1, got {args.runs}")
    if args.threads < 1:
        raise CliError(f"--threads must be >= 1, got {args.threads}")
    if not args.block > 0:
        raise CliError(f"--block must be a positive number of seconds, got {args.block:g}")
    if not args.ref_cap > 0:
        raise CliError(f"--ref-cap must be a positive number of seconds, got {args.ref_cap:g}")
    batches = _batches(args.batch)
    if args.json and args.json != "-":
        check_output(args.json, inputs=[args.model] if args.model else [], flag="--json")
    if args.suite:
        names = suite.suite_names()
        if args.models:
            wanted = [m.strip() for m in args.models.split(",") if m.strip()]
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise CliError(f"unknown suite model(s) {unknown}; the suite has {names}")
            names = wanted
        models: list[tuple[str, Callable[[], Graph]]] = [
            (n, partial(suite.build, n, args.seed)) for n in names
        ]
    else:
        graph = load_graph(args.model)
        # The table names the file, not its path (a path would make every row as wide).
        models = [(os.path.basename(args.model), lambda: graph)]
    info = machine()
    info["blas_gflops"] = blas_gflops()
    rows = []
    ticks = len(models) * len(batches) * args.runs * 8
    with steps(ticks, desc="bench") as step:
        for name, build in models:
            for batch in batches:
                step(f"{name} batch {batch}")
                rows.append(
                    bench_graph(
                        name,
                        build(),
                        batch=batch,
                        rounds=args.runs,
                        block=args.block,
                        ref_cap=args.ref_cap,
                        threads=args.threads,
                        seed=args.seed,
                        reference=not args.no_reference,
                        torch=not args.no_torch,
                        lean=args.lean,
                        progress=lambda: step("timing"),
                    )
                )
    summary = {}
    for batch in batches:
        ratios = [r["ratio_ort"] for r in rows if r["batch"] == batch]
        summary[f"batch {batch}"] = {
            "geomean_ours_over_ort": geomean(ratios),
            "worst_ours_over_ort": max(ratios),
        }
        vs_torch = [r["ratio_torch"] for r in rows if r["batch"] == batch and r["ratio_torch"]]
        if vs_torch:
            summary[f"batch {batch}"]["geomean_ours_over_pytorch"] = geomean(vs_torch)
            summary[f"batch {batch}"]["worst_ours_over_pytorch"] = max(vs_torch)
    result = {"machine": info, "tolerance": TOLERANCE, "rows": rows, "summary": summary}
    if args.json:
        write_text(args.json, json.dumps(result, indent=1, default=float) + "\n")
    if args.json != "-":
        print(format_rows(rows, markdown=args.markdown))
        print(
            f"\n{info['date']}, {info['cpu']}, {info['cores']} cores ({info['simd']}), "
            f"{info['blas']}, BLAS {info['blas_gflops']:.0f} GFLOP/s (1024^3 sgemm), "
            f"graphnet {info['graphnet_threads']} threads (GRAPHNET_NUM_THREADS), "
            f"onnxruntime {info['onnxruntime']} ({args.threads} threads), load average "
            f"{info['load_average']:.1f}"
        )
        notes = sorted({r["pytorch_note"] for r in rows})
        print("PyTorch: " + "; ".join(notes))
        for label, s in summary.items():
            line = (
                f"{label}: ours / onnxruntime geometric mean {s['geomean_ours_over_ort']:.2f}, "
                f"worst {s['worst_ours_over_ort']:.2f}"
            )
            if "geomean_ours_over_pytorch" in s:
                line += (
                    f"; ours / PyTorch geometric mean {s['geomean_ours_over_pytorch']:.2f}, "
                    f"worst {s['worst_ours_over_pytorch']:.2f}"
                )
            print(line)
    bad = [
        f"{r['model']} batch {r['batch']}: {engine} (max |diff| {c['max_diff']:.1e})"
        for r in rows
        for engine, c in r["checks"].items()
        if not c["ok"]
    ]
    if bad:
        print(
            "graphnet bench: outputs differ from onnxruntime's beyond rtol "
            f"{TOLERANCE['rtol']:g}, atol {TOLERANCE['atol']:g}: " + "; ".join(bad),
            file=sys.stderr,
        )
        return EXIT_DIFF
    return EXIT_OK
