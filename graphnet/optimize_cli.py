"""`graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] [--report R.json]`.

Contract:
- the output passes `onnx.checker.check_model(full_check=True)` whenever the input did (onnx's
  own shape inference has known bugs: an input it rejects is held to the plain check only);
- IN is never written unless `-o` names it; every file is written atomically, so a failure or
  Ctrl-C leaves no partial file and no changed input;
- `--verify` runs the NumPy runtime before and after every pass on seeded random inputs (through
  the pass manager), and in every case compares the written model with the input model under
  onnxruntime; a difference beyond tolerance refuses to write anything (exit 1). Models that
  the NumPy runtime cannot run (opaque ops) are verified with onnxruntime alone.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from graphnet.cli import CHECK_ATOL, CHECK_RTOL, EXIT_DIFF, EXIT_OK, CliError

__all__ = ["run_optimize", "output_opset"]


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


def _ort_compare(original, optimized, graph, seed: int) -> list[tuple[str, float, bool]]:
    """(output, max|diff|, ok) per graph output, onnxruntime on both models, seeded inputs."""
    from graphnet.commands import _close, _diff, _ort_outputs
    from graphnet.runtime.feeds import random_inputs

    feeds = random_inputs(graph, batch=2, seed=seed)
    a = _ort_outputs(original.SerializeToString(), feeds)
    b = _ort_outputs(optimized.SerializeToString(), feeds)
    return [(k, _diff(b[k], a[k])[0], _close(b[k], a[k], CHECK_RTOL, CHECK_ATOL)) for k in a]


def _has_training_nodes(model) -> bool:
    """Does the model run BatchNormalization or Dropout in training mode (PyTorch's TRAINING
    export)?"""
    from onnx import helper, numpy_helper

    from graphnet.onnx_io.importer import constant_value

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update(
        (n.output[0], constant_value(n))
        for n in model.graph.node
        if n.op_type == "Constant" and n.output
    )
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            if any(
                a.name == "training_mode" and helper.get_attribute_value(a) for a in n.attribute
            ):
                return True
        if n.op_type == "Dropout" and len(n.input) > 2 and n.input[2]:
            flag = consts.get(n.input[2])
            if flag is None or bool(np.asarray(flag).reshape(-1)[0]):
                return True
    return False


def run_optimize(args) -> int:
    import onnx

    from graphnet.errors import PassError
    from graphnet.onnx_io.export import atomic_write, to_onnx, write_model
    from graphnet.onnx_io.importer import from_onnx
    from graphnet.passes.manager import describe_passes, optimize, resolve_pipeline

    if args.list_passes:
        print(describe_passes())
        return EXIT_OK
    src = args.model
    if not src or not args.output:
        raise CliError(
            "usage: graphnet optimize IN.onnx -o OUT.onnx [--passes a,b] [--verify] "
            "[--report R.json]"
        )
    if not os.path.isfile(src):
        raise CliError(f"{src}: no such file")
    try:
        original = onnx.load(src)
    except Exception as exc:
        raise CliError(f"{src} is not a readable ONNX model: {exc}") from None
    was_valid = _full_check_ok(original)

    t0 = time.perf_counter()
    graph = from_onnx(original)
    pipeline = (
        [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes else "inference"
    )
    runnable = _runnable(graph)
    try:
        resolve_pipeline(pipeline)
    except PassError as exc:  # an unknown pass name is bad usage
        raise CliError(str(exc)) from None
    try:
        opt, report = optimize(
            graph,
            pipeline,
            verify=bool(args.verify and runnable),
            seed=args.seed,
            max_constant_bytes=args.fold_large_constants,
        )
    except PassError as exc:  # a pass broke the graph or its numerics
        raise CliError(f"{exc}; nothing written", EXIT_DIFF) from None
    model = to_onnx(opt, opset=output_opset(graph))
    elapsed = time.perf_counter() - t0

    try:
        onnx.checker.check_model(model, full_check=was_valid)
    except Exception as exc:
        raise CliError(
            f"the optimized model fails onnx's checker ({str(exc).splitlines()[0]}); "
            "nothing written",
            3,
        ) from None

    checks = []
    if args.verify:
        # A model exported in training mode computes batch statistics and random masks under
        # onnxruntime; its inference meaning is the imported graph written in inference mode.
        training = _has_training_nodes(original)
        reference = to_onnx(graph, opset=output_opset(graph)) if training else original
        checks = _ort_compare(reference, model, graph, args.seed)
        bad = [(k, d) for k, d, ok in checks if not ok]
        if bad:
            what = ", ".join(f"'{k}' max|diff| = {d:.3g}" for k, d in bad)
            raise CliError(
                f"verification failed, nothing written: onnxruntime outputs differ ({what}; "
                f"rtol {CHECK_RTOL:g}, atol {CHECK_ATOL:g})",
                EXIT_DIFF,
            )

    size = write_model(model, args.output)
    print(report.format())
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
        print(
            f"verified: {how}onnxruntime end to end{against}: "
            + ", ".join(f"{k} max|diff| = {d:.3g}" for k, d, _ in checks)
        )
    print(
        f"wrote {args.output} ({size:,} bytes, opset {model.opset_import[0].version}) in "
        f"{elapsed * 1e3:.0f} ms"
    )

    if args.report:
        doc = report.to_dict()
        doc.update(
            {
                "input": src,
                "output": args.output,
                "output_bytes": size,
                "opset": model.opset_import[0].version,
                "seconds": elapsed,
                "verify": [{"output": k, "max_abs_diff": d, "ok": ok} for k, d, ok in checks]
                if args.verify
                else None,
            }
        )
        atomic_write(
            args.report, (json.dumps(doc, indent=2, default=_json_default) + "\n").encode()
        )
    return EXIT_OK


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)
