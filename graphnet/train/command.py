"""What `graphnet train` does once its model and data are loaded (`graphnet.cli.train` loads
them: an ONNX file through `load_for_training`, MODULE:ATTR as `export` does).

    graphnet train MODEL --data DATA.npz -o OUT.onnx [--epochs E] [--batch-size B] [--lr LR]
        [--optimizer sgd|adam] [--momentum M] [--weight-decay W] [--no-shuffle] [--seed S]
        [--history H.json]

The loss is softmax cross-entropy, mean over the batch, on the model's
output, or on the input of a final Softmax (fused). OUT keeps the parameter names and is written
atomically; the input file is never written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphnet.data import Dataset
from graphnet.errors import InputError
from graphnet.ir import Graph
from graphnet.train.history import History

__all__ = ["TrainOptions", "train_model"]


@dataclass
class TrainOptions:
    """The CLI's options, with its defaults (PyTorch's where PyTorch has one)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # sgd 0.01, adam 0.001
    optimizer: str = "sgd"
    momentum: float | None = None  # sgd only; 0 as in PyTorch
    weight_decay: float = 0.0
    shuffle: bool = True
    seed: int = 0
    history: str | None = None
    progress: bool | None = None


def _check_number(flag: str, value: float | None, high: float = math.inf) -> None:
    """A flag's value is a finite number in [0, high), or the error names the flag."""
    if value is not None and not (0.0 <= value < high):
        where = "[0, inf)" if high == math.inf else f"[0, {high:g})"
        raise InputError(f"{flag} must be a number in {where}, got {value!r}")


def _optimizer(opts: TrainOptions):
    from graphnet.train.optim import SGD, Adam

    _check_number("--lr", opts.lr)
    _check_number("--momentum", opts.momentum)
    _check_number("--weight-decay", opts.weight_decay)
    if opts.optimizer == "sgd":
        return SGD(
            0.01 if opts.lr is None else opts.lr,
            momentum=0.0 if opts.momentum is None else opts.momentum,
            weight_decay=opts.weight_decay,
        )
    if opts.optimizer == "adam":
        if opts.momentum is not None:
            raise InputError("--momentum is for sgd; Adam's betas are PyTorch's 0.9 and 0.999")
        return Adam(0.001 if opts.lr is None else opts.lr, weight_decay=opts.weight_decay)
    raise InputError(f"--optimizer must be sgd or adam, got {opts.optimizer!r}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _check_labels(graph: Graph, dataset: Dataset, data_name: str) -> None:
    """Before any training: the labels are class indices of the model's output (N, K), checked
    up front so that the error names the data file (the loss would only say so at the first
    batch holding a bad label)."""
    shape = graph.values[graph.outputs[0]].shape if len(graph.outputs) == 1 else None
    if not shape or len(shape) != 2 or not isinstance(shape[1], int):
        return  # the loss checks each batch against the output it gets
    classes = shape[1]
    for name, y in (("y", dataset.y), ("y_test", dataset.y_test)):
        if y is None or not len(y):
            continue
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise InputError(
                f"{data_name}: {name} holds labels {low}..{high}, but the model has {classes} "
                f"outputs: labels must be in [0, {classes})"
            )


def _check_finite(dataset: Dataset, data_name: str) -> None:
    """Before any training: the images hold only finite numbers (a NaN would otherwise surface
    as a NaN loss at the first batch holding it, blamed on the learning rate)."""
    for name, x in (("x", dataset.x), ("x_test", dataset.x_test)):
        if x is None:
            continue
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{data_name}: {name} holds NaN or infinite values in "
                f"{_count(int(bad.sum()), 'example')} (the first is example {first})"
            )


def train_model(
    graph: Graph,
    trainable: list[str] | None,
    dataset: Dataset,
    output: str,
    opts: TrainOptions,
    *,
    log: Callable[[str], None] = print,
    data_name: str = "the data",
) -> History:
    """Train `graph` on `dataset` (`trainable`: the parameters that learn, None for all), then
    write it to `output`; returns the `History`. Nothing is written before training succeeded,
    and then atomically."""
    from graphnet.train.trainer import check_batch_shape, fit

    if opts.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {opts.epochs}")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {opts.batch_size}")
    optimizer = _optimizer(opts)
    _check_labels(graph, dataset, data_name)
    _check_finite(dataset, data_name)
    # Before the "training ..." line: a shape the model cannot take is the data's fault, found
    # without a step (the first step would refuse it too, after announcing the training).
    check_batch_shape(graph, dataset.x[: opts.batch_size])
    log(
        f"training '{graph.name}' on {len(dataset.x)} examples"
        + (f" ({len(dataset.x_test)} test)" if dataset.x_test is not None else "")
        + f": {_count(opts.epochs, 'epoch')}, batch {opts.batch_size}, {optimizer!r}"
    )

    def on_epoch(row: dict) -> None:
        parts = [f"epoch {row['epoch']}/{opts.epochs}", f"loss {row['loss']:.4f}"]
        if "accuracy" in row:
            parts.append(f"accuracy {100 * row['accuracy']:.2f}%")
        if "test_accuracy" in row:
            parts.append(f"test loss {row['test_loss']:.4f}")
            parts.append(f"test accuracy {100 * row['test_accuracy']:.2f}%")
        parts.append(f"({row['seconds']:.1f} s)")
        log("  ".join(parts))

    hist = fit(
        graph,
        dataset,
        optimizer=optimizer,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        shuffle=opts.shuffle,
        seed=opts.seed,
        history=opts.history,
        trainable=trainable,
        progress=opts.progress,
        on_epoch=on_epoch,
    )
    graph.save(output)
    log(f"wrote {output}: {graph.num_params():,} parameters ({_count(len(hist.epochs), 'epoch')})")
    return hist
