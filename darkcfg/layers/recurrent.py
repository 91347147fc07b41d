"""torch builders: recurrent family (see darkcfg.layers)."""

from __future__ import annotations
