"""Cost of a training step against an inference forward (the issue's target: at most 3x).

    python benchmarks/train_step.py [--batch 64] [--repeats 40]

The template CNN (2 stages of 2 conv+BN+ReLU, max pools, dropout, FC 64, FC 10, Softmax; 16/32
channels) on a batch of 8x8 digits:
- inference forward: one `runtime.Session` kept across runs (its default fast plan, inference
  mode), as a deployed model runs;
- train step: `Trainer.step` (forward in train mode recording what the backward reads, fused
  softmax cross-entropy, backward to every parameter, SGD with momentum written back), on the
  fast plan (the default) and on the reference plan (plain kernels and rules, the oracle);
- the fast step split into its phases: the recording forward, the loss, the backward per op
  family (conv, normalization, pooling, activation, linear, shape) and the optimizer update;
- for reference, onnxruntime's inference forward of the same model (1 thread).
Each engine trains its own copy of the graph (an inference session caches prepared weights while
a parameter stays the same array: training the graph it reads would make it prepare them again).
The machine is shared and noisy: one round runs each measurement once, rounds are repeated, and
ratios are taken between medians (and between minima) of the same run; the load average before
and after is printed.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bn_dropout import machine  # noqa: E402

from graphnet import nn, runtime  # noqa: E402
from graphnet.data import digits  # noqa: E402
from graphnet.runtime.gradients import get_gradient  # noqa: E402
from graphnet.train import SGD, Trainer, softmax_cross_entropy  # noqa: E402

FAMILIES = ("conv", "normalization", "pooling", "activation", "linear", "shape")


def _family(op: str) -> str:
    """The gradient module an op's rule lives in (runtime/gradients/<family>.py)."""
    return get_gradient(op).fn.__module__.rsplit(".", 1)[-1]


def _phased(trainer: Trainer, x, y, parts: dict[str, list[float]]) -> Callable[[], None]:
    """One training step, timed phase by phase (the backward by op family)."""
    bp = trainer.backprop
    graph = trainer.graph
    spent: dict[str, float] = {}
    plain = bp._differentiate

    def timed(k, step, *args):
        t = time.perf_counter()
        try:
            return plain(k, step, *args)
        finally:
            fam = _family(step.node.op)
            spent[fam] = spent.get(fam, 0.0) + time.perf_counter() - t

    bp._differentiate = timed  # this trainer only: an instance attribute

    def run() -> None:
        spent.clear()
        t0 = time.perf_counter()
        tape = bp.forward({trainer.input: x}, training=True, rng=trainer.rng)
        t1 = time.perf_counter()
        _, d = softmax_cross_entropy(tape.values[trainer.prediction], y)
        t2 = time.perf_counter()
        grads = bp.backward(tape, {trainer.prediction: d}, trainer.trainable)
        t3 = time.perf_counter()
        new = trainer.optimizer.step({n: graph.params[n] for n in trainer.trainable}, grads)
        for k, v in new.items():
            graph.set_param(k, v)
        t4 = time.perf_counter()
        parts["forward (train mode, recording)"].append(t1 - t0)
        parts["loss"].append(t2 - t1)
        parts["backward"].append(t3 - t2)
        walked = sum(spent.values())
        for fam in FAMILIES:
            parts[f"backward: {fam}"].append(spent.get(fam, 0.0))
        parts["backward: the walk around the rules"].append(t3 - t2 - walked)
        parts["SGD update"].append(t4 - t3)

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--no-reference", action="store_true", help="skip the reference plan's step")
    args = p.parse_args(argv)
    import onnxruntime as ort

    data = digits()
    x, y = data.x[: args.batch], data.y[: args.batch]
    graph = nn.template(channels=(16, 32), hidden=(64,), drop=0.5).build((None, 1, 8, 8))
    session = runtime.Session(copy.deepcopy(graph))
    fast = Trainer(copy.deepcopy(graph), optimizer=SGD(0.01, momentum=0.9))
    ref = Trainer(copy.deepcopy(graph), optimizer=SGD(0.01, momentum=0.9), plan="reference")
    phased = Trainer(copy.deepcopy(graph), optimizer=SGD(0.01, momentum=0.9))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess_ort = ort.InferenceSession(
        graph.to_onnx().SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "forward (train mode, recording)",
            "loss",
            "backward",
            *[f"backward: {f}" for f in FAMILIES],
            "backward: the walk around the rules",
            "SGD update",
        )
    }
    measures: dict[str, Callable[[], object]] = {
        "inference forward (graphnet fast plan)": lambda: session.run({"input": x}),
        "train step (graphnet fast plan)": lambda: fast.step(x, y),
        "inference forward (onnxruntime, 1 thread)": lambda: sess_ort.run(None, {"input": x}),
    }
    if not args.no_reference:
        measures["train step (graphnet reference plan)"] = lambda: ref.step(x, y)
    step_parts = _phased(phased, x, y, parts)
    timings: dict[str, list[float]] = {k: [] for k in measures}
    load_before = os.getloadavg()
    for fn in (*measures.values(), step_parts):  # warm-up: plans compiled, buffers allocated
        fn()
    for v in parts.values():
        v.clear()
    for _ in range(args.repeats):
        for name, fn in measures.items():
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
        step_parts()
    load_after = os.getloadavg()

    print(f"machine: {machine()}")
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after "
        + ", ".join(f"{v:.2f}" for v in load_after)
    )
    print(
        f"template CNN (16/32 channels, FC 64), batch {args.batch} of 8x8 digits, "
        f"{args.repeats} interleaved rounds\n"
    )
    print("| what | median (ms) | min (ms) |")
    print("| --- | --- | --- |")
    rows = [(k, v) for k, v in timings.items()]
    rows[2:2] = [(f"  {k}", v) for k, v in parts.items()]
    for label, ts in rows:
        print(f"| {label} | {1e3 * statistics.median(ts):.2f} | {1e3 * min(ts):.2f} |")
    infer = timings["inference forward (graphnet fast plan)"]
    for name in ("train step (graphnet fast plan)", "train step (graphnet reference plan)"):
        if name not in timings:
            continue
        med = statistics.median(timings[name]) / statistics.median(infer)
        mn = min(timings[name]) / min(infer)
        print(
            f"\n{name} / inference forward: {med:.2f}x (medians), {mn:.2f}x (minima); target <= 3x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
