"""`graphnet train MODEL --data DATA.npz -o OUT.onnx [--epochs E] [--batch-size B] [--lr LR]
[--optimizer sgd|adam] [--momentum M] [--weight-decay W] [--no-shuffle] [--seed S]
[--history H.json]`: train a model on the NumPy runtime with backpropagation.

MODEL is an ONNX file (a PyTorch export in eval mode works: its BatchNorm layers train in train
mode) or MODULE:ATTR as for `export` (a Sequential or layer takes its input shape from the data).
DATA.npz holds `x` (N, ...) float32 and `y` (N,) integer labels, optionally `x_test`, `y_test`.
The loss is softmax cross-entropy, mean over the batch, on the model's output (on the input of a
final Softmax, fused). SGD and Adam are PyTorch's (momentum buffer v = m v + g, weight decay
added to g; Adam betas 0.9/0.999, eps 1e-8). With --no-shuffle and B = N, E epochs are exactly E
full-batch steps. OUT keeps the parameter names and is written atomically once training is done;
the inputs are never modified. The training itself is `graphnet.train.command.train_model`.
"""

from __future__ import annotations

import argparse
import os

from graphnet.cli.common import EXIT_OK, CliError, check_distinct, check_output

__all__ = ["HELP", "USAGE", "add_arguments", "run"]

HELP = "train a model (an ONNX file or module.py:attr) on an .npz data set with backpropagation"


# The contract, word for word (scripts depend on it); argparse's own usage line would put
# MODEL last and spell the metavars differently.
USAGE = (
    "%(prog)s MODEL --data DATA.npz -o OUT.onnx [--epochs E] [--batch-size B] [--lr LR]\n"
    "       [--optimizer sgd|adam] [--momentum M] [--weight-decay W] [--no-shuffle] [--seed S]\n"
    "       [--history H.json]"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = USAGE
    p.add_argument(
        "model",
        metavar="MODEL",
        help="an .onnx file (a PyTorch export in eval mode works: its BatchNorm layers train in "
        "train mode), or module.py:attr (or dotted.module:attr) as for export",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DATA.npz",
        help="x (N, ...) float32 and y (N,) integer labels, optionally x_test and y_test",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.onnx",
        help="the trained model, parameter names kept (written atomically, after training)",
    )
    p.add_argument("--epochs", type=int, default=10, metavar="E", help="default 10")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="default 64")
    p.add_argument("--lr", type=float, default=None, help="default 0.01 (sgd), 0.001 (adam)")
    p.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        metavar="sgd|adam",
        help="PyTorch's SGD (default) or Adam (betas 0.9/0.999, eps 1e-8)",
    )
    p.add_argument("--momentum", type=float, default=None, metavar="M", help="sgd only (default 0)")
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        metavar="W",
        help="added to the gradient as W * parameter (default 0)",
    )
    p.add_argument("--no-shuffle", action="store_true", help="visit the examples in order")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seeds the batch order and dropout masks (default 0)",
    )
    p.add_argument("--history", metavar="H.json", help="write the per-epoch metrics as JSON")


def _is_onnx(model: str) -> bool:
    return model.endswith(".onnx") or (os.path.isfile(model) and ":" not in model)


def run(args: argparse.Namespace) -> int:
    from graphnet.data import load
    from graphnet.train.command import TrainOptions, train_model

    inputs = [args.data] + ([args.model] if _is_onnx(args.model) else [])
    check_output(args.output, inputs=inputs)
    if args.history:
        check_output(args.history, inputs=inputs, flag="--history")
    check_distinct({"-o": args.output, "--history": args.history})
    dataset = load(args.data)
    if _is_onnx(args.model):
        from graphnet.train.onnx_model import load_for_training

        graph, trainable = load_for_training(args.model)
    else:
        from graphnet.cli.export import _import_target, _to_graph

        obj, module_file = _import_target(args.model)
        if module_file:
            check_output(args.output, inputs=[module_file])
        graph = _to_graph(obj, (None,) + tuple(dataset.x.shape[1:]), args.model)
        trainable = None
    opts = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        history=args.history,
    )
    try:
        train_model(graph, trainable, dataset, args.output, opts, data_name=args.data)
    except FloatingPointError as exc:  # a diverging run: the user's learning rate, not a bug
        raise CliError(str(exc)) from None
    return EXIT_OK
