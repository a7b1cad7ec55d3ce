"""`graphnet bench`: every engine's outputs compared on every run (a wrong fast kernel is exit
1, not a win), JSON for scripts, clear errors for bad usage. Timings are tiny (one short block):
these tests check what is reported, never how fast anything is."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphnet.cli import main
from tests.helpers import small_onnx_model

FAST = ["--runs", "1", "--block", "0.01", "--no-reference", "--no-torch"]


def test_suite_model_json_has_every_engine_checked(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "--suite", "--models", "lenet5", "--batch", "1,3", *FAST, "--json", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1 and data["machine"]["blas_gflops"] > 0
    assert [(r["model"], r["batch"]) for r in data["rows"]] == [("lenet5", 1), ("lenet5", 3)]
    for row in data["rows"]:
        engines = set(row["ms"])
        assert {
            "ours[fast]",
            "ours[reference]",
            "ours[original]",
            "ort",
            "ort[no-opt]",
            "gemm floor",
        } <= engines
        assert set(row["checks"]) == {
            "ours[fast]",
            "ours[reference]",
            "ours[original]",
            "ort[no-opt]",
        }
        assert all(c["ok"] for c in row["checks"].values())
        assert row["ratio_ort"] == pytest.approx(row["ms"]["ours[fast]"] / row["ms"]["ort"])
        assert row["memory"]["ours_peak_mib"] > row["memory"]["params_mib"] > 0
        mem = row["memory"]  # the session's arena is within the peak, beside prepared weights
        assert 0 < mem["held_mib"] < mem["ours_peak_mib"] - mem["params_mib"]
    text = capsys.readouterr().out
    assert "lenet5" in text and "geometric mean" in text and "cores" in text


def test_pytorch_engine_is_timed_and_checked_when_installed(tmp_path, capsys):
    pytest.importorskip("torch", reason="PyTorch is optional (a benchmark engine only)")
    out = tmp_path / "bench.json"
    argv = ["bench", "--suite", "--models", "lenet5", "--batch", "2", *FAST, "--json", str(out)]
    argv.remove("--no-torch")
    assert main(argv) == 0, capsys.readouterr().err
    row = json.loads(out.read_text())["rows"][0]
    assert row["checks"]["pytorch"]["ok"] and row["pytorch_note"].startswith("PyTorch ")
    assert row["ratio_torch"] == pytest.approx(row["ms"]["ours[fast]"] / row["ms"]["pytorch"])
    assert "ours / PyTorch" in capsys.readouterr().out


def test_model_file_and_a_wrong_fast_kernel_is_a_failure(tmp_path, capsys, monkeypatch):
    path = small_onnx_model(tmp_path / "m.onnx")
    assert main(["bench", path, "--batch", "2", *FAST]) == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    # The model column names the file, not its whole path (which made the table very wide).
    assert "m.onnx" in table and str(tmp_path) not in table, table
    # The footer says how many threads each side ran (--threads is onnxruntime's and PyTorch's).
    from graphnet.runtime.fast.threads import WORKERS

    assert f"graphnet {WORKERS} threads" in table and "(2 threads)" in table, table
    from graphnet.runtime.fast import steps

    real = steps.ConvStep.__call__

    def off_by_a_bit(self, run):  # a fast kernel that is fast and wrong
        real(self, run)
        run.env[self.outputs[0]] += np.float32(0.5)

    monkeypatch.setattr(steps.ConvStep, "__call__", off_by_a_bit)
    capsys.readouterr()
    assert main(["bench", path, "--batch", "2", *FAST]) == 1
    err = capsys.readouterr().err
    assert "outputs differ" in err and "ours[fast]" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench"], "give a MODEL.onnx or --suite"),
        (["bench", "--suite", "--models", "alexnet"], "unknown suite model"),
        (["bench", "--suite", "--batch", "0"], "--batch sizes must be >= 1"),
        (["bench", "--suite", "--batch", "a"], "--batch must be comma-separated integers"),
        (["bench", "--suite", "--runs", "0"], "--runs must be >= 1"),
        (["bench", "--suite", "--threads", "0"], "--threads must be >= 1"),
        (["bench", "--suite", "--block", "-1"], "--block must be a positive number"),
        (["bench", "--suite", "--ref-cap", "0"], "--ref-cap must be a positive number"),
        (["bench", "missing.onnx"], "missing.onnx: no such file"),
        (["bench", "missing.onnx", "--suite"], "not both"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_json_to_stdout_is_only_json_and_markdown_is_a_table(capsys):
    argv = ["bench", "--suite", "--models", "lenet5", "--batch", "1", *FAST]
    assert main([*argv, "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert [(r["model"], r["batch"]) for r in result["rows"]] == [("lenet5", 1)]
    assert main([*argv, "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | batch |") and lines[1].startswith("|---|")
    assert lines[2].startswith("| lenet5 | 1 |")


def test_lean_flag_times_the_lean_plan_and_reports_its_peak(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--suite", "--models", "resnet20", "--batch", "1", *FAST, "--lean"]
    assert main([*argv, "--json", str(out), "--markdown"]) == 0, capsys.readouterr().err
    row = json.loads(out.read_text())["rows"][0]
    assert row["checks"]["ours[lean]"]["ok"]
    mem = row["memory"]  # memory is deterministic: the lean plan's budget holds (fast.lean)
    assert mem["lean_ratio"] <= 1.3 < mem["ratio"]
    assert mem["lean_peak_mib"] == pytest.approx(
        mem["lean_ratio"] * mem["ours_peak_mib"] / mem["ratio"]
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[-4:] == ["lean ms", "lean / PyTorch", "lean peak / floor", "outputs"]
    assert float(cells[header.index("lean peak / floor")]) == pytest.approx(
        mem["lean_ratio"], abs=0.01
    )
    assert cells[header.index("lean / PyTorch")] == ""  # (--no-torch)
