"""darkcfg: Darknet .cfg files as PyTorch networks, numerically faithful to Darknet."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import sections as _sections  # noqa: F401  (registers Darknet's section types)
from .checkpoint import convert, load_checkpoint, save_checkpoint
from .edit import dump
from .features import FeatureInfo, feature_info
from .errors import CfgError, CfgWarning, Location, WeightsError
from .graph import (Context, LayerSpec, Network, Parsed, Segment, Shape, parse,
                    register_section as _register_parser)
from .layers import register_builder
from .model import DarknetModel, build, load
from .detection import (Detection, RawDetections, decode, detect, detect_batch, nms, read_names,
                        select)
from .image import draw_detections
from .limits import Limits
from .onnx_export import export_onnx
from .runtime import tune_malloc
from .weights import LoadReport, WeightsHeader

__all__ = [
    "parse", "dump", "build", "load", "DarknetModel", "Network", "LayerSpec", "Shape", "Segment", "Parsed",
    "Context", "CfgError", "WeightsError", "CfgWarning", "Location", "LoadReport", "WeightsHeader",
    "register_section", "register_builder",
    "detect", "detect_batch", "decode", "nms", "select", "Detection", "RawDetections",
    "read_names", "draw_detections", "tune_malloc", "Limits",
    "convert", "save_checkpoint", "load_checkpoint", "FeatureInfo", "feature_info",
    "export_onnx",
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
        register_builder(name, build, replace=replace)
