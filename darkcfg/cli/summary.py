"""`darkcfg summary`: the layer table with cumulative strides, receptive fields and parameters."""

from __future__ import annotations

import argparse

HELP = "print the layer table with stride, receptive field and parameters of every layer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the Darknet .cfg file")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (one line per layer)")


def run(args: argparse.Namespace) -> int:
    import json

    from ..graph import parse
    from ..summary import format_summary, summary_dict

    network = parse(args.cfg, width=args.width, height=args.height)
    if args.json:
        d = summary_dict(network)
        layers = ",\n".join("  " + json.dumps(layer) for layer in d["layers"])
        print(f'{{\n "cfg": {json.dumps(d["cfg"])},\n "input": {json.dumps(d["input"])},\n'
              f' "layers": [\n{layers}\n ],\n "totals": {json.dumps(d["totals"])}\n}}')
    else:
        print(format_summary(network))
    return 0
