"""`graphnet optimize`: the written model is valid, smaller and equivalent; the input is never
touched; failures (bad pass, broken numerics, Ctrl-C) write nothing."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import pytest

from graphnet.cli import main
from tests import helpers
from tests.helpers import ort_run, small_onnx_model

DATA = helpers.TORCH_DATA


def _sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _feeds(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        dims = [
            d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim
        ]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def test_optimize_small_model_with_verify_and_report(tmp_path, capsys):
    src = small_onnx_model(tmp_path / "m.onnx")
    before = _sha(src)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    code = main(["optimize", src, "-o", str(out), "--verify", "--report", str(rep)])
    text = capsys.readouterr().out
    assert code == 0
    assert _sha(src) == before  # the input is untouched
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and "Dropout" not in ops
    assert ops == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    feeds = _feeds(model)
    np.testing.assert_allclose(
        ort_run(model, feeds)["y"], ort_run(onnx.load(src), feeds)["y"], rtol=1e-4, atol=1e-5
    )
    assert "nodes 7 -> 5" in text and "BatchNormalization 1 -> 0" in text and "verified:" in text
    doc = json.loads(rep.read_text())
    assert doc["totals"]["nodes"] == [7, 5] and doc["verify"][0]["ok"] is True
    assert [p["name"] for p in doc["passes"]][:1] == ["fold-constants"]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(DATA) if f.endswith(".onnx")))
def test_optimize_pytorch_exports(tmp_path, capsys, name):
    src = os.path.join(DATA, name)
    out = tmp_path / "o.onnx"
    assert main(["optimize", src, "-o", str(out), "--verify"]) == 0, capsys.readouterr().err
    model, orig = onnx.load(str(out)), onnx.load(src)
    assert len(model.graph.node) <= len(orig.graph.node)
    assert [i.name for i in model.graph.input] == [i.name for i in orig.graph.input]
    assert [o.name for o in model.graph.output] == [o.name for o in orig.graph.output]


def test_unknown_pass_is_usage_error(tmp_path, capsys):
    src = small_onnx_model(tmp_path / "m.onnx")
    code = main(
        ["optimize", src, "-o", str(tmp_path / "o.onnx"), "--passes", "fold-batchnorm,nope"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no pass named 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_misspelled_pass_gets_a_suggestion(tmp_path, capsys):
    src = small_onnx_model(tmp_path / "m.onnx")
    code = main(["optimize", src, "-o", str(tmp_path / "o.onnx"), "--passes", "fold-batchnrom"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'fold-batchnorm'?" in err, err


@pytest.mark.parametrize("passes", ["inference", "inference,cse", "eliminate,inference"])
def test_passes_accepts_the_pipeline_names_list_passes_lists(tmp_path, capsys, passes):
    src = small_onnx_model(tmp_path / "m.onnx")
    code = main(["optimize", src, "-o", str(tmp_path / "o.onnx"), "--passes", passes, "-v"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fold-batchnorm:" in out  # the pipeline was expanded into its passes
    ops = [n.op_type for n in onnx.load(str(tmp_path / "o.onnx")).graph.node]
    assert "BatchNormalization" not in ops


def test_default_output_is_short_verbose_has_details_quiet_has_nothing(tmp_path, capsys):
    src = os.path.join(DATA, "resnet_block.onnx")
    assert main(["optimize", src, "-o", str(tmp_path / "a.onnx")]) == 0
    short = capsys.readouterr().out.strip().splitlines()
    assert len(short) <= 3, short
    assert "BatchNormalization 12 -> 0" in short[0] and "ms" in short[0]
    assert short[-1].startswith("wrote ")
    assert main(["optimize", src, "-o", str(tmp_path / "b.onnx"), "-v"]) == 0
    verbose = capsys.readouterr().out
    assert "fold-batchnorm:" in verbose and "  - " in verbose
    assert len(verbose.splitlines()) > 3 * len(short)
    assert main(["optimize", src, "-o", str(tmp_path / "c.onnx"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "c.onnx").exists()


def test_a_pass_that_breaks_numerics_writes_nothing(tmp_path, capsys):
    from graphnet.passes.base import register_pass, unregister_pass

    @register_pass("test-break-weights", doc="scales every Conv weight by 2 (deliberately wrong)")
    def _break(graph, report):
        for n in graph.nodes:
            if n.op == "Conv":
                graph.set_param(n.inputs[1], graph.params[n.inputs[1]] * 2)
                report.did(f"broke {n.name}")

    try:
        src = small_onnx_model(tmp_path / "m.onnx")
        out = tmp_path / "o.onnx"
        code = main(["optimize", src, "-o", str(out), "--passes", "test-break-weights", "--verify"])
        err = capsys.readouterr().err
        assert code == 1
        assert "pass 'test-break-weights'" in err and "nothing written" in err
        assert not out.exists()
    finally:
        unregister_pass("test-break-weights")


def test_interrupt_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    import graphnet.onnx_io.export as ex

    src = small_onnx_model(tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    out.write_bytes(b"previous")
    real_replace = ex.os.replace

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex.os, "replace", interrupted)
    assert main(["optimize", src, "-o", str(out)]) == 130
    monkeypatch.setattr(ex.os, "replace", real_replace)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx"]


def test_opaque_model_is_optimized_and_verified_with_onnxruntime(tmp_path, capsys):
    """A model with an op graphnet has no kernel for: the NumPy runtime cannot run it, so
    --verify compares under onnxruntime; the known parts are still optimized."""
    src = small_onnx_model(tmp_path / "m.onnx")
    model = onnx.load(src)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type = "Softplus"  # no graphnet mapping: kept opaque
    onnx.save(model, src)
    out = tmp_path / "o.onnx"
    code = main(["optimize", src, "-o", str(out), "--verify"])
    text = capsys.readouterr().out
    assert code == 0 and "the NumPy runtime cannot run it" in text
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Softplus" in ops and "BatchNormalization" not in ops


def test_a_custom_domain_op_is_kept_with_its_domain(tmp_path, capsys):
    """An op of a custom domain (its opset unknown to onnx) is written back with its domain;
    the model's IR version comes from the default domain's opset (onnx's lookup raised
    "Unsupported opset-version" on the custom one: exit 3 for any such model)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Foo", ["h"], ["y"], domain="com.example"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), src)
    assert main(["optimize", str(src), "-o", str(out)]) == 0, capsys.readouterr().err
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert {(o.domain, o.version) for o in written.opset_import} == {
        ("", 17),
        ("com.example", 1),
    }
    assert written.ir_version == helper.find_min_ir_version_for(opsets[:1])
    assert [(n.op_type, n.domain) for n in written.graph.node] == [
        ("Relu", ""),
        ("Foo", "com.example"),
    ]


def test_list_passes(capsys):
    assert main(["optimize", "--list-passes"]) == 0
    out = capsys.readouterr().out
    assert "fold-batchnorm" in out and "inference" in out


def test_fold_large_constants_materialises_generated_weights(tmp_path, capsys):
    """The light zoo SqueezeNet makes its weights with ConstantOfShape: kept as nodes by default
    (small file), materialised with --fold-large-constants (fewer nodes, bigger file)."""
    src = os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx"
    )
    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    assert main(["optimize", src, "-o", str(small)]) == 0
    # The default summary counts the declined folds and names the option that allows them.
    text = capsys.readouterr().out
    assert "too large to write by default: --fold-large-constants writes them" in text, text
    assert main(["optimize", src, "-o", str(big), "--fold-large-constants", "--verify"]) == 0, (
        capsys.readouterr().err
    )
    m_small, m_big = onnx.load(str(small)), onnx.load(str(big))
    assert "ConstantOfShape" in [n.op_type for n in m_small.graph.node]
    assert "ConstantOfShape" not in [n.op_type for n in m_big.graph.node]
    assert len(m_big.graph.node) < len(m_small.graph.node)
    assert os.path.getsize(big) > 10 * os.path.getsize(small)


def test_progress_bar_names_each_pass_on_a_terminal(tmp_path, capsys, monkeypatch):
    import graphnet.cli.common as common

    src = small_onnx_model(tmp_path / "m.onnx")
    monkeypatch.setattr(common, "_stderr_is_terminal", lambda: True)
    assert main(["optimize", src, "-o", str(tmp_path / "o.onnx"), "--verify"]) == 0
    err = capsys.readouterr().err
    assert "optimize:" in err and "pass fold-batchnorm (and verifying it)" in err
    assert main(["optimize", src, "-o", str(tmp_path / "p.onnx"), "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q: no bar either
