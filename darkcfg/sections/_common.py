"""Helpers shared by the section parsers: validation and registration with Darknet's accepted keys."""

from __future__ import annotations

from collections.abc import Callable

from .._keys import ACCEPTED_KEYS
from ..graph import SectionParser, cdiv, register_section
from ..options import Options

__all__ = ["positive", "non_negative", "out_size", "register"]


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


def register(name: str, *aliases: str, is_output: bool = False) -> Callable[[SectionParser], SectionParser]:
    """Register a parser under `name` (and aliases), accepting the training keys Darknet reads for it."""

    def deco(fn: SectionParser) -> SectionParser:
        register_section(name, fn, aliases=aliases, is_output=is_output,
                         accepted=ACCEPTED_KEYS.get(name, ()))
        return fn
    return deco
