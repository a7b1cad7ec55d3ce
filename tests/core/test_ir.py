"""The IR's invariants, the executor's contract, and opaque-node round trips."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from graphnet import (
    Graph,
    GraphError,
    InputError,
    KernelError,
    ShapeError,
    UnsupportedOpError,
    load,
    runtime,
)
from tests.helpers import export_checked, ort_run


def _chain() -> Graph:
    g = Graph("chain")
    g.add_input("x", ("N", 3))
    g.add_param("b", np.array([1.0, -2.0, 3.0], np.float32))
    g.add_node("Relu", ["x"], name="r1")
    g.add_node("Add", ["r1.out", "b"], name="a1")
    g.add_node("Relu", ["a1.out"], name="r2")
    g.mark_output("r2.out")
    return g


def test_shapes_inferred_when_built_and_broadcast():
    g = _chain()
    assert g.values["a1.out"].shape == ("N", 3)
    assert g.values["r2.out"].dtype == "float32"


def test_shape_error_names_node_and_shapes():
    g = Graph("bad")
    g.add_input("x", ("N", 3))
    g.add_param("b", np.zeros(4, np.float32))
    with pytest.raises(
        ShapeError, match=r"node 'add' \(Add\).*\(N,3\) and \(4\).*x\(N,3\), b\(4\)"
    ):
        g.add_node("Add", ["x", "b"], name="add")


def test_undefined_input_and_duplicate_names_rejected():
    g = _chain()
    with pytest.raises(GraphError, match="input 'nope' of node 'r3'"):
        g.add_node("Relu", ["nope"], name="r3")
    with pytest.raises(GraphError, match="a node named 'r1' already exists"):
        g.add_node("Relu", ["x"], name="r1")
    with pytest.raises(GraphError, match="'x' .* already used"):
        g.add_input("x", (1,))


def test_verify_names_use_before_produce():
    g = _chain()
    g._set_order([g.nodes[1], g.nodes[0], g.nodes[2]])  # the maps stay right, the order does not
    with pytest.raises(
        GraphError,
        match="input 'r1.out' of node 'a1' is used before it is produced \\(by node 'r1'\\)",
    ):
        g.verify()
    g.toposort()
    g.verify()
    assert [n.name for n in g.nodes] == ["r1", "a1", "r2"]


def test_verify_catches_unknown_op_and_missing_output():
    g = _chain()
    g.add_node("Relu", ["x"], name="f1").op = "Frobnicate"  # op is a plain attribute
    with pytest.raises(GraphError, match="node 'f1' has op 'Frobnicate'"):
        g.verify()
    g = _chain()
    g.outputs.append("ghost")
    with pytest.raises(GraphError, match="graph output 'ghost' is never defined"):
        g.verify()


def test_producers_and_consumers_follow_mutations():
    g = _chain()
    assert g.producers()["a1.out"].name == "a1" and g.producer("a1.out") is g.node("a1")
    assert [n.name for n in g.consumers()["x"]] == ["r1"]
    g.remove_node(g.node("r2"))  # the maps follow the removal
    assert "a1.out" not in g.consumers() and g.readers("a1.out") == []
    assert g.producer("r2.out") is None and not g.has_node("r2")


def test_remove_unused_drops_dead_nodes_and_params():
    g = _chain()
    g.add_param("unused", np.ones(2, np.float32))
    g.add_node("Relu", ["x"], name="dead")
    removed, params = g.remove_unused()
    assert [n.name for n in removed] == ["dead"] and params == ["unused"]
    g.verify()


def test_copy_is_deep():
    g = _chain()
    c = g.copy()
    c.params["b"][0] = 100.0
    c.nodes[0].attrs["x"] = 1
    assert g.params["b"][0] == 1.0 and g.nodes[0].attrs == {}


def test_repr_reads_like_ir():
    text = repr(_chain())
    assert "%a1.out = Add(%r1.out, %b)  # a1" in text and "return %r2.out" in text


# ------------------------------------------------------------------------------------- executor
def test_run_matches_formula():
    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], np.float32)
    out = runtime.run(_chain(), {"x": x})["r2.out"]
    np.testing.assert_array_equal(
        out, np.maximum(np.maximum(x, 0) + np.array([1, -2, 3], np.float32), 0)
    )


def test_intermediates_freed_unless_keep_all():
    g = _chain()
    x = np.ones((2, 3), np.float32)
    assert set(runtime.run(g, {"x": x})) == {"r2.out"}
    everything = runtime.run(g, {"x": x}, keep_all=True)
    assert {"x", "r1.out", "a1.out", "r2.out"} <= set(everything)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({}, r"missing input\(s\) \['x'\]"),
        ({"x": np.ones((2, 3), np.float32), "y": np.ones(1)}, r"unknown input\(s\) \['y'\]"),
        ({"x": np.ones((2, 3), np.float64)}, "input 'x' must be float32, got float64"),
        ({"x": np.ones((2, 4), np.float32)}, r"input 'x' must have shape \(N,3\), got \(2,4\)"),
        ({"x": np.ones((3,), np.float32)}, r"input 'x' must have shape \(N,3\), got \(3\)"),
    ],
)
def test_bad_inputs_named(feeds, message):
    with pytest.raises(InputError, match=message):
        runtime.run(_chain(), feeds)


def test_bad_mode():
    with pytest.raises(InputError, match="mode must be one of"):
        runtime.run(_chain(), {"x": np.ones((1, 3), np.float32)}, mode="eval")


def test_kernel_failure_names_node(monkeypatch):
    from graphnet.runtime import kernels

    def broken(x):
        raise FloatingPointError("boom")

    monkeypatch.setitem(kernels._KERNELS, "Relu", kernels.Kernel("Relu", broken))
    with pytest.raises(
        KernelError, match=r"while executing r1 \(Relu\): x\(2,3\).*FloatingPointError: boom"
    ):
        # The reference plan calls the registered kernel (the fast plan has its own Relu).
        runtime.Session(_chain(), plan="reference").run({"x": np.ones((2, 3), np.float32)})


# ------------------------------------------------------------------------------- export/import
def test_export_runs_in_onnxruntime_with_symbolic_batch():
    g = _chain()
    model = export_checked(g)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N"
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        ort_run(model, {"x": x})["r2.out"], runtime.run(g, {"x": x})["r2.out"], rtol=1e-6
    )


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    import graphnet.onnx_io.export as ex

    g = _chain()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def failing(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ex.os, "replace", failing)
    with pytest.raises(RuntimeError):
        g.save(str(path))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.undo()
    g.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _model_with_unknown_op():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Erf", ["r"], ["e"], name="erf"),
        helper.make_node("Relu", ["e"], ["y"], name="relu2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_unknown_op_kept_opaque_and_written_back():
    model = _model_with_unknown_op()
    g = load(model)
    assert [n.op for n in g.nodes] == ["Relu", "Opaque", "Relu"]
    assert g.values["e"].shape == ("N", 4)  # from onnx's shape inference
    out = export_checked(g)
    assert [n.op_type for n in out.graph.node] == ["Relu", "Erf", "Relu"]
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(
        ort_run(out, {"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-6
    )


def test_runtime_names_the_unknown_op():
    with pytest.raises(
        UnsupportedOpError, match=r"no kernel for op 'Erf' \(ai.onnx\) at node 'erf'"
    ):
        runtime.Session(load(_model_with_unknown_op()))


def test_opaque_node_from_old_opset_is_converted_on_export():
    # Upsample (opset 9) no longer exists at opset 21: the opaque node is carried over by onnx's
    # version converter (to Resize), and the model computes the same thing.
    f = onnx.TensorProto.FLOAT
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Upsample", ["r", "sc"], ["y"], mode="nearest"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", f, [1, 2, 6, 6])],
        initializer=[onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    out = export_checked(load(model))
    assert "Upsample" not in [n.op_type for n in out.graph.node]
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(out, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_fresh_names_are_unique_and_reserved():
    g = _chain()
    a, b = g.fresh_name("r1"), g.fresh_name("r1")
    assert a != b and {a, b}.isdisjoint({"r1", "x", "b"})
    g.add_node("Relu", ["x"], name=a)  # a reserved name can be claimed once
    with pytest.raises(GraphError, match=f"a node named '{a}' already exists"):
        g.add_node("Relu", ["x"], name=a)


def test_save_with_external_data(tmp_path):
    g = Graph("big")
    g.add_input("x", (None, 3))
    g.add_param("b", np.arange(3, dtype=np.float32))
    g.add_param(
        "w", np.linspace(-1, 1, 3 * 512, dtype=np.float32).reshape(3, 512)
    )  # 6 KiB: written aside
    g.add_node("Add", ["x", "b"], name="a1")
    g.add_node("MatMul", ["a1.out", "w"], name="mm", outputs=["r2.out"])
    g.mark_output("r2.out")
    path = tmp_path / "m.onnx"
    g.save(str(path), external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    onnx.checker.check_model(str(path), full_check=True)
    back = load(str(path))
    np.testing.assert_array_equal(back.params["b"], g.params["b"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(
        runtime.run(back, {"x": x})["r2.out"], runtime.run(g, {"x": x})["r2.out"]
    )
