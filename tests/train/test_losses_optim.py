"""Losses against their plain formulas and finite differences; optimizers against hand-written
PyTorch update rules; schedules against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphnet.errors import AttributeValueError, InputError
from graphnet.train import SGD, Adam, CosineLR, StepLR, mse, softmax_cross_entropy


def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def test_cross_entropy_is_the_formula_and_its_gradient():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    loss, grad = softmax_cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(float(np.mean(-np.log(p[np.arange(5), y]))), rel=1e-12)
    np.testing.assert_allclose(
        grad, _fd(lambda v: softmax_cross_entropy(v, y)[0], z), rtol=1e-6, atol=1e-9
    )


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(z, np.array([2, 1]))
    # Example 0: the right class is 2000 below the top one: loss 2000 exactly, no inf or nan.
    assert loss == pytest.approx((2000.0 + 0.0) / 2)
    assert np.isfinite(grad).all() and grad.dtype == np.float32


def test_cross_entropy_rejects_bad_labels():
    with pytest.raises(InputError, match=r"integers in \[0, 3\)"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(InputError, match="shape"):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0]))


def test_mse_is_the_formula_and_its_gradient():
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, grad = mse(p, t)
    assert loss == pytest.approx(float(np.mean((p - t) ** 2)))
    np.testing.assert_allclose(grad, _fd(lambda v: mse(v, t)[0], p), rtol=1e-6, atol=1e-9)


def _run(opt, p0, grads):
    p = {"w": p0.copy()}
    out = []
    for g in grads:
        p = opt.step(p, {"w": g})
        out.append(p["w"])
    return out


def test_sgd_momentum_weight_decay_follows_pytorch():
    """PyTorch: d = g + wd p; buf = d at step 1, then m buf + d; p -= lr buf."""
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    lr, m, wd = 0.1, 0.9, 0.01
    p, buf, want = p0.copy(), None, []
    for g in grads:
        d = g + wd * p
        buf = d if buf is None else m * buf + d
        p = p - lr * buf
        want.append(p)
    got = _run(SGD(lr, momentum=m, weight_decay=wd), p0, grads)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_plain_sgd_and_nesterov():
    p0, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    np.testing.assert_allclose(_run(SGD(0.1), p0, [g])[0], p0 - 0.1 * g)
    # Nesterov, step 1: buf = g, p -= lr (g + m buf)
    np.testing.assert_allclose(
        _run(SGD(0.1, momentum=0.5, nesterov=True), p0, [g])[0], p0 - 0.1 * (g + 0.5 * g)
    )


def test_adam_follows_pytorch():
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr m_hat / (sqrt(v_hat) + eps)."""
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(5)]
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    p, m, v, want = p0.copy(), 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        want.append(p)
    got = _run(Adam(lr, weight_decay=wd), p0, grads)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_optimizers_keep_float32():
    p0 = np.ones(3, np.float32)
    for opt in (SGD(0.1, momentum=0.9, weight_decay=0.1), Adam(0.1, weight_decay=0.1)):
        for w in _run(opt, p0, [np.ones(3, np.float32)] * 2):
            assert w.dtype == np.float32


def test_optimizer_state_round_trips():
    opt = Adam(0.1)
    _run(opt, np.ones(2), [np.ones(2)])
    other = Adam(0.1)
    other.load_state_arrays(opt.state_arrays())
    assert other.t == 1
    np.testing.assert_array_equal(other.m["w"], opt.m["w"])


def test_bad_hyper_parameters_are_clear_errors():
    with pytest.raises(AttributeValueError, match="momentum"):
        SGD(0.1, momentum=1.5)
    with pytest.raises(AttributeValueError, match="lr"):
        Adam(-1.0)


def test_schedules():
    assert [StepLR(2, 0.5)(1.0, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    cos = CosineLR(4, min_lr=0.1)
    assert cos(1.0, 0) == pytest.approx(1.0)
    assert cos(1.0, 2) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos(1.0, 4) == pytest.approx(0.1) and cos(1.0, 9) == pytest.approx(0.1)
    assert cos(1.0, 1) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
