"""The optimizer benchmark script (benchmarks/optimize_peers.py) keeps working: its counting,
diff and input helpers on hand-made models, and a small end-to-end run whose table is checked
against numbers computed here from the files (peers other than onnxruntime are not needed)."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import optimize_peers as bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_count_nodes_bn_dropout_and_bn_after_linear():
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    stats = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("s", "b", "m", "v")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn1"]),  # after Conv
        helper.make_node("Relu", ["bn1"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["bn2"]),  # after Relu
        helper.make_node("Dropout", ["bn2"], ["d"]),
        helper.make_node("FusedConv", ["d", "w"], ["y"], domain="com.microsoft"),
    ]
    m = _model(nodes, [_vi("x", [1, 1, 4, 4])], [_vi("y", None)], [w, *stats])
    n, ops, bn_after = bench.count(m)
    assert (n, ops["BatchNormalization"], ops["Dropout"], bn_after) == (6, 2, 1, 1)
    assert ops["com.microsoft.FusedConv"] == 1 and ops["FusedConv"] == 0


def test_max_diff_matches_by_name_then_position_and_rejects_shape_changes():
    ref = {"a": np.array([1.0, 2.0], np.float32), "b": np.array([[0.5]], np.float32)}
    same_names = {"b": np.array([[0.25]], np.float32), "a": np.array([1.0, 2.5], np.float32)}
    assert bench.max_diff(ref, same_names) == pytest.approx(0.5)
    renamed = {"x": np.array([1.0, 1.0], np.float32), "y": np.array([[0.5]], np.float32)}
    assert bench.max_diff(ref, renamed) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        bench.max_diff(ref, {"a": np.zeros(3, np.float32), "b": np.zeros((1, 1), np.float32)})
    with pytest.raises(ValueError, match="outputs"):
        bench.max_diff(ref, {"a": np.zeros(2, np.float32)})
    assert bench.max_diff({"a": np.array([1.0])}, {"a": np.array([np.nan])}) == np.inf


def test_dead_inputs_are_fed_zeros_so_ort_can_run_the_model():
    # What onnxruntime's offline optimizer writes for the IR-3 zoo models: an input nothing reads.
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", [2]), _vi("unused", [3, 1])],
        [_vi("y", [2])],
    )
    feeds = {"x": np.array([-1.0, 2.0], np.float32)}
    assert [vi.name for vi in bench.dead_inputs(m, feeds)] == ["unused"]
    out = bench.ort_run(m, feeds)
    np.testing.assert_array_equal(out["y"], np.array([0.0, 2.0], np.float32))


def test_training_mode_detection():
    bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)
    stats = [numpy_helper.from_array(np.ones(1, np.float32), n) for n in ("s", "b", "m", "v")]
    assert bench.training_mode(_model([bn], [_vi("x", [2, 1])], [_vi("y", None)], stats, opset=15))
    drop = helper.make_node("Dropout", ["x"], ["y"])
    assert not bench.training_mode(_model([drop], [_vi("x", [2])], [_vi("y", [2])]))


def test_random_feeds_follow_runtime_feeds_and_fall_back_for_unimportable_models(tmp_path):
    path = os.path.join(ROOT, "tests/data/torch/cnn_ts_op13.onnx")
    feeds = bench.random_feeds(path, seed=3, batch=2)
    ((name, x),) = feeds.items()
    expected = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    assert x.shape[0] == 2 and np.array_equal(x, expected)
    # An op graphnet has no mapping for, in a domain it cannot import: the ONNX-only fallback.
    odd = _model(
        [helper.make_node("Weird", ["x"], ["y"], domain="example.org")],
        [_vi("x", ["N", 3])],
        [_vi("y", None)],
    )
    odd.opset_import.append(helper.make_opsetid("example.org", 1))
    p = tmp_path / "odd.onnx"
    onnx.save(odd, p)
    fb = bench.random_feeds(str(p), seed=1, batch=4)
    assert fb["x"].shape == (4, 3)
    np.testing.assert_array_equal(
        fb["x"], np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    )


def _rows(text: str, title: str) -> dict[str, list[str]]:
    block = text.split(title, 1)[1].split("\n\n", 1)[0].strip().splitlines()
    return {line.split()[0]: line.split()[1:] for line in block[2:]}


def test_end_to_end_table_against_the_files(capsys, monkeypatch):
    def broken(path, out_path):
        raise RuntimeError("boom: this tool always fails\nsecond line")

    monkeypatch.setitem(bench.TOOLS, "ort-extended", ("a_module_that_is_not_there", broken))
    monkeypatch.setitem(bench.TOOLS, "onnxoptimizer", ("numpy", broken))
    models = ["torch/cnn_ts_op13", "torch/view_flatten"]
    assert (
        bench.main(
            [
                "--models",
                ",".join(models),
                "--tools",
                "graphnet,ort-basic,ort-extended,onnxoptimizer",
                "--repeat",
                "2",
                "--budget",
                "60",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    nodes = _rows(out, "nodes after / BatchNormalization left / Dropout left")
    diffs = _rows(out, "max |diff|")
    times = _rows(out, "median wall time")
    for name in models:
        m = onnx.load(os.path.join(ROOT, "tests/data", name + ".onnx"))
        ops = [n.op_type for n in m.graph.node]
        assert (
            nodes[name][0] == f"{len(ops)}/{ops.count('BatchNormalization')}/{ops.count('Dropout')}"
        )
        ours = re.fullmatch(r"(\d+)/(\d+)/(\d+)", nodes[name][1])
        assert ours and int(ours[1]) < len(ops) and ours[2] == "0" and ours[3] == "0"
        assert (
            float(diffs[name][0]) <= 1e-5
        )  # whole-model tolerance (README): folds reorder float32 sums
        assert float(times[name][0]) > 0
        row = " ".join(nodes[name])
        assert (
            "not installed" in row
            and "error: boom: this tool always fails" in row
            and "second" not in row
        )
    assert "where graphnet loses" in out


def test_markdown_output(capsys):
    assert (
        bench.main(
            ["--models", "torch/view_flatten", "--tools", "graphnet", "--repeat", "1", "--markdown"]
        )
        == 0
    )
    out = capsys.readouterr().out
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert table[0] == "| model | original | graphnet |" and table[1] == "|---|---:|---:|"
    ops = [
        n.op_type
        for n in onnx.load(os.path.join(ROOT, "tests/data/torch/view_flatten.onnx")).graph.node
    ]
    assert any(ln.startswith(f"| torch/view_flatten | {len(ops)}/0/0 |") for ln in table)
