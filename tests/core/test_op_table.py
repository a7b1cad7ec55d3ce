"""One op table drives everything: every op has a shape rule, a kernel, an export rule and an
import rule, each found by name. Exceptions are listed here with their reason."""

from __future__ import annotations

import inspect

import pytest

from graphnet import ops
from graphnet.onnx_io.registry import has_export_rule, has_import_rule
from graphnet.runtime.gradients import has_gradient, non_differentiable_ops
from graphnet.runtime.kernels import all_kernels, has_kernel

# IR ops that ONNX has no op for: they export as subgraphs of standard ops, and an imported copy of
# such a subgraph is folded by the passes rather than matched back into the op.
NO_IMPORT_RULE = {
    "Maxout": "exported as Gemm + Reshape + ReduceMax; ONNX has no Maxout op",
    "WSConv": (
        "exported as ReduceMean/Sub/Div on the kernel + Conv; constant folding undoes it on import"
    ),
    "Opaque": "is itself the import of an op without a rule",
}
NO_KERNEL = {
    "Opaque": "an unmapped ONNX op has no semantics in graphnet; running it is a clear error"
}

SPECS = sorted(ops.all_specs().items())


@pytest.mark.parametrize("name, spec", SPECS, ids=[n for n, _ in SPECS])
def test_every_op_is_complete(name, spec):
    assert spec.doc.strip(), f"{name} has no docstring"
    assert callable(spec.infer)
    if name not in NO_KERNEL:
        assert has_kernel(name), f"no runtime kernel for {name}"
    assert has_export_rule(name), f"no ONNX export rule for {name}"
    if name not in NO_IMPORT_RULE:
        assert has_import_rule(name), f"no ONNX import rule for {name}"
    # Training: a backward rule, or a reason why the op has none.
    reason = non_differentiable_ops().get(name, "").strip()
    assert has_gradient(name) or reason, f"no gradient for {name} and no reason why not"


# Keyword arguments a kernel may take besides the op's attributes (runtime/kernels/__init__.py).
KERNEL_CONTEXT = {"training", "rng", "num_outputs"}
KERNELS = sorted(all_kernels().items())


@pytest.mark.parametrize("name, kern", KERNELS, ids=[n for n, _ in KERNELS])
def test_kernels_take_every_attribute_resolved_and_default_none(name, kern):
    """Defaults live in the op table only: the executor passes every attribute, resolved, so a
    kernel's keyword-only parameters are exactly the op's attributes (plus the run context) and
    none has a default of its own that could drift from the table's."""
    spec = ops.get(name)
    params = inspect.signature(kern.fn).parameters.values()
    keywords = {p.name: p for p in params if p.kind is p.KEYWORD_ONLY}
    assert set(keywords) - KERNEL_CONTEXT == set(spec.attrs), (
        f"{name}: kernel keywords {sorted(keywords)} vs op attributes {sorted(spec.attrs)}"
    )
    with_default = sorted(
        n for n, p in keywords.items() if n in spec.attrs and p.default is not p.empty
    )
    assert not with_default, f"{name}: kernel defaults for attributes {with_default}"


def test_no_kernel_without_an_op():
    orphans = sorted(set(all_kernels()) - set(ops.all_specs()))
    assert not orphans, f"kernels registered for ops missing from the table: {orphans}"


def test_lecture_layers_are_all_in_the_table():
    lecture = {
        "Conv",
        "WSConv",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Relu",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Maxout",
        "Gemm",
        "Flatten",
        "Softmax",
        "LogSoftmax",
        "Dropout",
        "BatchNormalization",
        "LayerNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "Add",
        "Concat",
    }
    missing = sorted(lecture - set(ops.all_specs()))
    assert not missing, f"lecture layers missing from the op table: {missing}"
