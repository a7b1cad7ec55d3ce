"""Opaque nodes are written back exactly as they were read.

When the model is written at another opset than the one it was read at, an opaque node is first
converted on its own with `onnx.version_converter` (a one-node model holding it), because its
op's definition may have changed in between (Dropout-9's `ratio` attribute became an input, for
example). A node the converter cannot carry over is a clear error naming it, never a model that
`onnx.checker` or onnxruntime would reject later.
"""

from __future__ import annotations

from graphnet.errors import UnsupportedOpError
from graphnet.onnx_io.rules.table import export_rule


@export_rule("Opaque")
def _export_opaque(ctx, node, attrs):
    from onnx import NodeProto

    proto = NodeProto()
    proto.ParseFromString(attrs["node"])
    # Passes may have renamed the values it reads or writes; the IR node is authoritative.
    del proto.input[:]
    proto.input.extend(node.inputs)
    del proto.output[:]
    proto.output.extend("" if k in attrs["omitted"] else o for k, o in enumerate(node.outputs))
    proto.name = node.name
    source = ctx.graph.meta.get("opset")
    if source is not None and source != ctx.opset and proto.domain in ("", "ai.onnx"):
        ctx.nodes.extend(_convert(ctx, node, proto, source))
    else:
        ctx.nodes.append(proto)


def _convert(ctx, node, proto, source: int) -> list:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper, version_converter

    g = ctx.graph
    inputs, inits = [], []
    for i in proto.input:
        if not i:
            continue
        v = g.values.get(i)
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype if v else "float32"))
        if i in g.params:
            inits.append(numpy_helper.from_array(g.params[i], i))
        inputs.append(
            helper.make_tensor_value_info(
                i,
                elem,
                None
                if v is None or v.shape is None
                else [d if d is not None else "N" for d in v.shape],
            )
        )
    outputs = []
    for o in proto.output:
        if o:
            v = g.values.get(o)
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype if v else "float32"))
            outputs.append(helper.make_tensor_value_info(o, elem, None))
    one = helper.make_model(
        helper.make_graph([proto], "one", inputs, outputs, initializer=inits),
        opset_imports=[helper.make_opsetid("", source)],
    )
    try:
        converted = version_converter.convert_version(one, ctx.opset)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise UnsupportedOpError(
            f"node '{node.name}' ({proto.op_type}) was read at opset {source} and has no graphnet "
            f"mapping; onnx's version converter cannot carry it to opset {ctx.opset}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    known = set(proto.input) | set(proto.output)
    # Values the converter introduced (Constant outputs, new initializers) get fresh names.
    rename = {}
    for n in converted.graph.node:
        for o in n.output:
            if o and o not in known:
                rename[o] = ctx.fresh(f"{node.name}.{o}")
    for t in converted.graph.initializer:
        if t.name not in g.params:
            new = ctx.fresh(f"{node.name}.{t.name}")
            rename[t.name] = new
            ctx.const(numpy_helper.to_array(t), new)
    out = []
    for k, n in enumerate(converted.graph.node):
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
        n.name = node.name if k == len(converted.graph.node) - 1 else ctx.fresh(f"{node.name}.{k}")
        out.append(n)
    return out
