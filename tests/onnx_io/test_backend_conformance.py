"""ONNX's own conformance suite (`onnx.backend.test`) run on graphnet's backend (issue 4).

Which cases run: the node tests and the PyTorch-converted / PyTorch-operator model tests of the
operators in graphnet's scope, selected by the regexes of `INCLUDE` (one per operator, anchored on
the whole test name). Two families are deliberately NOT selected:
- `*_expanded*` node tests: they run the operator's ONNX *function body* (CastLike, Where, Less,
  Size, ReduceMax, ...) instead of the operator, i.e. they test other operators;
- PyTorch model tests that need an operator outside the scope (GLU: Split, Softmin: Neg, ...).
`test_selection_matches_the_models` checks the regexes against the models' actual node types, so a
regex that pulls in another operator (test_maxunpool for MaxPool, test_convinteger for Conv) or
misses a case of an in-scope operator fails.

Every selected case must pass, except those listed in `XFAIL` (name -> reason), which are strict
expected failures. Only the CPU variant of each case is collected (graphnet has no other device),
and nothing outside the selection is collected, so pytest's counts are the honest ones.

Rerun: python -m pytest tests/onnx_io/test_backend_conformance.py -q
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import helper
from onnx.backend.test.loader import load_model_tests

import graphnet.backend as gb
from graphnet.backend import GraphnetBackend
from graphnet.errors import InputError, UnsupportedOpError

pytestmark = (
    pytest.mark.slow
)  # real models / the whole conformance suite: `-m "not slow"` skips them

# ----------------------------------------------------------------------------------- the scope
# Operator -> regex over test names (without the device suffix). `(?!.*_expanded)` drops the
# function-body variants (see the module docstring).
_NE = r"(?!.*_expanded)"
INCLUDE: dict[str, str] = {
    # conv and pooling; test_convinteger / test_deform_conv / test_maxunpool / test_lppool excluded
    "Conv": r"test_(basic_)?conv_.*|test_Conv[123]d.*|test_operator_conv",
    "ConvTranspose": r"test_convtranspose.*|test_ConvTranspose2d.*|test_operator_convtranspose",
    "MaxPool": r"test_maxpool_.*|test_MaxPool[123]d.*|test_operator_maxpool",
    "AveragePool": r"test_averagepool_.*|test_AvgPool[123]d.*",
    "GlobalAveragePool": r"test_globalaveragepool.*",
    "GlobalMaxPool": r"test_globalmaxpool.*",
    # activations; test_selu / test_celu / test_thresholdedrelu excluded by the anchors
    "Relu": rf"test_relu{_NE}.*|test_ReLU|test_single_relu_model",
    "Sigmoid": r"test_sigmoid.*|test_Sigmoid",
    "Tanh": r"test_tanh.*|test_Tanh",
    "LeakyRelu": rf"test_leakyrelu{_NE}.*|test_LeakyReLU.*",
    "PRelu": rf"test_prelu{_NE}.*|test_PReLU_.*",
    "Elu": rf"test_elu{_NE}.*|test_ELU",
    "Softmax": rf"test_softmax_{_NE}.*|test_Softmax|test_softmax_(lastdim|functional_dim3)",
    "LogSoftmax": rf"test_logsoftmax_{_NE}.*|test_LogSoftmax|test_log_softmax_.*",
    "Dropout": r"test_(training_)?dropout.*",
    # linear and element-wise
    "Gemm": r"test_gemm_.*|test_Linear|test_operator_(addmm|mm)",
    "MatMul": r"test_matmul_.*|test_Linear_no_bias",  # test_matmulinteger excluded
    "Add": r"test_add(_bcast|_u?int\d+)?|test_operator_add(_broadcast|_size1_.*|constant)",
    "Sub": r"test_sub(_bcast|_example|_u?int\d+)?",
    "Mul": r"test_mul(_bcast|_example|_u?int\d+)?|test_operator_non_float_params",
    "Div": r"test_div(_bcast|_example|_u?int\d+(_trunc)?)?",
    "Sum": r"test_sum_.*",
    # test_maxpool / test_reduce_max / test_argmax excluded
    "Max": r"test_max_.*|test_operator_max",
    "Clip": rf"test_clip{_NE}.*|test_operator_clip",
    # normalization
    "BatchNormalization": r"test_batchnorm_.*|test_BatchNorm[123]d_.*",
    "LayerNormalization": rf"test_layer_normalization_{_NE}.*",
    "InstanceNormalization": r"test_instancenorm_.*|test_operator_symbolic_override",
    "GroupNormalization": rf"test_group_normalization_{_NE}.*",
    "LRN": r"test_lrn.*",
    # tensor
    "Flatten": r"test_flatten_.*|test_operator_(view|flatten)",
    "Reshape": r"test_reshape_.*|test_PixelShuffle",
    "Concat": r"test_concat_.*|test_operator_concat2",
    "Identity": r"test_identity.*",
    "Constant": r"test_constant",
    "Transpose": r"test_transpose_.*|test_operator_permute2",
    "Unsqueeze": r"test_unsqueeze_.*",
    "Squeeze": r"test_squeeze(_.*)?",  # not the real model test_squeezenet
    "Pad": (
        r"test_(constant|edge|reflect|wrap)_pad.*"
        r"|test_(Constant|Zero|Reflection|Replication)Pad2d|test_operator_pad"
    ),
}

SCOPE = frozenset(INCLUDE)

# Test name (without the device suffix) -> why it cannot pass. Each is a strict xfail.
_RANDOM_MASK = (
    "training-mode Dropout with ratio > 0: the expected output uses the mask of the suite's own "
    "generator (NumPy's legacy seed 0); graphnet draws its masks from its own generator, so they "
    "cannot be equal (the deterministic ratio-0 training cases pass)"
)
XFAIL: dict[str, str] = {
    "test_identity_opt": (
        "Identity of an optional(tensor) value: graphnet's IR values are tensors only"
    ),
    "test_identity_sequence": "Identity of a sequence value: graphnet's IR values are tensors only",
    "test_training_dropout": _RANDOM_MASK,
    "test_training_dropout_default": _RANDOM_MASK,
    "test_training_dropout_default_mask": _RANDOM_MASK,
    "test_training_dropout_mask": _RANDOM_MASK,
}

_SELECT = re.compile("^(?:" + "|".join(f"(?:{r})" for r in INCLUDE.values()) + ")$")


def selected(name: str) -> bool:
    """Is the backend test `name` (no device suffix) in scope?"""
    return bool(_SELECT.match(name))


# ------------------------------------------------------------------------------ the suite itself
with warnings.catch_warnings():
    # Generating the node cases evaluates expected values such as log(0) on purpose (their
    # RuntimeWarnings say nothing about graphnet).
    warnings.simplefilter("ignore", RuntimeWarning)
    backend_test = onnx.backend.test.BackendTest(GraphnetBackend, __name__)
backend_test.include(f"^{_SELECT.pattern[1:-1]}_cpu$")  # the runner's own filter: the rest skip


def _collect() -> dict[str, type]:
    """The suite's TestCase classes holding only the selected CPU cases. The runner's `include`
    only marks the others skipped; they are removed here instead (out of scope or another device:
    ~4,000 skips would bury the real count)."""
    out = {}
    for cls_name, cls in backend_test.test_cases.items():
        kept = 0
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            base = attr[: -len("_cpu")] if attr.endswith("_cpu") else None
            if base is None or not selected(base):
                delattr(cls, attr)
                continue
            kept += 1
            if base in XFAIL:
                setattr(
                    cls,
                    attr,
                    pytest.mark.xfail(reason=XFAIL[base], strict=True)(getattr(cls, attr)),
                )
        if kept:
            out[cls_name] = cls
    return out


globals().update(_collect())


# ------------------------------------------------------------ the node cases at older opsets
# The suite writes each node case at the op's newest opset. To check the import of the older
# forms too, every selected node case is carried by onnx's version converter down to each opset
# (9 and up) where its op's schema changed, wherever the converter has the adapters. The oracle is
# onnxruntime on that converted model, not the suite's expected values: the converter may change
# the meaning (Softmax 13 -> 11 keeps `axis`, whose meaning changed), and both runtimes must read
# the converted model the same way.
def _schema_versions() -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain == "":
            out.setdefault(schema.name, set()).add(schema.since_version)
    return out


def _older_opset_variants() -> list:
    from onnx import version_converter

    since, variants = _schema_versions(), []
    for case in load_model_tests(kind="node"):
        if not selected(case.name) or case.name in XFAIL:
            continue
        opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
        ops = {n.op_type for n in case.model.graph.node}
        for target in sorted({max(v, 9) for op in ops for v in since[op] if v < opset}):
            try:
                model = version_converter.convert_version(case.model, target)
                onnx.checker.check_model(model, full_check=True)
            except Exception:  # no adapter for this op and version: this variant does not exist
                continue
            variants.append(pytest.param(case, model, id=f"{case.name}-opset{target}"))
    return variants


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the converter warns about adapters it lacks
    OLDER_OPSET_VARIANTS = _older_opset_variants()


@pytest.mark.parametrize("case, model", OLDER_OPSET_VARIANTS)
def test_node_case_at_older_opset_matches_onnxruntime(case, model):
    from tests.helpers import ort_session

    rep = gb.prepare(model)
    sess = ort_session(model)
    names = [i.name for i in sess.get_inputs()]
    for inputs, _ in case.data_sets:
        feeds = [np.asarray(v) for v in inputs]
        ours, theirs = rep.run(feeds), sess.run(None, dict(zip(names, feeds, strict=True)))
        # float32 single ops: rtol 1e-5, atol 1e-6 (the suite itself allows rtol 1e-3).
        backend_test.assert_similar_outputs(theirs, list(ours), rtol=1e-5, atol=1e-6)


def test_older_opset_variants_exist():
    """The converter has adapters for most in-scope ops: a sanity bound, so that an onnx upgrade
    that loses them shows up instead of silently shrinking the check."""
    ops = {n.op_type for p in OLDER_OPSET_VARIANTS for n in p.values[1].graph.node}
    assert (
        len(OLDER_OPSET_VARIANTS) >= 300
        and {"Conv", "MaxPool", "AveragePool", "Softmax", "Dropout", "Reshape"} <= ops
    )


# ------------------------------------------------------------------------- checks of the scope
def _all_cases() -> list:
    kinds = ("node", "real", "simple", "pytorch-converted", "pytorch-operator")  # BackendTest's
    return [c for kind in kinds for c in load_model_tests(kind=kind)]


def _ops(case) -> set[str]:
    if case.model is None and case.model_dir is None:
        return {"<a real model to download: not in scope>"}
    model = case.model if case.model is not None else onnx.load(f"{case.model_dir}/model.onnx")
    return {n.op_type for n in model.graph.node}


def test_selection_matches_the_models():
    """The regexes select exactly the cases whose model uses in-scope ops only (the Constant
    helper included), minus the function-body `_expanded` variants."""
    wrong, missed = [], []
    for case in _all_cases():
        ops = _ops(case)
        in_scope = ops <= SCOPE and "_expanded" not in case.name
        if selected(case.name) and not in_scope:
            wrong.append((case.name, sorted(ops - SCOPE)))
        elif in_scope and not selected(case.name):
            missed.append((case.name, sorted(ops)))
    assert not wrong, f"selected but out of scope: {wrong}"
    assert not missed, f"in scope but not selected: {missed}"


def test_every_xfail_is_selected():
    names = {c.name for c in _all_cases()}
    assert all(n in names and selected(n) for n in XFAIL), sorted(
        n for n in XFAIL if n not in names or not selected(n)
    )


# ----------------------------------------------------------------------- the backend interface
def _model(nodes, inputs, outputs, opset, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f(name, shape, elem=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _two_in_two_out():
    nodes = [helper.make_node("Sub", ["a", "b"], ["d"]), helper.make_node("Add", ["a", "b"], ["s"])]
    return _model(nodes, [_f("a", (2, 3)), _f("b", (2, 3))], [_f("s", (2, 3)), _f("d", (2, 3))], 13)


def test_rep_run_takes_list_dict_and_returns_outputs_in_graph_order():
    rep = gb.prepare(_two_in_two_out())
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((2, 3)).astype(np.float32),
        rng.standard_normal((2, 3)).astype(np.float32),
    )
    for out in (
        rep.run([a, b]),
        rep.run({"b": b, "a": a}),
        gb.run_model(_two_in_two_out(), [a, b]),
    ):
        assert len(out) == 2
        np.testing.assert_array_equal(out[0], a + b)  # graph output order: s, then d
        np.testing.assert_array_equal(out[1], a - b)
        np.testing.assert_array_equal(out["d"], a - b)  # namedtuple-like access by output name
    with pytest.raises(InputError, match=r"takes 2 input\(s\) \['a', 'b'\], got 1"):
        rep.run([a])
    with pytest.raises(InputError, match=r"input 'a' must be float32, got float64"):
        rep.run([a.astype(np.float64), b])


def test_rep_run_single_array_and_initializers_are_not_inputs():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = _model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        [_f("x", (2, 3)), _f("w", (2, 3))],
        [_f("y", (2, 3))],
        13,
        [onnx.numpy_helper.from_array(w, "w")],
    )
    x = np.full((2, 3), 2.0, np.float32)
    (y,) = gb.prepare(model).run(x)
    np.testing.assert_array_equal(y, 2 * w)


@pytest.mark.parametrize("opset", [11, 13])
def test_run_node_builds_the_model_at_the_given_opset(opset):
    """run_node types the graph inputs from the arrays and honours opset_version: Softmax(axis=1)
    on (2, 3, 4) normalizes over the 12 trailing values before opset 13, over axis 1 alone after."""
    x = np.random.default_rng(opset).standard_normal((2, 3, 4)).astype(np.float32)
    (y,) = gb.run_node(helper.make_node("Softmax", ["x"], ["y"], axis=1), [x], opset_version=opset)
    e = np.exp(x.astype(np.float64))
    if opset < 13:
        want = (e.reshape(2, 12) / e.reshape(2, 12).sum(axis=1, keepdims=True)).reshape(x.shape)
    else:
        want = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_devices():
    assert (
        gb.supports_device("CPU")
        and not gb.supports_device("CUDA")
        and not gb.supports_device("nonsense")
    )
    with pytest.raises(InputError, match=r"CPU only, not on 'CUDA'"):
        gb.prepare(_two_in_two_out(), "CUDA")


def _bn_model(training_mode: int | None, opset: int, extra_outputs: bool):
    c = 3
    inits = [
        onnx.numpy_helper.from_array(v, k)
        for k, v in {
            "s": np.ones(c, np.float32),
            "b": np.zeros(c, np.float32),
            "m": np.zeros(c, np.float32),
            "v": np.ones(c, np.float32),
        }.items()
    ]
    outs = ["y", "rm", "rv"] if extra_outputs else ["y"]
    if extra_outputs and opset < 14:
        outs += ["", ""]  # opsets 7-13: 1 or 5 outputs
    attrs = {} if training_mode is None else {"training_mode": training_mode}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outs, **attrs)
    shapes = {"y": (4, c, 2), "rm": (c,), "rv": (c,)}
    return _model([node], [_f("x", (4, c, 2))], [_f(o, shapes[o]) for o in outs if o], opset, inits)


def _dropout_model(training):
    inits = [onnx.numpy_helper.from_array(np.array(0.5, np.float32), "r")]
    ins = ["x", "r"]
    nodes = []
    if training is not None:
        nodes.append(
            helper.make_node(
                "Constant", [], ["t"], value=onnx.numpy_helper.from_array(np.array(training))
            )
        )
        ins.append("t")
    nodes.append(helper.make_node("Dropout", ins, ["y"]))
    return _model(nodes, [_f("x", (4, 3, 2))], [_f("y", (4, 3, 2))], 13, inits)


@pytest.mark.parametrize(
    "model, mode",
    [
        (_bn_model(None, 15, False), "inference"),
        (_bn_model(0, 15, False), "inference"),
        (_bn_model(1, 15, True), "train"),
        (_bn_model(1, 15, False), "train"),
        (_bn_model(None, 9, True), "train"),  # opsets 7-13: the statistics outputs mean training
        (_bn_model(None, 9, False), "inference"),
        (_dropout_model(None), "inference"),
        (_dropout_model(False), "inference"),
        (_dropout_model(True), "train"),
    ],
)
def test_mode_rule(model, mode):
    """The backend runs a model in train mode iff a node asks for training (graphnet.backend)."""
    assert gb.model_mode(model) == mode
    rep = gb.prepare(model, seed=0)  # seeded: the train-mode Dropout check below is reproducible
    assert rep.mode == mode
    x = (np.arange(24, dtype=np.float32).reshape(4, 3, 2) - 11) / 4
    y = rep.run([x])[0]
    if model.graph.node[-1].op_type == "Dropout":
        kept = y != 0
        if mode == "inference":
            np.testing.assert_array_equal(y, x)
        else:  # x has one zero (x == 0 at index 11): dropped units are the other zeros
            assert 0 < kept.sum() < x.size
            np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-7)
    else:
        # scale 1, bias 0, running mean 0, var 1: inference is x / sqrt(1 + eps); train
        # normalizes each channel with its batch statistics, so every channel has mean 0.
        if mode == "inference":
            np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)
        else:
            np.testing.assert_allclose(y.mean(axis=(0, 2)), 0, atol=1e-6)
    assert gb.prepare(model, mode="inference").mode == "inference"  # the override


def test_prepare_reports_an_operator_graphnet_cannot_run():
    model = _model([helper.make_node("Selu", ["x"], ["y"])], [_f("x", (2,))], [_f("y", (2,))], 13)
    with pytest.raises(
        UnsupportedOpError, match=r"no kernel for op 'Selu' \(ai.onnx\) at node 'y'"
    ):
        gb.prepare(model)
