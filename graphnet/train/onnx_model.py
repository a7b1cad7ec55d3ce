"""Training an ONNX file: which of its parameters learn."""

from __future__ import annotations

import os

from graphnet.errors import InputError
from graphnet.ir import Graph
from graphnet.runtime.gradients import trainable_params

__all__ = ["load_for_training"]


def load_for_training(path: str | os.PathLike) -> tuple[Graph, list[str]]:
    """Import an ONNX model for training: (graph, names of the parameters that learn).

    What learns is every float INITIALIZER read at a differentiable input (see
    `trainable_params`): a PyTorch export writes its nn.Parameters and buffers as initializers,
    while the constants of its decompositions (GroupNorm's ones and zeros for the
    InstanceNormalization it becomes) are `Constant` nodes, which stay constant as in PyTorch.
    BatchNorm's running statistics are updated by the train-mode forward, never by gradients."""
    import onnx

    from graphnet.onnx_io.importer import load

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model ({exc})") from None
    graph = load(model)
    initializers = {t.name for t in model.graph.initializer}
    return graph, [p for p in trainable_params(graph) if p in initializers]
