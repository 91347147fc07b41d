"""`darkcfg export`: write a cfg (and its weights) as an ONNX file."""

from __future__ import annotations

import argparse
import sys

from ._weights import add_load_arguments, load_kwargs

HELP = "export a cfg (with its weights, or random ones) to ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the Darknet .cfg file")
    p.add_argument("--weights", help="Darknet .weights file (default: Darknet's random init)")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--opset", type=int,
                   help="ONNX opset (default: the torch exporter's; Mish is native from 18)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch, and height and width (multiples of the network's stride) "
                        "where the network runs at other sizes")
    p.add_argument("--decode", action="store_true",
                   help="decode the boxes in the graph: one output (N, boxes, 4+1+classes)")
    p.add_argument("--width", type=int, help="override [net] width (the size exported)")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--no-strict", action="store_true",
                   help="load the prefix of a weights file that has more layers than the cfg")
    add_load_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..onnx_export import require_exporter

    try:
        require_exporter()
    except ImportError as exc:  # before the slow imports and the build
        print(f"darkcfg: error: {exc}", file=sys.stderr)
        return 1

    from ..model import load
    from ..onnx_export import export_onnx
    from . import progress

    model = load(args.cfg, args.weights, strict=not args.no_strict, width=args.width,
                 height=args.height, **load_kwargs(args))
    done = export_onnx(model, args.onnx, opset=args.opset, dynamic=args.dynamic,
                       decode=args.decode, progress=lambda message: progress(args, message))
    source = f"weights {args.weights}" if args.weights else "random weights (no --weights)"
    net = model.network.net
    fixed = "" if args.dynamic else f", fixed to {net.width}x{net.height}"
    print(f"wrote {done.path}: opset {done.opset}, {source}, BatchNorm fused{fixed}, "
          f"{done.seconds:.1f} s")
    for name, shape in done.inputs:
        print(f"  input  {name}: {' x '.join(map(str, shape))}")
    for name, shape in done.outputs:
        print(f"  output {name}: {' x '.join(map(str, shape))}")
    if args.decode:
        from ..boxes import box_layout

        print(f"  rows: {box_layout(_classes(model))}")
    return 0


def _classes(model) -> int:
    from ..detection import detection_heads

    return detection_heads(model.network)[0].options.classes
