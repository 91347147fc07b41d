"""Detections from a Darknet model, computed as Darknet computes them.

Three steps, each Darknet's own function:

- :func:`decode` — `get_network_boxes`: every `[yolo]`, `[Gaussian_yolo]`, `[region]` and
  `[detection]` head's output becomes Darknet's `detection` array (box, objectness, per-class
  probabilities zeroed at or below `thresh`), in Darknet's order, with its letterbox correction.
  Strides come from each head's actual feature-map size and the network input size.
- :func:`nms` — `do_nms_sort` (or `diounms_sort` for `nms_kind=greedynms/diounms/cornersnms`):
  per class, a stable sort by probability and greedy suppression, reordering the array as
  Darknet's qsort does.
- :func:`select` — `draw_detections_v3`'s choice and order: objects with a class above `thresh`,
  left to right, each as its best class then its other classes; boxes in image pixels.

:func:`detect` runs the whole of Darknet's `detector test` on one image (load, resize or
letterbox, forward, the three steps); :func:`detect_batch` starts from a batch of network inputs.

Arithmetic follows Darknet's C types: float32 where it computes in float, float64 where C
promotes to double (``exp``, ``pow``, the ``2.`` in the letterbox correction), so boxes agree with
Darknet's to float rounding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import image as _image
from .errors import CfgError, warn
from .graph import LayerSpec, Network
from .model import DarknetModel

__all__ = ["HEAD_TYPES", "NMS_KINDS", "RawDetections", "Detection", "NmsSettings", "decode",
           "nms", "nms_settings", "select", "detect", "detect_batch", "read_names",
           "check_names", "network_classes", "format_detection"]

HEAD_TYPES = ("yolo", "Gaussian_yolo", "region", "detection")
# "default" is do_nms_sort (IoU); the others go through diounms_sort.
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")

_F32 = np.float32
ImageSize = tuple[int, int]


# --- result types ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RawDetections:
    """Darknet's `detection` array for one image, as tensors (K entries, Darknet's order).

    `boxes` (K, 4) float32 are Darknet's ``bbox``: centre x, y, width, height relative to the image
    (after the letterbox correction), except for `[detection]` heads, where Darknet scales them to
    image pixels (`pixels` is True there). `probs` (K, classes) hold ``objectness * class`` where
    that exceeds `thresh`, else 0 (the `[region]` tree and Gaussian rules differ, as in Darknet).
    `layer` is the head each entry came from; `uncertainty` (K, 4) is `[Gaussian_yolo]`'s x, y,
    w, h sigma (zeros for the other heads)."""

    boxes: Tensor
    objectness: Tensor
    probs: Tensor
    layer: Tensor
    uncertainty: Tensor
    pixels: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def classes(self) -> int:
        return int(self.probs.shape[1])

    def take(self, index: Tensor | Sequence[int]) -> RawDetections:
        """The entries at `index`, in that order."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.boxes.device)
        return RawDetections(self.boxes[idx], self.objectness[idx], self.probs[idx],
                             self.layer[idx], self.uncertainty[idx], self.pixels[idx])

    def to(self, device: torch.device | str) -> RawDetections:
        return RawDetections(*(t.to(device) for t in (self.boxes, self.objectness, self.probs,
                                                      self.layer, self.uncertainty, self.pixels)))

    @staticmethod
    def cat(parts: Sequence[RawDetections]) -> RawDetections:
        return RawDetections(*(torch.cat([getattr(p, f) for p in parts]) for f in
                               ("boxes", "objectness", "probs", "layer", "uncertainty", "pixels")))


@dataclass(frozen=True)
class Detection:
    """One detected class of one object, as a line of Darknet's ``-ext_output``.

    `left`, `top`, `width`, `height` are in image pixels (not clipped: boxes may reach past the
    border, as Darknet prints them); `bbox` is Darknet's box (centre x, y, w, h relative to the
    image). Entries with the same `index` are one object (one Darknet detection) detected as
    several classes; the first of them is its best class."""

    class_id: int
    name: str | None
    prob: float
    left: float
    top: float
    width: float
    height: float
    objectness: float
    bbox: tuple[float, float, float, float]
    index: int
    image_size: ImageSize

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.class_id)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.left, self.top, self.left + self.width, self.top + self.height

    @property
    def pixels(self) -> tuple[int, int, int, int]:
        """left_x, top_y, width, height exactly as Darknet prints them (float32, C round)."""
        x, y, w, h = (_F32(v) for v in self.bbox)
        im_w, im_h = (_F32(v) for v in self.image_size)
        return (_c_round(_F32(x - w / _F32(2)) * im_w), _c_round(_F32(y - h / _F32(2)) * im_h),
                _c_round(w * im_w), _c_round(h * im_h))

    @property
    def percent(self) -> int:
        """The probability in percent as Darknet prints it (``%.0f`` of ``prob * 100``)."""
        return int(f"{float(_F32(self.prob) * _F32(100)):.0f}")

    def as_dict(self) -> dict:
        left_x, top_y, width, height = self.pixels
        return {"class_id": self.class_id, "name": self.name, "prob": self.prob,
                "objectness": self.objectness, "left_x": left_x, "top_y": top_y, "width": width,
                "height": height, "box": [self.left, self.top, self.width, self.height],
                "bbox_rel_xywh_center": list(self.bbox)}

    def __str__(self) -> str:
        return format_detection(self)


def format_detection(d: Detection) -> str:
    """Darknet's ``-ext_output`` line, e.g. ``dog: 81%\\t(left_x:  124   top_y:  220   ...)``."""
    left_x, top_y, width, height = d.pixels
    return (f"{d.label}: {d.percent}%\t(left_x: {left_x:4d}   top_y: {top_y:4d}   "
            f"width: {width:4d}   height: {height:4d})")


def _c_round(v: np.float32) -> int:
    """C's round(): halves away from zero."""
    x = float(v)
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


# --- decoding (get_network_boxes) --------------------------------------------------------------

@dataclass(frozen=True)
class _Context:
    sizes: list[ImageSize]  # per image (w, h)
    input_size: ImageSize  # network input (w, h)
    thresh: float
    hier_thresh: float
    letterbox: bool


def detection_heads(network: Network) -> list[LayerSpec]:
    """The layers `get_network_boxes` reads, in order."""
    return [spec for spec in network if spec.type in HEAD_TYPES]


def decode(model: DarknetModel | Network, outputs: Sequence[Tensor] | Mapping[int, Tensor],
           image_sizes: ImageSize | Sequence[ImageSize] | None = None, *, thresh: float = 0.25,
           hier_thresh: float = 0.5, letterbox: bool | None = None,
           input_size: ImageSize | None = None) -> list[RawDetections]:
    """Darknet's `get_network_boxes` for a batch: one :class:`RawDetections` per image.

    `outputs` is what ``model(x)`` returned (aligned with ``model.out_indices``; for a Network,
    with ``network.output_layers``), or a mapping from layer index to output; every detection
    head must be in it. `image_sizes` are the original images' (width, height) — one pair for
    all, or one per image; default: the network input size. `letterbox` (default: the cfg's
    ``[net] letter_box``) undoes `letterbox_image`'s padding. `input_size` is the (width, height)
    of the network input the outputs were computed from (default: the cfg's ``[net]`` size).
    `hier_thresh` is the yolo9000 tree's threshold, which Darknet hard-codes to 0.5."""
    network = model.network if isinstance(model, DarknetModel) else model
    by_layer = _outputs_by_layer(model, network, outputs)
    heads = detection_heads(network)
    if not heads:
        raise ValueError("the network has no [yolo], [Gaussian_yolo], [region] or [detection] "
                         "layer to decode")
    missing = [spec.index for spec in heads if spec.index not in by_layer]
    if missing:
        raise ValueError(f"the outputs do not include detection head(s) {missing}; build the "
                         f"model with its default out_indices")
    batch = int(by_layer[heads[0].index].shape[0])
    sizes = _image_sizes(image_sizes, batch, network, input_size)
    ctx = _Context(sizes, input_size or (network.net.width, network.net.height), float(thresh),
                   float(hier_thresh), bool(network.net.letter_box if letterbox is None
                                            else letterbox))
    classes = heads[0].options.classes  # Darknet sizes every prob array by the first head
    for spec in heads:
        if spec.options.classes != classes:
            raise CfgError(f"[{spec.header}] predicts {spec.options.classes} classes, but "
                           f"layer {heads[0].index} predicts {classes}: Darknet keeps one class "
                           f"count for all detection heads", spec.loc)
    per_head = [_DECODERS[spec.type](spec, by_layer[spec.index].detach().float(), ctx)
                for spec in heads]
    return [RawDetections.cat([head[b] for head in per_head]) for b in range(batch)]


def _outputs_by_layer(model, network: Network, outputs) -> dict[int, Tensor]:
    if isinstance(outputs, Mapping):
        return dict(outputs)
    order = model.out_indices if isinstance(model, DarknetModel) else network.output_layers
    outputs = list(outputs)
    if len(outputs) != len(order):
        raise ValueError(f"got {len(outputs)} outputs for the {len(order)} output layers "
                         f"{list(order)}")
    return dict(zip(order, outputs))


def _image_sizes(sizes, batch: int, network: Network,
                 input_size: ImageSize | None) -> list[ImageSize]:
    if sizes is None:
        return [input_size or (network.net.width, network.net.height)] * batch
    if len(sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in sizes):
        sizes = [sizes] * batch
    sizes = [(int(w), int(h)) for w, h in sizes]
    if len(sizes) != batch:
        raise ValueError(f"got {len(sizes)} image sizes for a batch of {batch}")
    for w, h in sizes:
        if w <= 0 or h <= 0:
            raise ValueError(f"image size {w}x{h} is empty")
    return sizes


def _anchor_major(y: Tensor, anchors: int, entries: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(N, A*E, H, W) → (N, H*W*A, E) in Darknet's loop order (cell, then anchor), with each
    entry's column, row and anchor slot."""
    n, _, h, w = y.shape
    p = y.reshape(n, anchors, entries, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * anchors,
                                                                            entries)
    k = torch.arange(h * w * anchors, device=y.device)
    cell = k // anchors
    return p, (cell % w).float(), (cell // w).float(), k % anchors


def _anchor_sizes(anchors: Sequence[tuple[float, float]], slots: Sequence[int], which: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """Anchor w, h as Darknet's float `biases`, per entry."""
    table = torch.tensor([anchors[m] for m in slots], dtype=torch.float32, device=which.device)
    return table[which, 0], table[which, 1]


def _exp_scale(t: Tensor, anchor: Tensor, size: int) -> Tensor:
    """``exp(t) * bias / size`` in double, stored as float."""
    return (torch.exp(t.double()) * anchor.double() / size).float()


def _logistic(t: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


def _thresholded(p: Tensor, thresh: float) -> Tensor:
    return torch.where(p > thresh, p, torch.zeros((), dtype=p.dtype, device=p.device))


def _raw(spec: LayerSpec, boxes: Tensor, obj: Tensor, probs: Tensor,
         uc: Tensor | None = None, pixels: bool = False) -> RawDetections:
    k = boxes.shape[0]
    dev = boxes.device
    return RawDetections(boxes, obj, probs, torch.full((k,), spec.index, dtype=torch.long,
                                                       device=dev),
                         uc if uc is not None else torch.zeros(k, 4, device=dev),
                         torch.full((k,), pixels, dtype=torch.bool, device=dev))


def _decode_yolo(spec: LayerSpec, y: Tensor, ctx: _Context) -> list[RawDetections]:
    """get_yolo_detections + correct_yolo_boxes."""
    o = spec.options
    lh, lw = y.shape[-2:]
    p, col, row, slot = _anchor_major(y, len(o.mask), o.classes + 5)
    aw, ah = _anchor_sizes(o.anchors, o.mask, slot)
    netw, neth = ctx.input_size
    x = (col + p[..., 0]) / lw
    yy = (row + p[..., 1]) / lh
    if o.new_coords:
        w = p[..., 2] * p[..., 2] * 4 * aw / netw
        h = p[..., 3] * p[..., 3] * 4 * ah / neth
    else:
        w = _exp_scale(p[..., 2], aw, netw)
        h = _exp_scale(p[..., 3], ah, neth)
    boxes = torch.stack((x, yy, w, h), -1)
    obj = p[..., 4]
    probs = _thresholded(obj[..., None] * p[..., 5:], ctx.thresh)
    out = []
    for b in range(y.shape[0]):
        keep = (obj[b] > ctx.thresh).nonzero().squeeze(1)
        out.append(_raw(spec, _correct(boxes[b, keep], ctx, b, gaussian=False), obj[b, keep],
                        probs[b, keep]))
    return out


def _decode_gaussian_yolo(spec: LayerSpec, y: Tensor, ctx: _Context) -> list[RawDetections]:
    """get_gaussian_yolo_detections + correct_gaussian_yolo_boxes."""
    o = spec.options
    lh, lw = y.shape[-2:]
    p, col, row, slot = _anchor_major(y, len(o.mask), o.entries)
    aw, ah = _anchor_sizes(o.anchors, o.mask, slot)
    netw, neth = ctx.input_size
    w = _exp_scale(p[..., 4], aw, netw)
    h = _exp_scale(p[..., 6], ah, neth)
    x = (col + p[..., 0]) / lw
    yy = (row + p[..., 2]) / lh
    if o.yolo_point == "left_top":
        x, yy = x + w / 2, yy + h / 2
    elif o.yolo_point == "right_bottom":
        x, yy = x - w / 2, yy - h / 2
    boxes = torch.stack((x, yy, w, h), -1)
    uc = p[..., [1, 3, 5, 7]]
    uc_aver = ((((uc[..., 0] + uc[..., 1]) + uc[..., 2]) + uc[..., 3]).double() / 4.0).float()
    obj = p[..., 8]
    prob = ((obj[..., None] * p[..., 9:]).double() * (1.0 - uc_aver.double())[..., None]).float()
    probs = _thresholded(prob, ctx.thresh)
    out = []
    for b in range(y.shape[0]):
        keep = (obj[b] > ctx.thresh).nonzero().squeeze(1)
        out.append(_raw(spec, _correct(boxes[b, keep], ctx, b, gaussian=True), obj[b, keep],
                        probs[b, keep], uc[b, keep]))
    return out


def _decode_region(spec: LayerSpec, y: Tensor, ctx: _Context) -> list[RawDetections]:
    """custom_get_region_detections → get_region_boxes + correct_yolo_boxes.

    Darknet reads each anchor's values with a stride of classes + 5 whatever `coords` says, from
    its [cell][anchor][entry] buffer; with coords=5 it reads across entries as Darknet does."""
    o = spec.options
    n, _, lh, lw = y.shape
    cells = lh * lw
    flat = y.reshape(n, o.num, o.entries, cells).permute(0, 3, 1, 2).reshape(n, -1)
    stride = o.classes + 5
    count = cells * o.num
    k = torch.arange(count, device=y.device)
    p = flat[:, (k * stride)[:, None] + torch.arange(stride, device=y.device)]
    cell, slot = k // o.num, k % o.num
    scale = p[..., 4]
    if o.classfix == -1:
        scale = torch.where(scale < 0.5, torch.zeros((), device=y.device), scale)
    aw, ah = _anchor_sizes(o.anchors, range(o.num), slot)
    x = ((cell % lw).float() + _logistic(p[..., 0])) / lw
    yy = ((cell // lw).float() + _logistic(p[..., 1])) / lh
    boxes = torch.stack((x, yy, _exp_scale(p[..., 2], aw, lw), _exp_scale(p[..., 3], ah, lh)), -1)
    cls = p[..., 5:]
    if o.tree is not None:
        probs = _tree_probs(cls, o.tree, scale, ctx.thresh, ctx.hier_thresh)
    else:
        probs = _thresholded(scale[..., None] * cls, ctx.thresh)
    ones = torch.ones(count, device=y.device)
    return [_raw(spec, _correct(boxes[b], ctx, b, gaussian=False), ones, probs[b])
            for b in range(n)]


def _tree_probs(cls: Tensor, tree, scale: Tensor, thresh: float, hier: float) -> Tensor:
    """yolo9000: hierarchy_predictions (each node times its parent's already updated value, in
    node order), then only the highest-numbered node above `hier` keeps its value, reported where
    objectness > thresh (the probability is not multiplied by objectness, as in Darknet)."""
    n = cls.shape[-1]
    out = cls.clone()
    for nodes, parents in _tree_levels(tuple(tree.parent[:n])):
        out[..., nodes] = out[..., nodes] * out[..., parents]
    above = out > hier
    last = n - 1 - above.flip(-1).int().argmax(-1)
    chosen = torch.zeros_like(above)
    chosen.scatter_(-1, last[..., None], True)
    chosen &= above.any(-1, keepdim=True)
    zero = torch.zeros((), device=cls.device)
    return torch.where((scale > thresh)[..., None], torch.where(chosen, out, zero), zero)


@lru_cache(maxsize=8)
def _tree_levels(parent: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Nodes grouped by depth: multiplying level by level gives Darknet's sequential in-place
    result, since a tree file only names earlier nodes as parents (darkcfg.tree checks it)."""
    depth = [0] * len(parent)
    levels: dict[int, tuple[list[int], list[int]]] = {}
    for j, par in enumerate(parent):
        if 0 <= par < j:
            depth[j] = depth[par] + 1
            nodes, parents = levels.setdefault(depth[j], ([], []))
            nodes.append(j)
            parents.append(par)
    return [levels[d] for d in sorted(levels)]


def _decode_detection(spec: LayerSpec, y: Tensor, ctx: _Context) -> list[RawDetections]:
    """get_detection_detections (yolov1): boxes in image pixels, no letterbox correction."""
    o = spec.options
    n = y.shape[0]
    flat = y.reshape(n, -1)
    cells = o.side * o.side
    count = cells * o.num
    if cells * (o.classes + 5 * o.num) > flat.shape[1]:
        raise CfgError(f"[detection] with coords={o.coords}: Darknet reads 4 box values per "
                       f"anchor, past the end of this layer's {flat.shape[1]} outputs", spec.loc)
    k = torch.arange(count, device=y.device)
    cell = k // o.num
    col, row = (cell % o.side).float(), (cell // o.side).float()
    scale = flat[:, cells * o.classes + k]
    box = cells * (o.classes + o.num) + k * 4
    cls = flat[:, (cell * o.classes)[:, None] + torch.arange(o.classes, device=y.device)]
    probs = _thresholded(scale[..., None] * cls, ctx.thresh)
    power = 2 if o.sqrt else 1
    out = []
    for b in range(n):
        im_w, im_h = ctx.sizes[b]
        x = (flat[b, box] + col) / o.side * im_w
        yy = (flat[b, box + 1] + row) / o.side * im_h
        w = (flat[b, box + 2].double() ** power * im_w).float()
        h = (flat[b, box + 3].double() ** power * im_h).float()
        out.append(_raw(spec, torch.stack((x, yy, w, h), -1), scale[b], probs[b], pixels=True))
    return out


_DECODERS = {"yolo": _decode_yolo, "Gaussian_yolo": _decode_gaussian_yolo,
             "region": _decode_region, "detection": _decode_detection}


def _correct(boxes: Tensor, ctx: _Context, b: int, *, gaussian: bool) -> Tensor:
    """correct_yolo_boxes (or its Gaussian twin): undo letterbox padding; relative=1."""
    if not ctx.letterbox or boxes.shape[0] == 0:
        return boxes  # new_w = netw, new_h = neth: every operation is exact
    w, h = ctx.sizes[b]
    netw, neth = ctx.input_size
    new_w, new_h = _image.letterbox_size(w, h, netw, neth)
    ratio_w, ratio_h = _F32(new_w) / _F32(netw), _F32(new_h) / _F32(neth)
    if gaussian:
        scale_w, scale_h = _F32(netw) / _F32(new_w), _F32(neth) / _F32(new_h)
    else:
        scale_w, scale_h = _F32(1) / ratio_w, _F32(1) / ratio_h
    x = ((boxes[:, 0].double() - (netw - new_w) / 2.0 / netw) / float(ratio_w)).float()
    y = ((boxes[:, 1].double() - (neth - new_h) / 2.0 / neth) / float(ratio_h)).float()
    return torch.stack((x, y, boxes[:, 2] * float(scale_w), boxes[:, 3] * float(scale_h)), -1)


# --- NMS (do_nms_sort, diounms_sort) -----------------------------------------------------------

@dataclass(frozen=True)
class NmsSettings:
    """What Darknet's `detector test` passes to NMS: the settings of its NMS layer (the last
    [yolo]/[Gaussian_yolo]/[region], else the last layer)."""

    kind: str = "default"
    beta: float = 0.6
    classes: int | None = None
    layer: int | None = None


def nms_settings(network: Network) -> NmsSettings:
    heads = [s for s in network if s.type in ("yolo", "Gaussian_yolo", "region")]
    spec = heads[-1] if heads else network[len(network) - 1]
    o = spec.options
    return NmsSettings(getattr(o, "nms_kind", "default"), getattr(o, "beta_nms", 0.6),
                       getattr(o, "classes", None), spec.index)


def nms(dets: RawDetections, thresh: float = 0.45, *, kind: str = "default", beta: float = 0.6,
        classes: int | None = None) -> RawDetections:
    """Darknet's `do_nms_sort` (kind "default") or `diounms_sort` on one image's detections.

    Entries with objectness 0 move to the end (Darknet's swap loop); then for each class, the rest
    are sorted by that class's probability (stably, as glibc's qsort), and every entry whose box
    overlaps a higher one's by more than `thresh` gets that class's probability zeroed: overlap is
    IoU ("default", "cornersnms"), DIoU with exponent 0.6 ("greedynms") or DIoU with exponent
    `beta` ("diounms"). Returns the reordered array; ``thresh=0`` skips NMS, as Darknet does.
    `classes` (default: all) is how many classes Darknet's NMS layer walks."""
    if kind not in NMS_KINDS:
        raise ValueError(f"nms kind {kind!r} is not one of {', '.join(NMS_KINDS)}")
    if not thresh or len(dets) == 0:
        return dets
    cpu = dets.to("cpu")
    order, total = _zero_objectness_last(cpu.objectness.tolist())
    probs = cpu.probs.numpy()[order].astype(_F32)  # a copy, in the swapped order
    boxes = cpu.boxes.numpy()[order].astype(_F32)
    n_classes = probs.shape[1] if classes is None else min(int(classes), probs.shape[1])
    # box_diou's exponent is the double 0.6; box_diounms's is the float beta_nms
    exponent = None if kind in ("default", "cornersnms") else \
        (0.6 if kind == "greedynms" else float(_F32(beta)))
    t = _F32(thresh)
    perm = np.arange(total)
    for c in range(n_classes):
        perm = perm[np.argsort(-probs[perm, c], kind="stable")]
        cand = perm[probs[perm, c] != 0]
        if len(cand) > 1:
            probs[cand[~_greedy(_Boxes(boxes[cand]), t, exponent)], c] = 0
    final = np.concatenate((order[perm], order[total:]))
    kept = cpu.take(torch.from_numpy(final))
    out_probs = torch.from_numpy(np.concatenate((probs[perm], probs[total:])))
    result = RawDetections(kept.boxes, kept.objectness, out_probs, kept.layer, kept.uncertainty,
                           kept.pixels)
    return result.to(dets.boxes.device)


_nms = nms  # detect() and detect_batch() take a parameter named nms


def _zero_objectness_last(objectness: list[float]) -> tuple[np.ndarray, int]:
    """Darknet's loop that swaps entries with objectness 0 to the end (not order-preserving)."""
    order = list(range(len(objectness)))
    i, k = 0, len(order) - 1
    while i <= k:
        if objectness[order[i]] == 0:
            order[i], order[k] = order[k], order[i]
            k -= 1
        else:
            i += 1
    return np.asarray(order, dtype=np.int64), k + 1


class _Boxes:
    """Candidate boxes' edges and areas, computed once in float32 as box.c does per pair."""

    def __init__(self, b: np.ndarray) -> None:
        self.x, self.y, self.w, self.h = (b[:, i] for i in range(4))
        half_w, half_h = self.w / _F32(2), self.h / _F32(2)
        self.left, self.right = self.x - half_w, self.x + half_w
        self.top, self.bot = self.y - half_h, self.y + half_h
        self.area = self.w * self.h

    def __len__(self) -> int:
        return len(self.x)


def _greedy(b: _Boxes, thresh: np.float32, exponent: float | None) -> np.ndarray:
    """Which candidates (sorted by probability) survive: each survivor removes the later ones it
    overlaps by more than `thresh`. Only survivors' rows are computed."""
    alive = np.ones(len(b), dtype=bool)
    for a in range(len(b) - 1):
        if not alive[a]:
            continue
        rest = np.flatnonzero(alive[a + 1:]) + (a + 1)
        if len(rest) == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = _iou(b, a, rest) if exponent is None else _diou(b, a, rest, exponent)
        alive[rest[overlap > thresh]] = False
    return alive


def _iou(b: _Boxes, a: int, rest: np.ndarray) -> np.ndarray:
    """box_iou(a, each of rest) in float32."""
    ow = np.minimum(b.right[a], b.right[rest]) - np.maximum(b.left[a], b.left[rest])
    oh = np.minimum(b.bot[a], b.bot[rest]) - np.maximum(b.top[a], b.top[rest])
    inter = np.where((ow < 0) | (oh < 0), _F32(0), ow * oh)
    union = (b.area[a] + b.area[rest]) - inter
    return np.where((inter == 0) | (union == 0), _F32(0), inter / union).astype(_F32)


def _diou(b: _Boxes, a: int, rest: np.ndarray, exponent: float) -> np.ndarray:
    """box_diou (exponent 0.6) / box_diounms (exponent beta_nms): IoU minus (centre distance² /
    enclosing box diagonal²) ** exponent, the power in double as C's pow."""
    iou = _iou(b, a, rest)
    cw = np.maximum(b.right[a], b.right[rest]) - np.minimum(b.left[a], b.left[rest])
    ch = np.maximum(b.bot[a], b.bot[rest]) - np.minimum(b.top[a], b.top[rest])
    c = cw * cw + ch * ch
    dx, dy = b.x[a] - b.x[rest], b.y[a] - b.y[rest]
    d = dx * dx + dy * dy
    u = np.power((d / c).astype(np.float64), exponent).astype(_F32)
    return np.where(c == 0, iou, iou - u).astype(_F32)


# --- selection (draw_detections_v3's choice and order) -----------------------------------------

def read_names(path: str | os.PathLike, classes: int | None = None) -> list[str]:
    """A Darknet .names file: one class name per line. With `classes` (the network's count, e.g.
    :func:`network_classes`), another line count is an error naming both counts: Darknet only
    prints a warning, and then labels every class after the first missing line wrongly."""
    names = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    if classes is not None and len(names) != classes:
        raise CfgError(f"the names file {path} has {len(names)} lines, but the network has "
                       f"{classes} classes (one name per line, in class order)")
    return names


def network_classes(model: DarknetModel | Network) -> int:
    """The classes the detection heads predict (Darknet sizes every prob array by the first's)."""
    network = model.network if isinstance(model, DarknetModel) else model
    heads = detection_heads(network)
    if not heads:
        raise ValueError("the network has no [yolo], [Gaussian_yolo], [region] or [detection] "
                         "layer whose classes names could label")
    return int(heads[0].options.classes)


def check_names(names: Sequence[str] | str | os.PathLike, model: DarknetModel | Network | int
                ) -> list[str]:
    """`names` (a .names file or the names themselves) as a list, checked against the class count
    of `model` (a model, a Network, or the count): one name per class, or a CfgError."""
    classes = model if isinstance(model, int) else network_classes(model)
    if isinstance(names, (str, os.PathLike)):
        return read_names(names, classes)
    names = list(names)
    if len(names) != classes:
        raise CfgError(f"got {len(names)} names, but the network has {classes} classes (one "
                       f"name per class, in class order)")
    return names


def select(dets: RawDetections, image_size: ImageSize, *, thresh: float = 0.25,
           names: Sequence[str] | str | os.PathLike | None = None) -> list[Detection]:
    """The detections Darknet prints: every object with a class above `thresh` (classes whose name
    starts with ``dont_show`` are skipped), ordered by left edge, each as its best class, then its
    other classes above `thresh` in class order.

    `[detection]` (yolov1) boxes, which Darknet keeps in pixels, are made relative here (Darknet's
    own `detector test` prints nothing for them: it never sets their class count)."""
    labels = None if names is None else check_names(names, dets.classes)
    cpu = dets.to("cpu")
    im_w, im_h = image_size
    boxes = cpu.boxes.numpy().astype(_F32)
    if bool(cpu.pixels.any()):
        scale = np.asarray([im_w, im_h, im_w, im_h], _F32)
        boxes = np.where(cpu.pixels.numpy()[:, None], boxes / scale, boxes).astype(_F32)
    probs = cpu.probs.numpy()
    shown = np.ones(probs.shape[1], dtype=bool)
    if labels is not None:
        for j, name in enumerate(labels[:probs.shape[1]]):
            shown[j] = not name.startswith("dont_show")
    t = _F32(thresh)
    above = (probs > t) & shown
    chosen = [i for i in range(len(probs)) if above[i].any()]
    lefts = [float(boxes[i, 0] - boxes[i, 2] / _F32(2)) for i in chosen]
    chosen = [chosen[j] for j in sorted(range(len(chosen)), key=lefts.__getitem__)]
    out = []
    for i in chosen:
        row = np.where(above[i], probs[i], -np.inf)
        best = int(np.argmax(row))  # the first of equal maxima, as Darknet's strict '>'
        for j in [best] + [j for j in np.flatnonzero(above[i]) if j != best]:
            out.append(_detection(int(j), i, boxes[i], probs[i, j], cpu.objectness[i].item(),
                                  labels, image_size))
    return out


def _detection(class_id: int, index: int, box: np.ndarray, prob: float, objectness: float,
               labels: list[str] | None, image_size: ImageSize) -> Detection:
    x, y, w, h = (float(v) for v in box)
    im_w, im_h = image_size
    name = labels[class_id] if labels is not None and class_id < len(labels) else None
    return Detection(class_id, name, float(prob), (x - w / 2) * im_w, (y - h / 2) * im_h,
                     w * im_w, h * im_h, float(objectness), (x, y, w, h), index,
                     (int(im_w), int(im_h)))


# --- end to end --------------------------------------------------------------------------------

def detect_batch(model: DarknetModel, x: Tensor,
                 image_sizes: ImageSize | Sequence[ImageSize] | None = None, *,
                 thresh: float = 0.25, nms: float = 0.45, hier_thresh: float = 0.5,
                 letterbox: bool | None = None,
                 names: Sequence[str] | str | os.PathLike | None = None) -> list[list[Detection]]:
    """Detections for a batch of network inputs you prepared yourself: (N, C, H, W) floats as
    Darknet feeds them (RGB in [0, 1], resized or letterboxed). `image_sizes` are the original
    images' (width, height) for the pixel boxes (default: the input size); `letterbox` says how
    the inputs were made (default: the cfg's ``[net] letter_box``)."""
    if model.training:
        warn("the model is in training mode; Darknet detects in inference mode (call "
             "model.eval())", UserWarning)
    labels = None if names is None else check_names(names, model)  # before the forward pass
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        outputs = model(x)
    input_size = (int(x.shape[-1]), int(x.shape[-2]))
    sizes = _image_sizes(image_sizes, int(x.shape[0]), model.network, input_size)
    raws = decode(model, outputs, sizes, thresh=thresh, hier_thresh=hier_thresh,
                  letterbox=letterbox, input_size=input_size)
    settings = nms_settings(model.network)
    result = []
    for raw, size in zip(raws, sizes):
        kept = _nms(raw, nms, kind=settings.kind, beta=settings.beta, classes=settings.classes)
        result.append(select(kept, size, thresh=thresh, names=labels))
    return result


def detect(model: DarknetModel, image: _image.ImageSource, *, thresh: float = 0.25,
           nms: float = 0.45, letterbox: bool | None = None, hier_thresh: float = 0.5,
           names: Sequence[str] | str | os.PathLike | None = None) -> list[Detection]:
    """Darknet's ``detector test`` on one image: load it (a path, PIL image, uint8 array or a
    Darknet float image), `resize_image` or `letterbox_image` it to the cfg's input size
    (`letterbox` default: ``[net] letter_box``), run the model, decode, NMS (the cfg's `nms_kind`,
    overlap threshold `nms`; 0 skips it) and return what Darknet prints, in its order."""
    net = model.network.net
    im = _image.load_image(image, channels=net.channels)
    letter = bool(net.letter_box if letterbox is None else letterbox)
    x = _image.network_input(im, net.width, net.height, letter)[None]
    size = (int(im.shape[-1]), int(im.shape[-2]))
    return detect_batch(model, x, [size], thresh=thresh, nms=nms, hier_thresh=hier_thresh,
                        letterbox=letter, names=names)[0]
