"""Detector targets: checked once, then laid out as Darknet's truth slots.

A detector's targets are one (n_i, 5) tensor per image, rows [class, x, y, w, h] normalised.
Darknet trusts its labels (a bad class writes past the delta buffer, x = 1 indexes the next row),
so bad rows are refused here with the image and row named. Rows whose class is -1 are padding
(the oracle's `truths` arrays use them) and are dropped before anything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import CfgError

__all__ = ["PADDING_CLASS", "check_detection_targets", "truth_slots"]

PADDING_CLASS = -1.0


def _rows(t: Tensor, image: int) -> Tensor:
    if t.dim() != 2 or t.shape[1] != 5:
        raise CfgError(f"targets of image {image} have shape {tuple(t.shape)}; expected (n, 5) "
                       f"rows [class, x, y, w, h]")
    return t


def _row_problem(row: list[float], classes: int) -> str | None:
    """Why one row is not a box Darknet can train on (None if it is)."""
    cls, x, y, w, h = row
    if not all(v == v and abs(v) != float("inf") for v in row):
        return f"non-finite value in {row}"
    if cls != int(cls):
        return f"class {cls:g} is not an integer"
    if cls < 0:
        return f"class {cls:g} is negative"
    if cls >= classes:
        return f"class {cls:g} is not below classes={classes}"
    for name, v in (("x", x), ("y", y)):
        if not 0.0 <= v <= 1.0:
            return f"{name}={v:g} is outside [0, 1]"
    for name, v in (("w", w), ("h", h)):
        if not 0.0 < v <= 1.0:
            return f"{name}={v:g} is not in (0, 1]"
    return None


def check_detection_targets(targets: Sequence[Tensor], mini_batch: int, classes: int) -> None:
    """Raise :class:`CfgError` naming the first bad row ("target row 3 of image 1: class 7 is
    not below classes=2"). One device sync for the whole mini-batch when all rows are good."""
    if isinstance(targets, Tensor) or len(targets) != mini_batch:
        n = "a tensor" if isinstance(targets, Tensor) else f"{len(targets)} images"
        raise CfgError(f"detector targets must be a list of {mini_batch} (n, 5) tensors, one per "
                       f"image of the mini-batch; got {n}")
    rows = [_rows(t, i) for i, t in enumerate(targets)]
    if not any(r.numel() for r in rows):
        return
    allr = torch.cat([r.to(torch.float64) for r in rows]).cpu()
    owner = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(rows)])
    keep = allr[:, 0] != PADDING_CLASS
    allr, owner = allr[keep], owner[keep]
    c, x, y, w, h = allr.unbind(1)
    ok = (torch.isfinite(allr).all(1) & (c == c.floor()) & (c >= 0) & (c < classes)
          & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1) & (w > 0) & (w <= 1) & (h > 0) & (h <= 1))
    if bool(ok.all()):
        return
    bad = int((~ok).nonzero()[0, 0])
    image = int(owner[bad])
    row_in_image = int((keep.nonzero()[:, 0])[bad]) - sum(r.shape[0] for r in rows[:image])
    raise CfgError(f"target row {row_in_image} of image {image}: "
                   f"{_row_problem(allr[bad].tolist(), classes)}")


def truth_slots(targets: Sequence[Tensor], max_boxes: int, device: torch.device
                ) -> tuple[Tensor, Tensor]:
    """Darknet's truth list per image: (N, T, 5) float32 rows [class, x, y, w, h] and a (N, T)
    mask of the slots Darknet reads. Padding rows are dropped, at most `max_boxes` rows are kept
    (`max=`), and reading stops at the first row with x == 0, as Darknet's layers do. Unused
    slots are zero, like Darknet's zero-filled truth buffer."""
    rows = [t[t[:, 0] != PADDING_CLASS][:max_boxes].to(device=device, dtype=torch.float32)
            for t in targets]
    n = len(rows)
    width = max([r.shape[0] for r in rows] + [1])
    truth = torch.zeros(n, width, 5, dtype=torch.float32, device=device)
    for i, r in enumerate(rows):
        truth[i, :r.shape[0]] = r
    # zero-filled slots have x == 0 as well, so this also ends each list at its last row
    valid = torch.cumprod((truth[..., 1] != 0).to(torch.int32), 1).bool()
    return truth, valid
