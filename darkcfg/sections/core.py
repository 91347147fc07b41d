"""Parsers for the core section types (net, conv, route, shortcut, pools, upsample, connected, yolo).

One small function per section, registered by name with Darknet's header aliases
(`string_to_layer_type`). Defaults and arithmetic follow AlexeyAB/darknet's parser.c and *_layer.c.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._keys import ACCEPTED_KEYS
from ..activations import read_activation
from ..errors import warn_at
from ..graph import Context, Parsed, Segment, Shape, register_section
from ..options import Options
from ._common import non_negative, out_size, positive, register

__all__ = [
    "ConvolutionalOptions", "RouteOptions", "ShortcutOptions", "MaxpoolOptions", "UpsampleOptions",
    "AvgpoolOptions", "DropoutOptions", "ActivationOptions", "SoftmaxOptions", "ConnectedOptions", "YoloOptions",
    "conv_segments",
]


# --- [net] ------------------------------------------------------------------------------------

def _parse_net_placeholder(opts: Options, ctx: Context) -> Parsed:  # pragma: no cover - never called
    raise AssertionError("[net] is read by graph.parse")


register_section("net", _parse_net_placeholder, aliases=("network",),
                 accepted=ACCEPTED_KEYS.get("net", ()))


# --- [convolutional] --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvolutionalOptions:
    filters: int
    size: int
    stride_x: int
    stride_y: int
    padding: int  # per side, before dilation (Darknet's l.pad)
    dilation: int
    groups: int
    batch_normalize: bool
    activation: str
    share_index: int | None  # absolute index of the layer whose weights this one uses
    flipped: bool
    dontload: bool
    dontloadscales: bool


def conv_segments(o: ConvolutionalOptions, in_c: int) -> tuple[Segment, ...]:
    """Darknet's load_convolutional_weights order: biases, [scales, mean, variance], weights."""
    if o.share_index is not None or o.dontload:
        return ()
    n = o.filters
    segs = [Segment("bn.bias" if o.batch_normalize else "conv.bias", n, "bias")]
    if o.batch_normalize and not o.dontloadscales:
        segs += [Segment("bn.weight", n, "scale"), Segment("bn.running_mean", n, "mean"),
                 Segment("bn.running_var", n, "variance")]
    segs.append(Segment("conv.weight", n * (in_c // o.groups) * o.size * o.size, "weight",
                        transposed=o.flipped))
    return tuple(segs)


@register("convolutional", "conv")
def parse_convolutional(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a convolutional layer")
    filters = positive(opts, "filters", opts.int("filters", 1))
    size = positive(opts, "size", opts.int("size", 1))
    stride = positive(opts, "stride", opts.int("stride", 1))
    stride_x = positive(opts, "stride_x", opts.int("stride_x", stride))
    stride_y = positive(opts, "stride_y", opts.int("stride_y", stride))
    dilation = positive(opts, "dilation", opts.int("dilation", 1))
    if size == 1:
        dilation = 1
    pad = opts.int("pad", 0)
    padding = non_negative(opts, "padding", opts.int("padding", 0))
    if pad:
        padding = size // 2
    groups = positive(opts, "groups", opts.int("groups", 1))
    if shape.c % groups:
        raise opts.error(f"groups={groups} does not divide the {shape.c} input channels", "groups")
    if filters % groups:
        raise opts.error(f"groups={groups} does not divide filters={filters}", "groups")
    bn = opts.int("batch_normalize", 0)
    if opts.int("cbn", 0):
        bn = 2
    activation = read_activation(opts, "logistic")
    share = opts.int("share_index", -1_000_000_000)
    share_index = None
    if share != -1_000_000_000:
        share_index = ctx.resolve(share, "share_index", "share_index")
    flipped = bool(opts.int("flipped", 0))
    for key in ("xnor", "antialiasing", "deform", "assisted_excitation"):
        if opts.int(key, 0):
            raise opts.error(f"{key}={opts.int(key, 0)} is not supported yet", key)
    opts.int("binary", 0)  # binary=1 without xnor changes nothing in inference
    o = ConvolutionalOptions(filters, size, stride_x, stride_y, padding, dilation, groups, bool(bn),
                             activation, share_index, flipped, bool(opts.int("dontload", 0)),
                             bool(opts.int("dontloadscales", 0)))
    if o.batch_normalize and o.dontloadscales:
        warn_at("dontloadscales=1: the BN scales, mean and variance are not read and keep "
                "Darknet's initial values (variance 0, so outputs are scaled by ~316)", opts.loc())
    if share_index is not None:
        owner = ctx.layers[share_index]
        if owner.type != "convolutional" or not _same_weights(owner.options, o, owner.in_shape.c, shape.c):
            raise opts.error(f"share_index={share} points to layer {share_index}, which is not a "
                             f"convolutional layer with the same filters, size, groups and input "
                             f"channels", "share_index")
    out_h = out_size(opts, "input height", shape.h, 2 * padding, size, stride_y)
    out_w = out_size(opts, "input width", shape.w, 2 * padding, size, stride_x)
    nweights = (shape.c // groups) * filters * size * size
    bflops = 2.0 * nweights * out_h * out_w / 1e9
    return Parsed(o, Shape(filters, out_h, out_w), bflops=bflops, segments=conv_segments(o, shape.c),
                  params=(share_index,) if share_index is not None else ())


def _same_weights(a: ConvolutionalOptions, b: ConvolutionalOptions, ca: int, cb: int) -> bool:
    return (a.filters, a.size, a.groups, a.batch_normalize, ca) == \
        (b.filters, b.size, b.groups, b.batch_normalize, cb)


# --- [route] ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteOptions:
    layers: tuple[int, ...]  # absolute
    groups: int
    group_id: int


@register("route")
def parse_route(opts: Options, ctx: Context) -> Parsed:
    layers = ctx.layer_list("layers", "route index")
    groups = positive(opts, "groups", opts.int("groups", 1))
    group_id = opts.int("group_id", 0)
    if not 0 <= group_id < groups:
        raise opts.error(f"group_id={group_id} must be in 0..{groups - 1}", "group_id")
    first = ctx.shape(layers[0])
    channels = 0
    for j in layers:
        s = ctx.shape(j)
        if (s.h, s.w) != (first.h, first.w):
            raise opts.error(f"route inputs differ in size: layer {layers[0]} is "
                             f"{first.w}x{first.h}, layer {j} is {s.w}x{s.h}", "layers")
        if s.c % groups:
            raise opts.error(f"groups={groups} does not divide the {s.c} channels of layer {j}",
                             "groups")
        channels += s.c // groups
    return Parsed(RouteOptions(layers, groups, group_id), Shape(channels, first.h, first.w),
                  inputs=layers)


# --- [shortcut] -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShortcutOptions:
    sources: tuple[int, ...]  # absolute `from` layers (the previous layer is added implicitly)
    activation: str


@register("shortcut")
def parse_shortcut(opts: Options, ctx: Context) -> Parsed:
    if ctx.index == 0:
        raise opts.error("[shortcut] cannot be the first layer")
    sources = ctx.layer_list("from", "shortcut index")
    weights_type = opts.str("weights_type", "none")
    if weights_type != "none":
        raise opts.error(f"weights_type={weights_type} is not supported yet", "weights_type")
    opts.str("weights_normalization", "none")
    shape = ctx.in_shape
    for j in sources:
        s = ctx.shape(j)
        if (s.h, s.w) != (shape.h, shape.w):
            raise opts.error(f"shortcut from layer {j} ({s.w}x{s.h}) to a {shape.w}x{shape.h} "
                             f"map: Darknet needs equal sizes", "from")
    activation = read_activation(opts, "linear")
    bflops = shape.w * shape.h * shape.c * len(sources) / 1e9
    return Parsed(ShortcutOptions(sources, activation), shape, inputs=(ctx.index - 1, *sources),
                  bflops=bflops)


# --- [maxpool] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaxpoolOptions:
    size: int
    stride_x: int
    stride_y: int
    padding: int  # total (Darknet's l.pad); the window starts at -padding//2


@register("maxpool", "max")
def parse_maxpool(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a maxpool layer")
    stride = positive(opts, "stride", opts.int("stride", 1))
    stride_x = positive(opts, "stride_x", opts.int("stride_x", stride))
    stride_y = positive(opts, "stride_y", opts.int("stride_y", stride))
    size = positive(opts, "size", opts.int("size", stride))
    padding = non_negative(opts, "padding", opts.int("padding", size - 1))
    for key in ("maxpool_depth", "antialiasing"):
        if opts.int(key, 0):
            raise opts.error(f"{key}=1 is not supported yet", key)
    opts.int("out_channels", 1)
    out_h = out_size(opts, "input height", shape.h, padding, size, stride_y)
    out_w = out_size(opts, "input width", shape.w, padding, size, stride_x)
    bflops = size * size * shape.c * out_h * out_w / 1e9
    return Parsed(MaxpoolOptions(size, stride_x, stride_y, padding), Shape(shape.c, out_h, out_w),
                  bflops=bflops)


# --- [upsample] -------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpsampleOptions:
    stride: int  # > 0: nearest upsampling; < 0: sum over |stride|x|stride| blocks
    scale: float


@register("upsample")
def parse_upsample(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("an upsample layer")
    stride = opts.int("stride", 2)
    if stride == 0:
        raise opts.error("stride=0 is not allowed in [upsample]", "stride")
    scale = opts.float("scale", 1.0)
    if stride > 0:
        out = Shape(shape.c, shape.h * stride, shape.w * stride)
    else:
        out = Shape(shape.c, shape.h // -stride, shape.w // -stride)
    return Parsed(UpsampleOptions(stride, scale), out)


# --- [avgpool] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AvgpoolOptions:
    pass


@register("avgpool", "avg")
def parse_avgpool(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("an avgpool layer")
    return Parsed(AvgpoolOptions(), Shape(shape.c, 1, 1))


# --- [dropout] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DropoutOptions:
    probability: float


@register("dropout")
def parse_dropout(opts: Options, ctx: Context) -> Parsed:
    return Parsed(DropoutOptions(opts.float("probability", 0.2)), ctx.in_shape)


# --- [softmax] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SoftmaxOptions:
    groups: int
    temperature: float


@register("softmax", "soft")
def parse_softmax(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.in_shape
    groups = positive(opts, "groups", opts.int("groups", 1))
    if shape.size % groups:
        raise opts.error(f"groups={groups} does not divide the {shape.size} inputs", "groups")
    temperature = opts.float("temperature", 1.0)
    if temperature == 0:
        raise opts.error("temperature=0 is not allowed", "temperature")
    if opts.str("tree", None) is not None:
        raise opts.error("tree= (softmax tree) is not supported yet", "tree")
    opts.int("spatial", 0)  # GPU-only in Darknet; the CPU path is the flat softmax
    return Parsed(SoftmaxOptions(groups, temperature), shape)


# --- [connected] ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectedOptions:
    outputs: int
    batch_normalize: bool
    activation: str


@register("connected", "conn")
def parse_connected(opts: Options, ctx: Context) -> Parsed:
    inputs = ctx.in_shape.size
    outputs = positive(opts, "output", opts.int("output", 1))
    bn = bool(opts.int("batch_normalize", 0))
    activation = read_activation(opts, "logistic")
    o = ConnectedOptions(outputs, bn, activation)
    segs = [Segment("bn.bias" if bn else "fc.bias", outputs, "bias"),
            Segment("fc.weight", outputs * inputs, "weight", header_transposed=True)]
    if bn:
        segs += [Segment("bn.weight", outputs, "scale"), Segment("bn.running_mean", outputs, "mean"),
                 Segment("bn.running_var", outputs, "variance")]
    if opts.int("dontload", 0):
        segs = []
    return Parsed(o, Shape(outputs, 1, 1), segments=tuple(segs))


# --- [activation] ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ActivationOptions:
    activation: str


@register("activation")
def parse_activation(opts: Options, ctx: Context) -> Parsed:
    return Parsed(ActivationOptions(read_activation(opts, "linear")), ctx.in_shape)


# --- [yolo] -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class YoloOptions:
    classes: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # all anchors (w, h) in network pixels
    scale_x_y: float
    new_coords: bool


@register("yolo", is_output=True)
def parse_yolo(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a yolo layer")
    classes = non_negative(opts, "classes", opts.int("classes", 20))
    total = positive(opts, "num", opts.int("num", 1))
    mask = opts.ints("mask")
    if mask is None:
        mask = tuple(range(total))
    for m in mask:
        if not 0 <= m < total:
            raise opts.error(f"mask entry {m} is outside the num={total} anchors", "mask")
    anchors_flat = opts.floats("anchors", ())
    if len(anchors_flat) < 2 * total and anchors_flat:
        raise opts.error(f"anchors= has {len(anchors_flat)} values, num={total} needs "
                         f"{2 * total}", "anchors")
    anchors = tuple((anchors_flat[2 * i], anchors_flat[2 * i + 1])
                    for i in range(min(total, len(anchors_flat) // 2)))
    expected = len(mask) * (classes + 5)
    if shape.c != expected:
        raise opts.error(f"[yolo] with {len(mask)} anchors and classes={classes} needs "
                         f"{expected} input channels, the previous layer gives {shape.c}")
    scale_x_y = opts.float("scale_x_y", 1.0)
    new_coords = bool(opts.int("new_coords", 0))
    return Parsed(YoloOptions(classes, mask, anchors, scale_x_y, new_coords), shape)

