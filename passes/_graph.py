"""Graph surgery shared by the passes: who reads what, rewiring, copy-on-write parameters.

Every helper keeps the invariants `Graph.verify` checks (single producers, defined inputs, nodes
in topological order) and one more the passes promise: graph output names never change. When a
node that writes a graph output is removed, the value it forwarded is renamed to the output's
name instead (its producer writes the output directly).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Node, Value

__all__ = [
    "producer",
    "readers",
    "other_uses",
    "is_param",
    "bypass",
    "rename_value",
    "remove_node",
    "emit_at",
    "write_param",
    "const_input",
    "constant_value",
    "resolved_attrs",
    "fmt",
    "params_read",
    "drop_params_made_dead",
]


_PRODUCERS: weakref.WeakKeyDictionary[Graph, dict[str, Node]] = weakref.WeakKeyDictionary()


def producer(graph: Graph, name: str) -> Node | None:
    """The node that writes `name` (None for graph inputs, parameters and unknown names).

    Passes look producers up thousands of times on a large model, and a scan of every node per
    lookup made folding DenseNet-121 quadratic. So a name -> node map is kept per graph and each
    answer is CHECKED before it is returned: the node must still be in the graph (an identity
    test, in C) and still list `name` among its outputs. A stale or missing entry rebuilds the
    map from the nodes, so the answer is always the one a scan would give: nothing has to tell
    the cache about rewrites."""
    if not name or name in graph.params or name in graph.inputs:
        return None
    table = _PRODUCERS.get(graph)
    node = table.get(name) if table is not None else None
    if node is not None and name in node.outputs and node in graph.nodes:
        return node
    table = {o: n for n in graph.nodes for o in n.outputs}
    _PRODUCERS[graph] = table
    return table.get(name)


def readers(graph: Graph, value: str) -> list[Node]:
    """The nodes that read `value`, in graph order (each once)."""
    return [n for n in graph.nodes if value in n.inputs]


def other_uses(graph: Graph, value: str, node: Node) -> str | None:
    """Why `value` is not private to `node`: None if `node` is its only reader and it is not a
    graph output, else a phrase such as "also feeds add_7, relu2" or "is a graph output"."""
    others = [n.name for n in readers(graph, value) if n is not node]
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
    users = readers(graph, value)
    if len(users) != 1:
        return f"its output feeds {len(users)} nodes" if users else "its output is not read"
    return users[0]


def is_param(graph: Graph, name: str) -> bool:
    return bool(name) and name in graph.params


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
    node = producer(graph, name)
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
    args = []
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


def fmt(x: float) -> str:
    return f"{x:.6g}"


def params_read(graph: Graph) -> set[str]:
    """The parameters some node reads."""
    return {i for n in graph.nodes for i in n.inputs if i in graph.params}


def drop_params_made_dead(
    graph: Graph, read_before: set[str], existed_before: set[str]
) -> list[str]:
    """Delete the parameters a rewrite left unread: read before it, or made by it (folded
    intermediate results), and read by no node now (graph outputs are kept). Returns their names
    in the graph's parameter order."""
    now = params_read(graph)
    dead = [
        p
        for p in graph.params
        if (p in read_before or p not in existed_before) and p not in now and p not in graph.outputs
    ]
    for p in dead:
        del graph.params[p]
        graph.values.pop(p, None)
    return dead


def remove_node(graph: Graph, node: Node) -> None:
    """Drop a node and the values only it defined (the caller rewired their readers)."""
    graph.nodes.remove(node)  # nodes compare by identity: this is THE node, found in C
    for o in node.outputs:
        if o and o not in graph.outputs and not readers(graph, o):
            graph.values.pop(o, None)


def rename_value(graph: Graph, old: str, new: str) -> None:
    """Rename a value produced by a node (and every read of it) to the unused name `new`."""
    v = graph.values.pop(old)
    graph.values[new] = Value(new, v.shape, v.dtype)
    for n in graph.nodes:  # rebuild only the lists that hold `old` (most hold nothing to change)
        if old in n.inputs:
            n.inputs = [new if i == old else i for i in n.inputs]
        if old in n.outputs:
            n.outputs = [new if o == old else o for o in n.outputs]
    graph.outputs = [new if o == old else o for o in graph.outputs]


def bypass(graph: Graph, node: Node, src: str, dst: str) -> str | None:
    """Remove `node`, whose output `dst` equals its input `src`, by making `dst`'s readers read
    `src`. Returns None when done, else the reason it is impossible (nothing changed then).

    If `dst` is a graph output its name must survive: `src`'s producer is made to write `dst`
    directly. That needs `src` to come from a node and not to be a graph output itself."""
    if dst in graph.outputs:
        if src in graph.inputs:
            return (
                f"output '{dst}' would be graph input '{src}' unchanged; the node keeps "
                "both names apart"
            )
        if src in graph.params:
            return (
                f"output '{dst}' would be parameter '{src}' unchanged; the node keeps "
                "both names apart"
            )
        if src in graph.outputs:
            return f"'{src}' and '{dst}' are both graph outputs; the node keeps both names"
        shape = graph.values[dst].shape
        remove_node(graph, node)
        graph.values.pop(dst, None)
        rename_value(graph, src, dst)
        if graph.values[dst].shape is None:  # keep the better-known shape
            graph.values[dst].shape = shape
        return None
    for n in graph.nodes:
        if n is not node and dst in n.inputs:
            n.inputs = [src if i == dst else i for i in n.inputs]
    remove_node(graph, node)
    return None


def emit_at(
    graph: Graph,
    index: int,
    op: str,
    inputs: Sequence[str],
    attrs: dict[str, Any] | None,
    *,
    name: str,
    outputs: list[str] | None = None,
) -> Node:
    """Add a node (shapes inferred, names checked) and move it to position `index`."""
    node = graph.add_node(op, inputs, attrs or {}, name=graph.fresh_name(name), outputs=outputs)
    graph.nodes.pop()
    graph.nodes.insert(index, node)
    return node


def write_param(graph: Graph, node: Node, k: int, array: np.ndarray, hint: str) -> str | None:
    """Make `node`'s k-th input the constant `array` (cast to the old parameter's dtype).

    Copy-on-write: the parameter is overwritten in place only when `node` is its only reader and
    it is not a graph output; otherwise (and when the input is absent) the node gets a fresh
    parameter named after `hint`. Returns a phrase for the report when a shared parameter was
    copied, else None."""
    old = node.inputs[k] if k < len(node.inputs) else ""
    if old and old in graph.params:
        array = np.asarray(array).astype(graph.params[old].dtype, copy=False)
        others = [n.name for n in readers(graph, old) if n is not node]
        if not others and old not in graph.outputs and node.inputs.count(old) == 1:
            graph.set_param(old, array)
            return None
        name = graph.fresh_name(hint)
        graph.add_param(name, array)
        node.inputs[k] = name
        users = others + (["a graph output"] if old in graph.outputs else [])
        return (
            f"'{old}' is shared with {', '.join(users) or 'another input of the same node'}, so "
            f"{node.name} got a copy '{name}'"
        )
    name = graph.fresh_name(hint)
    graph.add_param(name, np.asarray(array))
    while len(node.inputs) <= k:
        node.inputs.append("")
    node.inputs[k] = name
    return None
