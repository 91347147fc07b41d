"""Editing a parsed cfg and writing it back as cfg text.

Edits work on the text, not on the typed graph: the cfg is kept as blocks of raw lines (one per
section), an edit rewrites the few lines it touches, and the result is parsed again. So comments,
blank lines, option order and spelling of everything untouched survive byte for byte, and the
edited network is exactly what Darknet would read from the dumped text.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import CfgError, Location
from .graph import Network, canonical_type, parse_text, section_type
from .lexer import classify, split_lines

__all__ = ["dump", "Document"]

_KEY = re.compile(r"[^\s=\[#;][^\s=]*")
_INDEX_ITEM = re.compile(r"[+-]?\d+")


@dataclass
class _Block:
    """One section's lines: the header line first, then everything up to the next header."""

    header: str
    lines: list[str]

    def body_end(self) -> int:
        """Index after the last line that is not blank or a comment: the lines after it (blank
        lines, a comment about the next section) belong visually to the next section."""
        end = 1
        for i, raw in enumerate(self.lines[1:], start=1):
            if classify(raw.rstrip("\r\n")).kind not in ("blank", "comment"):
                end = i + 1
        return end

    def options(self, key: str) -> list[int]:
        """Line numbers (in this block) of the options named `key`."""
        return [i for i, kind in enumerate(map(_kind, self.lines[1:]), start=1)
                if kind.kind == "option" and kind.name == key]


def _kind(raw: str):
    return classify(raw.rstrip("\r\n"))


def _break_of(raw: str) -> str:
    return raw[len(raw.rstrip("\r\n")):]


@dataclass
class Document:
    """Cfg text as a preamble (lines before [net]) and one block per section, [net] first."""

    preamble: list[str]
    blocks: list[_Block]
    newline: str = "\n"

    @classmethod
    def from_text(cls, text: str) -> Document:
        lines = split_lines(text)
        first_break = re.search(r"\r\n|\r|\n", text)
        doc = cls([], [], first_break.group() if first_break else "\n")
        for raw in lines:
            kind = _kind(raw)
            if kind.kind == "header":
                doc.blocks.append(_Block(kind.name, [raw]))
            elif doc.blocks:
                doc.blocks[-1].lines.append(raw)
            else:
                doc.preamble.append(raw)
        return doc

    def text(self) -> str:
        return "".join(self.preamble) + "".join("".join(b.lines) for b in self.blocks)

    @property
    def layer_count(self) -> int:
        return len(self.blocks) - 1

    def line_of(self, block: int) -> int:
        """1-based line number of a block's header."""
        return len(self.preamble) + sum(len(b.lines) for b in self.blocks[:block]) + 1

    # -- options --------------------------------------------------------------------------------
    def set_option(self, block: int, key: str, value: str | None) -> None:
        b = self.blocks[block]
        found = b.options(key)
        if value is None:
            for i in reversed(found):
                del b.lines[i]
            return
        if found:
            i = found[0]  # Darknet reads the first of duplicate keys
            raw = b.lines[i]
            b.lines[i] = raw[:_kind(raw).value_at] + value + _inline_comment(raw) + _break_of(raw)
            return
        at = b.body_end()
        self._end_line(b, at - 1)
        b.lines.insert(at, f"{key}={value}{self.newline}")

    def _end_line(self, b: _Block, i: int) -> None:
        """Give line i a line break (the file's last line may have none) before adding after it."""
        if not _break_of(b.lines[i]):
            b.lines[i] += self.newline

    # -- sections -------------------------------------------------------------------------------
    def insert_block(self, position: int, header: str, options: list[tuple[str, str]]) -> None:
        """Insert a section so that it becomes block `position` (1 <= position <= len(blocks))."""
        nl = self.newline
        new = [f"[{header}]{nl}"] + [f"{k}={v}{nl}" for k, v in options]
        prev = self.blocks[position - 1]
        if position == len(self.blocks):
            self._end_line(prev, len(prev.lines) - 1)
            self.blocks.append(_Block(header, [nl] + new))
            return
        cut = prev.body_end()
        trailing = prev.lines[cut:]
        del prev.lines[cut:]
        self._end_line(prev, cut - 1)
        gap = [] if trailing and _kind(trailing[0]).kind == "blank" else [nl]
        self.blocks.insert(position, _Block(header, [nl] + new + gap + trailing))

    def delete_block(self, position: int) -> None:
        """Remove a section's header and options; comments after them stay for the next one."""
        b = self.blocks.pop(position)
        trailing = b.lines[b.body_end():]
        prev = self.blocks[position - 1]
        if trailing and _kind(trailing[0]).kind == "blank" and prev.lines \
                and _kind(prev.lines[-1]).kind == "blank":
            trailing = trailing[1:]  # no double blank line where the section was
        prev.lines.extend(trailing)


def _inline_comment(raw: str) -> str:
    """A `#`/`;` comment written after an option's value (Darknet's atoi/atof stop there), kept
    when the value is replaced."""
    value = raw.rstrip("\r\n")[_kind(raw).value_at:]
    m = re.search(r"[#;]", value)
    return value[m.start():] if m and m.start() > 0 else ""


# -- values -------------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """A Python value as Darknet reads it: 1/0 for bools, lists comma-separated."""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):  # also numpy's integers
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if not value.strip() or re.search(r"[\r\n]", value):
            raise ValueError(f"option value {value!r} must be one non-empty line")
        return value
    if isinstance(value, Sequence):
        items = [format_value(v) for v in _flatten(value)]
        if not items:
            raise ValueError("an empty list is not an option value")
        return ",".join(items)
    raise TypeError(f"cannot write a {type(value).__name__} as a cfg option value")


def _flatten(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, Sequence) and not isinstance(v, str):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not an option name")
    return key


# -- the edit session of a network --------------------------------------------------------------
@dataclass
class _Pending:
    doc: Document
    overrides: dict[str, int] = field(default_factory=dict)


def _session(network: Network) -> tuple[_Pending, bool]:
    """The open batch's pending text, or a fresh one that commits at once."""
    if network._pending is not None:
        return network._pending, False
    return _Pending(Document.from_text(network.source), dict(network.overrides)), True


def _commit(network: Network, pending: _Pending) -> None:
    """Parse the edited text; only when it parses does the network take it (edits are atomic)."""
    new = parse_text(pending.doc.text(), network.path, limits=network.limits, **pending.overrides)
    network.net, network.layers, network.source = new.net, new.layers, new.source
    network.overrides = new.overrides


def _block_index(pending: _Pending, index: int | str, *, insert: bool = False) -> int:
    n = pending.doc.layer_count
    if index == "net":
        if insert:
            raise ValueError("[net] is always the first section; insert layers at 0..len(net)")
        return 0
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"a layer index is an int (or 'net'), not {index!r}")
    i = index + n if index < 0 else index
    if not 0 <= i < n + insert:
        raise IndexError(f"layer {index} is outside the network's {n} layers")
    return i + 1


def set_options(network: Network, index: int | str, options: Mapping[str, Any]) -> None:
    pending, commit = _session(network)
    block = _block_index(pending, index)
    for key, value in options.items():
        _check_key(key)
        pending.doc.set_option(block, key, None if value is None else format_value(value))
        if block == 0:
            pending.overrides.pop(key, None)  # the text now says what the caller wants
    if commit:
        _commit(network, pending)


def insert_layer(network: Network, index: int, section: str, options: Mapping[str, Any]) -> None:
    pending, commit = _session(network)
    block = _block_index(pending, index, insert=True)
    if not isinstance(section, str) or not _KEY.fullmatch(section) or "]" in section:
        raise ValueError(f"{section!r} is not a section name")
    if canonical_type(section) == "net":
        raise ValueError("a cfg has one [net] section, the first")
    values = [(_check_key(k), format_value(v)) for k, v in options.items() if v is not None]
    layer = block - 1
    _renumber(pending.doc, lambda t: t if t < layer else t + 1, gone=None)
    pending.doc.insert_block(block, section, values)
    if commit:
        _commit(network, pending)


def delete_layer(network: Network, index: int) -> None:
    pending, commit = _session(network)
    block = _block_index(pending, index)
    layer = block - 1
    _renumber(pending.doc, lambda t: t if t < layer else t - 1, gone=(layer, network.path))
    pending.doc.delete_block(block)
    if commit:
        _commit(network, pending)


def _renumber(doc: Document, moved, gone: tuple[int, str | None] | None) -> None:
    """Rewrite every layer index other sections hold so it names the same layer after the edit.

    Darknet's rule: a negative index is relative to the layer holding it, zero or positive is
    absolute. Values that are not plain integers are left for the parser to report."""
    for j, block in enumerate(doc.blocks[1:]):
        if gone is not None and j == gone[0]:
            continue
        keys = _index_keys(block.header)
        for i, raw in enumerate(block.lines):
            kind = _kind(raw)
            if i == 0 or kind.kind != "option" or kind.name not in keys:
                continue
            value = "".join(raw.rstrip("\r\n")[kind.value_at:].split())
            items = value.split(",")
            if not all(_INDEX_ITEM.fullmatch(v) for v in items):
                continue
            new = []
            for v in map(int, items):
                target = j + v if v < 0 else v
                if gone is not None and target == gone[0]:
                    raise CfgError(f"cannot delete layer {gone[0]}: layer {j} reads it "
                                   f"({kind.name}={value}); change that first",
                                   Location(gone[1], doc.line_of(j + 1) + i, None, block.header, j))
                if not 0 <= target < j:
                    new.append(v)  # already wrong: the parser says so
                    continue
                t = moved(target)
                new.append(t - moved(j) if v < 0 else t)
            if new != [int(v) for v in items]:
                block.lines[i] = raw[:kind.value_at] + ",".join(map(str, new)) + _break_of(raw)


def _index_keys(header: str) -> frozenset[str]:
    name = canonical_type(header)
    return section_type(name).index_keys if name is not None else frozenset()


def begin_batch(network: Network) -> bool:
    if network._pending is not None:
        return False  # nested: the outer batch commits
    network._pending = _Pending(Document.from_text(network.source), dict(network.overrides))
    return True


def end_batch(network: Network, outer: bool, *, commit: bool) -> None:
    if not outer:
        return
    pending, network._pending = network._pending, None
    if commit:
        _commit(network, pending)


# -- writing ------------------------------------------------------------------------------------
def dump(network: Network, path: str | os.PathLike | None = None) -> str:
    """The cfg text of `network` (with its width/height/channels overrides written into [net]);
    also written to `path` when given. Text that was not edited is returned unchanged."""
    if network._pending is not None:
        raise RuntimeError("dump() inside net.batch(): the edits are not parsed yet")
    if not network.source:
        raise ValueError("this network has no cfg text (it was not made by darkcfg.parse)")
    text = network.source
    if network.overrides:
        doc = Document.from_text(text)
        for key, value in network.overrides.items():
            doc.set_option(0, key, str(value))
        text = doc.text()
    if path is not None:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return text
