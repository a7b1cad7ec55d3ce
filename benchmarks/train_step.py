"""Cost of a training step against an inference forward (the issue's target: at most 3x).

    python benchmarks/train_step.py [--batch 64] [--repeats 30]

The template CNN (2 stages of 2 conv+BN+ReLU, max pools, dropout, FC 64, FC 10,
Softmax; 16/32 channels) on a batch of 8x8 digits:
- inference forward: `runtime.Session.run` (NumPy runtime, inference mode);
- train step: `Trainer.step` = recording forward in train mode + loss + backward + SGD update;
  also split into its parts;
- for reference, onnxruntime's inference forward of the same model.
The machine is shared and noisy: the timings are interleaved (one of each per round) and the
ratio is taken between medians (and between minima) of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bn_dropout import machine  # noqa: E402

from graphnet import nn, runtime  # noqa: E402
from graphnet.data import digits  # noqa: E402
from graphnet.train import SGD, Trainer, softmax_cross_entropy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    import onnxruntime as ort

    data = digits()
    x, y = data.x[: args.batch], data.y[: args.batch]
    graph = nn.template(channels=(16, 32), hidden=(64,), drop=0.5).build((None, 1, 8, 8))
    trainer = Trainer(graph, optimizer=SGD(0.01, momentum=0.9))
    bp = trainer.backprop
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess_ort = ort.InferenceSession(
        graph.to_onnx().SerializeToString(), so, providers=["CPUExecutionProvider"]
    )

    def infer():
        runtime.Session(graph).run({"input": x})

    def step():
        trainer.step(x, y)

    parts: dict[str, list[float]] = {"forward (train, recorded)": [], "backward": [], "update": []}

    def step_parts():
        t0 = time.perf_counter()
        tape = bp.forward({"input": x}, training=True, rng=trainer.rng)
        _, d = softmax_cross_entropy(tape.values[trainer.prediction], y)
        t1 = time.perf_counter()
        grads = bp.backward(tape, {trainer.prediction: d}, trainer.trainable)
        t2 = time.perf_counter()
        new = trainer.optimizer.step({n: graph.params[n] for n in trainer.trainable}, grads)
        for k, v in new.items():
            graph.set_param(k, v)
        t3 = time.perf_counter()
        parts["forward (train, recorded)"].append(t1 - t0)
        parts["backward"].append(t2 - t1)
        parts["update"].append(t3 - t2)

    def ort_infer():
        sess_ort.run(None, {"input": x})

    timings: dict[str, list[float]] = {"inference forward": [], "train step": [], "ort": []}
    for fn in (infer, step, ort_infer, step_parts):  # warm-up
        fn()
    for k in parts:
        parts[k].clear()
    for _ in range(args.repeats):
        for name, fn in (("inference forward", infer), ("train step", step), ("ort", ort_infer)):
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
        step_parts()

    print(f"machine: {machine()}")
    print(
        f"template CNN (16/32 channels, FC 64), batch {args.batch} of 8x8 digits, "
        f"{args.repeats} interleaved rounds\n"
    )
    print("| what | median (ms) | min (ms) |")
    print("| --- | --- | --- |")
    rows = [
        ("inference forward (graphnet NumPy runtime)", timings["inference forward"]),
        ("train step (graphnet)", timings["train step"]),
        ("  of which forward in train mode, recorded", parts["forward (train, recorded)"]),
        ("  of which backward", parts["backward"]),
        ("  of which SGD update", parts["update"]),
        ("inference forward (onnxruntime, 1 thread)", timings["ort"]),
    ]
    for label, ts in rows:
        print(f"| {label} | {1e3 * statistics.median(ts):.2f} | {1e3 * min(ts):.2f} |")
    med = statistics.median(timings["train step"]) / statistics.median(timings["inference forward"])
    mn = min(timings["train step"]) / min(timings["inference forward"])
    print(
        f"\ntrain step / inference forward: {med:.2f}x (medians), {mn:.2f}x (minima); target <= 3x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
