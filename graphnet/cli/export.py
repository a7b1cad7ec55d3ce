"""`graphnet export MODULE:ATTR -o OUT.onnx [--input-shape N,3,32,32] [--mode M] [--opset K]`:
export a network defined with the DSL (a Graph, Network, Sequential or layer, or a function
returning one) to ONNX.

An exception raised by the user's own code (importing the module, calling the function) is an
error in their code, reported with their file and line (exit 2), not a graphnet bug.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from graphnet.cli.common import EXIT_BUG, EXIT_OK, CliError, check_output, count
from graphnet.onnx_io import DEFAULT_OPSET
from graphnet.onnx_io.export import MIN_OPSET

__all__ = ["HELP", "add_arguments", "run", "parse_shape"]

HELP = "export a network defined with the DSL to ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a module (dotted name or .py path) and a Graph, Network, Sequential or function "
        "in it",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the file to write")
    p.add_argument(
        "--input-shape",
        help="for a Sequential or layer: the input's shape WITH its batch dim, e.g. N,3,32,32 "
        "(N = dynamic batch)",
    )
    p.add_argument(
        "--mode",
        choices=("inference", "train"),
        default="inference",
        help="train: BatchNormalization and Dropout in training mode, the updated running "
        "statistics as extra outputs (default: inference)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=None,
        help=f"the ONNX opset to write ({MIN_OPSET} or newer; default {DEFAULT_OPSET})",
    )


def parse_shape(text: str) -> tuple:
    """`N,3,32,32` -> (None, 3, 32, 32): ints, and N for the dynamic batch."""
    dims: list[int | None] = []
    for d in text.split(","):
        d = d.strip()
        if d.upper() == "N":
            dims.append(None)
            continue
        try:
            v = int(d)
        except ValueError:
            v = -1
        if v < 1:
            raise CliError(
                f"--input-shape: expected comma-separated positive ints or N, got {text!r}"
            )
        dims.append(v)
    return tuple(dims)


def _user_frame(tb) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback that is not graphnet's (nor importlib's)."""
    found = None
    for frame, lineno in traceback.walk_tb(tb):
        mod = str(frame.f_globals.get("__name__", ""))
        if mod == "graphnet" or mod.startswith("graphnet.") or mod.startswith("importlib"):
            continue
        if frame.f_code.co_filename.startswith("<frozen"):
            continue
        found = traceback.FrameSummary(frame.f_code.co_filename, lineno, frame.f_code.co_name)
    return found


def _in_user_code(fn: Callable[[], Any], what: str) -> Any:
    """Run user code; an exception becomes a CliError naming the user's file and line."""
    from graphnet.errors import GraphNetError

    try:
        return fn()
    except CliError:
        raise
    except Exception as exc:
        frame = _user_frame(exc.__traceback__)
        where = f"{frame.filename}, line {frame.lineno}, in {frame.name}" if frame else what
        raised_here = frame is not None and _innermost_is_user(exc.__traceback__)
        msg = f"{where}: {type(exc).__name__}: {exc}"
        if raised_here or isinstance(exc, GraphNetError):
            raise CliError(f"{msg} (while {what}: an error in your code)") from exc
        raise CliError(
            f"{msg} (raised inside graphnet while {what}: unless that call is a misuse, "
            "it is a bug in graphnet)",
            EXIT_BUG,
        ) from exc


def _innermost_is_user(tb) -> bool:
    last = None
    for frame, _ in traceback.walk_tb(tb):
        last = frame
    mod = str(last.f_globals.get("__name__", "")) if last is not None else ""
    return not (mod == "graphnet" or mod.startswith("graphnet.") or mod.startswith("importlib"))


def _import_target(target: str) -> tuple[Any, str | None]:
    """(the object MODULE:ATTR names, the module's file)."""
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError(
            f"expected MODULE:ATTR (e.g. mynets:resnet or path/to/nets.py:model), got {target!r}"
        )
    if mod_name.endswith(".py") or os.sep in mod_name:
        if not os.path.isfile(mod_name):
            raise CliError(f"{mod_name}: no such file")
        spec = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(mod_name))[0], mod_name
        )
        if spec is None or spec.loader is None:
            raise CliError(f"{mod_name}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        loader = spec.loader
        _in_user_code(lambda: loader.exec_module(module), f"importing {mod_name}")
    else:
        sys.path.insert(0, os.getcwd())
        try:
            if importlib.util.find_spec(mod_name.split(".")[0]) is None:
                raise CliError(f"no module named {mod_name!r} (from {os.getcwd()})")
        except (ImportError, ValueError) as exc:
            raise CliError(f"cannot import {mod_name}: {exc}") from None
        module = _in_user_code(lambda: importlib.import_module(mod_name), f"importing {mod_name}")
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj, getattr(module, "__file__", None)


def _to_graph(obj: Any, input_shape: tuple | None, label: str):
    from graphnet.ir import Graph
    from graphnet.nn.core import Layer, Network, Sequential

    if isinstance(obj, Graph):
        return obj
    if isinstance(obj, Network):
        return obj.graph
    if isinstance(obj, Layer):
        if input_shape is None:
            raise CliError(f"{type(obj).__name__} needs --input-shape (e.g. N,3,32,32)")
        # A single layer is built as a one-layer Sequential (only Sequential has build()).
        seq = obj if isinstance(obj, Sequential) else Sequential([obj])
        return _in_user_code(lambda: seq.build(input_shape), f"building {label}")
    if callable(obj):
        return _to_graph(_in_user_code(obj, f"calling {label}"), input_shape, label)
    raise CliError(
        f"the target is a {type(obj).__name__}, not a Graph, Network, Layer or "
        "function returning one"
    )


def _spatial(graph) -> str:
    """'2-D convolutions' when the graph's convolutions say so, else ''."""
    ranks = sorted(
        {
            len(graph.values[n.inputs[0]].shape) - 2
            for n in graph.nodes
            if n.op in ("Conv", "WSConv", "ConvTranspose")
            and graph.values[n.inputs[0]].shape is not None
        }
    )
    return ", ".join(f"{k}-D" for k in ranks) + " convolutions" if ranks else ""


def run(args: argparse.Namespace) -> int:
    import onnx

    from graphnet.ir import format_shape
    from graphnet.onnx_io.export import to_onnx, write_model

    check_output(args.output)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    obj, module_file = _import_target(args.target)
    if module_file:
        check_output(args.output, inputs=[module_file])
    graph = _to_graph(obj, shape, args.target)
    model = to_onnx(graph, mode=args.mode, opset=args.opset)
    onnx.checker.check_model(model, full_check=True)
    write_model(model, args.output)
    ins = ", ".join(
        f"'{i}' {graph.values[i].dtype}{format_shape(graph.values[i].shape)}" for i in graph.inputs
    )
    conv = _spatial(graph)
    print(
        f"wrote {args.output}: graph '{graph.name}', input {ins}"
        + (f" ({conv})" if conv else "")
        + f", {count(len(graph.nodes), 'node')}, {count(graph.num_params(), 'parameter')}, opset "
        f"{model.opset_import[0].version}, {args.mode} mode"
    )
    if shape is not None and None not in shape:
        print(
            f"note: --input-shape {args.input_shape} has no N: its first dim ({shape[0]}) is a "
            f"fixed batch{f' and the network has {conv}' if conv else ''}; write "
            f"N,{args.input_shape} for a dynamic batch",
            file=sys.stderr,
        )
    return EXIT_OK
