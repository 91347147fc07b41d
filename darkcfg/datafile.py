"""Darknet's dataset files, read as Darknet reads them: the `.data` file, image lists, the label
path of an image, and label files.

`darkcfg map` and `calc_anchors` (and later `darkcfg train`) must see exactly the images and
boxes Darknet sees, so each reader repeats Darknet's parsing, quirks included:

- `.data` (``read_data_cfg``, option_list.c): spaces, tabs, CR and LF are deleted from every line
  *before* parsing, so ``valid = my data/v.txt`` means ``mydata/v.txt``; ``#`` and ``;`` start
  comment lines; the key ends at the first ``=``; the first of two equal keys wins; a line whose
  only ``=`` is its last character is rejected (Darknet prints "Config file error").
- image lists (``get_paths``/``fgetl``, data.c, utils.c): one path per line, only the line end
  (LF, or CR LF) removed; every line is an image, an empty one too.
- label paths (``replace_image_to_label``, utils.c): a fixed list of folder substitutions
  (``/images/val2017/`` → ``/labels/val2017/``, ``/JPEGImages/`` → ``/labels/``, ...), then a
  known image suffix at the very end becomes ``.txt``. A plain ``images/`` folder is *not*
  mapped to ``labels/``.
- labels (``read_boxes``, data.c): ``fscanf("%d %f %f %f %f")`` until it fails: float32 values,
  line breaks irrelevant, reading stops silently at the first malformed token; nothing clipped.

Relative paths resolve against the current directory, as in Darknet. Where Darknet would
silently do something surprising, the readers return a note (file and line) for the caller to
show. No torch here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CfgError

__all__ = ["DataFile", "Labels", "LabelNote", "read_data", "parse_data", "read_image_list",
           "parse_image_list", "label_path", "label_path_note", "read_labels", "parse_labels",
           "LABEL_RULES", "LABEL_SUFFIXES"]

# replace_image_to_label's substitutions, in its order; each replaces the first occurrence only.
LABEL_RULES: tuple[tuple[str, str], ...] = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)
# The image suffixes it turns into .txt (case as written: .Jpg is not one of them).
LABEL_SUFFIXES = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm",
                  ".PPM", ".tiff", ".TIFF")

_STRIPPED = " \t\r\n"  # what Darknet's strip() deletes from a .data line


# --- the .data file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DataFile:
    """A parsed .data file: `options` maps each key to its value (whitespace deleted; None for a
    line without ``=``, which Darknet keeps as an unset key), `lines` each key to the line that
    set it, `notes` what Darknet would do unexpectedly."""

    path: str
    options: dict[str, str | None]
    lines: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        """Darknet's option_find_str: the first line's value, else `default`."""
        value = self.options.get(key)
        return default if value is None else value

    def get_int(self, key: str, default: int) -> int:
        """Darknet's option_find_int: C atoi of the value (leading digits; 0 when none)."""
        value = self.options.get(key)
        return default if value is None else _atoi(value)


def read_data(path: str | os.PathLike) -> DataFile:
    """The .data file at `path`, parsed as Darknet's read_data_cfg does."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise CfgError(f"cannot read .data file {path}: {_reason(exc)}") from None
    return parse_data(text, str(path))


def parse_data(text: str, path: str = "<data>") -> DataFile:
    """Darknet's .data parsing of `text` (see the module docstring)."""
    options: dict[str, str] = {}
    lines: dict[str, int] = {}
    notes: list[str] = []
    for number, raw in enumerate(_darknet_lines(text), 1):
        line = "".join(ch for ch in raw if ch not in _STRIPPED)
        if not line or line[0] in "#;":
            continue
        where = f"{path} line {number}"
        key, eq, value = line.partition("=")
        if eq and not value:
            notes.append(f"{where}: '{line}' has no value; Darknet ignores the line")
            continue
        if key in options:
            notes.append(f"{where}: {key} is set again; Darknet uses the first value "
                         f"(line {lines[key]})")
            continue
        if not eq:  # Darknet keeps the key with no value: it reads as unset (the default)
            notes.append(f"{where}: '{line}' has no '='; Darknet reads {key} as not set")
            options[key], lines[key] = None, number
            continue
        inner = raw.strip(_STRIPPED).partition("=")[2].strip(_STRIPPED)
        if inner != value:
            notes.append(f"{where}: the spaces inside {key}'s value are deleted, as Darknet "
                         f"does: {key}={value}")
        options[key], lines[key] = value, number
    return DataFile(path, options, lines, tuple(notes))


def _atoi(text: str) -> int:
    m = re.match(r"[ \t\n\r\f\v]*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


# --- image lists -------------------------------------------------------------------------------

def read_image_list(path: str | os.PathLike) -> list[str]:
    """The lines of a Darknet image list (see :func:`parse_image_list`)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise CfgError(f"cannot read image list {path}: {_reason(exc)}") from None
    return parse_image_list(text)


def parse_image_list(text: str) -> list[str]:
    """Darknet's get_paths: every line is a path (an empty line too), with only its line end
    (LF or CR LF) removed; nothing is trimmed."""
    return _darknet_lines(text)


def _darknet_lines(text: str) -> list[str]:
    """fgetl's lines: LF ends a line and a CR just before it goes too; no empty line after a
    final LF. On a last line without LF, fgetl drops the two characters from a CR before the
    last character (its check looks one character back)."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [p[:-1] if p.endswith("\r") else p for p in parts]
    if last:
        lines.append(last[:-2] if len(last) >= 2 and last[-2] == "\r" else last)
    return lines


# --- label paths -------------------------------------------------------------------------------

def label_path(image_path: str | os.PathLike) -> str:
    """The label file Darknet reads for `image_path` (replace_image_to_label)."""
    out = str(image_path)
    for orig, rep in LABEL_RULES:
        out = out.replace(orig, rep, 1)
    out = out.strip(" \t")
    for suffix in LABEL_SUFFIXES:
        if out.endswith(suffix):
            out = out[:-len(suffix)] + ".txt"
    return out


def label_path_note(image_path: str, label: str) -> str | None:
    """Why `label` (from :func:`label_path`) is not a usable label file name, or None."""
    if len(label) <= 4:
        return f"image path {image_path!r} is too short to name a label file"
    if not label.endswith(".txt"):
        return (f"no label file name for image {image_path}: its suffix is not one Darknet "
                f"maps to .txt ({' '.join(LABEL_SUFFIXES)})")
    return None


# --- label files -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelNote:
    """Something in a label file Darknet reads without a word. `kind`: "row" (a class or
    coordinate out of range; the row is used), "layout" (a row that is not five values on one
    line; used as fscanf read it), "stop" (reading stopped before the end of the file)."""

    path: str
    line: int
    text: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.text}"


@dataclass(frozen=True)
class Labels:
    """One label file's boxes: `ids` (n,) int64 class ids, `boxes` (n, 4) float32 centre x, y,
    width, height relative to the image, in file order, as Darknet read them; `lines` the line
    of each row; `notes` what a user would want to know about (file, line)."""

    ids: np.ndarray
    boxes: np.ndarray
    lines: tuple[int, ...] = ()
    notes: tuple[LabelNote, ...] = ()

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def empty() -> Labels:
        return Labels(np.zeros(0, np.int64), np.zeros((0, 4), np.float32))


# fscanf's %d and %f (strtod's forms: decimal with exponent, inf, infinity, nan, hex floats)
_INT = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_FLOAT = re.compile(rb"[ \t\n\v\f\r]*([+-]?(?:0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
                    rb"(?:[pP][+-]?[0-9]+)?|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    rb"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN]))")


def read_labels(path: str | os.PathLike, classes: int | None = None) -> Labels | None:
    """The label file at `path` (see :func:`parse_labels`), or None when it cannot be opened
    (Darknet: 0 boxes, and the path goes to bad.list)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return parse_labels(data, str(path), classes)


def parse_labels(data: bytes | str, path: str = "<labels>", classes: int | None = None) -> Labels:
    """Darknet's read_boxes on the bytes of a label file: rows of ``class x y w h`` read with
    fscanf until one fails. Rows are used as written; notes name (file, line) the rows whose
    class is not in 0..`classes`-1 or whose x, y, w or h is outside (0, 1], rows that are not
    five values on one line (fscanf reads on across lines), and text where reading stopped."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    ids: list[int] = []
    values: list[tuple[float, ...]] = []
    lines: list[int] = []
    notes: list[LabelNote] = []
    pos = 0
    while True:
        fields = _scan_row(data, pos)
        if fields is None:
            rest = _NON_SPACE.search(data, pos)
            if rest is not None:
                notes.append(LabelNote(path, _line_of(data, rest.start()),
                                       f"reading stops at {_snippet(data[rest.start():])} (not "
                                       f"'class x y width height'); Darknet ignores the rest "
                                       f"of the file", "stop"))
            break
        start, end = fields[0].start(1), fields[-1].end()
        line = _line_of(data, start)
        cls = _c_int(fields[0].group(1))
        box = tuple(float(np.float32(_c_float(f.group(1)))) for f in fields[1:])
        ids.append(cls)
        values.append(box)
        lines.append(line)
        odd = _row_note(cls, box, classes)
        problems = [odd] if odd else []
        if b"\n" in data[start:end] or not _starts_line(data, start):
            problems.append("this row is not five values on one line (fscanf reads on across "
                            "values and lines, as Darknet does)")
        if problems:
            notes.append(LabelNote(path, line, "; ".join(problems), "row" if odd else "layout"))
        pos = end
    return Labels(np.asarray(ids, np.int64), np.asarray(values, np.float32).reshape(-1, 4),
                  tuple(lines), tuple(notes))


_NON_SPACE = re.compile(rb"[^ \t\n\v\f\r]")


def _scan_row(data: bytes, pos: int) -> list[re.Match] | None:
    """fscanf("%d %f %f %f %f") from `pos`: the five matches, or None when it returns < 5."""
    m = _INT.match(data, pos)
    if m is None:
        return None
    fields = [m]
    for _ in range(4):
        m = _FLOAT.match(data, m.end())
        if m is None:
            return None
        fields.append(m)
    return fields


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _starts_line(data: bytes, offset: int) -> bool:
    """Only spaces or tabs between the line start and `offset`."""
    begin = data.rfind(b"\n", 0, offset) + 1
    return not data[begin:offset].strip()


def _c_float(token: bytes) -> float:
    text = token.decode("ascii")
    return float.fromhex(text) if "x" in text.lower() else float(text)


def _c_int(token: bytes) -> int:
    """fscanf %d of a token that does not fit an int: it wraps (glibc); keep Python's value but
    in int32 range so arrays stay well defined."""
    v = int(token)
    return (v + 2**31) % 2**32 - 2**31


def _row_note(cls: int, box: tuple[float, ...], classes: int | None) -> str | None:
    problems = []
    if classes is not None and not 0 <= cls < classes:
        problems.append(f"class {cls} is not in 0..{classes - 1}")
    outside = [f"{name}={v:g}" for name, v in zip("xywh", (box[0], box[1], box[2], box[3]))
               if not 0 < v <= 1]
    if outside:
        problems.append(f"{', '.join(outside)} outside (0, 1]")
    return "; ".join(problems) if problems else None


def _snippet(raw: bytes) -> str:
    text = raw.split(b"\n", 1)[0][:30].decode("utf-8", "replace")
    return repr(text)


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)

