"""Training options that [yolo] and [Gaussian_yolo] read alike (parse_yolo / parse_gaussian_yolo
in parser.c): float fields as Darknet stores them, named choices, counters_per_class."""

from __future__ import annotations

import numpy as np

from ...errors import warn_at
from ...options import Options

__all__ = ["FLT_MAX", "f32", "choice", "classes_multipliers"]

FLT_MAX = float(np.finfo(np.float32).max)  # Darknet's FLT_MAX: max_delta unset


def f32(v: float) -> float:
    """A cfg float as Darknet holds it (a C float), so tensor arithmetic matches C's."""
    return float(np.float32(v))


def choice(opts: Options, key: str, default: str, known: tuple[str, ...], fallback: str) -> str:
    """A named option (iou_loss=, iou_thresh_kind=); an unknown name is Darknet's `fallback`."""
    value = opts.str(key, default)
    if value not in known:
        warn_at(f"{key}={value} is not one of {', '.join(known)}; Darknet uses {fallback}",
                opts.key_loc(key))
        return fallback
    return value


def classes_multipliers(opts: Options, classes: int, max_delta: float
                        ) -> tuple[float, ...] | None:
    """get_classes_multipliers (parser.c:419-446): max_count / count per class, counts below 1
    read as 1, each capped at max_delta."""
    counts = opts.ints("counters_per_class")
    if counts is None:
        return None
    if len(counts) != classes:
        raise opts.error(f"counters_per_class= has {len(counts)} values but classes={classes} "
                         f"(Darknet stops with an error)", "counters_per_class")
    counts = [max(1, c) for c in counts]
    top = np.float32(max(counts))
    return tuple(float(min(np.float32(top / np.float32(c)), np.float32(max_delta)))
                 for c in counts)
