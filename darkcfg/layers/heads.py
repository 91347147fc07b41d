"""torch builders: heads family (see darkcfg.layers)."""

from __future__ import annotations
