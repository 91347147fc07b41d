"""[detection] (yolov1): Darknet's l.delta and l.cost (detection_layer.c forward_detection_layer).

The layer's output is flat per image: `side*side*classes` class scores, `side*side*num`
confidences, then `side*side*num` boxes of `coords` values (x, y relative to the cell, w, h, or
their square roots with sqrt=1). Its truth is a per-cell grid built as data.c's
fill_truth_region builds it: boxes in order, those with w or h < .001 skipped, the first box
falling in a cell wins, x and y relative to that cell. Per image and cell:

* every confidence: `noobject_scale*(0 - p)`;
* a cell with an object: class deltas `class_scale*(t - p)`; the responsible box is the one with
  the best IoU with the truth, or, when every IoU is 0, the smallest RMSE below 20 (none: Darknet
  uses index -1, i.e. the entries just before this cell's first box and confidence, which are
  the previous cell's; reproduced, except that a write before the whole buffer raises); `forced=1`
  picks box 1 for truths with w*h < .1, else box 0; `random=1` picks `rand() % num` while
  seen < 64000. Its confidence gets `object_scale*(1 - p)` (rescore: `(iou - p)`), its box
  `coord_scale*(t - p)` (sqrt: sqrt(t) for w, h).

random=1 is not reproducible in Darknet (rand() seeded with the time); here the draws come from
torch's generator (`DetectionLoss.generator`, or torch's default CPU generator when None), one
per object cell in Darknet's order (image, then cell), so `torch.manual_seed` fixes them.
A box at x == 1 or y == 1 lands where Darknet's index arithmetic puts it (column `side` is the
next row's first cell); past the last cell (Darknet writes into the next image's truth) it is
dropped, as are boxes at x == y == 0 (correct_boxes marks them invalid and Darknet then indexes
far outside the grid). Cost = ||delta||^2, as Darknet overwrites its running sum with that.
Darknet's GPU build runs this same forward on the CPU and adds the delta back the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import CfgError
from ...graph import LayerSpec, Network
from ...options import Options
from ...sections.heads import DetectionOptions
from ._darknet_box import box_iou, box_rmse, float32, squared_norm
from .base import LossContext, LossOutput, Targets, losses
from .targets import PADDING_CLASS, check_detection_targets

__all__ = ["DetectionLoss", "DetectionStats", "TruthGrid", "truth_grid"]

RANDOM_SEEN = 64000  # random=1 picks the responsible box at random while seen < this
MIN_SIZE = 0.001  # fill_truth_region skips boxes with w or h below this
RMSE_START = 20.0  # forward_detection_layer's initial best_rmse
FORCED_AREA = 0.1


@dataclass
class TruthGrid:
    """fill_truth_region's grid for a mini-batch: per image and cell whether a box is there, its
    class and its box (x, y relative to the cell, w, h)."""

    is_obj: Tensor  # (N, cells) bool
    cls: Tensor  # (N, cells) long, 0 where no object
    box: Tensor  # (N, cells, 4) float32

    def darknet(self, classes: int) -> Tensor:
        """Darknet's truth layout (N, cells*(5 + classes)): [is_obj, one-hot, x, y, w, h]."""
        n, cells = self.is_obj.shape
        onehot = torch.zeros(n, cells, classes, device=self.box.device)
        onehot.scatter_(2, self.cls[..., None], 1)
        onehot *= self.is_obj[..., None]
        return torch.cat((self.is_obj[..., None].float(), onehot, self.box), 2).reshape(n, -1)


def truth_grid(targets: Sequence[Tensor], side: int, device: torch.device) -> TruthGrid:
    """Build the grid from checked targets (rows [class, x, y, w, h]; class -1 rows are padding)."""
    n_img, cells = len(targets), side * side
    rows = [t[t[:, 0] != PADDING_CLASS].to(device=device, dtype=torch.float32) for t in targets]
    allr = torch.cat(rows) if rows else torch.zeros(0, 5, device=device)
    image = torch.cat([torch.full((r.shape[0],), b, device=device) for b, r in enumerate(rows)]
                      ) if rows else torch.zeros(0, dtype=torch.long, device=device)
    cls, x, y, w, h = allr.unbind(1)
    col, row = (x * side).long(), (y * side).long()
    cell = col + row * side
    keep = (w >= MIN_SIZE) & (h >= MIN_SIZE) & (cell < cells) & ~((x == 0) & (y == 0))
    key = (image * cells + cell)[keep]
    order = torch.arange(allr.shape[0], device=device)[keep]
    first = torch.full((n_img * cells,), allr.shape[0], dtype=torch.long, device=device)
    first.scatter_reduce_(0, key, order, "amin")
    taken = first < allr.shape[0]
    src = first[taken]
    is_obj = taken.view(n_img, cells)
    cls_grid = torch.zeros(n_img * cells, dtype=torch.long, device=device)
    cls_grid[taken] = cls[src].long()
    box = torch.zeros(n_img * cells, 4, device=device)
    box[taken] = torch.stack((x[src] * side - col[src], y[src] * side - row[src],
                              w[src], h[src]), 1)
    return TruthGrid(is_obj, cls_grid.view(n_img, cells), box.view(n_img, cells, 4))


@dataclass
class DetectionStats:
    """The sums behind Darknet's "Detection Avg IOU: ..." line (0-d tensors)."""

    iou: Tensor
    cat: Tensor
    allcat: Tensor
    obj: Tensor
    anyobj: Tensor
    count: int
    classes: int
    confidences: int

    def averages(self) -> dict[str, float]:
        def div(a: Tensor, n: int) -> float:
            return float(a) / n if n else float("nan")
        return {"avg_iou": div(self.iou, self.count), "pos_cat": div(self.cat, self.count),
                "all_cat": div(self.allcat, self.count * self.classes),
                "pos_obj": div(self.obj, self.count),
                "any_obj": div(self.anyobj, self.confidences), "count": self.count}


class DetectionLoss:
    """Darknet's [detection] delta (shaped like the layer's (N, inputs, 1, 1) output) and cost."""

    backward_scale = 1.0

    def __init__(self, o: DetectionOptions, opts: Options) -> None:
        if o.coords != 4:
            raise opts.error(f"training [detection] needs coords=4: Darknet's truth grid has 4 "
                             f"box values per cell, and with coords={o.coords} the layer reads it "
                             f"with the wrong stride", "coords")
        if o.forced and o.num < 2:
            raise opts.error(f"forced=1 needs num >= 2: Darknet then makes box 1 responsible for "
                             f"small truths, past the cell's num={o.num} boxes", "forced")
        self.opts = o
        self.coord_scale = float32(opts.float("coord_scale", 1.0))
        self.object_scale = float32(opts.float("object_scale", 1.0))
        self.noobject_scale = float32(opts.float("noobject_scale", 1.0))
        self.class_scale = float32(opts.float("class_scale", 1.0))
        self.random = opts.float("random", 0.0) != 0
        self.generator: torch.Generator | None = None  # random=1's draws (CPU generator)
        self.stats: DetectionStats | None = None  # of the last call

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput:
        with torch.no_grad():
            return self._loss(output, targets, ctx)

    def _loss(self, output: Tensor, targets: Targets, ctx: LossContext) -> LossOutput:
        o = self.opts
        n_img = output.shape[0]
        check_detection_targets(targets, n_img, o.classes)
        out = output.detach().float().reshape(n_img, -1)
        inputs, dev = out.shape[1], out.device
        cells, n, c = o.side * o.side, o.num, o.classes
        conf0, box0 = cells * c, cells * (c + n)  # where the confidences and boxes start
        grid = truth_grid(targets, o.side, dev)
        # Darknet's write order: image, cell, then confidences (0), classes (1), the responsible
        # confidence (2) and box (3): write k of cell i of image b comes at 4*(b*cells + i) + k
        conf = conf0 + torch.arange(cells * n, device=dev)
        images = torch.arange(n_img, device=dev)[:, None]
        gpos = [(images * inputs + conf).flatten()]
        vals = [(self.noobject_scale * (0 - out[:, conf0:box0])).flatten()]
        order = [(4 * (images * cells + torch.arange(cells * n, device=dev) // n)).flatten()]
        b, i = grid.is_obj.nonzero(as_tuple=True)  # the object cells in Darknet's order
        zero = out.new_zeros(())
        stats = DetectionStats(zero, zero, zero, zero, out[:, conf0:box0].sum(), 0, c,
                               n_img * cells * n)
        if b.numel():
            stats = self._objects(out, b, i, grid, ctx, (gpos, vals, order), stats)
        delta = torch.zeros(n_img * inputs, dtype=torch.float32, device=dev)
        gp, v, s = torch.cat(gpos), torch.cat(vals), torch.cat(order)
        last = torch.full((n_img * inputs,), -1, dtype=torch.long, device=dev)
        last.scatter_reduce_(0, gp, s, "amax")
        win = last[gp] == s  # Darknet's later write wins
        delta[gp[win]] = v[win]
        self.stats = stats
        cost = squared_norm(delta)
        return LossOutput(delta.view(output.shape), cost)

    def _objects(self, out: Tensor, b: Tensor, i: Tensor, grid: TruthGrid, ctx: LossContext,
                 writes: tuple[list[Tensor], list[Tensor], list[Tensor]],
                 stats: DetectionStats) -> DetectionStats:
        """Queue the writes of the object cells (images `b`, cells `i`): classes (order
        4*cell + 1), the responsible confidence (+2) and its box (+3)."""
        o = self.opts
        dev, flat = out.device, out.view(-1)
        cells, n, c = o.side * o.side, o.num, o.classes
        conf0, box0 = cells * c, cells * (c + n)
        m = i.numel()
        base = b * out.shape[1]
        cpos = base[:, None] + i[:, None] * c + torch.arange(c, device=dev)
        onehot = torch.zeros(m, c, device=dev)
        onehot[torch.arange(m, device=dev), grid.cls[b, i]] = 1
        pc = flat[cpos]
        tb = grid.box[b, i]
        best = self._responsible(flat, base + box0, i, tb, ctx)
        ppos = base + conf0 + i * n + best
        bpos = (base + box0 + (i * n + best) * o.coords)[:, None] + torch.arange(4, device=dev)
        p, pred = flat[ppos], flat[bpos]
        iou = box_iou(*self._as_box(pred), *self._truth_box(tb))
        if o.rescore:
            pval = self.object_scale * (iou - p)
        else:  # `1.` is a double in Darknet
            pval = (self.object_scale * (1.0 - p.double())).float()
        if bool((ppos < 0).any()) or bool((bpos < 0).any()):
            raise CfgError("no box of cell 0 of image 0 is responsible for its truth (every IoU "
                           "is 0 and every RMSE >= 20): Darknet then writes before the start of "
                           "its delta buffer")
        for k, (pos, val) in enumerate(((cpos, self.class_scale * (onehot - pc)),
                                        (ppos[:, None], pval[:, None]),
                                        (bpos, self._box_delta(tb, pred))), start=1):
            writes[0].append(pos.flatten())
            writes[1].append(val.flatten())
            writes[2].append((4 * (b * cells + i)[:, None] + k).expand_as(pos).flatten())
        return DetectionStats(iou.sum(), (pc * onehot).sum(), pc.sum(), p.sum(), stats.anyobj,
                              m, c, stats.confidences)

    # -- the responsible box --------------------------------------------------------------------
    def _responsible(self, flat: Tensor, boxes: Tensor, i: Tensor, tb: Tensor,
                     ctx: LossContext) -> Tensor:
        """Darknet's choice per object cell: best IoU, else smallest RMSE (< 20), else -1; then
        forced and random."""
        o = self.opts
        truth = self._truth_box(tb)
        m = i.numel()
        best = torch.full((m,), -1, dtype=torch.long, device=i.device)
        best_iou = torch.zeros(m, device=i.device)
        best_rmse = torch.full((m,), RMSE_START, device=i.device)
        k = torch.arange(4, device=i.device)
        for j in range(o.num):  # sequential: the IoU branch takes over once an IoU is > 0
            pred = self._as_box(flat[(boxes + (i * o.num + j) * o.coords)[:, None] + k])
            iou = box_iou(*pred, *truth)
            rmse = box_rmse(*pred, *truth)
            by_iou = (best_iou > 0) | (iou > 0)
            take = torch.where(by_iou, iou > best_iou, rmse < best_rmse)
            best = torch.where(take, j, best)
            best_iou = torch.where(by_iou & take, iou, best_iou)
            best_rmse = torch.where(~by_iou & take, rmse, best_rmse)
        if o.forced:
            best = torch.where(tb[:, 2] * tb[:, 3] < FORCED_AREA, 1, 0)
        if self.random and ctx.seen < RANDOM_SEEN:
            draws = torch.randint(0, o.num, (m,), generator=self.generator)
            best = draws.to(i.device)
        return best

    def _as_box(self, pred: Tensor) -> tuple[Tensor, ...]:
        """A predicted box as Darknet compares it: x, y / side, w, h squared with sqrt=1."""
        s = self.opts.side
        x, y, w, h = pred.unbind(1)
        if self.opts.sqrt:
            w, h = w * w, h * h
        return x / s, y / s, w, h

    def _truth_box(self, tb: Tensor) -> tuple[Tensor, ...]:
        s = self.opts.side
        return tb[:, 0] / s, tb[:, 1] / s, tb[:, 2], tb[:, 3]

    def _box_delta(self, tb: Tensor, pred: Tensor) -> Tensor:
        d = self.coord_scale * (tb - pred)
        if self.opts.sqrt:  # sqrt() in double, then the double difference stored as float
            wh = self.coord_scale * (tb[:, 2:].double().sqrt() - pred[:, 2:].double())
            d = torch.cat((d[:, :2], wh.float()), 1)
        return d


@losses("detection")
def detection_loss(spec: LayerSpec, opts: Options, network: Network) -> DetectionLoss:
    assert isinstance(spec.options, DetectionOptions)
    return DetectionLoss(spec.options, opts)
