"""Darknet .weights I/O: header, then every layer's float32 segments in `load_weights` order.

A weights file may be truncated, padded, damaged or meant for another cfg. The header and the
file's size are checked against the cfg's segments before the body is read (so a 100 GB file that
does not fit is refused at once, and a prefix load reads only the prefix); the floats used are read
once into one buffer, every target tensor is checked, and only then do the parameters become views
of that buffer, so a failed load changes nothing. NaN/Inf values and negative BN variances (the
usual sign of a file for another cfg) load as Darknet would load them, with a warning naming the
layer.

Sizes tell a partial file (one that ends on a layer boundary, like Darknet's yolov4.conv.137)
from a misaligned one: a file that would fit if the layers before the detection heads had another
class count (or one such layer other filters) is refused, naming the layers, and a load that is
not an exact fit (a prefix, a partial file) is refused when a BN variance comes out negative.
`FitError`s carry their advice as a template, so the command line can name its own flags.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import Location, WeightsError, warn_at, warning_budget
from .graph import LayerSpec, Network, Segment
from .limits import DEFAULT_LIMITS

__all__ = ["WeightsHeader", "LoadReport", "FitError", "API_SPELLING", "read_header",
           "load_weights", "save_weights", "describe_layers"]

DEFAULT_VERSION = (0, 2, 5)


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int

    @property
    def seen_is_64bit(self) -> bool:
        return self.major * 10 + self.minor >= 2

    @property
    def transpose(self) -> bool:
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 12 + (8 if self.seen_is_64bit else 4)

    def to_bytes(self) -> bytes:
        head = np.array([self.major, self.minor, self.revision], "<i4").tobytes()
        return head + np.array([self.seen], "<u8" if self.seen_is_64bit else "<u4").tobytes()


@dataclass(frozen=True)
class LoadReport:
    """What a load did: header, layers loaded (layers 0..layers_loaded-1 of the file's cfg), floats
    read, floats left unread; `initialised`: the layers with weights that the file did not fill
    (a partial file, `cutoff`, `dontload=1`, or with `weights_cfg` the layers whose shapes differ),
    which keep Darknet's initialisation; `weights_cfg`: the cfg the file was read with, when it is
    not the model's."""

    path: str
    header: WeightsHeader
    layers_loaded: int
    floats_read: int
    floats_left: int
    initialised: tuple[int, ...] = ()
    weights_cfg: str | None = None


# How a FitError's advice names the options: the Python API's spelling (the CLI has its own).
API_SPELLING = {"weights_cfg": "weights_cfg=", "cutoff": "cutoff=", "strict": "strict=False"}


class FitError(WeightsError):
    """A weights file that does not fit the cfg. `problem` says what is wrong; `hint` is the
    advice, a template naming options as {weights_cfg}, {cutoff} and {strict}: the message renders
    it with :data:`API_SPELLING`, the command line with its flags (:meth:`render`)."""

    def __init__(self, problem: str, hint: str, loc: Location) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint.format_map(API_SPELLING)}", loc)

    def render(self, spelling: Mapping[str, str]) -> str:
        """The message (with its location) with the advice naming options as `spelling` does."""
        return str(WeightsError(f"{self.problem}; {self.hint.format_map(spelling)}", self.loc))


def describe_layers(indices: tuple[int, ...] | list[int]) -> str:
    """`15, 17-19, 22`: layer indices with runs shortened."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# Darknet writes 0.2.5 (older files 0.1.0; a major or minor above 1000 flags transposed
# [connected] weights). Anything beyond this is not a Darknet header but some other file's bytes.
MAX_VERSION = 65535


def read_header(data: bytes | memoryview, path: str = "") -> WeightsHeader:
    loc = Location(path)
    if len(data) < 12:
        raise WeightsError(f"weights file is {len(data)} bytes, shorter than its 12-byte version "
                           f"header", loc)
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if major < 0 or minor < 0 or revision < 0:
        raise WeightsError(f"weights header version {major}.{minor}.{revision} is not valid", loc)
    if max(major, minor, revision) > MAX_VERSION:
        raise WeightsError(f"weights header version {major}.{minor}.{revision} is not valid: "
                           f"{_not_weights_hint(bytes(data[:4]))}", loc)
    wide = major * 10 + minor >= 2
    need = 12 + (8 if wide else 4)
    if len(data) < need:
        raise WeightsError(f"weights file is {len(data)} bytes, shorter than its {need}-byte header",
                           loc)
    seen = int(np.frombuffer(data, "<u8" if wide else "<u4", 1, 12)[0])
    return WeightsHeader(major, minor, revision, seen)


def _not_weights_hint(magic: bytes) -> str:
    """Say what the file looks like instead; the usual mix-ups are checkpoints and cfg files."""
    if magic.startswith(b"PK"):
        return ("this is a zip archive (e.g. a PyTorch .pt checkpoint), not a Darknet .weights "
                "file")
    if magic[:1] == b"\x80":
        return "this is a Python pickle, not a Darknet .weights file"
    if magic.lstrip()[:1] in (b"[", b"#", b";"):
        return "this looks like a cfg (text) file, not a Darknet .weights file"
    return "this does not look like a Darknet .weights file"


@dataclass(frozen=True)
class _Source:
    """An open weights file whose header has been read: `floats` values follow the header."""

    header: WeightsHeader
    floats: int


def _open(fh, path: str) -> _Source:
    """Check the file before reading its body: a regular file, a valid header, whole floats."""
    loc = Location(path)
    info = os.fstat(fh.fileno())
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError("cannot read weights file: it is not a regular file", loc)
    header = read_header(fh.read(20), path)
    body = info.st_size - header.nbytes
    if body % 4:
        raise WeightsError(f"weights file body is {body} bytes, not a whole number of "
                           f"float32 values", loc)
    return _Source(header, body // 4)


def _stop(network: Network, cutoff: int | None) -> int:
    """Number of layers a load or save covers: all, or those below `cutoff`."""
    n = len(network.layers)
    if cutoff is None:
        return n
    if cutoff < 0:
        raise ValueError(f"cutoff must be 0 or more (the number of layers to load), got {cutoff}")
    return min(cutoff, n)


def _layer_desc(spec: LayerSpec) -> str:
    return f"layer {spec.index} ([{spec.header}] at line {spec.loc.line})"


def _span(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


# -- which layers' shapes follow the class count --------------------------------------------------
# head type -> its input channels per class (anchors); a [softmax]'s input has one per class
_PER_CLASS = {"yolo": lambda o: len(o.mask), "Gaussian_yolo": lambda o: len(o.mask),
              "region": lambda o: o.num, "detection": lambda o: o.side * o.side,
              "softmax": lambda o: 1}
# layers between a head and its weighted input that keep the channels and have no weights
_PASS_THROUGH = ("avgpool", "dropout", "activation", "maxpool")


@dataclass(frozen=True)
class _ClassLayer:
    """A conv or connected layer whose filters follow the class count of the head it feeds."""

    spec: LayerSpec
    head: LayerSpec  # [yolo], [Gaussian_yolo], [region], [detection] or [softmax]
    per_class: int  # filters per class
    per_filter: int  # floats per filter
    filters: int

    @property
    def classes(self) -> int | None:
        return getattr(self.head.options, "classes", None)


def _class_layers(network: Network) -> list[_ClassLayer]:
    """The weighted layers right before each detection head (or [softmax]) whose only consumers
    have no weights, so a class count change changes their filters and nothing else."""
    weighted_consumer = {j for spec in network for j in spec.inputs if spec.segments}
    found: dict[int, _ClassLayer] = {}
    for head in network:
        per_class = _PER_CLASS.get(head.type)
        if per_class is None or len(head.inputs) != 1:
            continue
        k = head.inputs[0]
        while k >= 0 and network[k].type in _PASS_THROUGH and len(network[k].inputs) == 1:
            k = network[k].inputs[0]
        if k < 0 or k in weighted_consumer or k in found:
            continue
        spec = network[k]
        filters = {"convolutional": spec.out_shape.c,
                   "connected": getattr(spec.options, "outputs", 0)}.get(spec.type, 0)
        if not filters or not spec.segments or spec.params or spec.weight_count % filters:
            continue
        found[k] = _ClassLayer(spec, head, per_class(head.options), spec.weight_count // filters,
                               filters)
    return list(found.values())


@dataclass(frozen=True)
class _Explained:
    """The file fits the cfg if the layers from `first` on had the shapes `text` names."""

    first: int
    text: str


def _changes_text(changes: list[tuple[_ClassLayer, int]]) -> str:
    """`classes=80 instead of 3 in [yolo] layers 16 and 23 (filters=255 instead of 24 in layers
    15 and 22)`, or per layer `filters=X instead of Y in layer k ([convolutional] at line L)`."""
    heads = [g for g, _ in changes if g.classes is not None]
    deltas = {d for _, d in changes}
    if len(heads) == len(changes) and len(deltas) == 1 and len({g.classes for g in heads}) == 1:
        d = deltas.pop()
        old = heads[0].classes
        kinds = {g.head.header for g in heads}
        named = f"[{kinds.pop()}] " if len(kinds) == 1 else ""
        noun = "layer" if len(heads) == 1 else "layers"
        olds = {g.filters for g in heads}
        news = {g.filters + d * g.per_class for g in heads}
        convs = _and([str(g.spec.index) for g in heads])
        filt = (f"filters={news.pop()} instead of {olds.pop()} in {noun} {convs}"
                if len(olds) == len(news) == 1 else f"other filters in {noun} {convs}")
        return (f"it fits with classes={old + d} instead of {old} in {named}{noun} "
                f"{_and([str(g.head.index) for g in heads])} ({filt})")
    return "it fits with " + _and([f"filters={g.filters + d * g.per_class} instead of "
                                   f"{g.filters} in {_layer_desc(g.spec)}" for g, d in changes])


def _explain(network: Network, have: int, total: int) -> _Explained | None:
    """Whether `have` floats would be this cfg's full file with another class count (the same
    change in every head), or with other filters in one layer before a head."""
    groups = _class_layers(network)
    diff = have - total
    if not groups or not diff:
        return None

    def valid(g: _ClassLayer, d: int) -> bool:
        return g.filters + d * g.per_class > 0 and (g.classes is None or g.classes + d >= 1)

    def step(g: _ClassLayer) -> int:  # floats per class
        return g.per_class * g.per_filter

    unit = sum(step(g) for g in groups)
    if diff % unit == 0 and all(valid(g, diff // unit) for g in groups):
        changes = [(g, diff // unit) for g in groups]
    else:
        changes = [(g, diff // step(g)) for g in groups
                   if diff % step(g) == 0 and valid(g, diff // step(g))][:1]
        if not changes:
            return None
    first = min(g.spec.index for g, _ in changes)
    return _Explained(first, _changes_text(changes))


# -- how the file's floats map onto the cfg ---------------------------------------------------
@dataclass(frozen=True)
class _Fit:
    """Layers 0..loaded-1 are read, `floats` values. `aligned`: the sizes prove the file's
    segments line up with this cfg's (an exact fit, this cfg's full file under a cutoff, or the
    layers before those another class count explains); otherwise (a prefix of a longer file, a
    partial file) a negative BN variance is taken as misalignment."""

    loaded: int
    floats: int
    aligned: bool


def _check_counts(network: Network, stop: int, src: _Source, strict: bool, loc: Location) -> _Fit:
    """How the load maps the file onto layers < stop; every size mismatch is found here, before
    any float is read."""
    counts = [spec.weight_count for spec in network.layers]
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    need, have = cum[stop], src.floats
    if have == need:
        return _Fit(stop, need, True)
    explained = _explain(network, have, cum[-1])
    if explained is not None:
        first = explained.first
        if stop <= first:  # this cfg's file, other shapes only from `first` on
            return _Fit(stop, need, True)
        cut = f", or with {{cutoff}}{first} to load {_span(0, first - 1)} only" if first else ""
        raise FitError(
            f"weights file does not fit this cfg: it has {have:,} floats, the cfg needs "
            f"{cum[-1]:,}; {explained.text}",
            f"load it with {{weights_cfg}}<the cfg it was saved with> to copy the layers whose "
            f"shapes match (the others get Darknet's initialisation){cut}", loc)
    if stop < len(counts) and have == cum[-1]:  # a cutoff into this cfg's full file
        return _Fit(stop, need, True)
    if have == 0:
        first_spec = next(s for s in network.layers[:stop] if s.weight_count)
        h = src.header
        raise WeightsError(
            f"weights file holds only its {h.nbytes}-byte header (version {h.major}.{h.minor}."
            f"{h.revision}, seen {h.seen}) and no weights; the cfg needs {need:,} floats, "
            f"{_layer_desc(first_spec)} the first {first_spec.weight_count:,}", loc)
    if have < need:
        if have not in cum[:stop + 1]:
            spec = network.layers[next(i for i in range(stop) if cum[i + 1] > have)]
            pos = cum[spec.index]
            before = f" ({pos} read for layers 0-{spec.index - 1})" if spec.index else ""
            raise WeightsError(
                f"weights file ends inside {_layer_desc(spec)}: it needs {spec.weight_count} "
                f"floats, {have - pos} are left{before}", loc)
        last = max(i for i in range(stop) if cum[i + 1] == have and counts[i])
        if strict:
            raise FitError(
                f"weights file ends after layer {last}: it holds the {have:,} floats of "
                f"{_span(0, last)}, the cfg's {_span(0, stop - 1)} need {need:,}",
                f"pass {{strict}} to load it as a partial file (the later layers keep Darknet's "
                f"initialisation), or {{cutoff}}{last + 1}", loc)
        return _Fit(last + 1, have, False)
    if strict:
        raise FitError(
            f"weights file has {have - need} floats left over after layer {stop - 1} "
            f"({need} of {have} read): it does not fit this cfg",
            f"pass {{strict}} to load the first {need} floats anyway", loc)
    return _Fit(stop, need, False)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A layer's parameters and buffers by state_dict name: one walk per layer, not per segment."""
    found: dict[str, torch.Tensor] = dict(module.named_buffers(remove_duplicate=False))
    found.update(module.named_parameters(remove_duplicate=False))
    return found


def _checked_target(tensors: dict[str, torch.Tensor], seg: Segment, spec: LayerSpec,
                    loc: Location) -> torch.Tensor:
    """The tensor a segment fills; a builder that does not match its layer's segments is an error
    (raised before anything is copied)."""
    target = tensors.get(seg.name)
    if target is None:
        raise WeightsError(f"{_layer_desc(spec)} has no tensor {seg.name!r} for its weights "
                           f"segment", loc) from None
    if target.numel() != seg.count:
        raise WeightsError(f"{_layer_desc(spec)}: tensor {seg.name!r} has {target.numel()} values, "
                           f"its weights segment {seg.count}", loc)
    return target


def _from_file(values: torch.Tensor, target: torch.Tensor, seg: Segment, header: WeightsHeader
               ) -> torch.Tensor:
    t = values
    if seg.transposed or (seg.header_transposed and header.transpose):
        out = target.shape[0]
        t = t.view(-1, out).t()
    return t.reshape(target.shape)


def _can_alias(target: torch.Tensor, values: torch.Tensor) -> bool:
    return (target.device.type == "cpu" and target.dtype == values.dtype == torch.float32
            and values.is_contiguous() and not target.is_inference())


def _to_file(tensor: torch.Tensor, seg: Segment, header: WeightsHeader) -> np.ndarray:
    t = tensor.detach().to("cpu", torch.float32)
    if seg.transposed or (seg.header_transposed and header.transpose):
        t = t.reshape(t.shape[0], -1).t()
    return t.contiguous().numpy().reshape(-1)


_CHUNK = 1 << 20  # floats per read: 4 MiB, checked for NaN/Inf while still in cache
_PARALLEL = 4 * _CHUNK  # from this many floats on, two threads read (half the file each)
_POOL: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    """One reader thread for all loads (starting one per load costs about half a millisecond)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="darkcfg-weights")
    return _POOL


def _all_finite(chunk: np.ndarray) -> bool:
    """No NaN or Inf in `chunk`. A dot product with itself is one fast BLAS pass and is finite
    when every value is (an overflow to Inf falls back to the exact check)."""
    with np.errstate(over="ignore", invalid="ignore"):
        fast = np.isfinite(np.dot(chunk, chunk))
    return bool(fast) or bool(np.isfinite(chunk).all())


def _read_at(fh, view: memoryview, at: int) -> int:
    """Read into `view` from byte `at`: a positioned read where the system has one (so two
    threads can read two parts of one file at once), else seek and read."""
    if hasattr(os, "preadv"):
        return os.preadv(fh.fileno(), [view], at)
    fh.seek(at)
    return fh.readinto(view)


def _read_part(fh, floats: np.ndarray, offset: int, lo: int, hi: int) -> tuple[int, bool]:
    """Read floats[lo:hi] from the file (at `offset` + 4*lo), chunk by chunk, checking each chunk
    for NaN/Inf while it is still in cache. Returns (floats read, all finite)."""
    raw = memoryview(floats).cast("B")
    finite = True
    pos = lo
    while pos < hi:
        n = min(_CHUNK, hi - pos)
        got = _read_at(fh, raw[4 * pos:4 * (pos + n)], offset + 4 * pos) // 4
        if not got:
            break
        finite = _all_finite(floats[pos:pos + got]) and finite
        pos += got
    return pos - lo, finite


def _warn_suspicious(spec: LayerSpec, floats: np.ndarray, start: int, path: str,
                     finite: bool) -> None:
    """Values Darknet would load without a word but that make outputs NaN: warn, naming the layer.

    NaN/Inf anywhere (a damaged or diverged file; `finite`: the read found none); negative BN
    variances (sqrt of a negative: the usual sign that the file belongs to another cfg and the
    segments are misaligned)."""
    n = spec.weight_count
    bad = 0 if finite else int(n - np.count_nonzero(np.isfinite(floats[start:start + n])))
    if bad:
        warn_at(f"{_layer_desc(spec)}: {bad:,} of its {n:,} weights are NaN or infinite; loaded "
                f"as they are, its outputs will be NaN", Location(path))
    negative, total = _negative_variances(spec, floats, start)
    if negative:
        warn_at(f"{_layer_desc(spec)}: {negative:,} of its {total:,} BN variances are negative, "
                f"which makes its outputs NaN (does the weights file belong to this cfg?)",
                Location(path))


def _negative_variances(spec: LayerSpec, floats: np.ndarray, start: int) -> tuple[int, int]:
    """(negative, all) BN variances of the layer whose floats begin at `start`."""
    pos = start
    negative = total = 0
    for seg in spec.segments:
        if seg.kind == "variance":
            negative += int(np.count_nonzero(floats[pos:pos + seg.count] < 0))
            total += seg.count
        pos += seg.count
    return negative, total


def _refuse_misaligned(network: Network, fit: _Fit, stop: int, floats: np.ndarray, have: int,
                       loc: Location) -> None:
    """A load the sizes do not prove aligned (a prefix, a partial file) with a negative BN
    variance: the values are another cfg's, shifted; refuse before any parameter changes."""
    start = 0
    for spec in network.layers[:fit.loaded]:
        negative, total = _negative_variances(spec, floats, start)
        if negative:
            if fit.loaded < stop:
                what = f"it ends after layer {fit.loaded - 1} ({have:,} floats)"
            else:
                what = (f"this cfg's {_span(0, stop - 1)} use the first {fit.floats:,} of its "
                        f"{have:,} floats")
            raise FitError(
                f"weights file does not fit this cfg: {what}, and {negative:,} of the {total:,} BN "
                f"variances of {_layer_desc(spec)} come out negative, so its values do not line "
                f"up with this cfg's layers at or before layer {spec.index}",
                "load it with {weights_cfg}<the cfg it was saved with> to copy the layers whose "
                "shapes match (the others get Darknet's initialisation)", loc)
        start += spec.weight_count


def _initialised(network: Network, layers: nn.ModuleList, loaded: int) -> tuple[int, ...]:
    """Layers with tensors of their own that a load of layers < loaded does not fill."""
    return tuple(spec.index for spec in network.layers
                 if (spec.index >= loaded or not spec.segments) and not spec.params
                 and next(iter(_tensors(layers[spec.index]).values()), None) is not None)


@dataclass(frozen=True)
class _Deferred:
    """A segment whose values are a reshaped copy, not a view, of the buffer."""

    start: int
    seg: Segment


@dataclass
class _Plan:
    """What a load does once the floats are read, worked out while they are being read."""

    # (target tensor, its values: a view of the buffer or a copy made later, alias it?)
    pending: list[tuple[torch.Tensor, torch.Tensor | _Deferred, bool]]
    variances: np.ndarray  # buffer positions of every BN variance (all >= 0 in a sound file)


def _plan(network: Network, layers: nn.ModuleList, stop: int, buffer: torch.Tensor,
          header: WeightsHeader, loc: Location) -> _Plan:
    """Find the target of every segment of layers < stop; a builder whose tensors do not match
    its layer's segments is an error here, before anything changes."""
    pending: list[tuple[torch.Tensor, torch.Tensor | _Deferred, bool]] = []
    variances: list[np.ndarray] = []
    storage = buffer.untyped_storage().data_ptr()
    start = 0
    for spec in network.layers[:stop]:
        if not spec.segments:
            continue
        tensors = _tensors(layers[spec.index])
        for seg in spec.segments:
            target = _checked_target(tensors, seg, spec, loc)
            values = _from_file(buffer[start:start + seg.count], target, seg, header)
            if values.untyped_storage().data_ptr() != storage:
                pending.append((target, _Deferred(start, seg), False))  # a copy: after the read
            else:
                pending.append((target, values, _can_alias(target, values)))
            if seg.kind == "variance":
                variances.append(np.arange(start, start + seg.count))
            start += seg.count
    index = np.concatenate(variances) if variances else np.zeros(0, np.int64)
    return _Plan(pending, index)


def _read(fh, floats: np.ndarray, offset: int, plan: Callable[[], _Plan]
          ) -> tuple[int, bool, _Plan]:
    """Read the floats and make the plan: a big file is read by two threads, half each (a
    memory copy out of the page cache goes about twice as fast on two cores), and the plan is
    made while the other thread reads."""
    count = len(floats)
    if count < _PARALLEL or not hasattr(os, "preadv"):
        todo = plan()
        return (*_read_part(fh, floats, offset, 0, count), todo)
    mid = count // 2
    other = _worker().submit(_read_part, fh, floats, offset, mid, count)
    try:
        todo = plan()
        got, finite = _read_part(fh, floats, offset, 0, mid)
    finally:
        got2, finite2 = other.result()  # (waited for even when this thread failed)
    return (got + got2 if got == mid else got), finite and finite2, todo


def load_weights(network: Network, layers: nn.ModuleList, path: str | os.PathLike, *,
                 strict: bool = True, cutoff: int | None = None) -> LoadReport:
    """Read `path` into `layers` (built from `network`); see DarknetModel.load_darknet_weights.

    All checks (header, sizes, targets) come before the first parameter changes, so a failed load
    leaves the model as it was. Only the floats the load uses are read: a huge file that does not
    fit is refused from its size alone."""
    path = str(path)
    loc = Location(path)
    stop = _stop(network, cutoff)
    try:
        with open(path, "rb") as fh:
            src = _open(fh, path)
            fit = _check_counts(network, stop, src, strict, loc)
            pos, loaded = fit.floats, fit.loaded
            floats = np.empty(pos, "<f4")
            buffer = torch.from_numpy(floats)
            got, finite, todo = _read(fh, floats, src.header.nbytes, lambda: _plan(
                network, layers, loaded, buffer, src.header, loc))
    except OSError as exc:
        raise WeightsError(f"cannot read weights file: {exc.strerror or exc}", loc) from None
    if got != pos:
        raise WeightsError(f"weights file changed while it was read ({got} of "
                           f"{pos} floats)", loc)
    header = src.header
    negative = bool(todo.variances.size) and bool((floats[todo.variances] < 0).any())
    if negative and not fit.aligned:
        _refuse_misaligned(network, fit, stop, floats, src.floats, loc)
    if not finite or negative:
        start = 0
        with warning_budget(DEFAULT_LIMITS.max_warnings):
            for spec in network.layers[:loaded]:
                _warn_suspicious(spec, floats, start, path, finite)
                start += spec.weight_count
    left = src.floats - pos
    initialised = _initialised(network, layers, loaded)
    if left and not fit.aligned:
        warn_at(f"loaded the first {pos} floats of {path}; {left} floats were left unread", None)
    if loaded < stop:
        missing = [i for i in initialised if i < stop]
        warn_at(f"{path} ends after layer {loaded - 1} (a partial weights file): it has no weights "
                f"for layers {describe_layers(missing)}", None)
    # The buffer holds exactly the floats used, so tensors become views of it (no second copy).
    with torch.no_grad():
        for target, values, alias in todo.pending:
            if alias:
                target.set_(values)
            elif isinstance(values, _Deferred):
                target.copy_(_from_file(buffer[values.start:values.start + values.seg.count],
                                        target, values.seg, header))
            else:
                target.copy_(values)
    return LoadReport(path, header, loaded, pos, left, initialised)


def save_weights(network: Network, layers: nn.ModuleList, path: str | os.PathLike,
                 header: WeightsHeader | None, *, cutoff: int | None = None) -> None:
    """Write layers < cutoff in Darknet's order; `header` None writes version 0.2.5, seen 0."""
    header = header or WeightsHeader(*DEFAULT_VERSION, seen=0)
    stop = _stop(network, cutoff)
    try:
        with open(path, "wb") as fh:
            fh.write(header.to_bytes())
            for spec in network.layers[:stop]:
                if not spec.segments:
                    continue
                tensors = _tensors(layers[spec.index])
                for seg in spec.segments:
                    target = _checked_target(tensors, seg, spec, Location(str(path)))
                    values = _to_file(target, seg, header)
                    values.astype("<f4", copy=False).tofile(fh)
    except OSError as exc:
        raise WeightsError(f"cannot write weights file: {exc.strerror or exc}",
                           Location(str(path))) from None
