"""Helpers shared by the passes: why a value is not private, copy-on-write parameters, constant
inputs and small constant sub-graphs, parameters a rewrite left unread. Who reads and writes what,
and every rewiring, are the graph's own (`Graph.readers`, `Graph.producer`, `Graph.bypass`, ...:
it keeps def-use up to date).

Every helper keeps the invariants `Graph.verify` checks (single producers, defined inputs, nodes
in topological order) and one more the passes promise: graph output names never change. When a
node that writes a graph output is removed, the value it forwarded is renamed to the output's
name instead (its producer writes the output directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Node

__all__ = [
    "other_uses",
    "sole_reader",
    "after_removal",
    "write_param",
    "const_input",
    "constant_value",
    "resolved_attrs",
    "params_read",
    "drop_params_made_dead",
]


def other_uses(graph: Graph, value: str, node: Node) -> str | None:
    """Why `value` is not private to `node`: None if `node` is its only reader and it is not a
    graph output, else a phrase such as "also feeds add_7, relu2" or "is a graph output"."""
    others = [n.name for n in graph.readers(value) if n is not node]
    why = []
    if others:
        why.append("also feeds " + ", ".join(others))
    if value in graph.outputs:
        why.append("is a graph output")
    return " and ".join(why) or None


def sole_reader(graph: Graph, value: str) -> Node | str:
    """The one node that reads `value` (not a graph output), or why there is none."""
    if value in graph.outputs:
        return f"its output '{value}' is a graph output"
    users = graph.readers(value)
    if len(users) != 1:
        return f"its output feeds {len(users)} nodes" if users else "its output is not read"
    return users[0]


def const_input(graph: Graph, node: Node, k: int) -> np.ndarray | None:
    """The array of the node's k-th input if it is a parameter, else None (also when absent)."""
    if k >= len(node.inputs) or not node.inputs[k]:
        return None
    return graph.params.get(node.inputs[k])


def constant_value(
    graph: Graph, name: str, max_elements: int, *, _depth: int = 0
) -> np.ndarray | None:
    """The value of `name` if it is a parameter, or if it is computed from parameters alone by
    nodes that have a kernel and do not depend on the run mode, each result having at most
    `max_elements` elements; else None. Nothing in the graph changes.

    Why: `fold-constants` keeps a result much bigger than its inputs as a node (a 2048-element
    `ConstantOfShape` of a 1-element shape stays, as the ONNX zoo's light models write every
    parameter), but a pass that is about to fold a per-channel vector of that size into
    parameters of the same size (a BatchNormalization's statistics) may evaluate it here."""
    if not name:
        return None
    if name in graph.params:
        return graph.params[name]
    node = graph.producer(name)
    if node is None or node.op == "Opaque" or _depth > 16:
        return None
    from graphnet.runtime.kernels import get_kernel, has_kernel

    if not has_kernel(node.op) or ops.get(node.op).mode_dependent:
        return None
    for o in node.outputs:
        v = graph.values.get(o)
        if o and v is not None and v.shape is not None and all(is_static(d) for d in v.shape):
            if int(np.prod(v.shape, dtype=np.int64)) > max_elements:
                return None
    args: list[np.ndarray | None] = []
    for i in node.inputs:
        if not i:
            args.append(None)
            continue
        a = constant_value(graph, i, max_elements, _depth=_depth + 1)
        if a is None:
            return None
        args.append(a)
    kern = get_kernel(node.op, node.name)
    attrs = resolved_attrs(graph, node)
    if kern.context:
        attrs.update(training=False, rng=np.random.default_rng(0))
    try:
        result = kern.fn(*args, **attrs)
    except (GraphNetError, ValueError, TypeError, ArithmeticError):
        return None
    outs = result if isinstance(result, (tuple, list)) else [result]
    value = np.asarray(outs[node.outputs.index(name)])
    return value if value.size <= max_elements else None


def resolved_attrs(graph: Graph, node: Node) -> dict[str, Any]:
    """The node's attributes with defaults filled in and resolved (as kernels see them)."""
    return ops.attrs_of(node, [graph.values.get(i) if i else None for i in node.inputs])


def params_read(graph: Graph) -> set[str]:
    """The parameters some node reads."""
    return {p for p in graph.params if graph.num_readers(p)}


def drop_params_made_dead(
    graph: Graph, read_before: set[str], existed_before: set[str]
) -> list[str]:
    """Delete the parameters a rewrite left unread: read before it, or made by it (folded
    intermediate results), and read by no node now (graph outputs are kept). Returns their names
    in the graph's parameter order."""
    dead = [
        p
        for p in graph.params
        if (p in read_before or p not in existed_before)
        and not graph.num_readers(p)
        and p not in graph.outputs
    ]
    for p in dead:
        graph.remove_param(p)
    return dead


def after_removal(graph: Graph, nodes: Sequence[Node]) -> Node | None:
    """The first node after `nodes[0]` that is not in `nodes`: where nodes added with
    `add_node(..., before=...)` take `nodes[0]`'s place once `nodes` are removed (None: at the
    end)."""
    gone = set(nodes)
    after = graph.after(nodes[0])
    while after is not None and after in gone:
        after = graph.after(after)
    return after


def write_param(graph: Graph, node: Node, k: int, array: np.ndarray, hint: str) -> str | None:
    """Make `node`'s k-th input the constant `array` (cast to the old parameter's dtype).

    Copy-on-write: the parameter is overwritten in place only when `node` is its only reader and
    it is not a graph output; otherwise (and when the input is absent) the node gets a fresh
    parameter named after `hint`. Returns a phrase for the report when a shared parameter was
    copied, else None."""
    old = node.inputs[k] if k < len(node.inputs) else ""
    if old and old in graph.params:
        array = np.asarray(array).astype(graph.params[old].dtype, copy=False)
        others = [n.name for n in graph.readers(old) if n is not node]
        if not others and old not in graph.outputs and node.inputs.count(old) == 1:
            graph.set_param(old, array)
            return None
        name = graph.fresh_name(hint)
        graph.add_param(name, array)
        graph.set_input(node, k, name)
        users = others + (["a graph output"] if old in graph.outputs else [])
        return (
            f"'{old}' is shared with {', '.join(users) or 'another input of the same node'}, so "
            f"{node.name} got a copy '{name}'"
        )
    name = graph.fresh_name(hint)
    graph.add_param(name, np.asarray(array))
    graph.set_input(node, k, name)
    return None
