"""`darkcfg build`: parse and build a cfg, optionally load weights, print the layer table."""

from __future__ import annotations

import argparse

from ._weights import add_load_arguments, describe_load, load_kwargs

HELP = "build a cfg (and load weights), print the layer table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the Darknet .cfg file")
    p.add_argument("--weights", help="Darknet .weights file to load and verify")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--no-strict", action="store_true",
                   help="load the prefix of a weights file that has more layers than the cfg, "
                        "or a partial file (e.g. yolov4.conv.137) that ends on a layer boundary")
    add_load_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..model import load
    from ..summary import format_table

    model = load(args.cfg, args.weights, strict=not args.no_strict, width=args.width,
                 height=args.height, **load_kwargs(args))
    print(format_table(model.network))
    if args.weights:
        print(describe_load(args.weights, model.last_load))
    return 0
