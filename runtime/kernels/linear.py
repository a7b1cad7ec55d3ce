"""linear kernels (filled in by the linear family)."""

from __future__ import annotations
