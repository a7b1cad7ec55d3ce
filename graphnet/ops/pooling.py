"""pooling ops (filled in by the pooling family)."""

from __future__ import annotations
