"""Section parsers: heads family (see darkcfg.sections)."""

from __future__ import annotations
