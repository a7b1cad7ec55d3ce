"""`check` and `run` on train-mode models compare like with like: by default both sides run in
the mode the model declares, `--mode` chooses; Dropout's random masks are compared at ratio 0 and
the check says so; the updated BatchNorm statistics are compared and saved."""

from __future__ import annotations

import os

import numpy as np
import onnx

from graphnet.cli import main
from graphnet.cli.train_mode import onnx_updated_statistics, zero_onnx_dropout
from tests import helpers
from tests.helpers import assert_close, ort_run

BN_TRAIN = os.path.join(helpers.TORCH_DATA, "bn_train.onnx")  # PyTorch TRAINING export


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_runs_a_training_export_in_train_mode(capsys):
    code, out, err = _run(["check", BN_TRAIN, "--batch", "3"], capsys)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "mode: train (the model has training-mode BatchNormalization or Dropout)"
    assert "1 Dropout compared with ratio 0 on both sides (their masks are random)" in out
    assert "bn.running_mean (updated)" in out and "bn.running_var (updated)" in out
    assert lines[-1].startswith("agree")


def test_check_inference_mode_of_a_training_export(capsys):
    code, out, _ = _run(["check", BN_TRAIN, "--mode", "inference"], capsys)
    assert code == 0 and "mode: inference (--mode; the model itself is a train-mode export)" in out
    assert "(updated)" not in out and out.splitlines()[-1].startswith("agree")


def test_check_would_see_the_old_false_comparisons(capsys, monkeypatch):
    """What the check guards against, made to happen: the NumPy side running inference while
    onnxruntime honours training_mode (the old behaviour), and random masks compared."""
    import graphnet.cli.train_mode as train_mode
    from graphnet import runtime

    real_run = runtime.Session.run
    monkeypatch.setattr(
        runtime.Session, "run", lambda self, feeds, **kw: real_run(self, feeds, seed=0)
    )
    code, out, _ = _run(["check", BN_TRAIN, "--batch", "3"], capsys)
    assert code == 1 and "MISMATCH" in out and out.splitlines()[-1].startswith("DIFFER")
    monkeypatch.setattr(runtime.Session, "run", real_run)
    monkeypatch.setattr(train_mode, "zero_onnx_dropout", lambda model: (model, 0))
    code, out, _ = _run(["check", BN_TRAIN, "--batch", "3"], capsys)
    assert code == 1 and "dropped: " in out and "MISMATCH" in out


def test_export_train_mode_then_check_agrees(tmp_path, capsys):
    """The issue's reproducer: a DSL network exported in train mode, then checked."""
    mod = tmp_path / "mynets.py"
    mod.write_text(
        "from graphnet import nn\n"
        "def build():\n"
        "    net = nn.Sequential([nn.Conv(4, 3), nn.BatchNorm(), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Dropout(drop=0.5), nn.Linear(3), nn.BatchNorm()])\n"
        "    return net.build((None, 2, 6, 6))\n"
    )
    out_path = tmp_path / "t.onnx"
    code, _, err = _run(["export", f"{mod}:build", "--mode", "train", "-o", out_path], capsys)
    assert code == 0, err
    code, out, _ = _run(["check", out_path, "--batch", "4"], capsys)
    assert code == 0, out
    assert "mode: train (the model has training-mode" in out
    assert "1 Dropout compared with ratio 0" in out
    # Two BNs, two statistics each: the export outputs them, so each is compared once, as an
    # output (it was compared a second time as "bn1.running_mean (updated)").
    assert "4 updated BatchNorm running statistics compared" in out
    for stat in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"):
        assert sum(line.startswith(stat) for line in out.splitlines()) == 1, out


def test_run_defaults_to_the_declared_mode_and_saves_the_updated_statistics(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.npz"
    code, text, err = _run(
        ["run", BN_TRAIN, "-i", f"input={tmp_path / 'x.npy'}", "-o", out], capsys
    )
    assert code == 0, err
    assert "mode: train (the model has training-mode" in text
    got = np.load(out)
    # The same statistics onnxruntime computes in its training-mode step.
    ref_model, stats = onnx_updated_statistics(zero_onnx_dropout(onnx.load(BN_TRAIN))[0])
    ref_model.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(v) for v in stats.values()
    )
    theirs = ort_run(ref_model, {"input": x})
    for param, value in stats.items():
        assert_close(got[f"{param}.updated"], theirs[value], rtol=1e-4, atol=1e-5, what=param)
    initial = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(BN_TRAIN).graph.initializer}
    assert not np.allclose(got["bn.running_mean.updated"], initial["bn.running_mean"])
    # --mode inference: nothing is updated, no statistics saved.
    code, text, _ = _run(
        ["run", BN_TRAIN, "-i", f"input={tmp_path / 'x.npy'}", "-o", out, "--mode", "inference"],
        capsys,
    )
    assert code == 0 and text.startswith(
        "mode: inference (--mode; the model itself is a train-mode export)\n"
    )
    assert sorted(np.load(out).files) == ["dropped", "features"]


def test_zero_onnx_dropout_counts_what_it_changed():
    model = onnx.load(BN_TRAIN)
    changed, count = zero_onnx_dropout(model)
    assert count == 1
    again, count = zero_onnx_dropout(changed)
    assert count == 0 and again is not changed
