"""`Node`: one op application in a graph, `outputs = op(inputs) {attrs}`.

Its `inputs` and `outputs` are read-only lists (`Names`): the `Graph` that holds the node changes
them, keeping its producer and reader maps up to date (see `graphnet.ir`). `graphnet.ir`
re-exports `Node`.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from graphnet.errors import GraphError
from graphnet.value import format_shape

if TYPE_CHECKING:
    from graphnet.ir import Graph

__all__ = ["Node", "Names", "copy_attrs"]


class Names(list):
    """A node's input or output names: a list that refuses in-place changes (the graph's
    producer and reader maps would go stale). Reading, comparing and copying work as for a list."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise GraphError(
            "a node's inputs and outputs are changed through its graph (set_input, set_inputs, "
            "set_outputs, replace_uses, rename_value), which keeps producers and readers up to date"
        )

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return (Names, (list(self),))


class Node:
    """One op application: `outputs = op(inputs) {attrs}`.

    `op` and `attrs` may be changed in place; `name`, `inputs` and `outputs` only through the graph
    that holds the node. Nodes compare (and hash) by identity: `a is b` is the only equality."""

    __slots__ = ("op", "attrs", "_name", "_inputs", "_outputs", "_graph", "_prev", "_next", "_key")

    def __init__(
        self,
        op: str,
        inputs: Iterable[str],
        outputs: Iterable[str],
        attrs: dict[str, Any] | None = None,
        name: str = "",
    ) -> None:
        self.op = op
        self.attrs: dict[str, Any] = {} if attrs is None else attrs
        self._name = name
        self._inputs = Names(inputs)
        self._outputs = Names(outputs)
        # Set while the node is in a graph: the graph, its neighbours in the order, and a key
        # that increases along the order (so two nodes are ordered in O(1)).
        self._graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None
        self._key = 0.0

    @property
    def name(self) -> str:
        return self._name

    @property
    def inputs(self) -> list[str]:
        return self._inputs

    @property
    def outputs(self) -> list[str]:
        return self._outputs

    def __reduce__(self) -> tuple[type[Node], tuple[Any, ...]]:
        # The node alone: its links to neighbours belong to the graph that holds it (pickling them
        # would recurse along the whole order).
        return (Node, (self.op, list(self.inputs), list(self.outputs), self.attrs, self.name))

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


def copy_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a node's attributes that shares what cannot change (strings, numbers,
    tuples of them): `copy.deepcopy` of every attribute dict was a tenth of `optimize`."""
    out: dict[str, Any] = {}
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
