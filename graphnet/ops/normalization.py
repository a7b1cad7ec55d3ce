"""normalization ops (filled in by the normalization family)."""

from __future__ import annotations
