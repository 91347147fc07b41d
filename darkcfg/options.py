"""Typed access to one section's raw options, the way Darknet's `option_find_*` reads them.

Section parsers ask for a key with a type and a default; the reader converts once, remembers which
keys were read (the rest become "unused field" warnings) and turns bad values into :class:`CfgError`
with line and column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .errors import CfgError, Location, shorten, warn_at
from .lexer import RawOption, RawSection
from .limits import DEFAULT_LIMITS, INT_MAX, Limits

__all__ = ["Options"]

# C's atoi/atof read the longest numeric prefix; Darknet relies on that for `filters=8#comment`.
_INT_PREFIX = re.compile(r"[+-]?\d+")
_FLOAT_PREFIX = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
                           re.IGNORECASE)

_MISSING = object()


class Options:
    """The options of one section, read by key with Darknet's first-occurrence-wins rule."""

    def __init__(self, section: RawSection, path: str | None = None, index: int | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.section = section
        self.path = path
        self.index = index
        self.limits = limits  # parsers check what they allocate against limits.max_items
        self._by_key: dict[str, RawOption] = {}
        for opt in section.options:
            if opt.key in self._by_key:
                first = self._by_key[opt.key]
                warn_at(f"duplicate option {shorten(opt.key)}: Darknet uses the first value "
                        f"{shorten(first.value)} from line {first.line}", self.loc(opt))
                continue
            self._by_key[opt.key] = opt
        self._used: set[str] = set()

    # -- locations and errors -------------------------------------------------------------------
    def loc(self, opt: RawOption | None = None) -> Location:
        if opt is None:
            return Location(self.path, self.section.line, None, self.section.header, self.index)
        return Location(self.path, opt.line, opt.column, self.section.header, self.index)

    def key_loc(self, key: str) -> Location:
        return self.loc(self._by_key.get(key))

    def error(self, msg: str, key: str | None = None) -> CfgError:
        return CfgError(msg, self.key_loc(key) if key else self.loc())

    # -- raw access -----------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self._by_key

    def accept(self, keys: Iterable[str]) -> None:
        """Mark keys Darknet reads but inference ignores (training options), so they are not 'unused'."""
        self._used.update(keys)

    def unused(self) -> list[RawOption]:
        return [o for o in self._by_key.values() if o.key not in self._used]

    def known_keys(self) -> set[str]:
        """Keys the section's parser asked for or accepted, given here or not (did-you-mean
        candidates for an unused key)."""
        return set(self._used)

    def _raw(self, key: str) -> RawOption | None:
        self._used.add(key)
        return self._by_key.get(key)

    def check_items(self, key: str, count: int, what: str) -> int:
        """A count the parser is about to allocate a list or table of (anchors, a default mask):
        refused beyond Limits.max_items, so `num=1000000000` is an error, not a MemoryError."""
        if count > self.limits.max_items:
            raise self.error(f"{key}={count} would need {count:,} {what}, more than the limit of "
                             f"{self.limits.max_items:,} (Limits.max_items)", key)
        return count

    # -- typed readers --------------------------------------------------------------------------
    def int(self, key: str, default: int) -> int:
        opt = self._raw(key)
        return default if opt is None else self._to_int(opt, opt.value)

    def float(self, key: str, default: float) -> float:
        opt = self._raw(key)
        return default if opt is None else self._to_float(opt, opt.value)

    def str(self, key: str, default: str | None) -> str | None:
        opt = self._raw(key)
        return default if opt is None else opt.value

    def ints(self, key: str, default: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
        opt = self._raw(key)
        if opt is None:
            return default
        return tuple(self._to_int(opt, p) for p in self._split_list(opt))

    def floats(self, key: str, default: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
        opt = self._raw(key)
        if opt is None:
            return default
        return tuple(self._to_float(opt, p) if p else 0.0 for p in self._split_list(opt))

    # -- conversions ----------------------------------------------------------------------------
    def _split_list(self, opt: RawOption) -> list[str]:
        """Darknet counts commas and atoi()s each piece, so an empty piece reads as 0."""
        parts = opt.value.split(",")
        if len(parts) > self.limits.max_items:
            raise CfgError(f"{opt.key}= lists {len(parts):,} items, more than the limit of "
                           f"{self.limits.max_items:,} (Limits.max_items)", self.loc(opt))
        if "" in parts:
            warn_at(f"{opt.key}={shorten(opt.value)} has an empty list item, which Darknet reads "
                    f"as 0", self.loc(opt))
        return parts

    def _to_int(self, opt: RawOption, text: str) -> int:
        if not text:
            return 0
        m = _INT_PREFIX.match(text)
        if m is None:
            raise CfgError(f"{opt.key}={shorten(opt.value)} is not an integer", self.loc(opt))
        self._check_tail(opt, text, m.end())
        # Darknet's atoi() keeps an int; beyond it C gives garbage (and Python refuses > 4300 digits).
        digits = m.group().lstrip("+-").lstrip("0")
        value = int(m.group()) if len(digits) <= 10 else None
        if value is None or not -INT_MAX - 1 <= value <= INT_MAX:
            raise CfgError(f"{opt.key}={shorten(opt.value)} is out of range: Darknet reads a 32-bit "
                           f"int ({-INT_MAX - 1}..{INT_MAX})", self.loc(opt))
        return value

    def _to_float(self, opt: RawOption, text: str) -> float:
        m = _FLOAT_PREFIX.match(text)
        if m is None:
            raise CfgError(f"{opt.key}={shorten(opt.value)} is not a number", self.loc(opt))
        self._check_tail(opt, text, m.end())
        value = float(m.group())
        if not math.isfinite(value):
            raise CfgError(f"{opt.key}={shorten(opt.value)} is not a finite number", self.loc(opt))
        return value

    def _check_tail(self, opt: RawOption, text: str, end: int) -> None:
        tail = text[end:]
        if not tail:
            return
        if tail[0] in "#;":
            return  # an inline comment after a number: Darknet's atoi stops there too
        if tail[0] == "." and opt.key and _INT_PREFIX.fullmatch(text[:end]):
            raise CfgError(f"{opt.key}={shorten(opt.value)} must be an integer", self.loc(opt))
        raise CfgError(f"{opt.key}={shorten(opt.value)} has unexpected text {shorten(tail)} after "
                       f"the number", self.loc(opt))

