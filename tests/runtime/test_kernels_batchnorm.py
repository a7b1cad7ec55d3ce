"""BatchNormalization: kernel vs the formulas of docs/formulas.md, train-mode running statistics,
the identity BN can learn, parameter count, ONNX export (inference and train) vs onnxruntime,
import at opsets 7-15+, and error messages.

onnxruntime's training-mode BatchNormalization (checked on 1.32) updates the running variance with
the BIASED batch variance, as the ONNX spec and docs/formulas.md say (PyTorch: the unbiased one);
`test_train_export_matches_onnxruntime` asserts that and that the two conventions differ there.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.errors import AttributeValueError, KernelError, ShapeError, UnsupportedOpError
from graphnet.nn import BatchNorm, Network, ReLU, Sequential
from tests.helpers import ATOL32, RTOL32, assert_close, export_checked, ort_run, rand, single_node

SHAPES = {2: (6, 3), 3: (4, 3, 7), 4: (3, 4, 5, 6), 5: (2, 3, 4, 3, 5)}


# --------------------------------------------------------- references (docs/formulas.md, plainly)
def batch_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu_B^m = 1/(HWT) sum_t sum_ij X_ij^mt; sigma2_B^m = 1/(HWT) sum (X - mu_B^m)^2, per map m."""
    c = x.shape[1]
    mu, var = np.zeros(c), np.zeros(c)
    for m in range(c):
        vals = [float(v) for v in x[:, m].ravel()]
        mu[m] = sum(vals) / len(vals)
        var[m] = sum((v - mu[m]) ** 2 for v in vals) / len(vals)
    return mu, var


def bn_formula(x, gamma, beta, mu, var, eps) -> np.ndarray:
    """Y = gamma * (X - mu) / sqrt(var + eps) + beta, one feature map at a time, in float64."""
    y = np.empty(x.shape, np.float64)
    for m in range(x.shape[1]):
        y[:, m] = (
            gamma[m] * (x[:, m].astype(np.float64) - mu[m]) / np.sqrt(float(var[m]) + eps) + beta[m]
        )
    return y


def bn_graph(shape, rng, *, eps=1e-5, momentum=0.9, dtype="float32"):
    c = shape[1]
    params = {
        "scale": rand(rng, c, dtype=dtype),
        "B": rand(rng, c, dtype=dtype),
        "mean": rand(rng, c, dtype=dtype),
        "var": (rng.uniform(0.2, 2.0, c)).astype(dtype),
    }
    g = single_node(
        "BatchNormalization",
        {"x": shape},
        params,
        {"epsilon": eps, "momentum": momentum},
        dtype=dtype,
    )
    return g, params


# --------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_formula_and_onnxruntime(rank, dtype):
    rng = np.random.default_rng(rank)
    # ONNX stores epsilon as a float32 attribute: 2**-10 is exact there, so float64 can stay tight.
    eps = 2.0**-10
    g, p = bn_graph(SHAPES[rank], rng, eps=eps, dtype=dtype)
    x = rand(rng, *SHAPES[rank], dtype=dtype, scale=3.0)
    ours = runtime.run(g, {"x": x})["batchnormalization.out"]
    assert ours.dtype == np.dtype(dtype)
    tol = dict(rtol=RTOL32, atol=ATOL32) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    assert_close(
        ours, bn_formula(x, p["scale"], p["B"], p["mean"], p["var"], eps), **tol, what="vs formula"
    )
    theirs = ort_run(export_checked(g), {"x": x})["batchnormalization.out"]
    assert_close(ours, theirs, **tol, what="vs onnxruntime")


def test_inference_ignores_batch_statistics_and_keeps_params():
    rng = np.random.default_rng(1)
    g, p = bn_graph((4, 3, 5, 5), rng)
    before = {k: v.copy() for k, v in g.params.items()}
    x = rand(rng, 4, 3, 5, 5)
    other = rand(rng, 4, 3, 5, 5, scale=10.0) + 5.0
    mixed = np.concatenate([x[:1], other[1:]])
    y1 = runtime.run(g, {"x": x})["batchnormalization.out"]
    y2 = runtime.run(g, {"x": mixed})["batchnormalization.out"]
    # Example 0 is normalized the same whatever the rest of the batch holds...
    np.testing.assert_array_equal(y1[0], y2[0])
    # ...namely with the running averages, not the batch's statistics.
    assert_close(y1, bn_formula(x, p["scale"], p["B"], p["mean"], p["var"], 1e-5))
    for k, v in before.items():
        np.testing.assert_array_equal(g.params[k], v, err_msg=f"inference changed parameter {k}")


# ------------------------------------------------------------------------------------- train
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_train_step_formula(rank):
    rng = np.random.default_rng(10 + rank)
    alpha = 0.7
    g, p = bn_graph(SHAPES[rank], rng, momentum=alpha)
    x = rand(rng, *SHAPES[rank], scale=2.0) + 1.5
    y = runtime.run(g, {"x": x}, mode="train")["batchnormalization.out"]
    mu_b, var_b = batch_stats(x)
    assert y.dtype == np.float32
    assert_close(
        y,
        bn_formula(x, p["scale"], p["B"], mu_b, var_b, 1e-5),
        what="train Y uses biased batch stats",
    )
    assert_close(g.params["mean"], alpha * p["mean"] + (1 - alpha) * mu_b, what="running mean")
    assert_close(g.params["var"], alpha * p["var"] + (1 - alpha) * var_b, what="running var")
    assert g.params["mean"].dtype == np.float32 and g.params["var"].dtype == np.float32


def test_train_mode_keeps_float64():
    rng = np.random.default_rng(3)
    g, p = bn_graph((5, 2, 3), rng, dtype="float64")
    x = rand(rng, 5, 2, 3, dtype="float64")
    y = runtime.run(g, {"x": x}, mode="train")["batchnormalization.out"]
    mu_b, var_b = batch_stats(x)
    assert y.dtype == np.float64 and g.params["var"].dtype == np.float64
    assert_close(y, bn_formula(x, p["scale"], p["B"], mu_b, var_b, 1e-5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plan", ["fast", "reference"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5)])
def test_train_mode_refuses_an_empty_input_and_keeps_the_running_statistics(plan, shape):
    """Batch statistics of no values are undefined (their mean would make the running mean and
    variance NaN for good): both plans name the layer and the shape, and the graph's running
    statistics stay as they were. Inference on the same input is an empty output."""
    rng = np.random.default_rng(4)
    g, p = bn_graph((None, 3, None, 5), rng)
    x = np.zeros(shape, np.float32)
    sess = runtime.Session(g, plan=plan)
    with pytest.raises(
        KernelError, match=r"batchnormalization.*empty input \(shape " + re.escape(str(shape))
    ):
        sess.run({"x": x}, mode="train")
    np.testing.assert_array_equal(g.params["mean"], p["mean"])
    np.testing.assert_array_equal(g.params["var"], p["var"])
    assert sess.run({"x": x})["batchnormalization.out"].shape == shape


@given(
    n=st.integers(2, 5),
    c=st.integers(1, 4),
    hw=st.integers(1, 4),
    shift=st.floats(-50, 50),
    spread=st.floats(0.01, 20),
)
@settings(max_examples=25, deadline=None)
def test_identity_when_gamma_beta_undo_the_batch(n, c, hw, shift, spread):
    """With gamma = sqrt(sigma2_B + eps) and beta = mu_B, train-mode BN returns X
    (docs/formulas.md)."""
    rng = np.random.default_rng(n * 100 + c * 10 + hw)
    x = (rng.standard_normal((n, c, hw, hw)) * spread + shift).astype(np.float32)
    mu_b, var_b = batch_stats(x)
    eps = 1e-5
    params = {
        "gamma": np.sqrt(var_b + eps).astype(np.float32),
        "beta": mu_b.astype(np.float32),
        "mean": np.zeros(c, np.float32),
        "var": np.ones(c, np.float32),
    }
    g = single_node("BatchNormalization", {"x": x.shape}, params, {"epsilon": eps})
    y = runtime.run(g, {"x": x}, mode="train")["batchnormalization.out"]
    # gamma and beta are rounded to float32, which moves Y by ~1 ulp of |X| (and |mu_B|).
    assert_close(y, x, rtol=RTOL32, atol=1e-6 * (1 + abs(shift)), what="BN as identity")


@pytest.mark.parametrize(
    "smoothing, torch_momentum, alpha", [(0.8, None, 0.8), (None, 0.25, 0.75), (None, None, 0.9)]
)
def test_running_statistics_after_k_steps(smoothing, torch_momentum, alpha):
    """mu_avg,k = alpha mu_avg,k-1 + (1-alpha) mu_B (mu_avg,0 = 0); same for sigma2 from 1."""
    rng = np.random.default_rng(7)
    g = Sequential([BatchNorm(smoothing=smoothing, torch_momentum=torch_momentum)]).build(
        (None, 3, 4, 4)
    )
    assert g.node("bn1").attrs["momentum"] == pytest.approx(alpha)
    mu_avg, var_avg = np.zeros(3), np.ones(3)
    sess = runtime.Session(g)
    for k in range(4):
        x = rand(rng, 5, 3, 4, 4, scale=1.0 + k) + 2.0 * k
        y = sess.run({"input": x}, mode="train")["output"]
        mu_b, var_b = batch_stats(x)
        mu_avg = alpha * mu_avg + (1 - alpha) * mu_b
        var_avg = alpha * var_avg + (1 - alpha) * var_b
        # gamma = 1, beta = 0: train output is the plain standardization with batch statistics.
        assert_close(
            y, bn_formula(x, np.ones(3), np.zeros(3), mu_b, var_b, 1e-5), what=f"Y at step {k + 1}"
        )
        assert_close(g.params["bn1.running_mean"], mu_avg, what=f"running mean after {k + 1} steps")
        assert_close(g.params["bn1.running_var"], var_avg, what=f"running var after {k + 1} steps")
    # Inference afterwards uses exactly those averages.
    x = rand(rng, 2, 3, 4, 4)
    y = sess.run({"input": x})["output"]
    assert_close(y, bn_formula(x, np.ones(3), np.zeros(3), mu_avg, var_avg, 1e-5))


def test_dsl_initial_values():
    g = Sequential([BatchNorm()]).build((None, 5))
    np.testing.assert_array_equal(g.params["bn1.scale"], np.ones(5, np.float32))
    np.testing.assert_array_equal(g.params["bn1.bias"], np.zeros(5, np.float32))
    np.testing.assert_array_equal(g.params["bn1.running_mean"], np.zeros(5, np.float32))
    np.testing.assert_array_equal(g.params["bn1.running_var"], np.ones(5, np.float32))
    assert all(a.dtype == np.float32 for a in g.params.values())


@pytest.mark.parametrize("layers, maps", [(1, 8), (3, 16), (5, 4)])
def test_parameter_count_is_4_L_M(layers, maps):
    seq = []
    for _ in range(layers):
        seq += [BatchNorm(), ReLU()]
    g = Sequential(seq).build((None, maps, 6, 6))
    per_node = {
        n.name: sum(g.params[i].size for i in n.inputs if i in g.params)
        for n in g.nodes
        if n.op == "BatchNormalization"
    }
    assert len(per_node) == layers
    assert all(v == 4 * maps for v in per_node.values()), per_node
    assert g.num_params() == 4 * layers * maps


# --------------------------------------------------------------------------------------- export
def test_inference_export_form():
    g, _ = bn_graph((2, 3, 4, 4), np.random.default_rng(0), momentum=0.8)
    m = export_checked(g)
    (node,) = m.graph.node
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "BatchNormalization" and len(node.output) == 1
    assert "training_mode" not in attrs and "spatial" not in attrs
    assert attrs["momentum"] == pytest.approx(0.8) and attrs["epsilon"] == pytest.approx(1e-5)


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_train_export_matches_onnxruntime(rank):
    rng = np.random.default_rng(20 + rank)
    alpha = 0.6
    # A small batch makes the biased and unbiased variances clearly different (factor n/(n-1)).
    shape = {2: (3, 4), 3: (2, 4, 2), 4: (2, 4, 2, 1), 5: (2, 4, 1, 2, 1)}[rank]
    g, p = bn_graph(shape, rng, momentum=alpha)
    x = rand(rng, *shape, scale=2.0)
    model = export_checked(g, mode="train")
    (node,) = model.graph.node
    assert [helper.get_attribute_value(a) for a in node.attribute if a.name == "training_mode"] == [
        1
    ]
    assert [o.name for o in model.graph.output] == [
        "batchnormalization.out",
        "mean.updated",
        "var.updated",
    ]
    theirs = ort_run(model, {"x": x})
    ours_y = runtime.run(g, {"x": x}, mode="train")["batchnormalization.out"]
    assert_close(ours_y, theirs["batchnormalization.out"], what="train Y vs onnxruntime")
    assert_close(g.params["mean"], theirs["mean.updated"], what="running mean vs onnxruntime")
    assert_close(g.params["var"], theirs["var.updated"], what="running var vs onnxruntime")
    # The convention itself: ORT's running var follows the BIASED batch variance, not PyTorch's.
    n = x.size // shape[1]
    _, var_b = batch_stats(x)
    unbiased = alpha * p["var"] + (1 - alpha) * var_b * n / (n - 1)
    assert not np.allclose(theirs["var.updated"], unbiased, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------------------- import
def _bn_model(opset: int, shape, rng, *, outputs=1, dtype=TensorProto.FLOAT, **attrs):
    c = shape[1]
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    inits = {
        "s": rand(rng, c, dtype=np_dtype),
        "b": rand(rng, c, dtype=np_dtype),
        "m": rand(rng, c, dtype=np_dtype),
        "v": rng.uniform(0.5, 2, c).astype(np_dtype),
    }
    outs = ["y", "rm", "rv", "sm", "sv"][:outputs]
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], outs, name="bn", **attrs
    )
    out_info = [helper.make_tensor_value_info("y", dtype, shape)] + [
        helper.make_tensor_value_info(o, dtype, (c,)) for o in outs[1:]
    ]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", dtype, shape)],
        out_info,
        initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(
    "opset, attrs",
    [
        (7, {"spatial": 1}),
        (7, {"spatial": 1, "momentum": 0.5}),
        (9, {}),
        (9, {"momentum": 0.5}),
        (14, {"training_mode": 0}),
        (15, {"epsilon": 1e-3}),
        (21, {}),
    ],
)
@pytest.mark.parametrize("rank", [2, 4, 5])
def test_import_inference_forms(opset, attrs, rank):
    rng = np.random.default_rng(opset + rank)
    shape = SHAPES[rank]
    model = _bn_model(opset, shape, rng, **attrs)
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "BatchNormalization"
    assert set(node.attrs) <= {"epsilon", "momentum"}
    assert node.attrs.get("momentum", 0.9) == pytest.approx(attrs.get("momentum", 0.9))
    x = rand(rng, *shape)
    assert_close(
        runtime.run(g, {"x": x})["y"], ort_run(model, {"x": x})["y"], what=f"opset {opset} import"
    )


def test_import_opset6_test_mode_vs_formula():
    """onnxruntime has no BatchNormalization-6 kernel, so the legacy form (is_test=1; the
    `consumed_inputs` hint dropped) is checked against the formula."""
    rng = np.random.default_rng(6)
    model = _bn_model(6, (3, 2, 4), rng, is_test=1, epsilon=0.25)
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "BatchNormalization" and node.attrs["epsilon"] == 0.25
    x = rand(rng, 3, 2, 4)
    p = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert_close(runtime.run(g, {"x": x})["y"], bn_formula(x, p["s"], p["b"], p["m"], p["v"], 0.25))


@pytest.mark.parametrize(
    "opset, attrs, outputs, why, export",
    [
        (7, {"spatial": 0}, 1, "per-activation statistics (opsets 1-8 only)", "error"),
        (6, {"is_test": 0}, 1, "is_test=0 is training mode before opset 7", "error"),
        (9, {}, 5, "saved mean / saved var (opsets 7-13) are graph outputs", "error"),
    ],
)
def test_import_training_forms_stay_opaque(opset, attrs, outputs, why, export):
    model = _bn_model(opset, (2, 3, 4, 4), np.random.default_rng(0), outputs=outputs, **attrs)
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "Opaque" and node.attrs["op_type"] == "BatchNormalization", why
    if export == "unchanged":  # same opset: the re-exported node is the original one
        (back,) = g.to_onnx(opset=opset).graph.node
        assert back.SerializeToString() == model.graph.node[0].SerializeToString()
    elif export == "converted":  # carried to opset 21 by onnx's version converter
        out = g.to_onnx()
        onnx.checker.check_model(out, full_check=True)
        assert [n.op_type for n in out.graph.node] == ["BatchNormalization"]
    else:  # the converter cannot carry it: a clear error naming the node
        with pytest.raises(
            UnsupportedOpError, match=rf"node 'bn' \(BatchNormalization\) was read at opset {opset}"
        ):
            g.to_onnx()


def test_import_training_mode_with_unread_statistics_maps_to_the_ir_op():
    """PyTorch's TRAINING export writes training_mode=1 with running-statistics outputs nobody
    reads: that is the IR's BatchNormalization, whose mode is chosen at run/export time."""
    rng = np.random.default_rng(3)
    model = _bn_model(15, (4, 3, 5, 5), rng, outputs=3, training_mode=1, momentum=0.8)
    del model.graph.output[1:]  # the running statistics are written but nobody reads them
    g = graphnet.load(model)
    (node,) = g.nodes
    assert (
        node.op == "BatchNormalization" and node.outputs == ["y"] and node.attrs["momentum"] == 0.8
    )
    x = rand(rng, 4, 3, 5, 5)
    # Train mode normalizes with batch statistics, like the original training-mode node in ORT.
    ours = runtime.run(g, {"x": x}, mode="train")["y"]
    assert_close(
        ours,
        ort_run(model, {"x": x})["y"],
        rtol=1e-4,
        atol=1e-5,
        what="train mode vs ORT training BN",
    )


@pytest.mark.parametrize(
    "opset, attrs",
    [
        (9, {"momentum": 0.7}),  # opsets 7-13: the statistics outputs themselves mean training
        (14, {"training_mode": 1}),
        (15, {"training_mode": 1, "momentum": 0.5}),
        (21, {"training_mode": 1}),
    ],
)
def test_import_training_mode_with_read_statistics(opset, attrs):
    """A training BatchNormalization whose running statistics are graph outputs maps onto the IR
    op with its optional outputs: train mode gives ONNX's values (the update of docs/formulas.md
    with the BIASED batch variance), inference mode gives Y from the running averages and the
    statistics unchanged; both re-export as valid ONNX that onnxruntime runs to the same values."""
    rng = np.random.default_rng(opset)
    shape, momentum = (4, 3, 5, 5), attrs.get("momentum", 0.9)
    # Opsets 7-13 write all five training outputs; the saved mean / variance are left unread here.
    model = _bn_model(opset, shape, rng, outputs=3 if opset >= 14 else 5, **attrs)
    del model.graph.output[3:]
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "BatchNormalization" and node.outputs == ["y", "rm", "rv"]
    p = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = rand(rng, *shape)
    mu, var = batch_stats(x)
    want = {
        "y": bn_formula(x, p["s"], p["b"], mu, var, 1e-5),
        "rm": momentum * p["m"].astype(np.float64) + (1 - momentum) * mu,
        "rv": momentum * p["v"].astype(np.float64) + (1 - momentum) * var,
    }
    ours = runtime.run(g.copy(), {"x": x}, mode="train")
    for k in want:
        assert_close(ours[k], want[k], rtol=1e-5, atol=1e-6, what=f"train {k} vs formula")
    if opset >= 14:  # onnxruntime runs the training form from opset 14 (training_mode)
        theirs = ort_run(model, {"x": x})
        for k in want:
            # ORT's float32 statistics over 100 values per channel round differently: 1e-5 abs.
            assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-5, what=f"train {k} vs onnxruntime")
    back = ort_run(export_checked(g, mode="train"), {"x": x})
    for k in want:
        assert_close(back[k], want[k], rtol=1e-5, atol=1e-5, what=f"train export {k}")
    inf = runtime.run(g, {"x": x})
    assert_close(inf["y"], bn_formula(x, p["s"], p["b"], p["m"], p["v"], 1e-5))
    assert np.array_equal(inf["rm"], p["m"]) and np.array_equal(inf["rv"], p["v"])
    exported = export_checked(g)
    assert [n.op_type for n in exported.graph.node] == [
        "BatchNormalization",
        "Identity",
        "Identity",
    ]
    back = ort_run(exported, {"x": x})
    assert_close(back["y"], inf["y"]) and np.array_equal(back["rm"], p["m"])


def test_import_training_mode_reading_only_the_variance():
    """An omitted or unread running_mean in the middle gets a placeholder output name."""
    model = _bn_model(15, (2, 3, 4), np.random.default_rng(2), outputs=3, training_mode=1)
    model.graph.node[0].output[1] = ""
    del model.graph.output[1]
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.outputs[0] == "y" and node.outputs[2] == "rv" and node.outputs[1] not in ("", "rm")
    x = rand(np.random.default_rng(3), 2, 3, 4)
    p = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mu, var = batch_stats(x)
    want = {
        "y": bn_formula(x, p["s"], p["b"], mu, var, 1e-5),
        "rv": 0.9 * p["v"].astype(np.float64) + 0.1 * var,
    }
    # onnxruntime 1.32 crashes (segfault) on this original node with its omitted running_mean, so
    # the formula is the oracle; our re-export (which names every output) runs in onnxruntime.
    ours = runtime.run(g.copy(), {"x": x}, mode="train")  # a copy: train mode updates m and v
    back = ort_run(export_checked(g, mode="train"), {"x": x})
    for k in want:
        assert_close(ours[k], want[k], what=f"train {k} vs formula")
        assert_close(back[k], want[k], rtol=1e-5, atol=1e-5, what=f"train export {k} vs formula")


def test_import_mixed_dtypes_opset15():
    """Opset 15 lets scale/B and the statistics have their own float types."""
    rng = np.random.default_rng(5)
    shape = (3, 2, 4)
    inits = {
        "s": rand(rng, 2, dtype="float64"),
        "b": rand(rng, 2, dtype="float64"),
        "m": rand(rng, 2),
        "v": rng.uniform(0.5, 2, 2).astype(np.float32),
    }
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(a, k) for k, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx.checker.check_model(model, full_check=True)
    g = graphnet.load(model)
    x = rand(rng, *shape)
    ours = runtime.run(g, {"x": x})["y"]
    assert_close(ours, bn_formula(x, inits["s"], inits["b"], inits["m"], inits["v"], 1e-5))


# ----------------------------------------------------------------------------------------- errors
def test_error_channel_mismatch_names_node_and_shapes():
    with pytest.raises(ShapeError) as e:
        single_node(
            "BatchNormalization",
            {"x": (2, 3, 4, 4)},
            {
                "s": np.ones(4, np.float32),
                "b": np.zeros(3, np.float32),
                "m": np.zeros(3, np.float32),
                "v": np.ones(3, np.float32),
            },
        )
    msg = str(e.value)
    assert (
        "batchnormalization" in msg
        and "(2,3,4,4)" in msg
        and "4 values" in msg
        and "3 channels" in msg
    )


def test_error_rank_and_momentum():
    p = {k: np.ones(3, np.float32) for k in "sbmv"}
    with pytest.raises(ShapeError, match=r"rank 2 or 3 or 4 or 5.*\(1,3,2,2,2,2\)"):
        single_node("BatchNormalization", {"x": (1, 3, 2, 2, 2, 2)}, p)
    with pytest.raises(AttributeValueError, match=r"batchnormalization.*momentum.*\[0, 1\].*1.5"):
        single_node("BatchNormalization", {"x": (1, 3)}, p, {"momentum": 1.5})


def test_dsl_errors_name_the_layer():
    with pytest.raises(AttributeValueError, match=r"bn \(BatchNorm\): give smoothing .* not both"):
        BatchNorm(smoothing=0.9, torch_momentum=0.1)
    with pytest.raises(AttributeValueError, match=r"smoothing must be in \[0, 1\], got 1.2"):
        BatchNorm(smoothing=1.2)
    net = Network("n")
    x = net.input("x", (None, None, 4))
    with pytest.raises(
        ShapeError, match=r"bn1 \(BatchNorm\): input 'x' \(N,x_1,4\) has a dynamic channel count"
    ):
        BatchNorm()(x)
    y = net.input("y", (2,))
    with pytest.raises(
        ShapeError, match=r"bn2 \(BatchNorm\): input 'y' must have rank 2 or 3 or 4 or 5.*\(2\)"
    ):
        BatchNorm()(y)
