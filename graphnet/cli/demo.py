"""`graphnet demo`: build the template CNN, train its BatchNorm statistics for a few
steps, run it, export it, compare with onnxruntime, optimize it and compare again; then train it
on the shipped digits without and with BatchNorm for a few seconds, and check that the trained,
optimized BN network predicts the same classes on onnxruntime."""

from __future__ import annotations

import argparse
import os

import numpy as np

from graphnet.cli.common import (
    CHECK_ATOL,
    CHECK_RTOL,
    EXIT_DIFF,
    EXIT_OK,
    CliError,
    check_output,
    ort_outputs,
)

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "build the template CNN (docs/formulas.md), train, run, export and optimize it, compare "
    "with onnxruntime"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, inputs and training (default 0)"
    )
    p.add_argument("--batch", type=int, default=4, help="examples in the demo's input (default 4)")
    p.add_argument(
        "--save", metavar="DIR", help="also write the exported and optimized .onnx files here"
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=46,
        metavar="N",
        help="steps of the short BatchNorm training experiment on the digits (0: skip it)",
    )
    p.add_argument(
        "--report",
        metavar="DEMO.html",
        help="also write the HTML report: the graph before/after optimize, its activations, "
        "the learning curves of the training step",
    )


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[str, bool]:
    from graphnet.runtime.compare import compare_outputs

    c = compare_outputs({"y": a}, {"y": b}, rtol=CHECK_RTOL, atol=CHECK_ATOL)[0]
    return (
        f"max|diff| = {c.max_abs:.3g}, max rel = {c.max_rel:.3g}  {'OK' if c.ok else 'MISMATCH'}",
        c.ok,
    )


def run(args: argparse.Namespace) -> int:
    from graphnet import runtime
    from graphnet.nn.template import template
    from graphnet.summary import format_summary

    seed, batch = args.seed, args.batch
    if batch < 1:
        raise CliError(f"--batch must be >= 1, got {batch}")
    if args.train_steps < 0:  # it skipped the training as 0 does, saying nothing
        raise CliError(f"--train-steps must be >= 0 (0 skips the training), got {args.train_steps}")
    if args.save and os.path.exists(args.save) and not os.path.isdir(args.save):
        raise CliError(f"--save {args.save} is a file, not a folder")
    if args.report:
        check_output(args.report, flag="--report")
    net = template(
        n=2,
        m=2,
        k=1,
        channels=(8, 16),
        hidden=(32,),
        classes=10,
        drop=0.5,
        name="template_cnn",
    )
    graph = net.build((None, 3, 32, 32), seed=seed)
    print(
        "The template CNN: INPUT -> [[CONV -> BN -> RELU] * 2 -> POOL] * 2 -> "
        "[DROPOUT -> FC -> RELU] * 1 -> FC -> Softmax"
    )
    print(format_summary(graph))
    bn = [n for n in graph.nodes if n.op == "BatchNormalization"]
    maps = [int(graph.params[n.inputs[1]].size) for n in bn]  # one scale per map
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

    import onnx

    x = rng.random((batch, 3, 32, 32), dtype=np.float32)
    ours = runtime.Session(graph).run({"input": x})["output"]
    model = graph.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    theirs = ort_outputs(model, {"input": x})["output"]
    text, ok = _diff(ours, theirs)
    print(
        f"inference on a batch of {batch}: NumPy runtime vs onnxruntime (opset "
        f"{model.opset_import[0].version}, {len(model.graph.node)} ONNX nodes): {text}"
    )
    print(
        "  class probabilities of example 0: "
        f"{np.array2string(ours[0], precision=3, suppress_small=True)}"
    )
    if args.save:
        from graphnet.onnx_io.export import write_model

        os.makedirs(args.save, exist_ok=True)
        write_model(model, os.path.join(args.save, "template_cnn.onnx"))
    ok = _demo_optimize(graph, x, ours, args.save) and ok
    trained = None
    if args.train_steps > 0:
        trained_ok, trained = _demo_train(args.train_steps, seed)
        ok = trained_ok and ok
    _demo_report(graph, x, trained, args.report)
    return EXIT_OK if ok else EXIT_DIFF


def _demo_train(steps: int, seed: int) -> tuple[bool, tuple]:
    """Ioffe and Szegedy's BatchNorm result in miniature (benchmarks/bn_dropout.py is the full one),
    then the trained BN network optimized and checked on onnxruntime."""
    from graphnet.train.experiment import deploy_check, short_demo

    print(
        "\ntraining (backpropagation on the NumPy runtime) on the shipped UCI digits, without and "
        "with BatchNorm at the same learning rate:"
    )
    graph, data, history = short_demo(print, steps=steps, seed=seed)
    found = deploy_check(graph, data.x_test)
    ok = found.same_class == found.total
    print(f"the trained BN network: {found}  {'OK' if ok else 'MISMATCH'}")
    return ok, (graph, data, history)


def _demo_report(graph, x: np.ndarray, trained: tuple | None, path: str | None) -> None:
    """The HTML report (or, without --report, how to get one): of the network trained on the
    digits, on a real test digit, with its learning curves, when the training step ran; else of
    the template on the demo's input."""
    if not path:
        print(
            "\npictures: graphnet demo --report demo.html writes an HTML report of this network "
            "(graphnet report MODEL.onnx: of any model)"
        )
        return
    from graphnet.report import build_report

    if trained is not None:
        net, data, history = trained
        report = build_report(
            net,
            inputs={net.inputs[0]: data.x_test[:1]},
            history=history,
            title="graphnet demo: the template trained on the digits",
            source="graphnet demo",
            input_source=f"the first test digit (a {int(data.y_test[0])})",
        )
    else:
        report = build_report(
            graph,
            inputs={"input": x[:1]},
            title="graphnet demo: the template CNN",
            source="graphnet demo",
            input_source="the demo's input (example 0)",
        )
    report.write(path)
    curves = ", the learning curves" if trained is not None else ""
    print(
        f"\nreport: wrote {path} ({report.size}; open it in a browser): the graph before and "
        f"after optimize, the per-layer table, every layer's activations{curves}"
    )


def _demo_optimize(graph, x: np.ndarray, reference: np.ndarray, save_dir: str | None) -> bool:
    from graphnet import runtime
    from graphnet.passes.manager import optimize

    opt, _ = optimize(graph)
    ours = runtime.run(opt, {"input": x})["output"]
    model = opt.to_onnx()
    theirs = ort_outputs(model, {"input": x})["output"]
    text1, ok1 = _diff(ours, reference)
    text2, ok2 = _diff(theirs, reference)
    print(
        f"\noptimize (inference pipeline): {len(graph.nodes)} -> {len(opt.nodes)} nodes, "
        f"{graph.num_params():,} -> {opt.num_params():,} parameters; ops left: "
        + ", ".join(f"{k} x{v}" for k, v in opt.op_counts().items())
    )
    print(f"  optimized vs original: NumPy {text1}; onnxruntime {text2}")
    if save_dir:
        from graphnet.onnx_io.export import write_model

        write_model(model, os.path.join(save_dir, "template_cnn.optimized.onnx"))
    return ok1 and ok2
