"""`darkcfg detect`: Darknet's `detector test` on one image."""

from __future__ import annotations

import argparse

HELP = "detect objects in an image as Darknet's `detector test` does; print one line per detection"


def add_arguments(d: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    import json

    from ..detection import detect, nms_settings, read_names
    from ..image import draw_detections, to_pil
    from ..model import load

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
