"""ONNX export of a DarknetModel with torch's current exporter (``torch.onnx.export(dynamo=True)``).

The graph is the inference model: BatchNorm is folded into the convolutions first, on a copy, in
float64 as :meth:`DarknetModel.fuse` (and Darknet) does; outputs change by ~1e-6 relative. (The
exporter's optimizer would fold them anyway, in float32.) Input
``images`` (N, C, H, W); outputs ``out_<layer index>`` (the model's `out_indices`), or with
``decode=True`` one ``detections`` tensor (N, boxes, 4 + 1 + classes) from
:class:`darkcfg.boxes.BoxDecoder`.

``dynamic=True`` makes the batch and, when the network accepts other sizes, the height and width
dynamic (multiples of ``model.stride``); shapes in the file are then named ``batch``, ``height``,
``width``, ``height/32`` and so on. The exporter writes opset 18 (its own) and converts to the
opset asked for; Mish is ONNX's ``Mish`` operator there (opset 18 on). Below 18 Mish is written as
``x * tanh(softplus(x))`` and ONNX's converter has to take the graph down, which fails for some
operators (e.g. Pad): that is an error, never a file with another opset than asked.

Needs the ``onnx`` and ``onnxscript`` packages: ``pip install "darkcfg[export]"``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CfgError
from .model import DarknetModel

__all__ = ["INSTALL_HINT", "MISH_OPSET", "OnnxExport", "export_onnx"]

INSTALL_HINT = 'pip install "darkcfg[export]"'
MISH_OPSET = 18  # the first ONNX opset with a Mish operator
INPUT_NAME = "images"
DECODED_NAME = "detections"

Dim = int | str  # a fixed size or a symbolic dimension's name


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, its opset, and its inputs' and outputs' shapes
    (ints, or names of symbolic dimensions)."""

    path: Path
    opset: int
    inputs: tuple[tuple[str, tuple[Dim, ...]], ...]
    outputs: tuple[tuple[str, tuple[Dim, ...]], ...]
    decoded: bool
    seconds: float

    def describe(self) -> str:
        """``images [batch, 3, height, width] -> out_30 [batch, 255, height/32, width/32], ...``"""
        def fmt(items):
            return ", ".join(f"{name} [{', '.join(map(str, shape))}]" for name, shape in items)
        return f"{fmt(self.inputs)} -> {fmt(self.outputs)}"


def require_exporter() -> None:
    """The exporter's packages, or one clear error saying how to install them."""
    for name in ("onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ModuleNotFoundError(f"ONNX export needs the {name} package, which is not "
                                      f"installed: {INSTALL_HINT}", name=name) from exc


def export_onnx(model: DarknetModel, path: str | os.PathLike, *, opset: int | None = None,
                dynamic: bool = False, decode: bool = False,
                progress: Callable[[str], object] | None = None) -> OnnxExport:
    """Write `model` as an ONNX file at `path`; see the module docstring.

    `opset`: ONNX opset (default: the exporter's, 20 with torch 2.13). `dynamic`: dynamic batch
    and, where the network allows it, height and width; otherwise the graph is fixed to batch 1
    at the cfg's size (build the model with width=, height= to choose it). `decode`: put box
    decoding in the graph. The model passed in is not changed (a fused copy is exported).
    `progress` (e.g. `print`) is told when the slow step (10-20 s) starts, after the checks."""
    require_exporter()
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not 7 <= opset <= newest:
        raise ValueError(f"opset {opset} is outside what the installed onnx package knows "
                         f"(7 to {newest})")
    _check_exportable(model)
    net = copy.deepcopy(model).eval()
    if not net.fused:
        net.fuse()
    if decode:
        from .boxes import BoxDecoder

        module: torch.nn.Module = BoxDecoder(net).eval()
        output_names = [DECODED_NAME]
    else:
        module = net
        output_names = [f"out_{i}" for i in net.out_indices]
    x = net.example_input(batch=2 if dynamic else 1)
    param = next(net.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    sizes_free = dynamic and net.accepts_other_sizes()
    shapes = net.dynamic_shapes() if dynamic else None
    table = _mish_decomposed() if opset is not None and opset < MISH_OPSET else None
    if progress is not None:
        progress("exporting to ONNX with torch's exporter (10-20 s) ...")
    start = time.perf_counter()
    with _quiet():
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=output_names,
                                    dynamic_shapes=shapes, custom_translation_table=table,
                                    verbose=False)
    written = program.model.opset_imports.get("", None)
    if opset is not None and written != opset:
        raise ValueError(f"the exporter could not write opset {opset} for this network (ONNX's "
                         f"version converter cannot take one of its operators below opset "
                         f"{written}); use opset {MISH_OPSET} or later")
    _name_dims(program.model, net, dynamic, sizes_free, decode)
    program.model.metadata_props.update(_metadata(net, decode))
    path = Path(path)
    with _quiet():
        program.save(path)
    seconds = time.perf_counter() - start
    graph = program.model.graph
    return OnnxExport(path, int(written), _shapes(graph.inputs), _shapes(graph.outputs), decode,
                      seconds)


def _check_exportable(model: DarknetModel) -> None:
    for spec, layer in zip(model.network, model.layers):
        if spec.index in model._run and hasattr(layer, "reset_state"):
            raise CfgError(f"[{spec.header}] keeps a state between calls (Darknet's recurrent "
                           f"inference); ONNX export of recurrent layers is not supported",
                           spec.loc)


def _mish_decomposed() -> dict:
    """aten.mish as x * tanh(softplus(x)), for opsets without ONNX's Mish."""
    from onnxscript import opset18 as op

    def mish(x):
        return op.Mul(x, op.Tanh(op.Softplus(x)))

    return {torch.ops.aten.mish.default: mish}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress logging and its internal deprecation warnings, silenced."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --- shapes in the file ------------------------------------------------------------------------

def _name_dims(model, net: DarknetModel, dynamic: bool, sizes_free: bool, decode: bool) -> None:
    """Readable symbolic dimensions: batch, height, width and each output's as a function of
    them (the exporter's own names are internal symbols like s38)."""
    import onnx_ir as ir

    if not dynamic:
        return
    graph = model.graph
    shape = list(graph.inputs[0].shape)
    shape[0] = "batch"
    if sizes_free:
        shape[2], shape[3] = "height", "width"
    graph.inputs[0].shape = ir.Shape(shape)
    if decode:
        out = list(graph.outputs[0].shape)
        out[0] = "batch"
        if sizes_free:
            out[1] = "boxes"
        graph.outputs[0].shape = ir.Shape(out)
        return
    other = net.network_one_stride_larger() if sizes_free else None
    for value, index in zip(graph.outputs, net.out_indices):
        out = list(value.shape)
        out[0] = "batch"
        if other is not None and len(out) == 4:
            a, b = net.network[index].out_shape, other[index].out_shape
            n = net.network.net
            out[2] = _dim_name("height", n.height, a.h, n.height + net.stride, b.h, out[2])
            out[3] = _dim_name("width", n.width, a.w, n.width + net.stride, b.w, out[3])
        value.shape = ir.Shape(out)


def _dim_name(name: str, size0: int, out0: int, size1: int, out1: int, default) -> Dim:
    """`name`, name/k or name*k when the output follows the input size so at both sizes."""
    if out0 == out1:
        return out0
    if out0 and size0 % out0 == 0:
        k = size0 // out0
        if out1 * k == size1:
            return name if k == 1 else f"{name}/{k}"
    if out0 % size0 == 0:
        k = out0 // size0
        if out1 == size1 * k:
            return f"{name}*{k}"
    return default


def _shapes(values) -> tuple[tuple[str, tuple[Dim, ...]], ...]:
    out = []
    for v in values:
        dims = tuple(d if isinstance(d, int) else str(d) for d in v.shape)
        out.append((v.name, dims))
    return tuple(out)


def _metadata(net: DarknetModel, decode: bool) -> dict[str, str]:
    from . import __version__

    network = net.network
    meta = {"darkcfg.version": __version__,
            "darkcfg.cfg": Path(network.path).name if network.path else "<text>",
            "darkcfg.stride": str(net.stride)}
    if decode:
        from .boxes import box_layout
        from .detection import detection_heads

        heads = detection_heads(network)
        meta["darkcfg.detections"] = box_layout(heads[0].options.classes)
        meta["darkcfg.heads"] = ",".join(str(s.index) for s in heads)
    else:
        meta["darkcfg.out_layers"] = ",".join(map(str, net.out_indices))
    return meta
