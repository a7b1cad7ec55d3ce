"""fold-affine: fold per-channel Mul / Add / Sub / Div by constants into the linear op before them,
and merge a chain of them into one Mul + Add.

The maths. A STEP is a node that applies one number per channel (axis 1, as BN does) to its data
input x: `Mul(x, c)` / `Mul(c, x)`, `Add(x, c)` / `Add(c, x)`, `Sub(x, c)`, `Sub(c, x)`,
`Div(x, c)`, c a constant that `passes.affine_maths.per_channel_vector` accepts (a scalar,
(C, 1, 1), (1, C, 1, 1), ...: it never changes x's shape). Each step is y = a * x + b per
channel, and a chain of steps (each the only reader of the one before) composes, in float64, into
one map y = s * x + t:
    Mul c: (s, t) -> (c s, c t);  Add c: t -> t + c;  Sub(x, c): t -> t - c;
    Sub(c, x): (s, t) -> (-s, c - t);  Div(x, c): (s, t) -> (s / c, t / c).
Rewrites:
1. the chain's input x is written by a Conv / ConvTranspose / Gemm / MatMul(+Add) /
   BatchNormalization that only the chain reads: the map folds into its weights and bias
   (the fold engine's `passes.affine_fold.fold_into_producer`: W' = W * s per output feature,
   b' = s * b + t; a weight that is a ConstantOfShape / Expand fill stays a fill). This is
   DenseNet's Caffe2 scale layer after a Conv, and what fold-batchnorm's Mul + Add would leave
   after a linear op;
2. otherwise a chain of two or more steps that is longer than its canonical form becomes
   `Mul(x, s) -> Add(t)` with (C, 1, ..., 1) constants (the Mul left out when s = 1, the Add when
   t = 0); Mul -> Add or Add -> Mul of two real factors is already as short as it gets.

It must NOT:
- fold when x or an intermediate of the chain has another reader or is a graph output (the other
  reader needs the unscaled value); the last step's output may be a graph output (its name is
  kept: the producer, or the new Add, writes it);
- treat a constant that broadcasts over more than the channel axis (a per-pixel map, a 1-D vector
  that lines up with the width), or whose dtype is not x's float dtype, as a step;
- fold into a WSConv (standardization would undo the scale) or a MatMul whose features are on
  another axis than 1; other refusals are those of fold-batchnorm's producer folds.
Each fold rounds the folded weight to its dtype once (float64 inside): outputs change within the
float32 tolerance, as with BN folding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.passes._graph import (
    after_removal,
    constant_value,
    drop_params_made_dead,
    params_read,
)
from graphnet.passes.affine_fold import (
    LINEAR_PRODUCERS,
    Affine,
    Folded,
    did,
    fold_into_producer,
)
from graphnet.passes.affine_maths import per_channel_vector
from graphnet.passes.base import PassReport, register_pass

__all__ = ["fold_affine", "affine_step", "compose_steps"]

STEP_OPS = ("Mul", "Add", "Sub", "Div")


class Step(NamedTuple):
    """One per-channel step: y = a * x + b for the data input `node.inputs[data]`."""

    kind: str  # "mul", "add", "sub" (x - c), "rsub" (c - x) or "div" (x / c)
    c: np.ndarray  # float64, one number per channel
    data: int  # which input is x


def affine_step(graph: Graph, node: Node) -> Step | None:
    """The `Step` `node` applies to its data input (the one input that is not a constant), or
    None when it is not a per-channel step (see the module docstring)."""
    if (
        node.op not in STEP_OPS
        or len(node.inputs) != 2
        or len(node.outputs) != 1
        or not all(node.inputs)
    ):
        return None
    const = [_is_constant(graph, i) for i in node.inputs]
    if const.count(True) != 1:
        return None  # two constants: fold-constants' business; none: not a step
    data_k = const.index(False)
    x = graph.values.get(node.inputs[data_k])
    if (
        x is None
        or x.shape is None
        or len(x.shape) < 2
        or not is_static(x.shape[1])
        or np.dtype(x.dtype).kind != "f"
    ):
        return None
    channels = int(x.shape[1])
    c = constant_value(graph, node.inputs[1 - data_k], channels)
    if c is None or str(np.asarray(c).dtype) != x.dtype:
        return None
    vec = per_channel_vector(c, len(x.shape), channels)
    if vec is None:
        return None
    if node.op == "Div":
        if data_k != 0 or not np.all(vec != 0):
            return None  # c / x is not affine; x / 0 is not a scale
        return Step("div", vec, 0)
    if node.op == "Sub":
        return Step("sub" if data_k == 0 else "rsub", vec, data_k)
    return Step(node.op.lower(), vec, data_k)


def _is_constant(graph: Graph, name: str) -> bool:
    """A parameter, or the output of a fill / shape op on constants (the zoo's per-channel
    ConstantOfShape vectors that fold-constants keeps when they have more than 1024 elements)."""
    if name in graph.params:
        return True
    prod = graph.producer(name)
    return (
        prod is not None
        and prod.op in _CONST_MAKERS
        and all(not i or _is_constant(graph, i) for i in prod.inputs)
    )


_CONST_MAKERS = (
    "ConstantOfShape",
    "Unsqueeze",
    "Reshape",
    "Expand",
    "Identity",
    "Squeeze",
    "Flatten",
)


def compose_steps(steps: list[Step], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(s, t), float64 (channels,), with y = s * x + t for the steps applied in order."""
    s, t = np.ones(channels), np.zeros(channels)
    for kind, c, _ in steps:
        if kind == "mul":
            s, t = s * c, t * c
        elif kind == "add":
            t = t + c
        elif kind == "sub":
            t = t - c
        elif kind == "rsub":
            s, t = -s, c - t
        elif kind == "div":
            s, t = s / c, t / c
    return s, t


@register_pass("fold-affine")
def fold_affine(graph: Graph, report: PassReport) -> None:
    """Fold per-channel Mul/Add/Sub/Div by constants into the Conv/ConvTranspose/Gemm/MatMul/BN
    before them, else merge a chain of them into one Mul + Add."""
    read_before, existed_before = params_read(graph), set(graph.params)
    steps = {id(n): st for n in graph.nodes if (st := affine_step(graph, n)) is not None}
    if not steps:
        return
    # Chains are found before anything is rewritten: they are disjoint, and rewriting one never
    # changes which nodes form another.
    chains = [
        _chain_from(graph, n, steps)
        for n in graph.nodes
        if id(n) in steps and not _continues_a_chain(graph, n, steps)
    ]
    for chain in chains:
        _fold_chain(graph, chain, [steps[id(n)] for n in chain], report)
    dead = drop_params_made_dead(graph, read_before, existed_before)
    if dead:
        report.did(f"dropped {len(dead)} parameter(s) the folds left unread: {', '.join(dead)}")


def _x(node: Node, steps: dict) -> str:
    return node.inputs[steps[id(node)].data]


def _private(graph: Graph, value: str, node: Node) -> bool:
    return (
        value not in graph.outputs
        and graph.readers(value) == [node]
        and node.inputs.count(value) == 1
    )


def _continues_a_chain(graph: Graph, node: Node, steps: dict) -> bool:
    """Whether `node` reads a step whose only reader it is (then the chain starts earlier)."""
    prod = graph.producer(_x(node, steps))
    return prod is not None and id(prod) in steps and _private(graph, prod.outputs[0], node)


def _chain_from(graph: Graph, head: Node, steps: dict) -> list[Node]:
    """The steps from `head` on, each the only reader (as data) of the one before."""
    chain = [head]
    while True:
        out = chain[-1].outputs[0]
        users = graph.readers(out)
        if (
            len(users) != 1
            or id(users[0]) not in steps
            or not _private(graph, out, users[0])
            or _x(users[0], steps) != out
        ):
            return chain
        chain.append(users[0])


def _fold_chain(graph: Graph, chain: list[Node], kinds: list[Step], report: PassReport) -> None:
    x = graph.values[chain[0].inputs[kinds[0].data]]
    assert x.shape is not None  # affine_step accepts only inputs of known rank and channels
    s, t = compose_steps(kinds, int(x.shape[1]))
    label = ", ".join(f"{n.name} ({n.op})" for n in chain)
    prod = graph.producer(x.name)
    if prod is not None and prod.op in LINEAR_PRODUCERS + ("Add", "WSConv"):
        why = fold_into_producer(graph, x.name, chain, Affine(s, t))
        if isinstance(why, Folded):
            did(report, f"folded {label} into {why.into}", why.notes)
            return
        if (
            prod.op != "Add" or "MatMul" not in why
        ):  # a plain Add (no MatMul bias) is not worth a line
            report.declined(f"{label}: not folded into {prod.name} ({prod.op}): {why}")
    _canonical(graph, x.name, chain, kinds[-1].data, s, t, label, report)


def _canonical(
    graph: Graph,
    x: str,
    chain: list[Node],
    data_k: int,
    s: np.ndarray,
    t: np.ndarray,
    label: str,
    report: PassReport,
) -> None:
    """Rewrite a chain as Mul(s) -> Add(t) when that has fewer nodes; an identity chain (s = 1,
    t = 0: x * 1, x + 0) is bypassed."""
    need_mul, need_add = bool(np.any(s != 1.0)), bool(np.any(t != 0.0))
    y = chain[-1].outputs[0]
    if not need_mul and not need_add:
        _bypass_chain(graph, x, chain, data_k, label, report)
        return
    if need_mul + need_add >= len(chain):
        return  # already as short as it gets (a lone step, Mul -> Add)
    xv = graph.values[x]
    assert xv.shape is not None  # affine_step accepts only inputs of known rank and channels
    dtype = np.dtype(xv.dtype)
    view = (s.shape[0],) + (1,) * (len(xv.shape) - 2)
    after = after_removal(graph, chain)
    shape = graph.values[y].shape
    for n in chain:
        graph.remove_node(n)
    for n in chain:
        graph.values.pop(n.outputs[0], None)
    src, made = x, []
    for op, vec, needed in (("Mul", s, need_mul), ("Add", t, need_add)):
        if not needed:
            continue
        last = op == "Add" or not need_add
        c_name = graph.fresh_name(f"{chain[0].name}.{op.lower()}")
        graph.add_param(c_name, vec.reshape(view).astype(dtype))
        out = y if last else graph.fresh_name(f"{chain[0].name}.scaled")
        node = graph.add_node(
            op,
            [src, c_name],
            name=graph.fresh_name(f"{chain[0].name}_{op.lower()}"),
            outputs=[out],
            before=after,
        )
        made.append(f"{node.name} ({op})")
        src = out
    graph.values[y].shape = graph.values[y].shape or shape
    report.did(f"merged {label} into {' -> '.join(made)}, constants {format_shape(view)}")


def _bypass_chain(
    graph: Graph, x: str, chain: list[Node], data_k: int, label: str, report: PassReport
) -> None:
    """Remove a chain that computes y = x (x * 1, x + 0, ...): readers of y read x."""
    y = chain[-1].outputs[0]
    if y in graph.outputs and (x in graph.inputs or x in graph.params or x in graph.outputs):
        report.declined(
            f"{label}: computes its input unchanged, but output '{y}' would be '{x}' "
            f"(a graph input, parameter or output): the last node keeps both names"
        )
        return
    graph.set_input(chain[-1], data_k, x)
    for n in reversed(chain[:-1]):  # inner values are private to the chain: each dies with its node
        graph.remove_node(n)
    graph.bypass(chain[-1], x, y)  # cannot decline: checked above
    report.did(f"removed {label}: together they multiply by 1 and add 0")
