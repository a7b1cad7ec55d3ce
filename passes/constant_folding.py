"""fold-constants: evaluate what does not depend on the graph inputs, once, at compile time.

Rewrites, in one sweep in topological order (so a chain folds link by link):
- a node whose inputs are all parameters (omitted optional inputs allowed) is run with its
  runtime kernel (`runtime.kernels.get_kernel`, inference mode) and its outputs become parameters
  of the same names, so no reader needs rewiring: e.g. the ReduceMean -> Sub -> Mul -> ReduceMean
  -> Add -> Sqrt -> Div chain an exporter writes for weight standardization of a constant kernel;
- `WSConv(X, W, B)` with a constant W becomes `Conv(X, W_hat, B)` with
  W_hat = (W - mean_k) / sqrt(var_k + eps) per output map k (biased variance over input maps and
  taps; docs/formulas.md), computed in float64 and cast back. Afterwards `fold-batchnorm` may
  scale the plain Conv, which it must never do to a WSConv (standardization would undo the scale);
- `Shape(x)` of a value whose shape is fully static becomes the constant int64 vector
  shape[start:end] (Python slicing clamps exactly like ONNX's `start`/`end`);
- a Reshape / Flatten / Squeeze / Unsqueeze / Expand of a `ConstantOfShape` fill, with constant
  shape arguments and a static result shape, becomes `ConstantOfShape(result shape)` with the same
  value (the fill is the same whatever the layout): the ONNX zoo's light Inception v1 reshapes its
  ConstantOfShape classifier weight this way. The result stays a node, so its size does not matter;
- shape arithmetic on partly dynamic shapes (`passes.shape_arith`): Gather/Slice/Concat/... of
  `Shape(x)` entries that are all static become constants, and a Reshape target made of static
  entries and of its own input's dims at their own position becomes a constant with 0 ("copy")
  there: `x.view(x.size(0), -1)` -> Reshape(x, [0, -1]); one other dynamic entry becomes -1
  (`y.view(x.size(0), 16)` -> Reshape(y, [-1, 16])). Shapes a rewritten target makes static
  are propagated to the nodes after it in the same sweep, so a Shape further down folds too.
Parameters that only folded nodes read are dropped at the end.

It must NOT fold:
- a node whose output is a graph output (the output stays computed by a node; some runtimes
  reject a graph output that is an initializer);
- a mode-dependent op (BatchNormalization, Dropout): its value depends on the mode the graph runs
  in; `fold-batchnorm` and `drop-dropout` handle them for inference;
- an Opaque node or an op without a kernel (nothing can evaluate it);
- a result much bigger than its inputs. The limit: a result of more than
  max(GROWTH_LIMIT x (elements of its inputs), SMALL_RESULT) elements stays a node, so
  ConstantOfShape(shape=[64, 256, 56, 56]) or an Expand of a scalar to a feature map is not turned
  into megabytes of initializer; results of up to SMALL_RESULT elements always fold.
  Opt-in materialisation (`max_constant_bytes`, `optimize(..., max_constant_bytes=N)`): a result
  of at most N bytes folds whatever its growth. That is what onnxsim / onnxslim / onnxruntime do
  to the zoo's ConstantOfShape weights: every weight becomes an initializer (a file of 3.5-550 MB
  instead of 0.1 MB), and then BN folds into the Conv as plain weights, so no fill nodes remain.
"""

from __future__ import annotations

import numpy as np

from graphnet import ops
from graphnet.dims import is_static, is_symbolic
from graphnet.errors import GraphNetError
from graphnet.ir import Graph, Node, Value, format_shape
from graphnet.passes._graph import (
    drop_params_made_dead,
    params_read,
    resolved_attrs,
    write_param,
)
from graphnet.passes.base import PassReport, register_pass
from graphnet.passes.shape_arith import MOVERS, ShapeSymbols

__all__ = ["fold_constants", "standardize_weight", "GROWTH_LIMIT", "SMALL_RESULT", "FILL_MOVERS"]

GROWTH_LIMIT = 2
"""A folded result may have at most this many times the elements of the node's inputs..."""
SMALL_RESULT = 1024
"""...unless it has at most this many elements (shape vectors, scalars, small tables)."""
FILL_MOVERS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")
"""Ops whose result, on a constant fill, is the same fill in another (static) shape."""


def standardize_weight(w: np.ndarray, eps: float) -> np.ndarray:
    """W_hat = (W - mean_k) / sqrt(var_k + eps) per output map k = axis 0, mean and biased
    variance over every other axis; computed in float64, returned in W's dtype."""
    w64 = np.asarray(w, dtype=np.float64)
    axes = tuple(range(1, w64.ndim))
    mean = w64.mean(axis=axes, keepdims=True)
    var = ((w64 - mean) ** 2).mean(axis=axes, keepdims=True)
    return ((w64 - mean) / np.sqrt(var + float(eps))).astype(np.asarray(w).dtype)


@register_pass("fold-constants")
def fold_constants(
    graph: Graph, report: PassReport, *, max_constant_bytes: int | None = None
) -> None:
    """Evaluate nodes whose inputs are all constants, turn WSConv with a constant kernel into
    Conv, and static Shape into a constant (results much bigger than their inputs are kept
    unless `max_constant_bytes` allows them)."""
    from graphnet.runtime.kernels import has_kernel

    read_before, existed_before = params_read(graph), set(graph.params)
    symbols = ShapeSymbols()
    refined: set[str] = set()  # values whose shape this sweep made better known
    for node in graph.nodes:  # a snapshot: folding a node does not disturb the loop
        if refined:
            _refine_shapes(graph, node, refined)
        if node.op == "WSConv":
            _wsconv_to_conv(graph, node, report)
            continue
        if node.op == "Shape":
            if not _fold_shape(graph, node, report):
                symbols.shape_of(graph, node)
            continue
        if node.op == "Reshape" and node.inputs[1] in symbols.vectors:
            if symbols.reshape_target(graph, node, report):
                refined.add(node.outputs[0])
        if node.op in MOVERS and any(i in symbols.vectors for i in node.inputs):
            vec = symbols.move(graph, node)
            if (
                vec is not None
                and symbols.is_constant(vec)
                and _vector_to_param(graph, node, vec, report)
            ):
                del symbols.vectors[node.outputs[0]]  # a plain constant from now on
            continue
        if node.op in FILL_MOVERS and _refill(graph, node, report):
            continue
        ins = [i for i in node.inputs if i]
        if not ins or not all(i in graph.params for i in ins):
            continue
        spec = ops.get(node.op)
        if node.op == "Opaque" or not has_kernel(node.op):
            what = node.attrs.get("op_type") if node.op == "Opaque" else node.op
            report.declined(
                f"{node.name}: all inputs are constant, but there is no kernel for {what}"
            )
            continue
        if spec.mode_dependent:
            report.declined(
                f"{node.name}: all inputs are constant, but {node.op} depends on the run mode"
            )
            continue
        _fold_node(graph, node, report, max_constant_bytes)
    dead = drop_params_made_dead(graph, read_before, existed_before)
    if dead:
        report.did(f"dropped {len(dead)} parameter(s) only folded nodes read: {', '.join(dead)}")


def _refine_shapes(graph: Graph, node: Node, refined: set[str]) -> None:
    """Re-infer `node`'s output shapes when an input's shape got better known in this sweep (a
    Reshape target that became constant: everything after it had dynamic dims), so that a Shape
    further down sees static dims. Only a strictly better-known shape of the same rank is kept."""
    if not any(i in refined for i in node.inputs):
        return
    try:
        types = ops.infer(
            node,
            [graph.values.get(i) if i else None for i in node.inputs],
            [graph.params.get(i) if i else None for i in node.inputs],
        )
    except GraphNetError:
        return
    for o, (shape, _dtype) in zip(node.outputs, types, strict=True):
        v = graph.values.get(o) if o else None
        if v is not None and shape is not None and _better(shape, v.shape):
            v.shape = tuple(shape)
            refined.add(o)


def _better(new: tuple, old: tuple | None) -> bool:
    """A re-inferred shape says more than the old one: same rank, every known dim kept (a
    symbol may only become static), and more dims static or symbolic than before."""
    if old is None:
        return True
    if len(new) != len(old):
        return False
    for n, o in zip(new, old, strict=True):
        if o is not None and not (n == o or (is_symbolic(o) and is_static(n))):
            return False

    def known(shape: tuple) -> int:
        return sum(2 if is_static(d) else 1 if is_symbolic(d) else 0 for d in shape)

    return known(new) > known(old)


def _keeps_output(graph: Graph, node: Node, report: PassReport, what: str) -> bool:
    outs = [o for o in node.outputs if o in graph.outputs]
    if outs:
        report.declined(f"{node.name}: {what}, but its output '{outs[0]}' is a graph output")
        return True
    return False


def _fold_node(graph: Graph, node: Node, report: PassReport, max_bytes: int | None = None) -> bool:
    from graphnet.runtime.kernels import get_kernel

    if _keeps_output(graph, node, report, "all inputs are constant"):
        return False
    args = [graph.params[i] if i else None for i in node.inputs]
    n_in = sum(a.size for a in args if a is not None)
    kern = get_kernel(node.op, node.name)
    attrs = resolved_attrs(graph, node)
    if kern.context:
        attrs.update(training=False, rng=np.random.default_rng(0))
    # The size limit is checked on the inferred shapes first, so a huge result is never built.
    limit = max(GROWTH_LIMIT * n_in, SMALL_RESULT)
    outs_v = [graph.values.get(o) for o in node.outputs if o]
    n_out = _static_size(outs_v)
    if n_out is not None and n_out > limit and not _allowed_bytes(outs_v, max_bytes):
        report.declined(
            f"{node.name}: all inputs are constant, but its result ({n_out:,} elements) would be "
            f"more than {limit:,} (max({GROWTH_LIMIT} x {n_in:,} input elements, {SMALL_RESULT}))"
            + ("" if max_bytes is None else f" and more than max_constant_bytes {max_bytes:,}")
        )
        return False
    try:
        result = kern.fn(*args, **attrs)
    except (GraphNetError, ValueError, TypeError, ArithmeticError) as exc:
        report.declined(
            f"{node.name}: all inputs are constant, but its kernel failed: "
            f"{type(exc).__name__}: {exc}"
        )
        return False
    outs = [np.asarray(r) for r in (result if isinstance(result, (tuple, list)) else [result])]
    n_out = sum(o.size for o in outs)
    if n_out > limit and (max_bytes is None or sum(o.nbytes for o in outs) > max_bytes):
        report.declined(
            f"{node.name}: all inputs are constant, but its result ({n_out:,} elements) is more "
            f"than {limit:,} (max({GROWTH_LIMIT} x {n_in:,} input elements, {SMALL_RESULT}))"
        )
        return False
    for name, arr in zip(node.outputs, outs, strict=True):
        v = graph.values.get(name)
        if name and v is not None and (v.dtype != str(arr.dtype) or not _fits(v.shape, arr.shape)):
            report.declined(
                f"{node.name}: its kernel returned {arr.dtype}{format_shape(arr.shape)} for "
                f"'{name}', but the graph says {v.dtype}{format_shape(v.shape)}"
            )
            return False
    _to_params(graph, node, outs)
    report.did(
        f"folded {node.name} ({node.op}) into constant(s) {', '.join(o for o in node.outputs if o)}"
    )
    return True


def _refill(graph: Graph, node: Node, report: PassReport) -> bool:
    """`node` (a FILL_MOVER) reads a ConstantOfShape fill: make it a ConstantOfShape itself."""
    src = node.inputs[0]
    fill = graph.producer(src)
    if fill is None or fill.op != "ConstantOfShape":
        return False
    if not all(i in graph.params for i in node.inputs[1:] if i):
        return False
    out = graph.values[node.outputs[0]]
    if out.shape is None or not all(is_static(d) for d in out.shape):
        return False
    if _keeps_output(graph, node, report, f"it {node.op.lower()}s the fill '{src}'"):
        return False
    value = np.asarray(resolved_attrs(graph, fill)["value"])
    if str(value.dtype) != out.dtype:
        return False
    after = graph.after(node)
    graph.remove_node(node)
    graph.values.pop(out.name, None)
    shape = graph.fresh_name(f"{node.name}.shape")
    graph.add_param(shape, np.array(out.shape, np.int64))
    graph.add_node(
        "ConstantOfShape",
        [shape],
        {"value": value},
        name=graph.fresh_name(node.name),
        outputs=[out.name],
        before=after,
    )
    gone = ""
    if not graph.num_readers(src) and src not in graph.outputs:
        graph.remove_node(fill)
        gone = f"; {fill.name} is no longer read and was removed"
    report.did(
        f"{node.name} ({node.op} of the fill '{src}') became "
        f"ConstantOfShape{format_shape(out.shape)}{gone}"
    )
    return True


def _vector_to_param(graph: Graph, node: Node, vec: np.ndarray, report: PassReport) -> bool:
    out = node.outputs[0]
    if _keeps_output(graph, node, report, f"its shape entries {vec.tolist()} are all static"):
        return False
    arr = np.array(vec.tolist(), dtype=np.dtype(graph.values[out].dtype))
    _to_params(graph, node, [arr])
    report.did(
        f"folded {node.name} ({node.op} of static shape entries) into the constant {arr.tolist()}"
    )
    return True


def _allowed_bytes(values: list[Value | None], max_bytes: int | None) -> bool:
    """Whether the opt-in materialisation allows results of these (static) shapes."""
    if max_bytes is None:
        return False
    total = 0
    for v in values:
        if v is None or v.shape is None or not all(is_static(d) for d in v.shape):
            return False
        total += int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize
    return total <= max_bytes


def _static_size(values: list[Value | None]) -> int | None:
    total = 0
    for v in values:
        if v is None or v.shape is None or not all(is_static(d) for d in v.shape):
            return None
        total += int(np.prod(v.shape, dtype=np.int64))
    return total


def _fits(declared: tuple | None, actual: tuple) -> bool:
    if declared is None:
        return True
    return len(declared) == len(actual) and all(
        not is_static(d) or d == a for d, a in zip(declared, actual, strict=True)
    )


def _fold_shape(graph: Graph, node: Node, report: PassReport) -> bool:
    x = graph.values.get(node.inputs[0])
    if x is None or x.shape is None or not all(is_static(d) for d in x.shape):
        return False  # a dynamic shape is only known at run time: nothing to decline
    if _keeps_output(graph, node, report, f"the shape {format_shape(x.shape)} is static"):
        return False
    attrs = resolved_attrs(graph, node)
    start = attrs.get("start", 0)
    end = attrs.get("end")
    dims = np.asarray(list(x.shape)[start:end], dtype=np.int64)
    _to_params(graph, node, [dims])
    report.did(
        f"folded {node.name} (Shape of {format_shape(x.shape)}) into the constant {dims.tolist()}"
    )
    return True


def _to_params(graph: Graph, node: Node, arrays: list[np.ndarray]) -> None:
    """Replace `node` by parameters named like its outputs, holding `arrays` (its readers read
    them unchanged)."""
    graph.remove_node(node)
    for name, arr in zip(node.outputs, arrays, strict=True):
        if name:
            graph.values.pop(name, None)
            graph.add_param(name, arr)


def _wsconv_to_conv(graph: Graph, node: Node, report: PassReport) -> None:
    w_name = node.inputs[1]
    if w_name not in graph.params:
        report.declined(
            f"{node.name}: WSConv's kernel '{w_name}' is not a constant, so it cannot be "
            "standardized once"
        )
        return
    eps = resolved_attrs(graph, node)["epsilon"]
    w_hat = standardize_weight(graph.params[w_name], eps)
    note = write_param(graph, node, 1, w_hat, f"{w_name}_std")
    node.op = "Conv"
    node.attrs.pop("epsilon", None)
    report.did(
        f"{node.name}: WSConv -> Conv with the standardized constant kernel (eps {eps:g})"
        + (f"; {note}" if note else "")
    )
