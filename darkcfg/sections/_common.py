"""Helpers shared by the section parsers: validation and registration with Darknet's accepted keys."""

from __future__ import annotations

from collections.abc import Callable

from .._keys import ACCEPTED_KEYS
from ..graph import SectionParser, cdiv, register_section
from ..errors import warn_at
from ..options import Options

__all__ = ["positive", "non_negative", "out_size", "register", "anchor_pairs",
           "mask_and_anchors", "pool_window"]


def positive(opts: Options, key: str, value: int) -> int:
    if value <= 0:
        raise opts.error(f"{key}={value} must be positive", key)
    return value


def non_negative(opts: Options, key: str, value: int) -> int:
    if value < 0:
        raise opts.error(f"{key}={value} must not be negative", key)
    return value


def out_size(opts: Options, what: str, extent: int, total: int, size: int, stride: int) -> int:
    """Darknet's `(in + pad - size) / stride + 1` in C integer arithmetic, rejecting empty maps."""
    out = cdiv(extent + total - size, stride) + 1
    if extent + total - size < 0 or out <= 0:
        raise opts.error(f"{what} of {extent} is too small for size={size} with padding {total}")
    return out


def register(name: str, *aliases: str, is_output: bool = False, index_keys: tuple[str, ...] = ()
             ) -> Callable[[SectionParser], SectionParser]:
    """Register a parser under `name` (and aliases), accepting the training keys Darknet reads for it."""

    def deco(fn: SectionParser) -> SectionParser:
        register_section(name, fn, aliases=aliases, is_output=is_output,
                         accepted=ACCEPTED_KEYS.get(name, ()), index_keys=index_keys)
        return fn
    return deco


def anchor_pairs(opts: Options, count: int, default: float, *, extra: str
                 ) -> tuple[tuple[float, float], ...]:
    """The `anchors=` (w, h) pairs of a head with num=`count`; missing values keep Darknet's
    initial `default`.

    Darknet copies every value given into an array of 2*count floats. Values beyond it are
    dropped with a warning (extra="ignore"), or kept with a warning ("keep": [yolo] masks that
    name anchors beyond num= then read them, as Darknet does in practice)."""
    opts.check_items("num", count, "anchors")
    flat = opts.floats("anchors", ())
    n = count
    if len(flat) > 2 * count:
        past = f"anchors= has {len(flat)} values, more than the {2 * count} of num={count}"
        what = "keeps them for mask entries beyond num" if extra == "keep" else "ignores them"
        warn_at(f"{past}: Darknet writes them past its anchor array; darkcfg {what}",
                opts.key_loc("anchors"))
        if extra == "keep":
            n = len(flat) // 2
    elif flat and len(flat) < 2 * count:
        warn_at(f"anchors= has {len(flat)} values but num={count} needs {2 * count}; Darknet uses "
                f"{default} for the missing ones", opts.key_loc("anchors"))
    values = list(flat[:2 * n]) + [default] * max(0, 2 * n - len(flat))
    return tuple((values[2 * i], values[2 * i + 1]) for i in range(n))


def mask_and_anchors(opts: Options, total: int
                     ) -> tuple[tuple[int, ...], tuple[tuple[float, float], ...]]:
    """[yolo]/[Gaussian_yolo]: the anchor indices this head uses (all num= by default) and the
    anchors they index."""
    mask = opts.ints("mask")
    if mask is None:
        mask = tuple(range(opts.check_items("num", total, "anchors")))
    anchors = anchor_pairs(opts, total, 0.5, extra="keep")
    for m in mask:
        if not 0 <= m < len(anchors):
            raise opts.error(f"mask entry {m} is outside the num={total} anchors", "mask")
    return mask, anchors


def pool_window(opts: Options) -> tuple[int, int, int, int]:
    """[maxpool]/[local_avgpool] window options as Darknet reads them: (size, stride_x, stride_y,
    padding), size defaulting to the stride and padding (the total) to size - 1."""
    stride = positive(opts, "stride", opts.int("stride", 1))
    stride_x = positive(opts, "stride_x", opts.int("stride_x", stride))
    stride_y = positive(opts, "stride_y", opts.int("stride_y", stride))
    size = positive(opts, "size", opts.int("size", stride))
    padding = non_negative(opts, "padding", opts.int("padding", size - 1))
    return size, stride_x, stride_y, padding
