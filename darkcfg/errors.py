"""darkcfg's error and warning types.

Every bad input (cfg text, graph, weights file) raises one exception class, :class:`CfgError`,
carrying where the problem is, like :class:`tomllib.TOMLDecodeError` does.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CfgError", "WeightsError", "CfgWarning", "Location", "warn", "warn_at", "shorten",
           "printable", "warning_budget"]


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
        self.msg = printable(msg)
        self.loc = loc or Location()
        where = printable(self.loc.describe())
        super().__init__(f"{self.msg} ({where})" if where else self.msg)

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


_MAX_MESSAGE = 2000


def printable(text: str) -> str:
    """A message that prints as one line and cannot drive a terminal: control and other
    non-printable characters (from a hostile cfg's values or file names) are shown escaped, and
    an overlong message is cut."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    if len(text) > _MAX_MESSAGE:
        text = f"{text[:_MAX_MESSAGE - 200]} ... {text[-150:]}"
    return text


def shorten(text: str, limit: int = 60) -> str:
    """`repr(text)`, cut in the middle when long: messages quote cfg text and must stay one line."""
    if len(text) > limit:
        half = limit // 2
        return f"{text[:half]!r}...{text[-half:]!r} ({len(text):,} characters)"
    return repr(text)


@dataclass
class _Budget:
    left: int
    suppressed: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("darkcfg_warning_budget", default=None)


@contextmanager
def warning_budget(limit: int) -> Iterator[None]:
    """Show at most `limit` CfgWarnings inside the block, then one that counts the rest, so a cfg of
    thousands of junk lines cannot flood stderr (or the warnings registry)."""
    budget = _Budget(limit)
    token = _BUDGET.set(budget)
    try:
        yield
    finally:
        _BUDGET.reset(token)
        if budget.suppressed:
            warn(f"{budget.suppressed:,} more warnings were not shown (only the first "
                 f"{limit:,} are)")


def warn_at(msg: str, loc: Location | None = None) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        if budget.left <= 0:
            budget.suppressed += 1
            return
        budget.left -= 1
    where = loc.describe() if loc else ""
    warn(printable(f"{msg} ({where})" if where else msg))


# Packages whose frames a warning skips: darkcfg itself, and torch between a user's call and a
# darkcfg module's forward().
_INTERNAL = ("darkcfg", "torch")


def _internal(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _INTERNAL)


def warn(message: str, category: type[Warning] = CfgWarning) -> None:
    """`warnings.warn` attributed to the first frame outside darkcfg (and torch): the user's line
    that parsed, built or loaded, not the darkcfg line that noticed."""
    frame = sys._getframe(0)
    level = 1
    while frame is not None and _internal(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
