"""Option keys Darknet's parser reads per section that darkcfg's parsers do not need to look at.

They are accepted silently (not reported as unused), as Darknet does. Filled from parser.c.
"""

from __future__ import annotations

ACCEPTED_KEYS: dict[str, frozenset[str]] = {}
