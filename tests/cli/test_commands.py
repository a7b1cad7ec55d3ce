"""The `graphnet` command: each subcommand end to end, and its error contract (one line on stderr,
exit code 2 for bad usage or input, never a traceback, never a partial or changed file)."""

from __future__ import annotations

import json
import os
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
    # The course material is not in the repository: the demo does not cite it.
    assert "lecture" not in out.lower() and "The template CNN: INPUT -> " in out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "lecture" not in capsys.readouterr().out.lower()


def test_summary_table_and_json(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    code, out, _ = _run(["summary", path], capsys)
    assert code == 0
    assert "Conv" in out and "BatchNormalization" in out and "total" in out
    assert "inputs:  x float32(N,3,8,8)" in out and "outputs: y float32(N,5)" in out
    # 4*27+4 conv, 4*4 BN, 5*4+5 Gemm scalars, float32; the file's own size.
    assert f"parameters: 153 (612 B); file: {os.path.getsize(path):,} bytes" in out
    code, out, _ = _run(["summary", path, "--json"], capsys)
    doc = json.loads(out)
    rows = doc["layers"]
    conv = next(r for r in rows if r["op"] == "Conv")
    # conv MACs per example: out 4x8x8 positions x (3*3*3) taps; params 4*3*3*3 + 4.
    assert conv["macs"] == 4 * 8 * 8 * 27 and conv["params"] == 4 * 27 + 4
    assert conv["output_shapes"] == [["N", 4, 8, 8]]
    bn = next(r for r in rows if r["op"] == "BatchNormalization")
    assert bn["params"] == 4 * 4  # four arrays per map (docs/formulas.md)
    assert doc["params"] == sum(r["params"] for r in rows) == 153
    assert doc["param_bytes"] == 4 * 153 and doc["file_bytes"] == os.path.getsize(path)
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8]}]
    assert doc["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["N", 5]}]


@pytest.mark.slow  # reads and imports a 61 M-parameter model's graph (its weights are generated)
def test_summary_counts_generated_weights(capsys):
    """The light AlexNet makes every weight with ConstantOfShape: they are its parameters (the
    published 60,965,224), not the shape vectors that ConstantOfShape reads."""
    path = os.path.join(
        os.path.dirname(onnx.__file__),
        "backend",
        "test",
        "data",
        "light",
        "light_bvlc_alexnet.onnx",
    )
    code, out, _ = _run(["summary", path, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["params"] == 60_965_224
    assert sum(r["params"] for r in doc["layers"]) == doc["params"]
    fc6 = [r for r in doc["layers"] if r["op"] == "Gemm"][0]
    assert fc6["params"] == 9216 * 4096 + 4096
    assert all(r["params"] == 0 for r in doc["layers"] if r["op"] == "ConstantOfShape")


def test_summary_counts_in_words(tmp_path, capsys):
    """One node is "1 node", a graph without inputs says "(none)" (it printed an empty field)."""
    from onnx import TensorProto, helper

    relu = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "one.onnx"
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, out, _ = _run(["summary", str(path)], capsys)
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert code == 0 and total.split()[1:3] == ["1", "node"], out
    const = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["y"])],
        "gen",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [helper.make_tensor("s", TensorProto.INT64, [1], [2])],
    )
    onnx.save(helper.make_model(const, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, out, _ = _run(["summary", str(path)], capsys)
    assert code == 0 and "inputs:  (none)" in out
    assert "1 node computes constants" in out, out


def test_mode_line_grammar():
    from graphnet.cli.common import describe_mode

    assert describe_mode("train", "inference", True).endswith("is an inference-mode export)")
    assert describe_mode("inference", "train", True).endswith("is a train-mode export)")


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


def _run_lean(path, x, tmp_path, capsys):
    """`graphnet run PATH -i x=... -o ... --memory lean`: (its output y, what it printed)."""
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "out.npz")
    code, text, err = _run(
        ["run", path, "-i", f"x={tmp_path / 'x.npy'}", "-o", out, "--memory", "lean"], capsys
    )
    assert code == 0, err
    return np.load(out)["y"], text


def test_run_memory_lean_agrees_with_onnxruntime(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    got, _ = _run_lean(path, x, tmp_path, capsys)
    np.testing.assert_allclose(got, ort_run(onnx.load(path), {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_check_agrees(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    code, out, _ = _run(["check", path, "--batch", "3"], capsys)
    assert code == 0 and "agree" in out


@pytest.mark.slow  # the light SqueezeNet: 10 s
def test_check_compares_a_softmax_through_its_logits(capsys, monkeypatch):
    """The light SqueezeNet's weights are all 0.02: its logits are ~1e10 and equal, so which
    classes each runtime's float32 softmax keeps depends on its BLAS (here they may or may not
    agree). `check` agrees either way; and when the probabilities do differ (forced below by one
    ulp of onnxruntime's logits, as another BLAS gives), it compares the logits and says so."""
    import graphnet.cli.check as check

    path = os.path.join(
        os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx"
    )
    code, out, _ = _run(["check", path], capsys)
    assert code == 0 and out.strip().endswith("agree (rtol 0.0001, atol 1e-05)"), out
    real = check.ort_outputs

    def another_blas(model, feeds, extra=()):
        got = real(model, feeds, extra)
        z = got["r65"].astype(np.float32)
        z[:, ::3] = np.nextafter(z[:, ::3], np.float32(np.inf))  # a third of the classes +1 ulp
        e = np.exp(z.astype(np.float64) - z.max())
        got["r65"], got["softmaxout_1"] = z, (e / e.sum()).astype(np.float32)
        return got

    monkeypatch.setattr(check, "ort_outputs", another_blas)
    code, out, _ = _run(["check", path], capsys)
    assert code == 0, out
    assert "compared through 'r65'" in out and out.strip().endswith(
        "agree (rtol 0.0001, atol 1e-05)"
    )


def test_export_from_module(tmp_path, capsys):
    mod = tmp_path / "mynet.py"
    mod.write_text(
        "from graphnet import nn\n"
        "net = nn.Sequential([nn.Conv(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2)])\n"
        "relu = nn.ReLU()\n"
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
    # A single layer (not a Sequential) is exported as a one-layer network.
    code, out, err = _run(
        ["export", f"{mod}:relu", "-o", str(tmp_path / "o4.onnx"), "--input-shape", "N,3"], capsys
    )
    assert code == 0 and ", 1 node, 0 parameters, " in out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "does/not/exist.onnx"], "no such file"),
        (["summary", "/dev/null"], "/dev/null: is not a regular file"),
        (["run", "{model}", "-i", "x={tmp}", "-o", "{tmp}/o.npz"], "is a folder, not a file"),
        (["run", "{model}", "-i", "x", "-o", "{tmp}/o.npz"], "NAME=PATH.npy"),
        (["run", "{model}", "-o", "{tmp}/o.npz"], "missing input"),
        (["export", "nocolon", "-o", "{tmp}/o.onnx"], "MODULE:ATTR"),
        (["check", "{model}", "--batch", "0"], "--batch must be >= 1"),
        (["demo", "--train-steps=-1"], "--train-steps must be >= 0 (0 skips the training)"),
        # A negative or NaN tolerance no output could meet (it reported "DIFFER").
        (["check", "{model}", "--rtol=-1e-4"], "--rtol must be a number >= 0, got -0.0001"),
        (["check", "{model}", "--atol", "nan"], "--atol must be a number >= 0, got nan"),
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


def test_export_refuses_an_opset_newer_than_onnx_knows(tmp_path, capsys):
    """It was an internal error (exit 3: "Unsupported opset-version" from onnx's table)."""
    from onnx import defs

    newest = defs.onnx_opset_version()
    mod = tmp_path / "nets.py"
    mod.write_text("from graphnet import nn\nnet = nn.Sequential([nn.ReLU()])\n")
    argv = ["export", f"{mod}:net", "--input-shape", "N,3", "-o", str(tmp_path / "o.onnx")]
    code, _, err = _run([*argv, "--opset", str(newest + 1)], capsys)
    assert code == 2 and f"opset {newest + 1} is newer than the installed onnx" in err, err
    assert not (tmp_path / "o.onnx").exists()
    code, _, err = _run([*argv, "--opset", str(newest)], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        "summary",
        "run",
        "check",
        "export",
        "optimize",
        "report",
        "viz",
        "train",
        "bench",
    ],
)
def test_every_argument_has_a_help_text(command):
    """`graphnet COMMAND --help` explains every argument (run's -i/-o, check's tolerances,
    export's --opset said nothing)."""
    import argparse

    from graphnet.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [
        a.option_strings[-1] if a.option_strings else a.dest
        for a in sub.choices[command]._actions
        if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert not bare, f"graphnet {command}: no help for {bare}"


def test_version(capsys):
    from graphnet import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"graphnet {__version__}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_or_after_the_command(capsys, where):
    argv = ["summary", "does/not/exist.onnx"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    from graphnet.cli.common import CliError

    with pytest.raises(CliError, match="no such file"):  # --debug: the exception itself
        main(argv)


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["optimize", "--no-such-option"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err


def test_every_exit_code_is_named_and_in_the_readme():
    from graphnet.cli import common

    named = {v for k, v in vars(common).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert named == set(common.EXIT_CODES) == {0, 1, 2, 3, 130}
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    section = readme[readme.index("Exit codes") :]
    for code in common.EXIT_CODES:
        assert f"`{code}`" in section[:1500], f"exit code {code} is not listed in the README"


def test_export_error_in_user_code_names_their_file_and_line(tmp_path, capsys):
    mod = tmp_path / "mynets.py"
    mod.write_text(
        "from graphnet import nn\n"
        "def build():\n"
        "    widths = []\n"
        "    return nn.Sequential([nn.Linear(widths[0])]).build((None, 4))\n"
    )
    code, _, err = _run(["export", f"{mod}:build", "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2, err
    assert f"{mod}, line 4, in build: IndexError: list index out of range" in err
    assert "your code" in err and "bug in graphnet" not in err
    assert len(err.strip().splitlines()) == 1


def test_export_error_at_import_and_dsl_errors_name_the_line(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("x = 1\ny = 1 / 0\n")
    code, _, err = _run(["export", f"{bad}:x", "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and f"{bad}, line 2, in <module>: ZeroDivisionError" in err, err
    shape = tmp_path / "shape.py"
    shape.write_text(
        "from graphnet import nn\n"
        "def build():\n"
        "    return nn.Sequential([nn.Linear(3)]).build((None, 4, 5, 5))\n"
    )
    code, _, err = _run(["export", f"{shape}:build", "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and f"{shape}, line 3, in build: ShapeError" in err, err
    assert "add Flatten() first" in err


def test_export_says_what_it_built(tmp_path, capsys):
    mod = tmp_path / "nets.py"
    mod.write_text(
        "from graphnet import nn\n"
        "net = nn.Sequential([nn.Conv(4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2)])\n"
    )
    out = tmp_path / "o.onnx"
    code, text, err = _run(
        ["export", f"{mod}:net", "-o", str(out), "--input-shape", "N,3,8,8"], capsys
    )
    assert code == 0 and "input 'input' float32(N,3,8,8) (2-D convolutions)" in text
    assert "parameters" in text and err == ""
    # The batch forgotten: a fixed batch of 3 and 1-D convolutions, said on stderr.
    code, text, err = _run(
        ["export", f"{mod}:net", "-o", str(out), "--input-shape", "3,8,8"], capsys
    )
    assert code == 0 and "float32(3,8,8) (1-D convolutions)" in text
    assert "has no N" in err and "N,3,8,8" in err


def test_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    import graphnet.cli.common as common

    path = small_onnx_model(tmp_path / "m.onnx")
    code, _, err = _run(["check", path], capsys)
    assert code == 0 and err == ""  # not a terminal: no bar
    monkeypatch.setattr(common, "_stderr_is_terminal", lambda: True)
    code, _, err = _run(["check", path], capsys)
    assert code == 0 and "check:" in err and "onnxruntime" in err
    # The README lists the commands with a bar: report is one of them.
    monkeypatch.setattr(common, "_stderr_is_terminal", lambda: False)
    code, _, err = _run(["report", path, "-o", str(tmp_path / "r.html")], capsys)
    assert code == 0 and err == ""
    monkeypatch.setattr(common, "_stderr_is_terminal", lambda: True)
    code, _, err = _run(["report", path, "-o", str(tmp_path / "r.html")], capsys)
    assert code == 0 and "report:" in err and "drawing" in err


def test_invalid_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, _, err = _run(["summary", str(bad)], capsys)
    assert code == 2 and "not a readable ONNX model" in err and "Traceback" not in err


def test_empty_file_says_it_holds_no_model(tmp_path, capsys):
    """An empty file parses as an empty ModelProto: it said "the model imports no version of
    the default ONNX domain"."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    code, _, err = _run(["summary", str(empty)], capsys)
    assert code == 2 and "the model has no graph (an empty file, or not an ONNX model)" in err


def test_an_import_error_names_the_node_once(tmp_path, capsys):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 5, 3, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = _run(["summary", str(path)], capsys)
    assert code == 2 and err.count("conv1") == 1, err
    assert "node 'conv1' (Conv): W(4,5,3,3) has 5 input channels per group" in err


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


def test_run_memory_choices_are_the_runtimes():
    import argparse

    from graphnet.cli.run import add_arguments
    from graphnet.runtime.fast.compile import MEMORY_PLANS

    p = argparse.ArgumentParser()
    add_arguments(p)
    action = next(a for a in p._actions if a.dest == "memory")
    assert tuple(action.choices) == MEMORY_PLANS


def test_run_memory_lean_says_when_it_is_off(tmp_path, capsys):
    path = small_onnx_model(tmp_path / "m.onnx")
    model = onnx.load(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"  # (sizes unknown at compile time)
    onnx.save(model, path)
    x = np.random.default_rng(3).standard_normal((1, 3, 9, 7)).astype(np.float32)
    got, text = _run_lean(path, x, tmp_path, capsys)
    assert "memory lean is off: the size of" in text and "the default plan ran" in text
    np.testing.assert_allclose(got, ort_run(onnx.load(path), {"x": x})["y"], rtol=1e-4, atol=1e-5)
