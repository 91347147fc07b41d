"""Which images a command reads, and reading one with an error that names it.

Commands that run a network over images (`darkcfg detect`, later `map` and `valid` through one
batched pipeline) take image paths, folders and Darknet list files alike; :func:`expand` turns
them into one list of image paths, in order, so the per-image loop never needs to know where a
path came from. Problems with the sources themselves (an empty folder, a missing list file) are
found here, before any model is loaded; problems with one image are found when
:func:`open_image` reads it, so the other images can still run.

No torch here: a DataLoader worker may import this module cheaply.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from .errors import CfgError

__all__ = ["IMAGE_SUFFIXES", "LIST_SUFFIXES", "STDIN", "SourceError", "expand", "is_list_file",
           "list_folder", "read_list", "parse_list", "names_one_image", "open_image"]

# What a folder listing picks up (case-insensitive): the formats stb_image (Darknet) or Pillow
# read that image folders hold in practice.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".pnm", ".tga")
# A file with one of these suffixes is a list of image paths (Darknet's train.txt / valid.txt).
LIST_SUFFIXES = (".txt", ".list")
# Read the list from standard input, as `darknet detector test` does when given no image.
STDIN = "-"


class SourceError(CfgError):
    """An image, folder or list file that cannot be used; the message names it (one line)."""


def is_list_file(arg: str | os.PathLike) -> bool:
    """True for a Darknet list file (by suffix: .txt, .list) or ``-`` (standard input)."""
    return str(arg) == STDIN or Path(arg).suffix.lower() in LIST_SUFFIXES


def names_one_image(args: Sequence[str | os.PathLike]) -> bool:
    """True when `args` are one image path (not a folder or a list): the single-image form,
    whose output is just that image's."""
    return len(args) == 1 and not is_list_file(args[0]) and not Path(args[0]).is_dir()


def expand(args: Sequence[str | os.PathLike], stdin: TextIO | None = None) -> list[Path]:
    """The image paths `args` name, in order: a folder gives its images (sorted by name, not
    recursive), a list file (.txt, .list, or ``-`` for `stdin`) the paths it lists, anything else
    is taken as an image path. Paths that do not exist stay in the list (reading them fails
    alone); a source that yields no image is a :class:`SourceError`."""
    if not args:
        raise SourceError("no images given")
    paths: list[Path] = []
    for arg in args:
        if str(arg) == STDIN:
            paths += parse_list((stdin or sys.stdin).read(), "standard input")
        elif is_list_file(arg):
            paths += read_list(arg)
        elif Path(arg).is_dir():
            paths += list_folder(arg)
        else:
            paths.append(Path(arg))
    return paths


def list_folder(folder: str | os.PathLike) -> list[Path]:
    """The images directly in `folder` (by suffix, hidden files left out), sorted by name."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise SourceError(f"cannot list folder {folder}: {_reason(exc)}") from None
    found = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.name.startswith(".") and p.is_file()), key=lambda p: p.name)
    if not found:
        raise SourceError(f"no images in folder {folder} (looked for "
                          f"{', '.join(IMAGE_SUFFIXES)})")
    return found


def read_list(path: str | os.PathLike) -> list[Path]:
    """The image paths in a Darknet list file (see :func:`parse_list`)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise SourceError(f"cannot read list file {path}: {_reason(exc)}") from None
    return parse_list(text, f"list file {path}")


def parse_list(text: str, where: str = "the list") -> list[Path]:
    """Darknet's list format: one image path per line (CR-LF line ends too); blank lines are
    skipped and surrounding spaces dropped. Relative paths stay relative, so they resolve
    against the current directory, as Darknet resolves them."""
    paths = [Path(line.strip()) for line in text.splitlines() if line.strip()]
    if not paths:
        raise SourceError(f"no image paths in {where}")
    return paths


def open_image(path: str | os.PathLike) -> Image.Image:
    """The decoded image at `path` (its own mode; EXIF orientation ignored, as Darknet does).
    Any failure is a :class:`SourceError` of one line naming the file."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return im.copy()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure means this file is unreadable
        raise SourceError(f"cannot read image {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """A short reason for a file error, without the path the message already names."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    if isinstance(exc, NotADirectoryError):
        return "not a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image file Pillow can decode"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
