"""Darknet's box helpers (box.c) in float32, elementwise with broadcasting, for the losses that
pick boxes by IoU ([region], [detection]).

They follow Darknet's operation order; Darknet's `a > b ? a : b` on edges is fmax/fmin, which
agree with it as long as the second box (the truth) has no NaN, so a NaN prediction behaves as in
Darknet.
"""

from __future__ import annotations

import struct

import torch
from torch import Tensor

__all__ = ["box_iou", "box_rmse", "Edges", "edges", "best_iou", "squared_norm", "float32"]


def float32(value: float) -> float:
    """A cfg number as Darknet keeps it in a layer's float field (scales, thresholds)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _overlap(x1: Tensor, w1: Tensor, x2: Tensor, w2: Tensor) -> Tensor:
    return torch.fmin(x1 + w1 / 2, x2 + w2 / 2) - torch.fmax(x1 - w1 / 2, x2 - w2 / 2)


Edges = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # left, right, top, bottom, area


def edges(x: Tensor, y: Tensor, w: Tensor, h: Tensor) -> Edges:
    """What box_iou computes of each box on its own, to broadcast many boxes against many."""
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2, w * h


def best_iou(a: Edges, b: Edges) -> tuple[Tensor, Tensor]:
    """For boxes `a` (..., M, 1) against `b` (..., 1, T): the best box_iou over T and the first
    index reaching it (0 when every IoU is 0). For many boxes (every anchor of a head), so it
    takes the fast paths: torch.maximum/minimum, which turn a NaN prediction into IoU 0 where
    Darknet's comparisons may still see an overlap (a NaN x with a finite w), and no special
    case for a zero union (0/0 -> 0, as Darknet; x/0 with x > 0 cannot happen)."""
    ow = torch.minimum(a[1], b[1]) - torch.maximum(a[0], b[0])
    oh = torch.minimum(a[3], b[3]) - torch.maximum(a[2], b[2])
    inter = ow.clamp_min_(0).mul_(oh.clamp_min_(0))
    iou = inter.div_((a[4] + b[4]).sub_(inter)).nan_to_num_(0.0)
    return iou.max(-1)


def box_iou(ax: Tensor, ay: Tensor, aw: Tensor, ah: Tensor,
            bx: Tensor, by: Tensor, bw: Tensor, bh: Tensor) -> Tensor:
    """box_iou: intersection over union of centre-size boxes; 0 when they do not overlap or the
    union is 0 (box.c box_intersection/box_union/box_iou)."""
    ow = _overlap(ax, aw, bx, bw)
    oh = _overlap(ay, ah, by, bh)
    inter = torch.where((ow < 0) | (oh < 0), torch.zeros_like(ow), ow * oh)
    union = aw * ah + bw * bh - inter
    zero = (inter == 0) | (union == 0)
    return torch.where(zero, torch.zeros_like(inter), inter / torch.where(zero, 1, union))


def box_rmse(ax: Tensor, ay: Tensor, aw: Tensor, ah: Tensor,
             bx: Tensor, by: Tensor, bw: Tensor, bh: Tensor) -> Tensor:
    """box_rmse: float differences, squared, summed and rooted in double (pow, sqrt); the
    result is stored as a float."""
    d = [(a - b).double() ** 2 for a, b in ((ax, bx), (ay, by), (aw, bw), (ah, bh))]
    return (d[0] + d[1] + d[2] + d[3]).sqrt().float()


def squared_norm(delta: Tensor) -> Tensor:
    """`pow(mag_array(delta), 2)`, the heads' cost, as a float32 0-d tensor: a float32 dot
    product (one pass, no copy; Darknet's running float sum is one summation order among
    others, and a less accurate one)."""
    flat = delta.reshape(-1).float()
    return torch.dot(flat, flat)
