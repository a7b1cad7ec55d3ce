"""1x1 convs of one input merged into one GEMM by the compiled plan (`MergedPointwiseStep`):
compared with the unmerged plan, the reference plan and onnxruntime, at batch 1 (contiguous
channel slices) and 3 (strided slices), in inference and train mode."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import runtime
from graphnet.ir import Graph
from graphnet.runtime.fast import compile as fast_compile
from graphnet.runtime.fast.steps import MergedPointwiseStep
from tests.helpers import add_bn, export_checked, ort_run

# float32 sums of 12-108 products of O(1) terms: ~1e-6 relative each; a wrong channel slice,
# bias or activation would be off by O(0.1).
RTOL, ATOL = 1e-5, 1e-5


def _branches(seed: int = 3) -> Graph:
    """Inception-like: x (N, 12, 5, 7) read by 1x1 convs a (bias, ReLU) -> Concat, b (no bias)
    -> BatchNorm -> 3x3 conv -> Concat, f (bias, LeakyReLU) -> Add x-derived -> ReLU -> Concat;
    the Add's other input a 1x1 conv of z (alone: not merged); two stride-2 1x1 convs (a second
    merge group: s1 -> Neg, s2 -> ReLU -> BatchNorm -> Mul); a 1x1 conv with a residual Add
    (not merged) and one that is a graph output (merged with a, b, f)."""
    rng = np.random.default_rng(seed)
    g = Graph("branches")
    g.add_input("x", (None, 12, 5, 7))
    g.add_input("z", (None, 12, 5, 7))

    def conv(name, src, m, k=1, stride=1, bias=True, pads=0):
        ins = [src, f"{name}.w"]
        g.add_param(f"{name}.w", (0.3 * rng.standard_normal((m, 12, k, k))).astype(np.float32))
        if bias:
            g.add_param(f"{name}.b", rng.standard_normal(m).astype(np.float32))
            ins.append(f"{name}.b")
        attrs = {"pads": [pads] * 4, "strides": [stride, stride]}
        return g.add_node("Conv", ins, attrs, name=name).outputs[0]

    def node(op, ins, name, **attrs):
        return g.add_node(op, ins, attrs, name=name).outputs[0]

    a = node("Relu", [conv("a", "x", 5)], "a.relu")
    b = add_bn(g, conv("b", "x", 12, bias=False), "b.bn", rng)
    b = node("Relu", [conv("b3", b, 6, k=3, pads=1)], "b3.relu")
    f = node("LeakyRelu", [conv("f", "x", 4)], "f.leaky", alpha=0.1)
    f = node(
        "Relu", [node("Add", [f, node("Neg", [conv("zz", "z", 4)], "zz.neg")], "f.add")], "f.relu"
    )
    g.mark_output(node("Concat", [a, b, f], "cat", axis=1))
    s1 = node("Neg", [conv("s1", "x", 3, stride=2)], "s1.neg")
    s2 = add_bn(g, node("Relu", [conv("s2", "x", 2, stride=2)], "s2.relu"), "s2.bn", rng)
    g.mark_output(s1)
    g.mark_output(node("Mul", [s2, s2], "s2.sq"))
    g.mark_output(node("Add", [conv("r", "x", 12), "x"], "r.add"))  # a residual Add
    g.mark_output(conv("out", "x", 2))  # a graph output
    return g


def _unmerged(monkeypatch, g: Graph) -> runtime.Session:
    """A session whose plan merges nothing (compiled with the merge pass disabled)."""
    with monkeypatch.context() as m:
        m.setattr(fast_compile.CompiledPlan, "_merge_pointwise", lambda self: None)
        sess = runtime.Session(g)
        sess._fast(training=False, keep_all=False)
        sess._fast(training=True, keep_all=False)
    return sess


def _feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((batch, 12, 5, 7)).astype(np.float32) for k in ("x", "z")}


def test_merge_groups_and_what_stays_alone():
    """Structure: a, b, f and out (a graph output) form one step (the first conv's), s1 and s2
    another; r (residual) and zz (another input) stay plain convs."""
    plan = runtime.Session(_branches())._fast(training=False, keep_all=False)
    merged = {s.name: s for s in plan.steps if isinstance(s, MergedPointwiseStep)}
    assert sorted(merged) == ["a", "s1"]
    assert merged["a"].channels == [5, 12, 4, 2] and merged["s1"].channels == [3, 2]
    assert merged["a"].activations == [("relu",), (), ("leaky", 0.1), ()]
    assert merged["a"].biases == ["a.b", None, "f.b", "out.b"]
    assert {"b", "f", "out", "a.relu", "f.leaky"} <= set(merged["a"].fused)
    names = [s.name for s in plan.steps]
    assert not {"b", "f", "out", "s2"} & set(names)
    assert {"r", "zz"} <= set(names)
    assert "one GEMM" in runtime.Session(_branches()).describe()


@pytest.mark.parametrize("batch", [1, 3])
def test_merged_matches_unmerged_reference_and_onnxruntime(monkeypatch, batch):
    """Inference at batch 1 (contiguous slices) and 3 (strided slices), twice per session (the
    second run replays the arena); against the unmerged plan, the plain kernels and ORT."""
    g = _branches()
    sess, unmerged = runtime.Session(g), _unmerged(monkeypatch, g)
    assert not any(
        isinstance(s, MergedPointwiseStep)
        for s in unmerged._fast(training=False, keep_all=False).steps
    )
    ref = runtime.Session(g, plan="reference")
    model = export_checked(g)
    for seed in (0, 1):
        feeds = _feeds(batch, seed)
        got = sess.run(feeds)
        for want in (unmerged.run(feeds), ref.run(feeds), ort_run(model, feeds)):
            assert set(want) == set(got)
            for k in got:
                np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("batch", [1, 3])
def test_merged_in_train_mode_matches_reference(monkeypatch, batch):
    """Train mode (BatchNorm on batch statistics reads the strided slice of b, updates its
    running statistics): the merged plan, the unmerged plan and the reference plan, each on
    its own copy of the graph, agree on the outputs and the updated statistics."""
    graphs = [_branches() for _ in range(3)]
    sessions = [
        runtime.Session(graphs[0]),
        _unmerged(monkeypatch, graphs[1]),
        runtime.Session(graphs[2], plan="reference"),
    ]
    for seed in (0, 1):
        feeds = _feeds(batch, seed)
        outs = [s.run(feeds, mode="train") for s in sessions]
        for other in outs[1:]:
            for k in outs[0]:
                np.testing.assert_allclose(outs[0][k], other[k], rtol=1e-4, atol=1e-4, err_msg=k)
    for name in ("b.bn.mean", "b.bn.var", "s2.bn.mean", "s2.bn.var"):
        for other in graphs[1:]:
            np.testing.assert_allclose(
                graphs[0].params[name], other.params[name], rtol=1e-5, atol=1e-6, err_msg=name
            )


def _placed_net() -> Graph:
    """x -> 1x1 conv p (ReLU) -> Concat; x -> 1x1 conv q -> 3x3 conv k -> Concat: p and q merge,
    and the Concat's inputs are conv outputs read by nothing else (placed at batch 1)."""
    rng = np.random.default_rng(8)
    g = Graph("placed")
    g.add_input("x", (None, 6, 4, 5))
    for name, m, c, k in (("p", 3, 6, 1), ("q", 4, 6, 1), ("k", 5, 4, 3)):
        g.add_param(f"{name}.w", (0.4 * rng.standard_normal((m, c, k, k))).astype(np.float32))
        g.add_param(f"{name}.b", rng.standard_normal(m).astype(np.float32))
    conv = {"strides": [1, 1], "pads": [0] * 4}
    p = g.add_node("Conv", ["x", "p.w", "p.b"], conv, name="p").outputs[0]
    p = g.add_node("Relu", [p], {}, name="p.relu").outputs[0]
    q = g.add_node("Conv", ["x", "q.w", "q.b"], conv, name="q").outputs[0]
    k = g.add_node("Conv", [q, "k.w", "k.b"], {**conv, "pads": [1] * 4}, name="k").outputs[0]
    g.mark_output(g.add_node("Concat", [p, k], {"axis": 1}, name="cat").outputs[0])
    return g


@pytest.mark.parametrize("split", [False, True])
def test_merged_output_placed_in_concat_and_chunked(monkeypatch, split):
    """At batch 1 the merged conv writes p's channels straight into the Concat's buffer (the
    Concat copies nothing); at batch 5, in chunks of one image (a tiny workspace), inline or
    on two threads, the Concat copies. Against the reference plan and onnxruntime."""
    from graphnet.runtime.fast import threads
    from graphnet.runtime.fast.steps import base, linear

    monkeypatch.setattr(linear, "WORKSPACE_BYTES", 1)  # one image per chunk
    if split:
        for module in (threads, base, linear):
            monkeypatch.setattr(module, "SPLIT_MIN_FLOPS", 0)
    copied = []
    concatenate = np.concatenate

    def spy(xs, axis=0, out=None, **kw):
        if out is not None and out.ndim == 4:  # a Concat step's copy
            copied.append(out.shape)
        return concatenate(xs, axis=axis, out=out, **kw)

    monkeypatch.setattr(np, "concatenate", spy)
    g = _placed_net()
    sess = runtime.Session(g)
    rows = {r.split()[0]: r for r in sess.describe().splitlines()[1:]}
    assert "one GEMM" in rows["p"] and "no copy" in rows["cat"] and "q" not in rows
    ref, model = runtime.Session(g, plan="reference"), export_checked(g)
    for batch in (1, 5, 1):
        feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 6, 4, 5))}
        feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
        copied.clear()
        got = sess.run(feeds)
        # (on two threads, the Concat copies its batch slices: 2 and 3 images)
        assert sum(shape[0] for shape in copied) == (0 if batch == 1 else batch)
        for want in (ref.run(feeds), ort_run(model, feeds)):
            out = g.outputs[0]
            np.testing.assert_allclose(got[out], want[out], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch", [1, 3])
def test_inception_blocks_merge_their_bn_folded_branches(batch):
    """The suite's inception_bn after `optimize` (BatchNorm folded into each conv's bias, ReLU
    fused): each of its three blocks opens with one merged step for the three 1x1 convs of the
    block input (the pool branch's reads the pooled input: alone); the whole net against the
    plain kernels (the reference plan) and onnxruntime."""
    from graphnet.bench.suite import build
    from graphnet.passes.manager import optimize

    g = optimize(build("inception_bn"), "inference")[0]
    sess = runtime.Session(g)
    merged = [
        s
        for s in sess._fast(training=False, keep_all=False).steps
        if isinstance(s, MergedPointwiseStep)
    ]
    assert [len(s.channels) for s in merged] == [3, 3, 3]
    assert all(b is not None for s in merged for b in s.biases)  # the folded BN shifts
    assert all(a == ("relu",) for s in merged for a in s.activations)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    feeds = {g.inputs[0]: x}
    got = sess.run(feeds)
    for want in (
        runtime.Session(g, plan="reference").run(feeds),
        ort_run(export_checked(g), feeds),
    ):
        # softmax probabilities of a 10-class net: Winograd's float32 rounding (~1e-5 on the
        # logits) moves them by ~1e-6; a wrong channel slice or bias moves them by ~1e-1
        for k in g.outputs:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
