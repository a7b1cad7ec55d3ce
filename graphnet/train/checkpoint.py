"""Resumable checkpoints: one .npz per run, rewritten atomically after every epoch.

It holds the parameters (every one, BatchNorm's running statistics included), the optimizer's
state, the state of both generators (batch order and dropout masks), the step count and the
history, so that a run stopped after epoch k and resumed gives the same parameters, bit for bit,
as a run that never stopped.
"""

from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from graphnet.errors import InputError
from graphnet.ir import Graph
from graphnet.train.history import History

if TYPE_CHECKING:
    from graphnet.train.trainer import Trainer

__all__ = ["save", "load"]

_FORMAT = "graphnet-checkpoint-1"


def save(
    path: str,
    graph: Graph,
    trainer: Trainer,
    order_rng: np.random.Generator,
    epoch: int,
    history: History,
) -> None:
    from graphnet.onnx_io.export import atomic_write

    arrays: dict[str, Any] = {f"param/{k}": v for k, v in graph.params.items()}
    arrays.update({f"opt/{k}": v for k, v in trainer.optimizer.state_arrays().items()})
    meta = {
        "format": _FORMAT,
        "graph": graph.name,
        "epoch": epoch,
        "steps": trainer.steps,
        "optimizer": type(trainer.optimizer).__name__,
        "dropout_rng": trainer.rng.bit_generator.state,
        "order_rng": order_rng.bit_generator.state,
        "history": history.to_dict(),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    atomic_write(path, buf.getvalue())


def load(
    path: str, graph: Graph, trainer: Trainer, order_rng: np.random.Generator
) -> tuple[int, History] | None:
    """Restore a checkpoint into the graph, trainer and generator; (epochs done, history), or
    None when there is no checkpoint file yet (a fresh start)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:
        raise InputError(f"{path} is not a graphnet checkpoint ({exc})") from None
    if meta.get("format") != _FORMAT:
        raise InputError(f"{path} is not a graphnet checkpoint (format {meta.get('format')!r})")
    if meta["optimizer"] != type(trainer.optimizer).__name__:
        raise InputError(
            f"{path} was written by a {meta['optimizer']} run; this run uses "
            f"{type(trainer.optimizer).__name__}"
        )
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    if set(params) != set(graph.params):
        raise InputError(
            f"{path} holds parameters for another graph: missing "
            f"{sorted(set(graph.params) - set(params))[:5]}, unknown "
            f"{sorted(set(params) - set(graph.params))[:5]}"
        )
    for name, value in params.items():
        if value.shape != graph.params[name].shape:
            raise InputError(
                f"{path}: parameter '{name}' has shape {value.shape}, the graph's is "
                f"{graph.params[name].shape}"
            )
        graph.set_param(name, value)
    trainer.optimizer.load_state_arrays(
        {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    )
    trainer.rng.bit_generator.state = meta["dropout_rng"]
    order_rng.bit_generator.state = meta["order_rng"]
    trainer.steps = int(meta["steps"])
    return int(meta["epoch"]), History.from_dict(meta["history"])
