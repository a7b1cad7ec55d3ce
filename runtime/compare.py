"""Comparing a model's outputs between two runs: `graphnet check` (NumPy runtime vs onnxruntime),
`graphnet optimize --verify` (onnxruntime, input vs written model) and the pass manager's verify
(NumPy runtime before vs after each pass) all use `compare_outputs`.

An output agrees when every element satisfies `|a - b| <= atol + rtol * |b|` (NaN equal to NaN),
shape and dtype equal; integer and bool outputs must be equal.

Softmax outputs need more: softmax is exactly as well conditioned as the ABSOLUTE error of its
input. Logits that are sums computed to a relative precision `rtol` are known to
`d = rtol * max|logit| + atol`, so the probabilities are known only to a factor `exp(+-2d)`
(log-probabilities to `+-2d`). With logits of size 10 that is the plain relative comparison; with
logits of 1e10 (models whose weights are all equal, as the onnx package's light zoo models) the
probabilities are not determined by float32 arithmetic at all: which of 1000 equal classes the
softmax keeps depends on the BLAS's summation order, hence on the BLAS build, the CPU and the
thread count. So when the caller also gives the Softmax's input (`logits`), the logits are
compared (relatively, as any output) and the probabilities only as far as the logits determine
them: log-probabilities within `4d + rtol` (2d for each side's own logit error, rtol for the
rounding of the probabilities), a probability that underflowed to 0 standing for anything below
the smallest normal float32.
`softmax_outputs` finds which outputs of a graph a Softmax / LogSoftmax writes, `with_logits`
adds their inputs as outputs of a copy of the graph.

The default tolerances are the whole-model ones (README, "Tolerances"): 22-120 layers of
float32 sums added in different orders by different BLAS libraries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from graphnet.ir import Graph, format_shape

__all__ = [
    "WHOLE_MODEL_RTOL",
    "WHOLE_MODEL_ATOL",
    "Comparison",
    "SoftmaxOutput",
    "compare_outputs",
    "softmax_outputs",
    "with_logits",
]

WHOLE_MODEL_RTOL, WHOLE_MODEL_ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class SoftmaxOutput:
    """A graph output written by a Softmax (or, `log`, LogSoftmax) node, and that node's input."""

    logits: str
    log: bool = False


@dataclass(frozen=True)
class Comparison:
    """The comparison of one output. `max_abs` / `max_rel` are over the whole array (rel:
    |a - b| / |b|); `worst` is the index of the element furthest beyond tolerance (None when
    all agree); `problem` says why the output disagrees beyond the numbers (shape, dtype) and
    `note` how it was compared when not element by element (through its logits)."""

    name: str
    ok: bool
    max_abs: float
    max_rel: float
    worst: tuple[int, ...] | None = None
    problem: str = ""
    note: str = ""

    def describe(self, *, with_name: bool = True) -> str:
        """`name: max|diff| = ..., max rel = ...` plus the problem or note, if any."""
        text = self.problem or f"max|diff| = {self.max_abs:.3g}, max rel = {self.max_rel:.3g}"
        if self.note:
            text += f" ({self.note})"
        return f"{self.name}: {text}" if with_name else text


def softmax_outputs(graph: Graph) -> dict[str, SoftmaxOutput]:
    """{graph output: its Softmax / LogSoftmax input} for the outputs such a node writes."""
    found = {}
    for n in graph.nodes:
        if n.op in ("Softmax", "LogSoftmax") and n.outputs and n.outputs[0] in graph.outputs:
            found[n.outputs[0]] = SoftmaxOutput(n.inputs[0], n.op == "LogSoftmax")
    return found


def with_logits(graph: Graph) -> tuple[Graph, dict[str, SoftmaxOutput]]:
    """A copy of `graph` whose outputs also include the input of every Softmax / LogSoftmax that
    writes a graph output (see `softmax_outputs`), or `graph` itself when there is none."""
    found = softmax_outputs(graph)
    extra = [s.logits for s in found.values() if s.logits not in graph.outputs]
    if not extra:
        return graph, found
    g = graph.copy()
    for name in dict.fromkeys(extra):
        g.mark_output(name)
    return g, found


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    rtol: float = WHOLE_MODEL_RTOL,
    atol: float = WHOLE_MODEL_ATOL,
    names: Iterable[str] | None = None,
    softmax: Mapping[str, SoftmaxOutput] | None = None,
    actual_softmax: Mapping[str, SoftmaxOutput] | None = None,
) -> list[Comparison]:
    """One `Comparison` per output in `names` (default: every key of `expected`).

    `softmax` (from `softmax_outputs`) marks the outputs of the expected side written by a
    Softmax / LogSoftmax, `actual_softmax` those of the actual side (default: the same; two
    graphs before and after optimization may call their logits differently). When both
    mappings also hold that node's input under its name, the output is compared through its
    logits (module docstring)."""
    softmax = softmax or {}
    actual_softmax = softmax if actual_softmax is None else actual_softmax
    out = []
    for name in expected if names is None else names:
        if name not in actual:
            out.append(_missing(name))
            continue
        a, b = np.asarray(actual[name]), np.asarray(expected[name])
        sa, sb = actual_softmax.get(name), softmax.get(name)
        if (
            sa is not None
            and sb is not None
            and sa.log == sb.log
            and sa.logits in actual
            and sb.logits in expected
        ):
            la, lb = np.asarray(actual[sa.logits]), np.asarray(expected[sb.logits])
            out.append(_compare_softmax(name, a, b, la, lb, sa, rtol, atol))
        else:
            out.append(_compare(name, a, b, rtol, atol))
    return out


def _missing(name: str) -> Comparison:
    inf = float("inf")
    return Comparison(name, False, inf, inf, problem="missing from the results")


def _stats(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    d[np.isnan(a) & np.isnan(b)] = 0.0  # NaN where both have NaN agrees
    d[np.isnan(d)] = np.inf
    if d.size == 0:
        return d, 0.0, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = d / np.abs(b.astype(np.float64))
    rel[d == 0] = 0.0
    return d, float(d.max()), float(rel.max())


def _compare(name: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> Comparison:
    if a.shape != b.shape or a.dtype != b.dtype:
        inf = float("inf")
        return Comparison(
            name,
            False,
            inf,
            inf,
            problem=f"{a.dtype}{format_shape(a.shape)} vs {b.dtype}{format_shape(b.shape)}",
        )
    if a.dtype.kind not in "fc":
        bad = a != b
        n_bad = int(np.count_nonzero(bad))
        worst = tuple(int(i) for i in np.argwhere(bad)[0]) if n_bad else None
        d, max_abs, max_rel = _stats(a, b) if a.dtype.kind in "iu" else (None, float(n_bad), 0.0)
        problem = f"{n_bad} of {a.size} values differ" if n_bad else ""
        return Comparison(name, not n_bad, max_abs, max_rel, worst, problem=problem)
    d, max_abs, max_rel = _stats(a, b)
    excess = d - (atol + rtol * np.abs(b.astype(np.float64)))
    ok = not bool((excess > 0).any())
    worst = None if ok else tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), a.shape))
    return Comparison(name, ok, max_abs, max_rel, worst)


def _compare_softmax(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    la: np.ndarray,
    lb: np.ndarray,
    s: SoftmaxOutput,
    rtol: float,
    atol: float,
) -> Comparison:
    plain = _compare(name, a, b, rtol, atol)
    logits = _compare(s.logits, np.asarray(la), np.asarray(lb), rtol, atol)
    if plain.problem or logits.problem or plain.ok or la.shape != a.shape:
        return plain  # a shape/dtype problem, or agreement element by element: nothing to add
    size = max(float(np.abs(np.asarray(x, np.float64)).max(initial=0.0)) for x in (la, lb))
    d = rtol * size + atol
    bound = 4 * d + rtol
    if s.log:
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    else:
        # Log-probabilities; one that underflowed stands for anything below the smallest normal.
        tiny = np.finfo(np.float32).tiny
        err = np.abs(
            np.log(np.maximum(a.astype(np.float64), tiny))
            - np.log(np.maximum(b.astype(np.float64), tiny))
        )
    ok = logits.ok and float(err.max(initial=0.0)) <= bound
    note = (
        f"a {'LogSoftmax' if s.log else 'Softmax'} of logits up to {size:.2g}, compared through "
        f"'{s.logits}': logits max rel = {logits.max_rel:.2g}"
    )
    return Comparison(
        name, ok, plain.max_abs, plain.max_rel, None if ok else plain.worst, note=note
    )
