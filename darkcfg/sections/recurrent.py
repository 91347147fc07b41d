"""Section parsers: recurrent family ([rnn], [gru], [lstm], [crnn], [conv_lstm], [history]).

Each recurrent section is a bundle of Darknet sub-layers (connected or convolutional blocks) that
keep a hidden state between network_predict() calls. Their weights follow
``load_weights`` (parser.c): every sub-layer is a full connected block (biases, weights, [BN]) or
conv block (biases, [BN], weights), in the order Darknet reads them. Inference is Darknet's with
``time_steps`` forced to 1 (``parse_network_cfg_custom(cfg, 1, 1)``): one forward call = one step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..activations import read_activation
from ..errors import warn_at
from ..graph import Context, Parsed, Segment, Shape
from ..options import Options
from ._common import non_negative, out_size, positive, register
from .core import ConnectedOptions, ConvolutionalOptions, conv_segments

__all__ = ["RnnOptions", "GruOptions", "LstmOptions", "CrnnOptions", "ConvLstmOptions",
           "HistoryOptions", "ConvGeometry", "connected_block_segments", "conv_block_segments"]

# Darknet's inference parse forces time_steps=1; conv_lstm's state_constrain defaults to 32 * that.
INFERENCE_TIME_STEPS = 1


def connected_block_segments(prefix: str, inputs: int, outputs: int, bn: bool) -> list[Segment]:
    """load_connected_weights of a sub-layer: biases, weights ([out][in]), then the BN triplet."""
    segs = [Segment(f"{prefix}.bn.bias" if bn else f"{prefix}.fc.bias", outputs, "bias"),
            Segment(f"{prefix}.fc.weight", outputs * inputs, "weight", header_transposed=True)]
    if bn:
        segs += [Segment(f"{prefix}.bn.weight", outputs, "scale"),
                 Segment(f"{prefix}.bn.running_mean", outputs, "mean"),
                 Segment(f"{prefix}.bn.running_var", outputs, "variance")]
    return segs


def conv_block_segments(prefix: str, o: ConvolutionalOptions, in_c: int) -> list[Segment]:
    """load_convolutional_weights of a sub-layer (its own dontloadscales is always 0)."""
    return [Segment(f"{prefix}.{s.name}", s.count, s.kind, s.transposed)
            for s in conv_segments(o, in_c)]


def _weights_or_nothing(opts: Options, segs: list[Segment]) -> tuple[Segment, ...]:
    """`dontload=1` makes load_weights skip the whole layer, sub-layers included."""
    return () if opts.int("dontload", 0) else tuple(segs)


def _warn_dontloadscales(opts: Options) -> None:
    if opts.int("dontloadscales", 0):
        warn_at("dontloadscales=1 has no effect on a recurrent layer: Darknet loads its "
                "sub-layers' BN parameters anyway", opts.loc())


# --- [rnn] ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RnnOptions:
    inputs: int
    hidden: int
    outputs: int
    batch_normalize: bool
    activation: str  # input_layer and output_layer
    self_activation: str  # self_layer: `logistic=1` -> logistic, `logistic=2` -> loggy
    shortcut: bool  # state = old state + input part + self part (Darknet's inference accumulates)

    def block(self, name: str) -> ConnectedOptions:
        outs = self.outputs if name == "output_layer" else self.hidden
        act = self.self_activation if name == "self_layer" else self.activation
        return ConnectedOptions(outs, self.batch_normalize, act)


@register("rnn")
def parse_rnn(opts: Options, ctx: Context) -> Parsed:
    inputs = ctx.require_image("an rnn layer").size
    outputs = positive(opts, "output", opts.int("output", 1))
    hidden = positive(opts, "hidden", opts.int("hidden", 1))
    activation = read_activation(opts, "logistic")
    bn = bool(opts.int("batch_normalize", 0))
    log = opts.int("logistic", 0)
    self_act = {1: "logistic", 2: "loggy"}.get(log, activation)
    shortcut = bool(opts.int("shortcut", 0))
    _warn_dontloadscales(opts)
    o = RnnOptions(inputs, hidden, outputs, bn, activation, self_act, shortcut)
    segs = (connected_block_segments("input_layer", inputs, hidden, bn)
            + connected_block_segments("self_layer", hidden, hidden, bn)
            + connected_block_segments("output_layer", hidden, outputs, bn))
    return Parsed(o, Shape(outputs, 1, 1), segments=_weights_or_nothing(opts, segs))


# --- [gru] ------------------------------------------------------------------------------------

GRU_BLOCKS = ("input_z_layer", "input_r_layer", "input_h_layer",
              "state_z_layer", "state_r_layer", "state_h_layer")


@dataclass(frozen=True)
class GruOptions:
    inputs: int
    outputs: int
    batch_normalize: bool


@register("gru")
def parse_gru(opts: Options, ctx: Context) -> Parsed:
    inputs = ctx.require_image("a gru layer").size
    outputs = positive(opts, "output", opts.int("output", 1))
    bn = bool(opts.int("batch_normalize", 0))
    _warn_dontloadscales(opts)
    segs: list[Segment] = []
    for name in GRU_BLOCKS:
        segs += connected_block_segments(name, inputs if name.startswith("input") else outputs,
                                         outputs, bn)
    # Darknet leaves the gru's out_w/out_h/out_c at 0 (only l.outputs is set); the next layer reads
    # l.outputs, which is what this flat (outputs, 1, 1) shape carries.
    return Parsed(GruOptions(inputs, outputs, bn), Shape(outputs, 1, 1),
                  segments=_weights_or_nothing(opts, segs))


# --- [lstm] -----------------------------------------------------------------------------------

LSTM_BLOCKS = ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")  # file order: recurrent W first


@dataclass(frozen=True)
class LstmOptions:
    inputs: int
    outputs: int
    batch_normalize: bool


@register("lstm")
def parse_lstm(opts: Options, ctx: Context) -> Parsed:
    inputs = ctx.require_image("an lstm layer").size
    outputs = positive(opts, "output", opts.int("output", 1))
    bn = bool(opts.int("batch_normalize", 0))
    _warn_dontloadscales(opts)
    segs: list[Segment] = []
    for name in LSTM_BLOCKS:
        segs += connected_block_segments(name, outputs if name[0] == "w" else inputs, outputs, bn)
    return Parsed(LstmOptions(inputs, outputs, bn), Shape(outputs, 1, 1),
                  segments=_weights_or_nothing(opts, segs))


# --- conv sub-blocks shared by [crnn] and [conv_lstm] ------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    size: int
    stride: int
    dilation: int
    padding: int
    groups: int
    batch_normalize: bool
    activation: str

    def conv(self, filters: int) -> ConvolutionalOptions:
        return ConvolutionalOptions(filters, self.size, self.stride, self.stride, self.padding,
                                    self.dilation, self.groups, self.batch_normalize,
                                    self.activation, None, False, False, False)


def _read_geometry(opts: Options, default_activation: str) -> ConvGeometry:
    """parse_crnn/parse_conv_lstm: size 3, stride 1, `pad=1` -> size/2; size 1 keeps dilation."""
    size = positive(opts, "size", opts.int("size", 3))
    stride = positive(opts, "stride", opts.int("stride", 1))
    dilation = positive(opts, "dilation", opts.int("dilation", 1))
    pad = opts.int("pad", 0)
    padding = non_negative(opts, "padding", opts.int("padding", 0))
    if pad:
        padding = size // 2
    groups = positive(opts, "groups", opts.int("groups", 1))
    activation = read_activation(opts, default_activation)
    bn = bool(opts.int("batch_normalize", 0))
    if opts.int("xnor", 0):
        raise opts.error("xnor=1 is not supported yet in recurrent layers", "xnor")
    _warn_dontloadscales(opts)
    return ConvGeometry(size, stride, dilation, padding, groups, bn, activation)


def _check_groups(opts: Options, g: ConvGeometry, **channels: int) -> None:
    for what, n in channels.items():
        if n % g.groups:
            raise opts.error(f"groups={g.groups} does not divide the {n} {what} channels", "groups")


def _same_size_out(opts: Options, ctx: Context, g: ConvGeometry, what: str) -> Shape:
    """The state is fed back through convs built for the input size, so the conv must keep W x H."""
    shape = ctx.require_image(what)
    out_h = out_size(opts, "input height", shape.h, 2 * g.padding, g.size, g.stride)
    out_w = out_size(opts, "input width", shape.w, 2 * g.padding, g.size, g.stride)
    if (out_h, out_w) != (shape.h, shape.w):
        raise opts.error(
            f"{what} maps {shape.w}x{shape.h} to {out_w}x{out_h}: Darknet feeds its state back "
            f"through convs built for the input size, so size/stride/padding must keep the size "
            f"(e.g. stride=1 pad=1 with an odd size)")
    return shape


def _conv_bflops(o: ConvolutionalOptions, in_c: int, h: int, w: int) -> float:
    return 2.0 * (in_c // o.groups) * o.filters * o.size * o.size * h * w / 1e9


class _ConvWindow:
    """size/stride/dilation of the sub-convs, for the summary table."""

    conv: ConvGeometry

    @property
    def size(self) -> int:
        return self.conv.size

    @property
    def stride(self) -> int:
        return self.conv.stride

    @property
    def dilation(self) -> int:
        return self.conv.dilation


# --- [crnn] -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CrnnOptions(_ConvWindow):
    in_c: int
    hidden: int  # filters of the state
    outputs: int  # filters of the output
    conv: ConvGeometry
    shortcut: bool

    def block(self, name: str) -> tuple[int, ConvolutionalOptions]:
        """(input channels, conv options) of input_layer / self_layer / output_layer."""
        in_c = self.in_c if name == "input_layer" else self.hidden
        filters = self.outputs if name == "output_layer" else self.hidden
        return in_c, self.conv.conv(filters)


CRNN_BLOCKS = ("input_layer", "self_layer", "output_layer")


@register("crnn")
def parse_crnn(opts: Options, ctx: Context) -> Parsed:
    g = _read_geometry(opts, "logistic")
    outputs = positive(opts, "output", opts.int("output", 1))
    hidden = positive(opts, "hidden", opts.int("hidden", 1))
    shortcut = bool(opts.int("shortcut", 0))
    shape = _same_size_out(opts, ctx, g, "[crnn]")
    _check_groups(opts, g, input=shape.c, hidden=hidden, output=outputs)
    o = CrnnOptions(shape.c, hidden, outputs, g, shortcut)
    segs: list[Segment] = []
    bflops = 0.0
    for name in CRNN_BLOCKS:
        in_c, co = o.block(name)
        segs += conv_block_segments(name, co, in_c)
        bflops += _conv_bflops(co, in_c, shape.h, shape.w)
    return Parsed(o, Shape(outputs, shape.h, shape.w), bflops=bflops,
                  segments=_weights_or_nothing(opts, segs))


# --- [conv_lstm] ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvLstmOptions(_ConvWindow):
    in_c: int
    outputs: int
    conv: ConvGeometry
    peephole: bool
    state_constrain: int  # |cell| is clamped to this after each step (0 = off)

    @property
    def blocks(self) -> tuple[str, ...]:
        """Sub-layers in file order: [vf, vi, vo,] wf, wi, wg, wo, uf, ui, ug, uo."""
        peep = ("vf", "vi", "vo") if self.peephole else ()
        return (*peep, "wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")

    def block(self, name: str) -> tuple[int, ConvolutionalOptions]:
        in_c = self.in_c if name[0] == "u" else self.outputs
        return in_c, self.conv.conv(self.outputs)


@register("conv_lstm")
def parse_conv_lstm(opts: Options, ctx: Context) -> Parsed:
    g = _read_geometry(opts, "linear")
    outputs = positive(opts, "output", opts.int("output", 1))
    peephole = bool(opts.int("peephole", 0))
    if opts.int("bottleneck", 0):
        raise opts.error(
            "bottleneck=1 is not supported: Darknet's CPU forward cannot run it (wi/wg/wo are not "
            "built and only the GPU forward has a bottleneck branch; the CPU one aborts)",
            "bottleneck")
    constrain = opts.int("state_constrain", INFERENCE_TIME_STEPS * 32)
    if opts.int("shortcut", 0):
        warn_at("shortcut=1 in [conv_lstm] has no effect (Darknet uses it only with bottleneck=1 "
                "on the GPU)", opts.key_loc("shortcut"))
    lstm_act = opts.str("lstm_activation", "tanh")
    if lstm_act != "tanh":
        warn_at(f"lstm_activation={lstm_act} is ignored: Darknet's CPU forward always uses tanh "
                f"(only its GPU forward reads lstm_activation); darkcfg follows the CPU forward",
                opts.key_loc("lstm_activation"))
    opts.float("time_normalizer", 1.0)  # training only
    shape = _same_size_out(opts, ctx, g, "[conv_lstm]")
    _check_groups(opts, g, input=shape.c, output=outputs)
    o = ConvLstmOptions(shape.c, outputs, g, peephole, constrain)
    segs: list[Segment] = []
    bflops = 0.0
    for name in o.blocks:
        in_c, co = o.block(name)
        segs += conv_block_segments(name, co, in_c)
        bflops += _conv_bflops(co, in_c, shape.h, shape.w)
    # make_conv_lstm_layer adds the elementwise work: 12 (peephole) or 9 flops per output value.
    bflops += (12 if peephole else 9) * outputs * shape.h * shape.w / 1e9
    return Parsed(o, Shape(outputs, shape.h, shape.w), bflops=bflops,
                  segments=_weights_or_nothing(opts, segs))


# --- [history] --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryOptions:
    history_size: int


@register("history")
def parse_history(opts: Options, ctx: Context) -> Parsed:
    shape = ctx.require_image("a history layer")
    size = positive(opts, "history_size", opts.int("history_size", 4))
    # With time_steps=1 (inference) Darknet copies the input into the first C channels and never
    # writes the others, which stay 0.
    return Parsed(HistoryOptions(size), Shape(shape.c * size, shape.h, shape.w))
