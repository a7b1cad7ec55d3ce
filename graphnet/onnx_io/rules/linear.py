"""ONNX export/import rules of the linear family (Gemm, MatMul, Maxout).

Gemm and MatMul are 1:1. Maxout has no ONNX op; it exports as

    Gemm(X, W as (k*out, in), B as (k*out,), transB=1)  -> (N, k*out)
    Reshape(.., [0, k, out])                             -> (N, k, out) (0 keeps the batch dynamic)
    ReduceMax(.., axes=[1], keepdims=0)                  -> (N, out)

Row j*out + o of the reshaped W is W[j, o], so the Reshape splits the Gemm's columns by piece.
ReduceMax takes `axes` as an attribute before opset 18 and as an input from 18 on.
Maxout has no import rule: its ONNX form is a composite that passes may match, not one node.
"""

from __future__ import annotations

import numpy as np

from graphnet.onnx_io.rules.table import export_rule, import_rule

_FLOATS = ("float16", "float32", "float64")


@export_rule("Gemm")
def _export_gemm(ctx, node, attrs):
    ctx.emit(
        "Gemm",
        node.inputs,
        node.outputs,
        name=node.name,
        alpha=float(attrs["alpha"]),
        beta=float(attrs["beta"]),
        transA=int(attrs["transA"]),
        transB=int(attrs["transB"]),
    )


@export_rule("MatMul")
def _export_matmul(ctx, node, attrs):
    ctx.emit("MatMul", node.inputs, node.outputs, name=node.name)


def _flat_operand(ctx, node, name: str, shape: tuple, hint: str) -> str:
    """`name` reshaped to `shape` for the Gemm. A parameter read by this node only is rewritten in
    place (same initializer name, new shape: one copy of the weights, stable names); anything else
    gets a Reshape node, which onnxruntime folds when its input is constant."""
    readers = [n for n in ctx.graph.nodes if name in n.inputs]
    if name in ctx.graph.params and len(readers) == 1 and name not in ctx.graph.outputs:
        from onnx import numpy_helper

        arr = np.asarray(ctx.graph.params[name]).reshape(shape)
        ctx.initializers[name] = numpy_helper.from_array(arr, name)
        return name
    target = ctx.const(np.asarray(shape, dtype=np.int64), f"{node.name}.{hint}_shape")
    out = ctx.fresh(f"{node.name}.{hint}_flat")
    ctx.emit("Reshape", [name, target], [out], name=ctx.fresh(f"{node.name}.{hint}_reshape"))
    return out


@export_rule("Maxout")
def _export_maxout(ctx, node, attrs):
    k = int(attrs["pieces"])
    w_shape = ctx.value(node.inputs[1]).shape
    out_f, in_f = int(w_shape[1]), int(w_shape[2])
    w2 = _flat_operand(ctx, node, node.inputs[1], (k * out_f, in_f), "W")
    gemm_in = [node.inputs[0], w2]
    if len(node.inputs) > 2 and node.inputs[2]:
        gemm_in.append(_flat_operand(ctx, node, node.inputs[2], (k * out_f,), "B"))
    z = ctx.fresh(f"{node.name}.pieces_flat")
    ctx.emit("Gemm", gemm_in, [z], name=ctx.fresh(f"{node.name}.gemm"), transB=1)
    split = ctx.const(np.asarray([0, k, out_f], dtype=np.int64), f"{node.name}.pieces_shape")
    zk = ctx.fresh(f"{node.name}.pieces")
    ctx.emit("Reshape", [z, split], [zk], name=ctx.fresh(f"{node.name}.reshape"))
    if ctx.opset >= 18:
        axes = ctx.const(np.asarray([1], dtype=np.int64), f"{node.name}.axes")
        ctx.emit("ReduceMax", [zk, axes], node.outputs, name=node.name, keepdims=0)
    else:
        ctx.emit("ReduceMax", [zk], node.outputs, name=node.name, axes=[1], keepdims=0)


@import_rule("Gemm")
def _import_gemm(ctx, node):
    # Opsets 9/10 require C, 11+ make it optional; 7+ always broadcast C. Opset 6's `broadcast`
    # only allowed that broadcast (with 0, C must already be (M, N), the same sum), so it is
    # dropped. Integer Gemm (opset 11+) has no IR form.
    a = ctx.attrs(node)
    if ctx.opset < 7:
        a.pop("broadcast", None)
    if (
        set(a) - {"alpha", "beta", "transA", "transB"}
        or ctx.graph.values[node.input[0]].dtype not in _FLOATS
    ):
        ctx.opaque(node)
        return
    ctx.add("Gemm", node.input, node.output, a, name=node.name)


@import_rule("MatMul")
def _import_matmul(ctx, node):
    ctx.add("MatMul", node.input, node.output, name=node.name)
