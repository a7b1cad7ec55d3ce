"""The suite's property tests draw the same examples on every run (tests/conftest.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def test_examples_are_the_same_on_every_run(request):
    if request.config.getoption("hypothesis_profile", None) == "explore":
        pytest.skip("--hypothesis-profile explore draws fresh examples on purpose")

    def draw() -> list[int]:
        seen: list[int] = []

        @settings(max_examples=8)
        @given(st.integers(0, 2**62))
        def probe(x: int) -> None:
            seen.append(x)

        probe()
        return seen

    first, second = draw(), draw()
    assert len(first) == 8 and first == second
