"""The `graphnet` command (also `python -m graphnet`).

    graphnet demo                     build, run and export the lecture's template network
    graphnet summary MODEL.onnx       per-layer table: op, output shape, parameters, MACs
    graphnet run MODEL.onnx -i NAME=X.npy -o OUT.npz [--mode inference|train] [--seed S]
    graphnet check MODEL.onnx [--batch N] [--seed S]     NumPy runtime vs onnxruntime
    graphnet export MODULE:ATTR -o OUT.onnx              a network defined with the DSL
    graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] [--report R.json]

Exit codes: 0 success; 1 a check or a verification found a difference; 2 bad usage or input.
Errors print one line on stderr; `--debug` shows the traceback. Heavy packages are imported
only by the command that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_DIFF, EXIT_USAGE = 0, 1, 2

# Whole-model comparisons accumulate float32 rounding over many layers: looser than single ops.
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


class CliError(Exception):
    """A user-facing failure: printed as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="graphnet", description="graph compiler and NumPy runtime for CNNs"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser(
        "demo", help="build the lecture's template CNN, run it, export it, compare with onnxruntime"
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--batch", type=int, default=4)
    d.add_argument(
        "--save", metavar="DIR", help="also write the exported and optimized .onnx files here"
    )

    s = sub.add_parser("summary", help="per-layer table of an ONNX model")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print JSON rows instead of a table")

    r = sub.add_parser("run", help="run a model on the NumPy runtime")
    r.add_argument("model")
    r.add_argument("-i", "--input", action="append", default=[], metavar="NAME=PATH.npy")
    r.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    r.add_argument("--mode", choices=("inference", "train"), default="inference")
    r.add_argument("--seed", type=int, default=None)

    c = sub.add_parser("check", help="compare the NumPy runtime with onnxruntime on seeded inputs")
    c.add_argument("model")
    c.add_argument("--batch", type=int, default=1, help="size of dynamic dims (default 1)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--rtol", type=float, default=CHECK_RTOL)
    c.add_argument("--atol", type=float, default=CHECK_ATOL)

    e = sub.add_parser("export", help="export a network defined with the DSL to ONNX")
    e.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help=(
            "a module (dotted name or .py path) and a Graph, Network, Sequential or function in it"
        ),
    )
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--input-shape", help="for a Sequential: e.g. N,3,32,32 (N = dynamic batch)")
    e.add_argument("--mode", choices=("inference", "train"), default="inference")
    e.add_argument("--opset", type=int, default=None)

    o = sub.add_parser("optimize", help="optimize an ONNX model for inference")
    o.add_argument("model", nargs="?", help="the ONNX model to optimize (never modified)")
    o.add_argument("-o", "--output", help="where to write the optimized model (required)")
    o.add_argument(
        "--passes", help="comma-separated pass names (default: the 'inference' pipeline)"
    )
    o.add_argument(
        "--verify",
        action="store_true",
        help="run before/after on seeded inputs; refuse to write a result that differs",
    )
    o.add_argument("--report", metavar="FILE.json", help="write the report as JSON")
    o.add_argument(
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
    o.add_argument("--seed", type=int, default=0)
    o.add_argument(
        "--list-passes", action="store_true", help="list the passes and pipelines, then exit"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from graphnet.commands import COMMANDS

        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("graphnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `graphnet ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except Exception as exc:  # one clear line, never a traceback unless asked for
        if args.debug:
            raise
        code = exc.code if isinstance(exc, CliError) else EXIT_USAGE
        if not _is_user_error(exc):
            code = EXIT_DIFF if code == EXIT_DIFF else 3
        msg = str(exc) or type(exc).__name__
        print(f"graphnet {args.command}: error: {msg}", file=sys.stderr)
        if code == 3:
            print(
                "graphnet: this looks like a bug in graphnet; rerun with --debug for the traceback",
                file=sys.stderr,
            )
        return code


def _is_user_error(exc: BaseException) -> bool:
    from graphnet.errors import GraphNetError

    return isinstance(exc, (CliError, GraphNetError, OSError, ValueError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
