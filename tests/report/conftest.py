"""Shared fixtures: DenseNet-121's report is built once per session (about ten seconds) for the
HTML and the browser tests."""

from __future__ import annotations

import os

import pytest

import graphnet
from tests.report.models import densenet_path


@pytest.fixture(scope="session")
def densenet_report():
    """(graph, report) of the onnx package's light DenseNet-121."""
    from graphnet.report import build_report

    path = densenet_path()
    if path is None:
        pytest.skip("this onnx build does not ship light_densenet121.onnx")
    graph = graphnet.load(path)
    return graph, build_report(graph, source=os.path.basename(path))
