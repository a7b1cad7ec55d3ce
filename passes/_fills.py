"""Weights written as FILLS, and scaling a weight along its output features, parameter or fill.

A weight is a parameter (changed copy-on-write, `write_param`) or a FILL: the output of
`ConstantOfShape(shape)` or of `Expand(v, shape)` with a constant v and shape (the ONNX zoo's light
models write every weight as a fill). Since broadcast(v, shape) * s' = broadcast(v * s', shape)
for s' = s shaped along W's feature axis, a fold writes `Expand(v * s', shape)` (a
`ConstantOfShape` again when v * s' is one number) instead of materialising W: one node, as the
fill was, and the file stays small. It must NOT when v * s' would hold more than half of W's
elements (that is materialising W under another name; `optimize(max_constant_bytes=...)` does it
on purpose), nor change a fill another node also reads (the folded op gets its own new node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.passes._graph import resolved_attrs, write_param
from graphnet.passes.affine_maths import feature_factor, fuse_affine_weights

__all__ = ["Fill", "fill_of", "scale_weight"]


@dataclass
class Fill:
    """A weight written by `ConstantOfShape(shape)` or `Expand(vec, shape)`: `vec` (same rank as
    the weight, size-1 axes broadcast) broadcast to `shape`."""

    node: Node
    vec: np.ndarray
    shape: tuple[int, ...]
    shape_name: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def fill_of(graph: Graph, name: str) -> Fill | None:
    """The fill that writes the value `name`, or None if `name` is not one (see the module
    docstring); its shape must be static and its vector of `name`'s dtype."""
    node = graph.producer(name)
    v = graph.values.get(name)
    if node is None or len(node.outputs) != 1 or v is None or v.shape is None:
        return None
    if not all(is_static(d) for d in v.shape):
        return None
    shape = tuple(int(d) for d in v.shape)
    if node.op == "ConstantOfShape":
        value = np.asarray(resolved_attrs(graph, node)["value"])
        vec, shape_name = value.reshape((1,) * len(shape)), node.inputs[0]
    elif node.op == "Expand" and node.inputs[0] in graph.params and node.inputs[1] in graph.params:
        vec, shape_name = graph.params[node.inputs[0]], node.inputs[1]
        if vec.ndim > len(shape):
            return None
        vec = vec.reshape((1,) * (len(shape) - vec.ndim) + vec.shape)
    else:
        return None
    if shape_name not in graph.params or str(vec.dtype) != v.dtype:
        return None
    return Fill(node, vec, shape, shape_name)


def _write_fill(
    graph: Graph, user: Node, k: int, fill: Fill, vec: np.ndarray, hint: str
) -> str | None:
    """Make `user`'s k-th input broadcast(vec, fill.shape): the fill node itself is rewritten when
    `user` is its only reader, else `user` gets a new node (copy-on-write, said in the note)."""
    out = fill.node.outputs[0]
    vec = np.asarray(vec).astype(fill.vec.dtype)
    if vec.size and np.all(vec == vec.reshape(-1)[0]):
        shape_name = fill.shape_name
        if tuple(int(d) for d in graph.params[shape_name]) != fill.shape:
            shape_name = graph.fresh_name(f"{hint}.shape")
            graph.add_param(shape_name, np.array(fill.shape, np.int64))
        op, inputs, attrs = "ConstantOfShape", [shape_name], {"value": vec.reshape(-1)[:1].copy()}
    else:
        vec_name = graph.fresh_name(f"{hint}.vec")
        graph.add_param(vec_name, vec)
        op, inputs, attrs = "Expand", [vec_name, fill.shape_name], {}
    private = (
        out not in graph.outputs and user.inputs.count(out) == 1 and graph.readers(out) == [user]
    )
    if private:
        graph.set_inputs(fill.node, inputs)
        fill.node.op, fill.node.attrs = op, attrs
        return None
    node = graph.add_node(op, inputs, attrs, name=graph.fresh_name(hint), before=user)
    graph.set_input(user, k, node.outputs[0])
    return f"the fill '{out}' is shared, so {user.name} got its own {node.name} ({op})"


def scale_weight(
    graph: Graph, node: Node, k: int, s: np.ndarray, axis: int, group: int, hint: str
) -> tuple[str | None, str | None]:
    """Scale the weight `node.inputs[k]` by s along its output-feature `axis`: returns
    (note or None, None) when done, (None, why not) otherwise (nothing changed then)."""
    name = node.inputs[k]
    if name in graph.params:
        w_new, _ = fuse_affine_weights(graph.params[name], None, s, None, axis, group)
        return write_param(graph, node, k, w_new, hint), None
    fill = fill_of(graph, name)
    if fill is None:
        return None, f"{node.name}'s weight '{name}' is not a constant"
    vec = np.asarray(fill.vec, np.float64) * feature_factor(fill.shape, s, axis, group)
    if vec.size * 2 > fill.size:
        return None, (
            f"{node.name}'s weight '{name}' is a {fill.node.op} fill {format_shape(fill.shape)}: "
            f"the scaled weight would need {vec.size:,} of its {fill.size:,} values stored "
            "(materialise it with max_constant_bytes)"
        )
    return _write_fill(graph, node, k, fill, vec, hint), None
