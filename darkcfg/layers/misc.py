"""torch builders: misc family (see darkcfg.layers)."""

from __future__ import annotations
