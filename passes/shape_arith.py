"""Shape arithmetic on partly dynamic shapes, for `fold-constants`.

Exporters write `x.view(x.size(0), -1)` as
    Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))
which no plain constant folding can touch: the batch dim is only known at run time. But the
target's first entry IS dim 0 of the Reshape's own input, which Reshape spells `0` ("copy that
dim", with allowzero = 0). So the target is the constant [0, -1], exactly, for every batch size.

How: a shape vector is tracked as a NumPy object array whose entries are ints (static dims) or
`Dim(value, axis)` (dim `axis` of `value`, dynamic). `Shape(x)` makes one; the ops that only move
entries around (Gather, Slice, Concat, Unsqueeze, Squeeze, Identity, Reshape with a constant
target) are run with their own runtime kernels on these object arrays, so their index semantics
(negative indices, clamping) are the runtime's by construction. Then:
- a vector whose entries are all ints is a constant: the node becomes a parameter (e.g.
  `Shape(x)[1:]` of an (N, 3, 8, 8) x is [3, 8, 8]);
- a Reshape target whose entries are ints or dims of the Reshape's own input at their own
  position becomes a constant with 0 there (only when allowzero = 0, where 0 means "copy");
- a Reshape target with exactly ONE other dynamic entry (typically the batch dim of another
  value: `y.view(x.size(0), 16)`, or `view(x.shape)` of a reshaped x) becomes a constant with -1
  there: -1 is "total / product of the other entries", and whenever the original Reshape succeeds
  that quotient IS the entry's value (size(y) = d * rest). Only when every other entry is a static
  positive int (a 0 or a copied dynamic dim could be 0 at run time, and -1 beside a 0 is an
  error where the original was not) and the target has no -1 of its own. A target the original
  would reject (wrong total) may then be accepted: onnxsim and onnxslim make the same trade.
Arithmetic on shape entries (Mul, Div of dims) is not tracked: such values are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node
from graphnet.passes._graph import resolved_attrs
from graphnet.passes.base import PassReport

__all__ = ["Dim", "ShapeSymbols", "MOVERS"]

MOVERS = ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Identity", "Reshape")


@dataclass(frozen=True)
class Dim:
    """Dim `axis` of the value `value`, unknown until run time."""

    value: str
    axis: int

    def __repr__(self) -> str:
        return f"{self.value}.shape[{self.axis}]"


class ShapeSymbols:
    """Shape vectors seen so far in one sweep (value name -> object array)."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def shape_of(self, graph: Graph, node: Node) -> None:
        """Record the (partly dynamic) vector a Shape node computes."""
        x = graph.values.get(node.inputs[0])
        if x is None or x.shape is None:
            return
        attrs = resolved_attrs(graph, node)
        entries = [d if is_static(d) else Dim(x.name, i) for i, d in enumerate(x.shape)]
        vec = np.empty(len(entries), dtype=object)
        vec[:] = entries
        self.vectors[node.outputs[0]] = vec[attrs.get("start", 0) : attrs.get("end")]

    def move(self, graph: Graph, node: Node) -> np.ndarray | None:
        """The vector a mover computes from tracked vectors and constants, or None."""
        from graphnet.runtime.kernels import get_kernel

        if node.op not in MOVERS or not any(i in self.vectors for i in node.inputs):
            return None
        data_inputs = range(len(node.inputs)) if node.op == "Concat" else range(1)
        args: list[np.ndarray | None] = []
        for k, name in enumerate(node.inputs):
            if not name:
                args.append(None)
            elif name in self.vectors and k in data_inputs:
                args.append(self.vectors[name])
            elif name in graph.params:
                arr = graph.params[name]
                args.append(arr.astype(object) if k in data_inputs else arr)
            else:
                return None  # an index computed at run time, or a vector used as an index
        try:
            out = get_kernel(node.op).fn(*args, **resolved_attrs(graph, node))
        except (ValueError, IndexError, TypeError):
            return None  # e.g. an out-of-range index: leave it to the runtime to report
        out = np.asarray(out, dtype=object)
        self.vectors[node.outputs[0]] = out
        return out

    @staticmethod
    def is_constant(vec: np.ndarray) -> bool:
        return not any(isinstance(e, Dim) for e in vec.reshape(-1))

    def reshape_target(self, graph: Graph, node: Node, report: PassReport) -> bool:
        """Make a Reshape's tracked target constant where its dynamic entries copy its own
        input's dims at the same position (0), or where it has one dynamic entry (-1). True when
        rewritten."""
        target = self.vectors.get(node.inputs[1])
        if target is None or target.ndim != 1:
            return False
        data = node.inputs[0]
        # 0 means "copy" only with allowzero = 0; the -1 form has no 0 in it, so any allowzero.
        copies = not resolved_attrs(graph, node).get("allowzero", 0) and all(
            isinstance(e, (int, np.integer)) or (e.value == data and e.axis == k)
            for k, e in enumerate(target)
        )
        const: np.ndarray | None
        if copies:
            const = np.array([0 if isinstance(e, Dim) else int(e) for e in target], dtype=np.int64)
        else:
            const = _minus_one_target(target)
        if const is None:
            return False
        name = graph.fresh_name(f"{node.name}.shape")
        graph.add_param(name, const)
        old = node.inputs[1]
        graph.set_input(node, 1, name)
        # The target is now a constant: the output's static dims become known to later passes.
        from graphnet import ops

        ins = [graph.values.get(i) if i else None for i in node.inputs]
        ((shape, dtype),) = ops.infer(node, ins, [graph.params.get(i) for i in node.inputs])
        graph.values[node.outputs[0]].shape = shape
        how = (
            "copies its own input's dims: the constant {} (0 = copy)"
            if copies
            else "has one dynamic entry: the constant {} (-1 = the rest)"
        )
        report.did(
            f"{node.name}: Reshape target '{old}' = {list(target)} " + how.format(const.tolist())
        )
        return True


def _minus_one_target(target: np.ndarray) -> np.ndarray | None:
    """The target with its single dynamic entry replaced by -1, when that is exact (see the
    module docstring): every other entry a static int > 0. Else None."""
    dynamic = [k for k, e in enumerate(target) if isinstance(e, Dim)]
    if len(dynamic) != 1 or not all(isinstance(e, Dim) or int(e) > 0 for e in target):
        return None
    return np.array([-1 if isinstance(e, Dim) else int(e) for e in target], dtype=np.int64)
