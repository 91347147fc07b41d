"""Darknet .weights I/O: header, then every layer's float32 segments in `load_weights` order.

A weights file may be truncated, padded, damaged or meant for another cfg. The header and the
file's size are checked against the cfg's segments before the body is read (so a 100 GB file that
does not fit is refused at once, and a prefix load reads only the prefix); the floats used are read
once into one buffer, every target tensor is checked, and only then do the parameters become views
of that buffer, so a failed load changes nothing. NaN/Inf values and negative BN variances (the
usual sign of a file for another cfg) load as Darknet would load them, with a warning naming the
layer.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import Location, WeightsError, warn_at, warning_budget
from .graph import LayerSpec, Network, Segment
from .limits import DEFAULT_LIMITS

__all__ = ["WeightsHeader", "LoadReport", "read_header", "load_weights", "save_weights"]

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
    """What a load did: header, layers loaded, floats read, floats left unread (strict=False)."""

    path: str
    header: WeightsHeader
    layers_loaded: int
    floats_read: int
    floats_left: int


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
    return n if cutoff is None else max(0, min(cutoff, n))


def _layer_desc(spec: LayerSpec) -> str:
    return f"layer {spec.index} ([{spec.header}] at line {spec.loc.line})"


def _check_counts(network: Network, stop: int, src: _Source, strict: bool, loc: Location) -> int:
    """How many floats the load reads; every size mismatch is found here, before any is read."""
    total = sum(spec.weight_count for spec in network.layers[:stop])
    if src.floats == 0 and total:
        first = next(s for s in network.layers[:stop] if s.weight_count)
        h = src.header
        raise WeightsError(
            f"weights file holds only its {h.nbytes}-byte header (version {h.major}.{h.minor}."
            f"{h.revision}, seen {h.seen}) and no weights; the cfg needs {total:,} floats, "
            f"{_layer_desc(first)} the first {first.weight_count:,}", loc)
    pos = 0
    for spec in network.layers[:stop]:
        need = spec.weight_count
        if need > src.floats - pos:
            before = f" ({pos} read for layers 0-{spec.index - 1})" if spec.index else ""
            raise WeightsError(
                f"weights file ends inside {_layer_desc(spec)}: it needs {need} floats, "
                f"{src.floats - pos} are left{before}", loc)
        pos += need
    left = src.floats - pos
    if left and strict:
        raise WeightsError(
            f"weights file has {left} floats left over after layer {stop - 1} "
            f"({pos} of {src.floats} read): it does not fit this cfg; pass strict=False to load "
            f"the first {pos} floats anyway", loc)
    return pos


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
    pos = start
    negative = total = 0
    for seg in spec.segments:
        if seg.kind == "variance":
            negative += int(np.count_nonzero(floats[pos:pos + seg.count] < 0))
            total += seg.count
        pos += seg.count
    if negative:
        warn_at(f"{_layer_desc(spec)}: {negative:,} of its {total:,} BN variances are negative, "
                f"which makes its outputs NaN (does the weights file belong to this cfg?)",
                Location(path))


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
            pos = _check_counts(network, stop, src, strict, loc)
            floats = np.empty(pos, "<f4")
            buffer = torch.from_numpy(floats)
            got, finite, todo = _read(fh, floats, src.header.nbytes,
                                      lambda: _plan(network, layers, stop, buffer, src.header, loc))
    except OSError as exc:
        raise WeightsError(f"cannot read weights file: {exc.strerror or exc}", loc) from None
    if got != pos:
        raise WeightsError(f"weights file changed while it was read ({got} of "
                           f"{pos} floats)", loc)
    header = src.header
    if not finite or (todo.variances.size and bool((floats[todo.variances] < 0).any())):
        start = 0
        with warning_budget(DEFAULT_LIMITS.max_warnings):
            for spec in network.layers[:stop]:
                _warn_suspicious(spec, floats, start, path, finite)
                start += spec.weight_count
    left = src.floats - pos
    if left:
        warn_at(f"loaded the first {pos} floats of {path}; {left} floats were left unread", None)
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
    return LoadReport(path, header, stop, pos, left)


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
