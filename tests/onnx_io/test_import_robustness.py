"""Models an exporter writes that graphnet must import, run and optimize like onnxruntime runs
them, written here with onnx.helper (no torch needed):

- PyTorch's GroupNorm (Reshape -> InstanceNormalization -> Reshape back to a shape computed by
  Shape) followed by a LayerNorm over (C, H, W): the dims of a run-time Reshape are unknown, and
  an unknown dim must never be taken for the batch N (it was: "Scale (64,8,8) does not broadcast
  to X (N,64,N,N)");
- a LayerNorm written as primitive ops at opset 13 (ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add)
  with 0-d constants, some of them equal (cse merged them through a byte view that NumPy refuses
  for 0-d arrays), in float16/32/64 and with integer exponents.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.cli import main
from graphnet.passes.manager import optimize
from tests.helpers import assert_close, ort_run

TOL = dict(rtol=1e-4, atol=1e-5)  # whole models (README)


def groupnorm_then_layernorm(c: int = 16, groups: int = 4, hw: int = 4) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = {
        "target": np.array([0, groups, -1], np.int64),
        "in_scale": np.ones(groups, f32),
        "in_bias": np.zeros(groups, f32),
        "gamma": rng.uniform(0.5, 1.5, (c, 1, 1)).astype(f32),
        "beta": rng.standard_normal((c, 1, 1)).astype(f32),
        "ln.weight": rng.uniform(0.5, 1.5, (c, hw, hw)).astype(f32),
        "ln.bias": rng.standard_normal((c, hw, hw)).astype(f32),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["grouped"]),
        helper.make_node(
            "InstanceNormalization", ["grouped", "in_scale", "in_bias"], ["normed"], epsilon=1e-5
        ),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Reshape", ["normed", "x_shape"], ["back"]),
        helper.make_node("Mul", ["back", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["gn"]),
        helper.make_node(
            "LayerNormalization", ["gn", "ln.weight", "ln.bias"], ["y"], axis=1, epsilon=1e-5
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "gn_ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, hw, hw])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_groupnorm_then_layernorm_imports_runs_and_optimizes():
    model = groupnorm_then_layernorm()
    g = graphnet.load(model)
    # What the run-time Reshape makes is unknown, not N; the per-channel Mul fixes the channels.
    assert g.values["back"].shape == (None, None, None, None)
    assert g.values["gn"].shape == (None, 16, None, None)
    opt, _ = optimize(g)
    written = opt.to_onnx()
    onnx.checker.check_model(written, full_check=True)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 16, 4, 4)).astype(np.float32)
        want = ort_run(model, {"x": x})["y"]
        assert_close(runtime.run(g, {"x": x})["y"], want, **TOL, what="imported")
        assert_close(runtime.run(opt, {"x": x})["y"], want, **TOL, what="optimized")
        assert_close(ort_run(written, {"x": x})["y"], want, **TOL, what="written")


def layernorm_primitives(dtype, exp_dtype) -> onnx.ModelProto:
    """LayerNorm over the last axis as opset-13 primitives, with 0-d constants: equal pairs
    (2 and 2, 1 and 1) so that cse merges them."""
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = {
        "two": np.array(2, exp_dtype),
        "two_again": np.array(2, exp_dtype),
        "eps": np.array(1e-3, dtype),
        "one": np.array(1.0, dtype),
        "one_again": np.array(1.0, dtype),
        "zero": np.array(0.0, dtype),
    }
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "one"], ["ng"]),
        helper.make_node("Add", ["ng", "zero"], ["y0"]),
        helper.make_node("Mul", ["y0", "one_again"], ["y1"]),
        helper.make_node("Pow", ["y1", "two_again"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", t, ["N", 5, 8])],
        [helper.make_tensor_value_info("y", t, ["N", 5, 8])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("exp", ["same", "int64", "int32"])
def test_layernorm_of_primitives_with_0d_constants_optimizes(tmp_path, capsys, dtype, exp):
    exp_dtype = dtype if exp == "same" else exp
    model = layernorm_primitives(dtype, exp_dtype)
    src, out = tmp_path / "ln.onnx", tmp_path / "o.onnx"
    onnx.save(model, str(src))
    code = main(["optimize", str(src), "-o", str(out), "--verify"])
    err = capsys.readouterr().err
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(dtype)
    # float16: one rounding per op of 11, relative to values of size ~1-4.
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == "float16" else TOL
    assert_close(ort_run(onnx.load(str(out)), {"x": x})["y"], ort_run(model, {"x": x})["y"], **tol)
    # The equal 0-d constants were merged (the merge is what failed).
    params = {t.name for t in onnx.load(str(out)).graph.initializer}
    assert not {"two", "two_again"} <= params and not {"one", "one_again"} <= params


def test_a_numpy_error_inside_graphnet_is_reported_as_a_bug(tmp_path, capsys, monkeypatch):
    """A NumPy (or any non-graphnet) error escaping a pass is a bug in graphnet: exit 3 and the
    hint, never exit 2 as if the input were wrong."""
    import graphnet.passes.cse as cse

    def broken(array):
        return np.array(2.0, np.float32).view(np.uint8)

    monkeypatch.setattr(cse, "param_key", broken)
    src = tmp_path / "ln.onnx"
    onnx.save(layernorm_primitives("float32", "float32"), str(src))
    code = main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert code == 3 and "bug in graphnet" in err
