"""Shared test helpers: onnxruntime as an oracle, and explicit tolerances.

Tolerances (documented in README): float32 single ops rtol 1e-5, atol 1e-6 unless a test says why
it needs more (long reductions such as a conv over many taps accumulate float32 rounding differently
in onnxruntime and in NumPy's BLAS; those tests state their own bound).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from graphnet.ir import Graph
from graphnet import runtime
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


def ort_run(model, feeds: Mapping[str, np.ndarray], *, optimize: bool = False) -> dict[str, np.ndarray]:
    sess = ort_session(model, optimize=optimize)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


def export_checked(graph: Graph, *, mode: str = "inference", opset: int | None = None):
    """Export and run onnx's full checker on the result."""
    import onnx

    model = graph.to_onnx(mode=mode, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_close(actual: np.ndarray, expected: np.ndarray, *, rtol: float = RTOL32, atol: float = ATOL32, what: str = "") -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


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
        assert_close(ours[name], theirs[name], rtol=rtol, atol=atol, what=f"output '{name}' vs onnxruntime")
    return ours


def single_node(op: str, shapes: Mapping[str, tuple], params: Mapping[str, np.ndarray] | None = None, attrs: dict | None = None, *, dtype: str = "float32", num_outputs: int | None = None) -> Graph:
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


def rand(rng: np.random.Generator, *shape: int, dtype: str = "float32", scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def onnx_model(nodes, inputs, outputs, opset: int, inits=()):
    """A one-graph ModelProto at `opset` with the smallest IR version that opset needs; ONNX's
    shape inference fills in the graph outputs' shapes (the checker wants them), then the full
    checker runs."""
    import onnx
    from onnx import helper, numpy_helper

    ids = [helper.make_opsetid("", opset)]
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    m = helper.make_model(g, opset_imports=ids, ir_version=helper.find_min_ir_version_for(ids))
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m, full_check=True)
    return m


def vi(name: str, shape, dtype=np.float32):
    """A tensor value-info of a NumPy dtype."""
    from onnx import helper

    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)
