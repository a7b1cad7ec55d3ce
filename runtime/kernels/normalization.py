"""normalization kernels (filled in by the normalization family)."""

from __future__ import annotations
