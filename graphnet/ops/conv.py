"""conv ops (filled in by the conv family)."""

from __future__ import annotations
