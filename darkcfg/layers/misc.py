"""torch modules for Darknet's smaller section types (crop, reorg, reorg3d, scale_channels, sam,
local_avgpool, batchnorm, empty, implicit, normalization, local).

Each reproduces the CPU inference path of AlexeyAB/darknet's *_layer.c; see the parsers in
darkcfg.sections.misc for the shapes and the cases rejected up front.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import LayerSpec
from ..sections.misc import (CropOptions, ImplicitOptions, LocalAvgpoolOptions, LocalOptions,
                             NormalizationOptions, ReorgOptions)
from ._common import Activation, BatchNorm2d, PoolWindow, builds, pad_or_crop
from .core import Identity

__all__ = ["Crop", "Reorg", "Reorg3d", "ScaleChannels", "Sam", "LocalAvgpool", "Batchnorm",
           "Implicit", "Normalization", "Local", "reorg_gather", "reorg_scatter"]


# --- [crop] -----------------------------------------------------------------------------------

class Crop(nn.Module):
    """Centred crop (Darknet's inference path), values mapped x*2-1 unless noadjust=1."""

    def __init__(self, o: CropOptions) -> None:
        super().__init__()
        self.opts = o

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        h, w = x.shape[-2:]
        top, left = (h - o.crop_height) // 2, (w - o.crop_width) // 2
        y = x[:, :, top:top + o.crop_height, left:left + o.crop_width]
        return y if o.noadjust else y * 2 - 1

    def extra_repr(self) -> str:
        o = self.opts
        return f"{o.crop_width}x{o.crop_height}, noadjust={int(o.noadjust)}"


@builds("crop")
def build_crop(spec: LayerSpec) -> nn.Module:
    return Crop(spec.options)


# --- reorg_cpu ----------------------------------------------------------------------------------
# Darknet's reorg_cpu(x, w, h, c, stride, forward, out) pairs an array A of shape (c, h, w) with an
# array B of shape (c/s², h*s, w*s): A[(dy*s + dx)*c/s² + c2, j, i] = B[c2, j*s + dy, i*s + dx].
# forward=0 fills A from B ("gather"), forward=1 fills B from A ("scatter"); both work on the flat
# buffers, whatever shape the caller later reads them as.

def reorg_gather(b: Tensor, c: int, h: int, w: int, s: int) -> Tensor:
    """reorg_cpu(forward=0): flat B (N, c*h*w) -> flat A (N, c*h*w)."""
    n = b.shape[0]
    a = b.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
    return a.reshape(n, c * h * w)


def reorg_scatter(a: Tensor, c: int, h: int, w: int, s: int) -> Tensor:
    """reorg_cpu(forward=1): flat A (N, c*h*w) -> flat B (N, c*h*w)."""
    n = a.shape[0]
    b = a.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
    return b.reshape(n, c * h * w)


class Reorg(nn.Module):
    """[reorg] (Darknet's REORG_OLD, yolov2): reorg_cpu called with the *input* dims.

    Forward reads the input buffer as B and its A is the output, read as (C*s², H/s, W/s) - not a
    clean space-to-depth; reverse=1 scatters the input into a (C/s², H*s, W*s) map."""

    def __init__(self, o: ReorgOptions) -> None:
        super().__init__()
        self.stride = o.stride
        self.reverse = o.reverse

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        s = self.stride
        flat = x.reshape(n, -1)
        if self.reverse:
            return reorg_scatter(flat, c, h, w, s).reshape(n, c // (s * s), h * s, w * s)
        return reorg_gather(flat, c, h, w, s).reshape(n, c * s * s, h // s, w // s)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, reverse={int(self.reverse)}"


class Reorg3d(nn.Module):
    """[reorg3d] (Darknet's REORG): reorg_cpu called with the *output* dims.

    Forward is a true space-to-depth, out[(dy*s+dx)*C + c, y, x] = in[c, y*s+dy, x*s+dx]; an input
    not divisible by the stride contributes its top-left divisible part (Darknet reads it with a
    wrong row pitch). reverse=1 scatters the input read as (C/s², H*s, W*s) - which is not the
    inverse of the forward."""

    def __init__(self, o: ReorgOptions) -> None:
        super().__init__()
        self.stride = o.stride
        self.reverse = o.reverse

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        s = self.stride
        if self.reverse:
            oc, oh, ow = c // (s * s), h * s, w * s
            return reorg_scatter(x.reshape(n, -1), oc, oh, ow, s).reshape(n, oc, oh, ow)
        oh, ow = h // s, w // s
        x = x[:, :, :oh * s, :ow * s]
        return reorg_gather(x.reshape(n, -1), c * s * s, oh, ow, s).reshape(n, c * s * s, oh, ow)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, reverse={int(self.reverse)}"


@builds("reorg")
def build_reorg(spec: LayerSpec) -> nn.Module:
    return Reorg(spec.options)


@builds("reorg3d")
def build_reorg3d(spec: LayerSpec) -> nn.Module:
    return Reorg3d(spec.options)


# --- [scale_channels] / [sam] -------------------------------------------------------------------

class ScaleChannels(nn.Module):
    """`from` output times the previous layer's per-channel (1x1xC) or per-position (HxWx1) map."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.act = Activation(activation)

    def forward(self, scale: Tensor, source: Tensor) -> Tensor:
        return self.act(source * scale)


class Sam(ScaleChannels):
    """Elementwise previous * from, then the activation."""


@builds("scale_channels")
def build_scale_channels(spec: LayerSpec) -> nn.Module:
    return ScaleChannels(spec.options.activation)


@builds("sam")
def build_sam(spec: LayerSpec) -> nn.Module:
    return Sam(spec.options.activation)


# --- [local_avgpool] ----------------------------------------------------------------------------

class LocalAvgpool(PoolWindow):
    """Average over the taps of each window inside the image (windows placed as maxpool's)."""

    def __init__(self, o: LocalAvgpoolOptions) -> None:
        super().__init__(o.size, o.stride_y, o.stride_x, o.padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.symmetric:
            return F.avg_pool2d(x, self.size, self.stride, self.padding // 2,
                                count_include_pad=False)
        if self.padding_is_wasteful(*x.shape[-2:]):
            return self._clipped_mean(x)
        pads = self.pads(*x.shape[-2:])
        sums = F.avg_pool2d(pad_or_crop(x, pads), self.size, self.stride, divisor_override=1)
        ones = pad_or_crop(x.new_ones(1, 1, *x.shape[-2:]), pads)
        counts = F.avg_pool2d(ones, self.size, self.stride, divisor_override=1)
        return sums / counts


    def _clipped_mean(self, x: Tensor) -> Tensor:
        """Windows far larger than the map: sums over each window's part inside the map, one
        axis after the other, divided by that part's size (a window of padding only is 0/0, NaN,
        as in Darknet and the padded path)."""
        counts = []
        for axis, dim in ((0, -2), (1, -1)):
            spans = self.spans(x.shape[dim], axis)
            x = torch.cat([x.narrow(dim, a, max(b - a, 0)).sum(dim, keepdim=True)
                           for a, b in spans], dim)
            counts.append(torch.tensor([max(b - a, 0) for a, b in spans], dtype=x.dtype))
        n = counts[0].view(-1, 1) * counts[1].view(1, -1)
        return x / n


@builds("local_avgpool")
def build_local_avgpool(spec: LayerSpec) -> nn.Module:
    return LocalAvgpool(spec.options)


# --- [batchnorm] / [empty] ----------------------------------------------------------------------

class Batchnorm(nn.Module):
    """Darknet's [batchnorm] section: BN with rolling statistics, no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x)


@builds("batchnorm")
def build_batchnorm(spec: LayerSpec) -> nn.Module:
    return Batchnorm(spec.options.channels)


@builds("empty")
def build_empty(spec: LayerSpec) -> nn.Module:
    return Identity()


# --- [implicit] ---------------------------------------------------------------------------------

class Implicit(nn.Module):
    """A learned (filters, atoms, 1) tensor repeated for every image of the batch."""

    def __init__(self, o: ImplicitOptions) -> None:
        super().__init__()
        init = torch.empty(o.filters, o.atoms, 1).uniform_(o.mean - o.std, o.mean + o.std)
        self.weight = nn.Parameter(init)

    def forward(self, x: Tensor) -> Tensor:
        # repeat, not expand: a view of a parameter would require grad even under no_grad
        return self.weight.unsqueeze(0).repeat(x.shape[0], 1, 1, 1)

    def extra_repr(self) -> str:
        f, a, _ = self.weight.shape
        return f"filters={f}, atoms={a}"


@builds("implicit")
def build_implicit(spec: LayerSpec) -> nn.Module:
    return Implicit(spec.options)


# --- [normalization] (LRN) ----------------------------------------------------------------------

def lrn_window(channels: int, size: int) -> Tensor:
    """Which squared channels Darknet's norms[k] holds (+1, or -1), as a (channels, channels) matrix.

    Darknet starts norms[0] with channels 0..size/2-1, then for k >= 1 adds channel k+size/2 and
    subtracts channel k-(size-1)/2-1. Channel size/2 is never added but is subtracted once k
    reaches `size`, so the windows are not textbook LRN windows."""
    half, back = size // 2, (size - 1) // 2
    k = torch.arange(channels)[:, None]
    j = torch.arange(channels)[None, :]
    added = (j < half) | ((j > half) & (j <= k + half))
    removed = j <= k - back - 1
    return added.double() - removed.double()


class Normalization(nn.Module):
    """x / (kappa + alpha * sum of x² over Darknet's channel window) ** beta."""

    def __init__(self, channels: int, o: NormalizationOptions) -> None:
        super().__init__()
        self.opts = o
        window = lrn_window(channels, o.size).float()
        self.register_buffer("window", window[:, :, None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        sums = F.conv2d(x * x, self.window.to(x.dtype))
        return x * (o.kappa + o.alpha * sums).pow(-o.beta)

    def extra_repr(self) -> str:
        o = self.opts
        return f"size={o.size}, alpha={o.alpha}, beta={o.beta}, kappa={o.kappa}"


@builds("normalization")
def build_normalization(spec: LayerSpec) -> nn.Module:
    return Normalization(spec.in_shape.c, spec.options)


# --- [local] ------------------------------------------------------------------------------------

class Local(nn.Module):
    """Locally connected layer: a separate (filters, C, size, size) kernel at every output location.

    `weight` is (locations, filters, C, size, size) and `bias` (filters, out_h, out_w), the
    layouts of Darknet's file."""

    def __init__(self, in_c: int, out_h: int, out_w: int, o: LocalOptions) -> None:
        super().__init__()
        self.opts = o
        self.out_hw = (out_h, out_w)
        locations = out_h * out_w
        bound = math.sqrt(2.0 / (o.size * o.size * in_c))
        self.weight = nn.Parameter(
            torch.empty(locations, o.filters, in_c, o.size, o.size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(o.filters, out_h, out_w))
        self.act = Activation(o.activation)

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        n = x.shape[0]
        cols = F.unfold(x, o.size, padding=o.pad, stride=o.stride)  # (N, C*k*k, locations)
        w = self.weight.reshape(self.weight.shape[0], o.filters, -1)
        y = torch.einsum("lfk,nkl->nfl", w, cols)
        y = y.reshape(n, o.filters, *self.out_hw) + self.bias
        return self.act(y)

    def extra_repr(self) -> str:
        o = self.opts
        return f"filters={o.filters}, size={o.size}, stride={o.stride}, pad={o.pad}"


@builds("local")
def build_local(spec: LayerSpec) -> nn.Module:
    out = spec.out_shape
    return Local(spec.in_shape.c, out.h, out.w, spec.options)
