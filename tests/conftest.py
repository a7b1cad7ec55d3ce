"""Hypothesis profiles for the whole suite.

`deterministic` (loaded here, so the default everywhere, CI included): every run draws the same
examples, so a failure reproduces on any machine and a merge is never blocked by an example
nobody's change produced. `explore` (`python -m pytest --hypothesis-profile explore`): fresh
random examples on every run, to look for new counterexamples before a change lands. Test
modules' own `settings(...)` (example counts, deadlines) inherit the loaded profile.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")
