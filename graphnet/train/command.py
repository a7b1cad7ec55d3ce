"""What `graphnet train` does, as a function the CLI module calls (and tests can call directly).

    graphnet train MODEL --data DATA.npz -o OUT.onnx [--epochs E] [--batch-size B] [--lr LR]
        [--optimizer sgd|adam] [--momentum M] [--weight-decay W] [--no-shuffle] [--seed S]
        [--history H.json]

MODEL is an ONNX file (BatchNorm layers of an eval-mode PyTorch export train in train mode) or
`module.py:attr` naming a Graph, Network, Sequential/layer (its input shape taken from the data)
or a function returning one. The loss is softmax cross-entropy, mean over the batch, on the model's
output, or on the input of a final Softmax (fused). OUT keeps the parameter names and is written
atomically; the input file is never written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphnet.errors import InputError

__all__ = ["TrainOptions", "train_model", "load_model_spec"]


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


def load_model_spec(spec: str, data_shape: tuple[int, ...]) -> tuple[Any, list[str] | None]:
    """(graph, trainable parameter names or None for all) from an ONNX path or MODULE:ATTR."""
    from graphnet.train.onnx_model import load_for_training

    if spec.endswith(".onnx") or (os.path.isfile(spec) and ":" not in spec):
        return load_for_training(spec)
    from graphnet.ir import Graph
    from graphnet.nn.core import Layer, Network

    obj = _import_target(spec)
    for _ in range(2):  # a function returning a graph, network or layer
        if isinstance(obj, Graph):
            return obj, None
        if isinstance(obj, Network):
            return obj.graph, None
        if isinstance(obj, Layer):
            return obj.build((None,) + tuple(data_shape[1:])), None
        if callable(obj):
            obj = obj()
    raise InputError(
        f"{spec} is a {type(obj).__name__}, not a Graph, Network, Layer or function returning one"
    )


def _import_target(target: str) -> Any:
    import importlib
    import importlib.util
    import sys

    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"MODEL must be an .onnx file or MODULE:ATTR, got {target!r}")
    if mod_name.endswith(".py") or os.sep in mod_name:
        if not os.path.isfile(mod_name):
            raise InputError(f"{mod_name}: no such file")
        spec = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(mod_name))[0], mod_name
        )
        if spec is None or spec.loader is None:
            raise InputError(f"{mod_name}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"{mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _optimizer(opts: TrainOptions):
    from graphnet.train.optim import SGD, Adam

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


def train_model(
    model: str,
    data: str,
    output: str,
    opts: TrainOptions,
    *,
    log: Callable[[str], None] = print,
):
    """Train MODEL on DATA and write OUT; returns the `History`. Nothing is written before
    training succeeded, and then atomically."""
    from graphnet.data import load
    from graphnet.train.trainer import fit

    if opts.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {opts.epochs}")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {opts.batch_size}")
    dataset = load(data)
    graph, trainable = load_model_spec(model, dataset.x.shape)
    optimizer = _optimizer(opts)
    total = len(dataset.x)
    log(
        f"training '{graph.name}' on {total} examples"
        + (f" ({len(dataset.x_test)} test)" if dataset.has_test else "")
        + f": {opts.epochs} epochs, batch {opts.batch_size}, {optimizer!r}"
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
    log(f"wrote {output}: {graph.num_params():,} parameters ({len(hist.epochs)} epochs)")
    return hist
