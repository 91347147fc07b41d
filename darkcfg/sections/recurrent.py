"""Section parsers: recurrent family (see darkcfg.sections)."""

from __future__ import annotations
