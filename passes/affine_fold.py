"""One fold engine: a per-channel affine map y = s * x + t folded into a neighbouring linear op.

BatchNormalization at inference (s = gamma / sqrt(var + eps), t = beta - mean * s), classic
Dropout at inference (s = keep, no t: a pure scale) and a chain of Mul / Add / Sub / Div by
per-channel constants are all this map (an `Affine`). fold-batchnorm, drop-dropout and
fold-affine call `fold_into_producer` and `fold_into_consumer`; the per-op weight maths are the
pure functions of `passes.affine_maths` (formulas in docs/formulas.md), computed in float64 and
cast back. Both return `Folded` (what the map went into, and copy-on-write notes) or a `str`: why
it did not fold, with nothing changed. Passes word their report lines from either.

Into the PRODUCER P of x (x read only by the folded node(s), not a graph output), output feature c
on axis 1 of x; P then writes the folded chain's output y:
- Conv, W (M, C/g, k...): W' = W * s on axis 0, b' = s * b + t;
- ConvTranspose, W (C, M/g, k...): output channel g*M/g + j is column j of row block g;
- Gemm: a pure scale multiplies alpha and beta (no parameter changes); else, for a 2-D output,
  B is scaled on its feature axis (1, or 0 if transB), C' = s * (beta * C) + t, beta' = 1;
- MatMul(A, B): a pure scale multiplies its constant operand (B, else A); else B must be a
  constant (K, F) matrix of a 2-D product: B' = B * s, and a new `Add(t)` writes y;
- Add(MatMul(A, B), c), the MatMul feeding only the Add: B' = B * s, c' = s * c + t;
- BatchNormalization: gamma' = s * gamma, beta' = s * beta + t.
A weight may be a parameter or a fill (`passes._fills`: scaled as a fill, not materialised).

Into the CONSUMER N, the only reader of y (not a graph output); N then reads x:
- Conv: W' = W * s per input channel, b' = b + sum W * t; with a shift t it must have no padding
  (a padded zero of y is not s * 0 + t); a pure scale folds through padding (s * 0 = 0);
- ConvTranspose, pure scale only: W' = W * s on its input-channel axis 0 (with a shift, its
  border outputs see fewer taps);
- Gemm: a pure scale multiplies alpha (y is A or B) or beta (y is C); else y must be A with
  transA = 0: B scaled on its K axis, C' = beta * C + alpha * t @ B', beta' = 1;
- MatMul: a pure scale multiplies the constant other operand; else a 2-D y @ constant 2-D B:
  B' = s[:, None] * B, plus a new Add(t @ B).
With a per-channel map the consumer must read y as its data input (input 0) only.

Never: into a WSConv (standardizing its weight would undo the scale) or a following
BatchNormalization; through a value another node reads or that is a graph output; a weight
another node also reads is not changed in place (the folded node gets a copy; the note says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from graphnet.ir import Graph, Node, Value, format_shape
from graphnet.ops._shapes import broadcast
from graphnet.passes._fills import fill_of, scale_weight
from graphnet.passes._graph import (
    after_removal,
    constant_value,
    other_uses,
    resolved_attrs,
    sole_reader,
    write_param,
)
from graphnet.passes.affine_maths import fold_affine_into_conv, fold_affine_into_matrix, shift_bias
from graphnet.passes.base import PassReport

__all__ = [
    "Affine",
    "Folded",
    "fold_into_producer",
    "fold_into_consumer",
    "broadcasts_to",
    "did",
    "LINEAR_PRODUCERS",
]

LINEAR_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")
"""Ops a per-feature affine map folds into (plus Add(MatMul, c), a MatMul's bias)."""


@dataclass(frozen=True)
class Affine:
    """y = s * x + t per channel (axis 1), in float64. `s` holds one number per channel, or one
    number for all (shape ()); `t` likewise, or None: a pure scale. `tag` names the copies a fold
    makes of shared weights (`w_bn`, `w_keep`)."""

    s: np.ndarray
    t: np.ndarray | None = None
    tag: str = "bn"

    @property
    def uniform_scale(self) -> bool:
        """One factor for every channel and no shift (classic dropout's keep)."""
        return self.t is None and np.ndim(self.s) == 0

    def per_feature(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(s, t) as (n,) float64 vectors (t None for a pure scale)."""
        s = np.broadcast_to(np.asarray(self.s, np.float64), (n,))
        t = None if self.t is None else np.broadcast_to(np.asarray(self.t, np.float64), (n,))
        return s, t


class Folded(NamedTuple):
    """A fold that was done: what the map went into ("conv1 (Conv)", ...) and the copy-on-write
    notes for the report."""

    into: str
    notes: list[str]


def _folded(into: str, notes: list[str | None]) -> Folded:
    return Folded(into, [n for n in notes if n])


# ------------------------------------------------------------------------- into the producer
def fold_into_producer(graph: Graph, x: str, chain: list[Node], affine: Affine) -> Folded | str:
    """Fold y = s * x + t, computed by the nodes `chain` (chain[0] reads x, chain[-1] writes y =
    chain[-1].outputs[0], each node the only reader of the one before), into x's producer.
    Folded when done (the chain is gone, the producer writes y), else why not (nothing
    changed)."""
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
    rule = _PRODUCER_RULES.get(prod.op)
    if rule is None:
        return (
            f"{prod.name} is a {prod.op}, not a Conv, ConvTranspose, Gemm, MatMul(+Add) or "
            "BatchNormalization"
        )
    return rule(graph, prod, x, chain, affine)


def _features(graph: Graph, name: str, axis: int, factor: int = 1) -> int | None:
    """The static size of axis `axis` of value `name` times `factor`, or None."""
    v = graph.values.get(name)
    if v is None or v.shape is None or len(v.shape) <= axis or not isinstance(v.shape[axis], int):
        return None
    return int(v.shape[axis]) * factor


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


def _not_constant(node: Node, k: int, what: str) -> str:
    return f"{node.name}'s {what} '{node.inputs[k]}' is not a constant"


def _into_conv(graph: Graph, prod: Node, x: str, chain: list[Node], a: Affine) -> Folded | str:
    group = resolved_attrs(graph, prod)["group"]
    # Output features: W is (M, C/g, k...) for Conv, (C, M/g, k...) for ConvTranspose.
    n = _features(graph, prod.inputs[1], *((0, 1) if prod.op == "Conv" else (1, group)))
    if n is None:
        return _not_constant(prod, 1, "weight")
    b, why = _bias(graph, prod, 2, n, "bias")
    if why:
        return why
    s, t = a.per_feature(n)
    axis = 0 if prod.op == "Conv" else 1
    note, why = scale_weight(graph, prod, 1, s, axis, group, _hint(prod, 1, a))
    if why:
        return why
    notes = [note]
    b_new = shift_bias(b, s, t)
    if b_new is not None:
        dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
        hint = f"{prod.name}.bias_{a.tag}"
        notes.append(write_param(graph, prod, 2, b_new.astype(dtype), hint))
    return _finish(graph, prod, x, chain, notes)


def _into_gemm(graph: Graph, prod: Node, x: str, chain: list[Node], a: Affine) -> Folded | str:
    attrs = resolved_attrs(graph, prod)
    if a.uniform_scale:  # alpha A B + beta C scales as a whole: (k alpha) A B + (k beta) C
        prod.attrs["alpha"] = float(attrs["alpha"]) * float(a.s)
        prod.attrs["beta"] = float(attrs["beta"]) * float(a.s)
        return _finish(graph, prod, x, chain, [])
    out = graph.values[prod.outputs[0]].shape
    rank = None if out is None else len(out)
    if rank != 2:
        return f"{prod.name} (Gemm) output has rank {rank}"
    n = _features(graph, prod.inputs[1], 0 if attrs["transB"] else 1)
    if n is None:
        return _not_constant(prod, 1, "weight")
    c, why = _bias(graph, prod, 2, n, "C")
    if why:
        return why
    s, t = a.per_feature(n)
    c_new = shift_bias(
        None if c is None else float(attrs["beta"]) * np.asarray(c, np.float64), s, t
    )
    if c is not None and c_new is not None and not broadcasts_to(c_new.shape, out):
        return (
            f"{prod.name}'s C {format_shape(np.shape(c))} does not broadcast with "
            "the per-feature shift"
        )
    note, why = scale_weight(graph, prod, 1, s, 0 if attrs["transB"] else 1, 1, _hint(prod, 1, a))
    if why:
        return why
    notes = [note]
    if c_new is not None:
        dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
        notes.append(write_param(graph, prod, 2, c_new.astype(dtype), f"{prod.name}.C_{a.tag}"))
        prod.attrs["beta"] = 1.0
    return _finish(graph, prod, x, chain, notes)


def _into_bn(graph: Graph, prod: Node, x: str, chain: list[Node], a: Affine) -> Folded | str:
    # s * (gamma1 (x - m1) / sd1 + beta1) + t: gamma1' = s gamma1, beta1' = s beta1 + t.
    n = _features(graph, prod.inputs[1], 0)
    gamma1, beta1 = (
        None if n is None else constant_value(graph, prod.inputs[k], n) for k in (1, 2)
    )
    if gamma1 is None or beta1 is None:
        k = 1 if gamma1 is None else 2
        return _not_constant(prod, k, ("scale", "B")[k - 1])
    if len(prod.outputs) > 1:
        return f"{prod.name} has training outputs"
    s, t = a.per_feature(len(gamma1))
    dtype = np.dtype(graph.values[prod.outputs[0]].dtype)
    gamma_new = s * np.asarray(gamma1, np.float64)
    beta_new = shift_bias(np.asarray(beta1, np.float64), s, t)
    notes = [
        write_param(graph, prod, 1, gamma_new.astype(dtype), f"{prod.inputs[1]}_{a.tag}"),
        write_param(graph, prod, 2, beta_new.astype(dtype), f"{prod.inputs[2]}_{a.tag}"),
    ]
    return _finish(graph, prod, x, chain, notes)


def _matmul_weight_ok(graph: Graph, mm: Node, out_rank: int | None) -> str | None:
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


def _scale_constant_operand(graph: Graph, node: Node, k: int, a: Affine) -> str | None:
    """A pure scale into operand k of a product (linear in each operand): the operand times s."""
    arr = graph.params[node.inputs[k]]
    scaled = np.asarray(arr, np.float64) * float(a.s)
    return write_param(graph, node, k, scaled, f"{node.inputs[k]}_{a.tag}")


def _per_weight_column(
    graph: Graph, mm: Node, out_shape: tuple | None, a: Affine
) -> tuple[np.ndarray, np.ndarray | None] | str:
    """(s, t) of `a` per column of MatMul `mm`'s constant weight B (K, F), or why not (B not a
    usable constant for an output of `out_shape`)."""
    why = _matmul_weight_ok(graph, mm, None if out_shape is None else len(out_shape))
    if why:
        return why
    n = _features(graph, mm.inputs[1], 1)
    if n is None:
        return _not_constant(mm, 1, "weight")
    return a.per_feature(n)


def _into_matmul(graph: Graph, mm: Node, x: str, chain: list[Node], a: Affine) -> Folded | str:
    if a.uniform_scale:  # (k A) B = A (k B): either constant operand takes the factor
        k = next((k for k in (1, 0) if mm.inputs[k] in graph.params), None)
        if k is None:
            return f"{mm.name} (MatMul) has no constant operand to scale"
        return _finish(graph, mm, x, chain, [_scale_constant_operand(graph, mm, k, a)])
    st = _per_weight_column(graph, mm, graph.values[mm.outputs[0]].shape, a)
    if isinstance(st, str):
        return st
    s, t = st
    note, why = scale_weight(graph, mm, 1, s, 1, 1, _hint(mm, 1, a))  # B is (K, F)
    if why:
        return why
    if t is None:
        return _finish(graph, mm, x, chain, [note])
    dtype = np.dtype(graph.values[mm.outputs[0]].dtype)
    shift = graph.fresh_name(f"{chain[0].name}.shift")
    graph.add_param(shift, t.astype(dtype))
    y = chain[-1].outputs[0]
    after = after_removal(graph, chain)
    shape = graph.values[y].shape
    _remove_chain(graph, chain)
    name = graph.fresh_name(f"{chain[0].name}_bias")
    add = graph.add_node("Add", [x, shift], name=name, outputs=[y], before=after)
    graph.values[y].shape = graph.values[y].shape or shape
    return _folded(f"{mm.name} (MatMul) and a bias {add.name} (Add)", [note])


def _into_matmul_add(graph: Graph, add: Node, x: str, chain: list[Node], a: Affine) -> Folded | str:
    prods = [graph.producer(i) for i in add.inputs]
    mm_k = next((k for k, p in enumerate(prods) if p is not None and p.op == "MatMul"), None)
    mm = None if mm_k is None else prods[mm_k]
    if mm is None or mm_k is None or len(add.inputs) != 2:
        return f"{add.name} (Add) does not add a bias to a MatMul"
    c = graph.params.get(add.inputs[1 - mm_k])
    if c is None:
        return f"{add.name} adds '{add.inputs[1 - mm_k]}', which is not a constant, to {mm.name}"
    busy = other_uses(graph, mm.outputs[0], add)
    if busy:
        return f"{mm.name} output {busy}"
    y_shape = graph.values[add.outputs[0]].shape
    st = _per_weight_column(graph, mm, y_shape, a)
    if isinstance(st, str):
        return st
    s, t = st
    c_new = shift_bias(np.asarray(c, np.float64), s, t).astype(c.dtype)
    if not broadcasts_to(c_new.shape, y_shape) or not broadcasts_to(
        c.shape, graph.values[mm.outputs[0]].shape
    ):
        return (
            f"{add.name}'s bias {format_shape(c.shape)} does not broadcast to "
            f"{format_shape(y_shape)} per feature"
        )
    note, why = scale_weight(graph, mm, 1, s, 1, 1, _hint(mm, 1, a))
    if why:
        return why
    hint = f"{add.inputs[1 - mm_k]}_{a.tag}"
    notes = [note, write_param(graph, add, 1 - mm_k, c_new, hint)]
    folded = _finish(graph, add, x, chain, notes)
    return folded._replace(into=f"{mm.name} (MatMul) and its bias {add.name} (Add)")


_PRODUCER_RULES = {
    "Conv": _into_conv,
    "ConvTranspose": _into_conv,
    "Gemm": _into_gemm,
    "BatchNormalization": _into_bn,
    "MatMul": _into_matmul,
    "Add": _into_matmul_add,
}


# ------------------------------------------------------------------------- into the consumer
def fold_into_consumer(graph: Graph, node: Node, affine: Affine) -> Folded | str:
    """Fold y = s * x + t, computed by `node` (x = its input 0, y = its output 0), into the one
    node that reads y. Folded when done (`node` is gone, its reader reads x), else why not
    (nothing changed)."""
    y = node.outputs[0]
    nxt = sole_reader(graph, y)
    if isinstance(nxt, str):
        return nxt
    if nxt.inputs.count(y) != 1:
        return f"{nxt.name} ({nxt.op}) reads it twice"
    k = nxt.inputs.index(y)
    if nxt.op in ("WSConv", "BatchNormalization"):
        why = (
            "standardizing its weight would undo the scale"
            if nxt.op == "WSConv"
            else "folding would change its statistics"
        )
        return f"{nxt.name} is a {nxt.op}: {why}"
    rule = _CONSUMER_RULES.get(nxt.op)
    if rule is None:
        kinds = (
            "Conv, Gemm or MatMul"
            if affine.t is not None
            else "Conv, ConvTranspose, Gemm or MatMul"
        )
        return f"{nxt.name} is a {nxt.op}, not a {kinds}"
    if k != 0 and not (affine.uniform_scale and nxt.op in ("Gemm", "MatMul")):
        return f"{nxt.name} ({nxt.op}) reads it other than as its data input"
    result = rule(graph, nxt, k, affine)
    if isinstance(result, str):
        return result
    graph.set_input(nxt, k, node.inputs[0])
    graph.remove_node(node)
    return result


def _need_params(graph: Graph, node: Node, which: dict[int, str]) -> str | None:
    for k, what in which.items():
        if k < len(node.inputs) and node.inputs[k] and node.inputs[k] not in graph.params:
            return _not_constant(node, k, what)
    return None


def _const(graph: Graph, node: Node, k: int) -> np.ndarray | None:
    return graph.params.get(node.inputs[k]) if k < len(node.inputs) and node.inputs[k] else None


def _conv_after(graph: Graph, nxt: Node, k: int, a: Affine) -> Folded | str:
    if nxt.op == "ConvTranspose" and a.t is not None:
        return (
            f"{nxt.name} is a ConvTranspose: its border outputs see fewer taps, so t is not a "
            "per-channel bias"
        )
    why = _need_params(graph, nxt, {1: "weight", 2: "bias"})
    if why:
        return why
    attrs = resolved_attrs(graph, nxt)
    if a.t is not None and any(attrs["pads"]):
        return (
            f"{nxt.name} (Conv) has pads {list(attrs['pads'])}: its padded zeros would not be "
            f"shifted by the BN's t"
        )
    w, b = graph.params[nxt.inputs[1]], _const(graph, nxt, 2)  # the weight: checked just above
    group = attrs["group"]
    n = w.shape[0] if nxt.op == "ConvTranspose" else w.shape[1] * group  # input channels
    s, t = a.per_feature(n)
    w_new, b_new = fold_affine_into_conv(w, b, s, t, group, transpose=nxt.op == "ConvTranspose")
    notes = [write_param(graph, nxt, 1, w_new, _hint(nxt, 1, a))]
    if b_new is not None and b_new is not b:
        notes.append(write_param(graph, nxt, 2, b_new, f"{nxt.name}.bias_{a.tag}"))
    return _folded(f"{nxt.name} ({nxt.op})", notes)


def _gemm_after(graph: Graph, nxt: Node, k: int, a: Affine) -> Folded | str:
    attrs = resolved_attrs(graph, nxt)
    if a.uniform_scale:  # alpha (kA) B = (k alpha) A B; beta (k C) = (k beta) C
        key = "beta" if k == 2 else "alpha"
        nxt.attrs[key] = float(attrs[key]) * float(a.s)
        return _folded(f"{nxt.name} ({nxt.op})", [])
    why = _need_params(graph, nxt, {1: "B", 2: "C"})
    if why:
        return why
    if attrs["transA"]:
        return f"{nxt.name} (Gemm) has transA=1: the BN's channels would be its output rows"
    b, c = graph.params[nxt.inputs[1]], _const(graph, nxt, 2)  # B: checked just above
    in_axis = 1 if attrs["transB"] else 0
    s, t = a.per_feature(b.shape[in_axis])
    b_new, shift = fold_affine_into_matrix(b, s, t, in_axis=in_axis)
    notes = [write_param(graph, nxt, 1, b_new, _hint(nxt, 1, a))]
    if shift is not None:
        c64 = np.zeros(1) if c is None else float(attrs["beta"]) * np.asarray(c, np.float64)
        c_new = (c64 + float(attrs["alpha"]) * np.asarray(shift, np.float64)).astype(b.dtype)
        notes.append(write_param(graph, nxt, 2, c_new, f"{nxt.name}.C_{a.tag}"))
        nxt.attrs["beta"] = 1.0
    return _folded(f"{nxt.name} ({nxt.op})", notes)


def _matmul_after(graph: Graph, nxt: Node, k: int, a: Affine) -> Folded | str:
    if a.uniform_scale:  # A (k B) = k (A B) = (k A) B
        if nxt.inputs[1 - k] not in graph.params:
            return f"{nxt.name} (MatMul) has no constant operand to scale"
        return _folded(f"{nxt.name} ({nxt.op})", [_scale_constant_operand(graph, nxt, 1 - k, a)])
    b = _const(graph, nxt, 1)
    y = graph.values[nxt.inputs[0]].shape
    if b is None or b.ndim != 2 or y is None or len(y) != 2:
        return f"{nxt.name} (MatMul) does not multiply the 2-D BN output by a constant matrix"
    s, t = a.per_feature(b.shape[0])
    b_new, shift = fold_affine_into_matrix(b, s, t, in_axis=0)
    notes = [write_param(graph, nxt, 1, b_new, _hint(nxt, 1, a))]
    if shift is not None:
        # MatMul now writes a fresh value; a new Add(t @ B) writes the old name (its readers and a
        # graph output keep it).
        out = nxt.outputs[0]
        mm_out = graph.fresh_name(f"{nxt.name}.nobias")
        old = graph.values[out]
        after = graph.after(nxt)
        graph.set_outputs(nxt, [mm_out, *nxt.outputs[1:]])
        graph.values.pop(out, None)  # kept for its readers: the new Add writes it
        graph.values[mm_out] = Value(mm_out, old.shape, old.dtype)
        bias = graph.fresh_name(f"{nxt.name}.shift")
        graph.add_param(bias, shift)
        name = graph.fresh_name(f"{nxt.name}_bias")
        graph.add_node("Add", [mm_out, bias], name=name, outputs=[out], before=after)
    return _folded(f"{nxt.name} ({nxt.op})", notes)


_CONSUMER_RULES = {
    "Conv": _conv_after,
    "ConvTranspose": _conv_after,
    "Gemm": _gemm_after,
    "MatMul": _matmul_after,
}


# ------------------------------------------------------------------------------ helpers
def _hint(node: Node, k: int, a: Affine) -> str:
    return f"{node.inputs[k]}_{a.tag}"


def broadcasts_to(small: tuple, big: tuple | None) -> bool:
    """Whether an array of shape `small` broadcasts against `big` without changing `big`."""
    if big is None or len(small) > len(big):
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


def _finish(graph: Graph, prod: Node, x: str, chain: list[Node], notes: list[str | None]) -> Folded:
    """Remove the folded chain; its producer writes the chain's output (a graph output name
    survives)."""
    y = chain[-1].outputs[0]
    shape = graph.values[y].shape
    _remove_chain(graph, chain)
    graph.rename_value(x, y)
    graph.values[y].shape = graph.values[y].shape or shape
    return _folded(f"{prod.name} ({prod.op})", notes)


def did(report: PassReport, line: str, notes: list[str]) -> None:
    """Report a change, with the copy-on-write notes that apply."""
    report.did(line + (f" ({'; '.join(notes)})" if notes else ""))
