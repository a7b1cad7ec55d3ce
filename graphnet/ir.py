"""The graphnet IR: a `Graph` of `Node`s that read and write named `Value`s.

- A `Value` is a named tensor: its shape (a tuple whose entries are ints, or `None` for a dynamic
  dim such as the batch) and its dtype (a NumPy dtype name, "float32" by default).
- A `Node` applies one op of the op table (`graphnet.ops`) to input values and defines output
  values. An empty string in `inputs` marks an omitted optional input. `attrs` holds only what
  differs from the op's defaults or what the builder chose to spell out.
- A `Graph` holds its input values, its nodes (kept in topological order), its output names and its
  parameters: NumPy arrays held by name, read by nodes like any other value (ONNX's initializers).

Producer and consumer maps are derived from the nodes each time they are asked for; nothing keeps
them by hand. `Graph.verify()` checks every invariant and names the node that breaks it.

Layering: this module sits in the core with `graphnet.ops` (which it imports) and `graphnet.value`
(`Value` and the shape helpers, re-exported here). `Graph.to_onnx` and `Graph.save` are the one
documented exception to "the core imports nothing above it": conveniences that forward to
`graphnet.onnx_io.export`, imported when called; the import contract in pyproject.toml lists
exactly this edge as ignored.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.errors import GraphError
from graphnet.value import Shape, Value, dtype_name, format_shape

__all__ = ["Value", "Node", "Graph", "Shape", "format_shape", "dtype_name"]


@dataclass(eq=False)
class Node:
    """One op application: `outputs = op(inputs) {attrs}`. Nodes compare (and hash) by identity:
    `graph.nodes.remove(node)` / `.index(node)` / `node in graph.nodes` mean THIS node, and a
    field-by-field comparison per list entry made them the slowest part of optimizing a large
    model (800k comparisons on DenseNet-121)."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __repr__(self) -> str:
        outs = ", ".join(f"%{o}" for o in self.outputs)
        ins = ", ".join(f"%{i}" if i else "<none>" for i in self.inputs)
        attrs = ""
        if self.op == "Opaque":
            return f"{outs} = Opaque[{self.attrs.get('op_type')}]({ins})  # {self.name}"
        if self.attrs:
            attrs = (
                " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(self.attrs.items())) + "}"
            )
        return f"{outs} = {self.op}({ins}){attrs}  # {self.name}"


_IMMUTABLE = (str, int, float, bool, bytes, type(None), np.generic)


def _copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a node's attributes that shares what cannot change (strings, numbers,
    tuples of them): `copy.deepcopy` of every attribute dict was a tenth of `optimize`."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, _IMMUTABLE) or (
            type(v) is tuple and all(isinstance(x, _IMMUTABLE) for x in v)
        ):
            out[k] = v
        elif isinstance(v, np.ndarray):
            out[k] = v.copy()
        else:
            out[k] = _copy.deepcopy(v)
    return out


def _fmt_attr(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, np.ndarray):
        return f"array{format_shape(v.shape)}"
    return repr(v)


class Graph:
    """A computation graph: inputs, nodes in topological order, outputs, and parameters."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.nodes: list[Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        # Where a graph came from (an ONNX import keeps opset, IR version and metadata here).
        self.meta: dict[str, Any] = {}
        # Names claimed through this API (`_names`) and handed out by `fresh_name` but not yet
        # claimed (`_reserved`). They only grow, so a name they hold may no longer be in use:
        # `fresh_name` stays correct (merely conservative) and costs O(1) instead of a scan of
        # the whole graph per call; `verify()` remains the full check.
        self._names: set[str] = set()
        self._reserved: set[str] = set()

    # ----------------------------------------------------------------- building
    def add_input(self, name: str, shape: Shape | None, dtype: str = "float32") -> Value:
        """Declare a graph input (`shape` None: even the rank is unknown)."""
        self._claim(name, "graph input")
        value = Value(name, None if shape is None else tuple(shape), dtype_name(dtype))
        self.values[name] = value
        self.inputs.append(name)
        return value

    def add_param(self, name: str, array: np.ndarray) -> Value:
        """Add a parameter (a constant tensor held by name)."""
        self._claim(name, "parameter")
        array = np.asarray(array)
        self.params[name] = array
        value = Value(name, tuple(array.shape), dtype_name(array.dtype))
        self.values[name] = value
        return value

    def set_param(self, name: str, array: np.ndarray) -> None:
        """Replace a parameter's array; its Value follows the new shape and dtype."""
        array = np.asarray(array)
        self.params[name] = array
        self.values[name] = Value(name, tuple(array.shape), dtype_name(array.dtype))

    def add_node(
        self,
        op: str,
        inputs: Iterable[str],
        attrs: dict[str, Any] | None = None,
        *,
        name: str,
        outputs: list[str] | None = None,
        infer: bool = True,
    ) -> Node:
        """Append a node; with `infer` (the default) its output shapes are inferred at once,
        so a wrong shape fails here, naming the node."""
        if name in self._names and any(n.name == name for n in self.nodes):
            raise GraphError(f"a node named '{name}' already exists in graph '{self.name}'")
        self._names.add(name)
        self._reserved.discard(name)
        inputs = list(inputs)
        for i in inputs:
            if i and i not in self.values:
                raise GraphError(
                    f"input '{i}' of node '{name}' ({op}) is not defined in graph '{self.name}'"
                )
        spec = ops.get(op)
        n_out = spec.num_outputs(attrs or {}) if outputs is None else len(outputs)
        if outputs is None:
            outputs = [f"{name}.out"] if n_out == 1 else [f"{name}.out{k}" for k in range(n_out)]
        for o in outputs:
            self._claim(o, f"output of node '{name}'")
        node = Node(op, inputs, list(outputs), dict(attrs or {}), name)
        if infer:
            types = ops.infer(
                node, [self.values.get(i) if i else None for i in inputs], self._consts(inputs)
            )
            for o, (shape, dtype) in zip(outputs, types, strict=True):
                self.values[o] = Value(o, shape, dtype)
        else:
            for o in outputs:
                self.values.setdefault(o, Value(o, None, "float32"))
        self.nodes.append(node)
        return node

    def _consts(self, inputs: Iterable[str]) -> list:
        return [self.params.get(i) if i else None for i in inputs]

    def mark_output(self, name: str) -> None:
        """Declare an existing value a graph output."""
        if name not in self.values:
            raise GraphError(f"graph output '{name}' is not a value of graph '{self.name}'")
        if name not in self.outputs:
            self.outputs.append(name)

    def _claim(self, name: str, what: str) -> None:
        if not name:
            raise GraphError(f"a {what} needs a non-empty name")
        if name in self.values:
            raise GraphError(f"value name '{name}' ({what}) is already used in graph '{self.name}'")
        self._names.add(name)
        self._reserved.discard(name)

    def fresh_name(self, hint: str) -> str:
        """A value or node name not yet used in the graph, built from `hint`; the name is reserved,
        so two calls never return the same name."""
        name, k = hint, 1
        while name in self._names or name in self._reserved or name in self.values:
            name = f"{hint}_{k}"
            k += 1
        self._reserved.add(name)
        return name

    # ---------------------------------------------------------------- queries
    def producers(self) -> dict[str, Node]:
        """Value name -> the node that writes it (inputs and parameters have none)."""
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Value name -> the nodes that read it, in graph order."""
        uses: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in dict.fromkeys(i for i in n.inputs if i):
                uses.setdefault(i, []).append(n)
        return uses

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"graph '{self.name}' has no node named '{name}'")

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def num_params(self) -> int:
        """Number of scalars held in parameters."""
        return int(sum(a.size for a in self.params.values()))

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print the per-layer table (op, output shape, parameters, MACs), as Keras's
        `model.summary()`; `print_fn` receives the text (see `graphnet.summary`)."""
        from graphnet.summary import format_summary

        print_fn(format_summary(self))

    def to_networkx(self):
        """A `networkx.DiGraph` over node names; an edge per value passed from one node to
        another."""
        import networkx as nx

        dg = nx.DiGraph()
        prod = self.producers()
        for n in self.nodes:
            dg.add_node(n.name)
            for i in n.inputs:
                if i in prod:
                    dg.add_edge(prod[i].name, n.name, value=i)
        return dg

    # ------------------------------------------------------------ maintenance
    def toposort(self) -> None:
        """Reorder nodes topologically (stable: keeps the current order where it is free)."""
        import networkx as nx

        dg = self.to_networkx()
        index = {n.name: k for k, n in enumerate(self.nodes)}
        try:
            order = list(nx.lexicographical_topological_sort(dg, key=index.__getitem__))
        except nx.NetworkXUnfeasible as exc:
            cycle = " -> ".join(u for u, _ in nx.find_cycle(dg))
            raise GraphError(f"graph '{self.name}' has a cycle: {cycle}") from exc
        by_name = {n.name: n for n in self.nodes}
        self.nodes = [by_name[name] for name in order]

    def remove_unused(self) -> tuple[list[Node], list[str]]:
        """Drop nodes that no graph output depends on, then parameters no node reads.
        Returns (removed nodes, removed parameter names)."""
        live = set(self.outputs)
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                keep.append(n)
                live.update(i for i in n.inputs if i)
        kept = {id(n) for n in keep}
        removed = [n for n in self.nodes if id(n) not in kept]
        self.nodes = list(reversed(keep))
        dead_params = [p for p in self.params if p not in live]
        for p in dead_params:
            del self.params[p]
        for n in removed:
            for o in n.outputs:
                if o not in live:
                    self.values.pop(o, None)
        for p in dead_params:
            self.values.pop(p, None)
        return removed, dead_params

    def verify(self) -> None:
        """Check the invariants; raise `GraphError` naming the node and what is broken."""
        defined: dict[str, str] = {i: "graph input" for i in self.inputs}
        for p in self.params:
            if p in defined:
                raise GraphError(f"'{p}' is both a graph input and a parameter")
            defined[p] = "parameter"
        prod = self.producers()
        names: set[str] = set()
        for n in self.nodes:
            if n.name in names:
                raise GraphError(f"two nodes are named '{n.name}'")
            names.add(n.name)
            if not ops.has(n.op):
                raise GraphError(f"node '{n.name}' has op '{n.op}', which is not in the op table")
            for i in n.inputs:
                if not i:
                    continue
                if i not in defined:
                    if i in prod:
                        raise GraphError(
                            f"input '{i}' of node '{n.name}' is used before it is produced "
                            f"(by node '{prod[i].name}')"
                        )
                    raise GraphError(f"input '{i}' of node '{n.name}' is never defined")
            for o in n.outputs:
                if o in defined:
                    raise GraphError(
                        f"output '{o}' of node '{n.name}' is already defined ({defined[o]})"
                    )
                defined[o] = f"output of node '{n.name}'"
        for o in self.outputs:
            if o not in defined:
                raise GraphError(f"graph output '{o}' is never defined")
        if len(set(self.outputs)) != len(self.outputs):
            raise GraphError(f"graph '{self.name}' lists an output twice: {self.outputs}")

    def copy(self) -> Graph:
        """A deep copy (parameters copied too), so a pass can work on it freely."""
        g = Graph(self.name)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.nodes = [
            Node(n.op, list(n.inputs), list(n.outputs), _copy_attrs(n.attrs), n.name)
            for n in self.nodes
        ]
        g.params = {k: v.copy() for k, v in self.params.items()}
        g.values = {k: Value(v.name, v.shape, v.dtype) for k, v in self.values.items()}
        g.meta = _copy.deepcopy(self.meta)
        g._names, g._reserved = set(self._names), set(self._reserved)
        return g

    def infer_shapes(self) -> None:
        """Re-run shape inference over every node in order (after a pass rewrote the graph)."""
        for n in self.nodes:
            types = ops.infer(
                n, [self.values.get(i) if i else None for i in n.inputs], self._consts(n.inputs)
            )
            for o, (shape, dtype) in zip(n.outputs, types, strict=True):
                self.values[o] = Value(o, shape, dtype)

    # ------------------------------------------------------------------ output
    def to_onnx(self, *, mode: str = "inference", opset: int | None = None, **kwargs: Any):
        """Export to an `onnx.ModelProto` (see `graphnet.onnx_io.export`). With `save`, the one
        place the core imports a layer above it (see the module docstring)."""
        from graphnet.onnx_io.export import to_onnx

        return to_onnx(self, mode=mode, opset=opset, **kwargs)

    def save(
        self, path: str, *, mode: str = "inference", opset: int | None = None, **kwargs: Any
    ) -> None:
        """Export and write an ONNX file atomically."""
        from graphnet.onnx_io.export import save

        save(self, path, mode=mode, opset=opset, **kwargs)

    def __repr__(self) -> str:
        lines = [f"graph {self.name}("]
        for i in self.inputs:
            lines.append(f"    {self.values[i]!r},")
        lines.append(f") params={len(self.params)} ({self.num_params()} scalars) {{")
        for n in self.nodes:
            lines.append(f"    {n!r}")
        lines.append("    return " + ", ".join(f"%{o}" for o in self.outputs))
        lines.append("}")
        return "\n".join(lines)
