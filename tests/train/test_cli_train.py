"""`graphnet train`: the contract of the issue, end to end through the CLI."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphnet.cli import main

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "train")


def _digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


@pytest.mark.parametrize(
    "opt, flags",
    [
        ("sgd", ["--lr", "0.05", "--momentum", "0.9", "--weight-decay", "1e-3"]),
        ("adam", ["--optimizer", "adam", "--lr", "0.01", "--weight-decay", "1e-3"]),
    ],
)
def test_full_batch_training_of_a_pytorch_export_matches_pytorch(tmp_path, capsys, opt, flags):
    """--no-shuffle with B = N: 3 epochs are 3 full-batch steps, parameter by parameter the
    ones PyTorch's optimizer reached (references from scripts/make_grad_references.py)."""
    model = os.path.join(DATA, "cnn_bn.onnx")
    ref = np.load(os.path.join(DATA, "cnn_bn.npz"))
    data = tmp_path / "d.npz"
    np.savez(data, x=ref["x"], y=ref["y"])
    before = _digest(model)
    out, hist = tmp_path / "out.onnx", tmp_path / "h.json"
    argv = ["train", model, "--data", str(data), "-o", str(out), "--epochs", "3"]
    argv += ["--batch-size", str(len(ref["x"])), "--no-shuffle", "--history", str(hist)] + flags
    assert main(argv) == 0
    assert _digest(model) == before, "the input model must never be modified"
    got = _initializers(out)
    for key in ref.files:
        if key.startswith(f"{opt}/"):
            want = ref[key]
            # float32 rounding over 3 steps (observed <= 1e-6 relative): see test_torch_reference
            np.testing.assert_allclose(
                got[key[len(opt) + 1 :]].reshape(want.shape),
                want,
                rtol=1e-4,
                atol=1e-4 * float(np.abs(want).max()),
                err_msg=key,
            )
    rows = json.loads(hist.read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert "epoch 3/3" in capsys.readouterr().out


def test_trains_a_dsl_module_and_writes_history(tmp_path):
    (tmp_path / "nets.py").write_text(
        "from graphnet import nn\n"
        "net = nn.Sequential([nn.Conv(4, 3, padding='same'), nn.BatchNorm(), nn.ReLU(),\n"
        "                     nn.Flatten(), nn.Linear(10), nn.Softmax()])\n"
    )
    from graphnet.data import Dataset, digits, save

    d = digits()
    save(Dataset(d.x[:200], d.y[:200], d.x_test[:100], d.y_test[:100]), tmp_path / "d.npz")
    out, hist = tmp_path / "o.onnx", tmp_path / "h.json"
    argv = ["train", f"{tmp_path / 'nets.py'}:net", "--data", str(tmp_path / "d.npz")]
    argv += ["-o", str(out), "--epochs", "3", "--lr", "0.05", "--momentum", "0.9"]
    assert main(argv + ["--history", str(hist)]) == 0
    rows = json.loads(hist.read_text())["epochs"]
    # It learns (chance is 10%; 3 epochs of 200 images reach ~70% here).
    assert rows[-1]["test_accuracy"] > 0.3 and rows[-1]["loss"] < rows[0]["loss"]
    names = set(_initializers(out))
    assert {"conv1.weight", "bn1.scale", "fc1.W"} <= names


def _bad(tmp_path, capsys, argv, message):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err
    # Refused before training starts: no "training ..." line announces a run that never happens.
    assert "training" not in out, out
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.onnx").exists()


def test_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    model = os.path.join(DATA, "cnn_bn.onnx")
    out = str(tmp_path / "out.onnx")
    _bad(tmp_path, capsys, ["train", model, "--data", "nope.npz", "-o", out], "no such file")
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.arange(7, 11))
    _bad(
        tmp_path,
        capsys,
        ["train", model, "--data", str(tmp_path / "labels.npz"), "-o", out],
        "labels.npz: y holds labels 7..10, but the model has 10 outputs: labels must be in [0, 10)",
    )
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    _bad(
        tmp_path,
        capsys,
        ["train", model, "--data", str(tmp_path / "shape.npz"), "-o", out],
        "has shape (N,1,8,8)",
    )
    ref = tmp_path / "d.npz"
    np.savez(ref, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    _bad(
        tmp_path,
        capsys,
        ["train", model, "--data", str(ref), "-o", out, "--optimizer", "adam", "--momentum", "0.9"],
        "--momentum is for sgd",
    )
    for flag, value in (("--lr", "-0.1"), ("--lr", "nan"), ("--weight-decay", "-1")):
        _bad(
            tmp_path,
            capsys,
            ["train", model, "--data", str(ref), "-o", out, flag, value],
            f"{flag} must be a number in [0, inf), got {float(value)!r}",
        )
    nan = np.zeros((4, 1, 8, 8), np.float32)
    nan[2, 0, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan, y=np.zeros(4, np.int64))
    _bad(
        tmp_path,
        capsys,
        ["train", model, "--data", str(tmp_path / "nan.npz"), "-o", out],
        "nan.npz: x holds NaN or infinite values in 1 example (the first is example 2)",
    )
    assert main(["train", model, "--data", str(ref), "-o", model]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err


# The contract, as the issue words it (scripts depend on it).
CONTRACT = (
    "graphnet train MODEL --data DATA.npz -o OUT.onnx [--epochs E] [--batch-size B] [--lr LR] "
    "[--optimizer sgd|adam] [--momentum M] [--weight-decay W] [--no-shuffle] [--seed S] "
    "[--history H.json]"
)


def test_usage_is_the_contract_and_every_flag_in_it_is_accepted(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    usage = " ".join(out.split("\n\n")[0].split())
    assert usage == "usage: " + CONTRACT
    # Every flag of the contract, with a value where it takes one, parses as the usage says.
    import graphnet.cli.train as command

    seen = []
    monkeypatch.setattr(command, "run", lambda args: seen.append(args) or 0)
    argv = CONTRACT.replace("[", "").replace("]", "").split()[2:]
    values = {"E": "2", "B": "8", "LR": "0.1", "sgd|adam": "adam", "M": "0.5", "W": "0.01"}
    values.update({"S": "7", "MODEL": "m.onnx", "DATA.npz": "d.npz", "OUT.onnx": "o.onnx"})
    assert main(["train"] + [values.get(a, a) for a in argv]) == 0
    (args,) = seen
    assert (args.model, args.data, args.output) == ("m.onnx", "d.npz", "o.onnx")
    assert (args.epochs, args.batch_size, args.lr, args.optimizer) == (2, 8, 0.1, "adam")
    assert (args.momentum, args.weight_decay, args.no_shuffle, args.seed) == (0.5, 0.01, True, 7)
    assert args.history == "H.json"


def test_seed_fixes_the_batch_order_and_dropout_masks(tmp_path):
    """Same --seed: the same trained parameters; another seed: other batches, other masks."""
    (tmp_path / "nets.py").write_text(
        "from graphnet import nn\n"
        "net = nn.Sequential([nn.Flatten(), nn.Dropout(drop=0.5), nn.Linear(10), nn.Softmax()])\n"
    )
    from graphnet.data import Dataset, digits, save

    d = digits()
    save(Dataset(d.x[:48], d.y[:48]), tmp_path / "d.npz")
    trained = []
    for i, seed in enumerate(("3", "3", "4")):
        out = tmp_path / f"o{i}.onnx"
        argv = ["train", f"{tmp_path / 'nets.py'}:net", "--data", str(tmp_path / "d.npz")]
        assert (
            main(argv + ["-o", str(out), "--epochs", "2", "--batch-size", "16", "--seed", seed])
            == 0
        )
        trained.append(_initializers(out))
    assert all(np.array_equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert not np.array_equal(trained[0]["fc1.W"], trained[2]["fc1.W"])
