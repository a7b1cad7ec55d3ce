"""The pass manager: `optimize(graph, pipeline="inference")` -> (new graph, report).

`optimize` never touches the graph it is given: it works on `graph.copy()`. After every pass it
runs `Graph.verify()`, checks that the graph's inputs and output names are unchanged and that a
pass which reported "no change" really changed nothing. With `verify=True` it also runs the
graph on the NumPy runtime (seeded random inputs, dynamic dims of size `batch`) before the
pipeline and after every pass that changed something, and compares each output with the run
before that pass; a difference beyond `atol + rtol * |before|` raises `PassError` naming the pass,
the passes that ran before it, the output and the difference:

    pass 'fold-batchnorm' (after ['drop-dropout']) changed output 'logits':
    max|diff| = 3.1e-02 > atol 1e-05 ...

The `inference` pipeline, and why this order (each pass only rewrites what is exactly equivalent):
1. fold-constants: WSConv with a constant kernel -> Conv (so that step 4 may fold BN into it),
   static Shape -> constant and constant sub-graphs (the Shape -> Gather -> Concat -> Reshape
   chains exporters write) -> parameters, so that step 2 can see a no-op Reshape;
2. eliminate: Identity / no-op Reshape / Flatten / Dropout(p=0) between a Conv and its BN would
   hide the pair from step 4;
3. drop-dropout: an inverted Dropout between Conv and BN is removed and a classic one is folded
   into its neighbour (a BN included) BEFORE BN folding, so that step 4 sees Conv -> BN directly.
   Running fold-batchnorm first would instead turn that BN into a Mul + Add it can no longer fold
   (the brief's "fold-batchnorm again" is then unnecessary: one run after dropout suffices);
4. fold-batchnorm: BN into its producer, else its (pad-free) consumer, else a Mul + Add;
5. fold-affine: per-channel Mul / Add / Sub / Div by constants (Caffe2 scale layers after a Conv,
   exporters' own affines) into the linear op before them, else one Mul + Add per chain. After
   step 4, whose Mul + Add fallback it then sees merged with any neighbouring steps;
6. cse: equal parameters and nodes computing the same thing merged. AFTER the folds: merging
   two Convs that read the same input with the same weights first would give each of their BNs
   a shared producer, which no BN may be folded into (the light Inception v2 lost 9 folds so);
7. eliminate again: the parameters the folds left unread (BN statistics, replaced weights) and
   anything they made dead.
No pass creates work for an earlier one (fold-batchnorm, fold-affine and drop-dropout never create
constant sub-graphs, identities or Dropouts; cse only merges), so the result is a fixed point:
running the pipeline on its own output changes nothing (tested on every model of
tests/passes/test_pipeline.py and on the ONNX zoo's light models).

`max_constant_bytes` (opt-in) is handed to every pass that takes it (fold-constants): see
`optimize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphnet.errors import GraphError, GraphNetError, PassError
from graphnet.ir import Graph, format_shape
from graphnet.passes.base import PipelineReport, get_pass, graph_macs, run_pass

__all__ = ["PIPELINES", "optimize", "resolve_pipeline", "describe_passes"]

PIPELINES: dict[str, tuple[str, ...]] = {
    "inference": (
        "fold-constants",
        "eliminate",
        "drop-dropout",
        "fold-batchnorm",
        "fold-affine",
        "cse",
        "eliminate",
    ),
}


def resolve_pipeline(pipeline: str | Sequence[str]) -> tuple[str, list[str]]:
    """(label, pass names) of a pipeline name, a single pass name, or a list of pass names;
    unknown names raise `PassError` listing the known ones."""
    if isinstance(pipeline, str):
        if pipeline in PIPELINES:
            names, label = list(PIPELINES[pipeline]), pipeline
        else:
            names, label = [pipeline], pipeline
    else:
        names = list(pipeline)
        label = "[" + ", ".join(names) + "]"
    for n in names:
        get_pass(n)  # raises with the list of known passes
    return label, names


def describe_passes() -> str:
    """One line per registered pass and per pipeline (for `graphnet optimize --list-passes`)."""
    from graphnet.passes.base import all_passes

    lines = ["passes:"]
    for name, p in sorted(all_passes().items()):
        lines.append(f"  {name:16s} {p.doc}")
    lines.append("pipelines:")
    for name, steps in PIPELINES.items():
        lines.append(f"  {name:16s} {' -> '.join(steps)}")
    return "\n".join(lines)


def optimize(
    graph: Graph,
    pipeline: str | Sequence[str] = "inference",
    *,
    verify: bool = False,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    seed: int = 0,
    batch: int = 2,
    max_constant_bytes: int | None = None,
    progress: Callable[[str], object] | None = None,
) -> tuple[Graph, PipelineReport]:
    """Run a pipeline of passes on a copy of `graph`; returns (optimized graph, report).

    `pipeline`: "inference" (the default; see the module docstring), a pass name, or a list of
    pass names. `verify`: compare the runtime outputs before and after each pass on seeded random
    inputs (`seed`; dynamic dims of size `batch`) with tolerance `atol + rtol * |before|` (the
    defaults are the whole-model tolerances of README.md: float32 folds in a different order).
    `max_constant_bytes`: opt-in materialisation: fold-constants writes a folded result of at
    most this many bytes even when it is much bigger than its inputs (a `ConstantOfShape`
    weight becomes an initializer, so BN folds into its Conv: fewer nodes, a bigger file; see
    passes/constant_folding.py). None (the default) keeps such results as nodes. `progress`
    is called with each pass's name before it runs (the CLI's progress bar)."""
    label, names = resolve_pipeline(pipeline)
    options = {} if max_constant_bytes is None else {"max_constant_bytes": int(max_constant_bytes)}
    g = graph.copy()
    g.verify()
    report = PipelineReport(label, g.name, verified=verify)
    sizes = len(g.nodes), g.num_params(), graph_macs(g)
    report.nodes_before, report.params_before, report.macs_before = sizes
    report.ops_before = g.op_counts()
    inputs, outputs = list(g.inputs), list(g.outputs)
    feeds = reference = None
    if verify:
        feeds = _random_feeds(g, seed, batch)
        reference = _run(g, feeds, "the graph given to optimize")
    done: list[str] = []
    structure = None  # the graph's `_structure`, when known (computed once per pass at most)
    for name in names:
        if progress is not None:
            progress(name)
        p = get_pass(name)
        where = f"pass '{name}' (after {done})"
        params_before = dict(g.params)
        shape_before = structure if structure is not None else _structure(g)
        try:
            r = run_pass(p, g, sizes=sizes, **options)
        except PassError:
            raise
        except GraphNetError as exc:
            raise PassError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        # A pass that reports no change is held to it below (same structure and parameters), and
        # an unchanged graph is as valid as before: only a changed graph is verified again.
        try:
            if r.changed:
                g.verify()
        except GraphError as exc:
            raise PassError(f"{where} left a broken graph: {exc}") from exc
        if g.inputs != inputs or g.outputs != outputs:
            raise PassError(
                f"{where} changed the graph's interface: inputs {inputs} -> {g.inputs}, "
                f"outputs {outputs} -> {g.outputs}"
            )
        if not r.changed:
            structure = _structure(g)
            same = (
                structure == shape_before
                and g.params.keys() == params_before.keys()
                and all(g.params[k] is params_before[k] for k in params_before)
            )
            if not same:
                raise PassError(f"{where} changed the graph but reported no change")
        else:
            structure = None
        sizes = r.nodes_after, r.params_after, r.macs_after
        if r.changed and feeds is not None and reference is not None:  # verify=True
            after = _run(g, feeds, f"the graph after {where}")
            _compare(reference, after, where, rtol, atol)
            reference = after
        report.passes.append(r)
        done.append(name)
    report.nodes_after, report.params_after, report.macs_after = sizes
    report.ops_after = g.op_counts()
    return g, report


def _structure(g: Graph) -> tuple:
    """Everything but parameter contents: nodes (op, inputs, outputs, attributes), names.
    Array-valued attributes count by identity: rendering them after every pass was the slowest
    part of optimizing a large model, and a pass that changes one assigns a new array."""
    nodes = tuple(
        (
            n.name,
            n.op,
            tuple(n.inputs),
            tuple(n.outputs),
            tuple(sorted((k, _attr_key(v)) for k, v in n.attrs.items())),
        )
        for n in g.nodes
    )
    return nodes, tuple(g.inputs), tuple(g.outputs)


def _attr_key(v: object) -> object:
    # Immutable values are kept as they are (comparing them is cheaper than rendering them, and
    # a NaN compares equal to itself inside a tuple: same object); mutable ones are rendered,
    # since a pass may change them in place.
    if isinstance(v, np.ndarray):
        return ("array", id(v))
    if isinstance(v, (list, dict, set, bytearray)):
        return repr(v)
    return v


def _random_feeds(g: Graph, seed: int, batch: int) -> dict[str, np.ndarray]:
    from graphnet.runtime.feeds import random_inputs

    try:
        return random_inputs(g, batch=batch, seed=seed)
    except GraphNetError as exc:
        raise PassError(f"cannot verify numerics: {exc}") from exc


def _run(g: Graph, feeds: dict[str, np.ndarray], what: str) -> tuple[dict, dict, list]:
    """(values, softmax outputs, output names): the values also hold the logits of Softmax
    outputs, which `compare_outputs` compares them through (graphnet.runtime.compare)."""
    from graphnet import runtime
    from graphnet.runtime.compare import with_logits

    probe, softmax = with_logits(g)
    try:
        return runtime.Session(probe).run(feeds), softmax, list(g.outputs)
    except GraphNetError as exc:
        raise PassError(f"cannot verify numerics: running {what} failed: {exc}") from exc


def _compare(before: tuple, after: tuple, where: str, rtol: float, atol: float) -> None:
    from graphnet.runtime.compare import compare_outputs

    (b_out, b_sm, names), (a_out, a_sm, _) = before, after
    for c in compare_outputs(
        a_out, b_out, names=names, rtol=rtol, atol=atol, softmax=b_sm, actual_softmax=a_sm
    ):
        if c.ok:
            continue
        a, b = np.asarray(a_out[c.name]), np.asarray(b_out[c.name])
        if a.shape != b.shape or a.dtype != b.dtype:
            raise PassError(
                f"{where} changed output '{c.name}' from {b.dtype}{format_shape(b.shape)} "
                f"to {a.dtype}{format_shape(a.shape)}"
            )
        if c.problem:
            raise PassError(f"{where} changed output '{c.name}': {c.problem}")
        at = c.worst if c.worst is not None else ()
        raise PassError(
            f"{where} changed output '{c.name}': max|diff| = {c.max_abs:.1e} "
            f"> atol {atol:.0e} (+ rtol {rtol:.0e} x |before|; worst at index "
            f"{tuple(at)}: {b[at]!r} -> {a[at]!r}){f'; {c.note}' if c.note else ''}"
        )
