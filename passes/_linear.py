"""Folding a per-feature affine map y = s * x + t into the linear op that writes x: the graph
surgery that fold-batchnorm (a BN's s and t) and fold-affine (a chain of Mul / Add by constants)
share. The array maths are in `passes.bn_maths`.

The producer P of x (x read only by the folded node(s), not a graph output), with output
feature c on axis 1 of x:
- Conv, W (M, C/g, k...): W' = W * s on axis 0, b' = s * b + t;
- ConvTranspose, W (C, M/g, k...): output channel g*M/g + j is column j of row block g;
- Gemm: B scaled on its feature axis (1, or 0 if transB), C' = s * (beta * C) + t, beta' = 1;
- MatMul(A, B) with a constant 2-D B and a 2-D output: B' = B * s, and an `Add(t)` writes y;
- Add(MatMul(A, B), c), the MatMul feeding only the Add: B' = B * s, c' = s * c + t;
- BatchNormalization: gamma' = s * gamma, beta' = s * beta + t.
Everything is computed in float64 and cast back to the weight's dtype.

A weight is a parameter (changed copy-on-write, `write_param`) or a FILL: the output of
`ConstantOfShape(shape)` or of `Expand(v, shape)` with a constant v and shape (the ONNX zoo's light
models write every weight as a fill). Since broadcast(v, shape) * s' = broadcast(v * s', shape)
for s' = s shaped along W's feature axis, the fold writes `Expand(v * s', shape)` (a
`ConstantOfShape` again when v * s' is one number) instead of materialising W: one node, as the
fill was, and the file stays small. It must NOT when v * s' would hold more than half of W's
elements (that is materialising W under another name; `optimize(max_constant_bytes=...)` does it
on purpose), nor change a fill another node also reads (the folded op gets its own new node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphnet import ops
from graphnet.dims import is_static
from graphnet.ir import Graph, Node, format_shape
from graphnet.ops._shapes import broadcast
from graphnet.passes._graph import (
    after_removal,
    constant_value,
    other_uses,
    resolved_attrs,
    write_param,
)
from graphnet.passes.base import PassReport
from graphnet.passes.bn_maths import feature_factor

__all__ = [
    "Fill",
    "fill_of",
    "fold_into_producer",
    "broadcasts_to",
    "did",
    "LINEAR_PRODUCERS",
]

LINEAR_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")
"""Ops a per-feature affine map folds into (plus Add(MatMul, c), a MatMul's bias)."""


# ------------------------------------------------------------------------------ fills
@dataclass
class Fill:
    """A weight written by `ConstantOfShape(shape)` or `Expand(vec, shape)`: `vec` (same rank as
    the weight, size-1 axes broadcast) broadcast to `shape`."""

    node: Node
    vec: np.ndarray
    shape: tuple[int, ...]
    shape_name: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def fill_of(graph: Graph, name: str) -> Fill | None:
    """The fill that writes the value `name`, or None if `name` is not one (see the module
    docstring); its shape must be static and its vector of `name`'s dtype."""
    node = graph.producer(name)
    v = graph.values.get(name)
    if node is None or len(node.outputs) != 1 or v is None or v.shape is None:
        return None
    if not all(is_static(d) for d in v.shape):
        return None
    shape = tuple(int(d) for d in v.shape)
    if node.op == "ConstantOfShape":
        value = np.asarray(resolved_attrs(graph, node)["value"])
        vec, shape_name = value.reshape((1,) * len(shape)), node.inputs[0]
    elif node.op == "Expand" and node.inputs[0] in graph.params and node.inputs[1] in graph.params:
        vec, shape_name = graph.params[node.inputs[0]], node.inputs[1]
        if vec.ndim > len(shape):
            return None
        vec = vec.reshape((1,) * (len(shape) - vec.ndim) + vec.shape)
    else:
        return None
    if shape_name not in graph.params or str(vec.dtype) != v.dtype:
        return None
    return Fill(node, vec, shape, shape_name)


def _write_fill(
    graph: Graph, user: Node, k: int, fill: Fill, vec: np.ndarray, hint: str
) -> str | None:
    """Make `user`'s k-th input broadcast(vec, fill.shape): the fill node itself is rewritten when
    `user` is its only reader, else `user` gets a new node (copy-on-write, said in the note)."""
    out = fill.node.outputs[0]
    vec = np.asarray(vec).astype(fill.vec.dtype)
    if vec.size and np.all(vec == vec.reshape(-1)[0]):
        shape_name = fill.shape_name
        if tuple(int(d) for d in graph.params[shape_name]) != fill.shape:
            shape_name = graph.fresh_name(f"{hint}.shape")
            graph.add_param(shape_name, np.array(fill.shape, np.int64))
        op, inputs, attrs = "ConstantOfShape", [shape_name], {"value": vec.reshape(-1)[:1].copy()}
    else:
        vec_name = graph.fresh_name(f"{hint}.vec")
        graph.add_param(vec_name, vec)
        op, inputs, attrs = "Expand", [vec_name, fill.shape_name], {}
    private = (
        out not in graph.outputs and user.inputs.count(out) == 1 and graph.readers(out) == [user]
    )
    if private:
        graph.set_inputs(fill.node, inputs)
        fill.node.op, fill.node.attrs = op, attrs
        return None
    node = graph.add_node(op, inputs, attrs, name=graph.fresh_name(hint), before=user)
    graph.set_input(user, k, node.outputs[0])
    return f"the fill '{out}' is shared, so {user.name} got its own {node.name} ({op})"


def _scale_weight(
    graph: Graph, node: Node, k: int, s: np.ndarray, axis: int, group: int, hint: str
):
    """Scale the weight `node.inputs[k]` by s along its output-feature `axis`: returns
    (note or None, None) when done, (None, why not) otherwise (nothing changed then)."""
    name = node.inputs[k]
    if name in graph.params:
        w = graph.params[name]
        w_new = (np.asarray(w, np.float64) * feature_factor(w.shape, s, axis, group)).astype(
            w.dtype
        )
        return write_param(graph, node, k, w_new, hint), None
    fill = fill_of(graph, name)
    if fill is None:
        return None, f"{node.name}'s weight '{name}' is not a constant"
    vec = np.asarray(fill.vec, np.float64) * feature_factor(fill.shape, s, axis, group)
    if vec.size * 2 > fill.size:
        return None, (
            f"{node.name}'s weight '{name}' is a {fill.node.op} fill {format_shape(fill.shape)}: "
            f"the scaled weight would need {vec.size:,} of its {fill.size:,} values stored "
            "(materialise it with max_constant_bytes)"
        )
    return _write_fill(graph, node, k, fill, vec, hint), None


# ------------------------------------------------------------------------ the fold
def fold_into_producer(
    graph: Graph, x: str, chain: list[Node], s, t, report: PassReport, label: str
) -> str | None:
    """Fold y = s * x + t, computed by the nodes `chain` (chain[0] reads x, chain[-1] writes y =
    chain[-1].outputs[0], each node the only reader of the one before), into x's producer.
    None when done (the chain is gone, the producer writes y, the report says so), else why not
    (nothing changed)."""
    prod = graph.producer(x)
    if prod is None:
        kind = "graph input" if x in graph.inputs else "parameter"
        return f"its input '{x}' is a {kind}"
    busy = other_uses(graph, x, chain[0])
    if busy:
        return f"{prod.name} output {busy}"
    if prod.op == "WSConv":
        hint = (
            "fold-constants turns it into a plain Conv first"
            if prod.inputs[1] in graph.params
            else f"its kernel '{prod.inputs[1]}' is not a constant, so it stays a WSConv"
        )
        return f"{prod.name} is a WSConv: standardizing its weight would undo the scale ({hint})"
    if prod.outputs.index(x) != 0:
        return f"'{x}' is not the main output of {prod.name} ({prod.op})"
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    rank = len(graph.values[x].shape)
    if prod.op in ("Conv", "ConvTranspose"):
        return _into_conv(graph, prod, x, chain, s, t, report, label)
    if prod.op == "Gemm":
        return _into_gemm(graph, prod, x, chain, s, t, rank, report, label)
    if prod.op == "BatchNormalization":
        return _into_bn(graph, prod, x, chain, s, t, report, label)
    if prod.op == "MatMul":
        return _into_matmul(graph, prod, x, chain, s, t, report, label)
    if prod.op == "Add":
        return _into_matmul_add(graph, prod, x, chain, s, t, report, label)
    return (
        f"{prod.name} is a {prod.op}, not a Conv, ConvTranspose, Gemm, MatMul(+Add) or "
        "BatchNormalization"
    )


def _bias(
    graph: Graph, node: Node, k: int, size: int, what: str
) -> tuple[np.ndarray | None, str | None]:
    """The node's optional k-th input as a constant (a parameter, or a small constant sub-graph
    such as a ConstantOfShape bias), (None, None) when absent, (None, why) when not constant."""
    if k >= len(node.inputs) or not node.inputs[k]:
        return None, None
    c = constant_value(graph, node.inputs[k], size)
    if c is None:
        return None, f"{node.name}'s {what} '{node.inputs[k]}' is not a constant"
    return c, None


def _into_conv(graph, prod, x, chain, s, t, report, label) -> str | None:
    b, why = _bias(graph, prod, 2, s.shape[0], "bias")
    if why:
        return why
    group = resolved_attrs(graph, prod)["group"]
    dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
    note, why = _scale_weight(
        graph, prod, 1, s, 0 if prod.op == "Conv" else 1, group, _hint(prod, 1)
    )
    if why:
        return why
    b_new = s * (0.0 if b is None else np.asarray(b, np.float64)) + t
    notes = [note, write_param(graph, prod, 2, b_new.astype(dtype), f"{prod.name}.bias_bn")]
    _finish(graph, prod, x, chain, report, label, notes)
    return None


def _into_gemm(graph, prod, x, chain, s, t, rank, report, label) -> str | None:
    if rank != 2:
        return f"{prod.name} (Gemm) output has rank {rank}"
    attrs = resolved_attrs(graph, prod)
    c, why = _bias(graph, prod, 2, s.shape[0], "C")
    if why:
        return why
    c64 = np.zeros(1) if c is None else float(attrs["beta"]) * np.asarray(c, np.float64)
    c_new = s * c64 + t
    if c is not None and not broadcasts_to(c_new.shape, graph.values[prod.outputs[0]].shape):
        return (
            f"{prod.name}'s C {format_shape(np.shape(c))} does not broadcast with "
            "the per-feature shift"
        )
    dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
    note, why = _scale_weight(graph, prod, 1, s, 0 if attrs["transB"] else 1, 1, _hint(prod, 1))
    if why:
        return why
    notes = [note, write_param(graph, prod, 2, c_new.astype(dtype), f"{prod.name}.C_bn")]
    prod.attrs["beta"] = 1.0
    _finish(graph, prod, x, chain, report, label, notes)
    return None


def _into_bn(graph, prod, x, chain, s, t, report, label) -> str | None:
    # s * (gamma1 (x - m1) / sd1 + beta1) + t: gamma1' = s gamma1, beta1' = s beta1 + t.
    limit = s.shape[0]
    gamma1, beta1 = (constant_value(graph, prod.inputs[k], limit) for k in (1, 2))
    if gamma1 is None or beta1 is None:
        k = 1 if gamma1 is None else 2
        return f"{prod.name}'s {('scale', 'B')[k - 1]} '{prod.inputs[k]}' is not a constant"
    if len(prod.outputs) > 1:
        return f"{prod.name} has training outputs"
    dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
    notes = [
        write_param(
            graph,
            prod,
            1,
            (s * np.asarray(gamma1, np.float64)).astype(dtype),
            f"{prod.inputs[1]}_bn",
        ),
        write_param(
            graph,
            prod,
            2,
            (s * np.asarray(beta1, np.float64) + t).astype(dtype),
            f"{prod.inputs[2]}_bn",
        ),
    ]
    _finish(graph, prod, x, chain, report, label, notes)
    return None


def _matmul_weight_ok(graph: Graph, mm: Node, out_rank: int) -> str | None:
    """Why the MatMul's second input is not a (K, F) weight of a 2-D output, else None."""
    b = graph.values.get(mm.inputs[1])
    if mm.inputs[1] not in graph.params and fill_of(graph, mm.inputs[1]) is None:
        return f"{mm.name}'s weight '{mm.inputs[1]}' (second input) is not a constant"
    if b is None or b.shape is None or len(b.shape) != 2 or out_rank != 2:
        out = graph.values[mm.outputs[0]].shape
        return (
            f"the affine map is per axis-1 feature but {mm.name} (MatMul) output "
            f"{format_shape(out)} has its features on the last axis"
        )
    return None


def _into_matmul(graph, mm, x, chain, s, t, report, label) -> str | None:
    why = _matmul_weight_ok(graph, mm, len(graph.values[mm.outputs[0]].shape))
    if why:
        return why
    if "Add" not in ops.all_specs():
        return "op 'Add' is not in the op table"
    note, why = _scale_weight(graph, mm, 1, s, 1, 1, _hint(mm, 1))  # B is (K, F)
    if why:
        return why
    dtype = np.dtype(graph.values[mm.outputs[0]].dtype)
    shift = graph.fresh_name(f"{chain[0].name}.shift")
    graph.add_param(shift, t.astype(dtype))
    y = chain[-1].outputs[0]
    after = after_removal(graph, chain)
    shape = graph.values[y].shape
    _remove_chain(graph, chain)
    add = graph.add_node(
        "Add", [x, shift], name=graph.fresh_name(f"{chain[0].name}_bias"), outputs=[y], before=after
    )
    graph.values[y].shape = graph.values[y].shape or shape
    did(report, f"folded {label} into {mm.name} (MatMul) and a bias {add.name} (Add)", [note])
    return None


def _into_matmul_add(graph, add, x, chain, s, t, report, label) -> str | None:
    prods = [graph.producer(i) for i in add.inputs]
    mm_k = next((k for k, p in enumerate(prods) if p is not None and p.op == "MatMul"), None)
    if mm_k is None or len(add.inputs) != 2:
        return f"{add.name} (Add) does not add a bias to a MatMul"
    mm = prods[mm_k]
    c = graph.params.get(add.inputs[1 - mm_k])
    if c is None:
        return f"{add.name} adds '{add.inputs[1 - mm_k]}', which is not a constant, to {mm.name}"
    busy = other_uses(graph, mm.outputs[0], add)
    if busy:
        return f"{mm.name} output {busy}"
    y_shape = graph.values[add.outputs[0]].shape
    why = _matmul_weight_ok(graph, mm, len(y_shape))
    if why:
        return why
    c_new = (s * np.asarray(c, np.float64) + t).astype(c.dtype)
    if not broadcasts_to(c_new.shape, y_shape) or not broadcasts_to(
        c.shape, graph.values[mm.outputs[0]].shape
    ):
        return (
            f"{add.name}'s bias {format_shape(c.shape)} does not broadcast to "
            f"{format_shape(y_shape)} per feature"
        )
    note, why = _scale_weight(graph, mm, 1, s, 1, 1, _hint(mm, 1))
    if why:
        return why
    notes = [note, write_param(graph, add, 1 - mm_k, c_new, f"{add.inputs[1 - mm_k]}_bn")]
    _finish(
        graph,
        add,
        x,
        chain,
        report,
        label,
        notes,
        what=f"{mm.name} (MatMul) and its bias {add.name} (Add)",
    )
    return None


# ------------------------------------------------------------------------ helpers
def _hint(node: Node, k: int) -> str:
    return f"{node.inputs[k]}_bn"


def broadcasts_to(small: tuple, big: tuple) -> bool:
    """Whether an array of shape `small` broadcasts against `big` without changing `big`."""
    if len(small) > len(big):
        return False
    try:
        return broadcast(tuple(big), tuple(small)) == tuple(big)
    except Exception:  # ShapeError: shapes that do not broadcast at all
        return False


def _remove_chain(graph: Graph, chain: list[Node]) -> None:
    """Remove the chain and its outputs' values (the last one's name is written anew by the
    caller: its readers keep reading it)."""
    for n in chain:
        graph.remove_node(n)
    for n in chain:
        graph.values.pop(n.outputs[0], None)


def _finish(
    graph: Graph,
    prod: Node,
    x: str,
    chain: list[Node],
    report: PassReport,
    label: str,
    notes: list[str | None],
    what: str | None = None,
) -> None:
    """Remove the folded chain; its producer writes the chain's output (a graph output name
    survives)."""
    y = chain[-1].outputs[0]
    shape = graph.values[y].shape
    _remove_chain(graph, chain)
    graph.rename_value(x, y)
    graph.values[y].shape = graph.values[y].shape or shape
    did(report, f"folded {label} into {what or f'{prod.name} ({prod.op})'}", notes)


def did(report: PassReport, line: str, notes: list[str | None]) -> None:
    """Report a change, with the copy-on-write notes that apply."""
    extra = [n for n in notes if n]
    report.did(line + (f" ({'; '.join(extra)})" if extra else ""))
