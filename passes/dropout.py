"""drop-dropout: remove inference-mode Dropout.

The maths (docs/formulas.md, "Dropout"). With keep = 1 - drop_prob (the keep probability),
Dropout at inference is
- inverted scheme (ONNX, PyTorch): y = x, an identity: the node is removed, its readers read x;
- classic scheme: y = keep * x, a scale. A scale commutes with any linear map L:
  keep * L(x) = L(keep * x), so it folds into a neighbour instead of costing a multiply per element:
  - the layer BEFORE it, whose output feeds only the Dropout: Conv/ConvTranspose
    (W' = keep * W, b' = keep * b), Gemm (alpha' = keep * alpha, beta' = keep * beta: no parameter
    changes), MatMul with a constant operand (that operand times keep), BatchNormalization
    (gamma' = keep * gamma, beta' = keep * beta: BN is affine per channel);
  - else the layer AFTER it, its only reader, reading it as data: Conv/ConvTranspose
    (W' = keep * W; exact even with padding: keep * 0 = 0), Gemm (alpha' = keep * alpha, whichever
    operand it is), MatMul with a constant other operand;
  - else a `Mul(x, keep)` with a scalar constant of x's dtype.
  The two folds are the fold engine's (`passes.affine_fold`) with s = keep and no shift.
- the optional mask output of an inference Dropout is all True: when something reads it (or it
  is a graph output) it is replaced by `ConstantOfShape(shape, value=True)` (bool), with the
  constant shape of x when x's shape is fully static, else with `Shape(x)`.

It must NOT:
- remove a Dropout whose output is a graph output by renaming that output: the producer of x is
  made to write the output's name; if x is a graph input, a parameter or another graph output,
  an inverted Dropout becomes an `Identity` (it keeps the two names apart);
- fold into a neighbour whose output or input is shared (x read by another node, or a graph
  output), nor into a WSConv (standardizing the weight would undo the scale), nor change a
  weight another node also reads in place (copy-on-write: a fresh parameter);
- touch train-mode semantics: the rewritten graph is for inference only (this pass is in the
  `inference` pipeline, never in a training one).
"""

from __future__ import annotations

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.passes._graph import drop_params_made_dead, params_read, resolved_attrs
from graphnet.passes.affine_fold import (
    Affine,
    Folded,
    did,
    fold_into_consumer,
    fold_into_producer,
)
from graphnet.passes.base import PassReport, register_pass

__all__ = ["drop_dropout"]


@register_pass("drop-dropout")
def drop_dropout(graph: Graph, report: PassReport) -> None:
    """Inference Dropout: inverted -> removed; classic -> its scale (1 - drop_prob) folded into
    the neighbouring Conv/Gemm/MatMul/BN or kept as a Mul; a read mask -> constant ones."""
    read_before, existed_before = params_read(graph), set(graph.params)
    for node in [n for n in graph.nodes if n.op == "Dropout"]:
        attrs = resolved_attrs(graph, node)
        extra = node.inputs[1:] + [""] * (3 - len(node.inputs))
        if extra[1]:  # the mode itself is decided at run time: it may be training
            report.declined(f"{node.name}: its training_mode '{extra[1]}' is computed at run time")
            continue
        if extra[0] and attrs["scheme"] == "classic":  # the inference scale is unknown here
            report.declined(
                f"{node.name}: classic dropout with a ratio '{extra[0]}' computed at run time"
            )
            continue
        keep = 1.0 - float(attrs["drop_prob"])
        if not _replace_mask(graph, node, report):
            continue
        x, y = node.inputs[0], node.outputs[0]
        if attrs["scheme"] == "classic" and keep != 1.0:
            _classic(graph, node, keep, report)
            continue
        what = f"{node.name} ({attrs['scheme']}, drop_prob {attrs['drop_prob']:g})"
        reason = graph.bypass(node, x, y)
        if reason is None:
            report.did(f"removed {what}: identity at inference")
        else:
            graph.set_inputs(node, node.inputs[:1])
            node.op, node.attrs = "Identity", {}
            report.did(f"replaced {what} by an Identity: {reason}")
    dead = drop_params_made_dead(graph, read_before, existed_before)
    if dead:
        report.did(f"dropped {len(dead)} parameter(s) the folds left unread: {', '.join(dead)}")


def _replace_mask(graph: Graph, node: Node, report: PassReport) -> bool:
    """Give a read mask output its own constant-ones producer. False when that is impossible."""
    if len(node.outputs) < 2 or not node.outputs[1]:
        return True
    mask = node.outputs[1]
    if not graph.num_readers(mask) and mask not in graph.outputs:
        graph.set_outputs(node, node.outputs[:1])
        return True
    x = graph.values[node.inputs[0]]
    if x.shape is None:
        report.declined(
            f"{node.name}: its mask '{mask}' is read, and it cannot be made constant: the rank "
            f"of '{x.name}' is unknown"
        )
        return False
    dtype = graph.values[mask].dtype
    after = graph.after(node)
    graph.set_outputs(node, node.outputs[:1])
    graph.values.pop(mask, None)  # kept for its readers: the new ConstantOfShape writes it
    static = all(is_static(d) for d in x.shape)
    if static:
        shape = graph.fresh_name(f"{node.name}.mask_shape")
        graph.add_param(shape, np.asarray(x.shape, dtype=np.int64))
    else:
        shape = graph.add_node(
            "Shape",
            [x.name],
            name=graph.fresh_name(f"{node.name}_mask_shape"),
            outputs=[graph.fresh_name(f"{node.name}.mask_shape")],
            before=after,
        ).outputs[0]
    ones = np.ones(1, dtype=np.dtype(dtype))
    cos = graph.add_node(
        "ConstantOfShape",
        [shape],
        {"value": ones},
        name=graph.fresh_name(f"{node.name}_mask"),
        outputs=[mask],
        before=after,
    )
    graph.values[mask].shape = x.shape  # Shape(x) is x's shape, symbolic dims included
    how = f"the static shape {format_shape(x.shape)}" if static else f"Shape({x.name})"
    report.did(
        f"{node.name}: its mask '{mask}' (all {ones[0].item()!r} at inference) now comes from "
        f"{cos.name} (ConstantOfShape of {how})"
    )
    return True


def _classic(graph: Graph, node: Node, keep: float, report: PassReport) -> None:
    x, y = node.inputs[0], node.outputs[0]
    scale = Affine(np.asarray(keep, np.float64), None, tag="keep")
    into_producer = fold_into_producer(graph, x, [node], scale)
    if isinstance(into_producer, Folded):
        did(
            report,
            f"removed {node.name} (classic): its scale {keep:g} folded into {into_producer.into}",
            into_producer.notes,
        )
        return
    into_consumer = fold_into_consumer(graph, node, scale)
    if isinstance(into_consumer, Folded):
        report.declined(f"{node.name}: scale not folded into the layer before it: {into_producer}")
        did(
            report,
            f"removed {node.name} (classic): its scale {keep:g} folded into the following "
            f"{into_consumer.into}",
            into_consumer.notes,
        )
        return
    report.declined(f"{node.name}: scale not folded into the layer before it: {into_producer}")
    report.declined(f"{node.name}: scale not folded into the layer after it: {into_consumer}")
    xv = graph.values[x]
    k = graph.fresh_name(f"{node.name}.keep")
    graph.add_param(k, np.asarray(keep, dtype=np.dtype(xv.dtype)))
    after = graph.after(node)
    graph.remove_node(node)
    graph.values.pop(y, None)
    mul = graph.add_node(
        "Mul", [x, k], name=graph.fresh_name(f"{node.name}_scale"), outputs=[y], before=after
    )
    report.did(f"rewrote {node.name} (classic) as {mul.name} (Mul by keep = {keep:g})")
