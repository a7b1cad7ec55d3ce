"""`onnx.ModelProto` (or a path) -> IR `Graph`.

Initializers and `Constant` nodes become parameters. Each ONNX node is handed to the import rule
of its op_type (`registry.import_rule`); a node with no rule, from another domain, or that its rule
declines, is kept as an `Opaque` node holding the ONNX node itself, so that `optimize` can work on
any model and write such nodes back untouched. Graph input, output and parameter names are kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphnet.dims import parse_dim
from graphnet.errors import GraphNetError, ModelImportError
from graphnet.ir import Graph, Node
from graphnet.onnx_io.decode import constant_value, f32_decimal, onnx_attrs
from graphnet.onnx_io.registry import get_import_rule

__all__ = ["ImportContext", "from_onnx", "load", "f32_decimal", "constant_value"]


class ImportContext:
    """What an import rule works with: the ONNX opset, attribute decoding, constants, and
    `add` to write IR nodes."""

    def __init__(
        self, graph: Graph, opset: int, shapes: dict[str, tuple], used: set[str] | None = None
    ) -> None:
        self.graph = graph
        self.opset = opset
        self._shapes = shapes  # value name -> (shape, dtype) from ONNX shape inference
        self._used = used if used is not None else set()

    def is_used(self, name: str) -> bool:
        """Does any node of the model read `name`, or is it a graph output?"""
        return bool(name) and name in self._used

    @staticmethod
    def attrs(node) -> dict[str, Any]:
        """The ONNX node's attributes as Python values (see `decode.onnx_attrs`)."""
        return onnx_attrs(node)

    def const(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is a parameter (initializer or folded Constant), else None."""
        return self.graph.params.get(name) if name else None

    def param(self, array: np.ndarray, hint: str) -> str:
        """Add a new parameter; returns its name."""
        name = self.graph.fresh_name(hint)
        self.graph.add_param(name, np.asarray(array))
        return name

    def add(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        attrs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> Node:
        """Add an IR node writing the given output names. Shapes are inferred where the inputs'
        shapes are known, else taken from ONNX's shape inference."""
        g = self.graph
        name = g.fresh_name(name or (outputs[0] if outputs else op))
        known = all(not i or g.values[i].shape is not None for i in inputs)
        node = g.add_node(
            op, list(inputs), attrs or {}, name=name, outputs=list(outputs), infer=known
        )
        if not known:
            for o in node.outputs:
                if o in self._shapes:
                    shape, dtype = self._shapes[o]
                    g.values[o].shape, g.values[o].dtype = shape, dtype
        return node

    def opaque(self, node) -> Node:
        """Keep an ONNX node as it is (an `Opaque` IR node)."""
        g = self.graph
        name = g.fresh_name(node.name or (node.output[0] if node.output else node.op_type))
        outputs = list(node.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        # An omitted optional output in the middle gets a placeholder name, written back as "".
        omitted = tuple(k for k, o in enumerate(outputs) if not o)
        for k in omitted:
            outputs[k] = g.fresh_name(f"{name}.unused{k}")
        attrs = {"node": node.SerializeToString(), "op_type": node.op_type, "domain": node.domain}
        if omitted:
            attrs["omitted"] = omitted
        n = g.add_node("Opaque", list(node.input), attrs, name=name, outputs=outputs, infer=False)
        for o in n.outputs:
            if o and o in self._shapes:
                shape, dtype = self._shapes[o]
                g.values[o].shape, g.values[o].dtype = shape, dtype
        return n


def _dims(type_proto) -> tuple | None:
    """A declared ONNX shape in the IR's terms (graphnet.dims): dim_value -> int, dim_param ->
    its symbol or expression, neither -> unknown (None, never taken for another dim)."""
    t = type_proto.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(
        d.dim_value
        if d.HasField("dim_value")
        else parse_dim(d.dim_param)
        if d.HasField("dim_param")
        else None
        for d in t.shape.dim
    )


_ELEM_DTYPES: dict[int, str] = {}


def _dtype(type_proto) -> str:
    # Cached per ONNX element type: NumPy builds a dtype's name anew on each str().
    elem = type_proto.tensor_type.elem_type
    if not elem:
        return "float32"
    name = _ELEM_DTYPES.get(elem)
    if name is None:
        from onnx import helper

        name = _ELEM_DTYPES[elem] = str(np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    return name


def from_onnx(model) -> Graph:
    """Read an `onnx.ModelProto` into a `Graph`."""
    import onnx
    from onnx import numpy_helper

    if not model.HasField("graph"):
        raise ModelImportError("the model has no graph (an empty file, or not an ONNX model)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelImportError("the model imports no version of the default ONNX domain")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # onnx's own inference has known bugs; shapes are a convenience here
        inferred = model
    shapes: dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            shapes[vi.name] = (_dims(vi.type), _dtype(vi.type))

    mg = model.graph
    g = Graph(mg.name or "graph")
    g.meta = {
        "opset": opset,
        "ir_version": model.ir_version,
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "opset_import": [(o.domain, o.version) for o in model.opset_import],
        "metadata_props": {p.key: p.value for p in model.metadata_props},
        "doc_string": model.doc_string,
        "graph_doc_string": mg.doc_string,
    }
    init_names = set()
    for t in mg.initializer:
        g.add_param(t.name, numpy_helper.to_array(t))
        init_names.add(t.name)
    # IR < 4 lists initializers among the graph inputs too; those are parameters, not inputs.
    g.meta["initializer_inputs"] = [i.name for i in mg.input if i.name in init_names]
    for i in mg.input:
        if i.name not in init_names:
            g.add_input(i.name, _dims(i.type), _dtype(i.type))
    used = {i for n in mg.node for i in n.input if i} | {o.name for o in mg.output}
    ctx = ImportContext(g, opset, shapes, used)
    for node in mg.node:
        try:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                g.add_param(node.output[0], constant_value(node))
                continue
            rule = get_import_rule(node.op_type) if node.domain in ("", "ai.onnx") else None
            if rule is None:
                ctx.opaque(node)
            else:
                rule(ctx, node)
        except GraphNetError as exc:
            label = node.name or node.output[0]
            if str(exc).startswith(f"node '{label}' ({node.op_type})"):
                raise ModelImportError(str(exc)) from exc  # it names the node already
            raise ModelImportError(f"ONNX node '{label}' ({node.op_type}): {exc}") from exc
    for o in mg.output:
        if o.name not in g.values:
            raise ModelImportError(f"graph output '{o.name}' is not produced by any node")
        g.mark_output(o.name)
        if g.values[o.name].shape is None:
            g.values[o.name].shape = _dims(o.type)
    g.verify()
    return g


def load(path_or_model) -> Graph:
    """Import an ONNX file path or `onnx.ModelProto` into a `Graph`."""
    import onnx

    if isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        if not os.path.exists(path):
            raise ModelImportError(f"no such file: {path}")
        try:
            model = onnx.load(path)
        except Exception as exc:
            raise ModelImportError(f"{path} is not a readable ONNX model: {exc}") from exc
    else:
        model = path_or_model
    return from_onnx(model)
