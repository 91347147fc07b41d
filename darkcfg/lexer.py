"""Cfg text → raw sections. The only module that looks at characters.

Follows Darknet's `read_cfg`: every whitespace character is removed from a line before it is looked
at (so `layers = -1 , 0` reads as `layers=-1,0`), lines starting with `#` or `;` are comments, `[x]`
opens a section, anything else is `key=value`. Darknet's oddities are kept but warned about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import CfgError, Location, shorten, warn_at
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["RawOption", "RawSection", "lex", "LineKind", "classify", "split_lines"]

_WHITESPACE = " \t\r\n\v\f"
# Darknet's fgetl ends lines at '\n' only ('\r' is whitespace); a bare '\r' also ends one here, so
# old Mac files read line by line. Not str.splitlines(): it also breaks at \x1c-\x1e, \x85, \u2028,
# which Darknet keeps inside the line (and line numbers would drift from the editor's).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class RawOption:
    key: str
    value: str
    line: int
    column: int  # 1-based column of the value's first character in the original line


@dataclass
class RawSection:
    header: str  # as written between the brackets, whitespace removed, e.g. "conv"
    line: int
    options: list[RawOption] = field(default_factory=list)


def _squeeze(text: str) -> str:
    return "".join(ch for ch in text if ch not in _WHITESPACE)


def _value_column(raw: str, eq_pos_in_squeezed: int) -> int:
    """Column (1-based) in the raw line of the character after the `=` Darknet splits on."""
    seen = -1
    for col, ch in enumerate(raw):
        if ch in _WHITESPACE:
            continue
        seen += 1
        if seen == eq_pos_in_squeezed:
            rest = raw[col + 1 :]
            return col + 2 + (len(rest) - len(rest.lstrip(_WHITESPACE)))
    return len(raw) + 1


def lex(text: str, path: str | None = None, *, limits: Limits = DEFAULT_LIMITS) -> list[RawSection]:
    """Split cfg text into sections of raw options, with line and column of every value."""
    _check_text(text, path, limits)
    sections: list[RawSection] = []
    for lineno, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if len(raw) > limits.max_line:
            raise CfgError(f"line of {len(raw):,} characters, more than the limit of "
                           f"{limits.max_line:,} (Limits.max_line)", Location(path, lineno))
        line = _squeeze(raw)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append(_header(line, raw, lineno, path))
            if len(sections) > limits.max_layers + 1:
                raise CfgError(f"more than {limits.max_layers:,} layers (Limits.max_layers)",
                               Location(path, lineno, None, sections[-1].header))
            continue
        if not sections:
            raise CfgError(f"option {shorten(line)} before any [section]",
                           Location(path, lineno, _first_col(raw)))
        section = sections[-1]
        eq = line.find("=")
        loc = Location(path, lineno, _first_col(raw), section.header)
        if eq < 0:
            warn_at(f"line {shorten(line)} has no '=' and is ignored", loc)
            continue
        if eq == len(line) - 1:
            # Darknet rejects `key=` ("Config file error"): the option keeps its default.
            warn_at(f"option {shorten(line[:-1])} has an empty value and is ignored", loc)
            continue
        if eq == 0:
            warn_at(f"line {shorten(line)} has no key and is ignored", loc)
            continue
        section.options.append(RawOption(line[:eq], line[eq + 1 :], lineno, _value_column(raw, eq)))
    return sections


@dataclass(frozen=True)
class LineKind:
    """What one raw line is to Darknet, for code that rewrites cfg text (darkcfg.edit).

    `kind`: "blank", "comment", "header", "option" or "other" (ignored with a warning); `name`:
    the header's section name or the option's key; `value_at`: index in the raw line where the
    option's value starts."""

    kind: str
    name: str = ""
    value_at: int = 0


def classify(raw: str) -> LineKind:
    """Classify one line (without its line break) with the rules :func:`lex` applies."""
    line = _squeeze(raw)
    if not line:
        return LineKind("blank")
    if line[0] in "#;":
        return LineKind("comment")
    if line[0] == "[":
        end = line.find("]")
        return LineKind("header", line[1:end] if end > 0 else line[1:])
    eq = line.find("=")
    if eq <= 0 or eq == len(line) - 1:
        return LineKind("other")
    return LineKind("option", line[:eq], _value_column(raw, eq) - 1)


def split_lines(text: str) -> list[str]:
    """The text's lines, each with its own line break (the last may have none), so that
    ``"".join(split_lines(t)) == t``; breaks as :func:`lex` sees them."""
    parts = _LINE_BREAK.split(text)
    breaks = _LINE_BREAK.findall(text)
    lines = [p + b for p, b in zip(parts, breaks)]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _check_text(text: str, path: str | None, limits: Limits) -> None:
    """Refuse what is not cfg text before looking at lines: oversized input, binary data."""
    if len(text) > limits.max_cfg_bytes:
        raise CfgError(f"cfg text of {len(text):,} characters, more than the limit of "
                       f"{limits.max_cfg_bytes:,} (Limits.max_cfg_bytes)", Location(path))
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise CfgError(f"the cfg contains NUL bytes ({text.count(chr(0)):,} of them): a binary or "
                       f"damaged file, not cfg text", Location(path, line))


def _first_col(raw: str) -> int:
    return len(raw) - len(raw.lstrip(_WHITESPACE)) + 1


def _header(line: str, raw: str, lineno: int, path: str | None) -> RawSection:
    end = line.find("]")
    loc = Location(path, lineno, _first_col(raw))
    if end < 0:
        raise CfgError(f"section header {shorten(line)} is missing its closing ']'", loc)
    name = line[1:end]
    if not name:
        raise CfgError("empty section header '[]'", loc)
    if len(name) > 64 or not name.isprintable():
        raise CfgError(f"section header {shorten(line)} does not name a section (a name is at "
                       f"most 64 printable characters)", loc)
    trailing = line[end + 1 :]
    if trailing and trailing[0] not in "#;":
        raise CfgError(f"unexpected text {shorten(trailing)} after section header [{name}]", loc)
    return RawSection(name, lineno)
