"""`darkcfg calc_anchors`: Darknet's `detector calc_anchors`, k-means anchors for a dataset.

Prints what Darknet prints (the cluster count and size, the images read, the iterations, the
``counters_per_class`` line, the average IoU and the ``anchors =`` line to paste into a cfg),
plus the seed; it writes no anchors.txt or counters_per_class.txt. Darknet seeds its k-means
start with the time; ``--seed`` makes the result repeatable (see :mod:`darkcfg.anchors`).
"""

from __future__ import annotations

import argparse
import json

HELP = "anchors for a cfg by k-means over the train list's label boxes, as Darknet's " \
       "`detector calc_anchors`"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the .data file: train= (image list; labels found as Darknet "
                                "finds them) and classes=")
    p.add_argument("--num-of-clusters", type=int, default=5, metavar="N",
                   help="how many anchors (5, Darknet's default; yolov3/v4 use 9, tiny 6)")
    p.add_argument("--width", type=int, required=True, help="the network width ([net] width)")
    p.add_argument("--height", type=int, required=True,
                   help="the network height ([net] height)")
    p.add_argument("--seed", type=int,
                   help="seed of the random start (C's srand; glibc's rand() is repeated, so "
                        "Darknet started at Unix time T equals --seed T); default: the current "
                        "time, as Darknet")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: anchors, average_iou, counters_per_class, "
                        "iterations, boxes, images, seed")


def run(args: argparse.Namespace) -> int:
    from ..anchors import calc_anchors, format_anchors

    result = calc_anchors(args.data, args.num_of_clusters, args.width, args.height,
                          seed=args.seed)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_anchors(result))
    return 0
