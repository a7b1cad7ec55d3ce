"""`OpSpec` and the registry behind `graphnet.ops`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphnet.errors import (
    AttributeValueError,
    GraphError,
    GraphNetError,
    ShapeError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    from graphnet.ir import Node
    from graphnet.value import Value

__all__ = [
    "REQUIRED",
    "OpSpec",
    "register",
    "get",
    "has",
    "all_specs",
    "infer",
    "attrs_of",
    "attrs_for_arrays",
    "resolve_attrs",
    "TensorType",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of an attribute that has none: a node must set it."""

TensorType = tuple  # (shape: tuple | None, dtype: str)

# infer(inputs, attrs) or, for `consts` ops, infer(inputs, attrs, consts): two call forms.
InferFn = Callable[..., list]
ResolveFn = Callable[[Sequence["Value | None"], dict], dict]


@dataclass(frozen=True)
class OpSpec:
    """One op of the IR.

    - `inputs`: input names in order; a trailing `?` marks an optional input, a leading `*` a
      variadic one (last only; at least one value unless it also ends in `?`).
    - `outputs`: output names; a trailing `?` marks an optional output (a node has it only if
      its `outputs` list is that long).
    - `attrs`: every attribute with its default (`REQUIRED` where there is none). A node's
      attributes must be a subset of these names.
    - `infer(inputs, attrs) -> [(shape, dtype), ...]` one entry per output the node has; `inputs`
      are the input `Value`s (None for an omitted optional), `attrs` are resolved. Raise
      `ShapeError("...")` with a message about shapes; the node's name is added by `infer()`.
    - `resolve(inputs, attrs) -> attrs` fills the defaults that depend on the inputs (e.g. a
      Conv's `strides` of 1 per spatial axis), so kernels and exporters always see full attributes.
    - `consts`: set it when `infer` needs the values of constant inputs (Reshape's shape):
      `infer(inputs, attrs, consts)` then gets a list with the array of each input that is a
      parameter, None for the others.
    - `macs(inputs, outputs, attrs) -> int`: multiply-accumulates of one run (summary, reports);
      omit for ops whose cost is negligible next to conv and matrix products.
    - `state`: for ops with running state (BatchNorm), {kernel output index -> input index}: in
      train mode the kernel returns extra outputs that replace those input parameters.
    - `mode_dependent`: the op computes something else in train mode (BatchNorm, Dropout).
    """

    name: str
    doc: str
    inputs: tuple[str, ...]
    infer: InferFn
    outputs: tuple[str, ...] = ("Y",)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    resolve: ResolveFn | None = None
    consts: bool = False
    macs: Callable[..., int] | None = None
    state: Mapping[int, int] = field(default_factory=dict)
    mode_dependent: bool = False
    family: str = ""

    def num_outputs(self, attrs: Mapping[str, Any] | None = None) -> int:
        """Number of outputs a node of this op has unless it asks for the optional ones."""
        return sum(1 for o in self.outputs if not o.endswith("?"))

    def input_range(self) -> tuple[int, int | None]:
        """(min, max) number of inputs; max None for variadic."""
        required = sum(1 for i in self.inputs if not i.endswith("?") and not i.startswith("*"))
        for i in self.inputs:
            if i.startswith("*"):
                return required + (0 if i.endswith("?") else 1), None
        return required, len(self.inputs)


_SPECS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    """Add an op to the table (once per name)."""
    if spec.name in _SPECS:
        raise GraphNetError(f"op '{spec.name}' is registered twice")
    _SPECS[spec.name] = spec
    return spec


def get(op: str) -> OpSpec:
    """The spec of an op, or `UnsupportedOpError` naming it."""
    try:
        return _SPECS[op]
    except KeyError:
        raise UnsupportedOpError(f"op '{op}' is not in graphnet's op table") from None


def has(op: str) -> bool:
    return op in _SPECS


def all_specs() -> dict[str, OpSpec]:
    """A copy of the table, name -> spec."""
    return dict(_SPECS)


def _where(node: Node) -> str:
    return f"node '{node.name}' ({node.op})"


def attrs_of(node: Node, inputs: Sequence[Value | None]) -> dict:
    """The node's attributes with every default filled in and resolved against its inputs."""
    spec = get(node.op)
    unknown = sorted(set(node.attrs) - set(spec.attrs))
    if unknown:
        raise AttributeValueError(
            f"{_where(node)}: unknown attribute(s) {unknown}; {node.op} takes {sorted(spec.attrs)}"
        )
    attrs = dict(spec.attrs)
    attrs.update(node.attrs)
    missing = sorted(k for k, v in attrs.items() if v is REQUIRED)
    if missing:
        raise AttributeValueError(f"{_where(node)}: required attribute(s) {missing} not set")
    lo, hi = spec.input_range()
    n = len(node.inputs)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any'}"
        raise GraphError(f"{_where(node)}: takes {want} inputs {list(spec.inputs)}, got {n}")
    for k, name in enumerate(spec.inputs):
        if k < n and not name.endswith("?") and not name.startswith("*") and not node.inputs[k]:
            raise GraphError(f"{_where(node)}: required input '{name}' is empty")
    if spec.resolve is not None:
        try:
            attrs = spec.resolve(inputs, attrs)
        except (ShapeError, AttributeValueError) as exc:
            raise type(exc)(f"{_where(node)}: {exc}") from None
    return attrs


def resolve_attrs(op: str, inputs: Sequence[Value | None], attrs: Mapping[str, Any]) -> dict:
    """`attrs` with the op table's defaults filled in and resolved against `inputs` (no node
    needed): what an import rule uses instead of writing a default of its own."""
    spec = get(op)
    full = dict(spec.attrs)
    full.update(attrs)
    return spec.resolve(inputs, full) if spec.resolve is not None else full


def attrs_for_arrays(node: Node, arrays: Sequence[Any]) -> dict:
    """`attrs_of` resolved against concrete input arrays: for a node whose inputs' ranks were
    unknown when the graph was planned (kernels always get fully resolved attributes)."""
    from graphnet.value import Value

    values = [
        None if a is None else Value(f"in{k}", tuple(a.shape), str(a.dtype))
        for k, a in enumerate(arrays)
    ]
    return attrs_of(node, values)


def infer(node: Node, inputs: Sequence[Value | None], consts: Sequence | None = None) -> list:
    """Output (shape, dtype) pairs of a node; errors name the node, the op and the shapes.
    `consts` holds the array of each input that is a constant (None elsewhere)."""
    spec = get(node.op)
    attrs = attrs_of(node, inputs)
    try:
        if spec.consts:
            types = spec.infer(
                inputs, attrs, list(consts) if consts is not None else [None] * len(inputs)
            )
        else:
            types = spec.infer(inputs, attrs)
    except (ShapeError, AttributeValueError) as exc:
        shapes = ", ".join(_fmt(v) for v in inputs)
        raise type(exc)(f"{_where(node)}: {exc} [inputs: {shapes}]") from None
    if len(types) < len(node.outputs):
        raise GraphError(
            f"{_where(node)}: has {len(node.outputs)} outputs, the op defines {len(types)}"
        )
    return list(types[: len(node.outputs)])


def _fmt(v: Value | None) -> str:
    if v is None:
        return "<none>"
    from graphnet.value import format_shape

    return f"{v.name}{format_shape(v.shape)}"
