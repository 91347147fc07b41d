"""`darkcfg graph`: draw the layer graph with Graphviz (or print its DOT source)."""

from __future__ import annotations

import argparse

HELP = "draw the layer graph with Graphviz: .svg, .png, .pdf, or the .dot source"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the Darknet .cfg file")
    p.add_argument("-o", "--out",
                   help="picture to write; its suffix picks the format (.svg, .png, .jpg, .json, "
                        ".pdf with Graphviz's own dot, .dot/.gv for the source); without it the "
                        "DOT source is printed")
    p.add_argument("--format", dest="fmt", help="format to write instead of the suffix's")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--title", help="graph title (default: cfg name and totals)")


def run(args: argparse.Namespace) -> int:
    from ..draw import render, to_dot
    from ..graph import parse

    network = parse(args.cfg, width=args.width, height=args.height)
    if args.out is None:
        if args.fmt is not None and args.fmt.lower().lstrip(".") not in ("dot", "gv"):
            raise ValueError(f"--format {args.fmt} needs -o FILE (without it the DOT source is "
                             f"printed)")
        print(to_dot(network, title=args.title), end="")
        return 0
    path = render(network, args.out, args.fmt, title=args.title)
    print(f"wrote {path} ({len(network)} layers)")
    return 0
