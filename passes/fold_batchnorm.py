"""fold-batchnorm: fold inference BatchNormalization into a neighbouring linear op.

The maths (docs/formulas.md, "Batch normalization" and "Folding"). At inference BN is an affine
map per channel c:
    Y = gamma * (X - mean) / sqrt(var + eps) + beta = s * X + t,
    s = gamma / sqrt(var + eps),   t = beta - mean * s.
If X = W (*) A + b is linear in A with output feature c, then
    W' = W * s (per output feature),   b' = (b - mean) * s + beta = s * b + t,
and if the BN feeds a linear op instead, Z = W (*) Y + b = (W * s_in) (*) X + (b + W (*) t),
exact only when every output sees every tap (no padding: a padded zero of Y is not s*0 + t).
The array maths are pure functions in `passes.affine_maths` (`bn_scale_shift`,
`fuse_affine_weights`, `fold_affine_into_conv`, `fold_affine_into_matrix`, `per_channel_vector`;
re-exported here), float64 inside, cast back to the weight's dtype, tested on their own; the
surgery is the fold engine `passes.affine_fold` (shared with drop-dropout and fold-affine).

Rewrites, for each BatchNormalization whose four statistics are constants (parameters, or
per-channel vectors a constant sub-graph computes, such as the `ConstantOfShape` fills of the ONNX
zoo's light models, evaluated here with `passes._graph.constant_value`):
0. first, a Mul / Add by a per-channel constant that is the BN's only reader (Caffe2's
   BN -> scale layer) is absorbed into the BN: gamma' = gamma * c, beta' = beta * c + d;
1. into its producer P, when P's output feeds only the BN and is not a graph output:
   - Conv (1/2/3-D, grouped, depthwise, with or without bias): W (M, C/g, k...) scaled on axis 0;
   - ConvTranspose: W (C, M/g, k...): output channel g*M/g + j is column j of row block g;
   - Gemm (any transA/transB/alpha/beta, C absent, (F,), (1, F), (M, F), scalar...): B scaled
     on its feature axis (1, or 0 if transB), C' = s * (beta * C) + t, beta' = 1;
   - MatMul(A, B) with a constant 2-D B and a 2-D output: B' = B * s and a fresh `Add(t)`;
   - Add(MatMul(A, B), c) with constant B and c (the MatMul feeding only the Add): B' = B * s,
     c' = s * c + t;
   - another BatchNormalization (BN2 after BN1): gamma1' = s2 * gamma1, beta1' = s2 * beta1 + t2.
   BNs are visited last first, so Conv -> BN -> BN folds BN2 into BN1, then BN1 into the Conv.
   This is `passes.affine_fold.fold_into_producer`; a weight that is
   a ConstantOfShape / Expand fill (the zoo's) becomes `Expand(v * s', shape)`, not materialised.
2. otherwise into the op that reads it, when that op is its only reader and reads it as data
   (`passes.affine_fold.fold_into_consumer`):
   - Conv whose pads are all zero (W' = W * s per input channel, b' = b + sum W * t);
   - Gemm with transA = 0 (B scaled on its K axis, C' = beta * C + alpha * t @ B');
   - MatMul(Y, B) of a 2-D Y with constant 2-D B (B' = s[:, None] * B, plus a fresh Add(t @ B)).
3. otherwise it becomes the per-channel affine Mul(X, s) -> Add(t), constants of shape
   (C, 1, ..., 1), which is what BN computes at inference, with two simple ops.

It must NOT fold (and the report says which reason applied):
- when P's output has another reader or is a graph output (the other reader needs the unscaled
  value): "conv_3 output also feeds add_7";
- when P is a WSConv: standardization W_hat = (W - mu) / sigma would undo a scale of W
  (`fold-constants` first turns a WSConv with a constant kernel into a plain Conv);
- when the BN's channel axis (1) is not P's output-feature axis: MatMul of a 3-D input
  (N, T, K) x (K, F) has features on axis 2, while BN normalizes axis 1;
- into a following Conv with non-zero pads, a following ConvTranspose (its border outputs see
  fewer taps, so t does not become a per-channel bias) or WSConv, or a Gemm with transA = 1;
- when a weight or bias is not a constant (a parameter, a small constant sub-graph, or for a
  weight a fill whose scaled vector stays well below the weight's size). A weight another node
  also reads is never changed in place: the folded node gets a fresh copy (copy-on-write), which
  the report mentions.
"""

from __future__ import annotations

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.passes._graph import (
    constant_value,
    drop_params_made_dead,
    params_read,
    resolved_attrs,
    write_param,
)
from graphnet.passes.affine_fold import (
    Affine,
    Folded,
    did,
    fold_into_consumer,
    fold_into_producer,
)
from graphnet.passes.affine_maths import (
    bn_scale_shift,
    fold_affine_into_conv,
    fold_affine_into_matrix,
    fuse_affine_weights,
    per_channel_vector,
)
from graphnet.passes.base import PassReport, register_pass

__all__ = [
    "bn_scale_shift",
    "fuse_affine_weights",
    "fold_affine_into_conv",
    "fold_affine_into_matrix",
    "per_channel_vector",
    "fold_batchnorm",
]


# ------------------------------------------------------------------------- the surgery
_CONV_OPS = ("Conv", "ConvTranspose")


@register_pass("fold-batchnorm")
def fold_batchnorm(graph: Graph, report: PassReport) -> None:
    """Fold inference BatchNormalization into the single-consumer Conv/ConvTranspose/Gemm/
    MatMul(+Add) before it, else into a following pad-free Conv/Gemm/MatMul, else rewrite it
    as a per-channel Mul + Add."""
    read_before, existed_before = params_read(graph), set(graph.params)
    # Last BN first: in BN1 -> BN2, BN2 must fold into BN1 while BN1 is still a BN (once BN1
    # is a Mul + Add nothing folds into it); a Conv -> BN1 -> BN2 chain then folds BN1 into the
    # Conv.
    for bn in [n for n in reversed(graph.nodes) if n.op == "BatchNormalization"]:
        if bn in graph:  # O(1): not removed by an earlier fold
            _fold_one(graph, bn, report)
    dead = drop_params_made_dead(graph, read_before, existed_before)
    if dead:
        report.did(f"dropped {len(dead)} parameter(s) the folds left unread: {', '.join(dead)}")


def _fold_one(graph: Graph, bn: Node, report: PassReport) -> None:
    x = graph.values[bn.inputs[0]]
    # Statistics computed by a constant sub-graph (ConstantOfShape, as the ONNX zoo's light models
    # write them) are evaluated: they are per-channel vectors, the size of the s and t written here.
    limit = _channels(graph, bn)
    stats = [
        constant_value(graph, bn.inputs[k], limit) if k < len(bn.inputs) else None
        for k in range(1, 5)
    ]
    names = ("scale", "B", "input_mean", "input_var")
    missing = [
        f"{nm} '{bn.inputs[k + 1]}'"
        for k, (nm, a) in enumerate(zip(names, stats, strict=True))
        if a is None
    ]
    if missing:
        report.declined(
            f"{bn.name}: its {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not constant"
        )
        return
    if len(bn.outputs) > 1:
        report.declined(
            f"{bn.name}: it has {len(bn.outputs)} outputs (training statistics); only Y folds"
        )
        return
    if x.shape is None:
        report.declined(f"{bn.name}: the rank of its input '{x.name}' is unknown")
        return
    gamma, beta, mean, var = (a for a in stats if a is not None)  # all four: checked above
    gamma, beta = _absorb_affine_readers(graph, bn, gamma, beta, report)
    eps = float(resolved_attrs(graph, bn)["epsilon"])
    s, t = bn_scale_shift(mean, var, eps, gamma, beta)

    affine = Affine(s, t)
    into_producer = fold_into_producer(graph, bn.inputs[0], [bn], affine)
    if isinstance(into_producer, Folded):
        did(report, f"folded {bn.name} into {into_producer.into}", into_producer.notes)
        return
    into_consumer = fold_into_consumer(graph, bn, affine)
    if isinstance(into_consumer, Folded):
        did(
            report, f"folded {bn.name} into the following {into_consumer.into}", into_consumer.notes
        )
        report.declined(f"{bn.name}: not folded into the layer before it: {into_producer}")
        return
    report.declined(f"{bn.name}: not folded into the layer before it: {into_producer}")
    report.declined(f"{bn.name}: not folded into the layer after it: {into_consumer}")
    _to_affine(graph, bn, s, t, report)


def _channels(graph: Graph, bn: Node) -> int:
    """How many elements a BN statistic has: the channel count (axis 1), else the declared length
    of its scale; 1024 (fold-constants' SMALL_RESULT) when neither is known."""
    x = graph.values[bn.inputs[0]].shape
    if x is not None and len(x) > 1 and is_static(x[1]):
        return int(x[1])
    g = graph.values.get(bn.inputs[1]) if len(bn.inputs) > 1 else None
    if g is not None and g.shape and is_static(g.shape[0]):
        return int(g.shape[0])
    return 1024


# ------------------------------------------------------- per-channel Mul / Add after the BN
def _absorb_affine_readers(
    graph: Graph, bn: Node, gamma: np.ndarray, beta: np.ndarray, report: PassReport
) -> tuple[np.ndarray, np.ndarray]:
    """Fold the Mul / Add by per-channel constants that follow the BN (Caffe2's BN -> scale
    layer, as DenseNet-121 and Inception v2 of the ONNX zoo write it: BN -> Mul(gamma2) ->
    Add(beta2)) into the BN itself:
        (gamma (x - mean) / sd + beta) * c + d = (gamma c) (x - mean) / sd + (beta c + d),
    so gamma' = gamma * c, beta' = beta * c (Mul) and beta' = beta + d (Add). The BN's readers
    must be that one Mul / Add (not a graph output) and the other operand a per-channel constant
    (`per_channel_vector`). Each absorbed node is removed and the BN writes its output (the
    graph's values are only ever read through the BN: its output had that node as only reader);
    the new gamma and beta are written into the BN once, after the last absorbed node.
    Returns the (possibly new) gamma and beta in float64."""
    gamma, beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    x_shape = graph.values[bn.inputs[0]].shape
    assert x_shape is not None  # _fold_one declined an input of unknown rank
    rank, channels = len(x_shape), gamma.shape[0]
    dtype = np.dtype(graph.values[bn.inputs[0]].dtype)
    absorbed = False
    while True:
        y = bn.outputs[0]
        users = graph.readers(y)
        if y in graph.outputs or len(users) != 1 or users[0].op not in ("Mul", "Add"):
            break
        nxt = users[0]
        if nxt.inputs.count(y) != 1 or len(nxt.inputs) != 2:
            break
        other = nxt.inputs[1 - nxt.inputs.index(y)]
        c = constant_value(graph, other, channels)
        vec = None if c is None else per_channel_vector(c, rank, channels)
        if vec is None or np.asarray(c).dtype != np.dtype(graph.values[y].dtype):
            break
        if nxt.op == "Mul":
            gamma, beta = gamma * vec, beta * vec
        else:
            beta = beta + vec
        # y is private to nxt: the BN writes nxt's output from now on (its readers, and a graph
        # output name, are untouched).
        out = graph.values[nxt.outputs[0]]
        graph.remove_node(nxt)
        graph.set_outputs(bn, [out.name, *bn.outputs[1:]])
        graph.values[out.name] = out
        absorbed = True
        report.did(
            f"absorbed {nxt.name} ({nxt.op} by the per-channel constant '{other}') into "
            f"{bn.name}'s {'scale and B' if nxt.op == 'Mul' else 'B'}"
        )
    if absorbed:
        write_param(graph, bn, 1, gamma.astype(dtype), f"{bn.name}.scale")
        write_param(graph, bn, 2, beta.astype(dtype), f"{bn.name}.B")
    return gamma, beta


# ----------------------------------------------------------------- per-channel affine
def _to_affine(graph: Graph, bn: Node, s: np.ndarray, t: np.ndarray, report: PassReport) -> None:
    x = graph.values[bn.inputs[0]]
    assert x.shape is not None  # _fold_one declined an input of unknown rank
    dtype = np.dtype(x.dtype)
    view = (s.shape[0],) + (1,) * (len(x.shape) - 2)
    s_name = graph.fresh_name(f"{bn.name}.mul")
    graph.add_param(s_name, s.reshape(view).astype(dtype))
    t_name = graph.fresh_name(f"{bn.name}.add")
    graph.add_param(t_name, t.reshape(view).astype(dtype))
    after, y = graph.after(bn), bn.outputs[0]
    shape = graph.values[y].shape
    graph.remove_node(bn)
    graph.values.pop(y, None)  # kept for its readers: the new Add writes it
    mul = graph.add_node(
        "Mul",
        [x.name, s_name],
        name=graph.fresh_name(f"{bn.name}_mul"),
        outputs=[graph.fresh_name(f"{bn.name}.scaled")],
        before=after,
    )
    add = graph.add_node(
        "Add",
        [mul.outputs[0], t_name],
        name=graph.fresh_name(f"{bn.name}_add"),
        outputs=[y],
        before=after,
    )
    graph.values[y].shape = graph.values[y].shape or shape
    report.did(
        f"rewrote {bn.name} as the per-channel affine {mul.name} (Mul) -> {add.name} (Add), "
        f"constants {format_shape(view)}"
    )
