"""Parsers for Darknet's smaller section types: crop, reorg/reorg3d, scale_channels, sam,
local_avgpool, batchnorm, empty/silence, implicit, normalization (LRN) and local.

Shapes, defaults and the weights layout follow AlexeyAB/darknet's parser.c and the *_layer.c files;
where Darknet would crash or read outside its buffers the parser raises a located CfgError instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..activations import read_activation
from ..errors import warn_at
from ..graph import Context, Parsed, Segment, Shape, cdiv
from ..options import Options
from ._common import non_negative, out_size, pool_window, positive, register
from .core import release_bin_output

__all__ = [
    "CropOptions", "ReorgOptions", "ScaleChannelsOptions", "SamOptions", "LocalAvgpoolOptions",
    "BatchnormOptions", "EmptyOptions", "ImplicitOptions", "NormalizationOptions", "LocalOptions",
]


def _dontload(opts: Options) -> bool:
    """`dontload=1` makes Darknet's load_weights skip the layer entirely."""
    return bool(opts.int("dontload", 0))


# --- [crop] -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CropOptions:
    crop_height: int
    crop_width: int
    noadjust: bool  # False: values are mapped x*2-1 (Darknet's default)


@register("crop")
def parse_crop(opts: Options, ctx: Context) -> Parsed:
    """Inference crop: the centred crop_height x crop_width window (flip/angle/... train only)."""
    shape = ctx.require_image("a crop layer")
    crop_h = positive(opts, "crop_height", opts.int("crop_height", 1))
    crop_w = positive(opts, "crop_width", opts.int("crop_width", 1))
    for key, crop, extent in (("crop_height", crop_h, shape.h), ("crop_width", crop_w, shape.w)):
        if crop > extent:
            what = "height" if key == "crop_height" else "width"
            raise opts.error(f"{key}={crop} is larger than the input {what} {extent}", key)
    noadjust = bool(opts.int("noadjust", 0))
    return Parsed(CropOptions(crop_h, crop_w, noadjust), Shape(shape.c, crop_h, crop_w))


# --- [reorg] (Darknet's REORG_OLD) and [reorg3d] (REORG) ---------------------------------------

@dataclass(frozen=True)
class ReorgOptions:
    stride: int
    reverse: bool


def _reorg_common(opts: Options, ctx: Context, what: str) -> tuple[Shape, int, bool]:
    shape = ctx.require_image(f"a {what} layer")
    stride = positive(opts, "stride", opts.int("stride", 1))
    reverse = bool(opts.int("reverse", 0))
    return shape, stride, reverse


def _reorg_out(shape: Shape, stride: int, reverse: bool) -> Shape:
    s2 = stride * stride
    if reverse:
        return Shape(shape.c // s2, shape.h * stride, shape.w * stride)
    return Shape(shape.c * s2, shape.h // stride, shape.w // stride)


@register("reorg")
def parse_reorg(opts: Options, ctx: Context) -> Parsed:
    """yolov2's reorg: Darknet's reorg_cpu run with the input dims (not a clean space-to-depth)."""
    shape, stride, reverse = _reorg_common(opts, ctx, "reorg")
    s2 = stride * stride
    if shape.c % s2:
        raise opts.error(f"[reorg] stride={stride} needs input channels divisible by "
                         f"stride*stride={s2}, the input has {shape.c} (Darknet would divide "
                         f"by zero or index outside its buffers)", "stride")
    if not reverse and (shape.h % stride or shape.w % stride):
        raise opts.error(f"[reorg] stride={stride} needs the input width and height divisible by "
                         f"the stride, the input is {shape.w}x{shape.h} (Darknet would write past "
                         f"its output buffer)", "stride")
    if not opts.has("stride"):
        warn_at("[reorg] without stride= uses Darknet's default stride=1, which passes the input "
                "through unchanged", opts.loc())
    return Parsed(ReorgOptions(stride, reverse), _reorg_out(shape, stride, reverse))


@register("reorg3d")
def parse_reorg3d(opts: Options, ctx: Context) -> Parsed:
    """Space-to-depth (offset-major channels); reverse=1 is Darknet's reorg_cpu on the out dims."""
    shape, stride, reverse = _reorg_common(opts, ctx, "reorg3d")
    s2 = stride * stride
    out = _reorg_out(shape, stride, reverse)
    if reverse and (shape.c % (s2 * s2)):
        raise opts.error(f"[reorg3d] reverse=1 stride={stride} needs input channels divisible by "
                         f"stride^4={s2 * s2} (Darknet divides the {out.c} output channels by "
                         f"stride*stride again), the input has {shape.c}", "reverse")
    if not reverse and (shape.h % stride or shape.w % stride):
        warn_at(f"[reorg3d] input {shape.w}x{shape.h} is not divisible by stride={stride}: "
                f"darkcfg uses its top-left {out.w * stride}x{out.h * stride} part (Darknet "
                f"reads the input with a wrong row pitch there)", opts.loc())
    return Parsed(ReorgOptions(stride, reverse), out)


# --- [scale_channels] and [sam] ---------------------------------------------------------------

@dataclass(frozen=True)
class ScaleChannelsOptions:
    source: int  # absolute `from` layer, whose output is scaled
    scale_wh: bool  # False: per channel (previous layer is 1x1xC); True: per position (HxWx1)
    activation: str


def _from_layer(opts: Options, ctx: Context, what: str) -> int:
    """Darknet atoi()s `from=` once: a list uses its first entry."""
    sources = ctx.layer_list("from", f"{what} index")
    if len(sources) > 1:
        warn_at(f"from= lists {len(sources)} layers: Darknet's [{what}] uses only the first",
                opts.key_loc("from"))
    for j in (ctx.index - 1, sources[0]):  # Darknet lets an xnor layer read here keep its activation
        release_bin_output(ctx, j)
    return sources[0]


@register("scale_channels", index_keys=("from",))
def parse_scale_channels(opts: Options, ctx: Context) -> Parsed:
    source = _from_layer(opts, ctx, "scale_channels")
    scale_wh = bool(opts.int("scale_wh", 0))
    prev, src = ctx.in_shape, ctx.shape(source)
    if scale_wh:
        if prev.c != 1 or (prev.h, prev.w) != (src.h, src.w):
            raise opts.error(f"[scale_channels] scale_wh=1 needs a 1-channel previous layer of the "
                             f"`from` layer's size {src.w}x{src.h}, the previous layer gives "
                             f"{prev.w}x{prev.h}x{prev.c}", "scale_wh")
    elif (prev.h, prev.w) != (1, 1) or prev.c != src.c:
        raise opts.error(f"[scale_channels] needs a 1x1 previous layer with the {src.c} channels "
                         f"of the `from` layer {source}, the previous layer gives "
                         f"{prev.w}x{prev.h}x{prev.c}", "from")
    activation = read_activation(opts, "linear")
    return Parsed(ScaleChannelsOptions(source, scale_wh, activation), src,
                  inputs=(ctx.index - 1, source))


@dataclass(frozen=True)
class SamOptions:
    source: int  # absolute `from` layer
    activation: str


@register("sam", index_keys=("from",))
def parse_sam(opts: Options, ctx: Context) -> Parsed:
    """Spatial attention: previous * from, elementwise (no sigmoid inside the layer)."""
    source = _from_layer(opts, ctx, "sam")
    prev, src = ctx.in_shape, ctx.shape(source)
    if prev != src:
        raise opts.error(f"[sam] needs the previous layer and the `from` layer {source} of the "
                         f"same shape, got {prev.w}x{prev.h}x{prev.c} and {src.w}x{src.h}x{src.c}",
                         "from")
    activation = read_activation(opts, "linear")
    return Parsed(SamOptions(source, activation), src, inputs=(ctx.index - 1, source))


# --- [local_avgpool] --------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalAvgpoolOptions:
    size: int
    stride_x: int
    stride_y: int
    padding: int  # total, as maxpool; the window starts at -padding//2


@register("local_avgpool", "local_avg")
def parse_local_avgpool(opts: Options, ctx: Context) -> Parsed:
    """Windowed average over the valid taps only, with maxpool's size/stride/padding rules."""
    shape = ctx.require_image("a local_avgpool layer")
    size, stride_x, stride_y, padding = pool_window(opts)
    out_h = out_size(opts, "input height", shape.h, padding, size, stride_y)
    out_w = out_size(opts, "input width", shape.w, padding, size, stride_x)
    for extent, out, step in ((shape.h, out_h, stride_y), (shape.w, out_w, stride_x)):
        first, last = -(padding // 2), -(padding // 2) + (out - 1) * step
        if first + size <= 0 or last >= extent:
            raise opts.error(f"padding={padding} with size={size}: a window would hold no input "
                             f"value (Darknet divides 0 by 0 there)", "padding")
    bflops = size * size * shape.c * out_h * out_w / 1e9
    return Parsed(LocalAvgpoolOptions(size, stride_x, stride_y, padding),
                  Shape(shape.c, out_h, out_w), bflops=bflops)


# --- [batchnorm] ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchnormOptions:
    channels: int


@register("batchnorm")
def parse_batchnorm(opts: Options, ctx: Context) -> Parsed:
    """Inference BN with rolling statistics; the file holds biases, scales, mean, variance."""
    shape = ctx.in_shape
    c = shape.c
    segs = () if _dontload(opts) else (
        Segment("bn.bias", c, "bias"), Segment("bn.weight", c, "scale"),
        Segment("bn.running_mean", c, "mean"), Segment("bn.running_var", c, "variance"))
    return Parsed(BatchnormOptions(c), shape, segments=segs)


# --- [empty] / [silence] ----------------------------------------------------------------------

@dataclass(frozen=True)
class EmptyOptions:
    pass


@register("empty", "silence")
def parse_empty(opts: Options, ctx: Context) -> Parsed:
    """Identity: Darknet's EMPTY layer shares the previous layer's output buffer."""
    return Parsed(EmptyOptions(), ctx.in_shape)


# --- [implicit] -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImplicitOptions:
    filters: int
    atoms: int
    mean: float  # initial values mean + U(-std, std) when no weights are loaded
    std: float


@register("implicit")
def parse_implicit(opts: Options, ctx: Context) -> Parsed:
    """A learned filters x atoms x 1 tensor, the same for every image; the input is ignored."""
    filters = positive(opts, "filters", opts.int("filters", 128))
    atoms = positive(opts, "atoms", opts.int("atoms", 1))
    mean = opts.float("mean", 0.0)
    std = opts.float("std", 0.2)
    segs = () if _dontload(opts) else (Segment("weight", filters * atoms, "other"),)
    return Parsed(ImplicitOptions(filters, atoms, mean, std), Shape(filters, atoms, 1),
                  segments=segs)


# --- [normalization] (LRN) --------------------------------------------------------------------

@dataclass(frozen=True)
class NormalizationOptions:
    size: int
    alpha: float
    beta: float
    kappa: float


@register("normalization", "lrn")
def parse_normalization(opts: Options, ctx: Context) -> Parsed:
    """Darknet's cross-channel LRN and its sliding-window recurrence (layers.misc.lrn_window)."""
    shape = ctx.require_image("a normalization layer")
    alpha = opts.float("alpha", 0.0001)
    beta = opts.float("beta", 0.75)
    kappa = opts.float("kappa", 1.0)
    size = positive(opts, "size", opts.int("size", 5))
    if size // 2 > shape.c:
        raise opts.error(f"size={size} is too large for {shape.c} channels: Darknet's LRN starts by "
                         f"summing size/2={size // 2} channels and would read past its input",
                         "size")
    return Parsed(NormalizationOptions(size, alpha, beta, kappa), shape)


# --- [local] ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalOptions:
    filters: int
    size: int
    stride: int
    pad: int  # raw value: im2col padding per side (not size/2)
    activation: str


def _local_extent(opts: Options, what: str, extent: int, size: int, stride: int, pad: int) -> int:
    """Darknet's local_out_height/width: `(h - (pad ? 1 : size)) / stride + 1`."""
    span = extent - (1 if pad else size)
    out = cdiv(span, stride) + 1
    if span < 0 or out <= 0:
        raise opts.error(f"{what} of {extent} is too small for size={size} with pad={pad}")
    return out


@register("local")
def parse_local(opts: Options, ctx: Context) -> Parsed:
    """Unshared weights per output location; biases per output element."""
    shape = ctx.require_image("a local layer")
    filters = positive(opts, "filters", opts.int("filters", 1))
    size = positive(opts, "size", opts.int("size", 1))
    stride = positive(opts, "stride", opts.int("stride", 1))
    pad = non_negative(opts, "pad", opts.int("pad", 0))
    if pad and 2 * pad + 1 != size:
        raise opts.error(f"[local] pad={pad} with size={size}: Darknet sizes the output as for "
                         f"padding (size-1)/2 but im2col pads by {pad}, so it would read its "
                         f"columns with the wrong pitch; use pad=0 or size={2 * pad + 1}", "pad")
    activation = read_activation(opts, "logistic")
    out_h = _local_extent(opts, "input height", shape.h, size, stride, pad)
    out_w = _local_extent(opts, "input width", shape.w, size, stride, pad)
    locations = out_h * out_w
    segs = () if _dontload(opts) else (
        Segment("bias", filters * locations, "bias"),
        Segment("weight", locations * filters * shape.c * size * size, "weight"))
    return Parsed(LocalOptions(filters, size, stride, pad, activation),
                  Shape(filters, out_h, out_w), segments=segs)
