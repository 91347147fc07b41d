"""torch modules for detection heads and loss-only layers ([region], [detection], [Gaussian_yolo],
[cost], [contrastive]) plus :func:`softmax_tree`, the grouped softmax of yolo9000's hierarchy.

Heads only apply the activations Darknet's inference forward puts into ``l.output``; decoding boxes
is left to a decoder that reads the typed options.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from ..graph import LayerSpec
from ..sections.heads import (REGION_CLASSES, REGION_OBJECTNESS,
                              ContrastiveOptions, DetectionOptions, GaussianYoloOptions,
                              RegionOptions)
from ._common import builds, softmax_tree, tree_group_sizes

__all__ = ["softmax_tree", "tree_group_sizes", "Region", "Detection", "GaussianYolo", "Zeros"]


class Region(nn.Module):
    """Darknet's [region] l.output (activations only): logistic on entry 4, then softmax (or the
    softmax tree) over `softmax_count` entries from entry 5, per anchor and cell. x, y, w, h stay
    raw (decoding applies logistic/exp).

    The natural output keeps the input layout (N, num*entries, H, W), anchor-major; Darknet's
    l.output is transposed to [cell][anchor][entry] (see :meth:`darknet_order`)."""

    def __init__(self, o: RegionOptions) -> None:
        super().__init__()
        self.opts = o
        self.num = o.num
        self.entries = o.entries
        self.count = o.softmax_count
        if o.tree is not None:
            self.register_buffer("tree_sizes", tree_group_sizes(o.tree), persistent=False)
        else:
            self.tree_sizes = None

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, self.num, self.entries, h, w)
        lo, hi = REGION_CLASSES, REGION_CLASSES + self.count
        parts = [y[:, :, :REGION_OBJECTNESS], torch.sigmoid(y[:, :, REGION_OBJECTNESS:lo])]
        if self.tree_sizes is not None:
            parts.append(softmax_tree(y[:, :, lo:hi], self.tree_sizes, dim=2))
        elif self.count:
            parts.append(torch.softmax(y[:, :, lo:hi], dim=2))
        parts.append(y[:, :, hi:])
        return torch.cat(parts, 2).reshape(n, c, h, w)

    def darknet_order(self, y: Tensor) -> Tensor:
        """(N, H*W, num, entries): Darknet's l.output order after its flatten()."""
        n, c, h, w = y.shape
        return y.reshape(n, self.num, self.entries, h * w).permute(0, 3, 1, 2).contiguous()

    def from_darknet_order(self, d: Tensor, h: int, w: int) -> Tensor:
        """Inverse of :meth:`darknet_order` for an H x W grid."""
        n = d.shape[0]
        return d.reshape(n, h * w, self.num, self.entries).permute(0, 2, 3, 1).reshape(
            n, self.num * self.entries, h, w)

    def extra_repr(self) -> str:
        o = self.opts
        kind = f"tree={o.tree.n}" if o.tree is not None else f"softmax={int(o.softmax)}"
        return f"num={o.num}, coords={o.coords}, classes={o.classes}, {kind}"


@builds("region")
def build_region(spec: LayerSpec) -> nn.Module:
    return Region(spec.options)


class Detection(nn.Module):
    """yolov1's [detection]: flat [side*side*classes | side*side*num objectness | boxes]; with
    softmax=1 each cell's class scores get a softmax. Output (N, inputs, 1, 1)."""

    def __init__(self, o: DetectionOptions) -> None:
        super().__init__()
        self.opts = o

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        n = x.shape[0]
        flat = x.reshape(n, -1)
        if o.softmax:
            cells = o.side * o.side
            k = cells * o.classes
            probs = torch.softmax(flat[:, :k].reshape(n, cells, o.classes), -1).reshape(n, k)
            flat = torch.cat((probs, flat[:, k:]), 1)
        return flat[:, :, None, None]

    def extra_repr(self) -> str:
        o = self.opts
        return f"side={o.side}, num={o.num}, classes={o.classes}, softmax={int(o.softmax)}"


@builds("detection")
def build_detection(spec: LayerSpec) -> nn.Module:
    return Detection(spec.options)


class GaussianYolo(nn.Module):
    """[Gaussian_yolo] l.output: logistic on x, x_sigma, y, y_sigma, w_sigma, h_sigma, objectness
    and classes (w, h stay raw), then x, y <- x*scale_x_y - (scale_x_y - 1)/2.
    Layout [anchor][entry][h][w]."""

    # entries passed through without the logistic: w and h (log-space sizes)
    RAW = (4, 6)

    def __init__(self, o: GaussianYoloOptions) -> None:
        super().__init__()
        self.opts = o
        self.anchors_per_cell = len(o.mask)
        self.entries = o.entries
        raw = torch.zeros(self.entries, 1, 1, dtype=torch.bool)
        raw[list(self.RAW)] = True
        self.register_buffer("raw", raw, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        s = self.opts.scale_x_y
        n, c, h, w = x.shape
        y = x.reshape(n, self.anchors_per_cell, self.entries, h, w)
        y = torch.where(self.raw, y, torch.sigmoid(y))
        shift = 0.5 * (s - 1)
        y = torch.cat((y[:, :, 0:1] * s - shift, y[:, :, 1:2], y[:, :, 2:3] * s - shift,
                       y[:, :, 3:]), 2)
        return y.reshape(n, c, h, w)

    def extra_repr(self) -> str:
        o = self.opts
        return f"classes={o.classes}, mask={list(o.mask)}, scale_x_y={o.scale_x_y}"


@builds("Gaussian_yolo")
def build_gaussian_yolo(spec: LayerSpec) -> nn.Module:
    return GaussianYolo(spec.options)


class Zeros(nn.Module):
    """Layers whose inference l.output Darknet never writes ([cost], CPU [contrastive]): zeros."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


@builds("cost")
def build_cost(spec: LayerSpec) -> nn.Module:
    return Zeros()


@builds("contrastive")
def build_contrastive(spec: LayerSpec) -> nn.Module:
    assert isinstance(spec.options, ContrastiveOptions)
    return Zeros()
