"""The BN/dropout experiment's bookkeeping (benchmarks/bn_dropout.py): steps-to-accuracy, the
tables, the plot, and the README's tables being what the committed results give."""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

from graphnet.train.experiment import Run, bn_table, curve_of, dropout_table

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_curve_and_steps_to():
    steps = [{"step": 10, "test_accuracy": 0.5}, {"step": 20, "test_accuracy": 0.9}]
    epochs = [{"steps": 23, "test_accuracy": 0.95}]
    curve = curve_of(steps, epochs)
    assert curve == [(0, 0.0), (10, 0.5), (20, 0.9), (23, 0.95)]
    run = Run("BN", 0, 0.01, curve, epochs)
    assert run.best == 0.95 and run.steps_to(0.9) == 20 and run.steps_to(0.99) is None


def test_bn_table_measures_against_the_same_seeds_no_bn_best():
    def run(name, seed, curve):
        return Run(name, seed, 0.01, curve, [{"steps": curve[-1][0]}])

    runs = [
        run("no BN", 0, [(0, 0.0), (100, 0.9), (200, 0.95)]),
        run("no BN", 1, [(0, 0.0), (100, 0.97), (200, 0.96)]),
        run("BN", 0, [(0, 0.0), (10, 0.95), (20, 0.99)]),  # reaches 0.95 at step 10
        run("BN", 1, [(0, 0.0), (10, 0.95), (20, 0.96)]),  # never reaches its seed's 0.97
    ]
    rows = {line.split(" | ")[0].strip("| "): line for line in bn_table(runs).splitlines()}
    # no BN reaches its own best at steps 200 and 100: 150 ± 71; BN only for seed 0, at step 10.
    assert "| 150 ± 71 (2/2) |" in rows["no BN"]
    assert "| 10 (1/2) |" in rows["BN"]


def test_readme_tables_are_the_committed_results(tmp_path, capsys):
    """The README shows what `bn_dropout.py --from-json` prints for the committed results."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bn_dropout
    finally:
        sys.path.pop(0)
    svg = tmp_path / "c.svg"
    results = os.path.join(ROOT, "benchmarks", "results", "bn_dropout.json")
    assert bn_dropout.main(["--from-json", results, "--svg", str(svg)]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    tables = [t for t in printed.split("\n\n") if t.startswith("| network")]
    assert len(tables) == 2
    for table in tables:
        assert table.strip() in readme
    root = ET.parse(svg).getroot()  # well-formed SVG with one curve per BN configuration
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 4


def test_dropout_table_gap():
    rows = [{"train_eval_accuracy": 1.0, "test_accuracy": 0.99}]
    runs = [Run("BN, no dropout", s, 0.01, [(0, 0.0)], rows) for s in (0, 1)]
    assert "| 1.00 ± 0.00 |" in dropout_table(runs)


def test_train_step_benchmark_runs_and_its_phases_add_up(capsys):
    """benchmarks/train_step.py keeps working (2 rounds on 8 images; no time is asserted): its
    table has every row, and the backward's op families plus the walk are the backward."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import train_step
    finally:
        sys.path.pop(0)
    assert train_step.main(["--batch", "8", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[1] not in ("median (ms)", "---"):
            rows[cells[0]] = float(cells[1])
    for name in (
        "inference forward (graphnet fast plan)",
        "train step (graphnet fast plan)",
        "train step (graphnet reference plan)",
        "inference forward (onnxruntime, 1 thread)",
        "backward: conv",
    ):
        assert name in rows, name
    parts = [v for k, v in rows.items() if k.startswith("backward: ")]
    # Of 2 rounds the median is the mean, which adds up: the parts' medians sum to the
    # backward's, up to the printed rounding (0.005 ms per row).
    assert abs(sum(parts) - rows["backward"]) <= 0.005 * (len(parts) + 1) + 1e-9
    assert "train step (graphnet fast plan) / inference forward" in out


def test_configs_have_dropout_only_where_they_say():
    """'no BN' and the BN configs train without a Dropout node, 'BN + dropout 0.5' with one of
    drop 0.5 (the template's own default, drop=0.5 when not given, must not leak in)."""
    from graphnet.data import Dataset, digits
    from graphnet.train.experiment import BN_CONFIGS, DROPOUT_CONFIGS, run_config

    d = digits()
    tiny = Dataset(d.x[:8], d.y[:8], d.x_test[:8], d.y_test[:8])
    for name, bn, drop, mult in BN_CONFIGS + DROPOUT_CONFIGS:
        kept = []
        run_config(name, bn, drop, mult, seed=0, epochs=0, data=tiny, keep_graph=kept.append)
        ops = kept[0].op_counts()
        assert ops.get("Dropout", 0) == (0 if drop is None else 1), name
        assert ops.get("BatchNormalization", 0) == (4 if bn else 0), name
        for n in kept[0].nodes:
            if n.op == "Dropout":
                assert n.attrs.get("drop_prob") == drop, name
