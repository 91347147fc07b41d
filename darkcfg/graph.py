"""Typed layer graph: sections → layer specs with absolute inputs, shapes, BFLOPs and weight layout.

No torch here. Shapes use Darknet's integer arithmetic (C division truncating toward zero), so the
graph can be checked against Darknet's own layer table before any tensor exists.
"""

from __future__ import annotations

import codecs
import difflib
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._keys import ACCEPTED_KEYS
from .errors import CfgError, Location, warn_at, warning_budget
from .lexer import RawSection, lex
from .limits import DEFAULT_LIMITS, INT_MAX, Limits, human_bytes
from .options import Options

__all__ = [
    "Shape", "Segment", "LayerSpec", "Parsed", "NetOptions", "Network", "Context",
    "SectionType", "register_section", "section_type", "canonical_type", "parse", "cdiv",
]

BOM = "\ufeff"  # a byte order mark as text: what a UTF-8 BOM decodes to

NETWORK_INPUT = -1  # index used in `LayerSpec.inputs` for the network's input tensor


def cdiv(a: int, b: int) -> int:
    """C's integer division (truncates toward zero), which Darknet's shape arithmetic uses."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(frozen=True)
class Shape:
    """Channels, height, width of one image's output. Flat layers are (n, 1, 1)."""

    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        return self.c * self.h * self.w

    def __str__(self) -> str:
        return f"{self.c}x{self.h}x{self.w}"


@dataclass(frozen=True)
class Segment:
    """One run of float32 values a layer reads from a .weights file, in file order.

    `name` is the module-relative state_dict key it fills (e.g. ``conv.weight``). `kind` is one of
    bias/scale/mean/variance/weight/other. `transposed`: the file holds the tensor's 2-D view
    ([out][rest]) transposed; `header_transposed`: only when the file header's transpose flag is set.
    """

    name: str
    count: int
    kind: str
    transposed: bool = False
    header_transposed: bool = False


@dataclass(frozen=True)
class Parsed:
    """What a section parser returns: the typed options and everything derived from them."""

    options: Any
    out_shape: Shape
    inputs: tuple[int, ...] | None = None  # absolute indices; None = the previous layer only
    bflops: float = 0.0
    segments: tuple[Segment, ...] = ()
    params: tuple[int, ...] = ()  # layer indices whose parameters this layer uses (share_index)


@dataclass(frozen=True)
class LayerSpec:
    """One Darknet layer: its type, typed options, absolute inputs, shapes and weights layout."""

    index: int
    type: str  # canonical type name, e.g. "convolutional"
    header: str  # section name as written, e.g. "conv"
    loc: Location
    inputs: tuple[int, ...]
    in_shape: Shape
    out_shape: Shape
    options: Any
    bflops: float
    segments: tuple[Segment, ...]
    params: tuple[int, ...] = ()

    @property
    def weight_count(self) -> int:
        return sum(s.count for s in self.segments)

    def __repr__(self) -> str:
        """One line (the dataclass repr of a yolov4 layer is a kilobyte); the fields hold the rest."""
        return (f"LayerSpec({self.index}, {self.type!r}, {_whc(self.in_shape)} -> "
                f"{_whc(self.out_shape)}, {self.bflops:.3f} BFLOPs, {self.weight_count:,} weights)")


def _whc(shape: Shape) -> str:
    """A shape as Darknet prints it: width x height x channels."""
    return f"{shape.w}x{shape.h}x{shape.c}"


@dataclass(frozen=True)
class NetOptions:
    """The `[net]` section's inference-relevant options."""

    width: int
    height: int
    channels: int
    inputs: int
    batch: int
    letter_box: int
    loc: Location

    @property
    def input_shape(self) -> Shape:
        if self.width * self.height * self.channels:
            return Shape(self.channels, self.height, self.width)
        return Shape(self.inputs, 1, 1)


@dataclass
class Network:
    """A parsed cfg: `[net]` options plus layer specs, index i = Darknet's layer i.

    `source` is the cfg text and `overrides` the [net] values given to :func:`parse` instead
    (width/height/channels). Edit with :meth:`set`, :meth:`insert`, :meth:`delete`; each edit
    changes the text and parses it again, so the network is always what its text says
    (:func:`darkcfg.dump` writes that text)."""

    net: NetOptions
    layers: list[LayerSpec]
    path: str | None = None
    source: str = ""
    overrides: dict[str, int] = field(default_factory=dict)
    limits: Limits | None = None
    _pending: Any = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        """One line: `print(network)` of yolov4 would otherwise print 155 kB of dataclasses."""
        name = repr(os.path.basename(self.path)) if self.path else "<cfg text>"
        layers = f"{len(self.layers)} layer{'' if len(self.layers) == 1 else 's'}"
        return (f"Network({name}, {layers}, {_whc(self.net.input_shape)}, "
                f"{self.total_bflops:.3f} BFLOPs)")

    def __getitem__(self, i: int) -> LayerSpec:
        return self.layers[i]

    def __iter__(self) -> Iterator[LayerSpec]:
        return iter(self.layers)

    # -- editing (the text work is in darkcfg.edit) ----------------------------------------------
    def set(self, index: int | str, options: Mapping[str, Any] | None = None, /,
            **kwargs: Any) -> None:
        """Set options of layer `index` (or of ``"net"``); a value of None removes the option.

        ``net.set(30, filters=255, activation="linear")``; keys that are not Python names go in a
        dict: ``net.set(0, {"stride_x": 2})``."""
        from .edit import set_options

        set_options(self, index, {**(options or {}), **kwargs})

    def insert(self, index: int, section: str, options: Mapping[str, Any] | None = None, /,
               **kwargs: Any) -> None:
        """Insert a new `[section]` so that it becomes layer `index`; the layer indices other
        sections hold (route layers=, shortcut from=, ...) keep pointing at the same layers."""
        from .edit import insert_layer

        insert_layer(self, index, section, {**(options or {}), **kwargs})

    def append(self, section: str, options: Mapping[str, Any] | None = None, /,
               **kwargs: Any) -> None:
        """Add a new `[section]` after the last layer."""
        self.insert(len(self.layers), section, options, **kwargs)

    def delete(self, index: int) -> None:
        """Remove layer `index`; refused while another layer reads it by index."""
        from .edit import delete_layer

        delete_layer(self, index)

    @contextmanager
    def batch(self) -> Iterator[Network]:
        """Group edits whose intermediate states would not parse (e.g. changing `classes` and the
        filters before each [yolo]): the text is parsed once, at the end; on error, nothing
        changes."""
        from .edit import begin_batch, end_batch

        outer = begin_batch(self)
        try:
            yield self
        except BaseException:
            end_batch(self, outer, commit=False)
            raise
        end_batch(self, outer, commit=True)

    @property
    def output_layers(self) -> list[int]:
        """Darknet's output layers: detection heads, else the last layer that is not [cost]."""
        heads = [l.index for l in self.layers if section_type(l.type).is_output]
        if heads:
            return heads
        for layer in reversed(self.layers):
            if layer.type != "cost":
                return [layer.index]
        return [len(self.layers) - 1]

    @property
    def total_bflops(self) -> float:
        """Darknet's "Total BFLOPS": a float32 running sum of the positive per-layer figures."""
        total = np.float32(0)
        for layer in self.layers:
            if layer.bflops > 0:
                total = np.float32(total + np.float32(layer.bflops))
        return float(total)

    @property
    def weight_count(self) -> int:
        return sum(l.weight_count for l in self.layers)


class Context:
    """What a section parser may ask about the graph built so far."""

    def __init__(self, net: NetOptions, layers: list[LayerSpec], index: int, opts: Options) -> None:
        self.net = net
        self.layers = layers
        self.index = index
        self.opts = opts

    @property
    def in_shape(self) -> Shape:
        return self.layers[-1].out_shape if self.layers else self.net.input_shape

    def shape(self, index: int) -> Shape:
        return self.net.input_shape if index == NETWORK_INPUT else self.layers[index].out_shape

    def resolve(self, value: int, key: str, what: str) -> int:
        """Darknet's index rule: negative is relative to this layer, zero or positive is absolute.

        `what` names the index in messages, e.g. "route index" for `[route] layers=`."""
        absolute = self.index + value if value < 0 else value
        if absolute < 0:
            raise self.opts.error(f"{what} {value} points before layer 0", key)
        if absolute >= self.index:
            raise self.opts.error(f"{what} {value} points to layer {absolute}, which is not "
                                  f"before this layer", key)
        return absolute

    def layer_list(self, key: str, what: str) -> tuple[int, ...]:
        """A required list of layer indices (`layers=`, `from=`), resolved to absolute indices."""
        raw = self.opts.ints(key)
        if not raw:
            raise self.opts.error(f"[{self.opts.section.header}] needs {key}=")
        return tuple(self.resolve(v, key, what) for v in raw)

    def require_image(self, what: str) -> Shape:
        shape = self.in_shape
        if shape.size <= 0:
            raise self.opts.error(f"the input of {what} is empty ({shape})")
        return shape


SectionParser = Callable[[Options, Context], Parsed]


@dataclass(frozen=True)
class SectionType:
    """A section type: how to read it (no torch) and, registered separately, how to build it."""

    name: str
    parse: SectionParser
    aliases: tuple[str, ...] = ()
    is_output: bool = False
    accepted: frozenset[str] = frozenset()  # keys Darknet reads that do not change inference
    index_keys: frozenset[str] = frozenset()  # keys whose values are layer indices (edits fix them)


_TYPES: dict[str, SectionType] = {}
_ALIASES: dict[str, str] = {}


def register_section(name: str, parse: SectionParser, *, aliases: Iterable[str] = (),
                     is_output: bool = False, accepted: Iterable[str] = (),
                     index_keys: Iterable[str] = (), replace: bool = False) -> SectionType:
    """Register a section type (and its header aliases). Users call this for their own sections.

    `index_keys`: the options that hold layer indices (like [route] layers=), which
    :meth:`Network.insert` and :meth:`Network.delete` renumber."""
    aliases = tuple(aliases)
    for header in (name, *aliases):
        owner = _ALIASES.get(header)
        if owner is not None and owner != name and not replace:
            raise ValueError(f"section header [{header}] is already registered for {owner!r}")
    st = SectionType(name, parse, aliases, is_output, frozenset(accepted), frozenset(index_keys))
    _TYPES[name] = st
    for header in (name, *aliases):
        _ALIASES[header] = name
    return st


def canonical_type(header: str) -> str | None:
    return _ALIASES.get(header)


def section_type(name: str) -> SectionType:
    return _TYPES[name]


# Keys Darknet reads for every layer in parse_network_cfg's loop (training options).
COMMON_KEYS = ACCEPTED_KEYS["*"]


def parse(source: str | os.PathLike | Network, *, width: int | None = None, height: int | None = None,
          channels: int | None = None, limits: Limits | None = None) -> Network:
    """Read a cfg into a :class:`Network`: layer shapes, BFLOPs and weights layout, no torch.

    A cfg that cannot be run raises :class:`CfgError` with file, line and section; what Darknet
    accepts but a user likely did not mean (an unused or misspelt option, a duplicate key) is a
    warning (:class:`CfgWarning`).

    Args:
        source: a path (str or PathLike), cfg text (a str holding a newline, or a '[' that is
            not an existing path), or a parsed Network (returned as is, or parsed again with the
            overrides).
        width, height, channels: override [net]'s values (e.g. another input size).
        limits: bounds on what an untrusted cfg may ask for (default
            :data:`darkcfg.limits.DEFAULT_LIMITS`); a Network passed with `limits` and no
            overrides is checked against them.
    """
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a darkcfg.Limits, not {type(limits).__name__}")
    if isinstance(source, Network):
        if width is None and height is None and channels is None:
            if limits is not None:
                check_network(source, limits)
            return source
        given = {k: v for k, v in (("width", width), ("height", height), ("channels", channels))
                 if v is not None}
        return parse_text(source.source, source.path, limits=limits or source.limits,
                          **{**source.overrides, **given})
    limits = limits or DEFAULT_LIMITS
    text, path = _read_source(source, limits)
    return parse_text(text, path, width=width, height=height, channels=channels, limits=limits)


def _read_source(source: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str | None]:
    """A Path, or a str naming an existing file or without any '[' or newline, is a path; else text.

    Only a regular file is read (not a device or pipe, which could block or never end), and only
    when it is within Limits.max_cfg_bytes."""
    if isinstance(source, str) and ("\n" in source or "\0" in source
                                    or ("[" in source and not os.path.exists(source))):
        return source, None  # (no path holds a NUL: such a str is text, and the lexer says why)
    path = os.fspath(source)
    loc = Location(path)
    try:
        try:
            info = os.stat(path)
        except ValueError as exc:  # a path with a NUL byte
            raise CfgError(f"cannot read cfg file: {exc}", loc) from None
        if not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise CfgError(f"cannot read cfg file: it is {what}", loc)
        if info.st_size > limits.max_cfg_bytes:
            raise CfgError(f"cfg file is {human_bytes(info.st_size)}, more than the limit of "
                           f"{human_bytes(limits.max_cfg_bytes)} (Limits.max_cfg_bytes): a cfg is "
                           f"text of a few kB (is it a .weights file?)", loc)
        with open(path, "rb") as fh:
            data = fh.read(limits.max_cfg_bytes + 1)
    except OSError as exc:
        raise CfgError(f"cannot read cfg file: {exc.strerror or exc}", loc) from None
    bom = data.startswith(codecs.BOM_UTF8)  # kept as U+FEFF whichever decoding the rest needs,
    if bom:                                 # so parse_text names and skips it
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return BOM + text if bom else text, path


def parse_text(text: str, path: str | None = None, *, width: int | None = None,
               height: int | None = None, channels: int | None = None,
               limits: Limits | None = None) -> Network:
    limits = limits or DEFAULT_LIMITS
    with warning_budget(limits.max_warnings):
        if text.startswith(BOM):
            warn_at("the cfg starts with a UTF-8 byte order mark (BOM), which is skipped (Darknet "
                    "cannot read a cfg with one: save it as UTF-8 without BOM)", Location(path, 1))
            text = text[len(BOM):]
        sections = lex(text, path, limits=limits)
        if not sections:
            raise CfgError("no sections: a cfg starts with [net]", Location(path))
        first = sections[0]
        if canonical_type(first.header) != "net":
            raise CfgError(f"the first section must be [net] or [network], not [{first.header}]",
                           Location(path, first.line, None, first.header))
        net = _parse_net(first, path, width, height, channels, limits)
        if len(sections) == 1:
            raise CfgError("the cfg has no layers after [net] (Darknet cannot run it either)",
                           Location(path, first.line, None, first.header))
        tally = _Tally(limits, net)
        layers: list[LayerSpec] = []
        for index, section in enumerate(sections[1:]):
            layers.append(_parse_layer(section, path, index, net, layers, tally))
    overrides = {k: v for k, v in (("width", width), ("height", height), ("channels", channels))
                 if v is not None}
    return Network(net, layers, path, text, overrides, limits)


def check_network(network: Network, limits: Limits) -> None:
    """Check an already parsed network against `limits` (e.g. tighter ones than it was parsed with)."""
    tally = _Tally(limits, network.net)
    for spec in network.layers:
        tally.add(spec.loc, spec.out_shape, spec.weight_count, spec.bflops)


class _Tally:
    """Running memory estimate of a parse: weights (float32 parameters) and layer outputs of one
    image (Darknet allocates every layer's output; batch 1 as in its inference), checked against
    the limits layer by layer, so the first layer over a limit is the one named."""

    def __init__(self, limits: Limits, net: NetOptions) -> None:
        self.limits = limits
        self.weights = 0
        self.activations = 0
        self.bflops = 0.0
        shape = net.input_shape
        self._add_output(net.loc, shape, f"the network input {shape}")

    def add(self, loc: Location, shape: Shape, weights: int, bflops: float = 0.0) -> None:
        self.weights += weights
        if self.weights > self.limits.max_weights:
            so_far = "" if self.weights == weights else \
                f"; with the layers before it the model needs {self.weights:,}"
            raise CfgError(
                f"too many weights: this layer has {weights:,}{so_far} "
                f"({human_bytes(4 * self.weights)} as float32), more than the limit of "
                f"{self.limits.max_weights:,} ({human_bytes(4 * self.limits.max_weights)}); raise "
                f"Limits.max_weights to allow it", loc)
        if weights > INT_MAX:
            raise CfgError(f"this layer has {weights:,} weights, more than Darknet's 32-bit int "
                           f"can count ({INT_MAX:,})", loc)
        self._add_output(loc, shape, f"the output {shape}")
        self.bflops += max(0.0, bflops)
        if self.bflops > self.limits.max_bflops:
            so_far = "" if self.bflops - bflops < 1 else \
                f"; with the layers before it one image needs {self.bflops:,.0f}"
            raise CfgError(
                f"too much compute: this layer needs {bflops:,.0f} BFLOPs{so_far}, more than the "
                f"limit of {self.limits.max_bflops:,}; raise Limits.max_bflops to allow it", loc)

    def _add_output(self, loc: Location, shape: Shape, what: str) -> None:
        size = shape.size
        self.activations += size
        if self.activations > self.limits.max_activations:
            so_far = "" if self.activations == size else \
                f"; with the input and the layers before it one image needs {self.activations:,}"
            raise CfgError(
                f"layer outputs too large: {what} has {size:,} values{so_far} "
                f"({human_bytes(4 * self.activations)} as float32), more than the limit of "
                f"{self.limits.max_activations:,} ({human_bytes(4 * self.limits.max_activations)}); "
                f"raise Limits.max_activations to allow it", loc)
        if max(size, shape.c, shape.h, shape.w) > INT_MAX:
            raise CfgError(f"{what} has {size:,} values, more than Darknet's 32-bit int can "
                           f"count ({INT_MAX:,})", loc)


def _warn_unused(opts: Options) -> None:
    unused = opts.unused()
    if not unused:
        return
    # candidates: keys this section reads that the section does not set (a typo of a key that is
    # also given correctly is just junk)
    candidates = sorted(opts.known_keys() - {o.key for o in opts.section.options})
    for opt in unused:
        close = difflib.get_close_matches(opt.key, candidates, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warn_at(f"unused option {opt.key!r} (Darknet ignores it too{hint})", opts.loc(opt))


def _parse_net(section: RawSection, path: str | None, width: int | None, height: int | None,
               channels: int | None, limits: Limits = DEFAULT_LIMITS) -> NetOptions:
    opts = Options(section, path, None, limits)
    st = section_type("net")
    opts.accept(st.accepted)
    w = opts.int("width", 0)
    h = opts.int("height", 0)
    c = opts.int("channels", 0)
    w, h, c = (width if width is not None else w, height if height is not None else h,
               channels if channels is not None else c)
    inputs = opts.int("inputs", w * h * c)
    batch = opts.int("batch", 1)
    letter_box = opts.int("letter_box", 0)
    given = {"width": width, "height": height, "channels": channels}
    for key, value in (("width", w), ("height", h), ("channels", c), ("inputs", inputs)):
        # an override is not on any line of the file: name the caller, point at [net]
        what, where = (f"{key}={value} (given to parse)", None) if given.get(key) is not None \
            else (f"{key}={value}", key)
        if value < 0:
            raise opts.error(f"{what} must not be negative", where)
        if value > INT_MAX and (key != "inputs" or opts.has(key)):
            raise opts.error(f"{what} is out of range: Darknet keeps it in a 32-bit int", where)
    if not (w * h * c) and inputs <= 0:
        raise opts.error("[net] gives no input size: set width, height and channels (or inputs)")
    _warn_unused(opts)
    return NetOptions(w, h, c, inputs, batch, letter_box, opts.loc())


# Sections of Darknet-style cfgs from other projects, which Darknet itself does not read.
_YOLOR = "a yolor (WongKinYiu/yolor) extension that Darknet does not read"
FOREIGN_SECTIONS = {
    "implicit_add": _YOLOR, "implicit_mul": _YOLOR, "implicit_cat": _YOLOR,
    "shift_channels": _YOLOR, "control_channels": _YOLOR,
    "route_lhalf": "a PyTorch_YOLOv4 extension that Darknet does not read",
    "deconvolutional": "pjreddie's Darknet had it; AlexeyAB's Darknet does not read it",
}


def _unknown_hint(header: str) -> str:
    """Say where a foreign section comes from, or which known section a typo was meant to be."""
    origin = FOREIGN_SECTIONS.get(header)
    if origin is not None:
        return f": {origin}"
    close = difflib.get_close_matches(header, sorted(_ALIASES), n=1, cutoff=0.75)
    return f" (did you mean [{close[0]}]?)" if close else ""


def _parse_layer(section: RawSection, path: str | None, index: int, net: NetOptions,
                 layers: list[LayerSpec], tally: _Tally) -> LayerSpec:
    opts = Options(section, path, index, tally.limits)
    name = canonical_type(section.header)
    if name is None:
        raise CfgError(f"unknown section type [{section.header}]{_unknown_hint(section.header)}",
                       opts.loc())
    if name == "net":
        raise CfgError(f"[{section.header}] may only be the first section", opts.loc())
    st = section_type(name)
    opts.accept(COMMON_KEYS | st.accepted)
    ctx = Context(net, layers, index, opts)
    try:
        parsed = st.parse(opts, ctx)
    except OSError as exc:  # a file the section names (tree=) that the OS refuses to look at
        raise CfgError(f"cannot read a file this section names: {exc.strerror or exc}",
                       opts.loc()) from None
    if parsed.out_shape.size <= 0:
        raise CfgError(f"output shape {parsed.out_shape} is empty", opts.loc())
    weights = sum(s.count for s in parsed.segments)
    if not weights and _dontload(section):
        weights = _held_weights(st, section, path, index, net, layers, tally.limits)
    tally.add(opts.loc(), parsed.out_shape, weights, parsed.bflops)
    _warn_unused(opts)
    inputs = parsed.inputs if parsed.inputs is not None else (index - 1,)
    return LayerSpec(index=index, type=name, header=section.header, loc=opts.loc(), inputs=inputs,
                     in_shape=ctx.in_shape, out_shape=parsed.out_shape, options=parsed.options,
                     bflops=float(np.float32(parsed.bflops)), segments=parsed.segments,
                     params=parsed.params)


def _dontload(section: RawSection) -> bool:
    return any(o.key == "dontload" for o in section.options)


def _held_weights(st: SectionType, section: RawSection, path: str | None, index: int,
                  net: NetOptions, layers: list[LayerSpec], limits: Limits) -> int:
    """Weights a `dontload=1` layer still holds in torch (the file just does not store them): the
    same section parsed without `dontload`, quietly. 0 if that does not parse."""
    plain = RawSection(section.header, section.line,
                       [o for o in section.options if o.key != "dontload"])
    opts = Options(plain, path, index, limits)
    opts.accept(COMMON_KEYS | st.accepted)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with warning_budget(0):
                parsed = st.parse(opts, Context(net, layers, index, opts))
    except CfgError:
        return 0
    return sum(s.count for s in parsed.segments)
