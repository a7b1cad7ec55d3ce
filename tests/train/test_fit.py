"""`fit` end to end on the shipped digits: learning, history, resumable checkpoints, and a trained
BatchNorm network that optimizes and runs on onnxruntime with the same predictions."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from graphnet import nn, runtime
from graphnet.data import Dataset, digits, load, save
from graphnet.errors import InputError
from graphnet.train import SGD, Adam, StepLR, fit


def _small(batchnorm=True, dropout=None):
    drop = 0.0 if dropout is None else dropout  # the template's default would be 0.5
    return nn.template(channels=(8, 16), hidden=(32,), batchnorm=batchnorm, drop=drop).build(
        (None, 1, 8, 8), seed=0
    )


@pytest.fixture(scope="module")
def trained():
    """The template CNN with BN and dropout, trained 4 epochs on the digits."""
    g = nn.template(channels=(16, 32), hidden=(64,), drop=0.25).build((None, 1, 8, 8), seed=0)
    data = digits()
    hist = fit(g, data, optimizer=SGD(0.05, momentum=0.9), epochs=4, batch_size=64, seed=0)
    return g, data, hist


def test_template_learns_the_digits(trained):
    """The issue's bar, 97% test accuracy on the digits. Measured: 98.6% after 4 seeded epochs
    here (other BLAS builds round differently; 97% leaves 5 images of margin); a broken gradient
    gives ~10%."""
    _, _, hist = trained
    acc = hist.column("test_accuracy")
    assert acc[-1] >= 0.97, acc
    losses = hist.column("loss")
    assert losses[-1] < losses[0] / 3


def test_optimized_model_predicts_the_same_classes_on_onnxruntime(trained):
    """optimize (BN folded, dropout gone) then onnxruntime: the same class for every test image
    as the training graph in inference mode on the NumPy runtime."""
    from graphnet.passes.manager import optimize

    g, data, _ = trained
    ours = runtime.run(g, {"input": data.x_test})["output"]
    opt, _ = optimize(g)
    assert "BatchNormalization" not in opt.op_counts() and "Dropout" not in opt.op_counts()
    sess = ort.InferenceSession(
        opt.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    theirs = sess.run(None, {"input": data.x_test})[0]
    np.testing.assert_array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))
    # Probabilities too: folding changes rounding only (float32 through a few layers).
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def test_history_json_and_metrics(tmp_path):
    data = digits()
    sub = Dataset(data.x[:128], data.y[:128], data.x_test[:64], data.y_test[:64])
    path = tmp_path / "h.json"
    hist = fit(
        _small(), sub, epochs=2, batch_size=32, history=str(path), eval_every=2, eval_train=True
    )
    saved = json.loads(path.read_text())
    assert saved["epochs"] == hist.epochs and len(saved["epochs"]) == 2
    row = saved["epochs"][-1]
    for key in ("loss", "accuracy", "test_loss", "test_accuracy", "train_eval_accuracy", "lr"):
        assert key in row
    assert row["steps"] == 8 and [s["step"] for s in saved["steps"]] == [2, 4, 6, 8]
    assert saved["config"]["fused_softmax"] is True


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """Stop after 2 epochs, resume for 2 more: the same parameters, bit for bit (batch order,
    dropout masks, momentum, BN statistics all restored)."""
    data = digits()
    sub = (data.x[:96], data.y[:96])

    def run(epochs, ckpt=None, resume=False, graph=None):
        g = graph if graph is not None else _small(dropout=0.3)
        fit(
            g,
            sub,
            optimizer=SGD(0.05, momentum=0.9),
            epochs=epochs,
            batch_size=32,
            seed=3,
            checkpoint=ckpt,
            resume=resume,
            schedule=StepLR(1, 0.5),
        )
        return g

    straight = run(4)
    ckpt = str(tmp_path / "ckpt.npz")
    run(2, ckpt)
    resumed = run(4, ckpt, resume=True)  # a fresh graph: everything comes from the checkpoint
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name], err_msg=name)


def test_adam_and_mse_train():
    """MSE on one-hot targets with Adam: the loss falls (regression path, no accuracy)."""
    data = digits()
    g = nn.Sequential([nn.Flatten(), nn.Linear(10)]).build((None, 1, 8, 8))
    x = data.x[:200]
    targets = np.eye(10, dtype=np.float32)[data.y[:200]]
    from graphnet.train import Trainer

    tr = Trainer(g, loss="mse", optimizer=Adam(0.01))
    first = tr.step(x, targets)[0]
    for _ in range(30):
        last = tr.step(x, targets)[0]
    assert last < first / 2


@pytest.mark.parametrize("plan", ["fast", "reference"])
def test_an_empty_batch_is_refused_by_name(plan):
    """A batch of no examples has a NaN mean loss, which `step` would report as a diverging
    learning rate; `evaluate` would divide by zero: both say what is wrong instead, and the
    parameters stay as they were."""
    from graphnet.train import Trainer

    g = nn.Sequential([nn.Conv(4, 3), nn.ReLU(), nn.MaxPool(2), nn.Flatten(), nn.Linear(10)])
    g = g.build((None, 1, 8, 8))
    before = {k: v.copy() for k, v in g.params.items()}
    tr = Trainer(g, plan=plan)
    empty = np.zeros((0, 1, 8, 8), np.float32)
    labels = np.zeros(0, np.int64)
    with pytest.raises(InputError, match=r"empty batch \(shape \(0,1,8,8\)\)"):
        tr.step(empty, labels)
    with pytest.raises(InputError, match="no examples"):
        tr.evaluate(empty, labels)
    for k, v in before.items():
        np.testing.assert_array_equal(g.params[k], v, err_msg=k)


def test_data_round_trip_and_errors(tmp_path):
    data = digits()
    assert data.x.shape == (1438, 1, 8, 8) and data.x_test.shape == (359, 1, 8, 8)
    assert data.x.dtype == np.float32 and 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert sorted(set(data.y.tolist())) == list(range(10))
    path = tmp_path / "d.npz"
    save(data, path)
    back = load(path)
    np.testing.assert_array_equal(back.x, data.x)
    np.testing.assert_array_equal(back.y_test, data.y_test)
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(InputError, match=r"y must have shape \(3,\)"):
        load(tmp_path / "bad.npz")
    np.savez(tmp_path / "nox.npz", y=np.zeros(2, np.int64))
    with pytest.raises(InputError, match=r"no array\(s\) \['x'\]"):
        load(tmp_path / "nox.npz")


def test_wrong_input_shape_names_the_model_input():
    g = _small()
    with pytest.raises(InputError, match="input 'input' of the model has shape"):
        fit(g, (np.zeros((4, 1, 7, 7), np.float32), np.zeros(4, np.int64)), epochs=1)


def test_diverging_loss_is_a_clear_error():
    g = nn.Sequential([nn.Flatten(), nn.Linear(10)]).build((None, 1, 8, 8))
    data = digits()
    x = data.x[:64] * np.float32(1e30)
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(g, (x, data.y[:64]), optimizer=SGD(1e10), epochs=3)
