"""PyTorch checkpoints of a DarknetModel (.safetensors, .pt/.pth) and conversion to and from
Darknet .weights.

A checkpoint holds the model's state_dict (share_index-tied tensors once) and, as metadata, the
cfg text, its sha256, the darkcfg version and the Darknet header of the weights the model was
loaded from, so `.weights -> checkpoint -> .weights` gives back the same bytes.

A checkpoint may come from anywhere. Nothing in it is evaluated: safetensors holds only tensors
and strings; a `.pt` file is only read with ``torch.load(weights_only=True)``, which refuses any
pickled object that is not a tensor, a number, a string or a container of those. Every key, shape
and dtype is checked against the model before a parameter changes, so a failed load changes
nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import Location, WeightsError, shorten, warn_at
from .graph import LayerSpec, Network
from .weights import DEFAULT_VERSION, MAX_VERSION, WeightsHeader, read_header

__all__ = ["save_checkpoint", "load_checkpoint", "convert", "checkpoint_format", "is_checkpoint",
           "read_checkpoint_metadata", "CheckpointReport", "ConvertReport", "FORMATS"]

# suffix -> format; the order is the order error messages list them in
FORMATS = {".weights": "weights", ".safetensors": "safetensors", ".pt": "pt", ".pth": "pt"}
FORMAT_NAMES = {"weights": "Darknet .weights", "safetensors": "safetensors", "pt": "PyTorch .pt"}

# Metadata keys (safetensors metadata is str -> str; a .pt file stores the same dict).
# "format": "pt" is the convention of the Hugging Face tools for torch-layout safetensors files.
KEY_VERSION = "darkcfg.version"
KEY_CFG = "darkcfg.cfg"
KEY_CFG_NAME = "darkcfg.cfg_name"
KEY_SHA = "darkcfg.cfg_sha256"
HEADER_KEYS = ("darkcfg.header_major", "darkcfg.header_minor", "darkcfg.header_revision",
               "darkcfg.header_seen")
PT_FORMAT = "darkcfg"  # a .pt file: {"format": PT_FORMAT, "metadata": {...}, "state_dict": {...}}

# safetensors' dtype names -> torch's (others, e.g. float8, are refused by name)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


# -- formats ----------------------------------------------------------------------------------
def checkpoint_format(path: str | os.PathLike) -> str:
    """'weights', 'safetensors' or 'pt', from the file name's suffix (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        allowed = ", ".join(FORMATS)
        got = f"suffix {suffix!r}" if suffix else "no suffix"
        raise WeightsError(f"cannot tell the file format from {got}: name the file with one of "
                           f"{allowed}", Location(str(path)))
    return fmt


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` names a checkpoint (.safetensors, .pt, .pth); any other file is read as
    Darknet .weights, whose files go by many names (yolov4.conv.137, .backup)."""
    return FORMATS.get(Path(path).suffix.lower(), "weights") != "weights"


def _sha256(text: str) -> str:
    """sha256 of the cfg text as UTF-8: for a UTF-8 cfg file, the file's own sha256sum."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _metadata(model) -> dict[str, str]:
    from . import __version__

    network: Network = model.network
    header = model.weights_header or WeightsHeader(*DEFAULT_VERSION, seen=0)
    meta = {"format": "pt", KEY_VERSION: __version__, KEY_CFG: network.source,
            KEY_CFG_NAME: Path(network.path).name if network.path else "",
            KEY_SHA: _sha256(network.source)}
    for key, value in zip(HEADER_KEYS, (header.major, header.minor, header.revision,
                                        header.seen), strict=True):
        meta[key] = str(value)
    return meta


# -- saving -----------------------------------------------------------------------------------
def _unique_keys(model) -> tuple[list[str], dict[str, str]]:
    """The state_dict keys with each tied tensor once: (kept keys, dropped key -> kept key).
    A share_index layer's keys name its owner's tensors; the owner's (earlier) key is kept."""
    kept: list[str] = []
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for key, tensor in model.state_dict().items():
        ident = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape),
                 tensor.stride()) if tensor.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        kept.append(key)
    return kept, aliases


def _unique_state(model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies of the kept tensors, and the aliases (see save_checkpoint)."""
    state = model.state_dict()
    kept, aliases = _unique_keys(model)
    return {k: state[k].detach().to("cpu").contiguous().clone() for k in kept}, aliases


def save_checkpoint(model, path: str | os.PathLike) -> None:
    """Write the model's tensors and metadata to `path` (.safetensors, or .pt/.pth).

    safetensors stores each share_index-tied tensor once and records the dropped key as
    metadata (``{dropped: kept}``, the convention of ``safetensors.torch.save_model``, whose
    ``load_model`` reads these files too). ``save_model`` itself refuses a darkcfg model: its
    tensors are views of one buffer (the weights file, or the random init's), which safetensors
    takes for shared memory; hence ``save_file`` of copies here.

    A .pt file is ``torch.save`` of a plain dict of tensors and strings (``{"format": "darkcfg",
    "metadata": {...}, "state_dict": {...}}``), so ``torch.load(weights_only=True)`` reads it;
    tied keys share one tensor there."""
    model._check_unfused("save a checkpoint from")
    path = os.fspath(path)
    fmt = checkpoint_format(path)
    if fmt == "weights":
        raise WeightsError("a .weights file is written by save_darknet_weights (or convert), not "
                           "save_checkpoint", Location(path))
    loc = Location(path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise WeightsError("cannot write checkpoint: its folder does not exist", loc)
    meta = _metadata(model)
    tensors, aliases = _unique_state(model)
    try:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            for dropped, kept in aliases.items():
                meta.setdefault(dropped, kept)
            save_file(tensors, path, metadata=meta)  # (through a temporary file, renamed)
        else:
            state = dict(tensors)
            for dropped, kept in aliases.items():
                state[dropped] = tensors[kept]
            ordered = {k: state[k] for k in model.state_dict()}
            torch.save({"format": PT_FORMAT, "metadata": meta, "state_dict": ordered}, path)
    except OSError as exc:
        raise WeightsError(f"cannot write checkpoint: {exc.strerror or exc}", loc) from None
    except Exception as exc:  # torch's RuntimeError, safetensors' SafetensorError (I/O errors)
        raise WeightsError(f"cannot write checkpoint: {_first_line(exc)}", loc) from None


# -- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """A tensor of the checkpoint, known by shape and dtype before its data is read."""

    shape: tuple[int, ...]
    dtype: str  # safetensors' name (F32) or torch's (float32), for messages
    torch_dtype: torch.dtype | None


@dataclass
class _Checkpoint:
    path: str
    fmt: str
    metadata: dict[str, str]
    entries: dict[str, _Entry]
    tensors: dict[str, torch.Tensor] | None = None  # .pt: already read; safetensors: on demand

    def read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The data of `keys`, all of it read before any parameter changes."""
        if self.tensors is not None:
            return {k: self.tensors[k] for k in keys}
        from safetensors import safe_open

        try:
            # pread: the tensors own their memory. mmap'd tensors would change with the file
            # after the load, and a file truncated meanwhile would kill the process (SIGBUS).
            with safe_open(self.path, framework="pt", device="cpu", backend="pread") as f:
                values = {k: f.get_tensor(k) for k in keys}
        except OSError as exc:
            raise WeightsError(f"cannot read checkpoint: {exc.strerror or exc}",
                               Location(self.path)) from None
        except Exception as exc:  # safetensors' own error type: the file changed after its header
            raise WeightsError(f"cannot read the tensors of the safetensors file: "
                               f"{_first_line(exc)}", Location(self.path)) from None
        for key, value in values.items():  # (the file is opened twice: it may have changed)
            entry = self.entries[key]
            if tuple(value.shape) != entry.shape or value.dtype != entry.torch_dtype:
                raise WeightsError("the safetensors file changed while it was read",
                                   Location(self.path))
        return values


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _looks_like(magic: bytes) -> str:
    """What a file that is not the format its suffix says looks like, for the error message."""
    if magic.startswith(b"PK\x03\x04"):
        return "it is a zip archive (a PyTorch .pt checkpoint?)"
    if magic[:1] == b"\x80":
        return "it is a Python pickle (a PyTorch .pt checkpoint?)"
    if len(magic) >= 10 and magic[8:10] == b'{"':
        return "it looks like a safetensors file (name it .safetensors)"
    if magic.lstrip()[:1] in (b"[", b"#", b";"):
        return "it looks like a cfg (text) file"
    try:
        read_header(magic)
    except WeightsError:
        return "its contents are not a known format"
    return "it looks like a Darknet .weights file (name it .weights)"


def _open_regular(path: str) -> bytes:
    """The first bytes of a regular file (a device or pipe could block or never end)."""
    loc = Location(path)
    try:
        info = os.stat(path)
        magic = b""
        if stat.S_ISREG(info.st_mode) and info.st_size:
            with open(path, "rb") as fh:
                magic = fh.read(20)
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint: {exc.strerror or exc}", loc) from None
    except ValueError as exc:  # a path with a NUL byte
        raise WeightsError(f"cannot read checkpoint: {exc}", loc) from None
    if not stat.S_ISREG(info.st_mode):
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise WeightsError(f"cannot read checkpoint: it is {what}", loc)
    if not magic:
        raise WeightsError("checkpoint file is empty", loc)
    return magic


def _read_safetensors(path: str) -> _Checkpoint:
    from safetensors import safe_open

    magic = _open_regular(path)
    loc = Location(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            entries = {}
            for key in f.keys():
                piece = f.get_slice(key)
                dtype = piece.get_dtype()
                entries[key] = _Entry(tuple(int(n) for n in piece.get_shape()), dtype,
                                      _DTYPES.get(dtype))
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint: {exc.strerror or exc}", loc) from None
    except Exception as exc:  # safetensors raises its own SafetensorError on a bad header
        what = "damaged safetensors file" if magic[8:10] == b'{"' else \
            f"not a safetensors file: {_looks_like(magic)}"
        raise WeightsError(f"{what} (safetensors: {_first_line(exc)})", loc) from None
    return _Checkpoint(path, "safetensors", metadata, entries)


def _weights_only_reason(exc: BaseException) -> str:
    """The line of torch's weights_only error that says what it refused, without its advice."""
    skip = ("weights only load failed", "please file an issue", "check the documentation")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not line.lower().startswith(skip)]
    return " ".join(kept) or _first_line(exc)


def _read_pt(path: str) -> _Checkpoint:
    magic = _open_regular(path)
    loc = Location(path)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise WeightsError(f"not a PyTorch .pt file (a zip archive or a pickle): "
                           f"{_looks_like(magic)}", loc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except torch.serialization.pickle.UnpicklingError as exc:  # (darkcfg itself never unpickles)
        raise WeightsError(f"refused to load the .pt file: it holds Python objects other than "
                           f"tensors, numbers and strings, which torch.load(weights_only=True) "
                           f"does not allow ({_weights_only_reason(exc)})", loc) from None
    except Exception as exc:  # a damaged zip or pickle: RuntimeError, EOFError, OSError, ...
        raise WeightsError(f"damaged .pt file: torch.load failed with {type(exc).__name__}: "
                           f"{_first_line(exc)}", loc) from None
    metadata: object = {}
    state = obj
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and \
            obj["format"] == PT_FORMAT:
        metadata, state = obj.get("metadata", {}), obj.get("state_dict")
    if not isinstance(state, dict):
        what = type(state).__name__
        raise WeightsError(f"the .pt file holds a {what}, not a state_dict (a dict of tensors) "
                           f"or a darkcfg checkpoint", loc)
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError("the .pt file's metadata is not a dict of strings", loc)
    entries: dict[str, _Entry] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(f"the .pt file's state_dict has a key that is not a string: "
                               f"{shorten(repr(key))}", loc)
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"the .pt file's state_dict entry {shorten(key)} is "
                               f"of type {type(value).__name__}, not a tensor", loc)
        entries[key] = _Entry(tuple(value.shape), str(value.dtype).removeprefix("torch."),
                              value.dtype)
    return _Checkpoint(path, "pt", dict(metadata), entries, dict(state))


def _read(path: str | os.PathLike) -> _Checkpoint:
    path = os.fspath(path)
    fmt = checkpoint_format(path)
    if fmt == "weights":
        raise WeightsError("a .weights file is read by load_darknet_weights, not load_checkpoint",
                           Location(path))
    return _read_safetensors(path) if fmt == "safetensors" else _read_pt(path)


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a checkpoint (cfg text, its sha256, the Darknet header), tensors unread."""
    return _read(path).metadata


def _header(meta: dict[str, str], path: str) -> WeightsHeader | None:
    """The Darknet header the checkpoint records (None for a checkpoint without darkcfg's
    metadata); values are checked like a .weights header's."""
    if not any(k in meta for k in HEADER_KEYS):
        return None
    values = []
    for key in HEADER_KEYS:
        raw = meta.get(key, "")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
            raise WeightsError(f"checkpoint metadata {key}={shorten(raw)} is not a Darknet header "
                               f"value", Location(path))
        values.append(int(raw))
    header = WeightsHeader(*values)
    limit = 2**64 if header.seen_is_64bit else 2**32
    if max(values[:3]) > MAX_VERSION or header.seen >= limit:
        raise WeightsError(f"checkpoint metadata holds an invalid Darknet header (version "
                           f"{header.major}.{header.minor}.{header.revision}, seen {header.seen})",
                           Location(path))
    return header


# -- loading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointReport:
    """What a checkpoint load did: the tensors loaded, and (strict=False) the model's tensors the
    file lacked, which kept their values, and the file's tensors the model has no place for."""

    path: str
    format: str
    header: WeightsHeader | None
    tensors_loaded: int
    values_loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    same_cfg: bool | None  # None: the checkpoint does not record its cfg

    @property
    def missing_layers(self) -> tuple[int, ...]:
        """Layer indices with a tensor the file lacked (to initialise them, e.g.)."""
        return tuple(sorted({i for i in map(_layer_index, self.missing) if i is not None}))


def _number(part: str) -> int | None:
    """A key part that is a layer number (a file's keys may hold any text: at most 18 digits)."""
    return int(part) if part.isascii() and part.isdigit() and len(part) <= 18 else None


def _layer_index(key: str) -> int | None:
    parts = key.split(".")
    return _number(parts[1]) if len(parts) > 2 and parts[0] == "layers" else None


def _natural(key: str) -> tuple:
    """Sort key putting layers.2 before layers.10 (safetensors lists keys alphabetically)."""
    return tuple((1, 0, p) if (n := _number(p)) is None else (0, n, "")
                 for p in key.split("."))


def _spec_of(network: Network, key: str) -> LayerSpec | None:
    i = _layer_index(key)
    return network.layers[i] if i is not None and i < len(network.layers) else None


def _where(network: Network, key: str, path: str) -> tuple[str, Location]:
    """' (cfg line N)' and the Location (file, section, layer) of the layer a key belongs to."""
    spec = _spec_of(network, key)
    if spec is None:
        return "", Location(path)
    line = f" (cfg line {spec.loc.line})" if spec.loc.line is not None else ""
    return line, Location(path, None, None, spec.header, spec.index)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _cfg_label(name: str | None) -> str:
    """A cfg's file name for messages; "cfg text" for a cfg given as text."""
    if not name:
        return "cfg text"
    return name if len(name) <= 80 else f"{name[:40]}...{name[-37:]}"


def _other_cfg(meta: dict[str, str], same: bool | None) -> str:
    if same is not False:
        return ""
    return f"; the checkpoint was saved from a different cfg ({_cfg_label(meta.get(KEY_CFG_NAME))})"


def _fits(stored: torch.dtype | None, target: torch.dtype) -> bool:
    """Floating-point values load into floating-point tensors of any precision (converted);
    anything else only into a tensor of the same dtype."""
    if stored is None:
        return False
    if target.is_floating_point:
        return stored.is_floating_point
    return stored == target


def _plan(model, ckpt: _Checkpoint, strict: bool, same: bool | None
          ) -> tuple[list[tuple[str, torch.Tensor]], list[str], list[str]]:
    """Which file tensor fills which model tensor; every mismatch is found here, before any data
    is read. Tied tensors (share_index) are filled once, from whichever of their keys the file
    has."""
    network: Network = model.network
    path = ckpt.path
    targets = model.state_dict(keep_vars=True)
    plan: list[tuple[str, torch.Tensor]] = []
    filled: set[int] = set()
    for key, target in targets.items():
        entry = ckpt.entries.get(key)
        if entry is None:
            continue
        if entry.shape != tuple(target.shape):
            line, loc = _where(network, key, path)
            raise WeightsError(
                f"tensor {shorten(key)} is {_shape(entry.shape)} in the checkpoint, the model's is "
                f"{_shape(tuple(target.shape))}{line}{_other_cfg(ckpt.metadata, same)}", loc)
        if not _fits(entry.torch_dtype, target.dtype):
            line, loc = _where(network, key, path)
            want = "floating-point" if target.is_floating_point() else \
                str(target.dtype).removeprefix("torch.")
            raise WeightsError(f"tensor {shorten(key)} is {entry.dtype} in the checkpoint, the "
                               f"model's is {want}{line}", loc)
        if id(target) not in filled:
            filled.add(id(target))
            plan.append((key, target))
    missing = [k for k, t in targets.items() if id(t) not in filled]
    unexpected = sorted((k for k in ckpt.entries if k not in targets), key=_natural)
    if strict and missing:
        key = missing[0]
        line, loc = _where(network, key, path)
        what = (f"the model's tensor {shorten(key)}" if len(missing) == 1 else
                f"{len(missing):,} of the model's {len(targets):,} tensors, the first "
                f"{shorten(key)}")
        raise WeightsError(f"the checkpoint lacks {what}{line}{_other_cfg(ckpt.metadata, same)}; "
                           f"pass strict=False to keep the current values of missing tensors",
                           loc)
    if strict and unexpected:
        key = unexpected[0]
        i = _layer_index(key)
        why = f" (the cfg has {len(network.layers)} layers)" if i is not None and \
            i >= len(network.layers) else ""
        what = (f"a tensor the model does not have, {shorten(key)}" if len(unexpected) == 1 else
                f"{len(unexpected):,} tensors the model does not have, the first {shorten(key)}")
        raise WeightsError(f"the checkpoint has {what}{why}{_other_cfg(ckpt.metadata, same)}; "
                           f"pass strict=False to ignore them", Location(path))
    return plan, missing, unexpected


def _assign(plan: list[tuple[str, torch.Tensor]], values: dict[str, torch.Tensor]) -> None:
    """Fill the targets. A CPU float32 target takes the value's memory (no second copy, and the
    uninitialised memory of an init=False model is never touched) when no other target uses
    that memory; anything else is copied (and converted to the target's dtype and device)."""
    storages: dict[int, int] = {}
    for key, _ in plan:
        ptr = values[key].untyped_storage().data_ptr()
        storages[ptr] = storages.get(ptr, 0) + 1
    with torch.no_grad():
        for key, target in plan:
            value = values[key]
            if (storages[value.untyped_storage().data_ptr()] == 1 and target.device.type == "cpu"
                    and value.dtype == target.dtype == torch.float32 and value.is_contiguous()
                    and not target.is_inference()):
                target.set_(value)
            else:
                target.copy_(value)


def load_checkpoint(model, path: str | os.PathLike, *, strict: bool = True) -> CheckpointReport:
    """Load a .safetensors or .pt/.pth checkpoint (by suffix) into `model`.

    Every key, shape and dtype is checked before a parameter changes, so a failed load leaves the
    model as it was. With `strict` (the default) the file must hold every tensor of the model and
    nothing else, so a model built with ``init=False`` is filled completely or not at all.
    ``strict=False`` loads the tensors the model and the file share: the model's tensors the file
    lacks keep their current values (uninitialised memory on an ``init=False`` model: initialise
    them first, or use ``report.missing``), the file's tensors the model has no place for are
    ignored (e.g. a backbone's tensors from a detector's checkpoint), and a warning counts both.
    Shapes must match either way.

    A checkpoint saved from a different cfg (its recorded sha256 differs) loads with a
    CfgWarning when every tensor fits. ``model.weights_header`` becomes the Darknet header the
    checkpoint records (None when it records none), so ``save_darknet_weights`` writes the
    header of the original .weights file."""
    model._check_unfused("load a checkpoint into")
    ckpt = _read(path)
    meta = ckpt.metadata
    header = _header(meta, ckpt.path)
    recorded = meta.get(KEY_SHA)
    source = model.network.source
    same = None if not recorded or not source else recorded == _sha256(source)
    plan, missing, unexpected = _plan(model, ckpt, strict, same)
    values = ckpt.read([key for key, _ in plan])
    _assign(plan, values)
    model.weights_header = header
    loc = Location(ckpt.path)
    if same is False:
        ours = _cfg_label(Path(model.network.path).name if model.network.path else None)
        theirs = _cfg_label(meta.get(KEY_CFG_NAME))
        warn_at(f"the checkpoint was saved from a different cfg ({theirs}, sha256 "
                f"{recorded[:12]}...) than this model's ({ours}, sha256 "
                f"{_sha256(source)[:12]}...); loaded anyway, the shapes fit", loc)
    if missing:
        warn_at(f"{len(missing):,} of the model's tensors are not in the checkpoint and keep "
                f"their values, the first {shorten(missing[0])}", loc)
    if unexpected:
        warn_at(f"{len(unexpected):,} tensors of the checkpoint were not used, the first "
                f"{shorten(unexpected[0])}", loc)
    return CheckpointReport(ckpt.path, ckpt.fmt, header, len(plan),
                            sum(t.numel() for _, t in plan), tuple(missing), tuple(unexpected),
                            same)


# -- conversion -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvertReport:
    """What convert wrote: the file, its format, tensors (.weights: segments) and float values,
    its size, the Darknet header, and the floats of a longer .weights source left unread."""

    src: str
    dst: str
    src_format: str
    dst_format: str
    tensors: int
    values: int
    nbytes: int
    header: WeightsHeader
    floats_left: int = 0

    def describe(self) -> str:
        h = self.header
        what = "segments" if self.dst_format == "weights" else "tensors"
        left = (f"; the last {self.floats_left:,} floats of {Path(self.src).name} did not fit the "
                f"cfg and were dropped" if self.floats_left else "")
        return (f"wrote {self.dst}: {FORMAT_NAMES[self.dst_format]}, {self.tensors:,} {what}, "
                f"{self.values:,} values, {self.nbytes:,} bytes; Darknet header "
                f"{h.major}.{h.minor}.{h.revision}, seen {h.seen}{left}")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def convert(cfg: Network | str | os.PathLike, src: str | os.PathLike, dst: str | os.PathLike, *,
            strict: bool = True, cutoff: int | None = None,
            weights_cfg: Network | str | os.PathLike | None = None) -> ConvertReport:
    """Convert weights between .weights, .safetensors and .pt/.pth (formats by suffix; a
    source with another suffix, e.g. Darknet's yolov4.conv.137, is read as .weights).

    The model is built from `cfg` and filled from `src`, then written to `dst`. With
    ``strict=False`` a .weights file longer than the cfg converts only the floats the cfg uses
    (the report counts the rest), and a checkpoint may lack tensors (they get Darknet's random
    initialisation) or hold more (they are dropped). `cutoff` and `weights_cfg` are
    :func:`darkcfg.load`'s: layers < cutoff only; the cfg `src` was saved with, whose layers of
    matching shapes are copied."""
    from .model import build, load

    src, dst = os.fspath(src), os.fspath(dst)
    src_fmt = checkpoint_format(src) if is_checkpoint(src) else "weights"
    dst_fmt = checkpoint_format(dst)
    if _same_file(src, dst):
        raise WeightsError("the destination is the source file; write to another file",
                           Location(dst))
    floats_left = 0
    if src_fmt == "weights" or cutoff is not None or weights_cfg is not None:
        # fills what the file does not hold as load does
        model = load(cfg, src, strict=strict, cutoff=cutoff, weights_cfg=weights_cfg)
        floats_left = model.last_load.floats_left if model.last_load else 0
    else:
        model = build(cfg, init=not strict)  # strict: every tensor comes from the file
        load_checkpoint(model, src, strict=strict)
    if dst_fmt == "weights":
        model.save_darknet_weights(dst)
        tensors = sum(len(spec.segments) for spec in model.network)
        values = model.network.weight_count
    else:
        save_checkpoint(model, dst)
        state = model.state_dict()
        kept, _ = _unique_keys(model)
        tensors, values = len(kept), sum(state[k].numel() for k in kept)
    header = model.weights_header or WeightsHeader(*DEFAULT_VERSION, seen=0)
    return ConvertReport(src, dst, src_fmt, dst_fmt, tensors, values, os.path.getsize(dst),
                         header, floats_left)
