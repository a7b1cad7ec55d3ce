"""Fixtures shared by the runtime's tests."""

from __future__ import annotations

import pytest

from graphnet.runtime.fast import threads as fast_threads
from graphnet.runtime.fast.steps import base as fast_base
from graphnet.runtime.fast.steps import pool as fast_pool


@pytest.fixture(params=["inline", "threads"])
def pool_split(request, monkeypatch):
    """The pool steps as the plan decides, and with every batch split over the threads."""
    if request.param == "threads":
        monkeypatch.setattr(fast_threads, "SPLIT_MIN_FLOPS", 0)
        for module in (fast_base, fast_pool):
            monkeypatch.setattr(module, "SPLIT_MIN_FLOPS", 0)
        monkeypatch.setattr(fast_pool, "TILED_SPLIT_MIN_ELEMENTS", 0)
    return request.param
