"""The `[yolo]` loss: Darknet's `l.delta` and `l.cost` of forward_yolo_layer (yolo_layer.c).

Darknet does not differentiate a loss here: per mini-batch it writes a delta (target minus
output, scaled) for every cell, anchor and entry, and its backward adds that delta to the
previous layer's unchanged. This module reproduces that delta exactly, including its odd parts
(see DARKNET_TRAINING_NOTES.md section 6 of the oracle): the IoU losses use Darknet's
hand-written `dx_box_iou`, `cls_normalizer` acts only with `counters_per_class`, later truths
in the same cell overwrite objectness/class deltas and add to box deltas, and the cost of the
IoU losses is `iou_normalizer * mean(1 - IoU or GIoU) + obj_normalizer * |delta without boxes|²`.

Layout: the work runs on a `(cells, entries)` view, cell = ((image, anchor), row, column), so
the per-cell part is a handful of vectorised tensor ops and every truth's writes are index
operations. Darknet's sequential truth loop is reproduced in "rounds": a round holds at most
one assignment per cell, in Darknet's order, so overwrite/accumulate semantics stay exact while
each round is vectorised (there are as many rounds as the most truths that share one cell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ...errors import CfgError
from ...graph import LayerSpec, Network
from ...options import Options
from ..sections import section_options
from ._options import FLT_MAX, choice, classes_multipliers, f32
from .base import LossContext, LossOutput, Targets, losses
from .boxes import IOU_KINDS, box_giou, box_iou, box_iou_kind, dx_box_iou
from .targets import check_detection_targets, truth_slots

__all__ = ["YoloLossOptions", "YoloLoss", "YoloResult", "read_yolo_loss_options"]

_DETECTION_HEADS = ("yolo", "Gaussian_yolo", "region")  # train_detector sizes truths by the last
_IOU_CELLS_PER_CHUNK = 1 << 22  # cells x truths compared at once in the per-cell search


@dataclass(frozen=True)
class YoloLossOptions:
    """The training options of one [yolo] section, as parse_yolo (parser.c:448-550) reads them."""

    classes: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # all of them (num=, or more: see anchor_pairs)
    total: int  # num=: the anchors a truth's best anchor is chosen from
    max_boxes: int = 200
    iou_loss: str = "mse"  # mse, iou, giou, diou, ciou
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0  # only the CUDA build's backward uses it
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: str = "iou"
    new_coords: bool = False
    label_smooth_eps: float = 0.0
    focal_loss: bool = False
    objectness_smooth: bool = False
    max_delta: float = FLT_MAX
    classes_multipliers: tuple[float, ...] | None = None  # from counters_per_class=
    show_details: int = 1


def _check_truth_layout(spec: LayerSpec, opts: Options, network: Network, max_boxes: int) -> None:
    """Darknet lays out every image's truths with the `max=` of the last detection layer
    (detector.c:106-143) and each layer reads them with its own `max=`; a different value makes
    Darknet read other images' boxes, which darkcfg does not reproduce."""
    _, layer_opts = section_options(network)
    last = max((s.index for s in network.layers if s.type in _DETECTION_HEADS), default=None)
    if last is None or last == spec.index:
        return
    other = layer_opts[last].int("max", 200)
    if other != max_boxes:
        head = network.layers[last]
        raise opts.error(f"max={max_boxes} differs from max={other} of the last detection layer "
                         f"([{head.header}] #{last}), which sizes Darknet's truth buffer: Darknet "
                         f"would read other images' boxes here; darkcfg does not train that",
                         "max" if opts.has("max") else None)


def read_yolo_loss_options(spec: LayerSpec, opts: Options, network: Network) -> YoloLossOptions:
    """Every option of parse_yolo that changes l.delta or l.cost, with Darknet's defaults.

    Raises CfgError for `map=` (a class-map file Darknet reads relative to its working
    directory), `counters_per_class=` with the wrong count, and a `max=` that differs from the
    last detection layer's. Options that only matter to data loading, inference or tracking
    (jitter, resize, random, nms_kind, beta_nms, track_*, embedding_layer, ...) do not change
    the delta: Darknet's [contrastive] layer reads the embedding, not this layer's delta."""
    o = spec.options
    if opts.has("map"):
        raise opts.error("map= (a class-map file, yolo9000 style) is not supported in training",
                         "map")
    max_boxes = opts.int("max", 200)
    if max_boxes < 0:
        raise opts.error(f"max={max_boxes} must not be negative", "max")
    _check_truth_layout(spec, opts, network, max_boxes)
    max_delta = f32(opts.float("max_delta", FLT_MAX))
    return YoloLossOptions(
        classes=o.classes, mask=tuple(o.mask), anchors=tuple(o.anchors),
        total=opts.int("num", 1), max_boxes=max_boxes,
        iou_loss=choice(opts, "iou_loss", "mse", IOU_KINDS, "iou"),
        iou_normalizer=f32(opts.float("iou_normalizer", 0.75)),
        obj_normalizer=f32(opts.float("obj_normalizer", 1.0)),
        cls_normalizer=f32(opts.float("cls_normalizer", 1.0)),
        delta_normalizer=f32(opts.float("delta_normalizer", 1.0)),
        ignore_thresh=f32(opts.float("ignore_thresh", 0.5)),
        truth_thresh=f32(opts.float("truth_thresh", 1.0)),
        iou_thresh=f32(opts.float("iou_thresh", 1.0)),
        iou_thresh_kind=choice(opts, "iou_thresh_kind", "iou", IOU_KINDS[1:], "iou"),
        new_coords=bool(o.new_coords),
        label_smooth_eps=f32(opts.float("label_smooth_eps", 0.0)),
        focal_loss=bool(opts.int("focal_loss", 0)),
        objectness_smooth=bool(opts.int("objectness_smooth", 0)),
        max_delta=max_delta,
        classes_multipliers=classes_multipliers(opts, o.classes, max_delta),
        show_details=opts.int("show_details", 1))


@dataclass
class YoloResult:
    """l.delta and l.cost, plus what Darknet prints about them (for checks and logging)."""

    delta: Tensor  # (N, C, H, W), the layer's output layout
    cost: Tensor  # 0-d float64: l.cost[0]
    count: int  # positive assignments of the truth loop ("count:" in Darknet's line)
    iou_sum: Tensor  # sum of their IoU ("Avg (IOU: ...)" = iou_sum / max(count, 1))
    class_loss: Tensor  # obj_normalizer * |delta without the 4 box entries|²


class _Grid:
    """Per-call constants of the head: the map size, the network size and the anchor tensors."""

    def __init__(self, o: YoloLossOptions, shape: torch.Size, ctx: LossContext,
                 device: torch.device) -> None:
        self.n, _, self.h, self.w = shape
        self.a = len(o.mask)
        self.net_w, self.net_h = ctx.net_w, ctx.net_h
        self.biases = torch.tensor(o.anchors, dtype=torch.float32, device=device)  # (num, 2)
        self.mask = torch.tensor(o.mask, dtype=torch.long, device=device)
        # int_index(l.mask, n): the first mask position holding anchor n, or -1
        pos = [-1] * o.total
        for k, m in reversed(list(enumerate(o.mask))):
            if m < o.total:
                pos[m] = k
        self.mask_pos = torch.tensor(pos, dtype=torch.long, device=device)
        hw = self.h * self.w
        cells = torch.arange(self.n * self.a * hw, device=device)
        self.cell_i = (cells % self.w).to(torch.float32)
        self.cell_j = ((cells % hw) // self.w).to(torch.float32)
        self.cell_anchor = self.biases[self.mask][(cells // hw) % self.a]

    def _index(self, planes: Tensor, cells: Tensor, entries: int | slice) -> Tensor:
        """Flat indices of some entries of some cells of a (image*anchor, entry, row*column)
        tensor: (K,) for one entry, (K, E) for a slice."""
        hw = self.h * self.w
        e = planes.shape[1]
        base = (cells // hw) * (e * hw) + cells % hw
        if isinstance(entries, int):
            return base + entries * hw
        ent = torch.arange(e, device=cells.device)[entries]
        return base[:, None] + ent * hw

    def at(self, planes: Tensor, cells: Tensor, entries: int | slice) -> Tensor:
        """Entries of some cells: (K,) or (K, E)."""
        idx = self._index(planes, cells, entries)
        return planes.reshape(-1).index_select(0, idx.reshape(-1)).view(idx.shape)

    def put(self, planes: Tensor, cells: Tensor, entries: int | slice, value: Tensor) -> None:
        """Write entries of distinct cells (the inverse of :meth:`at`); `planes` is contiguous."""
        planes.view(-1)[self._index(planes, cells, entries)] = value


def _edges(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Left, right, top, bottom and area of [x, y, w, h] boxes, as box.c's overlap() forms them."""
    x, y, w, h = b.unbind(-1)
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2, w * h


class YoloLoss:
    """Darknet's [yolo] forward in training mode: `(output, input, targets, ctx) -> (delta, cost)`.

    `backward_scale` is 1: the CPU build adds l.delta to the previous layer as is. The CUDA
    build's backward multiplies it by [net] loss_scale * delta_normalizer= (yolo_layer.c:1225);
    the Trainer applies that factor (Trainer._gpu_delta_scale), so l.delta here is the same for
    both builds (forward_yolo_layer_gpu runs this same CPU code on the pulled output)."""

    def __init__(self, o: YoloLossOptions) -> None:
        self.o = o
        self.backward_scale = 1.0
        self._grid_key: tuple | None = None
        self._grid_cache: _Grid | None = None
        eps = np.float32(o.label_smooth_eps)
        if eps:
            # y_true*(1 - eps) + 0.5*eps, the product in float, the sum in double, stored float
            self.y_pos = float(np.float32(np.float64(np.float32(1 - eps)) + 0.5 * np.float64(eps)))
            self.y_neg = float(np.float32(0.5 * np.float64(eps)))
        else:
            self.y_pos, self.y_neg = 1.0, 0.0

    def _grid(self, shape: torch.Size, ctx: LossContext, device: torch.device) -> _Grid:
        key = (tuple(shape), ctx.net_w, ctx.net_h, str(device))
        if self._grid_key != key:  # one entry: a trainer calls with one size until it resizes
            self._grid_cache, self._grid_key = _Grid(self.o, shape, ctx, device), key
        return self._grid_cache

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput:
        r = self.compute(output, targets, ctx)
        return LossOutput(r.delta, r.cost)

    # -- the whole forward ----------------------------------------------------------------------
    @torch.no_grad()
    def compute(self, output: Tensor, targets: Targets, ctx: LossContext) -> YoloResult:
        o = self.o
        n, c, h, w = output.shape
        a, e = len(o.mask), o.classes + 5
        if c != a * e:
            raise CfgError(f"[yolo] output has {c} channels, expected {a * e}")
        check_detection_targets(targets, n, o.classes)
        g = self._grid(output.shape, ctx, output.device)
        truth, valid = truth_slots(targets, o.max_boxes, output.device)
        # planes: (image*anchor, entry, row*column); a cell is (image*anchor)*h*w + row*w + column
        p = output.detach().to(torch.float32).contiguous().view(n * a, e, h * w)
        d = torch.zeros_like(p)
        has_truth = valid.any(1).repeat_interleave(a)[:, None]
        # process_batch zeroes a non-finite objectness of an image with truths (yolo_layer.c:437)
        obj = torch.where(has_truth & ~torch.isfinite(p[:, 4]), 0, p[:, 4])

        best_iou = self._best_iou(p, truth, valid, g)
        d[:, 4] = self._objectness(p, obj, has_truth, best_iou, g)
        # truth_thresh=1 (the default) is not "never": the float32 IoU of equal boxes can be
        # 1 + an ulp, as in Darknet
        tt_cells = self._truth_thresh(p, obj, d, truth, valid, best_iou, g)
        # Only the cells a truth reaches get box or class deltas: the truth loop, the averaging
        # and the cost work on their rows alone, written back once.
        count, iou_sum, loss_sum, cells, rows = self._truth_deltas(p, obj, d, truth, valid, g,
                                                                   tt_cells)
        if o.iou_thresh < 1:
            self._average_boxes(rows)
        g.put(d, cells, slice(None), rows)

        rows = rows.double()
        obj_sq = d[:, 4].double().square().sum()
        cls_sq = rows[:, 5:].square().sum()
        total = rows[:, :4].square().sum() + obj_sq + cls_sq
        class_loss = o.obj_normalizer * (obj_sq + cls_sq)
        if o.show_details == 0 or o.iou_loss == "mse":
            cost = total
        else:
            cost = o.iou_normalizer * loss_sum / max(count, 1) + class_loss
        return YoloResult(d.view(n, c, h, w).to(output.dtype), cost, count, iou_sum, class_loss)

    # -- step 1: every cell and anchor ----------------------------------------------------------
    def _decode(self, raw: Tensor, i: Tensor, j: Tensor, anchor: Tensor, g: _Grid) -> Tensor:
        """get_yolo_box(): (K, 4) [x, y, w, h] relative to the image from the raw x, y, w, h."""
        x = (i + raw[:, 0]) / g.w
        y = (j + raw[:, 1]) / g.h
        if self.o.new_coords:
            bw = raw[:, 2] * raw[:, 2] * 4 * anchor[:, 0] / g.net_w
            bh = raw[:, 3] * raw[:, 3] * 4 * anchor[:, 1] / g.net_h
        else:  # exp() and the products in double, stored as float
            bw = (torch.exp(raw[:, 2].double()) * anchor[:, 0].double() / g.net_w).float()
            bh = (torch.exp(raw[:, 3].double()) * anchor[:, 1].double() / g.net_h).float()
        return torch.stack((x, y, bw, bh), 1)

    def _cell_boxes(self, p: Tensor, g: _Grid) -> Tensor:
        """get_yolo_box() of every cell: (N, cells of one image, 4)."""
        raw = p[:, :4].transpose(1, 2).reshape(-1, 4)
        return self._decode(raw, g.cell_i, g.cell_j, g.cell_anchor, g).view(g.n, -1, 4)

    def _best_iou(self, p: Tensor, truth: Tensor, valid: Tensor, g: _Grid) -> Tensor:
        """Per cell: the best IoU with any truth of its image, (N*A, H*W).

        box_iou() over truths x cells, on precomputed edges (the same float values Darknet's
        overlap() computes per pair), in place, with the truths on the outer axis so that the
        maximum is an elementwise one; this is the only step that grows with cells x truths."""
        pred = self._cell_boxes(p, g)[:, None]  # (N, 1, M, 4)
        # slots Darknet does not read: a unit box far outside the image, IoU 0 with every cell
        far = torch.tensor([-10.0, -10.0, 1.0, 1.0], device=p.device)
        boxes = torch.where(valid[..., None], truth[..., 1:], far)[:, :, None]  # (N, T, 1, 4)
        p_l, p_r, p_t, p_b, p_area = _edges(pred)
        t_l, t_r, t_t, t_b, t_area = _edges(boxes)
        cells, slots = pred.shape[2], boxes.shape[1]
        step = max(1, _IOU_CELLS_PER_CHUNK // max(1, g.n * cells))
        best = torch.zeros(g.n, cells, device=p.device)
        for s in range(0, slots, step):
            sl = slice(s, s + step)
            inter = torch.minimum(p_r, t_r[:, sl])
            inter.sub_(torch.maximum(p_l, t_l[:, sl])).clamp_(min=0)
            ih = torch.minimum(p_b, t_b[:, sl])
            ih.sub_(torch.maximum(p_t, t_t[:, sl])).clamp_(min=0)
            inter.mul_(ih)
            union = p_area + t_area[:, sl]
            inter.div_(union.sub_(inter))
            best = torch.maximum(best, inter.amax(1))
        return best.view(g.n * g.a, -1)

    def _objectness(self, p: Tensor, obj: Tensor, has_truth: Tensor, best_iou: Tensor,
                    g: _Grid) -> Tensor:
        """Objectness delta of every cell: toward 0 unless the cell overlaps a truth (453-462)."""
        o = self.o
        d_obj = o.obj_normalizer * (0 - obj)
        # compare_yolo_class (any class probability > .25, whatever the truth's class) only
        # matters where the IoU passes ignore_thresh: read the classes of those cells alone
        near = (has_truth & (best_iou > o.ignore_thresh)).view(-1).nonzero()[:, 0]
        if o.classes == 0 or near.numel() == 0:
            return d_obj
        near = near[(g.at(p, near, slice(5, None)) > 0.25).any(1)]
        flat = d_obj.view(-1)
        if o.objectness_smooth:
            smooth = o.obj_normalizer * (best_iou.view(-1)[near] - obj.view(-1)[near])
            flat[near] = torch.maximum(flat[near], smooth)
        else:
            flat[near] = 0
        return d_obj

    def _truth_thresh(self, p: Tensor, obj: Tensor, d: Tensor, truth: Tensor, valid: Tensor,
                      best_iou: Tensor, g: _Grid) -> Tensor:
        """Cells whose best IoU exceeds truth_thresh become positives of that truth (488-503).
        Returns those cells."""
        o = self.o
        cells = (best_iou.reshape(-1) > o.truth_thresh).nonzero()[:, 0]
        if cells.numel() == 0:
            return cells
        hw = g.h * g.w
        img = cells // (g.a * hw)
        pred = self._decode(g.at(p, cells, slice(0, 4)), g.cell_i[cells], g.cell_j[cells],
                            g.cell_anchor[cells], g)
        iou = box_iou(pred[:, None], truth[img, :, 1:])
        iou = torch.where(valid[img] & ~torch.isnan(iou), iou, 0)
        rows = truth[img, iou.argmax(1)]  # the first truth with the best IoU
        cls = rows[:, 0].long()
        mult = self._multipliers(cls)
        iou = best_iou.reshape(-1)[cells]
        iou2 = iou * iou
        target = iou2 if o.objectness_smooth else 1
        g.put(d, cells, 4, o.obj_normalizer * (target - obj.reshape(-1)[cells]))
        prob = g.at(p, cells, slice(5, None))
        new = self._class_rows(prob, cls, torch.zeros_like(prob))
        if o.objectness_smooth:
            k = torch.arange(len(cells), device=p.device)
            new[k, cls] = mult * (iou2 - prob[k, cls])
        g.put(d, cells, slice(5, None), new)
        anchors = g.mask[(cells // hw) % g.a]
        box, _, _ = self._box_deltas(g.at(p, cells, slice(0, 4)), (cells % hw) % g.w,
                                     (cells % hw) // g.w, anchors, rows[:, 1:],
                                     o.iou_normalizer * mult, g)
        g.put(d, cells, slice(0, 4), box)  # the first box delta of these cells
        return cells

    # -- step 2: every truth --------------------------------------------------------------------
    def _truth_deltas(self, p: Tensor, obj: Tensor, d: Tensor, truth: Tensor, valid: Tensor,
                      g: _Grid, earlier: Tensor) -> tuple[int, Tensor, Tensor, Tensor, Tensor]:
        """Box, objectness and class deltas of each truth's best anchor (and, with iou_thresh,
        of every other mask anchor close enough), in Darknet's order (506-636).

        Works on the rows of the cells concerned (and of `earlier` cells, the truth_thresh
        ones); returns the count, the IoU sum, the sum of (1 - IoU) or (1 - GIoU) for the
        cost, those cells and their updated rows (to be written back)."""
        o = self.o
        img, _ = valid.nonzero(as_tuple=True)  # (image, slot) in Darknet's order
        rows = truth[valid]
        zero = torch.zeros((), dtype=torch.float64, device=p.device)
        k, anchor = self._assignments(rows, g)
        rows, img = rows[k], img[k]
        cls = rows[:, 0].long()
        i = (rows[:, 1] * g.w).long().clamp_(max=g.w - 1)  # x == 1 would index the next row
        j = (rows[:, 2] * g.h).long().clamp_(max=g.h - 1)
        cell = ((img * g.a + g.mask_pos[anchor]) * g.h + j) * g.w + i
        cells, inv = torch.unique(torch.cat((earlier, cell)), return_inverse=True)
        inv = inv[len(earlier):]
        loc_d = g.at(d, cells, slice(None))
        if k.numel() == 0:
            return 0, zero, zero, cells, loc_d
        loc_p = g.at(p, cells, slice(None))
        mult = self._multipliers(cls)
        box, iou, giou = self._box_deltas(loc_p[inv, :4], i, j, anchor, rows[:, 1:],
                                          o.iou_normalizer * mult, g)
        obj_val = mult * o.obj_normalizer * (1 - obj.reshape(-1)[cell])
        for sel in self._rounds(inv):
            u = inv[sel]
            loc_d[u, :4] += box[sel]
            if o.objectness_smooth:
                cur = loc_d[u, 4]
                loc_d[u, 4] = torch.where(cur == 0, obj_val[sel], cur)
            else:
                loc_d[u, 4] = obj_val[sel]
            loc_d[u, 5:] = self._class_rows(loc_p[u, 5:], cls[sel], loc_d[u, 5:])
        lost = 1 - (giou if o.iou_loss == "giou" else iou)
        return int(k.numel()), iou.double().sum(), lost.double().sum(), cells, loc_d

    def _assignments(self, rows: Tensor, g: _Grid) -> tuple[Tensor, Tensor]:
        """(truth row, anchor) pairs in Darknet's order: per truth its best anchor over all num=
        anchors if the mask holds it, then the other mask anchors whose shape IoU with the truth
        exceeds iou_thresh (by iou_thresh_kind), by anchor index."""
        o = self.o
        shapes = torch.zeros(rows.shape[0], 1, 4, device=rows.device)
        shapes[:, 0, 2:] = rows[:, 3:]
        anchors = torch.zeros(1, o.total, 4, device=rows.device)
        anchors[0, :, 2] = g.biases[:o.total, 0] / g.net_w
        anchors[0, :, 3] = g.biases[:o.total, 1] / g.net_h
        iou = box_iou(anchors, shapes).nan_to_num(0.0)  # (K, total)
        best_n = iou.argmax(1)  # first of equal maxima; all 0 -> anchor 0, like Darknet
        in_mask = g.mask_pos >= 0
        cand = torch.zeros(rows.shape[0], 1 + o.total, dtype=torch.bool, device=rows.device)
        cand[:, 0] = in_mask[best_n]
        if o.iou_thresh < 1:
            kind_iou = box_iou_kind(anchors, shapes, o.iou_thresh_kind)
            others = torch.arange(o.total, device=rows.device) != best_n[:, None]
            cand[:, 1:] = in_mask & others & (kind_iou > o.iou_thresh)
        k, slot = cand.nonzero(as_tuple=True)  # row-major: Darknet's order
        anchor = torch.where(slot == 0, best_n[k], slot - 1)
        return k, anchor

    @staticmethod
    def _rounds(cell: Tensor) -> list[Tensor]:
        """Index sets in order, each holding at most one assignment per cell: the r-th
        assignment of every cell is in round r."""
        if cell.numel() == 0:
            return []
        order = torch.sort(cell, stable=True).indices
        sorted_cells = cell[order]
        start = torch.ones_like(sorted_cells, dtype=torch.bool)
        start[1:] = sorted_cells[1:] != sorted_cells[:-1]
        pos = torch.arange(len(cell), device=cell.device)
        first = torch.cummax(torch.where(start, pos, 0), 0).values
        rank = torch.empty_like(cell)
        rank[order] = pos - first
        rounds = int(rank.max()) + 1
        if rounds == 1:
            return [pos]
        return [(rank == r).nonzero()[:, 0] for r in range(rounds)]

    @staticmethod
    def _average_boxes(rows: Tensor) -> None:
        """averages_yolo_deltas (291-306): with iou_thresh, every cell with an objectness delta
        divides its box deltas by its number of positive class deltas (only the cells a truth
        reached have any)."""
        count = (rows[:, 5:] > 0).sum(1)
        div = torch.where((rows[:, 4] != 0) & (count > 0), count, 1).to(rows.dtype)
        rows[:, :4] /= div[:, None]

    # -- step 3: box deltas ---------------------------------------------------------------------
    def _box_deltas(self, raw: Tensor, i: Tensor, j: Tensor, anchor: Tensor, truth: Tensor,
                    normalizer: Tensor, g: _Grid) -> tuple[Tensor, Tensor, Tensor]:
        """delta_yolo_box (173-289) for K cells: the delta to add, the IoU and the GIoU."""
        o = self.o
        bias = g.biases[anchor]
        pred = self._decode(raw, i.to(torch.float32), j.to(torch.float32), bias, g)
        iou = box_iou(pred, truth)
        giou = box_giou(pred, truth) if o.iou_loss == "giou" else iou
        pred = torch.where(pred == 0, torch.ones_like(pred), pred)  # only w, h can be 0 here
        tx, ty, tw, th = truth.unbind(1)
        if o.iou_loss == "mse":
            t_x = tx * g.w - i
            t_y = ty * g.h - j
            if o.new_coords:
                t_w = torch.sqrt((tw * g.net_w / (4 * bias[:, 0])).double()).float()
                t_h = torch.sqrt((th * g.net_h / (4 * bias[:, 1])).double()).float()
            else:
                t_w = torch.log((tw * g.net_w / bias[:, 0]).double()).float()
                t_h = torch.log((th * g.net_h / bias[:, 1]).double()).float()
            scale = (2 - tw * th)[:, None]
            target = torch.stack((t_x, t_y, t_w, t_h), 1)
            return scale * (target - raw) * normalizer[:, None], iou, giou
        grad = dx_box_iou(pred, truth, o.iou_loss)
        dw, dh = grad.dw, grad.dh
        if not o.new_coords:
            dw = (dw.double() * torch.exp(raw[:, 2].double())).float()
            dh = (dh.double() * torch.exp(raw[:, 3].double())).float()
        out = torch.stack((grad.dx, grad.dy, dw, dh), 1) * normalizer[:, None]
        out = torch.where(torch.isfinite(out), out, 0)
        if o.max_delta != FLT_MAX:
            out = out.clamp(-o.max_delta, o.max_delta)
        return out, iou, giou

    # -- step 4: class deltas -------------------------------------------------------------------
    def _multipliers(self, cls: Tensor) -> Tensor:
        m = self.o.classes_multipliers
        if m is None:
            return torch.ones(cls.shape, device=cls.device)
        return torch.tensor(m, dtype=torch.float32, device=cls.device)[cls]

    def _class_rows(self, prob: Tensor, cls: Tensor, cur: Tensor) -> Tensor:
        """delta_yolo_class (308-354) for K cells: the new class deltas given the current ones.

        A cell whose entry for this class is already non-zero (assigned before) only gets that
        entry set to y - p (times the class multiplier); otherwise every class is written."""
        o = self.o
        k = torch.arange(len(cls), device=prob.device)
        onehot = torch.zeros_like(prob)
        onehot[k, cls] = 1
        pc = prob[k, cls]
        mult = self._multipliers(cls)
        cur_c = cur[k, cls]
        if o.focal_loss:
            pt = pc + 1e-15
            grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
            fresh = (onehot - prob) * (0.5 * grad)[:, None]
        else:
            y = torch.where(onehot.bool(), self.y_pos, self.y_neg)
            r = y - prob
            fresh = torch.where(torch.isfinite(r), r, cur)
            if o.classes_multipliers is not None:
                fresh[k, cls] = fresh[k, cls] * (mult * o.cls_normalizer)
        r = self.y_pos - pc
        again = torch.where(torch.isfinite(r), r, cur_c)
        if o.classes_multipliers is not None:
            again = again * mult
        repeat = cur.clone()
        repeat[k, cls] = again
        return torch.where((cur_c != 0)[:, None], repeat, fresh)


@losses("yolo")
def yolo_loss(spec: LayerSpec, opts: Options, network: Network) -> YoloLoss:
    return YoloLoss(read_yolo_loss_options(spec, opts, network))
