"""Real PyTorch-exported models: import, run, round-trip and optimize them.

The .onnx files and their reference data in tests/data/torch/ were made once by
scripts/make_torch_models.py (torch 2.13, TorchScript and dynamo exporters) and are committed, so
these tests never need torch. Each `<model>.npz` holds, per batch size B, the seeded input under
`b{B}/input` and PyTorch's own outputs under `b{B}/<graph output name>` (PyTorch is the
independent oracle; onnxruntime is the second one).

Tolerances: whole models compare with rtol 1e-4, atol 1e-5 (README's whole-model bound): PyTorch,
onnxruntime and NumPy sum the convolutions' many float32 products in different orders, and the
errors compound over a dozen layers (observed: up to ~2.4e-6 absolute on values of size ~7).

An importer/op gap makes a case fail visibly as a strict xfail whose reason names the gap (see
`GAPS`), so the owner sees it turn into an XPASS when it is closed.
"""

from __future__ import annotations

import math
import os
from functools import cache

import numpy as np
import onnx
import pytest

import graphnet
from graphnet import runtime
from graphnet.ir import Graph
from tests import helpers
from tests.helpers import ort_run

DATA = helpers.TORCH_DATA
RTOL, ATOL = 1e-4, 1e-5  # whole models, see the module docstring
BATCHES = (1, 3)  # as saved by scripts/make_torch_models.py
MAX_BYTES = 200_000

INFERENCE_MODELS = [
    "cnn_ts_op9",
    "cnn_ts_op13",
    "cnn_ts_op17",
    "cnn_dynamo",
    "cnn_dynamo_raw",
    "resnet_block",
    "view_flatten",
    "norms_acts",
    "ws_conv",
    "conv3d_video",
    "gn_ln",  # GroupNorm's run-time Reshape, then LayerNorm over (C,H,W): unknown dims, not N
    "gn_ln_op13",  # the same with LayerNorm as opset-13 primitive ops and 0-d constants
]
ALL_MODELS = INFERENCE_MODELS + ["bn_train"]
BN_TRAIN_DROPOUT = 0.25  # the Dropout ratio bn_train was exported with

# Ops that the inference pipeline must remove entirely. Every BatchNormalization: the foldable
# ones into their Conv/ConvTranspose/Gemm, the rest (after a ReLU, BN->BN) become a per-channel
# Mul + Add (DESIGN.md). ws_conv's weight standardization reads only the constant weight, so
# constant folding must turn it into a plain kernel.
MUST_FOLD = {"BatchNormalization", "Dropout"}
MUST_FOLD_IN = {"ws_conv": {"ReduceMean", "Pow", "Sqrt", "Div", "Sub"}}

# "<test>:<case>" -> the exact gap that makes that case fail today. Strict: closing a gap makes
# the case XPASS, which fails the run until its entry is removed here.
GAPS: dict[str, str] = {}
_USED_GAPS: set[str] = set()


def gap(key: str) -> list:
    """The strict xfail mark for `key` if it has a known gap (see `GAPS`)."""
    _USED_GAPS.add(key)
    reason = GAPS.get(key)
    return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []


def cases(test: str, values: list[str]) -> list:
    """`values` as pytest params, each marked with its known gap for `test`, if any."""
    return [pytest.param(v, marks=gap(f"{test}:{v}"), id=v) for v in values]


# ----------------------------------------------------------------------------- data


@cache
def onnx_model(name: str) -> onnx.ModelProto:
    return onnx.load(os.path.join(DATA, f"{name}.onnx"))


@cache
def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(DATA, f"{name}.npz")) as z:
        return {k: z[k] for k in z.files}


def feeds(name: str, batch: int) -> dict[str, np.ndarray]:
    return {"input": reference(name)[f"b{batch}/input"]}


def expected(name: str, batch: int, prefix: str = "") -> dict[str, np.ndarray]:
    """PyTorch's outputs for `batch`, keyed by graph output name (`prefix` "eval/" for the
    eval-mode outputs of a training-mode export)."""
    head = f"b{batch}/{prefix}"
    return {
        k[len(head) :]: v
        for k, v in reference(name).items()
        if k.startswith(head) and "/" not in k[len(head) :] and k != f"{head}input"
    }


def graph_output_names(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def load(name: str) -> Graph:
    return graphnet.load(os.path.join(DATA, f"{name}.onnx"))


def assert_matches(actual: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    for out, ref in want.items():
        assert out in actual, f"{what}: output '{out}' missing (got {sorted(actual)})"
        got = np.asarray(actual[out])
        assert got.shape == ref.shape, f"{what} '{out}': shape {got.shape} != PyTorch's {ref.shape}"
        assert got.dtype == np.float32, f"{what} '{out}': dtype {got.dtype}"
        np.testing.assert_allclose(
            got, ref, rtol=RTOL, atol=ATOL, err_msg=f"{what} '{out}' vs PyTorch"
        )


def assert_dropout_of(dropped: np.ndarray, features: np.ndarray, ratio: float, what: str) -> None:
    """`dropped` is an inverted dropout of `features`: each element is 0 or x / (1 - ratio), and
    the share of zeroed elements (among nonzero inputs: a zero input hides its mask) is `ratio`
    within 5 binomial standard deviations."""
    assert dropped.shape == features.shape, f"{what}: {dropped.shape} != {features.shape}"
    kept = dropped != 0
    np.testing.assert_allclose(
        dropped[kept],
        features[kept] / np.float32(1 - ratio),
        rtol=1e-6,
        atol=1e-7,
        err_msg=f"{what}: kept elements are not scaled by 1/(1-ratio)",
    )
    live = features != 0
    n = int(live.sum())
    share = float(np.mean(~kept[live]))
    bound = 5 * math.sqrt(ratio * (1 - ratio) / n)
    assert abs(share - ratio) < bound, f"{what}: dropped {share:.3f} of {n} elements, ratio {ratio}"


# ----------------------------------------------------------------------------- the files


@pytest.mark.parametrize("name", ALL_MODELS)
def test_committed_files_are_small_and_complete(name):
    for ext in ("onnx", "npz"):
        size = os.path.getsize(os.path.join(DATA, f"{name}.{ext}"))
        assert size < MAX_BYTES, f"{name}.{ext} is {size} bytes"
    model = onnx_model(name)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch axis is not dynamic"
    for b in BATCHES:
        want = expected(name, b)
        assert sorted(want) == sorted(graph_output_names(model)), f"npz outputs, batch {b}"
        assert reference(name)[f"b{b}/input"].shape[0] == b
        for out, y in want.items():  # a constant or broken reference would make weak tests
            assert y.shape[0] == b and np.isfinite(y).all() and y.std() > 1e-3, f"{out}, batch {b}"


@pytest.mark.parametrize("name", INFERENCE_MODELS)
def test_onnxruntime_reproduces_pytorch(name):
    """Sanity of the committed data: the exporter's file, run by onnxruntime, is PyTorch."""
    for b in BATCHES:
        assert_matches(
            ort_run(onnx_model(name), feeds(name, b)), expected(name, b), f"onnxruntime, batch {b}"
        )


@pytest.mark.parametrize("name", cases("import", ALL_MODELS))
def test_import_keeps_interface_and_parameters(name):
    model = onnx_model(name)
    g = load(name)
    assert g.inputs == ["input"]
    assert g.outputs == graph_output_names(model)
    shape = g.values["input"].shape
    want = tuple(
        d.dim_value or d.dim_param or None for d in model.graph.input[0].type.tensor_type.shape.dim
    )
    # The exporters' symbolic batch (TorchScript's "batch", dynamo's "s0"...) is kept as named.
    assert shape == want and isinstance(shape[0], str), f"input shape {shape}, file says {want}"
    for t in model.graph.initializer:
        np.testing.assert_array_equal(
            g.params[t.name], onnx.numpy_helper.to_array(t), err_msg=t.name
        )
    opaque = sorted({n.attrs["op_type"] for n in g.nodes if n.op == "Opaque"})
    if name != "bn_train":  # bn_train may keep its training-mode nodes opaque (see its tests)
        assert not opaque, f"ONNX ops imported as opaque: {opaque}"


@pytest.mark.parametrize("name", cases("runtime", INFERENCE_MODELS))
def test_numpy_runtime_reproduces_pytorch(name):
    session = runtime.Session(load(name))
    for b in BATCHES:
        assert_matches(
            session.run(feeds(name, b)), expected(name, b), f"graphnet runtime, batch {b}"
        )


@pytest.mark.parametrize("name", cases("roundtrip", INFERENCE_MODELS))
def test_export_round_trip_runs_in_onnxruntime(name):
    original = onnx_model(name)
    exported = load(name).to_onnx()
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == ["input"]
    assert graph_output_names(exported) == graph_output_names(original)
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param, "batch axis lost"
    for b in BATCHES:
        assert_matches(
            ort_run(exported, feeds(name, b)), expected(name, b), f"re-exported, batch {b}"
        )


def assert_optimized(g: Graph) -> None:
    """No BatchNormalization directly after a Conv/ConvTranspose/Gemm/MatMul, no Dropout."""
    producers = g.producers()
    for n in g.nodes:
        op = n.attrs["op_type"] if n.op == "Opaque" else n.op  # an opaque Dropout is one too
        assert op != "Dropout", f"Dropout '{n.name}' ({n.op}) survived optimize"
        if op == "BatchNormalization":
            p = producers.get(n.inputs[0])
            assert p is None or p.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"), (
                f"BatchNormalization '{n.name}' after {p.op} '{p.name}' was not folded"
            )


@pytest.mark.parametrize("name", cases("optimize", INFERENCE_MODELS))
def test_optimize_folds_and_keeps_outputs(name):
    from graphnet.passes.manager import optimize

    g = load(name)
    opt, report = optimize(g)
    assert isinstance(report.format(), str)
    assert_optimized(opt)
    left = (MUST_FOLD | MUST_FOLD_IN.get(name, set())) & set(opt.op_counts())
    assert not left, f"ops that optimize should have removed: {sorted(left)}"
    assert opt.inputs == g.inputs and opt.outputs == g.outputs
    exported = opt.to_onnx()
    onnx.checker.check_model(exported, full_check=True)
    session = runtime.Session(opt)
    for b in BATCHES:
        assert_matches(
            session.run(feeds(name, b)),
            expected(name, b),
            f"optimized, graphnet runtime, batch {b}",
        )
        assert_matches(
            ort_run(exported, feeds(name, b)),
            expected(name, b),
            f"optimized, onnxruntime, batch {b}",
        )


# ----------------------------------------------------------------------------- bn_train
# Exported with TrainingMode.TRAINING: BatchNormalization(training_mode=1) normalizes with the
# batch's statistics and Dropout(training_mode=True) is random. `features` (BN + ReLU) is
# deterministic; `dropped` = Dropout(features) can only be checked for its pattern.


def check_train_outputs(outs: dict[str, np.ndarray], batch: int, what: str) -> None:
    want = expected("bn_train", batch)
    assert_matches({"features": outs["features"]}, {"features": want["features"]}, what)
    assert_dropout_of(outs["dropped"], outs["features"], BN_TRAIN_DROPOUT, f"{what} 'dropped'")


def test_bn_train_onnxruntime_reproduces_pytorch():
    for b in BATCHES:
        check_train_outputs(
            ort_run(onnx_model("bn_train"), feeds("bn_train", b)), b, f"onnxruntime, batch {b}"
        )


@pytest.mark.parametrize("mode", cases("bn_train runtime", ["train", "inference"]))
def test_bn_train_numpy_runtime(mode):
    """Train mode is PyTorch's train-mode forward; inference mode is its eval-mode forward with
    the running statistics stored in the file (the graph is mode-independent)."""
    g = load("bn_train")
    for b in BATCHES:
        outs = runtime.run(g.copy(), feeds("bn_train", b), mode=mode, seed=b)
        if mode == "train":
            check_train_outputs(outs, b, f"graphnet runtime (train), batch {b}")
        else:
            assert_matches(
                outs, expected("bn_train", b, "eval/"), f"graphnet runtime (inference), batch {b}"
            )


@pytest.mark.parametrize("mode", cases("bn_train export", ["train", "inference"]))
def test_bn_train_export_round_trip(mode):
    """Train-mode export reproduces PyTorch's train-mode forward, inference-mode its eval one."""
    exported = load("bn_train").to_onnx(mode=mode)
    onnx.checker.check_model(exported, full_check=True)
    names = graph_output_names(exported)
    # train mode may append the new BN running statistics as extra outputs, after the model's own
    assert names[:2] == ["features", "dropped"], names
    for b in BATCHES:
        outs = ort_run(exported, feeds("bn_train", b))
        if mode == "train":
            check_train_outputs(outs, b, f"re-exported (train), batch {b}")
        else:
            want = expected("bn_train", b, "eval/")
            assert_matches({k: outs[k] for k in want}, want, f"re-exported (inference), batch {b}")


@pytest.mark.parametrize("_", cases("bn_train optimize", ["bn_train"]))
def test_bn_train_optimize_for_inference(_):
    """The inference pipeline on a training-mode export gives PyTorch's eval-mode model."""
    from graphnet.passes.manager import optimize

    opt, _report = optimize(load("bn_train"))
    assert_optimized(opt)
    exported = opt.to_onnx()
    for b in BATCHES:
        want = expected("bn_train", b, "eval/")
        assert_matches(
            runtime.run(opt, feeds("bn_train", b)), want, f"optimized, graphnet runtime, batch {b}"
        )
        assert_matches(
            ort_run(exported, feeds("bn_train", b)), want, f"optimized, onnxruntime, batch {b}"
        )


# ----------------------------------------------------------------------------- the checks can fail


def test_optimized_check_rejects_an_unoptimized_graph():
    with pytest.raises(AssertionError, match="BatchNormalization .* after Conv"):
        assert_optimized(load("resnet_block"))


def test_dropout_check_rejects_eval_outputs_and_a_wrong_ratio():
    ours = ort_run(onnx_model("bn_train"), feeds("bn_train", 3))
    assert_dropout_of(ours["dropped"], ours["features"], BN_TRAIN_DROPOUT, "onnxruntime")
    with pytest.raises(AssertionError, match="not scaled"):  # eval mode: dropped == features
        evals = expected("bn_train", 3, "eval/")
        assert_dropout_of(evals["dropped"], evals["features"], BN_TRAIN_DROPOUT, "eval")
    # Rescaled to 1/(1-0.5) the kept values fit a 50% dropout, but only ~25% are zeroed.
    with pytest.raises(AssertionError, match="dropped 0.2"):
        assert_dropout_of(ours["dropped"] * np.float32(1.5), ours["features"], 0.5, "ratio")


def test_every_listed_gap_belongs_to_a_collected_case():
    """A GAPS entry whose key matches no case would silently mark nothing."""
    assert set(GAPS) <= _USED_GAPS, f"stale GAPS keys: {sorted(set(GAPS) - _USED_GAPS)}"
