"""eliminate: remove nodes that compute nothing, then dead nodes and unused parameters.

Rewrites (each is y = x exactly, in inference AND train mode, so the pass is mode-independent):
- `Identity(x)`;
- `Reshape(x, shape)` with a constant `shape` that gives back x's own shape. Checked on the
  target itself, not only on inferred shapes: rank equal and, per axis, the target is the input's
  static size, or 0 (copy, when `allowzero` is 0), or the single -1 when every other axis matched
  (then -1 must stand for the input's size: total / rest). So (N, 3, 4) -> [0, 3, 4] and
  (N, 3, 4) -> [-1, 3, 4] both go, even with a dynamic batch;
- `Flatten(x)` of a 2-D x with axis 1 (or axis 0 over (1, b), axis 2 over (a, 1));
- `Transpose` with the identity permutation, `Cast` to the dtype x already has;
- `Dropout` with drop_prob 0 (inverted: x / 1; classic: x * 1; train mode drops nothing).
Then `Graph.remove_unused()`: nodes no graph output depends on, parameters no node reads.

A removed node's readers read its input instead. When its output is a graph output, the output
NAME must stay: the producer of the input is made to write it. This is declined (the node stays)
when the input is a graph input, a parameter or another graph output, because then the graph
needs the node to hold both names. A Dropout(p=0) whose mask output is read stays (the mask is a
real output; `drop-dropout` replaces it by constant ones in the inference pipeline).
"""

from __future__ import annotations

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.passes._graph import const_input, resolved_attrs
from graphnet.passes.base import PassReport, register_pass

__all__ = ["eliminate", "reshape_is_noop", "flatten_is_noop"]


def reshape_is_noop(in_shape: tuple | None, target: np.ndarray | None, allowzero: int) -> bool:
    """Whether Reshape(in_shape -> target) returns its input's shape for every value of the
    input's dynamic dims (see the module docstring for the rule)."""
    if in_shape is None or target is None:
        return False
    t = [int(v) for v in np.asarray(target).reshape(-1)]
    if len(t) != len(in_shape):
        return False
    unmatched = []
    for k, (d, want) in enumerate(zip(in_shape, t, strict=True)):
        if want == 0 and not allowzero:
            continue  # copies the input's dim, static or not
        if is_static(d) and want == d:
            continue
        unmatched.append((k, want))
    # The one -1 takes total / (product of the rest); every other axis equals the input's, so it
    # equals the input's size on its own axis, whatever the dynamic dims are.
    return not unmatched or (len(unmatched) == 1 and unmatched[0][1] == -1)


def flatten_is_noop(in_shape: tuple | None, axis: int) -> bool:
    """Flatten of a 2-D (a, b) gives (a, b) for axis 1, (1, a*b) for axis 0, (a*b, 1) for axis 2."""
    if in_shape is None or len(in_shape) != 2:
        return False
    a, b = in_shape
    return axis == 1 or (axis == 0 and a == 1) or (axis == 2 and b == 1)


def _why_noop(graph: Graph, node: Node) -> str | None:
    """A phrase saying why `node` returns its first input unchanged, or None if it does not."""
    if node.op == "Identity":
        return "Identity"
    if node.op in ("Reshape", "Flatten", "Transpose", "Cast", "Dropout"):
        x = graph.values.get(node.inputs[0]) if node.inputs and node.inputs[0] else None
        if x is None:
            return None
        attrs = resolved_attrs(graph, node)
        if node.op == "Reshape":
            target = const_input(graph, node, 1)
            if target is not None and reshape_is_noop(x.shape, target, attrs.get("allowzero", 0)):
                return f"Reshape of {_shape(x.shape)} to {list(map(int, target))} keeps the shape"
        elif node.op == "Flatten":
            if flatten_is_noop(x.shape, attrs["axis"]):
                return f"Flatten(axis={attrs['axis']}) of {_shape(x.shape)} keeps the shape"
        elif node.op == "Transpose":
            perm = attrs.get("perm")
            if perm is not None and list(perm) == list(range(len(perm))):
                return f"Transpose with identity perm {list(perm)}"
        elif node.op == "Cast":
            if str(np.dtype(attrs["to"])) == x.dtype:
                return f"Cast to {x.dtype}, which x already is"
        elif node.op == "Dropout":
            if float(attrs["drop_prob"]) == 0.0 and not any(
                node.inputs[1:]
            ):  # no run-time ratio/mode
                return "Dropout with drop_prob 0"
    return None


def _shape(shape: tuple | None) -> str:
    return format_shape(shape)


@register_pass("eliminate")
def eliminate(graph: Graph, report: PassReport) -> None:
    """Remove identities, no-op Reshape/Flatten/Transpose/Cast, Dropout(p=0), dead nodes and
    unused parameters (mode-independent; graph output names kept)."""
    for node in graph.nodes:  # a snapshot: removing nodes does not disturb the loop
        why = _why_noop(graph, node)
        if why is None:
            continue
        if (
            len(node.outputs) > 1
            and node.outputs[1]
            and (graph.num_readers(node.outputs[1]) or node.outputs[1] in graph.outputs)
        ):
            report.declined(f"{node.name}: {why}, but its mask output '{node.outputs[1]}' is read")
            continue
        src, dst = node.inputs[0], node.outputs[0]
        reason = graph.bypass(node, src, dst)
        if reason is None:
            report.did(f"removed {node.name}: {why}")
        else:
            report.declined(f"{node.name}: {why}, but {reason}")
    removed, dead_params = graph.remove_unused()
    if removed:
        report.did(
            f"removed {len(removed)} dead node(s) no output depends on: "
            f"{', '.join(n.name for n in removed)}"
        )
    if dead_params:
        report.did(f"removed {len(dead_params)} unused parameter(s): {', '.join(dead_params)}")
