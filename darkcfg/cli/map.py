"""`darkcfg map`: Darknet's `detector map`, the same numbers and the same printout.

The printout is Darknet's from ``detections_count`` to the mAP line (per class AP and TP/FP, the
two "for conf_thresh" lines, the mAP), without its rank counter; ``--json`` prints the numbers
as one object instead. Problems with single images or label files are warnings on stderr, and
the evaluation goes on, as Darknet's does.
"""

from __future__ import annotations

import argparse
import json

from . import progress
from ._weights import add_load_arguments, load_kwargs

HELP = "mean average precision over a dataset, exactly as Darknet's `detector map` computes it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the .data file: valid= (image list), names=, optional "
                                "difficult=; paths relative to the current directory, as "
                                "Darknet reads them")
    p.add_argument("cfg", help="the network's Darknet .cfg file (its [net] size, letter_box and "
                               "the last detection layer's nms_kind apply, as in Darknet)")
    p.add_argument("weights",
                   help="its weights: a Darknet .weights file, .safetensors, .pt or .pth")
    p.add_argument("--iou-thresh", type=float, default=0.5,
                   help="IoU above which a detection matches a truth (0.5; Darknet's "
                        "-iou_thresh)")
    p.add_argument("--points", type=int, default=0,
                   help="0: area under the curve for each unique recall (VOC2010+, the "
                        "default); 11: VOC2007; 101: COCO (Darknet's -points)")
    p.add_argument("--thresh", type=float, default=0.25,
                   help="probability threshold of the precision/recall/F1/TP/FP/FN/average "
                        "IoU lines (0.25; Darknet's -thresh)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: map, classes (id, name, ap, tp, fp, truths, "
                        "detections), precision, recall, f1, tp, fp, fn, average_iou "
                        "(null for Darknet's -nan), detections_count, unique_truth_count")
    p.add_argument("--batch", type=int, default=8,
                   help="images per forward pass (8); the numbers do not depend on it")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding and resizing images (default: min(4, CPUs - 2); 0: "
                        "in the main process)")
    add_load_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..detector_map import evaluate
    from ..evaluation import check_points

    check_points(args.points)  # before the model loads
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers {args.workers}: must be 0 or more")
    progress(args, f"evaluating {args.data} with {args.cfg}")
    result = evaluate(args.data, args.cfg, args.weights, iou_thresh=args.iou_thresh,
                      points=args.points, thresh=args.thresh, batch=args.batch,
                      workers=args.workers, progress=not getattr(args, "quiet", False),
                      **load_kwargs(args))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1, allow_nan=False))
    else:
        print(result.format())
    return 0
