"""Shared test helpers: onnxruntime as an oracle, and explicit tolerances.

Tolerances (documented in README): float32 single ops rtol 1e-5, atol 1e-6 unless a test says why
it needs more (long reductions such as a conv over many taps accumulate float32 rounding differently
in onnxruntime and in NumPy's BLAS; those tests state their own bound).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from graphnet import runtime
from graphnet.ir import Graph

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)  # the repository
TORCH_DATA = os.path.join(
    TESTS, "data", "torch"
)  # small PyTorch exports, scripts/make_torch_models.py

RTOL32, ATOL32 = 1e-5, 1e-6
RTOL64, ATOL64 = 1e-12, 1e-12


def ort_session(model, *, optimize: bool = False):
    """An onnxruntime CPU session; graph optimizations off by default so our export is what runs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_run(
    model, feeds: Mapping[str, np.ndarray], *, optimize: bool = False
) -> dict[str, np.ndarray]:
    sess = ort_session(model, optimize=optimize)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


def export_checked(graph: Graph, *, mode: str = "inference", opset: int | None = None):
    """Export and run onnx's full checker on the result."""
    import onnx

    model = graph.to_onnx(mode=mode, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_close(
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    rtol: float = RTOL32,
    atol: float = ATOL32,
    what: str = "",
) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def log_softmax64(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax in float64 over the axes from `axis` on taken as one (ONNX's Softmax before
    opset 13; the same as per-axis softmax when the later axes have size 1)."""
    z = np.asarray(logits, np.float64)
    axis = axis % z.ndim
    flat = z.reshape(*z.shape[:axis], -1)
    flat = flat - flat.max(axis=-1, keepdims=True)
    flat = flat - np.log(np.exp(flat).sum(axis=-1, keepdims=True))
    return flat.reshape(z.shape)


def assert_softmax_close(
    logits: np.ndarray,
    expected_probs: np.ndarray,
    *,
    axis: int = -1,
    rtol: float = RTOL32,
    atol: float = ATOL32,
    what: str = "",
) -> None:
    """Softmax probabilities compared as well as their logits determine them.

    Softmax is exactly as well conditioned as the absolute error of its input: logits known to
    +-d give log-probabilities known to +-2d. Logits are sums computed to a relative precision, so
    d = rtol * max|logit| + atol on each side (ours, and the reference's own logits), and the
    log-probabilities must agree to 4d (+ rtol for the reference's own rounding). With moderate
    logits this is the usual relative comparison of the probabilities; with logits of 1e10 (a zoo
    model whose weights are all 0.02) the probabilities are undetermined by float32 arithmetic
    (which classes tie for the maximum depends on the BLAS's summation order), and only what the
    logits do determine is compared: that they are equal to within 4d. A reference probability
    that underflowed to 0 only bounds ours from above."""
    logits = np.asarray(logits)
    expected_probs = np.asarray(expected_probs, np.float64)
    assert logits.shape == expected_probs.shape, (
        f"{what}: shape {logits.shape} != {expected_probs.shape}"
    )
    d = rtol * float(np.abs(logits).max()) + atol
    bound = 4 * d + rtol
    ours = log_softmax64(logits, axis)
    tiny = np.finfo(np.float32).tiny
    ref = np.log(np.maximum(expected_probs, tiny))
    under = expected_probs < tiny
    err = np.where(under, np.maximum(ours - ref, 0.0), np.abs(ours - ref))
    worst = float(err.max())
    assert worst <= bound, (
        f"{what}: log-probabilities differ by {worst:.3g} > {bound:.3g} "
        f"(logits up to {float(np.abs(logits).max()):.3g}, rtol {rtol}, atol {atol})"
    )


def compare_with_ort(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    *,
    rtol: float = RTOL32,
    atol: float = ATOL32,
    opset: int | None = None,
) -> dict[str, np.ndarray]:
    """Run `graph` on our runtime (inference mode) and its export on onnxruntime; assert every
    output agrees. Returns our outputs."""
    ours = runtime.run(graph, feeds)
    theirs = ort_run(export_checked(graph, opset=opset), feeds)
    for name in graph.outputs:
        assert_close(
            ours[name], theirs[name], rtol=rtol, atol=atol, what=f"output '{name}' vs onnxruntime"
        )
    return ours


def single_node(
    op: str,
    shapes: Mapping[str, tuple],
    params: Mapping[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    *,
    dtype: str = "float32",
    num_outputs: int | None = None,
) -> Graph:
    """A graph with one node: graph inputs `shapes` (name -> shape, in order), then parameters
    `params` (name -> array) as the node's further inputs, in the given order. An input or param
    whose name is "" is an omitted optional input."""
    g = Graph(f"single_{op}")
    names = []
    for name, shape in shapes.items():
        g.add_input(name, shape, dtype)
        names.append(name)
    for name, arr in (params or {}).items():
        if name:
            g.add_param(name, arr)
        names.append(name)
    outputs = None if num_outputs is None else [f"y{k}" for k in range(num_outputs)]
    node = g.add_node(op, names, attrs or {}, name=op.lower(), outputs=outputs)
    for o in node.outputs:
        g.mark_output(o)
    return g


def rand(
    rng: np.random.Generator, *shape: int, dtype: str = "float32", scale: float = 1.0
) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def onnx_model(nodes, inputs, outputs, opset: int, inits=()):
    """A one-graph ModelProto at `opset` with the smallest IR version that opset needs; ONNX's
    shape inference fills in the graph outputs' shapes (the checker wants them), then the full
    checker runs."""
    import onnx
    from onnx import helper, numpy_helper

    ids = [helper.make_opsetid("", opset)]
    g = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
    )
    m = helper.make_model(g, opset_imports=ids, ir_version=helper.find_min_ir_version_for(ids))
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def vi(name: str, shape, dtype=np.float32):
    """A tensor value-info of a NumPy dtype."""
    from onnx import helper

    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape
    )


# ------------------------------------------------- before/after comparisons of the pass tests
# Tolerance of a before/after comparison (FOLD_RTOL, FOLD_ATOL = 1e-5, 1e-5): a fold rounds each
# folded weight to float32 once more (W * s computed in float64, then cast) and the optimized graph
# sums its products in another order than BN after conv did; with unit-scale data, kernels of at
# most ~100 taps and BN scales up to 2 / sqrt(0.5), both effects stay below 1e-5 absolute, while
# a wrong fold (a scale on the wrong axis, a missed shift) is off by O(0.1).
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


def bn_reference(
    x: np.ndarray, st: Mapping[str, np.ndarray], eps: float, axis: int = 1
) -> np.ndarray:
    """Inference BN (docs/formulas.md), written out: gamma * (x - mean) / sqrt(var + eps) + beta,
    per channel on `axis`, in float64."""
    view = [1] * x.ndim
    view[axis] = -1
    g, b, m, v = (
        np.asarray(st[k], np.float64).reshape(view) for k in ("scale", "B", "mean", "var")
    )
    return g * (np.asarray(x, np.float64) - m) / np.sqrt(v + eps) + b


def add_bn(
    g: Graph, x: str, name: str, rng: np.random.Generator, eps: float = 1e-5, c: int | None = None
) -> str:
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
    assert after.outputs == before.outputs, (
        f"graph outputs renamed: {before.outputs} -> {after.outputs}"
    )
    ref = runtime.run(before, feeds)
    ours = runtime.run(after, feeds)
    for o in before.outputs:
        assert_close(
            ours[o], ref[o], rtol=rtol, atol=atol, what=f"output '{o}' after vs before (NumPy)"
        )
    if ort:
        # onnxruntime's kernels round differently from NumPy's (Sigmoid, long sums), so this
        # comparison is never tighter than the single-op float32 tolerance, even for exact rewrites.
        ort_rtol, ort_atol = max(rtol, RTOL32), max(atol, ATOL32)
        theirs = ort_run(export_checked(after), feeds)
        for o in before.outputs:
            assert_close(
                theirs[o],
                ref[o],
                rtol=ort_rtol,
                atol=ort_atol,
                what=f"output '{o}': onnxruntime(optimized) vs before",
            )
    return ref


def ops_of(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def small_onnx_model(path) -> str:
    """Conv -> BN -> Relu -> Dropout -> GlobalAveragePool -> Flatten -> Gemm, written with
    onnx.helper."""
    rng = np.random.default_rng(0)
    f = onnx.TensorProto.FLOAT
    inits = {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "cb": rng.standard_normal(4).astype(np.float32),
        "s": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "m": rng.standard_normal(4).astype(np.float32),
        "v": rng.uniform(0.5, 2.0, 4).astype(np.float32),
        "fw": rng.standard_normal((5, 4)).astype(np.float32),
        "fb": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d"], name="drop"),
        helper.make_node("GlobalAveragePool", ["d"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["fl"], name="flatten"),
        helper.make_node("Gemm", ["fl", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", f, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", f, ["N", 5])],
        initializer=[onnx.numpy_helper.from_array(a, k) for k, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)
