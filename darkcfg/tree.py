"""Darknet softmax-tree files (yolo9000's ``9k.tree``), read as Darknet's tree.c does. No torch.

A tree file has one node per line, ``name parent_index`` (parent -1 for a root). Darknet groups
*consecutive lines with the same parent* into one softmax group; :class:`Tree` keeps exactly the
arrays Darknet builds (parent, child, group, leaf, group offsets and sizes) so the grouped softmax
(``darkcfg.layers.heads.softmax_tree``) and a later hierarchical decoder agree with Darknet.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CfgError, Location
from .options import Options

__all__ = ["Tree", "parse_tree", "read_tree", "find_data_file", "tree_option"]

# sscanf("%d") reads an optional sign and digits at the start of the token.
_INT_PREFIX = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Tree:
    """A softmax tree: node i has `names[i]`, `parent[i]` (-1 for roots), softmax group `group[i]`.

    Group g covers nodes ``group_offset[g] .. group_offset[g] + group_size[g] - 1``: a run of
    consecutive lines with one parent (groups are contiguous and in order, so Darknet's grouped
    softmax walks them by size alone). `child[i]` is the group of node i's children (-1 for
    leaves; the last such run if a parent's children are split).
    """

    names: tuple[str, ...]
    parent: tuple[int, ...]
    child: tuple[int, ...]
    group: tuple[int, ...]
    leaf: tuple[bool, ...]
    group_offset: tuple[int, ...]
    group_size: tuple[int, ...]
    path: str | None = field(default=None, compare=False)

    @property
    def n(self) -> int:
        """Number of nodes (= the classes a [region]/[softmax] with this tree predicts)."""
        return len(self.parent)

    @property
    def groups(self) -> int:
        return len(self.group_size)

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return f"Tree(n={self.n}, groups={self.groups}{where})"


def parse_tree(text: str, path: str | None = None) -> Tree:
    """Build a :class:`Tree` from a tree file's text (see the module docstring for the format)."""
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        count = text.count("\0")
        raise CfgError(f"the tree file contains NUL bytes (a corrupted copy?): {count} of them, "
                       f"the first on line {line}", Location(path, line))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another one
    names: list[str] = []
    parents: list[int] = []
    for lineno, raw in enumerate(lines, start=1):
        name, parent = _parse_line(raw.removesuffix("\r"), lineno, len(names), path)
        names.append(name)
        parents.append(parent)
    return _build(names, parents, path)


def read_tree(path: str | os.PathLike) -> Tree:
    """Read a tree file; any problem with its content raises :class:`CfgError` naming the line."""
    p = os.fspath(path)
    try:
        data = Path(p).read_bytes()
    except OSError as exc:
        raise CfgError(f"cannot read tree file: {exc.strerror or exc}", Location(p)) from None
    return parse_tree(data.decode("latin-1"), p)


def _parse_line(line: str, lineno: int, index: int, path: str | None) -> tuple[str, int]:
    """Darknet's `sscanf(line, "%s %d")`: the first token is the name, the second's leading integer
    the parent."""
    parts = line.split()
    if not parts:
        raise CfgError("empty line: Darknet would read it as an extra root node and shift every "
                       "later class", Location(path, lineno))
    if len(parts) == 1:
        return parts[0], -1  # no parent given: sscanf leaves -1, a root
    m = _INT_PREFIX.match(parts[1])
    if m is None:
        raise CfgError(f"parent {parts[1]!r} of node {parts[0]!r} is not an integer",
                       Location(path, lineno))
    parent = int(m.group())
    if parent < -1 or parent >= index:
        raise CfgError(f"parent {parent} of node {parts[0]!r} (node {index}) must be -1 or an "
                       f"earlier node's index", Location(path, lineno))
    return parts[0], parent


def _build(names: list[str], parents: list[int], path: str | None) -> Tree:
    """Darknet's read_tree bookkeeping: a new group starts wherever the parent changes."""
    child = [-1] * len(parents)
    group: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    last_parent, run, g = -1, 0, 0
    for i, parent in enumerate(parents):
        if parent != last_parent:
            offsets.append(i - run)
            sizes.append(run)
            g += 1
            run, last_parent = 0, parent
        group.append(g)
        if parent >= 0:
            child[parent] = g
        run += 1
    offsets.append(len(parents) - run)
    sizes.append(run)
    leaf = [True] * len(parents)
    for parent in parents:
        if parent >= 0:
            leaf[parent] = False
    return Tree(tuple(names), tuple(parents), tuple(child), tuple(group), tuple(leaf),
                tuple(offsets), tuple(sizes), path)


def find_data_file(value: str, cfg_path: str | None) -> tuple[Path | None, list[str]]:
    """Locate a file named in a cfg (`tree=`, `map=`): as given relative to the cfg's folder, then
    its basename in that folder, then relative to the folder above (a Darknet checkout keeps cfgs in
    cfg/ and runs from the checkout: `data/9k.tree`), then relative to the current directory.

    Returns (the first that exists or None, every path tried in order)."""
    candidates: list[Path] = []
    if cfg_path is not None:
        folder = Path(cfg_path).parent
        candidates += [folder / value, folder / Path(value).name, folder.parent / value]
    candidates.append(Path(value))
    tried: list[str] = []
    for cand in candidates:
        if str(cand) not in tried:
            tried.append(str(cand))
    for cand in tried:
        try:
            if Path(cand).is_file():
                return Path(cand), tried
        except OSError:  # e.g. a name longer than the file system allows: not there
            continue
    return None, tried


def tree_option(opts: Options, key: str = "tree") -> Tree | None:
    """Read a section's `tree=` option into a :class:`Tree` (None when absent).

    Darknet opens the path relative to its working directory (usually the darknet checkout);
    we also look beside the cfg file (see :func:`find_data_file`)."""
    value = opts.str(key, None)
    if value is None:
        return None
    path, tried = find_data_file(value, opts.path)
    if path is None:
        raise opts.error(f"{key}={value}: tree file not found (tried {', '.join(tried)})", key)
    try:
        return read_tree(path)
    except CfgError as exc:
        raise opts.error(f"{key}={value}: {exc}", key) from None
