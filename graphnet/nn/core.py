"""The DSL's core: a `Network` builds a `Graph`; `Tensor`s are its symbolic values; `Layer`s are
callables that emit nodes when applied to tensors; `Sequential` chains layers.

Functional style (residual and concat graphs):

    net = Network("block", seed=0)
    x = net.input("x", (None, 16, 8, 8))          # None: dynamic batch
    y = ReLU()(Conv(16, 3, padding="same")(x))
    net.output(add(x, y), name="y")
    graph = net.graph

Sequential style (chains):

    graph = Sequential([Conv(16, 3), ReLU(), MaxPool(2)]).build((None, 3, 32, 32))

Shapes are inferred as each node is added, so a mismatch fails on the line that made it, and the
error names the layer. Parameters are created on a layer's first call, from the network's seeded
generator (reproducible); calling the same layer object again reuses (shares) its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from graphnet.dims import BATCH, parse_dim
from graphnet.errors import GraphError
from graphnet.ir import Graph, format_shape

__all__ = ["Network", "Tensor", "Layer", "Sequential", "add", "concat"]


class Tensor:
    """A symbolic value of a `Network` under construction. Its name follows a rename by
    `Network.output(t, name=...)`, so a tensor stays usable after it became an output."""

    __slots__ = ("net", "_name")

    def __init__(self, net: Network, name: str) -> None:
        self.net = net
        self._name = name

    @property
    def name(self) -> str:
        return self.net._renamed.get(self._name, self._name)

    @property
    def shape(self) -> tuple:
        shape = self.net.graph.values[self.name].shape
        if shape is None:  # the op table infers every shape the DSL emits: a bug if not
            raise GraphError(f"tensor '{self.name}' has no inferred shape")
        return shape

    @property
    def dtype(self) -> str:
        return self.net.graph.values[self.name].dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __add__(self, other: Tensor) -> Tensor:
        return add(self, other)

    def __repr__(self) -> str:
        return f"Tensor(%{self.name}: {self.dtype}{format_shape(self.shape)})"


class Network:
    """Builds a graph: declare inputs, apply layers to tensors, declare outputs."""

    def __init__(self, name: str = "net", *, seed: int | None = 0) -> None:
        self.graph = Graph(name)
        self.rng = np.random.default_rng(seed)
        self._counts: dict[str, int] = {}
        self._renamed: dict[str, str] = {}  # value names changed by `output(..., name=)`

    def input(self, name: str, shape: Sequence[int | str | None], dtype: str = "float32") -> Tensor:
        """Declare a graph input. Dims are ints (static) or symbols (str, e.g. "N", "H"); `None`
        is a dynamic dim: the batch "N" on axis 0, a symbol of its own ("<input>_<axis>")
        elsewhere (graphnet.dims). Every input's "N" is the same batch."""
        dims = tuple(
            parse_dim(d) if d is not None else BATCH if k == 0 else f"{name}_{k}"
            for k, d in enumerate(shape)
        )
        self.graph.add_input(name, dims, dtype)
        return Tensor(self, name)

    def output(self, tensor: Tensor, name: str | None = None) -> Tensor:
        """Declare a graph output, renaming its value to `name` if given."""
        self._own(tensor, "output")
        if name is not None and name != tensor.name:
            old = tensor.name
            self.graph.rename_value(old, name)
            for k, v in self._renamed.items():  # earlier renames now end at the new name
                if v == old:
                    self._renamed[k] = name
            self._renamed[old] = name
            tensor = Tensor(self, name)
        self.graph.mark_output(tensor.name)
        return tensor

    def unique(self, kind: str) -> str:
        """A fresh layer name: conv1, conv2, ..."""
        while True:  # O(1) per try: the counter per kind and the graph's name maps
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = f"{kind}{self._counts[kind]}"
            if name not in self.graph.values and not self.graph.has_node(name):
                return name

    def param(self, name: str, array: np.ndarray) -> str:
        """Add a parameter (float32 unless the array says otherwise) and return its name."""
        self.graph.add_param(name, np.asarray(array))
        return name

    @overload
    def emit(
        self,
        op: str,
        inputs: Sequence[Tensor | str | None],
        attrs: dict[str, Any] | None = None,
        *,
        name: str,
        num_outputs: None = None,
    ) -> Tensor: ...

    @overload
    def emit(
        self,
        op: str,
        inputs: Sequence[Tensor | str | None],
        attrs: dict[str, Any] | None = None,
        *,
        name: str,
        num_outputs: int,
    ) -> list[Tensor]: ...

    def emit(
        self,
        op: str,
        inputs: Sequence[Tensor | str | None],
        attrs: dict[str, Any] | None = None,
        *,
        name: str,
        num_outputs: int | None = None,
    ) -> Tensor | list[Tensor]:
        """Add a node; returns its output tensor (a list when `num_outputs` is given)."""
        names = []
        for i in inputs:
            if isinstance(i, Tensor):
                self._own(i, f"input of '{name}'")
                names.append(i.name)
            else:
                names.append(i or "")
        outputs = None
        if num_outputs is not None:
            outputs = (
                [f"{name}.out"]
                if num_outputs == 1
                else [f"{name}.out{k}" for k in range(num_outputs)]
            )
        node = self.graph.add_node(
            op, names, attrs or {}, name=self.graph.fresh_name(name), outputs=outputs
        )
        outs = [Tensor(self, o) for o in node.outputs]
        return outs if num_outputs is not None else outs[0]

    def _own(self, t: Tensor, what: str) -> None:
        if not isinstance(t, Tensor):
            raise GraphError(
                f"{what}: expected a Tensor of network '{self.graph.name}', got {type(t).__name__}"
            )
        if t.net is not self:
            raise GraphError(
                f"{what}: tensor '{t.name}' belongs to network '{t.net.graph.name}', not "
                f"'{self.graph.name}'"
            )


class Layer:
    """Base class of the DSL's layers.

    Subclasses set `kind` (the name prefix, e.g. "conv") and implement `forward(net, *xs)`, which
    emits nodes through `net.emit` and creates parameters through `self.param`."""

    kind = "layer"

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name
        self._params: dict[tuple[int, str], str] = {}

    def __call__(self, *xs: Tensor) -> Tensor:
        if not xs or not isinstance(xs[0], Tensor):
            raise GraphError(f"{type(self).__name__} must be applied to a Tensor, got {xs!r}")
        net = xs[0].net
        if self.name is None:
            self.name = net.unique(self.kind)
        return self.forward(net, *xs)

    # Each layer takes its own inputs (one tensor, two for add, a list for concat) and most
    # return one tensor: the base accepts any signature.
    def forward(self, net: Network, *xs: Any, **kw: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def node_name(self) -> str:
        """The layer's name once applied to a tensor (its nodes' and parameters' prefix)."""
        if self.name is None:
            raise GraphError(f"{type(self).__name__} has no name until it is applied to a Tensor")
        return self.name

    def param(self, net: Network, key: str, make, dtype: str | None = None) -> str:
        """The parameter `<layer>.<key>`, created on first use by calling `make()` (an array).
        Floats are stored as `dtype` (pass the input's dtype), float32 when not given."""
        k = (id(net), key)
        if k not in self._params:
            arr = np.asarray(make())
            if arr.dtype.kind == "f":
                arr = arr.astype(dtype or np.float32)
            self._params[k] = net.param(net.graph.fresh_name(f"{self.name}.{key}"), arr)
        return self._params[k]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Sequential(Layer):
    """Layers applied one after another. Usable as a layer inside a functional network too."""

    kind = "seq"

    def __init__(self, layers: Sequence[Layer], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.layers = list(layers)
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise GraphError(f"Sequential item {k} is a {type(layer).__name__}, not a Layer")

    def forward(self, net: Network, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def build(
        self,
        input_shape: Sequence[int | None],
        *,
        name: str | None = None,
        seed: int | None = 0,
        input_name: str = "input",
        output_name: str = "output",
        dtype: str = "float32",
    ) -> Graph:
        """A graph with one input of `input_shape` and one output."""
        net = Network(name or self.name or "sequential", seed=seed)
        x = net.input(input_name, input_shape, dtype)
        net.output(self(x), name=output_name)
        return net.graph


class _Add(Layer):
    kind = "add"

    def forward(self, net: Network, a: Tensor, b: Tensor) -> Tensor:
        return net.emit("Add", [a, b], name=self.node_name)


class _Concat(Layer):
    kind = "concat"

    def __init__(self, axis: int, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.axis = axis

    def forward(self, net: Network, *xs: Tensor) -> Tensor:
        return net.emit("Concat", list(xs), {"axis": self.axis}, name=self.node_name)


def add(a: Tensor, b: Tensor, *, name: str | None = None) -> Tensor:
    """Element-wise sum (a residual connection); shapes must broadcast."""
    return _Add(name=name)(a, b)


def concat(xs: Sequence[Tensor], axis: int = 1, *, name: str | None = None) -> Tensor:
    """Concatenate along `axis` (channels by default): Inception-style branch merging."""
    return _Concat(axis, name=name)(*xs)
