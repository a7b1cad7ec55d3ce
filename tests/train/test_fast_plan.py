"""The fast training plan (`FastBackprop`, `Trainer(plan="fast")`) against its oracle, the plain
`Backprop`: every fast rule on the single-node gradient cases (odd shapes, strides, asymmetric
pads, dilation, groups, 1-D and 3-D) in float64 and float32, and against finite differences where
the plain rules are; whole training steps on odd networks, gradients and updated parameters."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from graphnet import nn, runtime
from graphnet.errors import AttributeValueError, InputError
from graphnet.runtime.gradients import Backprop, FastBackprop, fast_rules, trainable_params
from graphnet.train import SGD, Adam, Trainer
from tests.train.gradient_cases import CASES, Case, build_case

FAST_CASES = [c for c in CASES if fast_rules.get_fast_gradient(c.op) is not None]

# float64: the two implementations sum the same products in different orders (one GEMM over
# batch and positions against per-image products; float64 accumulations against float32 ones
# cast up): differences of a few ulps of the largest partial sum. float32: the same, at float32's
# 6e-8 per operation over sums of at most a few hundred terms, plus the forward's own rounding
# differences (Winograd, another summation order) carried through BatchNorm's 1/std.
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-11}, "float32": {"rtol": 2e-4, "atol": 2e-5}}


def _spy(monkeypatch) -> list[str]:
    """Record the ops whose fast rule ran to completion (did not hand over to the plain rule)."""
    ran: list[str] = []
    for op, fn in fast_rules.all_fast_gradients().items():

        def wrapped(*a, _fn=fn, _op=op, **k):
            result = _fn(*a, **k)
            if result is not NotImplemented:
                ran.append(_op)
            return result

        monkeypatch.setitem(fast_rules._FAST, op, wrapped)
    return ran


def test_the_fast_rules_cover_the_heavy_ops():
    assert set(fast_rules.all_fast_gradients()) == {"Conv", "BatchNormalization", "MaxPool", "Relu"}
    assert len(FAST_CASES) >= 12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", FAST_CASES, ids=[f"{c.op}-{c.id}" for c in FAST_CASES])
def test_fast_rule_matches_the_plain_rule(case: Case, dtype: str, monkeypatch) -> None:
    ran = _spy(monkeypatch)
    g, feeds, checked = build_case(case, dtype)
    g2 = copy.deepcopy(g)
    plain, fast = Backprop(g), FastBackprop(g2)
    tp = plain.forward(feeds, training=case.training, rng=np.random.default_rng(7))
    tf = fast.forward(feeds, training=case.training, rng=np.random.default_rng(7))
    out = g.outputs[0]
    np.testing.assert_allclose(tf.values[out], tp.values[out], **TOL[dtype])
    weights = np.random.default_rng(99).standard_normal(tp.values[out].shape).astype(dtype)
    gp = plain.backward(tp, {out: weights}, checked)
    gf = fast.backward(tf, {out: weights}, checked)
    for name in checked:
        assert gf[name].dtype == np.dtype(dtype) and gf[name].shape == gp[name].shape
        np.testing.assert_allclose(gf[name], gp[name], err_msg=name, **TOL[dtype])
    for name in g.params:  # BatchNorm's running statistics moved the same way
        np.testing.assert_allclose(g2.params[name], g.params[name], err_msg=name, **TOL[dtype])
    if case.op == "BatchNormalization" and not case.training:
        assert ran == []  # inference-mode BatchNorm goes to the plain rule (a per-channel affine)
    else:
        assert ran == [case.op]


FD_CASES = [c for c in FAST_CASES if c.op != "BatchNormalization"]


@pytest.mark.parametrize("case", FD_CASES, ids=[f"{c.op}-{c.id}" for c in FD_CASES])
def test_fast_rule_matches_finite_differences(case: Case, monkeypatch) -> None:
    """Conv, MaxPool and Relu's fast rules against central differences in float64 (the loss and
    its perturbations run the plain forward; `test_gradients.py` explains the tolerances).
    BatchNorm's fast rule reads what the fast forward recorded: it is checked against the plain
    rule above, which is checked here."""
    ran = _spy(monkeypatch)
    g, feeds, checked = build_case(case)
    bp = FastBackprop(g)
    h = 1e-6
    params = {k: v.copy() for k, v in g.params.items()}
    tape = bp.forward(feeds, training=True, rng=np.random.default_rng(7), params=params)
    out = g.outputs[0]
    weights = np.random.default_rng(99).standard_normal(tape.values[out].shape)
    grads = bp.backward(tape, {out: weights}, checked)
    assert ran == [case.op]
    for name in checked:
        x = feeds[name]
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):  # the reference: one perturbation per element
            for sign in (1, -1):
                xs = x.copy()
                xs[idx] += sign * h
                t = bp.forward({**feeds, name: xs}, params=dict(params))
                numeric[idx] += sign * float(np.sum(t.values[out] * weights)) / (2 * h)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-7, err_msg=name)


def _odd_net() -> nn.Network:
    """Every fast path on odd sizes: a strided conv with asymmetric pads, a dilated and a grouped
    conv, a 1x1 conv with padding (wider than its reach: col2im), BatchNorm on 4-D and 2-D
    values, overlapping padded and ceil-mode max pools, a residual add, dropout. No bias before
    a BatchNorm: its gradient is zero up to rounding (not a well-conditioned comparison)."""
    net = nn.Network("odd", seed=5)
    x = net.input("x", (None, 3, 11, 9))
    y = nn.ReLU()(
        nn.BatchNorm()(nn.Conv(6, (3, 2), stride=(2, 1), padding=(1, 0, 0, 1), bias=False)(x))
    )
    y = nn.MaxPool(3, stride=2, padding=1)(y)
    z = nn.ReLU()(
        nn.BatchNorm()(nn.Conv(6, 3, dilation=2, padding="same", groups=2, bias=False)(y))
    )
    y = nn.add(y, z)
    y = nn.Conv(4, 1, padding=1)(y)
    y = nn.MaxPool(2, stride=2, ceil_mode=True)(nn.ReLU()(y))
    y = nn.Dropout(drop=0.3)(nn.Flatten()(y))
    y = nn.ReLU()(nn.BatchNorm()(nn.Linear(7, bias=False)(y)))
    net.output(nn.Linear(5)(y), name="y")
    return net


def _template() -> nn.Network:
    return nn.template(channels=(8, 12), hidden=(16,), drop=0.25).build((None, 1, 8, 8), seed=1)


@pytest.mark.parametrize("batch", [1, 7, 13])
def test_fast_gradients_equal_the_plain_ones_on_a_whole_network(batch: int) -> None:
    """Same tape values, same masks, same gradients; continuous random inputs keep every max
    pool window away from ties (a tie decided differently by one rounding would move a
    gradient)."""
    g1 = _odd_net().graph
    g2 = copy.deepcopy(g1)
    x = np.random.default_rng(batch).standard_normal((batch, 3, 11, 9)).astype(np.float32)
    tp = Backprop(g1).forward({"x": x}, rng=np.random.default_rng(3))
    fb = FastBackprop(g2)
    tf = fb.forward({"x": x}, rng=np.random.default_rng(3))
    for name, value in tp.values.items():
        np.testing.assert_allclose(tf.values[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    drop = next(k for k, n in enumerate(g1.nodes) if n.op == "Dropout")
    np.testing.assert_array_equal(tf.results[drop][1], tp.results[drop][1])  # the same mask
    seed = np.random.default_rng(0).standard_normal((batch, 5)).astype(np.float32)
    wrt = trainable_params(g1) + ["x"]
    gp = Backprop(g1).backward(tp, {"y": seed}, wrt)
    gf = fb.backward(tf, {"y": seed}, wrt)
    for name in wrt:
        scale = float(np.abs(gp[name]).max())
        np.testing.assert_allclose(gf[name], gp[name], rtol=1e-3, atol=1e-4 * scale, err_msg=name)


@pytest.mark.parametrize("make", [_template, lambda: _odd_net().graph], ids=["template", "odd"])
def test_fast_training_steps_equal_the_reference_ones(make) -> None:
    """Five SGD-with-momentum steps, then five Adam steps, on both plans from the same start:
    the same losses and the same parameters (running statistics included) after every step."""
    base = make()
    graph = base if not hasattr(base, "graph") else base.graph
    rng = np.random.default_rng(11)
    shape = tuple(d if isinstance(d, int) else 9 for d in graph.values[graph.inputs[0]].shape)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, graph.values[graph.outputs[0]].shape[1], size=shape[0])
    for opt in (lambda: SGD(0.05, momentum=0.9, weight_decay=1e-3), lambda: Adam(1e-2)):
        gf, gr = copy.deepcopy(graph), copy.deepcopy(graph)
        fast = Trainer(gf, optimizer=opt(), seed=4)
        ref = Trainer(gr, optimizer=opt(), seed=4, plan="reference")
        assert isinstance(fast.backprop, FastBackprop) and not isinstance(
            ref.backprop, FastBackprop
        )
        for _ in range(5):
            lf, _ = fast.step(x, y)
            lr, _ = ref.step(x, y)
            assert lf == pytest.approx(lr, rel=1e-4)
            for name in gr.params:
                np.testing.assert_allclose(
                    gf.params[name], gr.params[name], rtol=1e-3, atol=1e-5, err_msg=name
                )


def test_fast_forward_is_the_runtime_train_mode():
    """The recording forward gives the fast Session's train-mode outputs and running
    statistics (same seed: same dropout mask)."""
    g1 = _odd_net().graph
    g2 = copy.deepcopy(g1)
    x = np.random.default_rng(0).standard_normal((6, 3, 11, 9)).astype(np.float32)
    tape = FastBackprop(g1).forward({"x": x}, rng=np.random.default_rng(21))
    theirs = runtime.Session(g2).run({"x": x}, mode="train", seed=21)
    np.testing.assert_allclose(tape.values["y"], theirs["y"], rtol=1e-5, atol=1e-6)
    # A running statistic is 0.1 x a batch mean of values of size ~1 whose float32 rounding
    # depends on the producing GEMM's summation order (BLAS build, CPU): ~1e-7 absolute. A mean
    # near zero makes a relative bound alone ill-conditioned (seen: 6e-9 off on a 4e-3 mean).
    for name in g1.params:
        np.testing.assert_allclose(
            g1.params[name], g2.params[name], rtol=1e-6, atol=1e-7, err_msg=name
        )


def test_first_conv_skips_the_image_gradient(monkeypatch):
    from graphnet.runtime.gradients import fast_conv

    seen = []
    original = fast_conv.conv_backward

    def spy(*a, **k):
        seen.append(k["need_dx"])
        return original(*a, **k)

    monkeypatch.setattr(fast_rules, "conv_backward", spy)
    g = nn.Sequential([nn.Conv(2, 3), nn.Flatten(), nn.Linear(2)]).build((None, 1, 5, 5))
    bp = FastBackprop(g)
    tape = bp.forward({"input": np.ones((2, 1, 5, 5), np.float32)})
    bp.backward(tape, {"output": np.ones((2, 2), np.float32)}, trainable_params(g))
    bp.backward(tape, {"output": np.ones((2, 2), np.float32)}, ["input"])
    assert seen == [False, True]


def test_nan_max_pool_window_goes_to_the_plain_rule(monkeypatch):
    """A window whose maximum is NaN: the plain rule's argmax picks the NaN; the fast rule
    declines, so both plans give the same gradient."""
    ran = _spy(monkeypatch)
    g = nn.Sequential([nn.MaxPool(2)]).build((None, 1, 4, 4))
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    dy = np.ones((1, 1, 2, 2), np.float32)
    fb = FastBackprop(g)
    want = Backprop(g).backward(Backprop(g).forward({"input": x}), {"output": dy}, ["input"])
    got = fb.backward(fb.forward({"input": x}), {"output": dy}, ["input"])
    np.testing.assert_array_equal(got["input"], want["input"])
    assert "MaxPool" not in ran


def test_fast_forward_checks_its_feeds():
    g = _template()
    fb = FastBackprop(g)
    with pytest.raises(InputError, match="must be float32, got float64"):
        fb.forward({"input": np.zeros((2, 1, 8, 8))})
    with pytest.raises(Exception, match="missing input"):
        fb.forward({})


def test_trainer_plan_is_checked():
    with pytest.raises(AttributeValueError, match="plan must be one of"):
        Trainer(_template(), plan="quick")


def test_relu_of_an_infinite_gradient_is_the_plain_rule(monkeypatch):
    """dY = inf where x < 0: the plain rule (and PyTorch) give 0 there, not inf * 0 = NaN."""
    ran = _spy(monkeypatch)
    g = nn.Sequential([nn.ReLU()]).build((None, 4))
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    dy = np.array([[np.inf, 1.0, 2.0, -np.inf]], np.float32)
    fb = FastBackprop(g)
    got = fb.backward(fb.forward({"input": x}), {"output": dy}, ["input"])["input"]
    np.testing.assert_array_equal(got, [[0.0, 1.0, 0.0, -np.inf]])
    assert "Relu" not in ran


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (1e3, 0.1), (1e4, 0.01)])
def test_fast_batch_norm_is_exact_on_offset_data(offset: float, spread: float) -> None:
    """Train-mode BatchNorm forward and backward on data far from zero (a mean of 1e4 against a
    spread of 0.01) against the float64 formulas: the float32-rounded mean leaves the centered
    data a mean far above its rounding, which the corrected two-pass algorithm removes (without
    it y was off by ~1e-2 at 1e4 / 0.01). Tolerances: a few float32 roundings of x_hat ~ 1
    (x itself is exact in both: the float64 formula reads the same float32 data)."""
    from graphnet.runtime.gradients.fast_norm import batch_norm_backward, batch_norm_forward

    rng = np.random.default_rng(7)
    shape = (16, 4, 8, 8)
    x = (offset + spread * rng.standard_normal(shape)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps = 1e-5

    y = np.empty_like(x)
    mean, var, inv, xc, r = batch_norm_forward(x, gamma, beta, eps, y)
    dx, dgamma, dbeta = batch_norm_backward(dy, xc, inv, gamma, True, r)

    x64, dy64, axes = x.astype(np.float64), dy.astype(np.float64), (0, 2, 3)
    mu64 = x64.mean(axis=axes)
    var64 = x64.var(axis=axes)
    c = (slice(None), None, None)
    inv64 = 1 / np.sqrt(var64 + eps)
    xhat64 = (x64 - mu64[c]) * inv64[c]
    y64 = gamma.astype(np.float64)[c] * xhat64 + beta.astype(np.float64)[c]
    n = x.size / 4
    db64 = dy64.sum(axis=axes)
    dg64 = (dy64 * xhat64).sum(axis=axes)
    dx64 = (gamma * inv64)[c] * (dy64 - db64[c] / n - xhat64 * dg64[c] / n)

    # The mean to float32 rounding of the spread (float32 sums of xc), not of the offset.
    np.testing.assert_allclose(mean, mu64, rtol=1e-12, atol=1e-6 * spread)
    np.testing.assert_allclose(var, var64, rtol=1e-5)
    np.testing.assert_allclose(y, y64, atol=2e-5)
    np.testing.assert_allclose(dbeta, db64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dgamma, dg64, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, dx64, atol=2e-4 * float(np.abs(dx64).max()))
