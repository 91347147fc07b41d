"""Darknet-style layer table of a network, with each layer's place on the input (no torch needed).

`format_table` is Darknet's table (``darkcfg build``). `format_summary` / `summary_dict`
(``darkcfg summary``) add, per layer, the cumulative stride and the receptive field of its output
relative to the network input, and the trainable parameter count.

Geometry (:func:`geometry`) is exact for an input without borders: per axis, the pixels of a
layer's output are followed back to the first and last input pixel that can change them, through
every layer's own window arithmetic (Darknet's padding, dilation, antialiasing blur, upsampling,
crops, joins of misaligned branches). After an upsample neighbouring output pixels read different
windows; the receptive field is the largest of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from .graph import NETWORK_INPUT, LayerSpec, Network, Segment, Shape
from .sections import recurrent as _rec
from .sections.core import ConvolutionalOptions, conv_segments

__all__ = [
    "Geometry",
    "Row",
    "format_summary",
    "format_table",
    "geometry",
    "input_window",
    "layer_params",
    "rows",
    "summary_dict",
]

_SHORT = {"convolutional": "conv", "maxpool": "max", "avgpool": "avg", "connected": "connected",
          "upsample": "upsample", "shortcut": "shortcut", "route": "route"}


@dataclass(frozen=True)
class Row:
    index: int
    type: str
    filters: str
    window: str
    inputs: str
    input: str
    output: str
    bflops: float
    params: int


def _whc(shape) -> str:
    return f"{shape.w} x {shape.h} x {shape.c}"


def _stride(o: object) -> str | None:
    sx = getattr(o, "stride_x", getattr(o, "stride", None))
    sy = getattr(o, "stride_y", sx)
    if sx is None:
        return None
    return str(sx) if sx == sy else f"{sx},{sy}"


def _window(spec: LayerSpec) -> str:
    """`size x size/stride(dilation)` for windowed layers, read from whatever options they have."""
    o = spec.options
    if spec.type == "upsample":
        return f"{abs(o.stride)}x" if o.stride > 0 else f"/{-o.stride}"
    size, stride = getattr(o, "size", None), _stride(o)
    if isinstance(size, int) and stride is not None:
        dilation = getattr(o, "dilation", 1)
        return f"{size} x {size}/{stride}" + (f"({dilation})" if dilation > 1 else "")
    if stride is not None and stride != "1":
        return f"/{stride}"
    return ""


def _filters(spec: LayerSpec) -> str:
    o = spec.options
    filters = getattr(o, "filters", None)
    if isinstance(filters, int):
        groups = getattr(o, "groups", 1)
        return str(filters) if groups == 1 else f"{filters}/{groups}"
    outputs = getattr(o, "outputs", None)
    return str(outputs) if isinstance(outputs, int) else ""


def _inputs(spec: LayerSpec) -> str:
    if spec.inputs == (spec.index - 1,) and spec.type not in ("route", "shortcut"):
        return ""
    return ",".join(str(i) for i in spec.inputs)


def rows(network: Network) -> list[Row]:
    return [Row(l.index, _SHORT.get(l.type, l.type), _filters(l), _window(l), _inputs(l),
                _whc(l.in_shape), _whc(l.out_shape), l.bflops, l.weight_count)
            for l in network.layers]


def format_table(network: Network) -> str:
    """The layer table plus Darknet's `Total BFLOPS` line (same float32 sum, same 3 decimals)."""
    head = (f"{'layer':>5}  {'type':<14} {'filters':>7}  {'size/strd(dil)':<15} {'from':<15} "
            f"{'input':>17} -> {'output':<17} {'BFLOPs':>8} {'weights':>11}")
    lines = [head]
    for r in rows(network):
        lines.append(f"{r.index:>5}  {r.type:<14} {r.filters:>7}  {r.window:<15} {r.inputs:<15} "
                     f"{r.input:>17} -> {r.output:<17} {r.bflops:>8.3f} {r.params:>11,}")
    net = network.net
    lines.append(f"input {net.width} x {net.height} x {net.channels}, {len(network.layers)} layers, "
                 f"{network.weight_count:,} weights ({network.weight_count * 4 / 1e6:.1f} MB as "
                 f".weights), outputs: {', '.join(map(str, network.output_layers))}")
    lines.append(f"Total BFLOPS {network.total_bflops:5.3f}")
    return "\n".join(lines)


# --- geometry: one axis --------------------------------------------------------------------------

_MAX_PERIOD = 1 << 16  # output pixels before an axis' pattern repeats (grows only by upsampling)


@dataclass(frozen=True)
class _Axis:
    """Which input pixels (along one axis) output pixel `o` can depend on, for an input without
    borders: the first is ``lo[o % period] + (o // period) * shift``, the last likewise with `hi`.

    The pattern repeats every `period` output pixels (1 until an upsample; nearest upsampling
    by s repeats every s), moving `shift` input pixels. An entry None means "no input pixel"
    (only inside a join, for an input that reaches some output pixels only)."""

    period: int
    shift: int
    lo: tuple[int | None, ...]
    hi: tuple[int | None, ...]

    @property
    def jump(self) -> Fraction:
        """Input pixels between neighbouring output pixels: the cumulative stride."""
        return Fraction(self.shift, self.period)

    @property
    def rf(self) -> int:
        return max(h - l + 1 for l, h in zip(self.lo, self.hi) if l is not None)

    def first(self, o: int) -> int | None:
        q, r = divmod(o, self.period)
        return None if self.lo[r] is None else self.lo[r] + q * self.shift

    def last(self, o: int) -> int | None:
        q, r = divmod(o, self.period)
        return None if self.hi[r] is None else self.hi[r] + q * self.shift


_IDENTITY = _Axis(1, 1, (0,), (0,))


def _through(axis: _Axis, first: Sequence[int | None], last: Sequence[int | None],
             step: int) -> _Axis:
    """The axis of a layer whose output pixel o = q*len(first) + r reads its input pixels
    ``first[r] + q*step`` .. ``last[r] + q*step`` (None: none)."""
    q_len = len(first)
    m = axis.period // math.gcd(step, axis.period)  # input periods needed to come back in phase
    period = q_len * m
    if period > _MAX_PERIOD:
        raise _Unknown
    shift = m * step // axis.period * axis.shift
    lo, hi = [], []
    for o in range(period):
        q, r = divmod(o, q_len)
        if first[r] is None:
            lo.append(None)
            hi.append(None)
        else:
            lo.append(axis.first(first[r] + q * step))
            hi.append(axis.last(last[r] + q * step))
    return _Axis(period, shift, tuple(lo), tuple(hi))


def _win(axis: _Axis | None, size: int, stride: int, pad: int) -> _Axis | None:
    """A window of `size` input pixels every `stride`, the first starting at -pad."""
    if axis is None:
        return None
    return _through(axis, (-pad,), (size - 1 - pad,), stride)


def _up(axis: _Axis | None, s: int) -> _Axis | None:
    """Nearest upsampling: output pixel o copies input pixel o // s."""
    if axis is None:
        return None
    return _through(axis, (0,) * s, (0,) * s, 1)


def _union(axes: Sequence[_Axis]) -> _Axis:
    """Per output pixel, the span covering every input's span (inputs on the same pixel grid)."""
    jumps = {a.jump for a in axes}
    if len(jumps) > 1:
        raise _Unknown  # equal sizes but different strides: no common grid
    period = math.lcm(*(a.period for a in axes))
    if period > _MAX_PERIOD:
        raise _Unknown
    lo, hi = [], []
    for o in range(period):
        firsts = [f for f in (a.first(o) for a in axes) if f is not None]
        lasts = [h for h in (a.last(o) for a in axes) if h is not None]
        lo.append(min(firsts))
        hi.append(max(lasts))
    return _Axis(period, int(jumps.pop() * period), tuple(lo), tuple(hi))


class _Unknown(Exception):
    """No rule gives this layer's geometry."""


# --- geometry: layers ---------------------------------------------------------------------------

# scope of a layer's output values: which input pixels they can depend on
LOCAL, ALL, NONE, UNKNOWN = "local", "all", "none", "unknown"


@dataclass(frozen=True)
class _Geo:
    x: _Axis | None  # None: no pixel grid (a flat output, or unknown)
    y: _Axis | None
    scope: str


@dataclass(frozen=True)
class Geometry:
    """Where one layer's output sits on the network input.

    `stride_x`, `stride_y`: input pixels between neighbouring output pixels (the cumulative
    stride; a Fraction, e.g. 1/2 after upsampling past the input size), None where the output
    has no pixel grid (a flat [connected]/[avgpool] output) or it is unknown.
    `rf_x`, `rf_y`: the receptive field, the side of the input window that can change one output
    value (the largest over the output pixels, for an input without borders); None unless
    `scope` is "local". `scope`: "local", "all" (output values can depend on the whole input:
    global layers, or a 1x1 map broadcast over a map, e.g. squeeze-excitation), "none" (depends
    on no input: [implicit]) or "unknown" (a section type without a geometry rule, and what
    follows it)."""

    stride_x: Fraction | None
    stride_y: Fraction | None
    rf_x: int | None
    rf_y: int | None
    scope: str

    @property
    def stride(self) -> Fraction | tuple[Fraction, Fraction] | None:
        """The cumulative stride, or (x, y) when they differ."""
        if self.stride_x == self.stride_y:
            return self.stride_x
        return (self.stride_x, self.stride_y)


def _spatial(shape: Shape) -> bool:
    return shape.h * shape.w > 1


def _map(geo: _Geo, fx: Callable[[_Axis | None], _Axis | None],
         fy: Callable[[_Axis | None], _Axis | None] | None = None) -> _Geo:
    """A layer that moves pixels (window, upsample, crop): the same scope, moved axes."""
    return _Geo(fx(geo.x), (fy or fx)(geo.y), geo.scope)


def _window_layer(geo: _Geo, size: int, stride_x: int, stride_y: int, pad: int) -> _Geo:
    return _Geo(_win(geo.x, size, stride_x, pad), _win(geo.y, size, stride_y, pad), geo.scope)


def _blur(geo: _Geo, kind: int, stride_x: int, stride_y: int) -> _Geo:
    """Darknet's antialiasing sub-layer: 3x3 pad 1, or (antialiasing=2) 2x2 pad 0."""
    size, pad = (2, 0) if kind == 2 else (3, 1)
    return _window_layer(geo, size, stride_x, stride_y, pad)


def _flat(geo: _Geo) -> _Geo:
    """Every output value reads every input value ([connected], [avgpool], recurrent FC)."""
    return _Geo(None, None, ALL if geo.scope == LOCAL else geo.scope)


def _everything(geo: _Geo) -> _Geo:
    """Output pixels read input pixels far apart (on the same grid): the scope becomes all."""
    return _Geo(geo.x, geo.y, ALL if geo.scope == LOCAL else geo.scope)


def _conv(spec: LayerSpec, geo: _Geo) -> _Geo:
    o = spec.options
    d = 1 if o.xnor_bit_path else o.dilation  # Darknet's XNOR path convolves without dilation
    size = (o.size - 1) * d + 1
    geo = _window_layer(geo, size, o.stride_x, o.stride_y, o.padding * d)
    if o.antialiasing:
        geo = _blur(geo, o.antialiasing, o.aa_stride_x, o.aa_stride_y)
    return geo


def _maxpool(spec: LayerSpec, geo: _Geo) -> _Geo:
    o = spec.options
    if o.depth:  # a max over channels at each pixel
        return geo
    geo = _window_layer(geo, o.size, o.stride_x, o.stride_y, o.padding // 2)
    if o.antialiasing:
        geo = _blur(geo, o.antialiasing, o.aa_stride_x, o.aa_stride_y)
    return geo


def _local_avgpool(spec: LayerSpec, geo: _Geo) -> _Geo:
    o = spec.options
    return _window_layer(geo, o.size, o.stride_x, o.stride_y, o.padding // 2)


def _local(spec: LayerSpec, geo: _Geo) -> _Geo:
    o = spec.options
    return _window_layer(geo, o.size, o.stride, o.stride, o.pad)


def _upsample(spec: LayerSpec, geo: _Geo) -> _Geo:
    s = spec.options.stride
    if s > 0:
        return _map(geo, lambda a: _up(a, s))
    return _window_layer(geo, -s, -s, -s, 0)  # sum over |s| x |s| blocks


def _crop(spec: LayerSpec, geo: _Geo) -> _Geo:
    o, shape = spec.options, spec.in_shape
    top, left = (shape.h - o.crop_height) // 2, (shape.w - o.crop_width) // 2

    def shifted(offset: int) -> Callable[[_Axis | None], _Axis | None]:
        return lambda a: None if a is None else _through(a, (offset,), (offset,), 1)
    return _map(geo, shifted(left), shifted(top))


def _reorg3d(spec: LayerSpec, geo: _Geo) -> _Geo:
    s = spec.options.stride
    if spec.options.reverse:  # reorg_cpu's scatter mixes rows: a depth-to-space grid, far reads
        return _everything(_map(geo, lambda a: _up(a, s)))
    return _window_layer(geo, s, s, s, 0)  # space-to-depth: all channels read the s x s block


def _reorg(spec: LayerSpec, geo: _Geo) -> _Geo:
    """yolov2's [reorg] reads its buffer with the input dims (reorg_cpu): one output pixel's
    channels come from input rows far apart, so its scope is the whole input."""
    s = spec.options.stride
    if s == 1:
        return geo
    if spec.options.reverse:
        return _everything(_map(geo, lambda a: _up(a, s)))
    return _everything(_window_layer(geo, s, s, s, 0))


def _softmax(spec: LayerSpec, geo: _Geo) -> _Geo:
    """Darknet's softmax runs over flat chunks of C*H*W values: across pixels unless 1x1."""
    return _everything(geo) if _spatial(spec.in_shape) else geo


def _crnn(spec: LayerSpec, geo: _Geo) -> _Geo:
    """One step: output_layer(input_layer(x) + self_layer(state)): two of its convs."""
    c = spec.options.conv
    size = (c.size - 1) * c.dilation + 1
    for _ in range(2):
        geo = _window_layer(geo, size, c.stride, c.stride, c.padding * c.dilation)
    return geo


def _conv_lstm(spec: LayerSpec, geo: _Geo) -> _Geo:
    """One step: the u* convs read x; with peephole, vo reads the new cell, a second conv."""
    o = spec.options
    c = o.conv
    size = (c.size - 1) * c.dilation + 1
    for _ in range(2 if o.peephole else 1):
        geo = _window_layer(geo, size, c.stride, c.stride, c.padding * c.dilation)
    return geo


_SAME = ("dropout", "activation", "batchnorm", "empty", "normalization", "yolo", "Gaussian_yolo",
         "region", "cost", "contrastive", "history")
_FLAT = ("avgpool", "connected", "rnn", "gru", "lstm", "detection")
_SINGLE: dict[str, Callable[[LayerSpec, _Geo], _Geo]] = {
    "convolutional": _conv, "maxpool": _maxpool, "local_avgpool": _local_avgpool,
    "local": _local, "upsample": _upsample, "crop": _crop, "reorg": _reorg, "reorg3d": _reorg3d,
    "softmax": _softmax, "crnn": _crnn, "conv_lstm": _conv_lstm,
    **{t: lambda spec, geo: geo for t in _SAME},
    **{t: lambda spec, geo: _flat(geo) for t in _FLAT},
}
_JOINS = ("route", "shortcut", "sam", "scale_channels")


def _join(spec: LayerSpec, geos: Sequence[_Geo], shapes: Sequence[Shape]) -> _Geo:
    """route/shortcut/sam/scale_channels: per output pixel, every input's window together.

    A 1x1 input over a larger output (scale_channels' per-channel scales) is read by every
    output pixel: the scope becomes all. A strided [shortcut] adds its `from` map only at every
    `sample`-th output pixel, read every `stride` pixels (pjreddie's shortcut_cpu)."""
    out = spec.out_shape
    scopes = {g.scope for g in geos}
    if UNKNOWN in scopes:
        return _Geo(None, None, UNKNOWN)
    axes_x: list[_Axis] = []
    axes_y: list[_Axis] = []
    scope = NONE
    for geo, shape in zip(geos, shapes):
        if geo.scope == NONE:
            continue
        if _spatial(out) and not _spatial(shape):
            scope = ALL
            continue
        scope = ALL if ALL in (scope, geo.scope) else LOCAL
        ax, ay = geo.x, geo.y
        if (shape.h, shape.w) != (out.h, out.w) and ax is not None and ay is not None:
            ax = _sampled(ax, shape.w, out.w)
            ay = _sampled(ay, shape.h, out.h)
        if ax is not None and ay is not None:
            axes_x.append(ax)
            axes_y.append(ay)
    if not axes_x:
        return _Geo(None, None, scope)
    return _Geo(_union(axes_x), _union(axes_y), scope)


def _sampled(axis: _Axis, extent: int, out_extent: int) -> _Axis:
    stride, sample = max(1, extent // out_extent), max(1, out_extent // extent)
    first = (0,) + (None,) * (sample - 1)
    return _through(axis, first, first, stride)


def _geo_of(spec: LayerSpec, geos: list[_Geo], network: Network) -> _Geo:
    ins = [geos[j] if j != NETWORK_INPUT else _input_geo(network) for j in spec.inputs]
    if spec.type == "implicit":
        return _Geo(None, None, NONE)
    try:
        if spec.type in _JOINS:
            shapes = [network.net.input_shape if j == NETWORK_INPUT else network[j].out_shape
                      for j in spec.inputs]
            return _join(spec, ins, shapes)
        rule = _SINGLE.get(spec.type)
        if rule is None or len(ins) != 1 or ins[0].scope == UNKNOWN:
            return _Geo(None, None, UNKNOWN)
        return rule(spec, ins[0])
    except _Unknown:
        return _Geo(None, None, UNKNOWN)


def _input_geo(network: Network) -> _Geo:
    net = network.net
    if net.width * net.height * net.channels:
        return _Geo(_IDENTITY, _IDENTITY, LOCAL)
    return _Geo(None, None, ALL)  # a flat input ([net] inputs=)


def _geos(network: Network) -> list[_Geo]:
    geos: list[_Geo] = []
    for spec in network.layers:
        geos.append(_geo_of(spec, geos, network))
    return geos


def geometry(network: Network) -> list[Geometry]:
    """Cumulative stride and receptive field of every layer's output (see :class:`Geometry`)."""
    return [_public(g) for g in _geos(network)]


Window = tuple[tuple[int, int], tuple[int, int]]


def input_window(network: Network, index: int, x: int, y: int) -> Window | None:
    """((first column, last column), (first row, last row)) of the network input that can change
    output pixel (x, y) of layer `index`, for an input without borders (so they may lie outside
    the image: there the layers read padding). The whole input for a layer whose scope is "all";
    None when unknown or when the layer depends on no input."""
    g = _geos(network)[index]
    if g.scope == ALL:
        net = network.net
        return (0, max(net.width, 1) - 1), (0, max(net.height, 1) - 1)
    if g.scope != LOCAL or g.x is None or g.y is None:
        return None
    return (g.x.first(x), g.x.last(x)), (g.y.first(y), g.y.last(y))


def _public(g: _Geo) -> Geometry:
    local = g.scope == LOCAL and g.x is not None and g.y is not None
    return Geometry(g.x.jump if g.x is not None else None, g.y.jump if g.y is not None else None,
                    g.x.rf if local else None, g.y.rf if local else None, g.scope)


# --- parameters ---------------------------------------------------------------------------------

def _held_segments(spec: LayerSpec) -> tuple[Segment, ...]:
    """The tensors a built layer holds, as segments: what the file stores, plus what
    `dontload=1` / `dontloadscales=1` keep out of the file; none for share_index layers."""
    o = spec.options
    if spec.params:
        return ()
    if isinstance(o, ConvolutionalOptions):
        return conv_segments(replace(o, dontload=False, dontloadscales=False), spec.in_shape.c)
    if spec.segments or spec.type not in _HELD:
        return spec.segments
    return _HELD[spec.type](spec, o)


def _held_connected(spec: LayerSpec, o) -> tuple[Segment, ...]:
    return tuple(_rec.connected_block_segments("", spec.in_shape.size, o.outputs,
                                               o.batch_normalize))


def _held_batchnorm(spec: LayerSpec, o) -> tuple[Segment, ...]:
    c = o.channels
    return tuple(Segment(n, c, k) for n, k in (("bias", "bias"), ("weight", "scale"),
                                               ("mean", "mean"), ("var", "variance")))


def _held_local(spec: LayerSpec, o) -> tuple[Segment, ...]:
    loc = spec.out_shape.h * spec.out_shape.w
    return (Segment("bias", o.filters * loc, "bias"),
            Segment("weight", loc * o.filters * spec.in_shape.c * o.size * o.size, "weight"))


def _held_recurrent(spec: LayerSpec, o) -> tuple[Segment, ...]:
    segs: list[Segment] = []
    if spec.type == "rnn":
        for name in ("input_layer", "self_layer", "output_layer"):
            inputs = o.inputs if name == "input_layer" else o.hidden
            segs += _rec.connected_block_segments(name, inputs, o.block(name).outputs,
                                                  o.batch_normalize)
    elif spec.type in ("gru", "lstm"):
        blocks = _rec.GRU_BLOCKS if spec.type == "gru" else _rec.LSTM_BLOCKS
        for name in blocks:
            reads_x = name.startswith("input") if spec.type == "gru" else name[0] == "u"
            segs += _rec.connected_block_segments(name, o.inputs if reads_x else o.outputs,
                                                  o.outputs, o.batch_normalize)
    else:
        blocks = _rec.CRNN_BLOCKS if spec.type == "crnn" else o.blocks
        for name in blocks:
            in_c, co = o.block(name)
            segs += _rec.conv_block_segments(name, co, in_c)
    return tuple(segs)


_HELD = {
    "connected": _held_connected, "batchnorm": _held_batchnorm, "local": _held_local,
    "implicit": lambda spec, o: (Segment("weight", o.filters * o.atoms, "other"),),
    **{t: _held_recurrent for t in ("rnn", "gru", "lstm", "crnn", "conv_lstm")},
}
_BUFFERS = ("mean", "variance")  # BatchNorm's rolling statistics: torch buffers, not parameters


def layer_params(spec: LayerSpec) -> int:
    """Trainable parameters of the layer's torch module, as ``sum(p.numel() for p in
    module.parameters())`` counts them: the weights file's floats without BatchNorm's rolling
    mean and variance (buffers), plus what `dontload`/`dontloadscales` leave out of the file;
    0 for a `share_index` layer (its owner holds them)."""
    return sum(s.count for s in _held_segments(spec) if s.kind not in _BUFFERS)


# --- the summary table and its JSON -------------------------------------------------------------

def _num(v: Fraction | None) -> int | float | None:
    if v is None:
        return None
    return int(v) if v.denominator == 1 else float(v)


def _stride_text(g: Geometry) -> str:
    if g.scope == UNKNOWN:
        return "?"
    if g.stride_x is None or g.stride_y is None:
        return "-"
    if g.stride_x == g.stride_y:
        return str(g.stride_x)
    return f"{g.stride_x},{g.stride_y}"


def _rf_text(g: Geometry) -> str:
    if g.scope == LOCAL:
        return str(g.rf_x) if g.rf_x == g.rf_y else f"{g.rf_x}x{g.rf_y}"
    return {ALL: "all", NONE: "-"}.get(g.scope, "?")


def format_summary(network: Network) -> str:
    """:func:`format_table` with the cumulative stride, receptive field and trainable parameters
    of each layer, and the totals."""
    geo = geometry(network)
    head = (f"{'layer':>5}  {'type':<14} {'filters':>7}  {'size/strd(dil)':<15} {'from':<15} "
            f"{'input':>17} -> {'output':<17} {'stride':>6} {'RF':>9} {'BFLOPs':>8} "
            f"{'params':>11}")
    lines = [head]
    for r, g, spec in zip(rows(network), geo, network.layers):
        lines.append(f"{r.index:>5}  {r.type:<14} {r.filters:>7}  {r.window:<15} {r.inputs:<15} "
                     f"{r.input:>17} -> {r.output:<17} {_stride_text(g):>6} {_rf_text(g):>9} "
                     f"{r.bflops:>8.3f} {layer_params(spec):>11,}")
    net = network.net
    params = sum(layer_params(s) for s in network.layers)
    outs = ", ".join(f"{i} (stride {_stride_text(geo[i])})" for i in network.output_layers)
    lines.append(f"input {net.width} x {net.height} x {net.channels}, {len(network.layers)} layers, "
                 f"{params:,} params, {network.weight_count:,} weights "
                 f"({network.weight_count * 4 / 1e6:.1f} MB as .weights)")
    lines.append(f"outputs: {outs}")
    lines.append(f"Total BFLOPS {network.total_bflops:5.3f}")
    return "\n".join(lines)


def _shape(s: Shape) -> list[int]:
    return [s.c, s.h, s.w]


def _option(o: object, name: str) -> int | None:
    v = getattr(o, name, None)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _layer_stride(o: object) -> int | list[int] | None:
    sx = _option(o, "stride_x")
    sy = _option(o, "stride_y")
    if sx is None:
        return _option(o, "stride")
    return sx if sx == sy or sy is None else [sx, sy]


def _rf_json(g: Geometry) -> list[int] | str | None:
    if g.scope == LOCAL:
        return [g.rf_x, g.rf_y]
    return {ALL: "all", NONE: "none"}.get(g.scope)


def summary_dict(network: Network) -> dict:
    """Everything :func:`format_summary` shows, as plain JSON values.

    Shapes are [C, H, W]; `inputs` uses -1 for the network input; `out_stride` is [x, y] input
    pixels per output pixel (a float when fractional, null without a pixel grid);
    `receptive_field` is [x, y], "all", "none" or null (unknown); `params` trainable parameters,
    `weights` floats in the .weights file."""
    geo = geometry(network)
    layers = []
    for spec, g, r in zip(network.layers, geo, rows(network)):
        o = spec.options
        filters = _option(o, "filters")
        if filters is None:
            filters = _option(o, "outputs")
        dilation = _option(o, "dilation")
        if dilation is None and hasattr(o, "conv"):
            dilation = _option(o.conv, "dilation")
        layers.append({
            "index": spec.index, "type": spec.type, "header": spec.header,
            "inputs": list(spec.inputs), "input_shape": _shape(spec.in_shape),
            "output_shape": _shape(spec.out_shape), "filters": filters,
            "size": _option(o, "size"), "stride": _layer_stride(o), "dilation": dilation,
            "bflops": spec.bflops, "weights": spec.weight_count, "params": layer_params(spec),
            "out_stride": [_num(g.stride_x), _num(g.stride_y)]
            if g.stride_x is not None and g.stride_y is not None else None,
            "receptive_field": _rf_json(g), "rf_scope": g.scope,
        })
    net = network.net
    return {
        "cfg": network.path,
        "input": {"width": net.width, "height": net.height, "channels": net.channels},
        "layers": layers,
        "totals": {"layers": len(network.layers),
                   "params": sum(l["params"] for l in layers),
                   "weights": network.weight_count,
                   "bflops": network.total_bflops,
                   "outputs": list(network.output_layers)},
    }
