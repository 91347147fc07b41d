"""`darkcfg partial`: Darknet's `partial` command, the first N layers of a weights file.

Darknet's `partial` loads layers 0..N-1, resets `seen` (and the iteration count) to 0 so that
training from the file starts its schedule at the beginning, and writes those layers under its
own header (version 0.2.5): `yolov4.conv.137` is `partial yolov4.cfg yolov4.weights
yolov4.conv.137 137`.
"""

from __future__ import annotations

import argparse

from ._weights import add_load_arguments, load_kwargs

HELP = "write the first N layers of a weights file, as Darknet's `partial` (e.g. yolov4.conv.137)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="the cfg of the weights file")
    p.add_argument("weights", help="Darknet .weights file (or checkpoint) to read")
    p.add_argument("out", help="the .weights file to write: layers 0..N-1, seen 0")
    p.add_argument("n", type=int, metavar="N", help="the number of layers to keep (Darknet's max)")
    p.add_argument("--no-strict", action="store_true",
                   help="also read a file that is longer than the cfg (its prefix)")
    add_load_arguments(p, cutoff=False)


def run(args: argparse.Namespace) -> int:
    from ..model import load
    from ..weights import DEFAULT_VERSION

    if args.n < 0:
        raise ValueError(f"N must be 0 or more (the number of layers to keep), got {args.n}")
    model = load(args.cfg, args.weights, strict=not args.no_strict, cutoff=args.n,
                 **load_kwargs(args))
    model.save_darknet_weights(args.out, cutoff=args.n)  # header 0.2.5, seen 0, as Darknet's
    stop = min(args.n, len(model.network))
    floats = sum(spec.weight_count for spec in model.network.layers[:stop])
    print(f"wrote {args.out}: layers 0-{stop - 1} of {len(model.network)}, {floats:,} floats; "
          f"Darknet header {'.'.join(map(str, DEFAULT_VERSION))}, seen 0")
    return 0
