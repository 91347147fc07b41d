"""Darknet .weights I/O: header, then every layer's float32 segments in `load_weights` order.

The file is read once into one buffer; each segment becomes a tensor view of it and is copied into
its parameter only after the whole file has been checked, so a failed load changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import Location, WeightsError, warn_at
from .graph import LayerSpec, Network, Segment

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


def read_header(data: bytes | memoryview, path: str = "") -> WeightsHeader:
    loc = Location(path)
    if len(data) < 12:
        raise WeightsError(f"weights file is {len(data)} bytes, shorter than its 12-byte version "
                           f"header", loc)
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if major < 0 or minor < 0 or revision < 0:
        raise WeightsError(f"weights header version {major}.{minor}.{revision} is not valid", loc)
    wide = major * 10 + minor >= 2
    need = 12 + (8 if wide else 4)
    if len(data) < need:
        raise WeightsError(f"weights file is {len(data)} bytes, shorter than its {need}-byte header",
                           loc)
    seen = int(np.frombuffer(data, "<u8" if wide else "<u4", 1, 12)[0])
    return WeightsHeader(major, minor, revision, seen)


def _read_file(path: str) -> tuple[WeightsHeader, np.ndarray]:
    """One pass over the file: the header, then the body as one aligned, writable float32 array."""
    loc = Location(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(20)
            header = read_header(head, path)
            fh.seek(header.nbytes)
            body = size - header.nbytes
            if body % 4:
                raise WeightsError(f"weights file body is {body} bytes, not a whole number of "
                                   f"float32 values", loc)
            floats = np.fromfile(fh, "<f4", body // 4)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file: {exc.strerror or exc}", loc) from None
    if len(floats) != body // 4:
        raise WeightsError(f"weights file changed while it was read ({len(floats)} of "
                           f"{body // 4} floats)", loc)
    return header, floats


def _stop(network: Network, cutoff: int | None) -> int:
    """Number of layers a load or save covers: all, or those below `cutoff`."""
    n = len(network.layers)
    return n if cutoff is None else max(0, min(cutoff, n))


def _layer_desc(spec: LayerSpec) -> str:
    return f"layer {spec.index} ([{spec.header}] at line {spec.loc.line})"


def _segment_target(module: nn.Module, seg: Segment) -> torch.Tensor:
    try:
        return module.get_parameter(seg.name)
    except AttributeError:
        return module.get_buffer(seg.name)


def _from_file(values: np.ndarray, target: torch.Tensor, seg: Segment, header: WeightsHeader) -> torch.Tensor:
    t = torch.from_numpy(values)
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


def load_weights(network: Network, layers: nn.ModuleList, path: str | os.PathLike, *,
                 strict: bool = True, cutoff: int | None = None) -> LoadReport:
    """Read `path` into `layers` (built from `network`); see DarknetModel.load_darknet_weights."""
    path = str(path)
    loc = Location(path)
    header, floats = _read_file(path)
    stop = _stop(network, cutoff)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    pos = 0
    for spec in network.layers[:stop]:
        need = spec.weight_count
        if need > len(floats) - pos:
            raise WeightsError(
                f"weights file ends inside {_layer_desc(spec)}: it needs {need} floats, "
                f"{len(floats) - pos} are left ({pos} read for layers 0-{spec.index - 1})", loc)
        module = layers[spec.index]
        for seg in spec.segments:
            target = _segment_target(module, seg)
            values = floats[pos:pos + seg.count]
            pending.append((target, _from_file(values, target, seg, header)))
            pos += seg.count
    left = len(floats) - pos
    if left and strict:
        raise WeightsError(
            f"weights file has {left} floats left over after layer {stop - 1} "
            f"({pos} of {len(floats)} read): it does not fit this cfg; pass strict=False to load "
            f"the first {pos} floats anyway", loc)
    if left:
        warn_at(f"loaded the first {pos} floats of {path}; {left} floats were left unread", None)
    # When the file is used whole, tensors become views of the one buffer read (no second copy);
    # a prefix load copies, so the unread rest of a large file is not kept alive.
    share = left == 0
    with torch.no_grad():
        for target, values in pending:
            if share and _can_alias(target, values):
                target.set_(values)
            else:
                target.copy_(values)
    return LoadReport(path, header, stop, pos, left)


def save_weights(network: Network, layers: nn.ModuleList, path: str | os.PathLike,
                 header: WeightsHeader | None, *, cutoff: int | None = None) -> None:
    """Write layers < cutoff in Darknet's order; `header` None writes version 0.2.5, seen 0."""
    header = header or WeightsHeader(*DEFAULT_VERSION, seen=0)
    stop = _stop(network, cutoff)
    with open(path, "wb") as fh:
        fh.write(header.to_bytes())
        for spec in network.layers[:stop]:
            module = layers[spec.index]
            for seg in spec.segments:
                _to_file(_segment_target(module, seg), seg, header).astype("<f4", copy=False).tofile(fh)
