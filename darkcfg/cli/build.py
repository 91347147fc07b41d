"""`darkcfg build`: parse and build a cfg, optionally load weights, print the layer table."""

from __future__ import annotations

import argparse

HELP = "build a cfg (and load weights), print the layer table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the Darknet .cfg file")
    p.add_argument("--weights", help="Darknet .weights file to load and verify")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--no-strict", action="store_true",
                   help="load the prefix of a weights file that has more layers than the cfg")


def run(args: argparse.Namespace) -> int:
    from ..model import build
    from ..summary import format_table

    model = build(args.cfg, width=args.width, height=args.height)
    print(format_table(model.network))
    if args.weights:
        report = model.load_darknet_weights(args.weights, strict=not args.no_strict)
        h = report.header
        left = f", {report.floats_left:,} left unread" if report.floats_left else ""
        print(f"weights {args.weights}: version {h.major}.{h.minor}.{h.revision}, seen {h.seen}, "
              f"{report.floats_read:,} floats loaded into {report.layers_loaded} layers{left}")
    return 0
