"""`graphnet report` and `graphnet viz` from the command line: the files they write, their errors
(one line, exit 2, nothing written), and the model file left as it was."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from graphnet.cli import main
from tests.report.models import resnet_graph
from tests.report.pagecheck import SVG_NS, check_page


@pytest.fixture
def model(tmp_path):
    graph = resnet_graph()
    path = tmp_path / "resnet.onnx"
    graph.save(str(path))
    return graph, path


def test_report_command(model, tmp_path, capsys, monkeypatch):
    graph, path = model
    before = path.read_bytes()
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"epochs": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.4}]}))
    out = tmp_path / "r.html"
    code = main(
        [
            "report",
            str(path),
            "-i",
            f"image={tmp_path / 'x.npy'}",
            "-o",
            str(out),
            "--history",
            str(hist),
        ]
    )
    assert code == 0
    assert path.read_bytes() == before
    html = out.read_text("utf-8")
    page = check_page(html)
    assert page.node_views["before"] == len(graph.nodes)
    assert f"on image={tmp_path / 'x.npy'}" in html and 'id="history"' in html
    assert f"wrote {out}" in capsys.readouterr().out
    # Default output: the model's name with .html, in the current folder.
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(path), "--no-optimize"]) == 0
    assert "optimize was not run" in (tmp_path / "resnet.html").read_text("utf-8")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-i", "image=missing.npy"], "input 'image': missing.npy: no such file"),
        (["-i", "image"], "-i expects NAME=PATH.npy"),
        (["--history", "nope.json"], "nope.json: no such file"),
        (["-o", "no/such/dir/r.html"], "does not exist"),
        (["-i", "image=."], "input 'image': .: is a folder, not a file"),
        (["-i", "image=/dev/null"], "input 'image': /dev/null: is not a regular file"),
        # A misspelled pass is refused before any work, as by `optimize`.
        (["--passes", "fold-bn"], "no pass named 'fold-bn'; did you mean 'fold-batchnorm'"),
        (["--passes", "fold-batchnorm,cse"], None),
    ],
)
def test_report_errors(model, tmp_path, capsys, monkeypatch, extra, message):
    _, path = model
    monkeypatch.chdir(tmp_path)
    code = main(["report", str(path), *extra])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0
        return
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "resnet.html").exists()


def test_report_says_when_optimize_failed(model, tmp_path, capsys, monkeypatch):
    """A pass that fails is shown on the page and the graph as it is; the command says so too
    (it printed "wrote ..." as if the optimized graph were there)."""
    import graphnet.passes.manager as manager
    from graphnet.errors import PassError

    def broken(graph, pipeline="inference", **kw):
        raise PassError("fold-batchnorm: a planted failure")

    monkeypatch.setattr(manager, "optimize", broken)
    _, path = model
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "note: optimize failed, the report shows the graph as it is: PassError: " in text
    assert "a planted failure" in out.read_text("utf-8")


def test_report_bad_input_shape(model, tmp_path, capsys):
    _, path = model
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    out = tmp_path / "r.html"
    code = main(["report", str(path), "-i", f"image={tmp_path / 'x.npy'}", "-o", str(out)])
    assert code == 2 and "input 'image' must have shape" in capsys.readouterr().err
    assert not out.exists()


def test_viz_command(model, tmp_path, capsys):
    graph, path = model
    svg = tmp_path / "g.svg"
    assert main(["viz", str(path), "-o", str(svg)]) == 0
    root = ET.fromstring(svg.read_bytes())
    nodes = [g for g in root.iter(f"{{{SVG_NS}}}g") if "node" in g.get("class", "").split()]
    assert len(nodes) == len(graph.nodes)
    dot = tmp_path / "g.dot"
    assert main(["viz", str(path), "-o", str(dot)]) == 0
    assert dot.read_text().startswith("digraph")
    capsys.readouterr()
    assert main(["viz", str(path), "-o", "-", "--format", "dot", "--optimized"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph") and "+BN" in out
    code = main(["viz", str(path), "-o", str(path)])
    assert code == 2 and "refusing to overwrite an input" in capsys.readouterr().err


def test_demo_report(tmp_path, capsys):
    """With its training step, the demo reports the network trained on the digits, on a real
    test digit; without it, the template on the demo's input."""
    out = tmp_path / "demo.html"
    assert main(["demo", "--report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"report: wrote {out}" in text and "activations, the learning curves" in text
    html = out.read_text("utf-8")
    page = check_page(html)
    # The trained BN network (4 x Conv-BN-ReLU, 2 MaxPool, Flatten, Gemm-ReLU, Gemm, Softmax: no
    # Dropout), then optimized (the 4 BN folded).
    assert page.node_views == {"before": 19, "after": 15}
    assert "trained on the digits" in html and "on the first test digit (a " in html
    # The short training's learning curves (they were missing: its history was dropped).
    assert 'id="history"' in html and ">accuracy by step<" in html
    assert main(["demo", "--train-steps", "0", "--report", str(out)]) == 0
    assert "learning curves" not in capsys.readouterr().out
    html = out.read_text("utf-8")
    assert "on the demo's input (example 0)" in html and 'id="history"' not in html
    # Without --report the demo says how to get one; a bad --report is refused before any work.
    capsys.readouterr()
    assert main(["demo", "--train-steps", "0", "--batch", "1"]) == 0
    assert "graphnet demo --report demo.html" in capsys.readouterr().out
    assert main(["demo", "--report", str(tmp_path / "no" / "d.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_viz_refuses_an_extension_it_does_not_write(model, tmp_path, capsys):
    """`-o g.png` would get SVG text under a name no viewer opens as SVG: refused, nothing
    written; --format says the user wants that text under that name anyway."""
    _, path = model
    png = tmp_path / "g.png"
    assert main(["viz", str(path), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert "viz writes SVG (.svg) or DOT text (.dot, .gv), not .png" in err, err
    assert not png.exists()
    assert main(["viz", str(path), "-o", str(png), "--format", "svg"]) == 0
    assert ET.fromstring(png.read_bytes()).tag == f"{{{SVG_NS}}}svg"
    assert f"wrote {png}: " in capsys.readouterr().out
