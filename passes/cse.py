"""cse: common-subexpression elimination: merge nodes (and parameters) that compute the same value.

Rewrites:
1. parameters with the same dtype, shape and bytes are one parameter: readers of the later ones
   read the first (bytes compared, so -0.0 and 0.0, or two NaN payloads, stay apart). Hashing
   the bytes (blake2b) of the arrays whose dtype and shape some other array shares makes this
   one pass over the data, not a comparison of every pair;
2. then, in graph order, a node with the same op, the same inputs (after step 1 and after the
   merges before it) and the same resolved attributes (defaults filled in, so `strides=[1, 1]`
   spelled out equals the default) as an earlier node is the same function of the same values:
   its outputs are replaced by the earlier node's, and it is removed. One sweep merges whole
   duplicated branches (Conv -> Relu -> Conv ...), since a merge makes the readers' inputs equal.

It must NOT merge:
- mode-dependent ops (`OpSpec.mode_dependent`: BatchNormalization updates its running statistics
  and Dropout draws a fresh mask in train mode: two such nodes are two draws / two updates);
- `Opaque` nodes (ops outside the op table: nothing proves them deterministic, e.g. RandomNormal
  or a custom op with state), declined with the reason;
- when both the kept and the removed node write graph outputs (both names must stay; declined),
  or parameters that are graph outputs. When only the removed node's output is a graph output,
  the kept node's output takes that name (graph output names never change).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from graphnet import ops
from graphnet.ir import Graph, Node
from graphnet.passes._graph import resolved_attrs
from graphnet.passes.base import PassReport, register_pass

__all__ = ["cse", "param_key", "attrs_key"]


def param_key(array: np.ndarray) -> tuple:
    """(dtype, shape, blake2b digest of the bytes): equal keys mean equal arrays, bit for bit
    (up to a 128-bit hash collision; `_dedupe_params` compares the bytes of a match anyway)."""
    a = np.ascontiguousarray(array)
    return (
        str(a.dtype),
        a.shape,
        hashlib.blake2b(a.data, digest_size=16).digest(),  # the bytes, not copied
    )


def attrs_key(value: Any) -> Any:
    """A hashable, exact form of an attribute value: arrays by dtype, shape and bytes; floats by
    their repr (-0.0 and 0.0 differ; NaN equals NaN); sequences and dicts recursively."""
    if isinstance(value, np.ndarray):
        return ("array",) + param_key(value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(attrs_key(v) for v in value)
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((k, attrs_key(v)) for k, v in value.items()))
    if isinstance(value, (float, np.floating)):
        return ("float", repr(float(value)))
    if isinstance(value, np.generic):
        return ("scalar", str(value.dtype), value.tobytes())
    return (type(value).__name__, value)


@register_pass("cse")
def cse(graph: Graph, report: PassReport) -> None:
    """Merge identical parameters (same dtype, shape, bytes) and nodes with the same op, inputs
    and attributes (deterministic, mode-independent ops only; graph output names kept)."""
    _dedupe_params(graph, report)
    _merge_nodes(graph, report)


def _dedupe_params(graph: Graph, report: PassReport) -> dict[str, str]:
    """Map every duplicate parameter to the first equal one, rewire its readers, delete it."""
    first: dict[tuple, str] = {}
    merged: dict[str, str] = {}
    # Only arrays that share a dtype and shape with another one can be equal: the rest (e.g. the
    # one 400 MB classifier weight of a materialised VGG) are never hashed.
    same_layout: dict[tuple, int] = {}
    for _name, array in graph.params.items():
        k = (array.dtype.str, array.shape)
        same_layout[k] = same_layout.get(k, 0) + 1
    for name, array in graph.params.items():
        if name in graph.outputs or same_layout[(array.dtype.str, array.shape)] < 2:
            continue
        key = param_key(array)
        keep = first.setdefault(key, name)
        if keep != name and np.array_equal(
            # (ascontiguousarray also makes a 0-d array 1-d: a 0-d array cannot be viewed as
            # bytes of another itemsize)
            np.ascontiguousarray(graph.params[keep]).view(np.uint8),
            np.ascontiguousarray(array).view(np.uint8),
        ):
            merged[name] = keep
    if not merged:
        return merged
    for name, keep in merged.items():
        graph.replace_uses(name, keep)
        graph.remove_param(name)
    groups: dict[str, list[str]] = {}
    for dup, keep in merged.items():
        groups.setdefault(keep, []).append(dup)
    shown = [f"{keep} <- {', '.join(dups)}" for keep, dups in groups.items()]
    report.did(
        f"merged {len(merged)} duplicate parameter(s) into {len(groups)}: " + "; ".join(shown)
    )
    return merged


def _merge_nodes(graph: Graph, report: PassReport) -> None:
    # Bucket by (op, inputs) first, so attributes are resolved only for real candidates (resolving
    # every node's attributes was most of the pass's time on a 1,700-node model).
    seen: dict[tuple, list[list]] = {}
    alias: dict[str, str] = {}  # output of a removed node -> the kept node's output
    named: dict[str, str] = {}  # kept output -> the graph output name it takes at the end
    removed: list[Node] = []
    opaque_pairs: list[str] = []
    for node in graph.nodes:
        if alias and any(i in alias for i in node.inputs):
            graph.set_inputs(node, [alias.get(i, i) for i in node.inputs])
        spec = ops.get(node.op) if ops.has(node.op) else None
        if spec is None or spec.mode_dependent:
            continue
        bucket = seen.setdefault(
            (node.op, tuple(node.inputs), tuple(bool(o) for o in node.outputs)), []
        )
        entry = [node, None]
        for other in bucket:
            if entry[1] is None:
                entry[1] = _node_attrs_key(graph, node)
            if other[1] is None:
                other[1] = _node_attrs_key(graph, other[0])
            if other[1] != entry[1]:
                continue
            keep = other[0]
            if node.op == "Opaque":
                opaque_pairs.append(f"{keep.name} and {node.name} ({node.attrs.get('op_type')})")
                break
            why = _alias_outputs(graph, keep, node, alias, named)
            if why:
                report.declined(f"{node.name}: same as {keep.name}, but {why}")
                break
            removed.append(node)
            report.did(f"merged {node.name} into {keep.name} ({node.op})")
            break
        else:
            bucket.append(entry)
    for n in removed:
        graph.remove_node(n)
    for d in alias:
        graph.values.pop(d, None)  # a graph output name among them is taken over just below
    for k, d in named.items():  # a removed node's graph output name: the kept node writes it now
        graph.rename_value(k, d)
    if opaque_pairs:
        report.declined(
            "same op type, inputs and attributes, but Opaque nodes are kept (nothing proves them "
            "deterministic): " + "; ".join(opaque_pairs)
        )


def _node_attrs_key(graph: Graph, node: Node) -> Any:
    attrs = node.attrs if node.op == "Opaque" else resolved_attrs(graph, node)
    return attrs_key(attrs)


def _alias_outputs(
    graph: Graph, keep: Node, dup: Node, alias: dict[str, str], named: dict[str, str]
) -> str | None:
    """Record `dup`'s outputs as aliases of `keep`'s; None when done, else why not (nothing
    recorded). A graph output of `dup` is recorded in `named`: `keep`'s output is renamed to it
    once the sweep is over (renaming now would change inputs the buckets already hold)."""
    pairs = [(k, d) for k, d in zip(keep.outputs, dup.outputs, strict=True) if d]
    for k, d in pairs:
        if d in graph.outputs and (k in graph.outputs or k in named):
            return f"'{named.get(k, k)}' and '{d}' are both graph outputs"
    for k, d in pairs:
        alias[d] = k
        if d in graph.outputs:
            named[k] = d
    return None
