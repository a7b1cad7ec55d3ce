"""Dropout: drop_prob is the DROP probability, keep = 1 - drop_prob the KEEP probability
(docs/formulas.md).

- inference: inverted -> x exactly; classic -> x * keep;
- train: mask ~ Bernoulli(keep) from the seeded generator; inverted -> x * mask / keep; classic ->
  x * mask. Statistical checks use the binomial standard deviation and a 5-sigma bound (a false
  failure has probability ~6e-7 per check), with fixed seeds so a run is reproducible anyway;
- ONNX export (inference and train mode) run in onnxruntime, and import at opsets 9 to 21.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphnet
from graphnet import AttributeValueError, Graph, runtime
from tests.helpers import assert_close, export_checked, ort_run, single_node

SIGMAS = 5.0
# x * keep and x / keep round once in float32 (keep itself is rounded once too): 2 ulp.
RTOL_SCALE = 3e-7


def dropout_graph(shape, drop, scheme="inverted", *, mask=False, dtype="float32") -> Graph:
    attrs = {"drop_prob": drop, "scheme": scheme}
    return single_node(
        "Dropout", {"x": shape}, attrs=attrs, dtype=dtype, num_outputs=2 if mask else 1
    )  # outputs y0 (, y1)


def positive(shape, seed=0, dtype=np.float32):
    """Inputs in [1, 2): never 0, so y == 0 exactly where a unit was dropped."""
    return np.random.default_rng(seed).uniform(1.0, 2.0, shape).astype(dtype)


# -------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("drop", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference_inverted_is_identity_and_classic_scales_by_keep(drop, dtype):
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(dtype)
    for scheme, expect in (
        ("inverted", x.astype(np.float64)),
        ("classic", x.astype(np.float64) * (1 - drop)),
    ):
        out = runtime.run(dropout_graph(x.shape, drop, scheme, mask=True, dtype=dtype), {"x": x})
        y, mask = out["y0"], out["y1"]
        assert y.dtype == np.dtype(dtype) and mask.dtype == np.bool_ and mask.all()
        if scheme == "inverted":
            np.testing.assert_array_equal(y, x)
        else:
            assert_close(y, expect, rtol=RTOL_SCALE if dtype == "float32" else 1e-15, atol=0)


# ------------------------------------------------------------------------------------ train
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_train_is_reproducible_with_a_seed(scheme):
    g = dropout_graph((4, 8, 8), 0.4, scheme)
    x = positive((4, 8, 8))
    a = runtime.run(g, {"x": x}, mode="train", seed=11)["y0"]
    b = runtime.run(g, {"x": x}, mode="train", seed=11)["y0"]
    c = runtime.run(g, {"x": x}, mode="train", seed=12)["y0"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c), "another seed draws another mask"
    sess = runtime.Session(g)
    first = sess.run({"x": x}, mode="train", seed=3)["y0"]
    second = sess.run({"x": x}, mode="train")["y0"]  # no reseed: the generator moves on
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("plan", ["fast", "reference"])
def test_reseeding_one_session_draws_as_a_fresh_one(plan):
    """Session.seed restores a repeated int seed's kept initial state: each run equals a fresh
    session's with that seed, whatever ran between (other seeds, unseeded runs)."""
    g = dropout_graph((4, 8, 8), 0.4, "inverted")
    x = positive((4, 8, 8))

    def fresh(seed):
        return runtime.Session(g, plan=plan).run({"x": x}, mode="train", seed=seed)["y0"]

    sess = runtime.Session(g, plan=plan)
    for seed in (7, 7, 8, 7, None, 7, 7):
        got = sess.run({"x": x}, mode="train", seed=seed)["y0"]
        if seed is None:  # (the generator moved on from seed 7's first draw)
            assert not np.array_equal(got, fresh(7))
            continue
        np.testing.assert_array_equal(got, fresh(seed))
        again = sess.run({"x": x}, mode="train")["y0"]  # (no reseed: its second draw)
        fresh_sess = runtime.Session(g, plan=plan)
        fresh_sess.run({"x": x}, mode="train", seed=seed)
        np.testing.assert_array_equal(again, fresh_sess.run({"x": x}, mode="train")["y0"])


@pytest.mark.parametrize("drop", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_train_output_is_the_masked_formula(drop, scheme):
    x = positive((8, 16, 32), seed=2)
    out = runtime.run(
        dropout_graph(x.shape, drop, scheme, mask=True), {"x": x}, mode="train", seed=5
    )
    y, mask = out["y0"], out["y1"]
    keep = 1 - drop
    assert mask.dtype == np.bool_ and y.dtype == np.float32
    np.testing.assert_array_equal(y != 0, mask)  # x is never 0: a zero is a dropped unit
    expect = np.where(mask, x.astype(np.float64) / keep if scheme == "inverted" else x, 0.0)
    assert_close(y, expect, rtol=RTOL_SCALE, atol=0, what=f"{scheme} train formula")


@pytest.mark.parametrize("drop", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_train_statistics(drop, scheme):
    """Fraction of zeros ~ drop; E[y] = keep * x (classic) or x (inverted) (docs/formulas.md)."""
    n = 200_000
    x = positive((n,), seed=4).astype(np.float64)
    y = runtime.run(
        dropout_graph((n,), drop, scheme, dtype="float64"), {"x": x}, mode="train", seed=9
    )["y0"]
    keep = 1 - drop
    zeros = np.mean(y == 0)
    sd_frac = math.sqrt(drop * keep / n)  # binomial: Var(#zeros / n) = drop * keep / n
    assert abs(zeros - drop) < SIGMAS * sd_frac, (zeros, drop, sd_frac)
    # sum(y) = sum_i s * m_i * x_i with m_i ~ Bernoulli(keep) and s = 1/keep (inverted)
    # or 1 (classic): E = s * keep * sum(x), Var = s^2 * keep * drop * sum(x^2).
    s = 1 / keep if scheme == "inverted" else 1.0
    mean_expected = s * keep * x.sum()
    sd_sum = s * math.sqrt(keep * drop * float(np.sum(x * x)))
    assert abs(y.sum() - mean_expected) < SIGMAS * sd_sum, (y.sum(), mean_expected, sd_sum)
    target = 1.0 if scheme == "inverted" else keep  # mean of y / x: keep * x for classic
    assert abs(np.mean(y / x) - target) < SIGMAS * s * math.sqrt(keep * drop / n)


def test_train_drop_zero_keeps_everything():
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    for scheme in ("inverted", "classic"):
        out = runtime.run(
            dropout_graph(x.shape, 0.0, scheme, mask=True), {"x": x}, mode="train", seed=1
        )
        np.testing.assert_array_equal(out["y0"], x)
        assert out["y1"].all()


# ------------------------------------------------------------------------------ bad attributes
@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"drop_prob": 1.0}, r"drop_prob \(the DROP probability\) must be in \[0, 1\), got 1.0"),
        ({"drop_prob": -0.1}, r"must be in \[0, 1\)"),
        ({"drop_prob": "0.5"}, r"drop_prob must be a real number"),
        ({"scheme": "keep"}, r"scheme must be one of \('inverted', 'classic'\), got 'keep'"),
        ({"ratio": 0.5}, r"unknown attribute"),
    ],
)
def test_bad_attributes_name_the_node(attrs, match):
    g = Graph("g")
    g.add_input("x", (None, 8))
    with pytest.raises(AttributeValueError, match=match) as e:
        g.add_node("Dropout", ["x"], attrs, name="drop3")
    assert "node 'drop3' (Dropout)" in str(e.value)


# ---------------------------------------------------------------------------------- export
@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("mask", [False, True])
def test_inference_export_in_onnxruntime(opset, mask):
    x = np.random.default_rng(opset).standard_normal((2, 3, 4, 5)).astype(np.float32)
    for scheme, ops_expected in (
        ("inverted", ["Dropout"]),
        ("classic", ["Dropout", "Mul"] if mask else ["Mul"]),
    ):
        g = dropout_graph((None, 3, 4, 5), 0.3, scheme, mask=mask)
        model = export_checked(g, opset=opset)
        assert [n.op_type for n in model.graph.node] == ops_expected
        theirs = ort_run(model, {"x": x})
        y = theirs[g.outputs[0]]
        if scheme == "inverted":
            np.testing.assert_array_equal(y, x)
        else:
            assert_close(y, x.astype(np.float64) * 0.7, rtol=RTOL_SCALE, atol=0)
        assert_close(
            y, runtime.run(g, {"x": x})[g.outputs[0]], rtol=0, atol=0, what="ours vs onnxruntime"
        )
        if mask:
            assert theirs["y1"].dtype == np.bool_ and theirs["y1"].all()


@pytest.mark.parametrize("drop", [0.2, 0.6])
@pytest.mark.parametrize("scheme", ["inverted", "classic"])
def test_train_export_runs_in_onnxruntime_with_the_formula(drop, scheme):
    """ORT draws its own mask: check y == x * mask / keep (inverted) or x * mask (classic) with
    ORT's mask output, and that its mask keeps ~keep of the units (5 binomial sigmas)."""
    shape = (4, 8, 16, 16)
    x = positive(shape, seed=6)
    g = dropout_graph(shape, drop, scheme, mask=True)
    model = export_checked(g, mode="train")
    dropouts = [n for n in model.graph.node if n.op_type == "Dropout"]
    assert len(dropouts) == 1 and len(dropouts[0].input) == 3  # data, ratio, training_mode
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits[dropouts[0].input[2]] == np.array(True)
    assert inits[dropouts[0].input[1]] == pytest.approx(drop)
    out = ort_run(model, {"x": x})
    y, mask = out["y0"], out["y1"]
    keep = 1 - drop
    expect = np.where(mask, x.astype(np.float64) / keep if scheme == "inverted" else x, 0.0)
    # classic is ONNX's x * mask / keep followed by * keep: two float32 roundings more.
    assert_close(y, expect, rtol=RTOL_SCALE if scheme == "inverted" else 4e-7, atol=0)
    n = mask.size
    assert abs(mask.mean() - keep) < SIGMAS * math.sqrt(keep * drop / n)


def test_train_export_without_mask_output():
    x = positive((64, 64), seed=8)
    model = export_checked(dropout_graph(x.shape, 0.5, "inverted"), mode="train")
    y = ort_run(model, {"x": x})["y0"]
    kept = y != 0
    assert_close(y[kept], x[kept].astype(np.float64) * 2, rtol=RTOL_SCALE, atol=0)
    assert 0 < kept.mean() < 1


# ---------------------------------------------------------------------------------- import
def onnx_dropout(
    opset,
    *,
    ratio_attr=None,
    ratio=None,
    training=None,
    mask=False,
    ratio_as="init",
    ratio_dtype=np.float32,
    training_as="init",
    shape=(2, 3, 4),
):
    """Dropout at `opset`. ratio/training: constants given as initializers (or, with
    ratio_as/training_as="input", graph inputs; ratio_as="constant", a Constant node)."""
    mask_type = TensorProto.BOOL if opset >= 10 else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if mask:
        outputs.append(helper.make_tensor_value_info("mask", mask_type, shape))
    inits, nodes, node_in = [], [], ["x"]
    if ratio is not None:
        if ratio_as == "input":
            inputs.append(helper.make_tensor_value_info("ratio", TensorProto.FLOAT, []))
        elif ratio_as == "constant":
            nodes.append(
                helper.make_node(
                    "Constant", [], ["ratio"], value=numpy_helper.from_array(np.float32(ratio))
                )
            )
        else:
            inits.append(numpy_helper.from_array(np.array(ratio, ratio_dtype), "ratio"))
        node_in.append("ratio")
    if training is not None:
        if len(node_in) == 1:
            node_in.append("")
        if training_as == "input":
            inputs.append(helper.make_tensor_value_info("training_mode", TensorProto.BOOL, []))
        else:
            inits.append(numpy_helper.from_array(np.array(training), "training_mode"))
        node_in.append("training_mode")
    attrs = {} if ratio_attr is None else {"ratio": ratio_attr}
    nodes.append(
        helper.make_node("Dropout", node_in, ["y", "mask"] if mask else ["y"], name="d", **attrs)
    )
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(model, full_check=True)
    return model


CASES = [
    (9, dict(ratio_attr=0.3), 0.3),
    (9, dict(), 0.5),
    (10, dict(ratio_attr=0.3, mask=True), 0.3),
    (11, dict(ratio_attr=0.2), 0.2),
    (12, dict(ratio=0.3, training=False, mask=True), 0.3),
    (13, dict(ratio=0.4), 0.4),
    (13, dict(), 0.5),
    (13, dict(ratio=0.25, ratio_as="constant"), 0.25),
    (13, dict(ratio=0.1 + 1e-12, ratio_dtype=np.float64), 0.1 + 1e-12),  # double ratio kept exactly
    (21, dict(ratio=0.3, training=False), 0.3),
    (21, dict(ratio=0.3, mask=True), 0.3),
]


@pytest.mark.parametrize("opset, kw, drop", CASES)
def test_import_maps_to_inverted_dropout(opset, kw, drop):
    model = onnx_dropout(opset, **kw)
    g = graphnet.load(model)
    (node,) = [n for n in g.nodes if n.op == "Dropout"]
    assert g.op_counts() == {"Dropout": 1}
    assert node.attrs == {"drop_prob": drop, "scheme": "inverted"}
    x = np.random.default_rng(opset).standard_normal((2, 3, 4)).astype(np.float32)
    ours, theirs = runtime.run(g, {"x": x}), ort_run(model, {"x": x})
    np.testing.assert_array_equal(ours["y"], theirs["y"])
    np.testing.assert_array_equal(ours["y"], x)
    if kw.get("mask"):
        # The spec (and onnx.reference) says an inference mask is all True. onnxruntime's Dropout
        # 7-11 kernel (IdentityOp) writes all False instead (microsoft/onnxruntime#1507 calls the
        # value a "don't care"), so below opset 12 the oracle for the mask is onnx's reference
        # evaluator.
        from onnx.reference import ReferenceEvaluator

        oracle = (
            theirs["mask"] if opset >= 12 else ReferenceEvaluator(model).run(["mask"], {"x": x})[0]
        )
        assert ours["mask"].dtype == oracle.dtype == np.bool_
        np.testing.assert_array_equal(ours["mask"], oracle)
        assert ours["mask"].all()
    # In train mode the imported node is an inverted dropout with the imported ratio: every
    # output is 0 or x / keep (x is never 0 here, so the zeros are exactly the dropped units).
    out = runtime.run(g, {"x": x}, mode="train", seed=opset)
    kept = out["y"] != 0
    assert_close(out["y"][kept], x[kept].astype(np.float64) / (1 - drop), rtol=RTOL_SCALE, atol=0)
    if kw.get("mask"):
        np.testing.assert_array_equal(out["mask"], kept)


def test_import_keeps_the_opset9_float_mask_opaque():
    model = onnx_dropout(9, ratio_attr=0.3, mask=True)
    g = graphnet.load(model)
    assert g.op_counts() == {"Opaque": 1}, "opset-9 mask is a float tensor"


def _kept_fraction_ok(out, x, drop, who):
    """Every output is 0 or x / keep, and the dropped fraction is drop within 5 sigma."""
    kept = out["y"] != 0
    assert_close(
        out["y"][kept], x[kept].astype(np.float64) / (1 - drop), rtol=RTOL_SCALE, atol=0, what=who
    )
    assert abs(1 - kept.mean() - drop) < SIGMAS * math.sqrt(drop * (1 - drop) / x.size), (
        who,
        kept.mean(),
    )
    if "mask" in out:
        np.testing.assert_array_equal(out["mask"], kept)


@pytest.mark.parametrize("opset", [12, 13, 21])
def test_import_run_time_ratio_is_an_input(opset):
    """A ratio computed at run time (here a graph input) becomes the IR Dropout's `ratio` input:
    inference mode is the identity whatever it is; train mode drops with the FED ratio."""
    n = 20_000
    model = onnx_dropout(opset, ratio=0.0, ratio_as="input", mask=True, shape=(n,))
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.op == "Dropout" and node.inputs == ["x", "ratio"]
    x = positive((n,), seed=opset)
    for r in (0.2, 0.6):
        feeds = {"x": x, "ratio": np.array(r, np.float32)}
        ours, theirs = runtime.run(g, feeds), ort_run(model, feeds)
        np.testing.assert_array_equal(ours["y"], theirs["y"])
        np.testing.assert_array_equal(ours["mask"], theirs["mask"])
        _kept_fraction_ok(
            runtime.run(g, feeds, mode="train", seed=opset), x, r, f"graphnet train, ratio {r}"
        )
    back = export_checked(g)  # written back with its ratio input, and onnxruntime agrees
    assert list(back.graph.node[0].input) == ["x", "ratio"]
    np.testing.assert_array_equal(
        ort_run(back, {"x": x, "ratio": np.array(0.5, np.float32)})["y"], x
    )


@pytest.mark.parametrize("opset", [12, 21])
def test_import_run_time_training_mode_is_an_input(opset):
    """A training_mode computed at run time becomes the IR Dropout's `training_mode` input, which
    decides for this node whatever mode the graph runs in (ONNX's semantics)."""
    n, drop = 20_000, 0.3
    model = onnx_dropout(
        opset, ratio=drop, training=True, training_as="input", mask=True, shape=(n,)
    )
    g = graphnet.load(model)
    (node,) = g.nodes
    assert node.inputs == ["x", "", "training_mode"] and node.attrs["drop_prob"] == drop
    x = positive((n,), seed=opset)
    off, on = {"x": x, "training_mode": np.array(False)}, {"x": x, "training_mode": np.array(True)}
    for mode in ("inference", "train"):
        out = runtime.run(g, off, mode=mode)
        np.testing.assert_array_equal(out["y"], x)
        assert out["mask"].all()
        _kept_fraction_ok(
            runtime.run(g, on, mode=mode, seed=opset),
            x,
            drop,
            f"graphnet, training_mode=True, {mode}",
        )
    _kept_fraction_ok(ort_run(model, on), x, drop, "onnxruntime, training_mode=True")
    np.testing.assert_array_equal(ort_run(model, off)["y"], x)
    back = export_checked(g)
    assert list(back.graph.node[0].input)[2] == "training_mode"
    _kept_fraction_ok(ort_run(back, on), x, drop, "onnxruntime on our export, training_mode=True")


def test_run_time_ratio_zero_in_training_is_exactly_the_identity():
    """ratio 0 with training_mode True keeps every unit: deterministic, so equal to onnxruntime."""
    model = onnx_dropout(
        13, ratio=0.0, ratio_as="input", training=True, training_as="input", mask=True
    )
    g = graphnet.load(model)
    assert g.nodes[0].inputs == ["x", "ratio", "training_mode"]
    feeds = {
        "x": positive((2, 3, 4)),
        "ratio": np.array(0.0, np.float32),
        "training_mode": np.array(True),
    }
    ours, theirs = runtime.run(g, feeds), ort_run(model, feeds)
    for k in ("y", "mask"):
        np.testing.assert_array_equal(ours[k], theirs[k])
    np.testing.assert_array_equal(ours["y"], feeds["x"])


def test_run_time_inputs_errors():
    """A ratio of the wrong type or rank fails where the graph is built; an out-of-range ratio
    fed at run time fails naming the node."""
    from graphnet.errors import KernelError, ShapeError

    g = Graph("g")
    g.add_input("x", (2, 3))
    g.add_input("r", (2,))
    with pytest.raises(
        ShapeError, match=r"node 'd' \(Dropout\): ratio 'r' must be a scalar, got shape \(2\)"
    ):
        g.add_node("Dropout", ["x", "r"], name="d")
    g.add_input("t", (), "float32")
    with pytest.raises(
        ShapeError, match=r"node 'd' \(Dropout\): training_mode 't' must be bool, got float32"
    ):
        g.add_node("Dropout", ["x", "", "t"], name="d")
    model = onnx_dropout(13, ratio=0.0, ratio_as="input")
    with pytest.raises(
        KernelError, match=r"while executing d \(Dropout\).*ratio .* must be in \[0, 1\), got 1.0"
    ):
        runtime.run(
            graphnet.load(model),
            {"x": positive((2, 3, 4)), "ratio": np.array(1.0, np.float32)},
            mode="train",
        )


@pytest.mark.parametrize("drop", [0.0, 0.3, 0.75])
def test_export_import_round_trip(drop):
    g = dropout_graph((None, 5), drop, "inverted", mask=True)
    back = graphnet.load(export_checked(g))
    (node,) = back.nodes
    assert node.op == "Dropout" and node.attrs == {"drop_prob": drop, "scheme": "inverted"}
    assert node.outputs == ["y0", "y1"]


@pytest.mark.parametrize("opset, mask", [(12, False), (13, True), (21, True)])
def test_import_training_mode_true_is_the_mode_independent_dropout(opset, mask):
    """A training export (training_mode=True) imports as the IR's Dropout: train mode reproduces
    the ONNX node (same ratio, inverted scaling, ~drop of the units zeroed); inference mode is its
    inference form (identity), since the IR chooses the mode at run time."""
    n, drop = 20_000, 0.3
    model = onnx_dropout(opset, ratio=drop, training=True, mask=mask, shape=(n,))
    g = graphnet.load(model)
    assert g.op_counts() == {"Dropout": 1}
    assert g.nodes[0].attrs == {"drop_prob": drop, "scheme": "inverted"}
    x = positive((n,), seed=opset)
    np.testing.assert_array_equal(runtime.run(g, {"x": x})["y"], x)
    sd = math.sqrt(drop * (1 - drop) / n)
    theirs = ort_run(model, {"x": x})
    ours = runtime.run(g, {"x": x}, mode="train", seed=opset)
    for who, out in (("onnxruntime", theirs), ("graphnet", ours)):
        kept = out["y"] != 0
        assert_close(
            out["y"][kept],
            x[kept].astype(np.float64) / (1 - drop),
            rtol=RTOL_SCALE,
            atol=0,
            what=who,
        )
        assert abs(1 - kept.mean() - drop) < SIGMAS * sd, (who, kept.mean())
        if mask:
            np.testing.assert_array_equal(out["mask"], kept)


def test_train_export_import_round_trip():
    g = dropout_graph((None, 5), 0.4, "inverted", mask=True)
    exported = export_checked(g, mode="train")
    back = graphnet.load(exported)
    assert [(n.op, n.attrs) for n in back.nodes] == [
        ("Dropout", {"drop_prob": 0.4, "scheme": "inverted"})
    ]
    again = export_checked(back, mode="train")
    assert (
        [n.op_type for n in again.graph.node]
        == [n.op_type for n in exported.graph.node]
        == ["Dropout"]
    )


@pytest.mark.parametrize("others", ["seeded", "unseeded"])
@pytest.mark.parametrize("plan", ["fast", "reference"])
def test_threads_seeding_one_session_each_get_the_seeds_masks(plan, others):
    """Threads sharing a session, one running train mode with seed=0 in a loop, two others
    with seed=0 too or unseeded (their runs and the seeded ones interleave): every seeded run
    equals a fresh session's seed-0 run. Before, the seed restored one shared generator's state
    in place, or the unseeded runs drew from the seeded thread's generator: a run could draw
    from a state another thread's draws had moved on (4 of 5 trials, then 515 of 3000 runs
    wrong in read-only reviews' repros)."""
    import threading

    g = dropout_graph((8, 32, 32), 0.5, "inverted")
    x = positive((8, 32, 32))
    want = runtime.Session(g, plan=plan).run({"x": x}, mode="train", seed=0)["y0"]
    sess = runtime.Session(g, plan=plan)
    wrong: list[int] = []
    done = threading.Event()

    def seeded() -> None:
        for _ in range(300):
            got = sess.run({"x": x}, mode="train", seed=0)["y0"]
            if not np.array_equal(got, want):
                wrong.append(1)

    def other() -> None:
        if others == "seeded":
            seeded()
            return
        while not done.is_set():
            sess.run({"x": x}, mode="train")

    threads = [threading.Thread(target=other) for _ in range(2)]
    for t in threads:
        t.start()
    seeded()
    done.set()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} seeded runs drew another mask"


@pytest.mark.parametrize("plan", ["fast", "reference"])
def test_two_threads_continuing_one_seed_draw_its_first_two_masks(plan):
    """seed(7), then two threads each run one unseeded train run at once (a barrier): between
    them they draw a fresh seed-7 session's first and second masks. Before, the first thread
    to continue cleared the pending seed before it published its copy, so the other could
    draw from the generator before the seed (a read-only review's repro: 244 of 2000 trials).
    A small switch interval makes the threads interleave often."""
    import sys
    import threading

    g = dropout_graph((1, 64), 0.5, "inverted")
    x = positive((1, 64))
    fresh = runtime.Session(g, plan=plan)
    first = fresh.run({"x": x}, mode="train", seed=7)["y0"]
    second = fresh.run({"x": x}, mode="train")["y0"]
    want = sorted([first.tobytes(), second.tobytes()])
    sess = runtime.Session(g, plan=plan)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    wrong = 0
    try:
        for _ in range(300):
            sess.seed(7)
            barrier = threading.Barrier(2)
            got: list[bytes] = []

            def work(barrier: threading.Barrier, got: list[bytes]) -> None:
                barrier.wait()
                got.append(sess.run({"x": x}, mode="train")["y0"].tobytes())

            threads = [threading.Thread(target=work, args=(barrier, got)) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wrong += sorted(got) != want
    finally:
        sys.setswitchinterval(interval)
    assert not wrong, f"{wrong} of 300 pairs drew outside seed 7's first two masks"
