"""The real architectures the onnx package ships for its own backend tests (onnx/backend/test/data/
light): import, NumPy runtime vs the shipped expected output and onnxruntime, and `optimize`.

The light models are full-size AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet,
SqueezeNet, VGG-19 and ZFNet-512 graphs (opset 9, IR 3) whose every weight is written as
`ConstantOfShape(shape, value=0.02)`, so that the files are 4-214 KB. Their input is what onnx's
backend runner feeds them (`Runner.generate_dummy_data(random=False)`: arange(n) / n in the input's
shape, batch 1) and the expected output is the shipped `light_<model>_output_0.pb`.

That expected output is nearly uninformative: with every weight equal, every channel and every
class computes the same number, so the softmax models expect 1/1000 everywhere and DenseNet the
same value 1000 times. A kernel that permuted channels, or a BN fold that scaled the wrong
channel, would still pass. So every model whose parameters fit in a few seconds is ALSO run with
the ConstantOfShape weights replaced by seeded random ones (`randomized`), compared with
onnxruntime and optimized, so that channel order, per-channel folds and Gemm layouts are seen.

Each model is imported and run once per form (module-scoped `zoo` fixture caches the results).

Tolerances:
- vs the shipped output: onnx's own backend test tolerance for these models (its loader's
  defaults rtol 1e-3, atol 1e-7), which the reference evaluator's output was checked with;
- ours vs onnxruntime, optimized vs original (both under onnxruntime): rtol 1e-4, atol 1e-5.
  These are 22-120 layers of float32 sums of up to 25 088 products, added in another order by
  NumPy's BLAS than by onnxruntime's MLAS, and a fold rounds each folded weight to float32 once
  more; the largest difference seen is 2e-6 (DenseNet-121 outputs of size ~7), while a wrong
  channel order or a wrong fold changes outputs by O(1e-1).
- Softmax outputs are compared through their logits (the Softmax input, also fetched from both
  runtimes): the logits relatively, with the tolerances above, and the probabilities only as far as
  the logits determine them (`helpers.assert_softmax_close`). With the shipped 0.02 weights the
  logits are 0.5 to 4e31 and mathematically equal across the 1000 classes; their float32 sums
  differ by a few units in the last place depending on the BLAS build, the CPU and the thread
  count, and at 1e10 one ulp (1024) decides which classes the softmax keeps: the probabilities of
  those models are not a property of the runtime.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import graphnet
from graphnet import runtime
from graphnet.passes.manager import optimize
from tests import helpers
from tests.helpers import assert_close, assert_softmax_close, ort_run

pytestmark = (
    pytest.mark.slow
)  # real models / the whole conformance suite: `-m "not slow"` skips them

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)
# With random weights: every model but the three whose 61-144 M parameters are almost all
# fully-connected weights (AlexNet, ZFNet-512, VGG-19). Materializing those costs 5-20 s and
# ~4 GB per model, and each of their op types (Conv with bias, LRN, MaxPool, Gemm, Dropout,
# Softmax) is run with random weights by Inception v1 or SqueezeNet below.
RANDOMIZED = ("densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet")
SHIPPED_TOL = dict(rtol=1e-3, atol=1e-7)  # onnx.backend.test.loader defaults
TOL = dict(rtol=1e-4, atol=1e-5)


def backend_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The feeds onnx's backend runner makes for a light model: every graph input that is not an
    initializer gets `Runner.generate_dummy_data(x, seed=0, name=..., random=False)`."""
    from onnx.backend.test.runner import Runner

    inits = {t.name for t in model.graph.initializer}
    return {
        i.name: Runner.generate_dummy_data(i, seed=0, name=model.graph.name, random=False)
        for i in model.graph.input
        if i.name not in inits
    }


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of a light model whose ConstantOfShape weights are seeded random initializers:
    weights (rank >= 2) He-uniform U(-b, b), b = sqrt(6 / fan_in), so ReLU activations keep
    their scale; BN scale and variance and Caffe2 scale-layer multipliers U(0.5, 1.5) (positive
    variance, no sign flips); BN mean and shift and every bias U(-0.1, 0.1). Then the last linear
    layer before the Softmax is rescaled so the logits have standard deviation 2 on a random
    input, which keeps the softmax away from both uniform and one-hot outputs."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    readers = collections.defaultdict(list)
    for n in g.node:
        for k, i in enumerate(n.input):
            readers[i].append((n, k))
    keep, new = [], []
    for n in g.node:
        if n.op_type != "ConstantOfShape":
            keep.append(n)
            continue
        shape = tuple(int(d) for d in inits[n.input[0]])
        reader, k = readers[n.output[0]][0]
        if (
            reader.op_type == "Unsqueeze"
        ):  # DenseNet / Inception v2 scale layer: Unsqueeze -> Mul / Add
            reader, k = readers[reader.output[0]][0]
        if len(shape) >= 2:
            bound = np.sqrt(6.0 / int(np.prod(shape[1:])))
            arr = rng.uniform(-bound, bound, shape)
        elif (reader.op_type, k) in (
            ("BatchNormalization", 1),
            ("BatchNormalization", 4),
            ("Mul", 1),
        ):
            arr = rng.uniform(0.5, 1.5, shape)
        else:
            arr = rng.uniform(-0.1, 0.1, shape)
        new.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new)
    if m.ir_version < 4:  # IR 3 lists every initializer among the graph inputs
        g.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in new)
    _rescale_logits(m, rng)
    return m


def _rescale_logits(m: onnx.ModelProto, rng: np.random.Generator) -> None:
    """Scale the Conv / Gemm that feeds the Softmax (through Relu, pooling and reshapes, which
    commute with a positive scale) so that the Softmax input has standard deviation 2."""
    g = m.graph
    softmax = next((n for n in g.node if n.op_type == "Softmax"), None)
    if softmax is None:
        return
    producers = {o: n for n in g.node for o in n.output}
    node = producers[softmax.input[0]]
    while node.op_type in (
        "Relu",
        "GlobalAveragePool",
        "AveragePool",
        "MaxPool",
        "Reshape",
        "Flatten",
    ):
        node = producers[node.input[0]]
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.append(
        helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None)
    )
    feeds = {k: rng.random(v.shape, dtype=np.float32) for k, v in backend_input(m).items()}
    factor = 2.0 / float(ort_run(probe, feeds)[softmax.input[0]].std())
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        del node.attribute[:]
        attrs["alpha"] = attrs.get("alpha", 1.0) * factor
        attrs["beta"] = attrs.get("beta", 1.0) * factor
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    else:  # Conv: weight and bias are initializers now
        for t in g.initializer:
            if t.name in node.input[1:]:
                t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), t.name)
                )


@dataclass
class ZooRun:
    """One model, one set of weights, run and optimized once."""

    name: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    graph: graphnet.Graph | None = None
    ours: np.ndarray | None = None  # NumPy runtime output
    ort: np.ndarray | None = None  # onnxruntime on the original model
    seconds: dict[str, float] = field(default_factory=dict)
    optimized: graphnet.Graph | None = None
    report: object = None  # passes.base.PipelineReport
    ort_optimized: np.ndarray | None = None  # onnxruntime on the optimized export
    # The Softmax input of each of the three above, when the output is a Softmax's (else None).
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    softmax_axis: int | None = None


def _softmax_of(model: onnx.ModelProto, out: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if n.op_type == "Softmax" and out in n.output), None)


def _ort_with_logits(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], out: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """onnxruntime's output `out` and, when a Softmax produces it, that Softmax's input."""
    sm = _softmax_of(model, out)
    if sm is None:
        return ort_run(model, feeds)[out], None
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(
        helper.make_tensor_value_info(sm.input[0], onnx.TensorProto.FLOAT, None)
    )
    got = ort_run(probe, feeds)
    return got[out], got[sm.input[0]]


def _run(name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> ZooRun:
    r = ZooRun(name, model, feeds)
    r.graph = graphnet.load(model)
    out = model.graph.output[0].name
    sm = _softmax_of(model, out)
    t = time.perf_counter()
    env = runtime.run(r.graph, feeds, keep_all=sm is not None)
    r.seconds["ours"] = time.perf_counter() - t
    r.ours = env[out]
    t = time.perf_counter()
    r.ort, ort_logits = _ort_with_logits(model, feeds, out)
    r.seconds["onnxruntime"] = time.perf_counter() - t
    r.optimized, r.report = optimize(r.graph)
    exported = r.optimized.to_onnx()
    onnx.checker.check_model(exported, full_check=True)
    r.ort_optimized, opt_logits = _ort_with_logits(exported, feeds, out)
    if sm is not None:
        # Opset 9's Softmax: axis 1 (its default), the axes after it taken as one.
        r.softmax_axis = next((a.i for a in sm.attribute if a.name == "axis"), 1)
        r.logits = {"ours": env[sm.input[0]], "ort": ort_logits, "ort_optimized": opt_logits}
    return r


def assert_outputs_close(r: ZooRun, actual: str, expected: str, *, what: str, **tol) -> None:
    """Output `actual` of run `r` ("ours", "ort", "ort_optimized") against `expected`: directly,
    or for a Softmax output through the logits (module docstring)."""
    if r.softmax_axis is None:
        assert_close(getattr(r, actual), getattr(r, expected), **tol, what=what)
        return
    assert_close(r.logits[actual], r.logits[expected], **tol, what=f"{what} (logits)")
    assert_softmax_close(
        r.logits[actual], getattr(r, expected), axis=r.softmax_axis, **tol, what=what
    )


class Zoo:
    """Lazily runs each model once (shipped or randomized weights) and keeps the results."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, bool], ZooRun] = {}

    def model(self, name: str) -> onnx.ModelProto:
        return onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))

    def expected(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(
            onnx.load_tensor(os.path.join(LIGHT, f"light_{name}_output_0.pb"))
        )

    def shipped(self, name: str) -> ZooRun:
        if (name, False) not in self._runs:
            model = self.model(name)
            self._runs[name, False] = _run(name, model, backend_input(model))
        return self._runs[name, False]

    def random(self, name: str) -> ZooRun:
        if (name, True) not in self._runs:
            model = randomized(self.model(name))
            rng = np.random.default_rng(1)
            feeds = {
                k: rng.random(v.shape, dtype=np.float32) for k, v in backend_input(model).items()
            }
            self._runs[name, True] = _run(name, model, feeds)
        return self._runs[name, True]


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return Zoo()


# ================================================================================== the input
def test_backend_input_is_a_ramp_over_the_input_shape():
    # Independent of the runner: its non-random dummy data is arange(n) / n, float32.
    feeds = backend_input(onnx.load(os.path.join(LIGHT, "light_resnet50.onnx")))
    assert list(feeds) == ["gpu_0/data_0"]
    x = feeds["gpu_0/data_0"]
    n = 3 * 224 * 224
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_array_equal(x.reshape(-1), (np.arange(n) / n).astype(np.float32))


# ================================================================================= shipped weights
@pytest.mark.parametrize("name", MODELS)
def test_import_maps_every_node(zoo, name):
    model, g = zoo.model(name), zoo.shipped(name).graph
    assert "Opaque" not in g.op_counts(), g.op_counts()
    # One IR node per ONNX node; Sum of two inputs (ResNet-50, ShuffleNet) is the IR's Add.
    want = collections.Counter(
        "Add" if n.op_type == "Sum" and len(n.input) == 2 else n.op_type for n in model.graph.node
    )
    assert dict(want) == g.op_counts()
    assert g.inputs == list(backend_input(model)) and g.outputs == [model.graph.output[0].name]


@pytest.mark.parametrize("name", MODELS)
def test_numpy_runtime_gives_the_shipped_output(zoo, name):
    r = zoo.shipped(name)
    expected, what = zoo.expected(name), f"{name}: NumPy runtime vs shipped output"
    if r.softmax_axis is None:
        assert_close(r.ours, expected, **SHIPPED_TOL, what=what)
    else:
        assert_softmax_close(
            r.logits["ours"], expected, axis=r.softmax_axis, **SHIPPED_TOL, what=what
        )
    assert r.ours.dtype == np.float32


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_agrees_on_the_shipped_model(zoo, name):
    r = zoo.shipped(name)
    expected, what = zoo.expected(name), f"{name}: onnxruntime vs shipped output"
    if r.softmax_axis is None:
        assert_close(r.ort, expected, **SHIPPED_TOL, what=what)
    else:
        assert_softmax_close(
            r.logits["ort"], expected, axis=r.softmax_axis, **SHIPPED_TOL, what=what
        )
    assert_outputs_close(r, "ours", "ort", **TOL, what=f"{name}: NumPy runtime vs onnxruntime")


def _check_optimized(r: ZooRun) -> None:
    before, after = r.graph.op_counts(), r.optimized.op_counts()
    assert len(r.optimized.nodes) < len(r.graph.nodes), r.report
    for op in ("BatchNormalization", "Dropout", "Opaque", "Unsqueeze"):
        assert op not in after, f"{r.name}: {after.get(op)} {op} left"
    # No linear layer is lost by folding; cse may merge identical Convs (same input, same fill
    # weights: Inception's branches), as the peers do.
    assert 0 < after.get("Conv", 0) <= before.get("Conv", 0) and after.get("Gemm") == before.get(
        "Gemm"
    )
    assert r.optimized.inputs == r.graph.inputs and r.optimized.outputs == r.graph.outputs
    assert_outputs_close(
        r, "ort_optimized", "ort", **TOL, what=f"{r.name}: onnxruntime, optimized vs original"
    )


@pytest.mark.parametrize("name", MODELS)
def test_optimize_shipped_model(zoo, name):
    r = zoo.shipped(name)
    _check_optimized(r)
    # The only ConstantOfShape left are weights bigger than fold-constants materializes (a
    # result > max(2 x its inputs, 1024) elements stays a node, so the file stays small); every
    # one of them is read by a Conv or Gemm as its weight or bias.
    g = r.optimized
    for n in g.nodes:
        if n.op == "ConstantOfShape":
            assert int(np.prod(g.values[n.outputs[0]].shape)) > 1024
            users = [
                (m.op, m.inputs.index(n.outputs[0])) for m in g.nodes if n.outputs[0] in m.inputs
            ]
            # (Inception v1 reshapes its classifier weight before the Gemm.)
            allowed = {("Conv", 1), ("Conv", 2), ("Gemm", 1), ("Gemm", 2), ("Reshape", 0)}
            assert users and set(users) <= allowed, users
    # The pipeline is a fixed point (passes/manager.py): a second run changes nothing.
    _, again = optimize(r.optimized)
    assert [p.name for p in again.passes if p.changed] == []


# ================================================================================ random weights
def _bns_without_a_linear_producer(model: onnx.ModelProto) -> int:
    """BatchNormalization nodes whose input is not written by a Conv (DenseNet's pre-activation
    BN after Concat / pooling): nothing to fold into, so each must become one Mul + Add."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "BatchNormalization" and producers.get(n.input[0]) != "Conv"
    )


@pytest.mark.parametrize("name", RANDOMIZED)
def test_randomized_model_runs_like_onnxruntime(zoo, name):
    r = zoo.random(name)
    # The comparison can fail: outputs differ from class to class (not uniform, not one-hot).
    if r.model.graph.node[-1].op_type == "Softmax":  # all but DenseNet-121 (logits)
        assert 2e-3 < r.ort.max() < 0.99 and r.ort.std() > 1e-4, (r.ort.max(), r.ort.std())
    else:
        assert r.ort.std() > 0.1, r.ort.std()
    assert_outputs_close(
        r, "ours", "ort", **TOL, what=f"{name} (random weights): NumPy runtime vs onnxruntime"
    )


@pytest.mark.parametrize("name", RANDOMIZED)
def test_optimize_randomized_model_folds_every_bn(zoo, name):
    r = zoo.random(name)
    _check_optimized(r)
    after = r.optimized.op_counts()
    # With real weights every BN after a Conv folds into it (its Caffe2 scale layer with it); only
    # the BNs with no Conv before them remain, as one Mul + Add each.
    affine = _bns_without_a_linear_producer(r.model)
    assert after.get("Mul", 0) == affine, after
    # Every scale-layer Add went into its BN: the Adds left are those affines and the residual
    # Sums (ResNet-50, ShuffleNet).
    sums = sum(1 for n in r.model.graph.node if n.op_type == "Sum")
    assert after.get("Add", 0) == affine + sums, after


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_cli_optimize_verify(zoo, tmp_path, name):
    """`graphnet optimize --verify` on a shipped model (SqueezeNet, in-process) and on a randomized
    one (ShuffleNet, as a real command line)."""
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    if name == "squeezenet":
        model = zoo.model(name)
        onnx.save(model, str(src))
        from graphnet.cli import main

        assert main(["optimize", str(src), "-o", str(out), "--verify"]) == 0
    else:
        model = zoo.random(name).model
        onnx.save(model, str(src))
        root = helpers.ROOT
        proc = subprocess.run(
            [sys.executable, "-m", "graphnet", "optimize", str(src), "-o", str(out), "--verify"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "verified:" in proc.stdout
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    ops = [n.op_type for n in written.graph.node]
    assert len(ops) < len(model.graph.node)
    assert "BatchNormalization" not in ops and "Dropout" not in ops
    feeds = backend_input(model)
    o = model.graph.output[0].name
    after, after_logits = _ort_with_logits(written, feeds, o)
    before, before_logits = _ort_with_logits(model, feeds, o)
    what = f"{name}: CLI output vs input"
    # Both models end in a Softmax: compared through the logits (module docstring).
    assert_close(after_logits, before_logits, **TOL, what=f"{what} (logits)")
    assert_softmax_close(after_logits, before, axis=1, **TOL, what=what)
