"""The benchmark's PyTorch engine (`graphnet.bench.torch_engine`): our IR interpreted with
torch.nn.functional. PyTorch is optional: the tests that run it skip when it is not installed;
the engine itself then reports why it is absent instead of failing.

What is checked: every benchmark-suite model, optimized and not, against our reference plan
(the same graph and weights); single nodes where ONNX and PyTorch conventions differ
(asymmetric pads, MaxPool ceil_mode and -inf padding, Gemm alpha/beta/transposes, Reshape's 0,
LayerNorm's axis, PRelu's broadcast) against onnxruntime; an op without a conversion is a note
naming it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from graphnet.bench import suite
from graphnet.bench.torch_engine import torch_engine
from graphnet.ir import Graph
from graphnet.passes.manager import optimize
from graphnet.runtime import Session
from graphnet.runtime.feeds import random_inputs
from tests.helpers import export_checked, ort_run

# Whole-model comparisons (float32, different libraries' summation orders): the README's
# whole-model tolerances.
MODEL_RTOL, MODEL_ATOL = 1e-4, 1e-5


def test_without_torch_the_engine_is_absent_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    g = suite.build("lenet5")
    run, note = torch_engine(g, random_inputs(g, batch=1, seed=0), threads=1)
    assert run is None and note == "PyTorch not installed"


@pytest.mark.parametrize("name", suite.suite_names())
def test_suite_models_match_the_reference_plan(name):
    pytest.importorskip("torch", reason="PyTorch is optional (a benchmark engine only)")
    g = suite.build(name)
    for graph in (optimize(g)[0], g):
        feeds = random_inputs(graph, batch=2, seed=4)
        run, note = torch_engine(graph, feeds, threads=1)
        assert run is not None, note
        got = run()
        want = Session(graph, plan="reference").run(feeds)
        assert list(got) == list(want)
        for out in want:
            np.testing.assert_allclose(got[out], want[out], rtol=MODEL_RTOL, atol=MODEL_ATOL)


def _single(op, x_shape, attrs, params=(), extra_inputs=()) -> Graph:
    g = Graph(op.lower())
    g.add_input("x", x_shape)
    for name, arr in params:
        g.add_param(name, arr)
    node = g.add_node(op, ["x", *[p for p, _ in params], *extra_inputs], attrs, name="n")
    g.mark_output(node.outputs[0])
    return g


rng = np.random.default_rng(0)
W = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
CASES = [
    ("Conv", (2, 3, 7, 6), {"pads": [1, 0, 2, 1], "strides": [2, 1]}, [("w", W)]),
    ("Conv", (2, 3, 7, 6), {"pads": [1, 1, 1, 1], "dilations": [2, 1]}, [("w", W)]),
    ("MaxPool", (2, 3, 7, 6), {"kernel_shape": [3, 2], "pads": [1, 0, 0, 1]}, []),
    ("MaxPool", (2, 3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, []),
    ("MaxPool", (2, 3, 9), {"kernel_shape": [3], "pads": [1, 1], "strides": [2]}, []),
    ("AveragePool", (2, 3, 7, 6), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, []),
    (
        "Gemm",
        (5, 4),
        {"alpha": 0.5, "beta": 2.0, "transB": 0},
        [("b", rng.standard_normal((4, 3)).astype(np.float32)), ("c", np.ones(3, np.float32))],
    ),
    (
        "Gemm",
        (4, 5),
        {"transA": 1, "transB": 1},
        [("b", rng.standard_normal((3, 4)).astype(np.float32))],
    ),
    ("Flatten", (2, 3, 4, 5), {"axis": 2}, []),
    ("Reshape", (2, 3, 4), {}, [("s", np.array([0, -1], np.int64))]),
    (
        "LayerNormalization",
        (2, 3, 4),
        {"axis": 1},
        [("s", rng.uniform(0.5, 1.5, (1, 4)).astype(np.float32))],
    ),
    ("PRelu", (2, 3, 4, 4), {}, [("p", rng.standard_normal((3, 1, 1)).astype(np.float32))]),
    ("LogSoftmax", (2, 3, 4), {"axis": 1}, []),
]


@pytest.mark.parametrize("op, x_shape, attrs, params", CASES)
def test_onnx_conventions_match_onnxruntime(op, x_shape, attrs, params):
    pytest.importorskip("torch", reason="PyTorch is optional (a benchmark engine only)")
    g = _single(op, x_shape, attrs, params)
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    run, note = torch_engine(g, {"x": x}, threads=1)
    assert run is not None, note
    got = run()[g.outputs[0]]
    want = ort_run(export_checked(g), {"x": x})[g.outputs[0]]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_an_op_without_conversion_is_a_note_naming_it():
    pytest.importorskip("torch", reason="PyTorch is optional (a benchmark engine only)")
    g = _single("LRN", (1, 4, 3, 3), {"size": 3})
    run, note = torch_engine(g, {"x": np.zeros((1, 4, 3, 3), np.float32)}, threads=1)
    assert run is None and "no conversion for op 'LRN'" in note and "'n'" in note
