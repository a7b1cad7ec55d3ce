"""The README's code works as written: the Python example runs, and the set-up commands are the
ones .ci/run executes."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as fh:
        return fh.read()


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = re.findall(r"```python\n(.*?)```", _readme(), re.S)[:1]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["out"]["output"].shape == (2, 10)
    assert (tmp_path / "net.onnx").exists()
    assert scope["b"].graph.op_counts() == {"Conv": 3, "Relu": 1, "Concat": 1, "Add": 1}


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = _readme().splitlines()
    fence = lines.index("```")
    first, second = lines[fence + 1], lines[fence + 2]
    assert lines[fence + 3] == "```"
    assert first.endswith("graphnet demo") and "pytest" in second
    with open(os.path.join(ROOT, ".ci", "run")) as fh:
        assert second in fh.read().splitlines()


def test_the_readme_does_not_cite_the_lecture():
    """The course material is not in the repository: the README names docs/formulas.md or
    says the thing itself."""
    assert "lecture" not in _readme().lower()


def test_the_layout_names_each_folder_once():
    """The Layout block describes each top-level folder once (two merged copies of it once
    disagreed) and every package of graphnet/ in it."""
    block = _readme().split("## Layout\n\n```\n", 1)[1].split("```", 1)[0]
    heads = [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]
    assert len(heads) == len(set(heads)), heads
    for top in ("graphnet/", "runtime/", "passes/", "docs/", "tests/", "benchmarks/"):
        assert top in heads
    packages = sorted(
        name
        for name in os.listdir(os.path.join(ROOT, "graphnet"))
        if os.path.isfile(os.path.join(ROOT, "graphnet", name, "__init__.py"))
        and not os.path.islink(os.path.join(ROOT, "graphnet", name))
    )
    missing = [p for p in packages if f"{p}/" not in block]
    assert not missing, missing
