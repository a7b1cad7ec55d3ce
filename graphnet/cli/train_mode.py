"""Comparing a model in train mode (`graphnet check --mode train`, the default for a model that
declares training-mode nodes): the NumPy runtime and onnxruntime must run the same thing.

- BatchNormalization normalizes with the batch statistics on both sides and updates its running
  statistics: the outputs AND the updated statistics are compared (onnxruntime's node outputs
  `running_mean` / `running_var` of the last BN updating each statistic, against the runtime's
  parameters after the run).
- Dropout draws random masks, and two runtimes never draw the same ones, so every Dropout's ratio
  is set to 0 on both sides for the comparison (the check says how many): then its output and its
  mask are deterministic and compared like any other value. Whether the masks themselves keep the
  right fraction is a property of the kernel, tested in the runtime's tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["zero_dropout", "zero_onnx_dropout", "onnx_updated_statistics", "UPDATED"]

UPDATED = "{} (updated)"  # key of an updated running statistic among the compared values


def zero_dropout(graph) -> int:
    """Set every Dropout's drop probability to 0 in `graph` (a copy: attributes are edited);
    returns how many had a positive one."""
    count = 0
    for n in graph.nodes:
        if n.op == "Dropout" and float(n.attrs.get("drop_prob") or 0.0) > 0.0:
            n.attrs = dict(n.attrs, drop_prob=0.0)
            count += 1
    return count


def zero_onnx_dropout(model: Any) -> tuple[Any, int]:
    """A copy of an ONNX model whose training-mode Dropout nodes have ratio 0; and how many had
    a positive or unknown ratio."""
    import onnx
    from onnx import numpy_helper

    from graphnet.onnx_io.decode import constant_value

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    consts = {t.name: numpy_helper.to_array(t) for t in copy.graph.initializer}
    consts.update(
        (n.output[0], constant_value(n)) for n in copy.graph.node if n.op_type == "Constant"
    )
    count = 0
    for n in copy.graph.node:
        if n.op_type != "Dropout" or len(n.input) < 2 or not n.input[1]:
            continue  # no ratio input: 0.5 at opset >= 12 only matters in training (needs input 3)
        ratio = consts.get(n.input[1])
        if ratio is not None and float(np.asarray(ratio).reshape(-1)[0]) == 0.0:
            continue
        dtype = ratio.dtype if ratio is not None else np.float32
        name = _fresh(copy, f"{n.name or n.output[0]}.ratio0")
        copy.graph.initializer.append(numpy_helper.from_array(np.zeros((), dtype), name))
        n.input[1] = name
        count += 1
    return copy, count


def onnx_updated_statistics(model: Any) -> tuple[Any, dict[str, str]]:
    """(a copy of the model whose training-mode BatchNormalization nodes all name their
    running-statistics outputs, {statistic's input name: the value holding its last update})."""
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    last: dict[str, str] = {}
    for n in copy.graph.node:
        if n.op_type != "BatchNormalization":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if not attrs.get("training_mode"):
            continue
        while len(n.output) < 3:
            n.output.append("")
        for k in (1, 2):
            if not n.output[k]:
                n.output[k] = _fresh(copy, f"{n.name or n.output[0]}.stat{k}")
            last[n.input[k + 2]] = n.output[k]
    return copy, last


def _fresh(model: Any, hint: str) -> str:
    taken = {o for n in model.graph.node for o in (*n.input, *n.output)}
    taken |= {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    name, k = hint, 1
    while name in taken:
        name, k = f"{hint}_{k}", k + 1
    return name
