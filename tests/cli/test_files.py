"""The CLI's file promises: an input is never overwritten (under any spelling or link), outputs
are checked before any work, errors never show temporary names, written files get the usual
permissions (the umask, or those of the file they replace), `--report -` is standard output."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest
from onnx import helper

from graphnet.cli import main
from graphnet.onnx_io.export import atomic_write, write_model
from tests.helpers import onnx_model, small_onnx_model, vi


def _sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model(tmp_path):
    return small_onnx_model(tmp_path / "m.onnx")


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a model is ever imported: the refusal must come before any work."""
    import graphnet.onnx_io.importer as importer

    def forbidden(*a, **k):
        raise AssertionError("the model was imported before the output was checked")

    monkeypatch.setattr(importer, "from_onnx", forbidden)
    monkeypatch.setattr(importer, "load", forbidden)


# --------------------------------------------------------------------- the input is never written
@pytest.mark.parametrize("spelling", ["same", "dot", "dotdot", "hardlink", "symlink"])
def test_optimize_refuses_to_overwrite_its_input(
    tmp_path, capsys, monkeypatch, model, spelling, no_work
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    out = {
        "same": model,
        "dot": "./m.onnx",
        "dotdot": "sub/../m.onnx",
        "hardlink": "hard.onnx",
        "symlink": "soft.onnx",
    }[spelling]
    if spelling == "hardlink":
        os.link(model, tmp_path / "hard.onnx")
    if spelling == "symlink":
        os.symlink(model, tmp_path / "soft.onnx")
    before = _sha(model)
    code, _, err = _run(["optimize", "m.onnx", "-o", out], capsys)
    assert code == 2, err
    assert "refusing to overwrite an input" in err and len(err.strip().splitlines()) == 1
    assert _sha(model) == before


def test_optimize_refuses_a_report_that_is_the_input_or_the_output(
    tmp_path, capsys, model, no_work
):
    before = _sha(model)
    code, _, err = _run(["optimize", model, "-o", tmp_path / "o.onnx", "--report", model], capsys)
    assert code == 2 and "--report" in err and "refusing to overwrite an input" in err
    o = tmp_path / "o.onnx"
    code, _, err = _run(["optimize", model, "-o", o, "--report", o], capsys)
    assert code == 2 and "name the same file" in err
    assert _sha(model) == before and not o.exists()


def test_run_refuses_to_overwrite_an_input_array(tmp_path, capsys, model):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3, 8, 8), np.float32))
    before = _sha(x)
    code, _, err = _run(["run", model, "-i", f"x={x}", "-o", x], capsys)
    assert code == 2 and "refusing to overwrite an input" in err
    assert _sha(x) == before


@pytest.mark.parametrize("name", ["y.npy", "y.txt", "y.NPY"])
def test_run_refuses_an_output_name_that_is_not_an_npz(tmp_path, capsys, model, no_work, name):
    """`-o y.npy` would get a zip archive under a name np.load reads as one array: refused
    before any work, with the extension named, nothing written."""
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3, 8, 8), np.float32))
    out = tmp_path / name
    code, _, err = _run(["run", model, "-i", f"x={x}", "-o", out], capsys)
    assert code == 2 and f"not {os.path.splitext(name)[1].lower()}" in err and "OUT.npz" in err
    assert not out.exists()


def test_export_refuses_to_overwrite_the_module(tmp_path, capsys):
    mod = tmp_path / "nets.py"
    mod.write_text("from graphnet import nn\nnet = nn.Sequential([nn.ReLU()])\n")
    before = _sha(mod)
    code, _, err = _run(["export", f"{mod}:net", "--input-shape", "N,3", "-o", mod], capsys)
    assert code == 2 and "refusing to overwrite an input" in err
    assert _sha(mod) == before


# ----------------------------------------------------------- outputs are checked before any work
@pytest.mark.parametrize(
    "out, message",
    [
        ("nodir/x.onnx", "folder nodir does not exist"),
        # The system resolves `nodir/..` through nodir: it fails (the check once normalized
        # the path to `x.onnx`, passed, and the write failed after the work).
        ("nodir/../x.onnx", "folder nodir/.. does not exist"),
        ("adir", "is a folder"),
    ],
)
def test_bad_output_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch, model, no_work, out, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    code, _, err = _run(["optimize", model, "-o", out, "--verify"], capsys)
    assert code == 2 and message in err, err
    assert ".graphnet-" not in err and len(err.strip().splitlines()) == 1


def test_unwritable_folder_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch, model, no_work
):
    # Root may write anywhere, so the folder's permission is simulated.
    import graphnet.cli.common as common

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(
        common.os, "access", lambda p, m: False if os.fspath(p) == str(ro) else real(p, m)
    )
    code, _, err = _run(["optimize", model, "-o", ro / "x.onnx"], capsys)
    assert code == 2 and "cannot write to folder" in err


@pytest.mark.parametrize("command", ["run", "export"])
def test_every_command_checks_its_output_first(tmp_path, capsys, model, command):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3, 8, 8), np.float32))
    mod = tmp_path / "nets.py"
    mod.write_text("raise RuntimeError('the module must not even be imported')\n")
    argv = {
        "run": ["run", model, "-i", f"x={x}", "-o", tmp_path / "nodir" / "o.npz"],
        "export": ["export", f"{mod}:net", "-o", tmp_path / "nodir" / "o.onnx"],
    }[command]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "does not exist" in err, err


def test_atomic_write_errors_name_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "nodir" / "x.bin"
    with pytest.raises(OSError) as err:
        atomic_write(target, b"data")
    assert str(target) in str(err.value) and ".graphnet-" not in str(err.value)
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize("external", [None, False, True])
def test_the_temporary_file_is_beside_the_target_as_the_system_resolves_it(
    tmp_path, monkeypatch, external
):
    """`link/../out` is `out` beside the link's target, not beside the link: the temporary
    file (or folder, for external data) goes there, so the final rename never crosses folders
    or file systems. (None: atomic_write itself; False/True: write_model.)"""
    import tempfile

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    made_in = []
    for fn in ("mkstemp", "mkdtemp"):
        real = getattr(tempfile, fn)
        monkeypatch.setattr(
            tempfile, fn, lambda *a, _real=real, **k: made_in.append(k["dir"]) or _real(*a, **k)
        )
    target = tmp_path / "link" / ".." / "out.onnx"
    if external is None:
        atomic_write(target, b"data")
    else:
        import onnx

        model = onnx.load(small_onnx_model(tmp_path / "m.onnx"))
        write_model(model, target, external_data=external)
    assert (tmp_path / "a" / "out.onnx").is_file() and not (tmp_path / "out.onnx").exists()
    assert made_in and all(os.path.samefile(d, tmp_path / "a") for d in made_in)


# --------------------------------------------------------------------------------- permissions
@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_get_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    atomic_write(tmp_path / "a.bin", b"x")
    assert _mode(tmp_path / "a.bin") == 0o666 & ~mask
    # Weights of 4 kB: above the 1 kB from which external data moves a tensor to the side file.
    w = np.ones((1000,), np.float32)
    model = onnx_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [vi("x", [1000])],
        [vi("y", [1000])],
        17,
        inits=[("w", w)],
    )
    write_model(model, tmp_path / "ext.onnx", external_data=True)
    assert _mode(tmp_path / "ext.onnx") == 0o666 & ~mask
    assert _mode(tmp_path / "ext.onnx.data") == 0o666 & ~mask


def test_a_replaced_file_keeps_its_permissions(tmp_path, umask):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_cli_outputs_get_the_umask_permissions(tmp_path, capsys, umask, model):
    umask(0o027)
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", model, "-o", str(out), "--report", str(rep)]) == 0
    assert _mode(out) == 0o640 and _mode(rep) == 0o640


# --------------------------------------------------------------------------------- report to -
def test_report_dash_is_standard_output(tmp_path, capsys, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["optimize", model, "-o", "o.onnx", "--report", "-"], capsys)
    assert code == 0
    doc = json.loads(out)  # stdout holds the JSON alone: the summary went to stderr
    assert doc["output"] == "o.onnx" and doc["totals"]["nodes"] == [7, 5]
    assert "wrote o.onnx" in err
    assert not (tmp_path / "-").exists()
