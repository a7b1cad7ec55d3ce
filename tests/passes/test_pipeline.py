"""The `inference` pipeline end to end: networks built with the DSL, ONNX models written with
onnx.helper at several opsets and imported, and the PyTorch-exported models of tests/data/torch.
Each is optimized with per-pass verification, checked for what must be gone, compared with the
original (our runtime; onnxruntime on the exported optimized model; PyTorch's own outputs where we
have them), and optimized again to show the pipeline is at a fixed point.

Tolerances: whole models, rtol 1e-4 / atol 1e-5 (README's whole-model bound: folded weights are
re-rounded to float32 and a dozen layers sum in other orders than the original graph did).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import nn, runtime
from graphnet.ir import Graph
from graphnet.passes import optimize
from tests import helpers
from tests.helpers import assert_close, bn_stats, check_same, ort_run

MODEL_RTOL, MODEL_ATOL = 1e-4, 1e-5
TORCH = helpers.TORCH_DATA


def _randomize_bn(g: Graph, seed: int = 0) -> Graph:
    """Give every BatchNormalization nontrivial statistics (the DSL starts at 0 / 1)."""
    rng = np.random.default_rng(seed)
    for n in g.nodes:
        if n.op == "BatchNormalization":
            st = bn_stats(rng, g.params[n.inputs[1]].shape[0])
            for k, key in enumerate(("scale", "B", "mean", "var"), start=1):
                g.set_param(n.inputs[k], st[key])
    return g


def _optimize_checked(g: Graph, feeds, *, ort: bool = True) -> Graph:
    opt, report = optimize(g, verify=True)
    check_same(g, opt, feeds, rtol=MODEL_RTOL, atol=MODEL_ATOL, ort=ort)
    again, report2 = optimize(opt)
    assert not report2.changed, report2.format()
    return opt


def _ops(g: Graph) -> set[str]:
    return {n.op for n in g.nodes}


# ========================================================================================= DSL
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_lecture_template(scheme):
    layers = [
        nn.Conv(8, 3, padding="same", bias=False),
        nn.BatchNorm(),
        nn.ReLU(),
        nn.MaxPool(2),
        nn.Conv(8, 3, padding="same"),
        nn.BatchNorm(),
        nn.ReLU(),
        nn.MaxPool(2),
        nn.Flatten(),
        nn.Dropout(drop=0.5, scheme=scheme),
        nn.Linear(16),
        nn.BatchNorm(),
        nn.ReLU(),
        nn.Dropout(keep=0.8, scheme=scheme),
        nn.Linear(10),
        nn.Softmax(),
    ]
    g = _randomize_bn(nn.Sequential(layers).build((None, 3, 16, 16)))
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    opt = _optimize_checked(g, {"input": x})
    assert _ops(opt) == {"Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Softmax"}


def test_residual_and_inception_blocks():
    net = nn.Network("blocks", seed=0)
    x = net.input("x", (None, 8, 8, 8))
    y = nn.ReLU()(nn.BatchNorm()(nn.Conv(8, 3, padding="same")(x)))
    y = nn.BatchNorm()(nn.Conv(8, 3, padding="same")(y))
    r = nn.ReLU()(nn.add(x, y))  # BN before the add: folds; the add itself stays
    a = nn.BatchNorm()(nn.Conv(4, (1, 3), padding="same")(r))
    b = nn.BatchNorm()(nn.Conv(4, (3, 1), padding="same")(r))
    c = nn.concat([a, b])
    d = nn.BatchNorm()(c)  # after a Concat: nothing to fold into -> per-channel affine
    net.output(nn.ReLU()(d), name="y")
    g = _randomize_bn(net.graph)
    opt = _optimize_checked(
        g, {"x": np.random.default_rng(2).standard_normal((2, 8, 8, 8)).astype(np.float32)}
    )
    assert [n.op for n in opt.nodes].count("BatchNormalization") == 0
    assert [n.op for n in opt.nodes].count("Mul") == 1  # only the BN after the Concat


def test_wsconv_network_folds_to_plain_conv():
    layers = [
        nn.WSConv(6, 3, padding=1),
        nn.BatchNorm(),
        nn.ReLU(),
        nn.ConvTranspose(4, 2, stride=2, groups=2),
        nn.BatchNorm(),
        nn.ReLU(),
    ]
    g = _randomize_bn(nn.Sequential(layers).build((None, 4, 6, 6)))
    opt = _optimize_checked(
        g, {"input": np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32)}
    )
    assert [n.op for n in opt.nodes] == ["Conv", "Relu", "ConvTranspose", "Relu"]


# ======================================================================= imported ONNX models
def _onnx_model(opset: int) -> onnx.ModelProto:
    """Conv -> BN -> Relu -> Identity -> Dropout -> x.view(N, -1) via Shape/Gather/Unsqueeze/Concat
    -> Reshape -> Gemm -> BN, in the form each opset spells them."""
    rng = np.random.default_rng(opset)
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in [
            ("W", (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)),
            ("Wb", rng.standard_normal(4).astype(np.float32)),
            ("fc", (rng.standard_normal((6, 64)) * 0.2).astype(np.float32)),
            ("fcb", rng.standard_normal(6).astype(np.float32)),
            ("idx", np.array(0, np.int64)),
            ("minus1", np.array([-1], np.int64)),
        ]
    ]
    for prefix, c in (("bn1", 4), ("bn2", 6)):
        st = bn_stats(rng, c)
        inits += [
            numpy_helper.from_array(st[k], f"{prefix}.{k}") for k in ("scale", "B", "mean", "var")
        ]

    def bn(i, o, p):
        return helper.make_node(
            "BatchNormalization",
            [i, f"{p}.scale", f"{p}.B", f"{p}.mean", f"{p}.var"],
            [o],
            epsilon=1e-3,
        )

    if opset >= 13:
        unsq = helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"])
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axes0"))
    else:
        unsq = helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])
    drop = (
        helper.make_node("Dropout", ["i"], ["d"], ratio=0.3)
        if opset >= 7 and opset < 12
        else helper.make_node("Dropout", ["i"], ["d"])
    )
    nodes = [
        helper.make_node("Conv", ["x", "W", "Wb"], ["c"], pads=[1, 1, 1, 1]),
        bn("c", "b", "bn1"),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        drop,
        helper.make_node("Shape", ["d"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["n"], axis=0),
        unsq,
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["d", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["g"], transB=1),
        bn("g", "y", "bn2"),
    ]
    graph = helper.make_graph(
        nodes,
        "imported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("opset", [9, 11, 13, 17, 21])
def test_imported_model(opset):
    model = _onnx_model(opset)
    x = np.random.default_rng(4).standard_normal((3, 3, 4, 4)).astype(np.float32)
    want = ort_run(model, {"x": x})["y"]
    g = graphnet.load(model)
    opt = _optimize_checked(g, {"x": x})
    assert not _ops(opt) & {"BatchNormalization", "Dropout", "Identity"}, opt
    assert_close(
        runtime.run(opt, {"x": x})["y"],
        want,
        rtol=MODEL_RTOL,
        atol=MODEL_ATOL,
        what="optimized vs onnxruntime(original)",
    )


# ==================================================================== PyTorch-exported models
TORCH_MODELS = [
    "cnn_dynamo",
    "cnn_ts_op9",
    "cnn_ts_op13",
    "cnn_ts_op17",
    "conv3d_video",
    "norms_acts",
    "resnet_block",
    "view_flatten",
    "ws_conv",
]


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_pytorch_models(name):
    g = graphnet.load(os.path.join(TORCH, f"{name}.onnx"))
    data = np.load(os.path.join(TORCH, f"{name}.npz"))
    x = data["b3/input"]
    opt = _optimize_checked(g, {g.inputs[0]: x})
    assert not _ops(opt) & {"BatchNormalization", "Dropout", "Identity"}
    ours = runtime.run(opt, {g.inputs[0]: x})
    for out in g.outputs:
        assert_close(
            ours[out],
            data[f"b3/{out}"],
            rtol=MODEL_RTOL,
            atol=MODEL_ATOL,
            what=f"{name}: '{out}' vs PyTorch",
        )


def test_resnet_block_report_names_every_fold():
    g = graphnet.load(os.path.join(TORCH, "resnet_block.onnx"))
    _, report = optimize(g)
    fb = report["fold-batchnorm"]
    assert (
        sum(line.startswith("folded") for line in fb.changes) == 11
    )  # 12 BNs: one pair BN -> BN folds into one
    assert any("into /up/up.0/ConvTranspose (ConvTranspose)" in line for line in fb.changes)
    assert any(
        line.startswith("rewrote /bnbn/bnbn.0/BatchNormalization as the per-channel affine")
        for line in fb.changes
    )
