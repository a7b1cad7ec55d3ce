"""The BatchNorm and dropout experiment on the shipped digits (benchmarks/bn_dropout.py runs the
full version, `graphnet demo` a short one).

BatchNorm: the template CNN without BN at a base learning rate, and with BN at 1x, 5x
and 30x that rate (Ioffe & Szegedy's comparison); for each seed, the number of steps each run
takes to first reach the best test accuracy the no-BN run reaches, and the best accuracy it
reaches. Dropout: the template with BN, with and without dropout, and the gap between training
accuracy (inference mode) and test accuracy at the end.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphnet.data import Dataset, digits
from graphnet.train.history import History
from graphnet.train.optim import SGD
from graphnet.train.trainer import fit

__all__ = [
    "Run",
    "BN_CONFIGS",
    "DROPOUT_CONFIGS",
    "curve_of",
    "run_config",
    "bn_table",
    "dropout_table",
    "short_demo",
    "Deployment",
    "deploy_check",
]


@dataclass
class Run:
    """One training run: its configuration, seed and measurements."""

    name: str
    seed: int
    lr: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, test accuracy)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    history: History | None = None  # what `fit` returned (the demo's report draws it)

    @property
    def best(self) -> float:
        return max(a for _, a in self.curve) if self.curve else float("nan")

    def steps_to(self, target: float) -> int | None:
        """The first evaluated step with test accuracy >= target (None if never)."""
        for step, acc in self.curve:
            if acc >= target - 1e-12:
                return step
        return None


# (name, batchnorm, dropout DROP probability, learning-rate multiple)
BN_CONFIGS = [
    ("no BN", False, None, 1),
    ("BN", True, None, 1),
    ("BN, lr x5", True, None, 5),
    ("BN, lr x30", True, None, 30),
]
DROPOUT_CONFIGS = [
    ("BN, no dropout", True, None, 1),
    ("BN + dropout 0.5", True, 0.5, 1),
]


def curve_of(steps: Sequence[dict], epochs: Sequence[dict]) -> list[tuple[int, float]]:
    """(step, test accuracy) from the every-k-steps and the end-of-epoch evaluations, in step
    order, starting from (0, 0)."""
    points = {0: 0.0}
    for row in list(steps) + [
        {"step": e["steps"], "test_accuracy": e["test_accuracy"]}
        for e in epochs
        if "test_accuracy" in e
    ]:
        points[int(row["step"])] = float(row["test_accuracy"])
    return sorted(points.items())


def run_config(
    name: str,
    batchnorm: bool,
    dropout: float | None,
    lr_multiple: float,
    *,
    seed: int,
    base_lr: float = 0.01,
    epochs: int = 15,
    batch_size: int = 64,
    eval_every: int = 10,
    data: Dataset | None = None,
    channels: Sequence[int] = (16, 32),
    hidden: Sequence[int] = (64,),
    eval_train: bool = False,
    progress: bool | None = False,
    keep_graph: Callable[[Any], None] | None = None,
) -> Run:
    """Train the template (2 stages of 2 convs, one hidden FC) with SGD momentum 0.9 at
    `base_lr * lr_multiple`; test accuracy every `eval_every` steps. `dropout` is the drop
    probability before the hidden FC; None: no dropout layer (the template's own default would
    be 0.5)."""
    from graphnet.nn.template import template

    data = data if data is not None else digits()
    graph = template(
        n=2,
        m=2,
        k=1,
        channels=channels,
        hidden=hidden,
        classes=10,
        batchnorm=batchnorm,
        drop=0.0 if dropout is None else dropout,  # drop=0: no Dropout node
        name=name.replace(" ", "_").replace(",", ""),
    ).build((None,) + tuple(data.x.shape[1:]), seed=seed)
    lr = base_lr * lr_multiple
    hist = fit(
        graph,
        data,
        optimizer=SGD(lr, momentum=0.9),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        eval_every=eval_every,
        eval_train=eval_train,
        progress=progress,
    )
    run = Run(name, seed, lr)
    run.curve = curve_of(hist.steps, hist.epochs)
    run.epochs = hist.epochs
    run.seconds = sum(e["seconds"] for e in hist.epochs)
    run.history = hist
    if keep_graph is not None:
        keep_graph(graph)
    return run


def _mean_sd(values: Sequence[float | None], decimals: int = 2) -> str:
    """ "mean ± sd" over the values that exist (just the value when there is one; "-" if none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{decimals}f}"
    return f"{statistics.mean(vals):.{decimals}f} ± {statistics.stdev(vals):.{decimals}f}"


def bn_table(runs: Sequence[Run], threshold: float = 0.98) -> str:
    """Markdown: per configuration, steps to the no-BN run's best test accuracy (same seed),
    steps to `threshold`, best test accuracy; mean ± standard deviation over the seeds that
    reach it (how many do is said)."""
    by_seed_target = {r.seed: r.best for r in runs if r.name == BN_CONFIGS[0][0]}
    lines = [
        "| network | lr | steps trained | steps to no-BN's best test accuracy (runs reaching it) "
        f"| steps to {100 * threshold:g}% (runs reaching it) | best test accuracy (%) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, *_ in BN_CONFIGS:
        rs = [r for r in runs if r.name == name]
        if not rs:
            continue
        steps = [r.steps_to(by_seed_target[r.seed]) for r in rs if r.seed in by_seed_target]
        reached = [s for s in steps if s is not None]
        fixed = [r.steps_to(threshold) for r in rs]
        hit = [s for s in fixed if s is not None]
        lines.append(
            f"| {name} | {rs[0].lr:g} | {rs[0].epochs[-1]['steps']} | "
            f"{_mean_sd([float(s) for s in reached], 0)} ({len(reached)}/{len(steps)}) | "
            f"{_mean_sd([float(s) for s in hit], 0)} ({len(hit)}/{len(fixed)}) | "
            f"{_mean_sd([100 * r.best for r in rs])} |"
        )
    return "\n".join(lines)


def dropout_table(runs: Sequence[Run]) -> str:
    """Markdown: final training accuracy (inference mode), test accuracy and their gap."""
    lines = [
        "| network | train accuracy (%) | test accuracy (%) | gap (points) |",
        "| --- | --- | --- | --- |",
    ]
    for name, *_ in DROPOUT_CONFIGS:
        rs = [r for r in runs if r.name == name]
        if not rs:
            continue
        train = [100 * r.epochs[-1]["train_eval_accuracy"] for r in rs]
        test = [100 * r.epochs[-1]["test_accuracy"] for r in rs]
        gap = [a - b for a, b in zip(train, test, strict=True)]
        lines.append(f"| {name} | {_mean_sd(train)} | {_mean_sd(test)} | {_mean_sd(gap)} |")
    return "\n".join(lines)


def short_demo(
    log: Callable[[str], None] = print, *, steps: int = 46, seed: int = 0, base_lr: float = 0.01
) -> tuple[Any, Dataset, History | None]:
    """A seconds-long version of the BatchNorm experiment for `graphnet demo`: a small template
    (8/16 channels, 32 hidden) trained `steps` steps on the digits without and with BN at the
    same learning rate; prints test accuracy along the way. Returns the trained BN graph, the
    data and the BN run's history, for the deployment check and the report that follow."""
    import functools
    import time

    data = digits()
    per_epoch = -(-len(data.x) // 64)
    epochs = max(1, -(-steps // per_epoch))
    every = max(1, steps // 4)
    kept: dict[str, Any] = {}
    runs: dict[str, Run] = {}
    n_test = 0 if data.y_test is None else len(data.y_test)
    log(
        f"training the template (8/16 channels) on {len(data.x)} digits, {epochs * per_epoch} "
        f"steps of 64, SGD momentum 0.9; test accuracy on {n_test} held-out digits:"
    )
    for name, bn, drop, mult in BN_CONFIGS[:2]:
        t0 = time.perf_counter()
        run = run_config(
            name,
            bn,
            drop,
            mult,
            seed=seed,
            base_lr=base_lr,
            epochs=epochs,
            eval_every=every,
            data=data,
            channels=(8, 16),
            hidden=(32,),
            keep_graph=functools.partial(kept.__setitem__, name),
        )
        runs[name] = run
        shown = [(s, a) for s, a in run.curve[1:] if s % every == 0 or s == run.curve[-1][0]]
        points = "  ".join(f"step {s}: {100 * a:5.1f}%" for s, a in shown)
        log(f"  {name:10s} lr {run.lr:<5g} {points}  ({time.perf_counter() - t0:.1f} s)")
    bn_run = runs[BN_CONFIGS[1][0]]
    return kept[bn_run.name], data, bn_run.history


@dataclass
class Deployment:
    """What `deploy_check` found: the optimized graph and how its onnxruntime predictions compare
    with the training graph's in inference mode."""

    nodes_before: int
    nodes_after: int
    ops_after: list[str]
    same_class: int
    total: int
    max_abs_diff: float

    def __str__(self) -> str:
        return (
            f"optimize: {self.nodes_before} -> {self.nodes_after} nodes "
            f"({', '.join(self.ops_after)}); onnxruntime predicts the same class as the training "
            f"graph (inference mode, NumPy runtime) for {self.same_class}/{self.total} test "
            f"images; max |probability diff| {self.max_abs_diff:.2g}"
        )


def deploy_check(graph: Any, x: Any) -> Deployment:
    """`optimize` a trained graph (BN folded, dropout gone), export it, run onnxruntime on `x`
    and compare its classes with the training graph's on the NumPy runtime in inference mode."""
    import numpy as np
    import onnxruntime as ort

    from graphnet import runtime
    from graphnet.passes.manager import optimize

    name = graph.inputs[0]
    ours = runtime.run(graph, {name: x})[graph.outputs[0]]
    opt, _ = optimize(graph)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        opt.to_onnx().SerializeToString(), so, providers=["CPUExecutionProvider"]
    )
    theirs = sess.run(None, {name: x})[0]
    return Deployment(
        len(graph.nodes),
        len(opt.nodes),
        sorted(opt.op_counts()),
        int((theirs.argmax(axis=1) == ours.argmax(axis=1)).sum()),
        len(x),
        float(np.abs(theirs.astype(np.float64) - ours).max()),
    )
