"""Section parsers: misc family (see darkcfg.sections)."""

from __future__ import annotations
