"""The graphnet IR: a `Graph` of `Node`s that read and write named `Value`s.

- A `Value` is a named tensor: its shape (a tuple of dims: an int for a static dim, a symbol or
  expression such as "N" or "4*N" for a dynamic one, None when unknown; see `graphnet.dims`) and
  its dtype (a NumPy dtype name, "float32" by default).
- A `Node` applies one op of the op table (`graphnet.ops`) to input values and defines output
  values. An empty string in `inputs` marks an omitted optional input. `attrs` holds only what
  differs from the op's defaults or what the builder chose to spell out.
- A `Graph` holds its input values, its nodes (kept in topological order), its output names and its
  parameters: NumPy arrays held by name, read by nodes like any other value (ONNX's initializers).

Def-use is kept by the graph: each value's producer and readers, and each node's place in the
order, are updated by every mutation (`add_node`, `remove_node`, `set_input`, `set_inputs`,
`set_outputs`, `replace_uses`, `rename_value`, `bypass`, `remove_unused`, `toposort`), so
`producer(v)`, `readers(v)` and `node(name)` answer in O(1) (readers: O(readers)). A node's
`inputs` and `outputs` are read-only lists and `graph.nodes` is a tuple: an edit that went around
the graph's methods could not keep the maps right, so it raises instead. `Graph.verify()` checks
every invariant, the maps against a recomputation from the nodes included, and names the node that
breaks it.

Layering: this module sits in the core above `graphnet.ops` (which it imports), `graphnet.node`
(`Node`) and `graphnet.value` (`Value` and the shape helpers); it re-exports `Node` and `Value`.
`Graph.to_onnx` and `Graph.save` (and `Graph.report`) are the documented exceptions to "the core
imports nothing above it": conveniences that forward to `graphnet.onnx_io.export` (and
`graphnet.report`), imported when called; the import contract in pyproject.toml lists exactly
these edges as ignored.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from graphnet import ops
from graphnet.errors import GraphError
from graphnet.node import Names, Node, copy_attrs
from graphnet.value import Shape, Value, dtype_name, format_shape

if TYPE_CHECKING:  # only for annotations: `import graphnet` loads none of them
    import networkx as nx
    import onnx

    from graphnet.report import Report

__all__ = ["Value", "Node", "Graph", "Shape", "format_shape", "dtype_name"]


def _key(node: Node) -> float:
    return node._key


# Graph fields rebuilt from the nodes (not pickled).
_DERIVED = ("_head", "_tail", "_count", "_order", "_producer", "_readers", "_by_name")


class Graph:
    """A computation graph: inputs, nodes in topological order, outputs, and parameters."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[str] = []
        self.outputs: list[str] = []
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
        # The order: a doubly linked list of nodes (O(1) insert and remove) and, built on demand,
        # the tuple `nodes` returns.
        self._head: Node | None = None
        self._tail: Node | None = None
        self._count = 0
        self._order: tuple[Node, ...] | None = ()
        # Def-use: value -> the node that writes it; value -> {reader: how many of its inputs
        # read the value} (insertion-ordered; `readers` sorts by position); node name -> node.
        self._producer: dict[str, Node] = {}
        self._readers: dict[str, dict[Node, int]] = {}
        self._by_name: dict[str, Node] = {}

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
        """Replace a parameter's array; its Value follows the new shape and dtype. Every call
        stores a new object (a view of `array`): a session keeps what it prepared from a
        parameter (Winograd's transformed weights, bound calls) while the graph holds the same
        object, so after any set_param, also with an array edited in place, twice in a row or
        one the graph held before, it prepares again (storing `array` itself when it is not
        the held one let a second edit-and-set_param hand back the object a session had
        prepared from)."""
        self.params[name] = array = np.asarray(array).view()
        self.values[name] = Value(name, tuple(array.shape), dtype_name(array.dtype))

    def remove_param(self, name: str) -> None:
        """Delete a parameter (and its Value); the caller made sure no node reads it."""
        del self.params[name]
        self.values.pop(name, None)

    def add_node(
        self,
        op: str,
        inputs: Iterable[str],
        attrs: dict[str, Any] | None = None,
        *,
        name: str,
        outputs: list[str] | None = None,
        infer: bool = True,
        before: Node | None = None,
    ) -> Node:
        """Add a node at the end, or just before node `before`; with `infer` (the default) its
        output shapes are inferred at once, so a wrong shape fails here, naming the node."""
        if name in self._by_name:
            raise GraphError(f"a node named '{name}' already exists in graph '{self.name}'")
        if not name:
            raise GraphError(f"a node of op '{op}' needs a non-empty name")
        if before is not None:
            self._own(before)
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
        self._names.add(name)
        self._reserved.discard(name)
        node = Node(op, inputs, outputs, dict(attrs or {}), name)
        if infer:
            types = ops.infer(
                node, [self.values.get(i) if i else None for i in inputs], self._consts(inputs)
            )
            for o, (shape, dtype) in zip(outputs, types, strict=True):
                self.values[o] = Value(o, shape, dtype)
        else:
            for o in outputs:
                self.values.setdefault(o, Value(o, None, "float32"))
        self._link(node, before)
        self._by_name[name] = node
        self._add_defs(node, node.outputs)
        self._add_uses(node, node.inputs)
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

    # ------------------------------------------------------------- mutation
    def remove_node(self, node: Node) -> None:
        """Remove a node, and the Values of its outputs that no node reads and that are not graph
        outputs. The caller rewires the readers of its outputs (or renames a value onto them)."""
        self._own(node)
        self._unlink(node)
        del self._by_name[node.name]
        self._drop_defs(node, node.outputs)
        self._drop_uses(node, node.inputs)
        node._graph = None
        for o in node.outputs:
            if o and o not in self._readers and o not in self._producer and o not in self.outputs:
                self.values.pop(o, None)

    def set_input(self, node: Node, k: int, name: str) -> None:
        """Make `node`'s k-th input read `name` ("" omits it); k may be one past the end or
        further (the gap is filled with omitted inputs)."""
        names = list(node.inputs)
        names.extend([""] * (k + 1 - len(names)))
        names[k] = name
        self.set_inputs(node, names)

    def set_inputs(self, node: Node, names: Sequence[str]) -> None:
        """Replace `node`'s whole input list."""
        self._own(node)
        for i in names:
            if i and i not in self.values:
                raise GraphError(
                    f"input '{i}' of node '{node.name}' ({node.op}) is not defined in graph "
                    f"'{self.name}'"
                )
        self._drop_uses(node, node.inputs)
        node._inputs = Names(names)
        self._add_uses(node, node._inputs)

    def set_outputs(self, node: Node, names: Sequence[str]) -> None:
        """Replace `node`'s output list. A name it no longer writes loses its Value unless some
        node reads it or it is a graph output; a new name gets a Value of unknown shape unless it
        has one (set `values[name]` after)."""
        self._own(node)
        old = list(node.outputs)
        for o in names:
            p = self._producer.get(o)
            if o and p is not None and p is not node:
                raise GraphError(
                    f"output '{o}' of node '{node.name}' is already written by node '{p.name}'"
                )
        self._drop_defs(node, old)
        node._outputs = Names(names)
        self._add_defs(node, node._outputs)
        for o in names:
            if o:
                self._names.add(o)
                self._reserved.discard(o)
                self.values.setdefault(o, Value(o, None, "float32"))
        for o in old:
            if o and o not in self._producer and o not in self._readers and o not in self.outputs:
                self.values.pop(o, None)

    def replace_uses(self, old: str, new: str, *, keep: Node | None = None) -> None:
        """Make every node that reads `old` (except `keep`) read `new` instead. Graph outputs
        are not touched. O(readers of `old`)."""
        if new and new not in self.values:
            raise GraphError(f"cannot read '{new}' instead of '{old}': it is not defined")
        for n in list(self._readers.get(old, ())):
            if n is not keep:
                self.set_inputs(n, [new if i == old else i for i in n.inputs])

    def rename_value(self, old: str, new: str) -> None:
        """Rename a value everywhere it is written or read (producer, readers, graph inputs and
        outputs, parameters) to the unused name `new`."""
        if new in self.values:
            raise GraphError(f"cannot rename '{old}' to '{new}': that name is already used")
        if old not in self.values:
            raise GraphError(f"cannot rename '{old}': graph '{self.name}' has no such value")
        v = self.values.pop(old)
        self.values[new] = Value(new, v.shape, v.dtype)
        self._names.add(new)
        self._reserved.discard(new)
        p = self._producer.pop(old, None)
        if p is not None:
            p._outputs = Names(new if o == old else o for o in p.outputs)
            self._producer[new] = p
        users = self._readers.pop(old, None)
        if users is not None:
            for n in users:
                n._inputs = Names(new if i == old else i for i in n.inputs)
            # Readers may already wait for `new` (a pass removed its producer and renames another
            # value onto the name): merge.
            waiting = self._readers.setdefault(new, {})
            for n, count in users.items():
                waiting[n] = waiting.get(n, 0) + count
        if old in self.params:
            self.params[new] = self.params.pop(old)
        if old in self.inputs:
            self.inputs = [new if i == old else i for i in self.inputs]
        if old in self.outputs:
            self.outputs = [new if o == old else o for o in self.outputs]

    def bypass(self, node: Node, src: str, dst: str) -> str | None:
        """Remove `node`, whose output `dst` equals its input `src`, by making `dst`'s readers read
        `src`. Returns None when done, else the reason it is impossible (nothing changed then).

        If `dst` is a graph output its name must survive: `src`'s producer is made to write `dst`
        directly. That needs `src` to come from a node and not to be a graph output itself."""
        if dst in self.outputs:
            if src in self.inputs:
                return (
                    f"output '{dst}' would be graph input '{src}' unchanged; the node keeps "
                    "both names apart"
                )
            if src in self.params:
                return (
                    f"output '{dst}' would be parameter '{src}' unchanged; the node keeps "
                    "both names apart"
                )
            if src in self.outputs:
                return f"'{src}' and '{dst}' are both graph outputs; the node keeps both names"
            shape = self.values[dst].shape
            self.replace_uses(dst, src, keep=node)
            self.remove_node(node)
            self.values.pop(dst, None)
            self.rename_value(src, dst)
            if self.values[dst].shape is None:  # keep the better-known shape
                self.values[dst].shape = shape
            return None
        self.replace_uses(dst, src, keep=node)
        self.remove_node(node)
        return None

    def _own(self, node: Node) -> None:
        if node._graph is not self:
            raise GraphError(f"node '{node.name}' ({node.op}) is not in graph '{self.name}'")

    # ---------------------------------------------------------- def-use upkeep
    def _add_defs(self, node: Node, names: Iterable[str]) -> None:
        for o in names:
            if o:
                self._producer[o] = node

    def _drop_defs(self, node: Node, names: Iterable[str]) -> None:
        for o in names:
            if o and self._producer.get(o) is node:
                del self._producer[o]

    def _add_uses(self, node: Node, names: Iterable[str]) -> None:
        for i in names:
            if i:
                users = self._readers.get(i)
                if users is None:
                    self._readers[i] = {node: 1}
                else:
                    users[node] = users.get(node, 0) + 1

    def _drop_uses(self, node: Node, names: Iterable[str]) -> None:
        for i in names:
            if i:
                users = self._readers[i]
                left = users[node] - 1
                if left:
                    users[node] = left
                else:
                    del users[node]
                    if not users:
                        del self._readers[i]

    def _link(self, node: Node, before: Node | None) -> None:
        """Put `node` at the end of the order or just before `before`."""
        node._graph = self
        if before is None:
            prev, nxt = self._tail, None
        else:
            prev, nxt = before._prev, before
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        self._count += 1
        self._order = None
        if nxt is None:
            node._key = prev._key + 1.0 if prev is not None else 0.0
        else:
            lo = prev._key if prev is not None else nxt._key - 2.0
            node._key = (lo + nxt._key) / 2
            if not lo < node._key < nxt._key:  # the gap is used up: number the order anew
                self._renumber()

    def _unlink(self, node: Node) -> None:
        prev, nxt = node._prev, node._next
        if prev is None:
            self._head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            self._tail = prev
        else:
            nxt._prev = prev
        node._prev = node._next = None
        self._count -= 1
        self._order = None

    def _renumber(self) -> None:
        n, k = self._head, 0.0
        while n is not None:
            n._key = k
            n, k = n._next, k + 1.0

    def _set_order(self, nodes: Sequence[Node]) -> None:
        """Relink the graph's nodes in the given order (the same nodes, reordered)."""
        self._head = self._tail = None
        self._count = 0
        for n in nodes:
            self._link(n, None)
        self._order = tuple(nodes)

    # ---------------------------------------------------------------- queries
    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in order, as a tuple (built once per change of the order)."""
        if self._order is None:
            out = []
            n = self._head
            while n is not None:
                out.append(n)
                n = n._next
            self._order = tuple(out)
        return self._order

    def producer(self, name: str) -> Node | None:
        """The node that writes `name` (None for graph inputs, parameters and unknown names)."""
        return self._producer.get(name) if name else None

    def readers(self, name: str) -> list[Node]:
        """The nodes that read `name`, in graph order, each once."""
        users = self._readers.get(name)
        if not users:
            return []
        if len(users) == 1:
            return list(users)
        return sorted(users, key=_key)

    def num_readers(self, name: str) -> int:
        """How many nodes read `name` (a node reading it twice counts once)."""
        return len(self._readers.get(name, ()))

    def producers(self) -> dict[str, Node]:
        """Value name -> the node that writes it (inputs and parameters have none)."""
        return dict(self._producer)

    def consumers(self) -> dict[str, list[Node]]:
        """Value name -> the nodes that read it, in graph order."""
        return {v: self.readers(v) for v in self._readers}

    def node(self, name: str) -> Node:
        """The node named `name`, or `GraphError`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise GraphError(f"graph '{self.name}' has no node named '{name}'") from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def comes_before(self, a: Node, b: Node) -> bool:
        """Is node `a` earlier in the order than node `b`? O(1)."""
        self._own(a)
        self._own(b)
        return a._key < b._key

    def after(self, node: Node) -> Node | None:
        """The node that follows `node` in the order (None for the last). O(1)."""
        self._own(node)
        return node._next

    def __contains__(self, node: object) -> bool:
        """`node in graph`: is this node (by identity) in the graph? O(1)."""
        return isinstance(node, Node) and node._graph is self

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return self._count

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

    def to_networkx(self) -> nx.DiGraph:
        """A `networkx.DiGraph` over node names; an edge per value passed from one node to
        another."""
        import networkx as nx

        dg = nx.DiGraph()
        for n in self.nodes:
            dg.add_node(n.name)
            for i in n.inputs:
                p = self._producer.get(i) if i else None
                if p is not None:
                    dg.add_edge(p.name, n.name, value=i)
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
        self._set_order([self._by_name[name] for name in order])

    def remove_unused(self) -> tuple[list[Node], list[str]]:
        """Drop nodes that no graph output depends on, then parameters no node reads.
        Returns (removed nodes, removed parameter names)."""
        live = set(self.outputs)
        removed: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                live.update(i for i in n.inputs if i)
            else:
                removed.append(n)
        removed.reverse()
        for n in removed:
            self.remove_node(n)
        dead_params = [p for p in self.params if p not in live]
        for p in dead_params:
            self.remove_param(p)
        for n in removed:
            for o in n.outputs:
                if o not in live:
                    self.values.pop(o, None)
        return removed, dead_params

    def verify(self) -> None:
        """Check the invariants; raise `GraphError` naming the node and what is broken."""
        defined: dict[str, str] = {i: "graph input" for i in self.inputs}
        for p in self.params:
            if p in defined:
                raise GraphError(f"'{p}' is both a graph input and a parameter")
            defined[p] = "parameter"
        prod: dict[str, Node] = {}
        for n in self.nodes:
            for o in n.outputs:
                if o:
                    prod.setdefault(o, n)
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
        self._verify_maps()

    def _verify_maps(self) -> None:
        """The kept order, producer, reader and name maps equal a recomputation from the nodes."""
        where = f"graph '{self.name}'"
        readers: dict[str, dict[Node, int]] = {}
        prev: Node | None = None
        for k, n in enumerate(self.nodes):
            if n._graph is not self or n._prev is not prev:
                raise GraphError(f"{where}: node '{n.name}' is not linked in at position {k}")
            if prev is not None and not prev._key < n._key:
                raise GraphError(f"{where}: the order keys of '{prev.name}', '{n.name}' are stale")
            if self._by_name.get(n.name) is not n:
                raise GraphError(f"{where}: the name map does not give node '{n.name}'")
            for o in n.outputs:
                if o and self._producer.get(o) is not n:
                    other = self._producer.get(o)
                    says = f"node '{other.name}'" if other is not None else "no producer"
                    raise GraphError(
                        f"{where}: the producer map is stale: '{o}' is written by node "
                        f"'{n.name}', the map says {says}"
                    )
            for i in n.inputs:
                if i:
                    users = readers.setdefault(i, {})
                    users[n] = users.get(n, 0) + 1
            prev = n
        if len(self.nodes) != self._count or len(self._by_name) != self._count:
            raise GraphError(f"{where}: the node count or name map is stale")
        written = sum(1 for n in self.nodes for o in n.outputs if o)
        if len(self._producer) != written:
            ghosts = sorted(set(self._producer) - {o for n in self.nodes for o in n.outputs})
            raise GraphError(
                f"{where}: the producer map is stale: it lists {ghosts} that no node writes"
            )
        if readers != self._readers:
            for v in sorted(set(readers) | set(self._readers)):
                have = {n.name: c for n, c in self._readers.get(v, {}).items()}
                want = {n.name: c for n, c in readers.get(v, {}).items()}
                if have != want:
                    raise GraphError(
                        f"{where}: the reader map is stale for '{v}': it lists {sorted(have)}, "
                        f"the nodes that read it are {sorted(want)}"
                    )

    def copy(self) -> Graph:
        """A deep copy (parameters copied too), so a pass can work on it freely."""
        g = Graph(self.name)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g._adopt(Node(n.op, n.inputs, n.outputs, copy_attrs(n.attrs), n.name) for n in self.nodes)
        g.params = {k: v.copy() for k, v in self.params.items()}
        g.values = {k: Value(v.name, v.shape, v.dtype) for k, v in self.values.items()}
        g.meta = _copy.deepcopy(self.meta)
        g._names, g._reserved = set(self._names), set(self._reserved)
        return g

    def _adopt(self, nodes: Iterable[Node]) -> None:
        """Link fresh nodes (in no graph) in this order and register their def-use."""
        for n in nodes:
            self._link(n, None)
            self._by_name[n.name] = n
            self._add_defs(n, n.outputs)
            self._add_uses(n, n.inputs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Graph:
        # The default would recurse from node to node along the order (deeper than Python allows
        # on a large graph); `copy` is the deep copy.
        return self.copy()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its node list (nodes alone, without the links between them) and fields."""
        state = {k: v for k, v in self.__dict__.items() if k not in _DERIVED}
        state["nodes"] = list(self.nodes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        nodes = state.pop("nodes")
        self.__init__(state["name"])  # type: ignore[misc]
        self.__dict__.update(state)
        self._adopt(nodes)

    def infer_shapes(self) -> None:
        """Re-run shape inference over every node in order (after a pass rewrote the graph)."""
        for n in self.nodes:
            types = ops.infer(
                n, [self.values.get(i) if i else None for i in n.inputs], self._consts(n.inputs)
            )
            for o, (shape, dtype) in zip(n.outputs, types, strict=True):
                self.values[o] = Value(o, shape, dtype)

    # ------------------------------------------------------------------ output
    def to_onnx(
        self, *, mode: str = "inference", opset: int | None = None, **kwargs: Any
    ) -> onnx.ModelProto:
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

    def report(self, path: str | None = None, **options: Any) -> Report:
        """A self-contained HTML report: the graph before and after optimize, the per-layer
        table, activations, learning curves (see `graphnet.report.build_report` for `options`).
        Written atomically to `path` when given; returns the `graphnet.report.Report`."""
        from graphnet.report import build_report

        report = build_report(self, **options)
        if path is not None:
            report.write(path)
        return report

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
