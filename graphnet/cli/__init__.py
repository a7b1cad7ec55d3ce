"""The `graphnet` command (also `python -m graphnet`).

    graphnet demo                     build, run and export the template CNN
    graphnet summary MODEL.onnx       per-layer table: op, output shape, parameters, MACs
    graphnet run MODEL.onnx -i NAME=X.npy -o OUT.npz [--mode inference|train] [--seed S]
    graphnet check MODEL.onnx [--batch N] [--seed S]     NumPy runtime vs onnxruntime
    graphnet export MODULE:ATTR -o OUT.onnx              a network defined with the DSL
    graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] [--report R.json]
    graphnet train MODEL --data DATA.npz -o OUT.onnx [--epochs E] ...   backpropagation
    graphnet bench MODEL.onnx | --suite [--batch 1,32] [--runs N] [--json FILE]
    graphnet report MODEL.onnx [-i NAME=X.npy] [-o REPORT.html]  HTML: graph, optimize, activations
    graphnet viz MODEL.onnx -o GRAPH.svg [--format dot]           the graph alone

One module per command (`graphnet.cli.<command>`: `add_arguments(parser)` and `run(args) -> exit
code`); what they share (errors, exit codes, tolerances, file checks) is `graphnet.cli.common`.
Exit codes are `common.EXIT_CODES`. Errors print one line on stderr; `--debug` (before or after
the command) shows the traceback. Heavy packages are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from graphnet.cli.common import EXIT_BUG, EXIT_DIFF, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError

__all__ = ["main", "COMMANDS"]

COMMANDS = (
    "demo",
    "summary",
    "run",
    "check",
    "export",
    "optimize",
    "train",
    "bench",
    "report",
    "viz",
)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from graphnet import __version__

    p = _Parser(prog="graphnet", description="graph compiler and NumPy runtime for CNNs")
    p.add_argument("--version", action="version", version=f"graphnet {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"graphnet.cli.{name}")
        c = sub.add_parser(name, help=module.HELP, description=module.HELP)
        # Also accepted after the command; SUPPRESS keeps a `--debug` given before it.
        c.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        module.add_arguments(c)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        module = importlib.import_module(f"graphnet.cli.{args.command}")
        return module.run(args)
    except KeyboardInterrupt:
        print("graphnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `graphnet ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except Exception as exc:  # one clear line, never a traceback unless asked for
        if args.debug:
            raise
        code = exc.code if isinstance(exc, CliError) else EXIT_USAGE
        if not _is_user_error(exc):
            code = EXIT_DIFF if code == EXIT_DIFF else EXIT_BUG
        msg = str(exc) or type(exc).__name__
        print(f"graphnet {args.command}: error: {msg}", file=sys.stderr)
        if code == EXIT_BUG:
            print(
                "graphnet: this looks like a bug in graphnet; rerun with --debug for the traceback",
                file=sys.stderr,
            )
        return code


def _is_user_error(exc: BaseException) -> bool:
    """graphnet's own errors (which name the node, op and shapes), files, and CliError are about
    the input; anything else (a NumPy ValueError, a KeyError...) escaped graphnet: a bug."""
    from graphnet.errors import GraphNetError

    return isinstance(exc, (CliError, GraphNetError, OSError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
