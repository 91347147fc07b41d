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
from ._common import (Activation, BatchNorm1d, BatchNorm2d, PoolWindow, builds, conv2d, linear,
                      softmax_tree, window_pads, pad_or_crop)

__all__ = ["Convolutional", "Blur", "set_xnor_inverted_bits", "Route", "Shortcut", "Maxpool",
           "Upsample", "GlobalAvgpool", "Identity",
           "Softmax", "Connected", "Yolo"]


class Blur(nn.Module):
    """Darknet's fixed antialiasing sub-layer: a depthwise linear conv, no bias, never loaded.

    `kind` 2: 2x2 box (1/4 each), padding 0; otherwise 3x3 [1,2,1]x[1,2,1]/16, padding 1 (zeros).
    The weights are a non-persistent buffer, so they are not in the state_dict."""

    def __init__(self, channels: int, kind: int, stride_y: int, stride_x: int) -> None:
        super().__init__()
        if kind == 2:
            k, self.pad = torch.full((2, 2), 0.25), 0
        else:
            row = torch.tensor([1.0, 2.0, 1.0])
            k, self.pad = torch.outer(row, row) / 16, 1
        weight = k.expand(channels, 1, *k.shape).contiguous()
        self.register_buffer("weight", weight, persistent=False)
        self.stride = (stride_y, stride_x)
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype)
        return F.conv2d(x, w, stride=self.stride, padding=self.pad, groups=w.shape[0])

    def extra_repr(self) -> str:
        return f"{'2x2 box' if self.kind == 2 else '3x3 [1,2,1]^2/16'}, stride={self.stride}"


def _sign_ste(x: Tensor) -> Tensor:
    """x > 0 ? 1 : -1 (Darknet's binarization, 0 -> -1) with a straight-through gradient."""
    s = torch.where(x > 0, 1.0, -1.0).to(x.dtype)
    return s + (x - x.detach()) if x.requires_grad else s  # exactly s, gradient 1


def _live_range(extent: int, size: int, stride: int, dilation: int, padding: int) -> range:
    """Kernel taps along one axis that read the map (not padding) at some output position:
    tap i reads index y*stride + i*dilation - padding*dilation for outputs y = 0..out-1."""
    out = cdiv(extent + 2 * padding - size, stride) + 1
    before = padding * dilation
    first = max(0, -(-(before - (out - 1) * stride) // dilation))  # ceil division
    last = min(size - 1, (before + extent - 1) // dilation)
    return range(first, max(first, last + 1))


class Convolutional(nn.Module):
    """Darknet conv: output size ignores dilation, im2col pads by padding*dilation (zeros).

    Optional parts: `xnor=1` (binary weights and inputs, below) and `antialiasing` (the conv runs at
    stride 1, then :class:`Blur` applies the stride), as Darknet's forward_convolutional_layer.

    xnor in eval mode follows Darknet's inference pipeline (fuse_conv_batchnorm, then
    calculate_binary_weights and the bit GEMM): BN is folded into the weights in double precision,
    each filter becomes sign(w) * mean|w| (sign(0) = -1), the input x > 0 ? 1 : -1, padding reads as
    -1 (a zero bit), the fused bias is added, then the activation (linear when bin_output is kept).
    With stride_x != stride_y Darknet's inference skips the bit path: a plain float conv.

    `xnor_inverted_bits`: Darknet inverts the packed weight bits of c % 32 == 0 layers when
    `gpu_index >= 0`, which is libdarknet's default even in CPU-only builds (the `darknet` program
    sets -1). That turns each output into -mean * (dot + 2 * pad64) + bias, pad64 being the bits
    that round size*size*c up to a multiple of 64. Off by default (the `darknet` CLI's numbers);
    set it (see :func:`set_xnor_inverted_bits`) to reproduce a libdarknet caller.

    Darknet's XNOR path computes image 0 of a batch only (it returns inside its batch loop); darkcfg
    computes every image. In train mode the layer binarizes the unfused weights and the input
    (zero padding), then BN, with straight-through gradients, as Darknet's training forward does.
    """

    xnor_inverted_bits = False

    def __init__(self, in_c: int, o: ConvolutionalOptions) -> None:
        super().__init__()
        d = o.dilation
        # torch's own padding gives Darknet's size for every input when this holds; else pad by hand.
        self.exact = d == 1 or o.size == 2 * o.padding + 1
        self.opts = o
        self.conv = conv2d(in_c, o.filters, o.size, stride=(o.stride_y, o.stride_x),
                           padding=o.padding * d if self.exact else 0, dilation=d,
                           groups=o.groups, bias=not o.batch_normalize)
        self.bn = BatchNorm2d(o.filters) if o.batch_normalize else None
        if self.bn is not None and o.dontloadscales:
            # Darknet never reads these and keeps its initial values: variance 0, not 1.
            self.bn.running_var.zero_()
        self.act = Activation(o.effective_activation, fresh_input=True)
        self.blur = Blur(o.filters, o.antialiasing, o.aa_stride_y, o.aa_stride_x) \
            if o.antialiasing else None

    def forward(self, x: Tensor) -> Tensor:
        o = self.opts
        if o.xnor and (self.training or o.xnor_bit_path):
            x = self._xnor(x)
        else:
            x = self._float(x)
        x = self.act(x)
        return x if self.blur is None else self.blur(x)

    def _float(self, x: Tensor) -> Tensor:
        o = self.opts
        live = self._live_taps(*x.shape[-2:]) if o.padding * o.dilation > 16 else None
        if live is not None:
            x = self._live_conv(x, *live)
        else:
            if not self.exact:
                x = self._pad(x)
            x = self.conv(x)
        return x if self.bn is None else self.bn(x)

    def _pad(self, x: Tensor, first: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None
             ) -> Tensor:
        """Pad (or crop) so a plain conv puts Darknet's windows, starting with tap `first`
        (row, column) of a `size` kernel (default: the whole kernel)."""
        o = self.opts
        h, w = x.shape[-2:]
        d = o.dilation
        kh, kw = size or (o.size, o.size)
        out_h, out_w = self._out_size(h, w)
        top, bottom = window_pads(h, out_h, d * (kh - 1) + 1, o.stride_y,
                                  o.padding * d - first[0] * d)
        left, right = window_pads(w, out_w, d * (kw - 1) + 1, o.stride_x,
                                  o.padding * d - first[1] * d)
        return pad_or_crop(x, (left, right, top, bottom))

    def _out_size(self, h: int, w: int) -> tuple[int, int]:
        """Darknet's output size, which ignores dilation: (h + 2*padding - size)/stride + 1."""
        o = self.opts
        return (cdiv(h + 2 * o.padding - o.size, o.stride_y) + 1,
                cdiv(w + 2 * o.padding - o.size, o.stride_x) + 1)

    def _live_taps(self, h: int, w: int) -> tuple[range, range] | None:
        """The kernel rows and columns that read the map at some output position, when others
        only ever read padding (zeros): a huge `dilation` or padding on a small map would
        otherwise pad it to gigabytes. None when every tap reads the map somewhere."""
        o = self.opts
        rows = _live_range(h, o.size, o.stride_y, o.dilation, o.padding)
        cols = _live_range(w, o.size, o.stride_x, o.dilation, o.padding)
        if len(rows) == len(cols) == o.size:
            return None
        return rows, cols

    def _live_conv(self, x: Tensor, rows: range, cols: range) -> Tensor:
        """The convolution with only the live taps (the others multiply zeros)."""
        c = self.conv
        n = x.shape[0]
        if not len(rows) or not len(cols):  # every tap reads padding: the bias alone
            y = x.new_zeros(n, c.out_channels, *self._out_size(*x.shape[-2:]))
            return y if c.bias is None else y + c.bias.view(1, -1, 1, 1)
        weight = c.weight[:, :, rows.start:rows.stop, cols.start:cols.stop]
        x = self._pad(x, (rows.start, cols.start), (len(rows), len(cols)))
        return F.conv2d(x, weight, c.bias, c.stride, 0, c.dilation, c.groups)

    # -- xnor -------------------------------------------------------------------------------------
    def _xnor(self, x: Tensor) -> Tensor:
        if self.training:
            return self._xnor_train(x)
        o = self.opts
        p = o.padding
        w, b = self._fused()
        mean = w.abs().flatten(1).mean(1)
        xb = F.pad(_sign_ste(x), (p, p, p, p), value=-1.0)
        dot = F.conv2d(xb, _sign_ste(w), stride=o.stride_x)
        if self.xnor_inverted_bits and w.shape[1] % 32 == 0:
            k = w[0].numel()
            dot = -(dot + 2 * ((64 - k % 64) % 64))
        return dot * mean.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    def _xnor_train(self, x: Tensor) -> Tensor:
        """Darknet's training forward: binarized unfused weights and input, float im2col (zero
        padding), then BN with batch statistics."""
        w = self.conv.weight
        wb = _sign_ste(w) * w.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
        xb = _sign_ste(x)
        if not self.exact:
            xb = self._pad(xb)
        c = self.conv
        y = F.conv2d(xb, wb, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return y if self.bn is None else self.bn(y)

    def fold_batchnorm(self, done: dict[int, nn.Parameter]) -> None:
        """DarknetModel.fuse(): BN folded into the conv. `done` maps an already fused weight to
        its new bias, so share_index layers take their owner's fused tensors, as Darknet does."""
        if self.bn is None:
            return
        w = self.conv.weight
        if id(w) not in done:
            wf, bf = self._fused()
            w.copy_(wf)
            done[id(w)] = nn.Parameter(bf, requires_grad=w.requires_grad)
        self.conv.bias = done[id(w)]
        self.bn = None

    def _fused(self) -> tuple[Tensor, Tensor]:
        """fuse_conv_batchnorm: w * scale/sqrt(var + 1e-5), bias - scale*mean/sqrt(var + 1e-5),
        computed in double and stored as float32."""
        w = self.conv.weight
        if self.bn is None:
            return w, self.conv.bias
        bn = self.bn
        inv = bn.weight.double() / torch.sqrt(bn.running_var.double() + 1e-5)
        wf = (w.double() * inv.view(-1, 1, 1, 1)).to(w.dtype)
        bf = (bn.bias.double() - bn.running_mean.double() * inv).to(w.dtype)
        return wf, bf


def set_xnor_inverted_bits(model: nn.Module, enabled: bool = True) -> None:
    """Reproduce libdarknet's xnor numbers (gpu_index 0), see :class:`Convolutional`."""
    for m in model.modules():
        if isinstance(m, Convolutional):
            m.xnor_inverted_bits = enabled


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
    """prev + each `from` output over their common leading channels (Darknet adds by flat index).

    With `weights_type` each input is first scaled by its normalized weight
    (shortcut_multilayer_cpu): relu: relu(w_i) / (1e-4 + sum relu(w)), softmax:
    exp(w_i - max) / (1e-4 + sum exp(w - max)),
    over the n+1 inputs, per feature (one weight per input) or per channel. `weight` has shape
    (n+1, 1) or (n+1, C) and is read from the file. `strided`: pjreddie's shortcut_cpu (see
    darkcfg.sections.core)."""

    def __init__(self, o: ShortcutOptions, channels: int) -> None:
        super().__init__()
        self.opts = o
        self.act = Activation(o.activation)
        if o.weights_type is not None:
            k = channels if o.weights_type == "per_channel" else 1
            # Darknet initializes every weight to 1 (make_shortcut_layer).
            self.weight = nn.Parameter(torch.ones(len(o.sources) + 1, k))

    def forward(self, prev: Tensor, *sources: Tensor) -> Tensor:
        o = self.opts
        if o.strided:
            out = self._strided(prev, sources[0])
        elif o.weights_type is not None:
            out = self._weighted(prev, sources)
        else:
            out = prev
            for src in sources:
                out = _add_leading(out, src)
        return self.act(out)

    def normalized_weights(self) -> Tensor:
        w = self.weight
        if self.opts.normalization == "relu":
            r = torch.relu(w)
            return r / (1e-4 + r.sum(0))
        e = torch.exp(w - w.max(0).values)
        return e / (1e-4 + e.sum(0))

    def _weighted(self, prev: Tensor, sources: tuple[Tensor, ...]) -> Tensor:
        wn = self.normalized_weights()
        c = prev.shape[1]
        out = prev * wn[0].view(1, -1, 1, 1)
        for i, src in enumerate(sources, 1):
            m = min(c, src.shape[1])
            out = _add_leading(out, src[:, :m] * wn[i].view(1, -1, 1, 1)[:, :m])
        return out

    def _strided(self, prev: Tensor, src: Tensor) -> Tensor:
        o = self.opts
        c1, h1, w1 = src.shape[1:]
        c2, h2, w2 = prev.shape[1:]
        stride, sample = max(1, w1 // w2), max(1, w2 // w1)
        mc, mh, mw = min(c1, c2), min(h1, h2), min(w1, w2)
        at = (slice(None), slice(0, mc), slice(0, mh * sample, sample),
              slice(0, mw * sample, sample))
        add = src[:, :mc, :mh * stride:stride, :mw * stride:stride]
        out = prev.clone()
        out[at] = o.alpha * prev[at] + o.beta * add
        return out

    def extra_repr(self) -> str:
        o = self.opts
        if o.strided:
            return f"strided (pjreddie), alpha={o.alpha}, beta={o.beta}"
        if o.weights_type is None:
            return ""
        return f"weights={o.weights_type}, normalization={o.normalization}"


def _add_leading(out: Tensor, src: Tensor) -> Tensor:
    """out + src over their common leading channels; out keeps its channel count."""
    c, cs = out.shape[1], src.shape[1]
    if cs == c:
        return out + src
    if cs > c:
        return out + src[:, :c]
    return torch.cat((out[:, :cs] + src, out[:, cs:]), 1)


@builds("shortcut")
def build_shortcut(spec: LayerSpec) -> nn.Module:
    return Shortcut(spec.options, spec.in_shape.c)


class Maxpool(PoolWindow):
    """Max over windows starting at -padding//2; taps outside the image never win (-inf padding).

    `antialiasing`: the max runs at stride 1, then :class:`Blur` applies the stride.
    `depth` (maxpool_depth=1): output channel g is the max over input channels g, g+N, g+2N, ...
    (N = out_channels); channels without any input stay -FLT_MAX, as in Darknet."""

    def __init__(self, o: MaxpoolOptions, channels: int) -> None:
        super().__init__(o.size, o.stride_y, o.stride_x, o.padding)
        self.opts = o
        self.blur = Blur(channels, o.antialiasing, o.aa_stride_y, o.aa_stride_x) \
            if o.antialiasing else None

    def forward(self, x: Tensor) -> Tensor:
        if self.opts.depth:
            return self._depth(x)
        y = self._max(x)
        return y if self.blur is None else self.blur(y)

    def _max(self, x: Tensor) -> Tensor:
        if self.size == 1 and self.stride == (1, 1):
            return x
        if self.symmetric:  # max_pool2d pads with -inf itself
            return F.max_pool2d(x, self.size, self.stride, self.padding // 2)
        if self.padding_is_wasteful(*x.shape[-2:]):
            return self._clipped_max(x)
        x = pad_or_crop(x, self.pads(*x.shape[-2:]), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)

    def _clipped_max(self, x: Tensor) -> Tensor:
        """Max over each window's part inside the map, one axis after the other (a max over a
        rectangle is a max of maxes). A window of padding only gives Darknet's -FLT_MAX."""
        for axis, dim in ((0, -2), (1, -1)):
            low = torch.finfo(x.dtype).min
            parts = [x.narrow(dim, a, b - a).amax(dim, keepdim=True) if b > a else
                     x.narrow(dim, 0, 1).clamp(low, low) for a, b in self.spans(x.shape[dim], axis)]
            x = torch.cat(parts, dim)
        return x

    def _depth(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = self.opts.out_channels
        groups = -(-c // g)
        if groups * g != c:
            fill = torch.finfo(x.dtype).min  # Darknet's -FLT_MAX start value
            x = F.pad(x, (0, 0, 0, 0, 0, groups * g - c), value=fill)
        return x.reshape(n, groups, g, h, w).amax(1)

    def extra_repr(self) -> str:
        o = self.opts
        if o.depth:
            return f"depth, out_channels={o.out_channels}"
        return super().extra_repr()


@builds("maxpool")
def build_maxpool(spec: LayerSpec) -> nn.Module:
    return Maxpool(spec.options, spec.in_shape.c)


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
    """Softmax over `groups` contiguous flat chunks of each image's values, at a temperature;
    with a tree, over each group of sibling nodes instead (Darknet then ignores `groups`)."""

    def __init__(self, o: SoftmaxOptions) -> None:
        super().__init__()
        self.groups = o.groups
        self.temperature = o.temperature
        self.tree = o.tree

    def forward(self, x: Tensor) -> Tensor:
        if self.tree is not None:
            return softmax_tree(x.reshape(x.shape[0], -1) / self.temperature, self.tree).reshape(x.shape)
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
        self.fc = linear(inputs, o.outputs, bias=not o.batch_normalize)
        self.bn = BatchNorm1d(o.outputs) if o.batch_normalize else None
        self.act = Activation(o.activation, fresh_input=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc(x.flatten(1))
        if self.bn is not None:
            y = self.bn(y)
        return self.act(y)[:, :, None, None]

    def fold_batchnorm(self, done: dict[int, nn.Parameter]) -> None:
        """DarknetModel.fuse(): BN folded into the weights in float64, like the conv's."""
        if self.bn is None:
            return
        bn, w = self.bn, self.fc.weight
        inv = bn.weight.double() / torch.sqrt(bn.running_var.double() + 1e-5)
        w.copy_((w.double() * inv[:, None]).to(w.dtype))
        bias = (bn.bias.double() - bn.running_mean.double() * inv).to(w.dtype)
        self.fc.bias = nn.Parameter(bias, requires_grad=w.requires_grad)
        self.bn = None


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

