"""`graphnet run MODEL.onnx -i NAME=X.npy -o OUT.npz [--mode inference|train] [--seed S]`: run a
model on the NumPy runtime and save its outputs, keyed by output name."""

from __future__ import annotations

import argparse
import io
import os
import warnings

import numpy as np

from graphnet.cli.common import (
    EXIT_OK,
    CliError,
    check_inputs_exist,
    check_output,
    declared_mode,
    describe_mode,
    input_paths,
    load_graph,
    load_model,
    read_inputs,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run a model on the NumPy runtime"


MEMORY_CHOICES = ("default", "lean")
"""`--memory`'s choices: the runtime's MEMORY_PLANS (not imported here: the CLI imports the
runtime only when a command runs; tests/cli/test_commands.py checks they agree)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the ONNX model to run (never modified)")
    p.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH.npy",
        help="an input array, once per model input",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.npz",
        help="the outputs, keyed by name (an .npz archive: np.load(OUT.npz)[name])",
    )
    p.add_argument(
        "--mode",
        choices=("inference", "train"),
        default=None,
        help="default: the mode the model declares (train when it has training-mode "
        "BatchNormalization or Dropout)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of train-mode Dropout masks (default: fresh)"
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_CHOICES,
        default="default",
        help="lean: run under a memory budget (weights as views of the parameters where a "
        "prepared copy does not fit, smaller workspaces; slower)",
    )


def run(args: argparse.Namespace) -> int:
    from graphnet import ops, runtime

    paths = input_paths(args.input)
    check_inputs_exist([args.model])
    check_output(args.output, inputs=[args.model, *paths.values()])
    ext = os.path.splitext(args.output)[1].lower()
    # np.load reads the archive whatever its name, but people and tools go by the extension:
    # a zip of arrays named out.npy or out.txt is a trap (viz refuses g.png the same way).
    if ext not in ("", ".npz"):
        raise CliError(
            f"-o {args.output}: run writes an .npz archive of the outputs keyed by name, "
            f"not {ext}; name it OUT.npz"
        )
    model = load_model(args.model)
    graph = load_graph(args.model, model)
    mode = args.mode or declared_mode(model)
    feeds = read_inputs(paths)
    with warnings.catch_warnings():  # (lean off: said below, on stdout with the rest)
        warnings.simplefilter("ignore", RuntimeWarning)
        session = runtime.Session(graph, memory=args.memory)
    outs = session.run(feeds, mode=mode, seed=args.seed)
    if mode == "train":
        # The running statistics BatchNorm updated, also when the model does not output them.
        for n in graph.nodes:
            for in_k in ops.get(n.op).state.values():
                param = n.inputs[in_k] if in_k < len(n.inputs) else ""
                key = f"{param}.updated"
                if param in graph.params and key not in outs and key not in graph.values:
                    outs[key] = graph.params[param]
    _savez_atomic(args.output, outs)
    print(describe_mode(mode, declared_mode(model), args.mode is not None))
    if session.lean_off:
        print(f"memory {args.memory} is off: {session.lean_off}; the default plan ran")
    for k, v in outs.items():
        print(f"{k}: {v.dtype}{tuple(v.shape)}")
    return EXIT_OK


def _savez_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz of `arrays` keyed by output name, written atomically. The zip is written here
    rather than by `np.savez(file, **arrays)`, whose own parameter names (`file`) an output
    name could collide with."""
    import zipfile

    from graphnet.onnx_io.export import atomic_write

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
    atomic_write(path, buf.getvalue())
