"""The reverse-mode engine on whole graphs: gradients summed over several readers, the train-mode
forward identical to the runtime's, only the needed nodes differentiated, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.errors import GraphNetError
from graphnet.runtime.gradients import Backprop, trainable_params

H = 1e-6


def _residual_net() -> nn.Network:
    """conv -> BN -> PReLU, a residual add, a layer applied twice (shared weights), concat, global
    pool, dropout, FC: every way a value can be read by several nodes."""
    net = nn.Network("res", seed=3)
    x = net.input("x", (None, 2, 5, 5))
    y = nn.PReLU()(nn.BatchNorm()(nn.Conv(2, 3, padding="same")(x)))
    shared = nn.Conv(2, 1)
    z = nn.add(x, y)
    z = nn.concat([shared(z), shared(x), z])
    z = nn.Flatten()(nn.GlobalAvgPool()(nn.Tanh()(z)))
    z = nn.Dropout(drop=0.25)(z)
    net.output(nn.Linear(3)(z), name="y")
    return net


def _float64(graph) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in graph.params.items()}


def _loss(bp, feeds, params, weights) -> float:
    tape = bp.forward(feeds, rng=np.random.default_rng(5), params=dict(params))
    return float(np.sum(tape.values["y"] * weights))


def test_whole_network_gradient_matches_finite_differences():
    g = _residual_net().graph
    bp = Backprop(g)
    params = _float64(g)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5))
    weights = np.random.default_rng(1).standard_normal((3, 3))
    tape = bp.forward({"x": x}, rng=np.random.default_rng(5), params=dict(params))
    wrt = trainable_params(g) + ["x"]
    grads = bp.backward(tape, {"y": weights}, wrt)
    rng = np.random.default_rng(2)
    for name in wrt:
        base = params[name] if name in params else x
        # A few random elements of each tensor (every element of every op is checked in
        # test_gradients.py); here what is tested is the summing over readers.
        for flat in rng.choice(base.size, size=min(4, base.size), replace=False):
            idx = np.unravel_index(flat, base.shape)
            vals = []
            for sign in (1, -1):
                shifted = base.copy()
                shifted[idx] += sign * H
                if name == "x":
                    vals.append(_loss(bp, {"x": shifted}, params, weights))
                else:
                    vals.append(_loss(bp, {"x": x}, {**params, name: shifted}, weights))
            numeric = (vals[0] - vals[1]) / (2 * H)
            np.testing.assert_allclose(
                grads[name][idx], numeric, rtol=1e-6, atol=1e-8, err_msg=name
            )


def test_train_forward_is_the_runtime_train_mode():
    """Same outputs and running statistics afterwards (up to float32 rounding), same dropout
    masks (same seed)."""
    g1 = _residual_net().graph
    g2 = _residual_net().graph
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    ours = Backprop(g1).forward({"x": x}, training=True, rng=np.random.default_rng(11))
    theirs = runtime.run(g2, {"x": x}, mode="train", seed=11)
    # The runtime's fast plan computes BatchNorm's statistics and affine in float32 (the plain
    # kernels in float64): the same values up to float32 rounding.
    np.testing.assert_allclose(ours.values["y"], theirs["y"], rtol=1e-6, atol=1e-7)
    # Running statistics: the batch mean is the float32 shift plus the mean of x - shift,
    # summed by BLAS in float32 (~1e-9 off; one float32 rounding of a ~5e-3 value flipped),
    # the same floor as tests/train/test_fast_plan.py; every other parameter is untouched.
    for name in g1.params:
        if "running" in name:
            np.testing.assert_allclose(
                g1.params[name], g2.params[name], rtol=1e-6, atol=1e-7, err_msg=name
            )
        else:
            np.testing.assert_array_equal(g1.params[name], g2.params[name], err_msg=name)
    moved = [n for n in g1.params if "running" in n]
    assert moved and not np.allclose(g1.params[moved[0]], _residual_net().graph.params[moved[0]])


def test_inference_forward_matches_the_runtime():
    g = _residual_net().graph
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    ours = Backprop(g).forward({"x": x}, training=False).values["y"]
    # The fast plan's GlobalAveragePool sums rows with BLAS (the plain kernel pairwise): the
    # same values up to float32 rounding.
    np.testing.assert_allclose(ours, runtime.run(g, {"x": x})["y"], rtol=1e-6, atol=1e-7)


def test_trainable_params_excludes_running_statistics():
    g = _residual_net().graph
    names = trainable_params(g)
    assert not [n for n in names if "running" in n]
    assert {n for n in g.params if "running" not in n} == set(names)


def test_first_conv_skips_the_image_gradient():
    """A rule told that X needs no gradient does not compute it (the first layer's dX)."""
    g = nn.Sequential([nn.Conv(2, 3), nn.Flatten(), nn.Linear(2)]).build((None, 1, 5, 5))
    bp = Backprop(g)
    seen = {}
    from graphnet.runtime.gradients import conv as conv_rules

    original = conv_rules._input_grad

    def spy(*a, **k):
        seen["called"] = True
        return original(*a, **k)

    conv_rules._input_grad = spy
    try:
        tape = bp.forward({"input": np.ones((1, 1, 5, 5), np.float32)})
        bp.backward(tape, {"output": np.ones((1, 2), np.float32)}, trainable_params(g))
        assert "called" not in seen
        bp.backward(tape, {"output": np.ones((1, 2), np.float32)}, ["input"])
        assert seen.get("called")
    finally:
        conv_rules._input_grad = original


def test_unknown_value_is_a_clear_error():
    g = nn.Sequential([nn.Linear(2)]).build((None, 3))
    bp = Backprop(g)
    tape = bp.forward({"input": np.ones((1, 3), np.float32)})
    with pytest.raises(GraphNetError, match="unknown value"):
        bp.backward(tape, {"output": np.ones((1, 2), np.float32)}, ["nope"])


def test_the_walk_releases_each_gradient_after_its_node():
    """A value's gradient lives until the node that produced it has run, then only the values
    asked for stay: on a chain of four ReLUs (x -> a -> b -> c -> y), asked for x and b, the
    gradient of c is freed before the node that made b runs, b's stays, and both asked-for
    gradients are returned."""
    import weakref

    g = nn.Sequential([nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()]).build((None, 6))
    bp = Backprop(g)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    tape = bp.forward({"input": x})
    refs: dict[str, weakref.ref] = {}  # value -> its gradient, as the node producing it got it
    dead: dict[str, list[str]] = {}  # node -> the gradients already freed when it ran
    plain = bp._differentiate

    def spy(k, step, dy, *a):
        dead[step.node.name] = sorted(v for v, r in refs.items() if r() is None)
        refs[step.node.outputs[0]] = weakref.ref(dy)
        return plain(k, step, dy, *a)

    bp._differentiate = spy  # type: ignore[method-assign]
    n1, n2, n3, n4 = g.nodes
    b, c = n2.outputs[0], n3.outputs[0]
    seed = np.ones((3, 6), np.float32)  # the caller holds it: never freed
    grads = bp.backward(tape, {"output": seed}, ["input", b])
    assert dead == {n4.name: [], n3.name: [], n2.name: [c], n1.name: [c]}
    assert refs[b]() is grads[b]
    np.testing.assert_array_equal(grads["input"], seed * (x > 0))


def _align_relu_masks(bp: Backprop, tape64, tape32) -> int:
    """Where a ReLU's float32 input has the other sign than in float64 (a value within float32
    rounding of the kink), give the float64 tape the float32 value: its backward is then the
    gradient of the same linear piece. Returns how many were moved."""
    moved = 0
    for n in bp.graph.nodes:
        if n.op != "Relu":
            continue
        a64, a32 = tape64.values[n.inputs[0]], tape32.values[n.inputs[0]]
        flips = (a64 > 0) != (a32 > 0)
        if flips.any():
            # a kink, not a wrong forward: within float32 rounding of the layer's values
            assert np.abs(a64[flips]).max() < 1e-5 * np.abs(a64).max(), n.name
            tape64.values[n.inputs[0]] = np.where(flips, a32, a64)
            moved += int(flips.sum())
    return moved


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_float32_gradients_of_both_plans_match_float64_on_resnet20(batch):
    """ResNet-20 (BatchNorm in train mode over N*H*W = batch*1024 elements, residual adds):
    the float32 gradients of the plain `Backprop` and of `FastBackprop` against `Backprop` in
    float64, per parameter relative to its largest entry. A ReLU input within float32 rounding
    of 0 can take the other sign (batch 2 here: one relu6 input is +1.3e-8 in float64 and
    -6.5e-8 in the plain float32 forward, which moved bn6.bias's gradient by 4.4%: a kink, not
    an accumulation error); such inputs get the float32 sign in the float64 tape first.
    Tolerance: the forward's float32 rounding grows from 2e-7 (first conv) to ~2e-6 (last
    block) relative; the gradients were within 6e-6 on both plans; 3e-5 leaves 5x."""
    from graphnet.bench.suite import resnet20
    from graphnet.runtime.gradients import FastBackprop

    g = resnet20(2)
    start = dict(g.params)
    out = g.outputs[0]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    seed = rng.standard_normal((batch, 10))
    wrt = trainable_params(g)
    ref64 = Backprop(g)
    for plan in (Backprop, FastBackprop):
        for k, v in start.items():  # train mode moves the running statistics
            g.set_param(k, v)
        bp = plan(g)
        tape = bp.forward({"input": x}, rng=np.random.default_rng(0))
        got = bp.backward(tape, {out: seed.astype(np.float32)}, wrt)
        tape64 = ref64.forward({"input": x.astype(np.float64)}, params=_float64(g))
        _align_relu_masks(ref64, tape64, tape)
        want = ref64.backward(tape64, {out: seed}, wrt)
        for name in wrt:
            err = np.abs(got[name] - want[name]).max() / np.abs(want[name]).max()
            assert err < 3e-5, f"{plan.__name__} d/d{name}: {err:.2e}"
