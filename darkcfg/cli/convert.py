"""`darkcfg convert`: weights between Darknet .weights, safetensors and PyTorch .pt files."""

from __future__ import annotations

import argparse

from ._weights import add_load_arguments, load_kwargs

HELP = "convert weights between .weights, .safetensors and .pt/.pth (formats by suffix)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the cfg the weights belong to")
    p.add_argument("src", help="weights to read: .weights, .safetensors, .pt or .pth")
    p.add_argument("dst", help="file to write: .weights, .safetensors, .pt or .pth")
    p.add_argument("--no-strict", action="store_true",
                   help="convert the part of SRC that fits the cfg: the prefix of a longer "
                        ".weights file; a checkpoint's tensors the cfg has (the others are "
                        "dropped, missing ones get Darknet's random initialisation)")
    add_load_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import convert

    report = convert(args.cfg, args.src, args.dst, strict=not args.no_strict,
                     **load_kwargs(args))
    print(report.describe())
    return 0
