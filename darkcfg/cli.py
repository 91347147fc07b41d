"""`darkcfg` command line. Errors are one line on stderr and exit code 1 (--debug: traceback)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .errors import CfgError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darkcfg", description="Darknet .cfg files as PyTorch networks")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a cfg (and load weights), print the layer table")
    b.add_argument("cfg")
    b.add_argument("--weights", help="Darknet .weights file to load and verify")
    b.add_argument("--width", type=int, help="override [net] width")
    b.add_argument("--height", type=int, help="override [net] height")
    b.add_argument("--no-strict", action="store_true",
                   help="load the prefix of a weights file that has more layers than the cfg")
    # Also accepted after the command; SUPPRESS keeps `darkcfg --debug build` from being reset.
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    d = sub.add_parser("detect", help="detect objects in an image as Darknet's `detector test` "
                                      "does; print one line per detection")
    d.add_argument("cfg")
    d.add_argument("weights")
    d.add_argument("image")
    d.add_argument("--names", help="class names file (e.g. coco.names); default: class numbers")
    d.add_argument("--thresh", type=float, default=0.25, help="probability threshold (0.25)")
    d.add_argument("--hier-thresh", type=float, default=0.5,
                   help="yolo9000 tree threshold (0.5, which Darknet hard-codes)")
    d.add_argument("--nms", type=float, default=0.45,
                   help="NMS overlap threshold (0.45; 0 turns NMS off)")
    box = d.add_mutually_exclusive_group()
    box.add_argument("--letterbox", dest="letterbox", action="store_true", default=None,
                     help="letterbox the image (default: the cfg's [net] letter_box)")
    box.add_argument("--no-letterbox", dest="letterbox", action="store_false",
                     help="plain resize even if the cfg asks for letter_box")
    d.add_argument("--out", help="write the image with boxes and labels drawn to this file")
    d.add_argument("--json", action="store_true", help="print the detections as JSON")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _build(args: argparse.Namespace) -> int:
    from .model import build
    from .summary import format_table

    model = build(args.cfg, width=args.width, height=args.height)
    print(format_table(model.network))
    if args.weights:
        report = model.load_darknet_weights(args.weights, strict=not args.no_strict)
        h = report.header
        left = f", {report.floats_left:,} left unread" if report.floats_left else ""
        print(f"weights {args.weights}: version {h.major}.{h.minor}.{h.revision}, seen {h.seen}, "
              f"{report.floats_read:,} floats loaded into {report.layers_loaded} layers{left}")
    return 0


def _detect(args: argparse.Namespace) -> int:
    import json

    from .detection import detect, nms_settings, read_names
    from .image import draw_detections, to_pil
    from .model import load

    model = load(args.cfg, args.weights)
    names = read_names(args.names) if args.names else None
    image = to_pil(args.image)
    found = detect(model, image, thresh=args.thresh, nms=args.nms, letterbox=args.letterbox,
                   hier_thresh=args.hier_thresh, names=names)
    if args.json:
        rows = [" " + json.dumps(d.as_dict()) for d in found]  # one detection per line
        print("[\n" + ",\n".join(rows) + "\n]" if rows else "[]")
    else:
        for d in found:
            print(d)
    if args.out:
        classes = nms_settings(model.network).classes  # Darknet colours by its NMS layer's
        draw_detections(image, found, classes=classes).save(args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug

    def _show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = _show
    try:
        if args.command == "build":
            return _build(args)
        if args.command == "detect":
            return _detect(args)
    except (CfgError, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"darkcfg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort (MemoryError, torch, image decoders): still one line
        if debug:
            raise
        print(f"darkcfg: internal error: {type(exc).__name__}: {exc} (--debug shows the "
              f"traceback)", file=sys.stderr)
        return 1
    return 2
