"""`darkcfg valid`: Darknet's `detector valid` (``eval=coco``): COCO-format detections for the
.data file's ``valid=`` list, and with ``--annotations`` COCO's AP@[.5:.95] (pycocotools).

stdout: one line saying what was written; with --annotations, COCOeval's summary and the
AP line; --json: one object instead. Unreadable images are warnings on stderr (Darknet's black
10x10 stand-in is evaluated), and the run goes on.
"""

from __future__ import annotations

import argparse
import json

from . import progress
from ._weights import add_load_arguments, load_kwargs

HELP = ("COCO-format detections over a dataset as Darknet's `detector valid` writes them; "
        "with --annotations, COCO's AP@[.5:.95]")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the .data file: valid= (image list, default data/train.list "
                                "as Darknet), results= (folder of the default --out); paths "
                                "relative to the current directory, as Darknet reads them")
    p.add_argument("cfg", help="the network's Darknet .cfg file (its [net] size, letter_box and "
                               "the last detection layer's nms_kind apply, as in Darknet)")
    p.add_argument("weights",
                   help="its weights: a Darknet .weights file, .safetensors, .pt or .pth")
    p.add_argument("--out", help="the results file (default: Darknet's "
                                 "<results>/coco_results.json; the folder must exist)")
    p.add_argument("--annotations", metavar="JSON",
                   help="a COCO annotation file (e.g. instances_val2017.json): also report AP "
                        "on the images of the list (needs pycocotools: the coco extra)")
    p.add_argument("--category-ids", choices=("coco", "index"), default="coco",
                   help="category_id of each class: coco (Darknet's coco_ids, for the 80 "
                        "classes of coco.names; the default) or index (the class number)")
    p.add_argument("--image-ids", choices=("darknet", "annotations"), default="darknet",
                   help="image_id of each image: darknet (the number its file name starts "
                        "with, as Darknet; the default) or annotations (the id --annotations "
                        "gives its file name, e.g. for COCO_val2014_*.jpg names)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (8)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding and resizing images (default: min(4, CPUs - 2); 0: "
                        "in the main process)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: out, images, detections, unreadable_images; "
                        "with --annotations also COCOeval's 12 numbers (ap, ap50, ap75, ...)")
    add_load_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..detector_valid import validate

    if args.batch < 1:
        raise ValueError(f"--batch {args.batch}: must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers {args.workers}: must be 0 or more")
    progress(args, f"validating {args.data} with {args.cfg}")
    result = validate(args.data, args.cfg, args.weights, out=args.out,
                      annotations=args.annotations, category_ids=args.category_ids,
                      image_ids=args.image_ids, batch=args.batch, workers=args.workers,
                      progress=not getattr(args, "quiet", False), **load_kwargs(args))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0
    print(f"wrote {result.detections} detections of {result.images} images to {result.out}")
    if result.scores is not None:
        s = result.scores
        if s.summary:
            print(s.summary)
        print(f"AP@[.5:.95] = {s.ap:.6f}, AP@.5 = {s.ap50:.6f} (pycocotools, {s.images} "
              f"images)")
    return 0
