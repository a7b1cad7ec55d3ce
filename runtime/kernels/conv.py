"""conv kernels (filled in by the conv family)."""

from __future__ import annotations
