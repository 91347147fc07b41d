"""Darknet's box overlap measures and its hand-written (G/D/C)IoU gradient (box.c), on tensors.

Boxes are `(..., 4)` tensors `[x, y, w, h]` (centre and size, any common unit) that broadcast
against each other. Everything runs in float32 in Darknet's order of operations, because the
heads compare these values with thresholds (`ignore_thresh`, `iou_thresh`): a port that computes
them differently flips a decision now and then. Darknet's double-precision steps (`pow`, `atan`,
the constants of CIoU) run in float64 and are rounded to float32 where Darknet stores a float.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["IOU_KINDS", "box_iou", "box_giou", "box_diou", "box_ciou", "box_iou_kind",
           "dx_box_iou", "BoxGrad"]

# Darknet's IOU_LOSS names as cfgs write them (iou_loss=, iou_thresh_kind=).
IOU_KINDS = ("mse", "iou", "giou", "diou", "ciou")

# glibc's M_PI (box.c's own fallback 3.141592 only applies where math.h lacks it).
_FOUR_OVER_PI2 = 4 / (math.pi * math.pi)
_EIGHT_OVER_PI2 = 8 / (math.pi * math.pi)


def _split(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return b[..., 0], b[..., 1], b[..., 2], b[..., 3]


def _overlap(x1: Tensor, w1: Tensor, x2: Tensor, w2: Tensor) -> Tensor:
    """box.c overlap(): the signed length of the intersection of two 1-d intervals."""
    left = torch.maximum(x1 - w1 / 2, x2 - w2 / 2)
    right = torch.minimum(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def _intersection_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    w = _overlap(ax, aw, bx, bw)
    h = _overlap(ay, ah, by, bh)
    inter = torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)
    union = aw * ah + bw * bh - inter
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """box.c box_iou(): 0 where the intersection or the union is 0."""
    inter, union = _intersection_union(a, b)
    zero = (inter == 0) | (union == 0)
    return torch.where(zero, torch.zeros_like(inter), inter / torch.where(zero, 1, union))


def _enclosing(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box holding both (box.c box_c())."""
    ax, ay, aw, ah = _split(a)
    bx, by, bw, bh = _split(b)
    top = torch.minimum(ay - ah / 2, by - bh / 2)
    bot = torch.maximum(ay + ah / 2, by + bh / 2)
    left = torch.minimum(ax - aw / 2, bx - bw / 2)
    right = torch.maximum(ax + aw / 2, bx + bw / 2)
    return right - left, bot - top


def box_giou(a: Tensor, b: Tensor) -> Tensor:
    """box.c box_giou(): IoU - (C - U)/C, plain IoU where the enclosing area C is 0."""
    w, h = _enclosing(a, b)
    c = w * h
    iou = box_iou(a, b)
    _, union = _intersection_union(a, b)
    safe = torch.where(c == 0, 1, c)
    return torch.where(c == 0, iou, iou - (c - union) / safe)


def _centre_distance2(a: Tensor, b: Tensor) -> Tensor:
    dx, dy = a[..., 0] - b[..., 0], a[..., 1] - b[..., 1]
    return dx * dx + dy * dy


def box_diou(a: Tensor, b: Tensor) -> Tensor:
    """box.c box_diou(): IoU - (d²/c²)^0.6 (Darknet's exponent, not the paper's 1)."""
    w, h = _enclosing(a, b)
    c = w * w + h * h
    iou = box_iou(a, b)
    d = _centre_distance2(a, b)
    safe = torch.where(c == 0, 1, c)
    term = torch.pow((d / safe).double(), 0.6).to(iou.dtype)
    return torch.where(c == 0, iou, iou - term)


def _aspect_loss(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """CIoU's v = 4/π²·(atan(w_b/h_b) - atan(w_a/h_a))² (float), and the atan difference
    (double)."""
    ar_b, ar_a = (b[..., 2] / b[..., 3]).double(), (a[..., 2] / a[..., 3]).double()
    diff = torch.atan(ar_b) - torch.atan(ar_a)
    return (_FOUR_OVER_PI2 * diff * diff).to(a.dtype), diff


def box_ciou(a: Tensor, b: Tensor) -> Tensor:
    """box.c box_ciou() of prediction `a` and truth `b`: IoU - d²/c² - α·v."""
    w, h = _enclosing(a, b)
    c = w * w + h * h
    iou = box_iou(a, b)
    u = _centre_distance2(a, b)
    safe = torch.where(c == 0, 1, c)
    ar_loss, _ = _aspect_loss(a, b)
    alpha = (ar_loss.double() / ((1 - iou + ar_loss).double() + 0.000001)).to(iou.dtype)
    term = u / safe + alpha * ar_loss
    return torch.where(c == 0, iou, iou - term)


def box_iou_kind(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """box.c box_iou_kind(): iou, giou, diou or ciou by name (anything else: plain IoU)."""
    fn = {"giou": box_giou, "diou": box_diou, "ciou": box_ciou}.get(kind, box_iou)
    return fn(a, b)


class BoxGrad(NamedTuple):
    """dx_box_iou()'s result, named by what Darknet uses it for (it stores dt, db, dl, dr)."""

    dx: Tensor
    dy: Tensor
    dw: Tensor
    dh: Tensor


def dx_box_iou(pred: Tensor, truth: Tensor, kind: str) -> BoxGrad:
    """box.c dx_box_iou(): Darknet's derivative of IoU (kind "iou"), GIoU, DIoU or CIoU with
    respect to the predicted box's x, y, w, h, the direction the prediction should move.

    It is not the exact gradient of the loss: the width/height terms are not halved, the GIoU
    enclosing term is added with Darknet's sign, boxes that do not overlap use only the
    GIoU/DIoU/CIoU terms, and CIoU's α is treated as a constant. Heads reproduce it as is."""
    px, py, pw, ph = _split(pred)
    tx, ty, tw, th = _split(truth)
    p_top, p_bot = py - ph / 2, py + ph / 2
    p_left, p_right = px - pw / 2, px + pw / 2
    pred_t, pred_b = torch.minimum(p_top, p_bot), torch.maximum(p_top, p_bot)
    pred_l, pred_r = torch.minimum(p_left, p_right), torch.maximum(p_left, p_right)
    t_top, t_bot = ty - th / 2, ty + th / 2
    t_left, t_right = tx - tw / 2, tx + tw / 2

    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = torch.minimum(pred_b, t_bot) - torch.maximum(pred_t, t_top)
    Iw = torch.minimum(pred_r, t_right) - torch.maximum(pred_l, t_left)
    I = Iw * Ih  # noqa: E741 (Darknet's names)
    U = X + Xhat - I
    S = (px - tx) * (px - tx) + (py - ty) * (py - ty)
    giou_Cw = torch.maximum(pred_r, t_right) - torch.minimum(pred_l, t_left)
    giou_Ch = torch.maximum(pred_b, t_bot) - torch.minimum(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch

    zero = torch.zeros_like(px)
    dX_t, dX_b = -(pred_r - pred_l), pred_r - pred_l
    dX_l, dX_r = -(pred_b - pred_t), pred_b - pred_t
    dI_t = torch.where(pred_t > t_top, -Iw, zero)
    dI_b = torch.where(pred_b < t_bot, Iw, zero)
    dI_l = torch.where(pred_l > t_left, -Ih, zero)
    dI_r = torch.where(pred_r < t_right, Ih, zero)
    dU_t, dU_b, dU_l, dU_r = dX_t - dI_t, dX_b - dI_b, dX_l - dI_l, dX_r - dI_r
    dC_t = torch.where(pred_t < t_top, -giou_Cw, zero)
    dC_b = torch.where(pred_b > t_bot, giou_Cw, zero)
    dC_l = torch.where(pred_l < t_left, -giou_Ch, zero)
    dC_r = torch.where(pred_r > t_right, giou_Ch, zero)

    u_pos = U > 0
    UU = torch.where(u_pos, U * U, 1)

    def iou_part(dI: Tensor, dU: Tensor) -> Tensor:
        return torch.where(u_pos, (U * dI - I * dU) / UU, zero)

    p_dt, p_db = iou_part(dI_t, dU_t), iou_part(dI_b, dU_b)
    p_dl, p_dr = iou_part(dI_l, dU_l), iou_part(dI_r, dU_r)
    # Darknet picks the corner by the unsorted edges: with top >= bottom both take p_db.
    tb = p_top < p_bot
    p_dt = torch.where(tb, p_dt, p_db)
    p_db = torch.where(tb, p_db, p_dt)
    lr = p_left < p_right
    p_dl = torch.where(lr, p_dl, p_dr)
    p_dr = torch.where(lr, p_dr, p_dl)

    apart = (Iw <= 0) | (Ih <= 0)
    if kind == "giou":
        CC = giou_C * giou_C

        def c_part(dU: Tensor, dC: Tensor) -> Tensor:
            return (giou_C * dU - U * dC) / CC

        c_pos = giou_C > 0
        parts = [c_part(dU_t, dC_t), c_part(dU_b, dC_b), c_part(dU_l, dC_l), c_part(dU_r, dC_r)]
        p_dt, p_db, p_dl, p_dr = (
            torch.where(apart, c, torch.where(c_pos, p + c, p))
            for p, c in zip((p_dt, p_db, p_dl, p_dr), parts))

    p_dx = p_dl + p_dr
    p_dy = p_dt + p_db
    p_dw = p_dr - p_dl
    p_dh = p_db - p_dt

    if kind in ("diou", "ciou"):
        Cw, Ch = _enclosing(pred, truth)
        C = Cw * Cw + Ch * Ch
        one, half = torch.ones_like(px), torch.full_like(px, 0.5)
        dCt_dy = torch.where(pred_t < t_top, one, zero)
        dCt_dh = torch.where(pred_t < t_top, -half, zero)
        dCb_dy = torch.where(pred_b > t_bot, one, zero)
        dCb_dh = torch.where(pred_b > t_bot, half, zero)
        dCl_dx = torch.where(pred_l < t_left, one, zero)
        dCl_dw = torch.where(pred_l < t_left, -half, zero)
        dCr_dx = torch.where(pred_r > t_right, one, zero)
        dCr_dw = torch.where(pred_r > t_right, half, zero)
        dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
        dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
        # dCw_dy, dCw_dh, dCh_dx, dCh_dw are 0 in Darknet's table
        CC = C * C
        d_x = (2 * (tx - px) * C - (2 * Cw * dCw_dx) * S) / CC
        d_y = (2 * (ty - py) * C - (2 * Ch * dCh_dy) * S) / CC
        d_w = (2 * Cw * dCw_dw) * S / CC
        d_h = (2 * Ch * dCh_dh) * S / CC
        if kind == "ciou":
            ar_loss, diff = _aspect_loss(pred, truth)
            iou_f = I / U
            alpha = (ar_loss.double() / ((1 - iou_f + ar_loss).double() + 0.000001)).to(px.dtype)
            ar_dw = (_EIGHT_OVER_PI2 * diff * ph.double()).to(px.dtype)
            ar_dh = (-_EIGHT_OVER_PI2 * diff * pw.double()).to(px.dtype)
            d_w = d_w + alpha * ar_dw
            d_h = d_h + alpha * ar_dh
        c_pos = C > 0
        p_dx = torch.where(apart, d_x, torch.where(c_pos, p_dx + d_x, p_dx))
        p_dy = torch.where(apart, d_y, torch.where(c_pos, p_dy + d_y, p_dy))
        p_dw = torch.where(apart, d_w, torch.where(c_pos, p_dw + d_w, p_dw))
        p_dh = torch.where(apart, d_h, torch.where(c_pos, p_dh + d_h, p_dh))
    return BoxGrad(p_dx, p_dy, p_dw, p_dh)
