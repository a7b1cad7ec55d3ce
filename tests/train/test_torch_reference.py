"""graphnet's gradients and training steps against PyTorch's, on whole networks.

The references are committed files made by scripts/make_grad_references.py (PyTorch is not a test
dependency): three networks exported from PyTorch in eval mode, whose BatchNorm layers train in
train mode here, as there. Gradients are compared in float64 (the float32 parameters upcast
exactly on both sides), so they must agree to rounding; three full-batch float32 steps of SGD
(momentum, weight decay) and Adam must give the same parameters up to float32 rounding."""

from __future__ import annotations

import os

import numpy as np
import pytest

from graphnet.train import SGD, Adam, Trainer, fit, softmax_cross_entropy
from graphnet.train.onnx_model import load_for_training

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "train")
NETWORKS = ["cnn_bn", "residual", "conv1d3d"]
# The same hyper-parameters as the generator script (SGD_ARGS, ADAM_ARGS, STEPS).
OPTIMIZERS = {
    "sgd": lambda: SGD(0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda: Adam(0.01, weight_decay=1e-3),
}
STEPS = 3


def _load(name: str):
    graph, trainable = load_for_training(os.path.join(DATA, f"{name}.onnx"))
    return graph, trainable, np.load(os.path.join(DATA, f"{name}.npz"))


@pytest.mark.parametrize("name", NETWORKS)
def test_gradients_match_pytorch_autograd(name):
    graph, trainable, ref = _load(name)
    expected = sorted(k[5:] for k in ref.files if k.startswith("grad/"))
    assert sorted(trainable) == expected, "the parameters that learn are PyTorch's parameters"
    trainer = Trainer(graph, trainable=trainable)
    p64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in graph.params.items()}
    tape = trainer.backprop.forward({"input": ref["x"].astype(np.float64)}, params=p64)
    loss, dpred = softmax_cross_entropy(tape.values[trainer.prediction], ref["y"])
    assert loss == pytest.approx(float(ref["loss"]), rel=1e-12)
    grads = trainer.backprop.backward(tape, {trainer.prediction: dpred}, trainable)
    for p in expected:
        want = ref[f"grad/{p}"]
        # float64 on both sides: rounding only (observed ~1e-16 absolute).
        np.testing.assert_allclose(
            grads[p].reshape(want.shape), want, rtol=1e-9, atol=1e-12, err_msg=p
        )


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", NETWORKS)
def test_full_batch_steps_match_pytorch(name, opt):
    """With shuffle off and batch = N, epoch e is step e: parameter by parameter, PyTorch's.
    Running statistics included (the variance by ONNX's biased rule, see the script)."""
    graph, trainable, ref = _load(name)
    x, y = ref["x"], ref["y"]
    fit(
        graph,
        (x, y),
        optimizer=OPTIMIZERS[opt](),
        epochs=STEPS,
        batch_size=len(x),
        shuffle=False,
        trainable=trainable,
        progress=False,
    )
    names = [k[len(opt) + 1 :] for k in ref.files if k.startswith(f"{opt}/")]
    assert set(trainable) <= set(names)
    for p in names:
        want = ref[f"{opt}/{p}"]
        got = graph.params[p].reshape(want.shape)
        # float32 arithmetic in different orders for 3 steps: observed <= 7e-6 of each tensor's
        # largest value; 1e-4 of it (and 1e-4 relative) is rounding, a wrong term is O(1).
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=p
        )


def test_decomposition_constants_do_not_learn():
    """PyTorch's GroupNorm export is InstanceNormalization with Constant ones/zeros: those are
    parameters of the graph but not of the model, so they stay fixed."""
    graph, trainable, _ = _load("residual")
    constants = [p for p in graph.params if p.startswith("/gn/")]
    assert constants and not set(constants) & set(trainable)
