"""[region] (yolov2, yolo9000): Darknet's l.delta and l.cost (region_layer.c forward_region_layer).

Darknet works on its transposed l.output ([cell][anchor][entry]); so does this loss, and the delta
is flattened back to the conv (N, C, H, W) order Darknet passes to the previous layer. Per image:

1. every cell and anchor: objectness delta `noobject_scale*(0 - obj)*obj*(1 - obj)`, 0 where the
   predicted box's best IoU with any truth is above `thresh` (classfix=-1: toward that IoU;
   classfix=1/2: that truth's class delta too); while `seen < 12800` the box entries get a pull
   (scale .01) toward the anchor centred in its cell.
2. every truth, in order: the anchor of its cell with the best shape IoU (the anchor's shape with
   bias_match=1, else the predicted shape) gets box, objectness (rescore: toward the IoU) and
   class deltas, *assigned*: a later truth on the same cell and anchor overwrites an earlier one
   (with a softmax tree only the groups on its class path).

Truths follow Darknet's slots: padding rows (class -1) dropped, at most `max=` boxes, reading
stops at the first x == 0. A truth with x == 1 (or y == 1) lands where Darknet's index arithmetic
puts it (column W is the next row's first cell); past the last cell Darknet writes into the next
image's delta, which this loss does not reproduce: such a truth is dropped from step 2.
Darknet's class-only boxes (x, y > 100000, a tree branch) cannot occur with normalised targets.
The delta and cost are the same in Darknet's CPU and GPU builds (the GPU runs this on the CPU);
only the GPU backward *assigns* the delta to the previous layer instead of adding it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import CfgError
from ...graph import LayerSpec, Network
from ...options import Options
from ...sections.heads import REGION_CLASSES, REGION_OBJECTNESS, RegionOptions
from ...tree import Tree, find_data_file
from ._darknet_box import best_iou, box_iou, edges, float32, squared_norm
from .base import LossContext, LossOutput, Targets, losses
from .targets import check_detection_targets, truth_slots

__all__ = ["RegionLoss", "RegionStats", "read_class_map"]

PRIOR_SEEN = 12800  # forward_region_layer pulls boxes toward the anchors while seen < this
PRIOR_SCALE = 0.01
FOCAL_ALPHA = 0.5
_ATOI = re.compile(r"\s*([+-]?\d+)")


@dataclass
class RegionStats:
    """The sums behind Darknet's "Region Avg IOU: ..." line (0-d tensors, no device sync)."""

    iou: Tensor
    recall: Tensor
    cat: Tensor
    obj: Tensor
    anyobj: Tensor
    count: int
    class_count: int
    cells: int

    def averages(self) -> dict[str, float]:
        """Darknet's printed averages (NaN where it divides by a zero count, as C prints nan)."""
        def div(a: Tensor, n: int) -> float:
            return float(a) / n if n else float("nan")
        return {"avg_iou": div(self.iou, self.count), "class": div(self.cat, self.class_count),
                "obj": div(self.obj, self.count), "no_obj": div(self.anyobj, self.cells),
                "recall": div(self.recall, self.count), "count": self.count}


def read_class_map(opts: Options, key: str = "map") -> tuple[int, ...] | None:
    """Darknet's read_map: one atoi() per line of the `map=` file (training remaps class ids)."""
    value = opts.str(key, None)
    if value is None:
        return None
    path, tried = find_data_file(value, opts.path)
    if path is None:
        raise opts.error(f"{key}={value}: class map file not found (tried {', '.join(tried)})",
                         key)
    lines = path.read_bytes().decode("latin-1").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(int(m.group(1)) if (m := _ATOI.match(s)) else 0 for s in lines)


class RegionLoss:
    """Darknet's [region] delta (conv layout) and cost for one mini-batch."""

    backward_scale = 1.0

    def __init__(self, o: RegionOptions, opts: Options) -> None:
        self.opts = o
        self.thresh = float32(opts.float("thresh", 0.5))
        self.coord_scale = float32(opts.float("coord_scale", 1.0))
        self.object_scale = float32(opts.float("object_scale", 1.0))
        self.noobject_scale = float32(opts.float("noobject_scale", 1.0))
        self.class_scale = float32(opts.float("class_scale", 1.0))
        self.focal_loss = bool(opts.int("focal_loss", 0))
        self.max_boxes = opts.int("max", 200)
        self.tree: Tree | None = o.tree
        # class entries a class delta covers: the tree's nodes, else `classes`
        self.class_entries = o.tree.n if o.tree is not None else o.classes
        if o.tree is not None and o.tree.n < o.classes:
            raise opts.error(f"training with tree={opts.str('tree', '')} needs as many tree nodes "
                             f"as classes={o.classes}: Darknet reads the tree at class ids up to "
                             f"{o.classes - 1} and the tree has {o.tree.n}", "tree")
        self.class_map = read_class_map(opts)
        if self.class_map is not None:
            bad = [(i, c) for i, c in enumerate(self.class_map)
                   if not 0 <= c < self.class_entries]
            if bad:
                line, c = bad[0]
                raise opts.error(f"map={o.map_file}: line {line + 1} maps to class {c}, outside "
                                 f"0..{self.class_entries - 1}", "map")
        self.stats: RegionStats | None = None  # of the last call
        self._paths: dict[int, tuple[Tensor, Tensor]] = {}

    def __call__(self, output: Tensor, input: Tensor, targets: Targets,
                 ctx: LossContext) -> LossOutput:
        with torch.no_grad():
            return self._loss(output, targets, ctx)

    # -- the whole forward ----------------------------------------------------------------------
    def _loss(self, output: Tensor, targets: Targets, ctx: LossContext) -> LossOutput:
        o = self.opts
        n_img, c, h, w = output.shape
        check_detection_targets(targets, n_img, o.classes)
        # Darknet's order: (N, cells, anchors, entries)
        out = output.detach().float().reshape(n_img, o.num, o.entries, h * w).permute(0, 3, 1, 2)
        truth, valid = truth_slots(targets, self.max_boxes, out.device)
        raw = truth[..., 0].long()
        anchors = torch.tensor(o.anchors, dtype=torch.float32, device=out.device)  # (num, 2)
        # allocated in the conv layout Darknet passes back; written through Darknet's order
        conv = torch.zeros(output.shape, dtype=torch.float32, device=out.device)
        delta = conv.view(n_img, o.num, o.entries, h * w).permute(0, 3, 1, 2)
        cells = torch.arange(h * w, device=out.device)
        col, row = (cells % w).float()[:, None], (cells // w).float()[:, None]
        sx, sy = torch.sigmoid(out[..., 0]), torch.sigmoid(out[..., 1])
        pred = ((col + sx) / w, (row + sy) / h) + self._pred_wh(out, anchors, w, h)
        cat_cells, n_fix = self._cell_deltas(out, delta, pred, truth, valid, raw)
        if ctx.seen < PRIOR_SEEN:
            self._prior_deltas(out, delta, sx, sy, col, row, anchors, w, h)
        stats = self._truth_deltas(out, delta, truth, valid, self._mapped(raw, valid), anchors,
                                   w, h)
        stats.cat = stats.cat + cat_cells
        stats.class_count += n_fix
        stats.anyobj = out[..., REGION_OBJECTNESS].sum()
        stats.cells = n_img * h * w * o.num
        self.stats = stats
        cost = squared_norm(conv)
        return LossOutput(conv, cost)

    def _mapped(self, cls: Tensor, valid: Tensor) -> Tensor:
        """Class ids of the truth loop: `map=` applied (Darknet: l.map[class_id]; the cell loop
        keeps the raw ids)."""
        if self.class_map is None:
            return cls
        limit = len(self.class_map)
        over = valid & (cls >= limit)
        if bool(over.any()):
            b, k = (int(v) for v in over.nonzero()[0])
            raise CfgError(f"target row {k} of image {b}: class {int(cls[b, k])} has no line in "
                           f"map={self.opts.map_file} ({limit} lines)")
        table = torch.tensor(self.class_map, dtype=torch.long, device=cls.device)
        return torch.where(valid, table[cls.clamp(0, limit - 1)], cls)

    @staticmethod
    def _pred_wh(out: Tensor, anchors: Tensor, w: int, h: int) -> tuple[Tensor, Tensor]:
        """get_region_box's w, h: exp() in double, stored as float."""
        pw = (torch.exp(out[..., 2].double()) * anchors[:, 0].double() / w).float()
        ph = (torch.exp(out[..., 3].double()) * anchors[:, 1].double() / h).float()
        return pw, ph

    # -- step 1: every cell and anchor ----------------------------------------------------------
    def _cell_deltas(self, out: Tensor, delta: Tensor, pred: tuple[Tensor, ...], truth: Tensor,
                     valid: Tensor, classes: Tensor) -> tuple[Tensor, int]:
        """Objectness delta of every anchor (and classfix's class deltas); returns the class
        averages' sum and count of the classfix deltas."""
        o = self.opts
        obj = out[..., REGION_OBJECTNESS]
        n_img = out.shape[0]
        # slots Darknet does not read become empty boxes (IoU 0); truth_slots keeps >= 1 slot
        t = edges(*(truth[:, None, :, k] * valid[:, None, :] for k in range(1, 5)))  # (N, 1, T)
        top, best_t = best_iou(edges(*(p.reshape(n_img, -1, 1) for p in pred)), t)
        top, best_t = top.view_as(obj), best_t.view_as(obj)
        grad = (1 - obj) * obj
        if o.classfix == -1:
            delta[..., REGION_OBJECTNESS] = self.noobject_scale * ((top - obj) * grad)
            return out.new_zeros(()), 0
        above = top > self.thresh
        delta[..., REGION_OBJECTNESS] = torch.where(
            above, 0, self.noobject_scale * ((0 - obj) * grad))
        if o.classfix <= 0 or not bool(above.any()):
            return out.new_zeros(()), 0
        where = above.nonzero(as_tuple=True)
        cls = classes.gather(1, best_t.flatten(1)).view_as(best_t)[where]
        cls = torch.where(top[where] > 0, cls, -1)  # no truth overlaps: Darknet's -1
        fix = obj[where] if o.classfix == 2 else torch.ones_like(obj[where])
        scale = self.class_scale * fix
        written, value, cat = self._class_delta(out[where], cls, scale)
        block = delta[where][:, REGION_CLASSES:REGION_CLASSES + self.class_entries]
        delta[(*where, slice(REGION_CLASSES, REGION_CLASSES + self.class_entries))] = \
            torch.where(written, value, block)
        return cat.sum(), int(cls.numel())

    def _prior_deltas(self, out: Tensor, delta: Tensor, sx: Tensor, sy: Tensor, col: Tensor,
                      row: Tensor, anchors: Tensor, w: int, h: int) -> None:
        """While seen < 12800: every box pulled toward its anchor centred in its cell."""
        cx = ((col.double() + 0.5) / w).float()
        cy = ((row.double() + 0.5) / h).float()
        aw, ah = anchors[:, 0] / w, anchors[:, 1] / h
        tx, ty = cx * w - col, cy * h - row
        tw, th = torch.log(aw * w / anchors[:, 0]), torch.log(ah * h / anchors[:, 1])
        delta[..., 0] = PRIOR_SCALE * (tx - sx) * ((1 - sx) * sx)
        delta[..., 1] = PRIOR_SCALE * (ty - sy) * ((1 - sy) * sy)
        delta[..., 2] = PRIOR_SCALE * (tw - out[..., 2])
        delta[..., 3] = PRIOR_SCALE * (th - out[..., 3])

    # -- step 2: every truth --------------------------------------------------------------------
    def _truth_deltas(self, out: Tensor, delta: Tensor, truth: Tensor, valid: Tensor,
                      classes: Tensor, anchors: Tensor, w: int, h: int) -> RegionStats:
        o = self.opts
        b, k = valid.nonzero(as_tuple=True)  # Darknet's order: image, then slot
        tx, ty, tw, th = truth[b, k, 1], truth[b, k, 2], truth[b, k, 3], truth[b, k, 4]
        i, j = (tx * w).long(), (ty * h).long()
        cell = j * w + i
        inside = cell < h * w  # past the last cell Darknet writes into the next image
        b, cls, cell, i, j = b[inside], classes[b, k][inside], cell[inside], i[inside], j[inside]
        tx, ty, tw, th = tx[inside], ty[inside], tw[inside], th[inside]
        zero = out.new_zeros(())
        if b.numel() == 0:
            return RegionStats(zero, zero, zero, zero, zero, 0, 0, 0)
        if o.bias_match:
            sw = (anchors[:, 0] / w).expand(b.numel(), -1)
            sh = (anchors[:, 1] / h).expand(b.numel(), -1)
        else:
            sw, sh = self._pred_wh(out[b, cell, :, :4], anchors, w, h)  # (T, anchors)
        z = torch.zeros_like(sw)
        shape_iou = box_iou(z, z, sw, sh, z, z, tw[:, None], th[:, None])
        best_n = torch.where(shape_iou > 0, shape_iou, 0).argmax(1)
        x = out[b, cell, best_n]  # (T, entries)
        sx, sy = torch.sigmoid(x[:, 0]), torch.sigmoid(x[:, 1])
        aw, ah = anchors[best_n, 0], anchors[best_n, 1]
        pw = (torch.exp(x[:, 2].double()) * aw.double() / w).float()
        ph = (torch.exp(x[:, 3].double()) * ah.double() / h).float()
        iou = box_iou((i + sx) / w, (j + sy) / h, pw, ph, tx, ty, tw, th)
        s = self.coord_scale
        box = torch.stack((s * (tx * w - i - sx) * ((1 - sx) * sx),
                           s * (ty * h - j - sy) * ((1 - sy) * sy),
                           s * (torch.log(tw * w / aw) - x[:, 2]),
                           s * (torch.log(th * h / ah) - x[:, 3])), 1)
        obj = x[:, REGION_OBJECTNESS]
        target = iou if o.rescore else torch.ones_like(iou)
        d_obj = self.object_scale * (target - obj) * ((1 - obj) * obj)
        written, value, cat = self._class_delta(x, cls, torch.full_like(obj, self.class_scale))
        self._write_last(delta, b, cell, best_n, torch.cat((box, d_obj[:, None]), 1),
                         written, value)
        n = int(b.numel())
        return RegionStats(iou.sum(), (iou > 0.5).sum(), cat.sum(), obj.sum(), zero, n, n, 0)

    def _write_last(self, delta: Tensor, b: Tensor, cell: Tensor, anchor: Tensor, head: Tensor,
                    written: Tensor, value: Tensor) -> None:
        """Assign the truths' deltas in Darknet's order: per cell and anchor the last truth's box
        and objectness; per class entry the last truth that wrote it."""
        slot = (b * delta.shape[1] + cell) * self.opts.num + anchor
        uniq, u = torch.unique(slot, return_inverse=True)
        order = torch.arange(slot.numel(), device=slot.device)
        last = torch.full((uniq.numel(),), -1, dtype=torch.long, device=slot.device)
        last.scatter_reduce_(0, u, order, "amax")
        win = last[u] == order
        delta[b[win], cell[win], anchor[win], :REGION_OBJECTNESS + 1] = head[win]
        e = self.class_entries
        rows, ents = written.nonzero(as_tuple=True)
        key = u[rows] * e + ents
        last_e = torch.full((uniq.numel() * e,), -1, dtype=torch.long, device=slot.device)
        last_e.scatter_reduce_(0, key, rows, "amax")
        keep = last_e[key] == rows
        rows, ents = rows[keep], ents[keep]
        delta[b[rows], cell[rows], anchor[rows], REGION_CLASSES + ents] = value[rows, ents]

    # -- class deltas (delta_region_class) ------------------------------------------------------
    def _class_delta(self, x: Tensor, cls: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For rows of anchor entries `x` (M, entries) and class ids (-1: none): which class
        entries delta_region_class writes, their values, and its contribution to avg_cat."""
        probs = x[:, REGION_CLASSES:REGION_CLASSES + self.class_entries]
        if self.tree is not None:
            written, onehot = self._tree_targets(cls, probs.device)
            cat = torch.where(onehot > 0, probs, 1).prod(1)
            return written, scale[:, None] * (onehot - probs), cat
        onehot = torch.zeros_like(probs)
        has = cls >= 0
        onehot[has.nonzero(as_tuple=True)[0], cls[has]] = 1
        value = scale[:, None] * (onehot - probs)
        # Darknet reads output[index + class_id]: class -1 reads the objectness entry
        picked = x.gather(1, (REGION_CLASSES + cls)[:, None])[:, 0]
        if self.focal_loss:
            pt = picked + 1e-15
            grad = -(1 - pt) * (2 * pt * torch.log(pt) + pt - 1)
            value = value * (FOCAL_ALPHA * grad)[:, None]
        cat = torch.where(has, picked, 0)
        return torch.ones_like(probs, dtype=torch.bool), value, cat

    def _tree_targets(self, cls: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """(M, nodes) masks: entries in the softmax groups along each class's path to the root,
        and 1 on the path's nodes (the classes delta_region_class pushes up)."""
        uniq, inv = torch.unique(cls.cpu(), return_inverse=True)
        paths = [self._path(c) for c in uniq.tolist()]
        rows = [torch.full((len(g),), r) for r, (g, _) in enumerate(paths)]
        written = torch.zeros(uniq.numel(), self.class_entries, dtype=torch.bool)
        written[torch.cat(rows), torch.cat([g for g, _ in paths])] = True
        rows = [torch.full((len(p),), r) for r, (_, p) in enumerate(paths)]
        onehot = torch.zeros(uniq.numel(), self.class_entries)
        onehot[torch.cat(rows), torch.cat([p for _, p in paths])] = 1
        inv = inv.to(device)
        return written.to(device)[inv], onehot.to(device)[inv]

    def _path(self, c: int) -> tuple[Tensor, Tensor]:
        """delta_region_class's walk from class c to its root: the entries of every softmax
        group on the way, and the nodes on the path (cached per class)."""
        if c not in self._paths:
            tree = self.tree
            assert tree is not None
            groups: list[int] = []
            path: list[int] = []
            node = c
            while node >= 0:
                g = tree.group[node]
                start = tree.group_offset[g]
                groups.extend(range(start, start + tree.group_size[g]))
                path.append(node)
                node = tree.parent[node]
            self._paths[c] = (torch.tensor(groups, dtype=torch.long),
                              torch.tensor(path, dtype=torch.long))
        return self._paths[c]


@losses("region")
def region_loss(spec: LayerSpec, opts: Options, network: Network) -> RegionLoss:
    assert isinstance(spec.options, RegionOptions)
    return RegionLoss(spec.options, opts)
