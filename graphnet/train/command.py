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

from collections.abc import Callable
from dataclasses import dataclass

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
    graph: Graph,
    trainable: list[str] | None,
    dataset: Dataset,
    output: str,
    opts: TrainOptions,
    *,
    log: Callable[[str], None] = print,
) -> History:
    """Train `graph` on `dataset` (`trainable`: the parameters that learn, None for all), then
    write it to `output`; returns the `History`. Nothing is written before training succeeded,
    and then atomically."""
    from graphnet.train.trainer import fit

    if opts.epochs < 1:
        raise InputError(f"--epochs must be >= 1, got {opts.epochs}")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {opts.batch_size}")
    optimizer = _optimizer(opts)
    log(
        f"training '{graph.name}' on {len(dataset.x)} examples"
        + (f" ({len(dataset.x_test)} test)" if dataset.x_test is not None else "")
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
