"""`[Gaussian_yolo]`'s training loss: Darknet's `l.delta` and `l.cost` (gaussian_yolo_layer.c).

The head predicts a Gaussian per box coordinate (mean and sigma for x, y, w, h). Darknet's forward
writes the delta directly: the negative log-likelihood gradient of those Gaussians for the box
entries (or the (G/D/C)IoU gradient of `dx_box_iou` for the means with a non-mse `iou_loss`),
`truth - prediction` for objectness and classes. Three passes per image, as in Darknet:

1. every cell and anchor: objectness pushed to 0 unless its best IoU with a truth (counted only
   if some class probability is > .25) exceeds `ignore_thresh`; above `truth_thresh` the cell is
   trained toward that truth;
2. every truth, in order: the best of all `num=` anchors (by shape IoU) if it is in `mask=`, and
   with `iou_thresh` < 1 every other mask anchor above it, get box, objectness and class deltas.
   Later truths in the same cell add to the box deltas and overwrite objectness and classes;
3. every cell's 8 box entries are divided by its number of positive class deltas.

The cost is `||delta||^2` over the mini-batch. Computation is float32 like Darknet, with float64
where Darknet's C promotes to double. The truth pass is vectorised in "rounds": the k-th
assignment of every cell at once, which keeps Darknet's overwrite order.

Where Darknet has undefined behaviour darkcfg chooses: bad target rows are refused (Darknet
skips a class >= classes in pass 1 only and writes out of bounds in pass 2), x or y == 1 uses the
last cell (Darknet indexes one past the row), `map=` is refused, and non-finite box deltas become
0 as `fix_nan_inf` intends (an -Ofast build may drop that check). `[net] adversarial` is not
supported. On Darknet's GPU build the same CPU code computes the delta; only its backward
differs (times `delta_normalizer`, see :attr:`GaussianYoloLoss.backward_scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...graph import LayerSpec, Network
from ...options import Options
from ...sections.heads import GAUSSIAN_BOX_ENTRIES, GaussianYoloOptions
from ._options import FLT_MAX, choice, classes_multipliers, f32
from .base import LossContext, LossOutput, losses
from .boxes import IOU_KINDS, box_iou, box_iou_kind, dx_box_iou
from .targets import check_detection_targets, truth_slots

__all__ = ["GaussianYoloTraining", "GaussianYoloLoss", "read_training_options"]

FLT_MIN = float(np.finfo(np.float32).tiny)
_OBJ = GAUSSIAN_BOX_ENTRIES  # entry 8: objectness; classes follow
_SIGMA_CONST = float(np.float32(0.3))
_EPSI = float(np.float32(1e-9))
_SQRT_2PI = math.sqrt(math.pi * 2.0)


@dataclass(frozen=True)
class GaussianYoloTraining:
    """The training options parse_gaussian_yolo reads (defaults as in Darknet; note
    iou_normalizer defaults to .75 here, and it scales the mse deltas too)."""

    iou_loss: str = "mse"  # mse / iou / giou / diou / ciou
    iou_thresh_kind: str = "iou"
    iou_normalizer: float = 0.75
    uc_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    delta_normalizer: float = 1.0  # the GPU backward's factor; the CPU build ignores it
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    label_smooth_eps: float = 0.0
    objectness_smooth: bool = False
    max_delta: float = FLT_MAX
    class_multipliers: tuple[float, ...] | None = None  # from counters_per_class=
    max_boxes: int = 200  # max=
    total: int = 1  # num=: the anchors the best-anchor search looks at


def read_training_options(opts: Options, classes: int) -> GaussianYoloTraining:
    """The section's training keys, read as parse_gaussian_yolo reads them."""
    if opts.str("map", None) is not None:
        raise opts.error("map= (class remapping) is not supported in training", "map")
    max_delta = f32(opts.float("max_delta", FLT_MAX))
    return GaussianYoloTraining(
        iou_loss=choice(opts, "iou_loss", "mse", IOU_KINDS, "iou"),
        iou_thresh_kind=choice(opts, "iou_thresh_kind", "iou", IOU_KINDS[1:], "iou"),
        iou_normalizer=f32(opts.float("iou_normalizer", 0.75)),
        uc_normalizer=f32(opts.float("uc_normalizer", 1.0)),
        cls_normalizer=f32(opts.float("cls_normalizer", 1.0)),
        obj_normalizer=f32(opts.float("obj_normalizer", 1.0)),
        delta_normalizer=f32(opts.float("delta_normalizer", 1.0)),
        ignore_thresh=f32(opts.float("ignore_thresh", 0.5)),
        truth_thresh=f32(opts.float("truth_thresh", 1.0)),
        iou_thresh=f32(opts.float("iou_thresh", 1.0)),
        label_smooth_eps=f32(opts.float("label_smooth_eps", 0.0)),
        objectness_smooth=bool(opts.int("objectness_smooth", 0)),
        max_delta=max_delta,
        class_multipliers=classes_multipliers(opts, classes, max_delta),
        max_boxes=opts.int("max", 200),
        total=opts.int("num", 1),
    )


# --- the layer's pieces ---------------------------------------------------------------------------

@dataclass
class _Grid:
    """What every part of the loss needs to know about this head and call."""

    lw: int
    lh: int
    net_w: int
    net_h: int
    point: str  # yolo_point


def _pred_box(px: Tensor, py: Tensor, tw: Tensor, th: Tensor, i: Tensor, j: Tensor,
              aw: Tensor, ah: Tensor, g: _Grid) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """get_gaussian_yolo_box: x, y, w, h relative to the image of cells (i, j) with anchors
    (aw, ah) in network pixels."""
    w = (tw.double().exp() * aw.double() / g.net_w).float()
    h = (th.double().exp() * ah.double() / g.net_h).float()
    x = (i + px) / g.lw
    y = (j + py) / g.lh
    if g.point == "left_top":
        x, y = x + w / 2, y + h / 2
    elif g.point == "right_bottom":
        x, y = x - w / 2, y - h / 2
    return x, y, w, h


def _gaussian_terms(d: Tensor, sigma: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """The Gaussian NLL deltas of coordinates with error `d` and predicted `sigma`: (mean
    delta, sigma delta) before the normalizers. Darknet's double promotions are kept; with
    -Ofast a density below FLT_MIN is flushed to zero."""
    in_exp = d / sigma
    in_exp2 = in_exp * in_exp
    sig_c = sigma + _SIGMA_CONST
    nd = (torch.exp(in_exp2.double() * -0.5) / (_SQRT_2PI * sig_c.double())).float()
    nd = torch.where(nd.abs() < FLT_MIN, torch.zeros_like(nd), nd)
    temp = 0.5 / (nd + _EPSI).double() * nd.double() * scale.double()
    mean = (temp * in_exp.double() * (1.0 / sigma.double())).float()
    unc = (temp * ((in_exp2 / sigma).double() - 1.0 / sig_c.double())).float()
    return mean, unc


def _box_delta(o: Tensor, truth: Tensor, anchor: Tensor, i: Tensor, j: Tensor, scale: Tensor,
               normalizer: Tensor, g: _Grid, t: GaussianYoloTraining) -> tuple[Tensor, Tensor]:
    """delta_gaussian_yolo_box for K assignments (o: their (K, 8) box entries, truth (K, 4),
    anchor (K, 2)): the (K, 8) deltas to add and the (K,) IoU Darknet reports (GIoU for the
    non-mse losses)."""
    pred = torch.stack(_pred_box(o[:, 0], o[:, 2], o[:, 4], o[:, 6], i, j, anchor[:, 0],
                                 anchor[:, 1], g), 1)
    reported = box_iou_kind(pred, truth, "giou" if t.iou_loss != "mse" else "iou")
    tx, ty, tw_, th_ = truth.unbind(1)
    if g.point == "left_top":
        tx, ty = tx - tw_ / 2, ty - th_ / 2
    elif g.point == "right_bottom":
        tx, ty = tx + tw_ / 2, ty + th_ / 2
    target = torch.stack((tx * g.lw - i, ty * g.lh - j,
                          ((tw_ * g.net_w) / anchor[:, 0]).double().log().float(),
                          ((th_ * g.net_h) / anchor[:, 1]).double().log().float()), 1)
    means, uncs = _gaussian_terms(target - o[:, 0::2], o[:, 1::2], scale[:, None])
    if t.iou_loss != "mse":
        size = pred[:, 2:]
        pred = torch.cat((pred[:, :2], torch.where(size == 0, torch.ones_like(size), size)), 1)
        dx, dy, dw, dh = dx_box_iou(pred, truth, t.iou_loss)
        if g.point == "left_top":
            dx, dy = dx - dw / 2, dy - dh / 2
        elif g.point == "right_bottom":
            dx, dy = dx + dw / 2, dy + dh / 2
        wh = (torch.stack((dw, dh), 1).double() * o[:, 4::2].double().exp()).float()
        means = torch.cat((torch.stack((dx, dy), 1), wh), 1)
    out = torch.stack((means * normalizer[:, None], uncs * t.uc_normalizer), 2).reshape(-1, 8)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    if t.max_delta != FLT_MAX:
        out = out.clamp(-t.max_delta, t.max_delta)
    return out, reported


class _Classes:
    """delta_gaussian_yolo_class for rows of (K, classes) deltas and probabilities."""

    def __init__(self, t: GaussianYoloTraining, classes: int, device: torch.device) -> None:
        eps = np.float32(t.label_smooth_eps)
        self.y_pos = float(np.float32(np.float64(np.float32(1) - eps) + 0.5 * np.float64(eps)))
        self.y_neg = float(np.float32(0.5 * np.float64(eps)))
        self.classes = classes
        self.mult = (None if t.class_multipliers is None else
                     torch.tensor(t.class_multipliers, dtype=torch.float32, device=device))
        self.cls_normalizer = t.cls_normalizer

    def multiplier(self, cid: Tensor) -> Tensor:
        if self.mult is None:
            return torch.ones(cid.shape, dtype=torch.float32, device=cid.device)
        return self.mult[cid]

    def write(self, delta: Tensor, p: Tensor, cid: Tensor) -> Tensor:
        """The new class deltas: only the true class (times its multiplier) where the cell's
        class-0 delta is already non-zero, else all classes (true class times multiplier and
        cls_normalizer, only with counters_per_class)."""
        onehot = torch.nn.functional.one_hot(cid, self.classes).bool()
        full = torch.where(onehot, self.y_pos, self.y_neg) - p
        true_val = self.y_pos - p.gather(1, cid[:, None])
        if self.mult is not None:
            m = self.mult[cid][:, None]
            full = torch.where(onehot, full * (m * self.cls_normalizer), full)
            true_val = true_val * m
        partial = torch.where(onehot, true_val, delta)
        return torch.where(delta[:, :1] != 0, partial, full)


def _best(iou: Tensor) -> tuple[Tensor, Tensor]:
    """Darknet's `if (iou > best)` scan from best = 0 over the last dim: the best value (>= 0)
    and the first index reaching it (0 when none is above 0)."""
    idx = iou.argmax(-1)
    value = iou.gather(-1, idx[..., None])[..., 0]
    above = value > 0
    return torch.where(above, value, torch.zeros_like(value)), torch.where(
        above, idx, torch.zeros_like(idx))


def _edges(x: Tensor, y: Tensor, w: Tensor, h: Tensor) -> tuple[Tensor, ...]:
    """left, right, top, bottom and area, as box.c's overlap()/box_union() compute them."""
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2, w * h


def _iou_table(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    """box_iou of every pair of broadcast boxes given by :func:`_edges` (the same float32
    operations as box.c on each pair; the per-box parts are computed once). Clamping the
    overlaps at 0 gives box.c's 0 for boxes apart; I/U is then 0 wherever I is 0 except for
    0/0, which is box.c's 0 too."""
    w = torch.minimum(a[1], b[1]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    h = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[2], b[2])).clamp_(min=0)
    inter = w.mul_(h)
    union = (a[4] + b[4]).sub_(inter)
    return inter.div_(union).nan_to_num_(nan=0.0)


# --- the loss -------------------------------------------------------------------------------------

class GaussianYoloLoss:
    """Darknet's [Gaussian_yolo] forward in training (see the module doc).

    `backward_scale` is 1 (the CPU backward adds the delta as is); the GPU backward's factor
    `delta_normalizer` is applied by the Trainer (Trainer._gpu_delta_scale), as for [yolo].
    `last_stats` holds what Darknet prints for the last call as 0-d tensors: count, iou_sum,
    recall, recall75, cat_sum, obj_sum (sums over the truth assignments, Darknet divides them by
    count), anyobj_sum (over all cells), class_loss, iou_loss, uc_loss (per image)."""

    def __init__(self, o: GaussianYoloOptions, t: GaussianYoloTraining) -> None:
        self.opts = o
        self.training = t
        self.backward_scale = 1.0
        self.last_stats: dict[str, Tensor] = {}
        first: dict[int, int] = {}
        for k, n in enumerate(o.mask):
            first.setdefault(n, k)
        # int_index(mask, n): the first mask slot of each of the `num` anchors, or -1
        self._mask_of = [first.get(n, -1) for n in range(t.total)]
        missing = [(0.5, 0.5)] * max(0, t.total - len(o.anchors))  # Darknet's .5 biases
        self._all_anchors = [tuple(map(f32, a)) for a in (list(o.anchors) + missing)[:t.total]]
        self._anchors = [tuple(map(f32, o.anchors[n])) for n in o.mask]

    def __call__(self, output: Tensor, input: Tensor, targets, ctx: LossContext) -> LossOutput:
        with torch.no_grad():
            delta, cost = self._forward(output.detach(), targets, ctx)
        return LossOutput(delta.to(output.dtype), cost)

    def _forward(self, output: Tensor, targets, ctx: LossContext) -> tuple[Tensor, Tensor]:
        o_, t = self.opts, self.training
        n, c, lh, lw = output.shape
        a_n, ent = len(o_.mask), o_.entries
        check_detection_targets(targets, n, o_.classes)
        dev = output.device
        g = _Grid(lw, lh, ctx.net_w, ctx.net_h, o_.yolo_point)
        out = output.float().reshape(n, a_n, ent, lh, lw)  # Darknet's [image][anchor][entry][j][i]
        delta = torch.zeros_like(out)
        touched = torch.zeros(n, a_n, lh, lw, dtype=torch.bool, device=dev)
        truth, valid = truth_slots(targets, t.max_boxes, dev)
        cls = _Classes(t, o_.classes, dev)
        self._cells(out, delta, touched, truth, valid, g, cls)
        stats = self._truths(out, delta, touched, truth, valid, g, cls)
        # averages_gaussian_yolo_deltas: only cells written above can have positive class deltas
        b, a, j, i = touched.nonzero(as_tuple=True)
        box = delta[b, a, :_OBJ, j, i]
        pos = (delta[b, a, _OBJ + 1:, j, i] > 0).sum(1, keepdim=True)
        box = box / torch.where(pos > 0, pos, torch.ones_like(pos)).float()
        delta[b, a, :_OBJ, j, i] = box
        # cost = ||delta||^2: objectness everywhere, the other entries only in written cells
        box_sq = box.double().square().sum(0)  # per box entry
        class_sq = delta[b, a, _OBJ + 1:, j, i].double().square().sum()
        obj_sq = delta[:, :, _OBJ].double().square().sum()
        cost = box_sq.sum() + class_sq + obj_sq
        # Darknet's printed split: "iou_loss" = entries 0-3 (x, y and their sigmas), "uc_loss" =
        # entries 4-7 (w, h and theirs), "class_loss" = the rest (objectness included)
        stats.update(anyobj_sum=out[:, :, _OBJ].double().sum(), class_loss=(class_sq + obj_sq) / n,
                     iou_loss=box_sq[:4].sum() / n, uc_loss=box_sq[4:].sum() / n)
        self.last_stats = stats
        return delta.reshape(n, c, lh, lw), cost.float()

    def _cells(self, out: Tensor, delta: Tensor, touched: Tensor, truth: Tensor, valid: Tensor,
               g: _Grid, cls: _Classes) -> None:
        """Pass 1: every cell and anchor against every truth of its image."""
        t = self.training
        n, a_n = out.shape[:2]
        dev = out.device
        anchors = torch.tensor(self._anchors, dtype=torch.float32, device=dev)
        jj = torch.arange(g.lh, device=dev, dtype=torch.float32).view(g.lh, 1)
        ii = torch.arange(g.lw, device=dev, dtype=torch.float32)
        pred = _pred_box(out[:, :, 0], out[:, :, 2], out[:, :, 4], out[:, :, 6], ii, jj,
                         anchors[:, 0].view(a_n, 1, 1), anchors[:, 1].view(a_n, 1, 1), g)
        # slots Darknet does not read sit far outside the image: IoU 0, never "> best"
        far = torch.full_like(truth[..., 1], -10.0)
        tb = [torch.where(valid, truth[..., k], far) for k in range(1, 5)]
        iou = _iou_table([e[..., None] for e in _edges(*pred)],
                         [e.view(n, 1, 1, 1, -1) for e in _edges(*tb)])  # (n, a, h, w, T)
        best, best_t = _best(iou)
        # The class test (some probability > .25) does not depend on the truth, so the best
        # match is the best truth or none; it matters only where the best is above ignore_thresh.
        ignore = best > t.ignore_thresh
        idx = ignore.nonzero(as_tuple=True)
        b, a, j, i = idx
        if out.shape[2] > _OBJ + 1:
            ignore[idx] = out[b, a, _OBJ + 1:, j, i].amax(1) > 0.25
        else:  # classes=0: compare_gaussian_yolo_class never matches
            ignore.zero_()
        obj = out[:, :, _OBJ]
        d_obj = t.obj_normalizer * (0 - obj)
        if t.objectness_smooth:
            d_obj = torch.where(ignore, t.obj_normalizer * (best * best - obj), d_obj)
            self._class_rows(out, delta, touched, ignore, truth, best_t, cls)  # best_match_t
        else:
            d_obj = torch.where(ignore, torch.zeros_like(d_obj), d_obj)
        positive = best > t.truth_thresh
        if t.objectness_smooth:
            d_obj = torch.where(positive, t.obj_normalizer * (best * best - obj), d_obj)
        else:
            d_obj = torch.where(positive, t.obj_normalizer * (1 - obj), d_obj)
        delta[:, :, _OBJ] = d_obj
        idx = self._class_rows(out, delta, touched, positive, truth, best_t, cls)
        if idx is None:
            return
        b, a, j, i = idx
        k = truth[b, best_t[idx], 0].long()
        mult = cls.multiplier(k)
        if t.objectness_smooth:
            p = out[b, a, _OBJ + 1 + k, j, i]
            delta[b, a, _OBJ + 1 + k, j, i] = mult * (best[idx] * best[idx] - p)
        tr = truth[b, best_t[idx], 1:5]
        d, _ = _box_delta(out[b, a, :_OBJ, j, i], tr, anchors[a], i.float(), j.float(),
                          2 - tr[:, 2] * tr[:, 3], t.iou_normalizer * mult, g, t)
        delta[b, a, :_OBJ, j, i] += d

    @staticmethod
    def _class_rows(out: Tensor, delta: Tensor, touched: Tensor, where: Tensor, truth: Tensor,
                    t_index: Tensor, cls: _Classes) -> tuple[Tensor, ...] | None:
        """Class deltas of the cells in `where` toward truth slot `t_index` of their image (slot
        0 of an empty list is Darknet's zero-filled slot: class 0). Returns their indices."""
        idx = where.nonzero(as_tuple=True)
        if not idx[0].numel():
            return None
        b, a, j, i = idx
        cid = truth[b, t_index[idx], 0].long()
        delta[b, a, _OBJ + 1:, j, i] = cls.write(delta[b, a, _OBJ + 1:, j, i],
                                                 out[b, a, _OBJ + 1:, j, i], cid)
        touched[idx] = True
        return idx

    def _assignments(self, truth: Tensor, valid: Tensor, g: _Grid) -> dict[str, Tensor]:
        """Pass 2's (truth, anchor) pairs in Darknet's order: per image, per truth, the best
        anchor first, then the iou_thresh anchors by anchor number."""
        t = self.training
        dev = truth.device
        b, k = valid.nonzero(as_tuple=True)
        tr = truth[b, k]
        x, y, w, h = tr[:, 1], tr[:, 2], tr[:, 3], tr[:, 4]
        if g.point == "left_top":
            fx, fy = (x - w / 2) * g.lw, (y - h / 2) * g.lh
        elif g.point == "right_bottom":
            fx, fy = (x + w / 2) * g.lw, (y + h / 2) * g.lh
        else:
            fx, fy = x * g.lw, y * g.lh
        # Darknet clips only for left_top/right_bottom; x == 1 would index past the row there
        i = fx.clamp(0, g.lw - 1).long()
        j = fy.clamp(0, g.lh - 1).long()
        anchors = torch.tensor(self._all_anchors, dtype=torch.float32, device=dev)
        aw, ah = anchors[:, 0] / g.net_w, anchors[:, 1] / g.net_h
        # both boxes centred at 0: only the shapes count
        shape_box = torch.stack((torch.zeros_like(aw), torch.zeros_like(aw), aw, ah), -1)[None]
        truth_shift = torch.stack((torch.zeros_like(w), torch.zeros_like(w), w, h), -1)[:, None]
        best_n = _best(box_iou(shape_box, truth_shift))[1]  # (M,) over all num anchors
        mask_of = torch.tensor(self._mask_of, dtype=torch.long, device=dev)
        total = t.total
        pairs = [torch.arange(len(b), device=dev)[mask_of[best_n] >= 0]]
        anchor_n = [best_n[pairs[0]]]
        order = [torch.zeros_like(pairs[0])]
        if t.iou_thresh < 1:
            kind_iou = box_iou_kind(shape_box, truth_shift, t.iou_thresh_kind)
            others = torch.arange(total, device=dev)[None] != best_n[:, None]
            m, nn_ = ((mask_of[None] >= 0) & others & (kind_iou > t.iou_thresh)).nonzero(
                as_tuple=True)
            pairs.append(m)
            anchor_n.append(nn_)
            order.append(nn_ + 1)
        m, an, od = torch.cat(pairs), torch.cat(anchor_n), torch.cat(order)
        return dict(b=b[m], truth=tr[m], a=mask_of[an], i=i[m], j=j[m],
                    seq=k[m] * (total + 1) + od, anchor=anchors[an])

    def _truths(self, out: Tensor, delta: Tensor, touched: Tensor, truth: Tensor, valid: Tensor,
                g: _Grid, cls: _Classes) -> dict[str, Tensor]:
        """Pass 2: every truth's anchors, applied in rounds that keep Darknet's order."""
        t = self.training
        n, a_n = out.shape[:2]
        s = self._assignments(truth, valid, g)
        count = s["b"].numel()
        zero = torch.zeros((), dtype=torch.float64, device=out.device)
        stats = dict(count=torch.tensor(count), iou_sum=zero, recall=zero, recall75=zero,
                     cat_sum=zero, obj_sum=zero)
        if count == 0:
            return stats
        b, a, j, i = s["b"], s["a"], s["j"], s["i"]
        cid = s["truth"][:, 0].long()
        mult = cls.multiplier(cid)
        o = out[b, a, :, j, i]  # (K, entries)
        tr = s["truth"][:, 1:5]
        box, iou = _box_delta(o[:, :_OBJ], tr, s["anchor"], i.float(), j.float(),
                              2 - tr[:, 2] * tr[:, 3], t.iou_normalizer * mult, g, t)
        obj = mult * t.obj_normalizer * (1 - o[:, _OBJ])
        touched[b, a, j, i] = True
        # rank of each assignment among those of its cell, in Darknet's order
        slot = ((b * a_n + a) * g.lh + j) * g.lw + i
        perm = torch.argsort(slot * (int(s["seq"].max()) + 1) + s["seq"])
        sorted_slot = slot[perm]
        start = torch.ones_like(sorted_slot, dtype=torch.bool)
        start[1:] = sorted_slot[1:] != sorted_slot[:-1]
        pos = torch.arange(count, device=out.device)
        first = torch.where(start, pos, torch.zeros_like(pos)).cummax(0).values
        rank = torch.empty_like(pos)
        rank[perm] = pos - first
        rounds = int(rank.max()) + 1
        for r in range(rounds):
            sel = (rank == r).nonzero()[:, 0] if rounds > 1 else pos
            bs, as_, js, is_ = b[sel], a[sel], j[sel], i[sel]
            delta[bs, as_, :_OBJ, js, is_] += box[sel]
            delta[bs, as_, _OBJ, js, is_] = obj[sel]
            delta[bs, as_, _OBJ + 1:, js, is_] = cls.write(delta[bs, as_, _OBJ + 1:, js, is_],
                                                           o[sel, _OBJ + 1:], cid[sel])
        iou = iou.double()
        stats.update(iou_sum=iou.sum(), recall=(iou > .5).sum(), recall75=(iou > .75).sum(),
                     cat_sum=o.gather(1, (_OBJ + 1 + cid)[:, None]).double().sum(),
                     obj_sum=o[:, _OBJ].double().sum())
        return stats


@losses("Gaussian_yolo")
def gaussian_yolo_loss(spec: LayerSpec, opts: Options, network: Network) -> GaussianYoloLoss:
    return GaussianYoloLoss(spec.options, read_training_options(opts, spec.options.classes))
