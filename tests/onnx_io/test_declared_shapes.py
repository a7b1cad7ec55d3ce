"""Every shape graphnet declares in a file it writes must hold for every batch size: onnxruntime
takes equal dim_params for equal sizes (and plans its buffers by them), so a false declaration is
a wrong answer or a crash, not a cosmetic issue.

Seeded random DSL networks (tests/random_nets.py: residual adds, concats on any axis including the
batch axis, flattens on any axis, BatchNorm everywhere, Dropout masks as outputs) are exported,
imported and optimized; each written model is run by onnxruntime (its graph optimizations on, as a
user runs it) at two batch sizes, compared with the NumPy runtime on the original graph, and every
declared input/output dim is checked against the actual size: a dim_value equal to it, a
dim_param's expression (evaluated here with Python on the batch size) equal to it, and one size
per dim_param string within a run.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

import graphnet
from graphnet import nn, runtime
from graphnet.passes.manager import optimize
from tests.helpers import assert_close, ort_run
from tests.random_nets import random_network

BATCHES = (2, 3)
# Whole-model float32 tolerance (README): BN folds and sums in other orders.
TOL = dict(rtol=1e-4, atol=1e-5)


def check_declared(
    model: onnx.ModelProto, actual: dict[str, np.ndarray], batch: int, **symbols: int
) -> None:
    """Declared input/output shapes of `model` against the arrays of one run at `batch` (and
    other input symbols of the given sizes)."""
    sizes: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name not in actual:
            continue
        got = actual[vi.name].shape
        dims = vi.type.tensor_type.shape.dim
        assert len(dims) == len(got), f"'{vi.name}': declared rank {len(dims)}, actual {got}"
        for k, (d, a) in enumerate(zip(dims, got, strict=True)):
            where = f"'{vi.name}' dim {k} at batch {batch} (actual shape {got})"
            if d.HasField("dim_value"):
                assert d.dim_value == a, f"{where}: declared {d.dim_value}"
            elif d.HasField("dim_param"):
                expr = d.dim_param
                env = {"N": batch, "floor": math.floor, **symbols}
                want = eval(expr, {"__builtins__": {}}, env)
                assert want == a, f"{where}: declared {expr!r} = {want}"
                assert sizes.setdefault(expr, a) == a, f"{where}: {expr!r} was {sizes[expr]}"


def _feeds(g, batch: int, seed: int) -> dict[str, np.ndarray]:
    shape = (batch,) + tuple(g.values["x"].shape[1:])
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _compare(model, reference: dict[str, np.ndarray], feeds, outputs, what: str) -> None:
    theirs = ort_run(model, feeds, optimize=True)
    check_declared(model, {**feeds, **theirs}, len(feeds["x"]))
    for o in outputs:
        assert_close(theirs[o], reference[o], **TOL, what=f"{what}: output '{o}'")


@pytest.mark.parametrize("seed", range(30))
def test_random_networks_declare_only_shapes_that_hold(seed):
    g = random_network(seed)
    exported = g.to_onnx()
    onnx.checker.check_model(exported, full_check=True)
    imported = graphnet.load(exported)
    optimized, _ = optimize(g)
    written = optimized.to_onnx()
    onnx.checker.check_model(written, full_check=True)
    reimported = imported.to_onnx()
    for batch in BATCHES:
        feeds = _feeds(g, batch, seed)
        ours = runtime.run(g, feeds)
        # The masks are all True at inference: compared like any output.
        _compare(exported, ours, feeds, g.outputs, "export")
        _compare(written, ours, feeds, g.outputs, "optimize")
        _compare(reimported, ours, feeds, g.outputs, "import + export")
        again = runtime.run(imported, feeds)
        for o in g.outputs:
            assert_close(again[o], ours[o], **TOL, what=f"imported graph: output '{o}'")


def test_the_issue_examples_are_declared_as_what_they_are():
    net = nn.Network("flat", seed=0)
    x = net.input("x", (None, 4, 3, 3))
    y = nn.Linear(3)(nn.Flatten(2)(x))  # (4N, 3): the batch folded with the channels
    z = nn.concat([x, x], axis=0)  # (2N, 4, 3, 3)
    _, mask = nn.Dropout(drop=0.5, return_mask=True)(x)
    net.output(y, name="y")
    net.output(z, name="z")
    net.output(mask, name="mask")
    g = net.graph
    assert g.values["y"].shape == ("4*N", 3) and g.values["z"].shape == ("2*N", 4, 3, 3)
    optimized, _ = optimize(g)
    # The Dropout is gone and its mask is a ConstantOfShape of Shape(x): x's own shape.
    assert "Dropout" not in optimized.op_counts()
    assert optimized.values["mask"].shape == ("N", 4, 3, 3)
    for model in (g.to_onnx(), optimized.to_onnx()):
        declared = {
            o.name: tuple(d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim)
            for o in model.graph.output
        }
        assert declared == {"y": ("4*N", 3), "z": ("2*N", 4, 3, 3), "mask": ("N", 4, 3, 3)}
        for batch in BATCHES:
            feeds = _feeds(g, batch, 0)
            _compare(model, runtime.run(g, feeds), feeds, g.outputs, "issue example")


def test_an_unknown_dim_is_never_taken_for_the_batch():
    # A Reshape whose target is computed at run time gives dims nothing knows: written without
    # a name (not "N"), and never unified with a named dim by later shape rules.
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = graphnet.load(model)
    assert g.values["r"].shape == (None, None)
    out = g.to_onnx()
    (y,) = out.graph.output
    assert all(not d.HasField("dim_param") for d in y.type.tensor_type.shape.dim)
    x = np.ones((3, 4), np.float32)
    _compare(out, {"y": x}, {"x": x}, ["y"], "run-time reshape")


def test_dynamic_spatial_dims_are_declared_as_expressions():
    """An input (N, 3, H, W): valid and strided convs and pooling give expressions of H and W
    (H - 2, floor((H - 3)/2) + 1, ...), which hold at any size."""
    net = nn.Network("spatial", seed=0)
    x = net.input("x", (None, 3, "H", "W"))
    a = nn.Conv(4, 3)(x)  # (N, 4, H - 2, W - 2)
    b = nn.Conv(4, 3, stride=2, padding=1)(nn.ReLU()(a))
    c = nn.MaxPool(2)(b)
    d = nn.Linear(5)(nn.Flatten()(nn.GlobalAvgPool()(c)))
    for t, name in ((a, "a"), (c, "c"), (d, "d")):
        net.output(t, name=name)
    g = net.graph
    assert g.values["a"].shape == ("N", 4, "H - 2", "W - 2")
    assert g.values["d"].shape == ("N", 5)
    model = g.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    for n, h, w in ((2, 9, 8), (1, 12, 7)):
        xs = np.random.default_rng(h).standard_normal((n, 3, h, w)).astype(np.float32)
        theirs = ort_run(model, {"x": xs}, optimize=True)
        check_declared(model, {"x": xs, **theirs}, n, H=h, W=w)
        ours = runtime.run(g, {"x": xs})
        for o in g.outputs:
            assert_close(ours[o], theirs[o], **TOL, what=f"output '{o}' at H={h}, W={w}")
