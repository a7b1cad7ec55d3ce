"""The implementations behind `graphnet.cli`: one function per command, `args -> exit code`."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from graphnet.cli import CHECK_ATOL, CHECK_RTOL, EXIT_DIFF, EXIT_OK, CliError

__all__ = ["COMMANDS"]


def _load(path: str):
    from graphnet.onnx_io.importer import load

    if not os.path.isfile(path):
        raise CliError(f"{path}: no such file")
    return load(path)


def _ort_outputs(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(
        zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True)
    )


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max(|b|, tiny)) over the array."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("inf"), float("inf")
    if a64.size == 0:
        return 0.0, 0.0
    d = np.abs(a64 - b64)
    return float(d.max()), float((d / np.maximum(np.abs(b64), 1e-30)).max())


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool(
        np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)
    )


# ---------------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    import onnx

    from graphnet import runtime
    from graphnet.nn.template import template
    from graphnet.summary import format_summary

    seed, batch = args.seed, args.batch
    if batch < 1:
        raise CliError(f"--batch must be >= 1, got {batch}")
    net = template(
        n=2,
        m=2,
        k=1,
        channels=(8, 16),
        hidden=(32,),
        classes=10,
        dropout=0.5,
        name="lecture_template",
    )
    graph = net.build((None, 3, 32, 32), seed=seed)
    print(
        "The lecture's template: INPUT -> [[CONV -> BN -> RELU] * 2 -> POOL] * 2 -> "
        "[DROPOUT -> FC -> RELU] * 1 -> FC -> Softmax"
    )
    print(format_summary(graph))
    bn = [n for n in graph.nodes if n.op == "BatchNormalization"]
    maps = [graph.values[n.inputs[1]].shape[0] for n in bn]
    print(f"BatchNorm: {len(bn)} layers, {sum(maps)} maps, {4 * sum(maps)} parameters (4 per map)")

    # Image-like inputs (pixel values in [0, 1]) so that the BatchNorm statistics move visibly.
    rng = np.random.default_rng(seed)
    sess = runtime.Session(graph)
    steps = 5
    for _ in range(steps):
        xb = rng.random((8, 3, 32, 32), dtype=np.float32)
        sess.run({"input": xb}, mode="train", seed=seed)
    if bn:
        mean0, var0 = graph.params[bn[0].inputs[3]], graph.params[bn[0].inputs[4]]
        print(
            f"\ntrain mode: {steps} steps on random batches of 8 updated the running statistics "
            f"(smoothing 0.9; from mean 0, var 1): {bn[0].name} mean[:3] = "
            f"{np.array2string(mean0[:3], precision=4)}, var[:3] = "
            f"{np.array2string(var0[:3], precision=4)}"
        )

    x = rng.random((batch, 3, 32, 32), dtype=np.float32)
    ours = runtime.Session(graph).run({"input": x})["output"]
    model = graph.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    theirs = _ort_outputs(data, {"input": x})["output"]
    abs_d, rel_d = _diff(ours, theirs)
    ok = _close(ours, theirs, CHECK_RTOL, CHECK_ATOL)
    print(
        f"inference on a batch of {batch}: NumPy runtime vs onnxruntime (opset "
        f"{model.opset_import[0].version}, {len(model.graph.node)} ONNX nodes): max|diff| = "
        f"{abs_d:.3g}, max rel = {rel_d:.3g}  {'OK' if ok else 'MISMATCH'}"
    )
    print(
        "  class probabilities of example 0: "
        f"{np.array2string(ours[0], precision=3, suppress_small=True)}"
    )

    if args.save:
        os.makedirs(args.save, exist_ok=True)
        from graphnet.onnx_io.export import atomic_write

        atomic_write(os.path.join(args.save, "lecture_template.onnx"), data)

    ok = _demo_optimize(graph, x, ours, args.save) and ok
    return EXIT_OK if ok else EXIT_DIFF


def _demo_optimize(graph, x: np.ndarray, reference: np.ndarray, save_dir: str | None) -> bool:
    try:
        from graphnet.passes.manager import optimize
    except ImportError:  # the passes package is optional for the demo
        return True
    from graphnet import runtime

    opt, report = optimize(graph)
    ours = runtime.run(opt, {"input": x})["output"]
    model = opt.to_onnx()
    theirs = _ort_outputs(model.SerializeToString(), {"input": x})["output"]
    a1, _ = _diff(ours, reference)
    a2, _ = _diff(theirs, reference)
    ok = _close(ours, reference, CHECK_RTOL, CHECK_ATOL) and _close(
        theirs, reference, CHECK_RTOL, CHECK_ATOL
    )
    print(
        f"\noptimize (inference pipeline): {len(graph.nodes)} -> {len(opt.nodes)} nodes, "
        f"{graph.num_params():,} -> {opt.num_params():,} parameters; ops left: "
        + ", ".join(f"{k} x{v}" for k, v in opt.op_counts().items())
    )
    print(
        f"  optimized vs original: NumPy max|diff| = {a1:.3g}, onnxruntime max|diff| = {a2:.3g}  "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    if save_dir:
        from graphnet.onnx_io.export import atomic_write

        atomic_write(
            os.path.join(save_dir, "lecture_template.optimized.onnx"), model.SerializeToString()
        )
    return ok


# ------------------------------------------------------------------------------------- summary
def cmd_summary(args) -> int:
    from graphnet.summary import format_summary, summarize

    graph = _load(args.model)
    rows = summarize(graph)
    if args.json:
        print(
            json.dumps(
                {
                    "graph": graph.name,
                    "params": graph.num_params(),
                    "layers": [r.to_dict() for r in rows],
                },
                indent=2,
            )
        )
    else:
        print(format_summary(graph, rows))
    return EXIT_OK


# ----------------------------------------------------------------------------------------- run
def _parse_inputs(items: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CliError(f"-i expects NAME=PATH.npy, got {item!r}")
        if not os.path.isfile(path):
            raise CliError(f"input '{name}': {path}: no such file")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise CliError(f"input '{name}': {path} is not a readable .npy file ({exc})") from None
    return feeds


def _savez_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    from graphnet.onnx_io.export import atomic_write

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def cmd_run(args) -> int:
    from graphnet import runtime

    graph = _load(args.model)
    feeds = _parse_inputs(args.input)
    outs = runtime.Session(graph).run(feeds, mode=args.mode, seed=args.seed)
    _savez_atomic(args.output, outs)
    for k, v in outs.items():
        print(f"{k}: {v.dtype}{tuple(v.shape)}")
    return EXIT_OK


# --------------------------------------------------------------------------------------- check
def cmd_check(args) -> int:
    from graphnet import runtime
    from graphnet.runtime.feeds import random_inputs

    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    graph = _load(args.model)
    feeds = random_inputs(graph, batch=args.batch, seed=args.seed)
    ours = runtime.Session(graph).run(feeds)
    with open(args.model, "rb") as fh:
        theirs = _ort_outputs(fh.read(), feeds)
    ok = True
    for name in graph.outputs:
        a, b = ours[name], theirs[name]
        abs_d, rel_d = _diff(a, b)
        good = _close(a, b, args.rtol, args.atol)
        ok &= good
        print(
            f"{name}: shape {tuple(a.shape)}  max|diff| = {abs_d:.3g}  max rel = {rel_d:.3g}  "
            f"{'OK' if good else 'MISMATCH'}"
        )
    print(f"{'agree' if ok else 'DIFFER'} (rtol {args.rtol:g}, atol {args.atol:g})")
    return EXIT_OK if ok else EXIT_DIFF


# -------------------------------------------------------------------------------------- export
def _import_target(target: str) -> Any:
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise CliError(
            f"expected MODULE:ATTR (e.g. mynets:resnet or path/to/nets.py:model), got {target!r}"
        )
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            if not os.path.isfile(mod_name):
                raise CliError(f"{mod_name}: no such file")
            spec = importlib.util.spec_from_file_location(
                os.path.splitext(os.path.basename(mod_name))[0], mod_name
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot import {mod_name}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"{mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _to_graph(obj: Any, input_shape: str | None):
    from graphnet.ir import Graph
    from graphnet.nn.core import Layer, Network

    if isinstance(obj, Graph):
        return obj
    if isinstance(obj, Network):
        return obj.graph
    if isinstance(obj, Layer):
        if not input_shape:
            raise CliError(f"{type(obj).__name__} needs --input-shape (e.g. N,3,32,32)")
        try:
            shape = tuple(
                None if d.strip().upper() == "N" else int(d) for d in input_shape.split(",")
            )
        except ValueError:
            raise CliError(
                f"--input-shape: expected comma-separated ints or N, got {input_shape!r}"
            ) from None
        return obj.build(shape)
    if callable(obj):
        return _to_graph(obj(), input_shape)
    raise CliError(
        f"the target is a {type(obj).__name__}, not a Graph, Network, Layer or "
        "function returning one"
    )


def cmd_export(args) -> int:
    from graphnet.onnx_io.export import to_onnx, write_model

    graph = _to_graph(_import_target(args.target), args.input_shape)
    model = to_onnx(graph, mode=args.mode, opset=args.opset)
    import onnx

    onnx.checker.check_model(model, full_check=True)
    write_model(model, args.output)
    print(
        f"wrote {args.output}: graph '{graph.name}', {len(graph.nodes)} nodes, "
        f"{graph.num_params():,} parameters, opset {model.opset_import[0].version}, "
        f"{args.mode} mode"
    )
    return EXIT_OK


# ------------------------------------------------------------------------------------ optimize
def cmd_optimize(args) -> int:
    from graphnet.optimize_cli import run_optimize

    return run_optimize(args)


COMMANDS: dict[str, Callable[[Any], int]] = {
    "demo": cmd_demo,
    "summary": cmd_summary,
    "run": cmd_run,
    "check": cmd_check,
    "export": cmd_export,
    "optimize": cmd_optimize,
}
