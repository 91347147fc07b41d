"""`darkcfg diff`: what differs between two cfgs, layer by layer, with weight and BFLOPs deltas."""

from __future__ import annotations

import argparse

HELP = "compare two cfgs layer by layer: options, inputs, shapes, weight and BFLOPs deltas"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="the first cfg")
    p.add_argument("b", help="the second cfg")
    p.add_argument("--width", type=int, help="override [net] width of both")
    p.add_argument("--height", type=int, help="override [net] height of both")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")


def run(args: argparse.Namespace) -> int:
    """Exit code 0 whether or not the cfgs differ (1 is for errors, as in every command)."""
    import json

    from ..diff import diff, format_diff, to_dict
    from ..graph import parse

    a = parse(args.a, width=args.width, height=args.height)
    b = parse(args.b, width=args.width, height=args.height)
    d = diff(a, b)
    if args.json:
        print(json.dumps(to_dict(d), indent=1))
    else:
        print(format_diff(d, args.a, args.b))
    return 0
