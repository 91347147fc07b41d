"""torch modules for the core section types (conv, route, shortcut, pools, upsample, connected, yolo).

A builder takes a :class:`LayerSpec` (typed options, shapes) and returns an ``nn.Module`` whose
forward takes the tensors of ``spec.inputs`` in order. Parameter names are part of the public
state_dict scheme (``conv.weight``, ``bn.running_var``, ``fc.weight``): do not rename them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import LayerSpec, cdiv
from ..sections.core import (ConnectedOptions, ConvolutionalOptions, MaxpoolOptions, RouteOptions,
                             ShortcutOptions, SoftmaxOptions, UpsampleOptions, YoloOptions)
from ._common import Activation, BatchNorm1d, BatchNorm2d, builds, window_pads

__all__ = ["Convolutional", "Route", "Shortcut", "Maxpool", "Upsample", "GlobalAvgpool", "Identity",
           "Softmax", "Connected", "Yolo"]


class Convolutional(nn.Module):
    """Darknet conv: output size ignores dilation, im2col pads by padding*dilation (zeros)."""

    def __init__(self, in_c: int, o: ConvolutionalOptions) -> None:
        super().__init__()
        d = o.dilation
        # torch's own padding gives Darknet's size for every input when this holds; else pad by hand.
        self.exact = d == 1 or o.size == 2 * o.padding + 1
        self.opts = o
        self.conv = nn.Conv2d(in_c, o.filters, o.size, stride=(o.stride_y, o.stride_x),
                              padding=o.padding * d if self.exact else 0, dilation=d,
                              groups=o.groups, bias=not o.batch_normalize)
        self.bn = BatchNorm2d(o.filters) if o.batch_normalize else None
        if self.bn is not None and o.dontloadscales:
            # Darknet never reads these and keeps its initial values: variance 0, not 1.
            self.bn.running_var.zero_()
        self.act = Activation(o.activation)

    def forward(self, x: Tensor) -> Tensor:
        if not self.exact:
            x = self._pad(x)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def _pad(self, x: Tensor) -> Tensor:
        o = self.opts
        h, w = x.shape[-2:]
        eff = o.dilation * (o.size - 1) + 1
        out_h = cdiv(h + 2 * o.padding - o.size, o.stride_y) + 1
        out_w = cdiv(w + 2 * o.padding - o.size, o.stride_x) + 1
        top, bottom = window_pads(h, out_h, eff, o.stride_y, o.padding * o.dilation)
        left, right = window_pads(w, out_w, eff, o.stride_x, o.padding * o.dilation)
        return F.pad(x, (left, right, top, bottom))


@builds("convolutional")
def build_convolutional(spec: LayerSpec) -> nn.Module:
    return Convolutional(spec.in_shape.c, spec.options)


class Route(nn.Module):
    """Concatenate inputs along channels; with groups, take chunk `group_id` of each input."""

    def __init__(self, o: RouteOptions) -> None:
        super().__init__()
        self.groups = o.groups
        self.group_id = o.group_id

    def forward(self, *xs: Tensor) -> Tensor:
        if self.groups > 1:
            parts = []
            for x in xs:
                step = x.shape[1] // self.groups
                parts.append(x[:, self.group_id * step:(self.group_id + 1) * step])
            xs = tuple(parts)
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, group_id={self.group_id}" if self.groups > 1 else ""


@builds("route")
def build_route(spec: LayerSpec) -> nn.Module:
    return Route(spec.options)


class Shortcut(nn.Module):
    """prev + each `from` output over their common leading channels (Darknet adds by flat index)."""

    def __init__(self, o: ShortcutOptions) -> None:
        super().__init__()
        self.act = Activation(o.activation)

    def forward(self, prev: Tensor, *sources: Tensor) -> Tensor:
        out = prev
        c = prev.shape[1]
        for src in sources:
            cs = src.shape[1]
            if cs == c:
                out = out + src
            elif cs > c:
                out = out + src[:, :c]
            else:
                out = torch.cat((out[:, :cs] + src, out[:, cs:]), 1)
        return self.act(out)


@builds("shortcut")
def build_shortcut(spec: LayerSpec) -> nn.Module:
    return Shortcut(spec.options)


class Maxpool(nn.Module):
    """Max over windows starting at -padding//2; taps outside the image never win (-inf padding)."""

    def __init__(self, o: MaxpoolOptions) -> None:
        super().__init__()
        self.size = o.size
        self.stride = (o.stride_y, o.stride_x)
        self.padding = o.padding
        half = o.padding // 2
        # Symmetric padding within torch's limit: let max_pool2d do it (it pads with -inf).
        self.symmetric = o.padding == 2 * half and half <= o.size // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.size == 1 and self.stride == (1, 1):
            return x
        if self.symmetric:
            return F.max_pool2d(x, self.size, self.stride, self.padding // 2)
        h, w = x.shape[-2:]
        sy, sx = self.stride
        out_h = cdiv(h + self.padding - self.size, sy) + 1
        out_w = cdiv(w + self.padding - self.size, sx) + 1
        top, bottom = window_pads(h, out_h, self.size, sy, self.padding // 2)
        left, right = window_pads(w, out_w, self.size, sx, self.padding // 2)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def extra_repr(self) -> str:
        return f"size={self.size}, stride={self.stride}, padding={self.padding}"


@builds("maxpool")
def build_maxpool(spec: LayerSpec) -> nn.Module:
    return Maxpool(spec.options)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling times `scale`; negative stride sums |stride|² blocks instead."""

    def __init__(self, o: UpsampleOptions) -> None:
        super().__init__()
        self.stride = o.stride
        self.scale = o.scale

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        s = self.stride
        if s > 0:
            y = x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)
        else:
            s = -s
            oh, ow = h // s, w // s
            # Darknet reads odd sizes with the wrong row pitch; we use the top-left even part.
            y = x[:, :, :oh * s, :ow * s].reshape(n, c, oh, s, ow, s).sum((3, 5))
        return y * self.scale if self.scale != 1 else y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, scale={self.scale}"


@builds("upsample")
def build_upsample(spec: LayerSpec) -> nn.Module:
    return Upsample(spec.options)


class GlobalAvgpool(nn.Module):
    """Darknet's [avgpool] is always global."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3), keepdim=True)


@builds("avgpool")
def build_avgpool(spec: LayerSpec) -> nn.Module:
    return GlobalAvgpool()


class Identity(nn.Module):
    """Layers that pass their input through in inference ([dropout])."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@builds("dropout")
def build_dropout(spec: LayerSpec) -> nn.Module:
    return Identity()


class Softmax(nn.Module):
    """Softmax over `groups` contiguous flat chunks of each image's values, at a temperature."""

    def __init__(self, o: SoftmaxOptions) -> None:
        super().__init__()
        self.groups = o.groups
        self.temperature = o.temperature

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], self.groups, -1)
        if self.temperature != 1:
            flat = flat / self.temperature
        return torch.softmax(flat, -1).reshape(x.shape)


@builds("softmax")
def build_softmax(spec: LayerSpec) -> nn.Module:
    return Softmax(spec.options)


class Connected(nn.Module):
    """Fully connected over the flattened (C,H,W) input; output shaped (N, outputs, 1, 1)."""

    def __init__(self, inputs: int, o: ConnectedOptions) -> None:
        super().__init__()
        self.fc = nn.Linear(inputs, o.outputs, bias=not o.batch_normalize)
        self.bn = BatchNorm1d(o.outputs) if o.batch_normalize else None
        self.act = Activation(o.activation)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x.flatten(1))
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)[:, :, None, None]


@builds("connected")
def build_connected(spec: LayerSpec) -> nn.Module:
    return Connected(spec.in_shape.size, spec.options)


@builds("activation")
def build_activation(spec: LayerSpec) -> nn.Module:
    return Activation(spec.options.activation)


class Yolo(nn.Module):
    """Darknet's [yolo] l.output: logistic on x, y, objectness and classes (unless new_coords),
    then x, y ← x·scale_x_y − (scale_x_y − 1)/2. Boxes are decoded elsewhere."""

    def __init__(self, o: YoloOptions) -> None:
        super().__init__()
        self.opts = o
        self.anchors_per_cell = len(o.mask)
        self.entries = o.classes + 5

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        n, c, h, w = x.shape
        y = x.reshape(n, self.anchors_per_cell, self.entries, h, w)
        if o.new_coords:
            xy, rest = y[:, :, :2], y[:, :, 2:]
        else:
            xy = torch.sigmoid(y[:, :, :2])
            rest = torch.cat((y[:, :, 2:4], torch.sigmoid(y[:, :, 4:])), 2)
        xy = xy * o.scale_x_y - 0.5 * (o.scale_x_y - 1)
        return torch.cat((xy, rest), 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        o = self.opts
        return f"classes={o.classes}, mask={list(o.mask)}, scale_x_y={o.scale_x_y}, new_coords={int(o.new_coords)}"


@builds("yolo")
def build_yolo(spec: LayerSpec) -> nn.Module:
    return Yolo(spec.options)

