"""The weights-loading options shared by every command that loads weights (`--cutoff`,
`--weights-cfg`), so each command spells and documents them the same way."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_load_arguments", "load_kwargs", "CLI_HINTS"]

# The library's hints name keyword arguments; the CLI shows its own flag instead.
CLI_HINTS = {"weights_cfg=": "--weights-cfg ", "strict=False": "--no-strict",
             "cutoff=": "--cutoff "}


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --cutoff and --weights-cfg to a command that loads weights."""
    parser.add_argument("--cutoff", type=int, metavar="N",
                        help="load only layers 0..N-1 from the weights file (Darknet's cutoff, "
                             "e.g. 137 for a yolov4 backbone); the later layers keep Darknet's "
                             "random initialisation")
    parser.add_argument("--weights-cfg", metavar="CFG",
                        help="the cfg the weights file was saved with, when it differs from CFG "
                             "(e.g. another class count): layers whose shapes match are copied, "
                             "the others keep Darknet's random initialisation")


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of darkcfg.load for the options add_load_arguments added."""
    kwargs: dict[str, Any] = {}
    if getattr(args, "cutoff", None) is not None:
        kwargs["cutoff"] = args.cutoff
    if getattr(args, "weights_cfg", None) is not None:
        kwargs["weights_cfg"] = args.weights_cfg
    return kwargs
