"""Graph passes: functions over the IR, each in its own module, run by `passes.manager.optimize`.

    from graphnet.passes import optimize
    opt, report = optimize(graph)                 # the "inference" pipeline, on a copy
    print(report.format())

Passes (registered by name in `passes.base`): `fold-constants`, `eliminate`, `drop-dropout`,
`fold-batchnorm`, `fold-affine`, `cse`. Each module's docstring gives the maths, what it rewrites
and when it must not.
"""

from __future__ import annotations

# Registration happens on import; each pass module is listed explicitly.
from graphnet.passes import constant_folding, cse, dropout, eliminate, fold_affine, fold_batchnorm  # noqa: F401
from graphnet.passes.base import (
    Pass,
    PassReport,
    PipelineReport,
    all_passes,
    get_pass,
    register_pass,
    run_pass,
    unregister_pass,
)
from graphnet.passes.manager import PIPELINES, describe_passes, optimize, resolve_pipeline

__all__ = [
    "optimize",
    "PIPELINES",
    "resolve_pipeline",
    "describe_passes",
    "Pass",
    "PassReport",
    "PipelineReport",
    "register_pass",
    "unregister_pass",
    "get_pass",
    "all_passes",
    "run_pass",
]
