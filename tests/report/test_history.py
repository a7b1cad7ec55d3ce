"""Training histories in the accepted forms, and clear errors for the others."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from graphnet.errors import InputError
from graphnet.report.history import history_charts, load_history, load_steps

EPOCHS = [
    {"epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": 2.2, "val_accuracy": 0.25, "lr": 0.1},
    {"epoch": 2, "loss": 1.2, "accuracy": 0.6, "val_loss": 1.4, "val_accuracy": 0.55, "lr": 0.05},
    {
        "epoch": 3,
        "loss": 0.8,
        "accuracy": 0.8,
        "val_accuracy": 0.7,
        "lr": 0.05,
        "note": "x",
        "steps": 30,
        "seconds": 1.5,
    },
]


@pytest.mark.parametrize(
    "data",
    [
        EPOCHS,
        {"history": EPOCHS, "model": "template"},
        {"config": {"epochs": 3}, "epochs": EPOCHS, "steps": [{"step": 10, "test_loss": 1.0}]},
    ],
)
def test_per_epoch_forms(data, tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps(data))
    xs, series = load_history(str(path))
    assert xs == [1.0, 2.0, 3.0]
    assert set(series) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert series["val_loss"] == [2.2, 1.4, None]  # missing in epoch 3
    charts = [ET.fromstring(c) for c in history_charts(xs, series)]
    titles = [c.find("{http://www.w3.org/2000/svg}text").text for c in charts]
    assert titles == ["loss", "accuracy", "learning rate"]


def test_an_object_with_to_dict():
    """graphnet.train.History (and anything else with to_dict) is read through to_dict()."""

    class Hist:
        def to_dict(self):
            return {"config": {}, "epochs": EPOCHS[:2], "steps": []}

    xs, series = load_history(Hist())
    assert xs == [1.0, 2.0] and series["loss"] == [2.0, 1.2]


def test_keras_style_lists_and_row_numbers():
    xs, series = load_history({"loss": [3.0, 2.0], "acc": [0.1, 0.2]})
    assert xs == [1.0, 2.0] and series == {"loss": [3.0, 2.0], "acc": [0.1, 0.2]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "holds no epochs"),
        ([1, 2], "entry 0 is int"),
        (3.5, "got float"),
        ({"model": "x"}, "expected a list"),
        ([{"epoch": 1, "note": "x"}], "no numeric values"),
    ],
)
def test_bad_histories(data, message):
    with pytest.raises(InputError, match=message):
        load_history(data)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="cannot read training history '.*missing.json'"):
        load_history(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json' is not valid JSON"):
        load_history(str(bad))
    # A binary file given by mistake (an .npz): it was a UnicodeDecodeError (a traceback).
    binary = tmp_path / "h.npz"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(InputError, match="h.npz' is not a JSON text file"):
        load_history(str(binary))


def test_the_trainers_history_file(tmp_path):
    """What graphnet's training loop writes (fit(history=PATH)) is read as it is, and so is the
    History object it returns."""
    from graphnet import nn, train
    from graphnet.data import digits

    data = digits()
    small = (data.x[:128], data.y[:128])
    graph = nn.template(channels=(4, 8), hidden=(16,)).build((None, 1, 8, 8))
    path = tmp_path / "h.json"
    hist = train.fit(graph, small, epochs=2, history=str(path), progress=False)
    xs, series = load_history(str(path))
    assert xs == [1.0, 2.0]
    assert series["loss"] == pytest.approx(hist.column("loss"))
    assert "steps" not in series and "seconds" not in series
    assert load_history(hist) == (xs, series)


def test_the_evaluations_every_k_steps():
    """fit(eval_every=k) records test metrics every k steps ("steps"): a short run's one or
    two epochs say little, those points show the curve; charted against the step."""
    hist = {
        "epochs": [{"epoch": 1, "steps": 30, "loss": 1.5, "test_accuracy": 0.6}],
        "steps": [
            {"step": 10, "test_loss": 2.0, "test_accuracy": 0.3},
            {"step": 20, "test_loss": 1.2, "test_accuracy": 0.5},
            {"step": 30, "test_loss": 0.9, "test_accuracy": None},
        ],
    }
    xs, series = load_steps(hist)
    assert xs == [10.0, 20.0, 30.0]
    assert series == {"test_loss": [2.0, 1.2, 0.9], "test_accuracy": [0.3, 0.5, None]}
    charts = history_charts(xs, series, xlabel="step")
    assert len(charts) == 2
    assert ">loss by step<" in charts[0] and ">accuracy by step<" in charts[1]
    assert all(">step<" in c for c in charts)  # the x axis's label
    # Fewer than two evaluations, no steps list, or rows without a step: nothing to draw.
    assert load_steps({**hist, "steps": hist["steps"][:1]}) is None
    assert load_steps({"epochs": hist["epochs"]}) is None
    assert load_steps([{"epoch": 1, "loss": 1.0}]) is None
    assert load_steps({"steps": [{"loss": 1.0}, {"loss": 0.5}]}) is None
