"""Parsers for the core section types (net, conv, route, shortcut, pools, upsample, connected, yolo).

One small function per section, registered by name with Darknet's header aliases
(`string_to_layer_type`). Defaults and arithmetic follow AlexeyAB/darknet's parser.c and *_layer.c.

Two places knowingly go beyond AlexeyAB's Darknet:

* ``[shortcut]`` between maps of different sizes. AlexeyAB's parser asserts equal sizes; the older
  pjreddie/darknet added them with strided sampling (``shortcut_cpu``): with the `from` map
  ``w1 x h1`` and the previous layer's ``w2 x h2``, ``stride = max(1, w1 / w2)``,
  ``sample = max(1, w2 / w1)`` (C integer division, the same for heights), and for channels
  ``k < min(c1, c2)``, rows ``j < min(h1, h2)``, columns ``i < min(w1, w2)``::

      out[k, j*sample, i*sample] = alpha * prev[k, j*sample, i*sample]
                                   + beta * from[k, j*stride, i*stride]

  every other output value is the previous layer's; then the activation. ``alpha`` and ``beta``
  (default 1) are read only then. The resnet cfgs need this; a CfgWarning names the layer.
* ``[convolutional] xnor=1``: see darkcfg.layers.core.Convolutional for the choice of bit order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .._keys import ACCEPTED_KEYS
from ..activations import read_activation
from ..errors import warn_at
from ..graph import Context, Parsed, Segment, Shape, register_section
from ..options import Options
from ..tree import Tree, tree_option
from ._common import mask_and_anchors, non_negative, out_size, pool_window, positive, register

__all__ = [
    "ConvolutionalOptions", "RouteOptions", "ShortcutOptions", "MaxpoolOptions", "UpsampleOptions",
    "AvgpoolOptions", "DropoutOptions", "ActivationOptions", "SoftmaxOptions", "ConnectedOptions", "YoloOptions",
    "conv_segments", "read_antialiasing", "blur_shape", "release_bin_output",
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
    stride_x: int  # of the convolution itself: 1 with antialiasing (the blur then strides)
    stride_y: int
    padding: int  # per side, before dilation (Darknet's l.pad)
    dilation: int
    groups: int  # forced to 1 with xnor, as Darknet does
    batch_normalize: bool
    activation: str  # as written; see `effective_activation`
    share_index: int | None  # absolute index of the layer whose weights this one uses
    flipped: bool
    dontload: bool
    dontloadscales: bool
    xnor: bool = False
    bin_output: bool = False  # xnor + bin_output=1, not released by a later route/shortcut/...
    antialiasing: int = 0  # 0 none, 1: 3x3 [1,2,1]^2/16 blur, 2: 2x2 box blur
    aa_stride_x: int = 1  # the blur's strides (the cfg's stride_x/stride_y)
    aa_stride_y: int = 1

    @property
    def effective_activation(self) -> str:
        """calculate_binary_weights forces LINEAR on xnor layers that keep use_bin_output."""
        return "linear" if self.xnor and self.bin_output else self.activation

    @property
    def xnor_bit_path(self) -> bool:
        """Darknet's inference runs the XNOR bit GEMM only for equal strides (else a float conv)."""
        return self.xnor and self.stride_x == self.stride_y


def conv_segments(o: ConvolutionalOptions, in_c: int) -> tuple[Segment, ...]:
    """Darknet's load_convolutional_weights order: biases, [scales, mean, variance], weights.

    xnor/binary layers store plain float weights too; the antialiasing blur is never stored."""
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


def read_antialiasing(opts: Options) -> int:
    """`antialiasing=`: 2 is the 2x2 box blur, any other non-zero value the 3x3 one (Darknet)."""
    aa = opts.int("antialiasing", 0)
    if aa not in (0, 1, 2):
        warn_at(f"antialiasing={aa}: Darknet uses the 3x3 blur for any value other than 0 and 2",
                opts.loc())
        return 1
    return aa


def blur_shape(opts: Options, shape: Shape, aa: int, stride_x: int, stride_y: int) -> Shape:
    """Shape after Darknet's antialiasing blur: depthwise conv of size 3 pad 1, or size 2 pad 0."""
    size, pad = (2, 0) if aa == 2 else (3, 1)
    h = out_size(opts, "antialiasing input height", shape.h, 2 * pad, size, stride_y)
    w = out_size(opts, "antialiasing input width", shape.w, 2 * pad, size, stride_x)
    return Shape(shape.c, h, w)


def _read_deform(opts: Options, size: int) -> None:
    """sway/rotate/stretch/stretch_sway only change training (GPU weight deformation); Darknet
    still rejects more than one of them, or any with size=1."""
    keys = ("sway", "rotate", "stretch", "stretch_sway")
    used = [k for k in keys if opts.int(k, 0)]
    if sum(opts.int(k, 0) for k in keys) > 1:
        raise opts.error("only one of sway=1, rotate=1, stretch=1 or stretch_sway=1 may be set "
                         "in a [convolutional] layer", used[-1] if used else None)
    if used and size == 1:
        raise opts.error(f"{used[0]}=1 needs size >= 3 (Darknet rejects it with size=1)", used[0])


@register("convolutional", "conv", index_keys=("share_index",))
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
    if dilation > 1 and size != 2 * padding + 1:
        warn_at(f"dilation={dilation} with size={size} and padding={padding}: Darknet sizes the "
                f"output ignoring dilation but its im2col does not, so it reads its column buffer "
                f"misaligned (the two agree only when size = 2*padding+1); darkcfg places the "
                f"windows that the output size implies", opts.key_loc("dilation"))
    xnor = bool(opts.int("xnor", 0))
    groups = positive(opts, "groups", opts.int("groups", 1))
    if xnor and groups > 1:
        warn_at(f"groups={groups} is ignored: Darknet disables groups for xnor=1 layers (the "
                f"weights file then holds {filters}x{shape.c}x{size}x{size} weights)", opts.loc())
        groups = 1
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
    antialiasing = read_antialiasing(opts)
    bin_output = bool(opts.int("bin_output", 0))
    _read_deform(opts, size)
    opts.float("assisted_excitation", 0)  # training only (state.train in Darknet's forward)
    opts.int("binary", 0)  # binary=1 without xnor changes nothing in Darknet's CPU inference
    host_sx, host_sy = (1, 1) if antialiasing else (stride_x, stride_y)
    o = ConvolutionalOptions(filters, size, host_sx, host_sy, padding, dilation, groups, bool(bn),
                             activation, share_index, flipped, bool(opts.int("dontload", 0)),
                             bool(opts.int("dontloadscales", 0)), xnor, xnor and bin_output,
                             antialiasing, stride_x, stride_y)
    if o.batch_normalize and o.dontloadscales:
        warn_at("dontloadscales=1: the BN scales, mean and variance are not read and keep "
                "Darknet's initial values (variance 0, so outputs are scaled by ~316)", opts.loc())
    if share_index is not None:
        owner = ctx.layers[share_index]
        if owner.type != "convolutional" or not _same_weights(owner.options, o, owner.in_shape.c, shape.c):
            raise opts.error(f"share_index={share} points to layer {share_index}, which is not a "
                             f"convolutional layer with the same filters, size, groups and input "
                             f"channels", "share_index")
    out_h = out_size(opts, "input height", shape.h, 2 * padding, size, host_sy)
    out_w = out_size(opts, "input width", shape.w, 2 * padding, size, host_sx)
    if bin_output and not xnor:
        warn_at("bin_output=1 has no effect without xnor=1", opts.loc())
    if xnor:
        _check_xnor(opts, o, shape, out_h, out_w)
    nweights = (shape.c // groups) * filters * size * size
    bflops = 2.0 * nweights * out_h * out_w / 1e9
    if xnor:
        bflops /= 32
    out = Shape(filters, out_h, out_w)
    if antialiasing:
        out = blur_shape(opts, out, antialiasing, stride_x, stride_y)
    return Parsed(o, out, bflops=bflops, segments=conv_segments(o, shape.c),
                  params=(share_index,) if share_index is not None else ())


def _check_xnor(opts: Options, o: ConvolutionalOptions, shape: Shape, out_h: int,
                out_w: int) -> None:
    """Warn where Darknet's XNOR inference does something other than a binary convolution."""
    if not o.xnor_bit_path:
        warn_at(f"xnor=1 with stride_x={o.stride_x} != stride_y={o.stride_y}: Darknet's "
                f"inference skips its XNOR path and runs an ordinary float convolution; darkcfg "
                f"does the same", opts.loc())
        return
    if o.dilation > 1:
        warn_at(f"dilation={o.dilation} is ignored: Darknet's XNOR path convolves without "
                f"dilation; darkcfg does the same", opts.loc())
    old_path_ok = (out_h, out_w) == (shape.h, shape.w) and o.stride_x == 1 and o.padding == 1
    if shape.c % 32 and not old_path_ok:
        warn_at(f"xnor=1 with {shape.c} input channels (not a multiple of 32) and not a 3x3 "
                f"stride-1 pad-1 convolution: Darknet's CPU XNOR path prints 'is no non-optimized "
                f"version' and outputs garbage here; darkcfg computes the binary convolution",
                opts.loc())


def _same_weights(a: ConvolutionalOptions, b: ConvolutionalOptions, ca: int, cb: int) -> bool:
    return (a.filters, a.size, a.groups, a.batch_normalize, ca) == \
        (b.filters, b.size, b.groups, b.batch_normalize, cb)


def release_bin_output(ctx: Context, index: int) -> None:
    """Darknet clears use_bin_output on layers a route/shortcut/sam/scale_channels reads (parser.c),
    so an xnor layer's activation is forced to linear only if no such layer consumes it.

    Consumers call this while they are parsed; it replaces the already parsed spec in place."""
    if not 0 <= index < len(ctx.layers):
        return
    spec = ctx.layers[index]
    o = spec.options
    if isinstance(o, ConvolutionalOptions) and o.bin_output:
        ctx.layers[index] = replace(spec, options=replace(o, bin_output=False))


# --- [route] ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteOptions:
    layers: tuple[int, ...]  # absolute
    groups: int
    group_id: int


@register("route", index_keys=("layers",))
def parse_route(opts: Options, ctx: Context) -> Parsed:
    layers = ctx.layer_list("layers", "route index")
    groups = positive(opts, "groups", opts.int("groups", 1))
    group_id = opts.int("group_id", 0)
    if not 0 <= group_id < groups:
        raise opts.error(f"group_id={group_id} must be in 0..{groups - 1}", "group_id")
    first = ctx.shape(layers[0])
    channels = 0
    for j in layers:
        release_bin_output(ctx, j)
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

_WEIGHTS_TYPES = {"none": None, "per_feature": "per_feature", "per_layer": "per_feature",
                  "per_channel": "per_channel"}
_NORMALIZATIONS = {"relu": "relu", "avg_relu": "relu", "softmax": "softmax"}


@dataclass(frozen=True)
class ShortcutOptions:
    """`sources`: absolute `from` layers (the previous layer is added implicitly).

    `weights_type` (None, "per_feature", "per_channel") with `normalization` ("relu", "softmax"):
    learned weights from the file (shortcut_multilayer_cpu). `strided`: the `from` map has another
    size; pjreddie/darknet's shortcut_cpu semantics with `alpha` (previous) and `beta` (from)."""

    sources: tuple[int, ...]
    activation: str
    weights_type: str | None = None
    normalization: str | None = None
    strided: bool = False
    alpha: float = 1.0
    beta: float = 1.0


@register("shortcut", index_keys=("from",))
def parse_shortcut(opts: Options, ctx: Context) -> Parsed:
    if ctx.index == 0:
        raise opts.error("[shortcut] cannot be the first layer")
    activation = read_activation(opts, "linear")
    weights_type, normalization = _read_shortcut_weights(opts)
    sources = ctx.layer_list("from", "shortcut index")
    shape = ctx.in_shape
    strided = any((ctx.shape(j).h, ctx.shape(j).w) != (shape.h, shape.w) for j in sources)
    alpha = beta = 1.0
    if strided:
        _check_strided(opts, ctx, sources, shape, weights_type)
        alpha, beta = opts.float("alpha", 1.0), opts.float("beta", 1.0)
    for j in (ctx.index - 1, sources[0]):
        release_bin_output(ctx, j)
    n = len(sources)
    bflops = shape.w * shape.h * shape.c * n / 1e9
    segments: tuple[Segment, ...] = ()
    if weights_type is not None:
        bflops *= 2
        count = (n + 1) * (shape.c if weights_type == "per_channel" else 1)
        segments = (Segment("weight", count, "other"),)
    o = ShortcutOptions(sources, activation, weights_type, normalization, strided, alpha, beta)
    return Parsed(o, shape, inputs=(ctx.index - 1, *sources), bflops=bflops, segments=segments)


def _read_shortcut_weights(opts: Options) -> tuple[str | None, str | None]:
    """parse_shortcut: per_layer means per_feature, avg_relu means relu; weights need a
    normalization (Darknet exits on weights_normalization=none with weights_type set)."""
    type_str = opts.str("weights_type", "none")
    if type_str not in _WEIGHTS_TYPES:
        raise opts.error(f"weights_type={type_str} is not one of none, per_feature, per_layer, "
                         f"per_channel", "weights_type")
    weights_type = _WEIGHTS_TYPES[type_str]
    norm_str = opts.str("weights_normalization", "none")
    normalization = _NORMALIZATIONS.get(norm_str)
    if weights_type is None:
        if norm_str != "none":
            warn_at(f"weights_normalization={norm_str} has no effect without weights_type",
                    opts.key_loc("weights_normalization"))
        return None, None
    if normalization is None:
        raise opts.error(f"weights_type={type_str} needs weights_normalization=relu, avg_relu or "
                         f"softmax; Darknet rejects weights_normalization={norm_str}",
                         "weights_normalization")
    return weights_type, normalization


def _check_strided(opts: Options, ctx: Context, sources: tuple[int, ...], shape: Shape,
                   weights_type: str | None) -> None:
    """Maps of different sizes: AlexeyAB's Darknet asserts; pjreddie's sampled with a stride.

    Only pjreddie's form is accepted (one `from`, no weights, the same C-integer size ratios for
    width and height, as its asserts require), and never a 1x1 map, where sampling would add a
    single pixel instead of broadcasting it."""
    j = sources[0]
    src = ctx.shape(j)
    sizes = f"from layer {j} ({src.w}x{src.h}) to a {shape.w}x{shape.h} map"
    if len(sources) > 1 or weights_type is not None:
        raise opts.error(f"shortcut {sizes}: Darknet needs equal sizes (pjreddie's strided "
                         f"shortcut takes one from layer and no weights)", "from")
    if 1 in (src.w, src.h, shape.w, shape.h):
        raise opts.error(f"shortcut {sizes}: Darknet needs equal sizes (a 1x1 map is not "
                         f"broadcast)", "from")
    if src.w // shape.w != src.h // shape.h or shape.w // src.w != shape.h // src.h:
        raise opts.error(f"shortcut {sizes}: Darknet needs equal sizes (the width and height "
                         f"ratios differ, which pjreddie's strided shortcut rejects too)", "from")
    warn_at(f"shortcut {sizes}: Darknet (AlexeyAB) rejects unequal sizes; darkcfg uses "
            f"pjreddie/darknet's strided shortcut (alpha*previous + beta*from on the sampled "
            f"positions)", opts.loc())


# --- [maxpool] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaxpoolOptions:
    size: int
    stride_x: int  # of the max itself: 1 with antialiasing (the blur then strides)
    stride_y: int
    padding: int  # total (Darknet's l.pad); the window starts at -padding//2
    depth: bool = False  # maxpool_depth=1: max over channel groups k = g, g+out_channels, ...
    out_channels: int = 0
    antialiasing: int = 0
    aa_stride_x: int = 1
    aa_stride_y: int = 1


@register("maxpool", "max")
def parse_maxpool(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a maxpool layer")
    size, stride_x, stride_y, padding = pool_window(opts)
    depth = bool(opts.int("maxpool_depth", 0))
    out_channels = opts.int("out_channels", 1)
    antialiasing = read_antialiasing(opts)
    if depth:
        return _parse_maxpool_depth(opts, shape, size, stride_x, stride_y, out_channels,
                                    antialiasing)
    host_sx, host_sy = (1, 1) if antialiasing else (stride_x, stride_y)
    out_h = out_size(opts, "input height", shape.h, padding, size, host_sy)
    out_w = out_size(opts, "input width", shape.w, padding, size, host_sx)
    bflops = size * size * shape.c * out_h * out_w / 1e9
    out = Shape(shape.c, out_h, out_w)
    if antialiasing:
        out = blur_shape(opts, out, antialiasing, stride_x, stride_y)
    o = MaxpoolOptions(size, host_sx, host_sy, padding, antialiasing=antialiasing,
                       aa_stride_x=stride_x, aa_stride_y=stride_y)
    return Parsed(o, out, bflops=bflops)


def _parse_maxpool_depth(opts: Options, shape: Shape, size: int, stride_x: int, stride_y: int,
                         out_channels: int, antialiasing: int) -> Parsed:
    """maxpool_depth=1 keeps H and W (size, stride and padding only enter Darknet's BFLOPs)."""
    positive(opts, "out_channels", out_channels)
    if antialiasing:
        raise opts.error("antialiasing with maxpool_depth=1 is not supported: Darknet's depth "
                         "path never applies the blur, yet gives the next layer the blurred size",
                         "antialiasing")
    if out_channels > shape.c:
        warn_at(f"out_channels={out_channels} exceeds the {shape.c} input channels: Darknet fills "
                f"channels {shape.c}..{out_channels - 1} with -FLT_MAX", opts.loc())
    bflops = size * size * shape.c * shape.h * shape.w / 1e9
    o = MaxpoolOptions(size, stride_x, stride_y, 0, depth=True, out_channels=out_channels)
    return Parsed(o, Shape(out_channels, shape.h, shape.w), bflops=bflops)


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
    tree: Tree | None = None  # softmax tree (darknet9000): one softmax per group of sibling nodes


@register("softmax", "soft")
def parse_softmax(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.in_shape
    groups = positive(opts, "groups", opts.int("groups", 1))
    if shape.size % groups:
        raise opts.error(f"groups={groups} does not divide the {shape.size} inputs", "groups")
    temperature = opts.float("temperature", 1.0)
    if temperature == 0:
        raise opts.error("temperature=0 is not allowed", "temperature")
    tree = tree_option(opts)
    if tree is not None and tree.n != shape.size:
        raise opts.error(f"tree={opts.str('tree', '')} has {tree.n} nodes, the layer has "
                         f"{shape.size} inputs", "tree")
    opts.int("spatial", 0)  # GPU-only in Darknet; the CPU path is the flat softmax
    return Parsed(SoftmaxOptions(groups, temperature, tree), shape)


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
    anchors: tuple[tuple[float, float], ...]  # (w, h) in network pixels: num of them, or more (see anchor_pairs)
    scale_x_y: float
    new_coords: bool
    nms_kind: str = "default"  # default (IoU), greedynms (DIoU, beta 0.6), diounms (DIoU, beta_nms)
    beta_nms: float = 0.6


# nms_kind values Darknet's parse_yolo knows; anything else is its DEFAULT_NMS.
YOLO_NMS_KINDS = ("default", "greedynms", "diounms")


def nms_kind_option(opts: Options, kinds: tuple[str, ...]) -> str:
    """`nms_kind=` as Darknet reads it: an unknown name silently means the default IoU NMS."""
    kind = opts.str("nms_kind", "default")
    if kind not in kinds:
        warn_at(f"nms_kind={kind} is not one of {', '.join(kinds)}; Darknet uses the default "
                f"(IoU) NMS", opts.key_loc("nms_kind"))
        kind = "default"
    return kind


@register("yolo", is_output=True)
def parse_yolo(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a yolo layer")
    classes = non_negative(opts, "classes", opts.int("classes", 20))
    total = positive(opts, "num", opts.int("num", 1))
    mask, anchors = mask_and_anchors(opts, total)
    expected = len(mask) * (classes + 5)
    if shape.c != expected:
        raise opts.error(f"[yolo] with {len(mask)} anchors and classes={classes} needs "
                         f"{expected} input channels, the previous layer gives {shape.c}")
    scale_x_y = opts.float("scale_x_y", 1.0)
    new_coords = bool(opts.int("new_coords", 0))
    kind = nms_kind_option(opts, YOLO_NMS_KINDS)
    return Parsed(YoloOptions(classes, mask, anchors, scale_x_y, new_coords, kind,
                              opts.float("beta_nms", 0.6)), shape)

