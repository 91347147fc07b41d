"""darkcfg: Darknet .cfg files as PyTorch networks, numerically faithful to Darknet.

Parsing, editing and the summaries need no torch, so `import darkcfg` does not import it: the
names that do (build, load, DarknetModel, ...) are imported on first use (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import sections as _sections  # noqa: F401  (registers Darknet's section types; no torch)
from .edit import dump
from .features import FeatureInfo, feature_info
from .errors import CfgError, CfgWarning, Location, WeightsError
from .graph import (Context, LayerSpec, Network, Parsed, Segment, Shape, parse,
                    register_section as _register_parser)
from .limits import Limits
from .runtime import tune_malloc

# name -> module that defines it; these modules import torch, so they load on first use
_LAZY = {
    "convert": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "register_builder": "layers",
    "DarknetModel": "model", "build": "model", "load": "model",
    "Detection": "detection", "RawDetections": "detection", "decode": "detection",
    "detect": "detection", "detect_batch": "detection", "nms": "detection",
    "read_names": "detection", "select": "detection",
    "draw_detections": "image",
    "export_onnx": "onnx_export",
    "LoadReport": "weights", "WeightsHeader": "weights",
    "evaluate": "detector_map", "MapResult": "evaluation",
}

if TYPE_CHECKING:
    from .checkpoint import convert, load_checkpoint, save_checkpoint
    from .detection import (Detection, RawDetections, decode, detect, detect_batch, nms,
                            read_names, select)
    from .image import draw_detections
    from .layers import register_builder
    from .model import DarknetModel, build, load
    from .onnx_export import export_onnx
    from .weights import LoadReport, WeightsHeader
    from .detector_map import evaluate
    from .evaluation import MapResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'darkcfg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "parse", "dump", "build", "load", "DarknetModel", "Network", "LayerSpec", "Shape", "Segment", "Parsed",
    "Context", "CfgError", "WeightsError", "CfgWarning", "Location", "LoadReport", "WeightsHeader",
    "register_section", "register_builder",
    "detect", "detect_batch", "decode", "nms", "select", "Detection", "RawDetections",
    "read_names", "draw_detections", "tune_malloc", "Limits",
    "convert", "save_checkpoint", "load_checkpoint", "FeatureInfo", "feature_info",
    "export_onnx", "evaluate", "MapResult",
]

__version__ = "0.1.0"


def register_section(name: str, parse: Callable, build: Callable | None = None, *,
                     aliases: Iterable[str] = (), is_output: bool = False,
                     accepted: Iterable[str] = (), index_keys: Iterable[str] = (),
                     replace: bool = False) -> None:
    """Teach darkcfg a new section type: `parse(opts, ctx) -> Parsed`, `build(spec) -> nn.Module`.

    `index_keys` names the options holding layer indices, so edits renumber them."""
    _register_parser(name, parse, aliases=aliases, is_output=is_output, accepted=accepted,
                     index_keys=index_keys, replace=replace)
    if build is not None:
        from .layers import register_builder

        register_builder(name, build, replace=replace)
