"""Shared helpers of the pass tests (imported by tests/test_passes_*.py), and tests of the helpers.

Tolerance of a before/after comparison (FOLD_RTOL, FOLD_ATOL = 1e-5, 1e-5): a fold rounds each
folded weight to float32 once more (W * s computed in float64, then cast) and the optimized graph
sums its products in another order than BN after conv did; with unit-scale data, kernels of at
most ~100 taps and BN scales up to 2 / sqrt(0.5), both effects stay below 1e-5 absolute, while
a wrong fold (a scale on the wrong axis, a missed shift) is off by O(0.1).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from graphnet import runtime
from graphnet.ir import Graph
from tests.helpers import ATOL32, RTOL32, assert_close, export_checked, ort_run

FOLD_RTOL, FOLD_ATOL = 1e-5, 1e-5


def run_on_copy(name: str, g: Graph):
    """(copy of `g` after the pass `name`, its report); the result must verify."""
    from graphnet.passes.base import run_pass

    opt = g.copy()
    report = run_pass(name, opt)
    opt.verify()
    return opt, report


def feeds(g: Graph, seed: int | np.random.Generator = 0, batch: int = 2) -> dict[str, np.ndarray]:
    """Seeded random inputs (`runtime.feeds.random_inputs`); dynamic dims of size `batch`."""
    from graphnet.runtime.feeds import random_inputs

    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(2**31))
    return random_inputs(g, batch=batch, seed=seed)


def bn_stats(rng: np.random.Generator, c: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Nontrivial inference statistics: gamma, beta, mean ~ N(0, 1) (gamma kept away from 0),
    var ~ U[0.5, 2]."""
    gamma = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
    return {
        "scale": gamma.astype(dtype),
        "B": rng.standard_normal(c).astype(dtype),
        "mean": rng.standard_normal(c).astype(dtype),
        "var": rng.uniform(0.5, 2.0, c).astype(dtype),
    }


def bn_reference(x: np.ndarray, st: Mapping[str, np.ndarray], eps: float, axis: int = 1) -> np.ndarray:
    """The lecture's inference BN, written out: gamma * (x - mean) / sqrt(var + eps) + beta, per
    channel on `axis`, in float64."""
    view = [1] * x.ndim
    view[axis] = -1
    g, b, m, v = (np.asarray(st[k], np.float64).reshape(view) for k in ("scale", "B", "mean", "var"))
    return g * (np.asarray(x, np.float64) - m) / np.sqrt(v + eps) + b


def add_bn(g: Graph, x: str, name: str, rng: np.random.Generator, eps: float = 1e-5, c: int | None = None) -> str:
    """Append an inference BatchNormalization over axis 1 of `x`; returns its output name."""
    c = g.values[x].shape[1] if c is None else c
    st = bn_stats(rng, c, g.values[x].dtype)
    names = []
    for k, arr in st.items():
        names.append(g.fresh_name(f"{name}.{k}"))
        g.add_param(names[-1], arr)
    return g.add_node("BatchNormalization", [x, *names], {"epsilon": eps}, name=name).outputs[0]


def param(g: Graph, name: str, arr: np.ndarray) -> str:
    g.add_param(name, np.asarray(arr))
    return name


def check_same(
    before: Graph,
    after: Graph,
    feeds: Mapping[str, np.ndarray],
    *,
    rtol: float = FOLD_RTOL,
    atol: float = FOLD_ATOL,
    ort: bool = True,
) -> dict[str, np.ndarray]:
    """The optimized graph computes what the original did: on our runtime, and with onnxruntime
    on the exported optimized model (full onnx checker), both against our runtime on the original.
    Returns the original's outputs."""
    assert after.outputs == before.outputs, f"graph outputs renamed: {before.outputs} -> {after.outputs}"
    ref = runtime.run(before, feeds)
    ours = runtime.run(after, feeds)
    for o in before.outputs:
        assert_close(ours[o], ref[o], rtol=rtol, atol=atol, what=f"output '{o}' after vs before (NumPy)")
    if ort:
        # onnxruntime's kernels round differently from NumPy's (Sigmoid, long sums), so this
        # comparison is never tighter than the single-op float32 tolerance, even for exact rewrites.
        ort_rtol, ort_atol = max(rtol, RTOL32), max(atol, ATOL32)
        theirs = ort_run(export_checked(after), feeds)
        for o in before.outputs:
            assert_close(theirs[o], ref[o], rtol=ort_rtol, atol=ort_atol, what=f"output '{o}': onnxruntime(optimized) vs before")
    return ref


def ops_of(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


# ------------------------------------------------------------------------ tests of the helpers
def test_bn_reference_hand_example():
    # mean 1, var 3, eps 1: (x - 1) / 2 * gamma 4 + beta 0.5 -> x = 3 gives 4.5, x = -1 gives -3.5.
    st = {"scale": np.array([4.0]), "B": np.array([0.5]), "mean": np.array([1.0]), "var": np.array([3.0])}
    out = bn_reference(np.array([[3.0], [-1.0]]), st, eps=1.0)
    np.testing.assert_array_equal(out, [[4.5], [-3.5]])


def test_bn_stats_are_nontrivial():
    st = bn_stats(np.random.default_rng(0), 64)
    assert np.all((st["var"] >= 0.5) & (st["var"] <= 2.0))
    assert np.all(np.abs(st["scale"]) >= 0.5)
    assert st["mean"].std() > 0.5 and st["B"].std() > 0.5
