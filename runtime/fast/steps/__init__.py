"""The steps of a compiled plan. Each step reads its inputs from the run's value table, writes
its outputs there, and says how (in `why`, for `Session.describe()`). By family: `base` (the
run's state, the plain kernel, views, Concat), `linear` (Conv, Gemm), `elementwise` (unary,
binary, BatchNorm, normalizations, Softmax, GlobalAveragePool), `pool` (MaxPool).
"""

from __future__ import annotations

from graphnet.runtime.fast.steps.base import AliasStep, ConcatStep, KernelStep, Run, Step
from graphnet.runtime.fast.steps.elementwise import (
    BatchNormGroupStep,
    BatchNormStep,
    BinaryStep,
    GlobalAveragePoolStep,
    NormStep,
    SoftmaxStep,
    UnaryStep,
)
from graphnet.runtime.fast.steps.linear import ConvStep, GemmStep, MergedPointwiseStep
from graphnet.runtime.fast.steps.pool import MaxPoolStep

__all__ = [
    "Run",
    "Step",
    "KernelStep",
    "ConvStep",
    "GemmStep",
    "MergedPointwiseStep",
    "UnaryStep",
    "BinaryStep",
    "AliasStep",
    "BatchNormStep",
    "BatchNormGroupStep",
    "MaxPoolStep",
    "ConcatStep",
    "NormStep",
    "SoftmaxStep",
    "GlobalAveragePoolStep",
]
