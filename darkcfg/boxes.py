"""Box decoding as a torch module, for graphs that must carry it (ONNX export with ``--decode``).

:class:`BoxDecoder` runs a model and decodes every detection head into one tensor
``(N, boxes, 4 + 1 + classes)``: centre x, y, width, height relative to the network input (0..1),
objectness, then the per-class probabilities. The numbers are those of
:func:`darkcfg.detection.decode` (Darknet's ``get_network_boxes``) before its threshold zeroing,
with the image size equal to the network input size, in the same order: heads in layer order,
each head's entries cell by cell (row-major), anchor by anchor within a cell.

Unlike :func:`~darkcfg.detection.decode` it computes in the model's dtype (float32) throughout,
where Darknet promotes ``exp``/``pow`` to double: the results agree to float rounding (~1e-7
relative). Nothing depends on the data (no thresholds, no selection), and every grid and scale comes
from the tensor shapes, so one exported graph decodes any batch and input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .detection import HEAD_TYPES, RawDetections, detection_heads
from .errors import CfgError
from .graph import LayerSpec
from .model import DarknetModel

__all__ = ["BoxDecoder", "box_layout", "raw_detections"]

def box_layout(classes: int) -> str:
    """One line that says what a row of :class:`BoxDecoder`'s output holds."""
    return (f"x, y, w, h (box centre and size relative to the network input), objectness, "
            f"{classes} class probabilities (objectness x class)")


class BoxDecoder(nn.Module):
    """``model`` followed by the decoding of all its detection heads.

    ``forward(x)`` returns ``(N, boxes, 4 + 1 + classes)``; see the module docstring. The model
    must output every detection head (its default `out_indices` do)."""

    def __init__(self, model: DarknetModel) -> None:
        super().__init__()
        network = model.network
        heads = detection_heads(network)
        if not heads:
            raise ValueError("the network has no [yolo], [Gaussian_yolo], [region] or [detection] "
                             "layer to decode")
        missing = [spec.index for spec in heads if spec.index not in model.out_indices]
        if missing:
            raise ValueError(f"the model does not output detection head(s) {missing}; build it "
                             f"with its default out_indices to decode boxes")
        classes = heads[0].options.classes
        for spec in heads:
            if spec.options.classes != classes:
                raise CfgError(f"[{spec.header}] predicts {spec.options.classes} classes, but "
                               f"layer {heads[0].index} predicts {classes}: the decoded boxes "
                               f"need one class count for all detection heads", spec.loc)
        self.model = model
        self.classes = classes
        self._positions = [model.out_indices.index(spec.index) for spec in heads]
        self.heads = nn.ModuleList(_HEADS[spec.type](spec) for spec in heads)
        self.train(model.training)  # a new module starts in training mode; keep the model's

    def forward(self, x: Tensor) -> Tensor:
        outs = self.model(x)
        netw, neth = x.shape[-1], x.shape[-2]
        parts = [head(outs[i], netw, neth) for i, head in zip(self._positions, self.heads)]
        return torch.cat(parts, 1)


def raw_detections(rows: Tensor, thresh: float = 0.25) -> RawDetections:
    """One image's decoded rows (boxes, 4 + 1 + classes), e.g. from an exported graph, as
    Darknet's detection array: entries with objectness above `thresh`, probabilities at or below
    it zeroed, as :func:`darkcfg.detection.decode` gives them for an image of the network's size
    (boxes relative, also for [detection] heads). Feed it to :func:`darkcfg.nms` and
    :func:`darkcfg.select`: they give what :func:`darkcfg.detect` gives. (decode keeps every entry
    of a [detection] head; those dropped here have no class above `thresh`, so NMS and the
    selection do not change.)"""
    rows = torch.as_tensor(rows, dtype=torch.float32)
    if rows.dim() != 2 or rows.shape[1] < 5:
        raise ValueError(f"expected one image's rows (boxes, 4 + 1 + classes), got shape "
                         f"{tuple(rows.shape)}")
    kept = rows[rows[:, 4] > thresh]
    probs = kept[:, 5:]
    probs = torch.where(probs > thresh, probs, torch.zeros((), dtype=probs.dtype))
    k = kept.shape[0]
    return RawDetections(kept[:, :4], kept[:, 4], probs, torch.zeros(k, dtype=torch.long),
                         torch.zeros(k, 4), torch.zeros(k, dtype=torch.bool))


# --- per head ----------------------------------------------------------------------------------

def _anchor_table(anchors: Sequence[tuple[float, float]], slots: Sequence[int]) -> Tensor:
    """(slots, 2) anchor w, h as Darknet's float biases."""
    return torch.tensor([anchors[m] for m in slots], dtype=torch.float32).reshape(-1, 2)


def _cells_last(y: Tensor, anchors: int, entries: int) -> Tensor:
    """(N, A*E, H, W) → (N, H, W, A, E): Darknet's decoding order is cell, then anchor."""
    n, _, h, w = y.shape
    return y.reshape(n, anchors, entries, h, w).permute(0, 3, 4, 1, 2)


def _grid(p: Tensor) -> tuple[Tensor, Tensor]:
    """Column and row of each cell of a (N, H, W, A, E) tensor, broadcastable to (N, H, W, A)."""
    h, w = p.shape[1], p.shape[2]
    col = torch.arange(w, device=p.device).to(p.dtype).reshape(1, 1, w, 1)
    row = torch.arange(h, device=p.device).to(p.dtype).reshape(1, h, 1, 1)
    return col, row


def _rows(boxes: Sequence[Tensor], obj: Tensor, probs: Tensor) -> Tensor:
    """Stack x, y, w, h, objectness and probabilities into (N, entries, 5 + classes)."""
    n = obj.shape[0]
    cols = torch.stack((*boxes, obj), -1)
    return torch.cat((cols, probs), -1).reshape(n, -1, 5 + probs.shape[-1])


def _anchor_cells(y: Tensor, anchors: int, entries: int, anchor_wh: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A [yolo]-style head's map as (N, H, W, anchors, entries), with each cell's column and
    row and each anchor's width and height (in the map's dtype)."""
    p = _cells_last(y, anchors, entries)
    col, row = _grid(p)
    return p, col, row, anchor_wh[:, 0].to(p.dtype), anchor_wh[:, 1].to(p.dtype)


class _Yolo(nn.Module):
    """get_yolo_detections: x, y already have logistic and scale_x_y applied by the layer."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        o = spec.options
        self.anchors = len(o.mask)
        self.entries = o.classes + 5
        self.new_coords = bool(o.new_coords)
        self.register_buffer("anchor_wh", _anchor_table(o.anchors, o.mask), persistent=False)

    def forward(self, y: Tensor, netw: int, neth: int) -> Tensor:
        p, col, row, aw, ah = _anchor_cells(y, self.anchors, self.entries, self.anchor_wh)
        lh, lw = p.shape[1], p.shape[2]
        x = (col + p[..., 0]) / lw
        yy = (row + p[..., 1]) / lh
        if self.new_coords:
            w = p[..., 2] * p[..., 2] * 4 * aw / netw
            h = p[..., 3] * p[..., 3] * 4 * ah / neth
        else:
            w = torch.exp(p[..., 2]) * aw / netw
            h = torch.exp(p[..., 3]) * ah / neth
        obj = p[..., 4]
        return _rows((x, yy, w, h), obj, obj[..., None] * p[..., 5:])


class _GaussianYolo(nn.Module):
    """get_gaussian_yolo_detections: probabilities scaled by 1 - the mean box uncertainty."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        o = spec.options
        self.anchors = len(o.mask)
        self.entries = o.entries
        self.point = o.yolo_point
        self.register_buffer("anchor_wh", _anchor_table(o.anchors, o.mask), persistent=False)

    def forward(self, y: Tensor, netw: int, neth: int) -> Tensor:
        p, col, row, aw, ah = _anchor_cells(y, self.anchors, self.entries, self.anchor_wh)
        lh, lw = p.shape[1], p.shape[2]
        w = torch.exp(p[..., 4]) * aw / netw
        h = torch.exp(p[..., 6]) * ah / neth
        x = (col + p[..., 0]) / lw
        yy = (row + p[..., 2]) / lh
        if self.point == "left_top":
            x, yy = x + w / 2, yy + h / 2
        elif self.point == "right_bottom":
            x, yy = x - w / 2, yy - h / 2
        uc_aver = (((p[..., 1] + p[..., 3]) + p[..., 5]) + p[..., 7]) / 4.0
        obj = p[..., 8]
        probs = obj[..., None] * p[..., 9:] * (1.0 - uc_aver)[..., None]
        return _rows((x, yy, w, h), obj, probs)


class _Region(nn.Module):
    """custom_get_region_detections (yolov2): objectness 1, probabilities scale x class.

    Darknet reads each anchor's values with a stride of classes + 5 from its [cell][anchor][entry]
    buffer whatever `coords` says; for coords=4 that is simply every anchor's entries."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        o = spec.options
        if o.tree is not None:
            raise CfgError(f"[{spec.header}] with tree= (yolo9000's hierarchy) cannot be decoded "
                           f"in the graph: its class choice depends on the data; export without "
                           f"box decoding and decode with darkcfg.decode", spec.loc)
        self.num = o.num
        self.entries = o.entries
        self.stride = o.classes + 5
        self.classfix = o.classfix == -1
        self.register_buffer("anchor_wh", _anchor_table(o.anchors, range(o.num)),
                             persistent=False)

    def forward(self, y: Tensor, netw: int, neth: int) -> Tensor:
        n, _, lh, lw = y.shape
        d = y.reshape(n, self.num, self.entries, lh, lw).permute(0, 3, 4, 1, 2)  # N,H,W,A,E
        if self.entries != self.stride:  # coords > 4: Darknet's reads run across entries
            count = lh * lw * self.num
            d = d.reshape(n, -1)[:, :count * self.stride].reshape(n, lh, lw, self.num,
                                                                  self.stride)
        col, row = _grid(d)
        aw, ah = self.anchor_wh[:, 0].to(d.dtype), self.anchor_wh[:, 1].to(d.dtype)
        scale = d[..., 4]
        if self.classfix:
            scale = torch.where(scale < 0.5, torch.zeros_like(scale), scale)
        x = (col + _logistic(d[..., 0])) / lw
        yy = (row + _logistic(d[..., 1])) / lh
        w = torch.exp(d[..., 2]) * aw / lw
        h = torch.exp(d[..., 3]) * ah / lh
        return _rows((x, yy, w, h), torch.ones_like(scale), scale[..., None] * d[..., 5:])


class _Detection(nn.Module):
    """get_detection_detections (yolov1), boxes left relative (Darknet scales them to pixels).

    The layer is flat: [side*side*classes | side*side*num objectness | side*side*num*4 boxes]."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        o = spec.options
        cells = o.side * o.side
        if cells * (o.classes + 5 * o.num) > spec.out_shape.size:
            raise CfgError(f"[detection] with coords={o.coords}: Darknet reads 4 box values per "
                           f"anchor, past the end of this layer's {spec.out_shape.size} outputs",
                           spec.loc)
        count = cells * o.num
        k = torch.arange(count)
        cell = k // o.num
        self.side = o.side
        self.power = 2 if o.sqrt else 1
        self.register_buffer("scale_at", cells * o.classes + k, persistent=False)
        self.register_buffer("box_at", cells * (o.classes + o.num) + k * 4, persistent=False)
        self.register_buffer("class_at", (cell * o.classes)[:, None] + torch.arange(o.classes),
                             persistent=False)
        self.register_buffer("col", (cell % o.side).float(), persistent=False)
        self.register_buffer("row", (cell // o.side).float(), persistent=False)

    def forward(self, y: Tensor, netw: int, neth: int) -> Tensor:
        flat = y.reshape(y.shape[0], -1)
        scale = flat[:, self.scale_at]
        cls = flat[:, self.class_at]
        x = (flat[:, self.box_at] + self.col.to(flat.dtype)) / self.side
        yy = (flat[:, self.box_at + 1] + self.row.to(flat.dtype)) / self.side
        w = flat[:, self.box_at + 2]
        h = flat[:, self.box_at + 3]
        if self.power == 2:
            w, h = w * w, h * h
        return _rows((x, yy, w, h), scale, scale[..., None] * cls)


def _logistic(t: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-t))


_HEADS: dict[str, Callable[[LayerSpec], nn.Module]] = {
    "yolo": _Yolo, "Gaussian_yolo": _GaussianYolo, "region": _Region, "detection": _Detection}
assert set(_HEADS) == set(HEAD_TYPES)
