"""darkcfg's error and warning types.

Every bad input (cfg text, graph, weights file) raises one exception class, :class:`CfgError`,
carrying where the problem is, like :class:`tomllib.TOMLDecodeError` does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CfgError", "WeightsError", "CfgWarning", "Location", "warn_at"]


@dataclass(frozen=True)
class Location:
    """Where something sits in a cfg file; every field optional so partial context still prints."""

    path: str | None = None
    line: int | None = None
    column: int | None = None
    section: str | None = None  # header as written, e.g. "route"
    index: int | None = None  # Darknet layer index of the section (None for [net])

    def describe(self) -> str:
        """`at FILE line N, in [section] #i`; the column stays an attribute, as in the messages
        Darknet users know (it names lines, not columns)."""
        parts: list[str] = []
        where = ""
        if self.path is not None:
            where = Path(self.path).name
        if self.line is not None:
            where = f"{where} line {self.line}" if where else f"line {self.line}"
        if where:
            parts.append(f"at {where}")
        if self.section is not None:
            sec = f"[{self.section}]"
            if self.index is not None:
                sec += f" #{self.index}"
            parts.append(f"in {sec}")
        return ", ".join(parts)


class CfgError(ValueError):
    """Any problem with a cfg or weights file; ``str(e)`` reads `msg (at file line N, in [sec] #i)`."""

    def __init__(self, msg: str, loc: Location | None = None) -> None:
        self.msg = msg
        self.loc = loc or Location()
        where = self.loc.describe()
        super().__init__(f"{msg} ({where})" if where else msg)

    @property
    def path(self) -> str | None:
        return self.loc.path

    @property
    def lineno(self) -> int | None:
        return self.loc.line

    @property
    def colno(self) -> int | None:
        return self.loc.column

    @property
    def section(self) -> str | None:
        return self.loc.section

    @property
    def layer_index(self) -> int | None:
        return self.loc.index


class WeightsError(CfgError):
    """A .weights file that does not fit the network (a CfgError, so one except clause catches all)."""


class CfgWarning(UserWarning):
    """Something Darknet accepts but a user would likely not expect (e.g. an unused option)."""


def warn_at(msg: str, loc: Location | None = None) -> None:
    where = loc.describe() if loc else ""
    warnings.warn(f"{msg} ({where})" if where else msg, CfgWarning, stacklevel=3)
