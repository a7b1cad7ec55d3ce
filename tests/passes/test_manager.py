"""The pass manager: pipelines, the copy contract, per-pass checks (graph invariants, interface,
honest "no change"), numeric verification that names the pass that broke an output, and reports
(human text and JSON)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from graphnet import passes, runtime
from graphnet.errors import PassError
from graphnet.ir import Graph
from graphnet.passes import PIPELINES, optimize, register_pass, unregister_pass
from graphnet.passes.base import PassReport, get_pass, run_pass
from tests.helpers import add_bn, param


def _model(seed: int = 0) -> Graph:
    """x -> Conv -> BN -> Relu -> Dropout -> Flatten -> Gemm -> y (something for every pass)."""
    rng = np.random.default_rng(seed)
    g = Graph("model")
    g.add_input("x", (None, 3, 4, 4))
    c = g.add_node(
        "Conv",
        ["x", param(g, "w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))],
        {"pads": (1, 1, 1, 1)},
        name="conv",
    )
    r = g.add_node("Relu", [add_bn(g, c.outputs[0], "bn", rng)], name="relu")
    d = g.add_node("Dropout", [r.outputs[0]], {"drop_prob": 0.25}, name="drop")
    f = g.add_node("Flatten", [d.outputs[0]], name="flat")
    fc = g.add_node(
        "Gemm",
        [
            f.outputs[0],
            param(g, "fc.w", rng.standard_normal((5, 64)).astype(np.float32)),
            param(g, "fc.b", rng.standard_normal(5).astype(np.float32)),
        ],
        {"transB": 1},
        name="fc",
        outputs=["logits"],
    )
    g.mark_output(fc.outputs[0])
    return g


@pytest.fixture
def throwaway():
    """Register test passes under names that are unregistered afterwards."""
    names = []

    def reg(name, fn):
        names.append(name)
        register_pass(name)(fn)
        return name

    yield reg
    for n in names:
        unregister_pass(n)


def test_inference_pipeline_folds_and_reports():
    g = _model()
    opt, report = optimize(g, verify=True)
    assert [n.op for n in opt.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    assert [p.name for p in report.passes] == list(PIPELINES["inference"])
    assert report["fold-constants"].summary() == "fold-constants: no change"
    assert report["drop-dropout"].changed and report["fold-batchnorm"].changed
    assert (report.nodes_before, report.nodes_after) == (6, 4)
    assert (
        report.params_before - report.params_after == 4 * 4 - 4
    )  # BN's 4 x C gone, a conv bias added
    assert (
        report.ops_before["BatchNormalization"] == 1
        and "BatchNormalization" not in report.ops_after
    )
    text = report.format()
    assert "pipeline inference, numerics verified after every pass" in text
    assert (
        "removed ops: BatchNormalization x1, Dropout x1" in text
        and "fold-constants: no change" in text
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["totals"]["nodes"] == [6, 4] and data["verified"] is True
    assert [p["name"] for p in data["passes"]] == list(PIPELINES["inference"])
    assert (
        data["passes"][0]["changed"] is False
        and data["passes"][3]["changes"][0] == "folded bn into conv (Conv)"
    )


def test_optimize_works_on_a_copy():
    g = _model()
    before = repr(g)
    arrays = {k: v.copy() for k, v in g.params.items()}
    optimize(g)
    assert repr(g) == before and g.params.keys() == arrays.keys()
    for k, v in arrays.items():
        np.testing.assert_array_equal(g.params[k], v)


def test_inference_pipeline_reaches_a_fixed_point():
    opt, _ = optimize(_model())
    again, report = optimize(opt, verify=True)
    assert not report.changed and all(not p.changed for p in report.passes)
    assert repr(again) == repr(opt)


def test_pipeline_by_list_and_by_single_name():
    g = _model()
    opt, report = optimize(g, ["drop-dropout"])
    assert report.pipeline == "[drop-dropout]" and [n.op for n in opt.nodes].count("Dropout") == 0
    _, report = optimize(g, "eliminate")
    assert [p.name for p in report.passes] == ["eliminate"] and not report.changed


def test_unknown_pass_name_lists_the_known_ones():
    with pytest.raises(
        PassError,
        match=(
            r"no pass named 'fold-everything'; known passes: \['cse', 'drop-dropout', 'eliminate', "
            r"'fold-affine', 'fold-batchnorm', 'fold-constants'"
        ),
    ):
        optimize(_model(), ["eliminate", "fold-everything"])


def test_registering_a_name_twice_is_an_error(throwaway):
    throwaway("test-dup", lambda g, r: None)
    with pytest.raises(PassError, match="a pass named 'test-dup' is registered twice"):
        register_pass("test-dup")(lambda g, r: None)


def test_verify_catches_a_wrong_pass_and_names_it(throwaway):
    def scale_conv(graph: Graph, report: PassReport) -> None:
        """A deliberately wrong 'fold': scales the conv weight by 1.01."""
        graph.set_param("w", graph.params["w"] * np.float32(1.01))
        report.did("scaled w")

    throwaway("test-break", scale_conv)
    with pytest.raises(PassError) as err:
        optimize(_model(), ["drop-dropout", "test-break", "eliminate"], verify=True)
    msg = str(err.value)
    assert re.match(
        r"pass 'test-break' \(after \['drop-dropout'\]\) changed output 'logits': "
        r"max\|diff\| = \d\.\de-\d\d > atol 1e-05",
        msg,
    ), msg
    # without verify the same pipeline runs through: verification is what caught it
    optimize(_model(), ["drop-dropout", "test-break"])


def test_verify_tolerance_is_respected(throwaway):
    def nudge(graph: Graph, report: PassReport) -> None:
        """Scales the FC weight by 1 + 1e-6: below the default whole-model tolerance (as a float32
        re-rounding of folded weights is), far above a strict one."""
        graph.set_param(
            "fc.w", (graph.params["fc.w"].astype(np.float64) * (1 + 1e-6)).astype(np.float32)
        )
        report.did("nudged fc.w")

    throwaway("test-nudge", nudge)
    optimize(_model(), ["test-nudge"], verify=True)
    with pytest.raises(
        PassError, match=r"changed output 'logits': max\|diff\| = .* > atol 1e-09 \(\+ rtol 0e\+00"
    ):
        optimize(_model(), ["test-nudge"], verify=True, rtol=0, atol=1e-9)


def test_verify_catches_a_changed_output_dtype(throwaway):
    def cast(graph: Graph, report: PassReport) -> None:
        graph.rename_value("logits", "pre")
        graph.outputs = ["logits"]  # the interface is kept: a Cast writes the output name
        graph.add_node("Cast", ["pre"], {"to": "float64"}, name="cast", outputs=["logits"])
        report.did("cast logits")

    throwaway("test-cast", cast)
    with pytest.raises(
        PassError,
        match=(
            r"pass 'test-cast' \(after \[\]\) changed output 'logits' from float32\(2,5\) to "
            r"float64\(2,5\)"
        ),
    ):
        optimize(_model(), ["test-cast"], verify=True)


def test_a_pass_that_breaks_the_graph_is_named(throwaway):
    def drop_first(graph: Graph, report: PassReport) -> None:
        graph.remove_node(graph.nodes[0])
        report.did("dropped a node")

    throwaway("test-drop", drop_first)
    with pytest.raises(
        PassError,
        match=r"pass 'test-drop' \(after \['eliminate'\]\) left a broken graph: "
        r"input 'conv.out' of node 'bn' is never defined",
    ):
        optimize(_model(), ["eliminate", "test-drop"])


def test_a_pass_that_renames_a_graph_output_is_refused(throwaway):
    def rename(graph: Graph, report: PassReport) -> None:
        graph.rename_value("logits", "scores")
        report.did("renamed")

    throwaway("test-rename", rename)
    with pytest.raises(
        PassError,
        match=(
            r"changed the graph's interface: inputs \['x'\] -> \['x'\], outputs \['logits'\] -> "
            r"\['scores'\]"
        ),
    ):
        optimize(_model(), ["test-rename"])


def test_a_pass_that_hides_a_change_is_refused(throwaway):
    def silent(graph: Graph, report: PassReport) -> None:
        graph.node("drop").attrs["drop_prob"] = 0.5  # changes the graph, reports nothing

    throwaway("test-silent", silent)
    with pytest.raises(
        PassError,
        match="pass 'test-silent' \\(after \\[\\]\\) changed the graph but reported no change",
    ):
        optimize(_model(), ["test-silent"])


def test_a_pass_that_raises_is_named(throwaway):
    def boom(graph: Graph, report: PassReport) -> None:
        graph.add_node("Relu", ["nope"], name="bad")

    throwaway("test-boom", boom)
    with pytest.raises(
        PassError,
        match=r"pass 'test-boom' \(after \[\]\) failed: GraphError: input 'nope' of node 'bad'",
    ):
        optimize(_model(), ["test-boom"])


def test_no_change_is_said():
    g = Graph("plain")
    g.add_input("x", (None, 3))
    g.mark_output(g.add_node("Relu", ["x"], name="relu").outputs[0])
    opt, report = optimize(g, verify=True)
    assert not report.changed
    assert [p.summary() for p in report.passes] == [
        f"{n}: no change" for n in PIPELINES["inference"]
    ]
    assert "nodes  1 -> 1" in report.format()


def test_verify_needs_a_runnable_graph():
    g = Graph("opaque")
    g.add_input("x", (None, 3))
    n = g.add_node(
        "Opaque",
        ["x"],
        {"node": b"", "op_type": "Mystery", "domain": "com.example"},
        name="m",
        outputs=["y"],
        infer=False,
    )
    g.mark_output(n.outputs[0])
    with pytest.raises(
        PassError,
        match=r"cannot verify numerics: running the graph given to optimize failed: "
        r"no kernel for op 'Mystery' \(com.example\) at node 'm'",
    ):
        optimize(g, verify=True)
    opt, _ = optimize(g)  # without verify an opaque node is simply kept
    assert [x.op for x in opt.nodes] == ["Opaque"]


def test_run_pass_fills_sizes_and_timing():
    g = _model()
    report = run_pass(get_pass("fold-batchnorm"), g)
    assert report.nodes_before == 6 and report.nodes_after == 5
    assert report.macs_before > report.macs_after > 0 and report.seconds >= 0
    assert (
        get_pass("fold-batchnorm")(g).summary() == "fold-batchnorm: no change"
    )  # a Pass is callable


def test_describe_lists_every_pass_and_pipeline():
    text = passes.describe_passes()
    for name in (
        "fold-constants",
        "eliminate",
        "drop-dropout",
        "fold-batchnorm",
        "fold-affine",
        "cse",
    ):
        assert re.search(rf"^  {name}\s+\S", text, re.M), text
    assert (
        "inference        fold-constants -> eliminate -> drop-dropout -> fold-batchnorm -> "
        "fold-affine -> cse -> eliminate"
    ) in text


def test_optimized_graph_runs_with_other_batch_sizes():
    g = _model()
    opt, _ = optimize(g, verify=True, batch=3, seed=5)
    x = np.random.default_rng(1).standard_normal((7, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(
        runtime.run(opt, {"x": x})["logits"],
        runtime.run(g, {"x": x})["logits"],
        rtol=1e-5,
        atol=1e-5,
    )
