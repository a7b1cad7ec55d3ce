"""The `graphnet` command: each subcommand end to end, and its error contract (one line on stderr,
exit code 2 for bad usage or input, never a traceback, never a partial or changed file)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from graphnet.cli import main
from tests import helpers
from tests.helpers import ort_run, small_onnx_model

ROOT = helpers.ROOT


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_runs_and_agrees(capsys):
    code, out, err = _run(["demo"], capsys)
    assert code == 0, err
    assert "BatchNorm: 4 layers" in out and "(4 per map)" in out
    assert "NumPy runtime vs onnxruntime" in out and "MISMATCH" not in out


def test_summary_table_and_json(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    code, out, _ = _run(["summary", path], capsys)
    assert code == 0
    assert "Conv" in out and "BatchNormalization" in out and "total" in out
    code, out, _ = _run(["summary", path, "--json"], capsys)
    rows = json.loads(out)["layers"]
    conv = next(r for r in rows if r["op"] == "Conv")
    # conv MACs per example: out 4x8x8 positions x (3*3*3) taps; params 4*3*3*3 + 4.
    assert conv["macs"] == 4 * 8 * 8 * 27 and conv["params"] == 4 * 27 + 4
    bn = next(r for r in rows if r["op"] == "BatchNormalization")
    assert bn["params"] == 4 * 4  # four arrays per map, as the lecture counts


def test_run_writes_npz_keyed_by_output(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = _run(
        ["run", path, "-i", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out.npz")], capsys
    )
    assert code == 0, err
    got = np.load(tmp_path / "out.npz")["y"]
    np.testing.assert_allclose(got, ort_run(onnx.load(path), {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_check_agrees(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    code, out, _ = _run(["check", path, "--batch", "3"], capsys)
    assert code == 0 and "agree" in out


def test_export_from_module(tmp_path, capsys):
    mod = tmp_path / "mynet.py"
    mod.write_text(
        "from graphnet import nn\n"
        "net = nn.Sequential([nn.Conv(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2)])\n"
        "def build():\n    return net.build((None, 1, 6, 6))\n"
    )
    out_path = tmp_path / "out.onnx"
    code, out, err = _run(["export", f"{mod}:build", "-o", str(out_path)], capsys)
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(out_path)), full_check=True)
    code, _, err = _run(
        ["export", f"{mod}:net", "-o", str(tmp_path / "o2.onnx"), "--input-shape", "N,1,6,6"],
        capsys,
    )
    assert code == 0, err
    code, _, err = _run(["export", f"{mod}:net", "-o", str(tmp_path / "o3.onnx")], capsys)
    assert code == 2 and "--input-shape" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "does/not/exist.onnx"], "no such file"),
        (["run", "{model}", "-i", "x", "-o", "{tmp}/o.npz"], "NAME=PATH.npy"),
        (["run", "{model}", "-o", "{tmp}/o.npz"], "missing input"),
        (["export", "nocolon", "-o", "{tmp}/o.onnx"], "MODULE:ATTR"),
        (["check", "{model}", "--batch", "0"], "--batch must be >= 1"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    model = small_onnx_model(tmp_path / "m.onnx")
    argv = [a.format(model=model, tmp=tmp_path) for a in argv]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.onnx").exists()


def test_invalid_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = _run(["summary", str(bad)], capsys)
    assert code == 2 and "not a readable ONNX model" in err and "Traceback" not in err


def test_python_dash_m_entry_point(tmp_path):
    path = small_onnx_model(tmp_path / "m.onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "graphnet", "summary", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Gemm" in proc.stdout
