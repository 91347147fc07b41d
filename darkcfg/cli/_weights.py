"""The weights-loading options shared by every command that loads weights (`--cutoff`,
`--weights-cfg`), so each command spells and documents them the same way, and the error text
whose advice names those flags instead of the library's keyword arguments."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_load_arguments", "load_kwargs", "describe_load", "error_text"]

# A FitError's advice names options by these keys (darkcfg.weights.API_SPELLING is the API's):
# each command line flag, and the argparse attribute that tells whether the command has it.
_CLI_SPELLING = {"weights_cfg": ("--weights-cfg ", "weights_cfg"),
                 "cutoff": ("--cutoff ", "cutoff"),
                 "strict": ("--no-strict", "no_strict")}


def add_load_arguments(parser: argparse.ArgumentParser, *, cutoff: bool = True) -> None:
    """Add --cutoff (unless `cutoff` is False) and --weights-cfg to a command that loads
    weights."""
    if cutoff:
        parser.add_argument("--cutoff", type=int, metavar="N",
                            help="load only layers 0..N-1 from the weights file (Darknet's "
                                 "cutoff, e.g. 137 for a yolov4 backbone); the later layers get "
                                 "Darknet's random initialisation")
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


def describe_load(path: str, report: Any) -> str:
    """One line on what a load did (`report`: the model's LoadReport; None for a checkpoint)."""
    if report is None:
        return f"weights {path}: checkpoint loaded"
    from ..weights import describe_layers

    h = report.header
    left = f", {report.floats_left:,} left unread" if report.floats_left else ""
    via = f" (read with {report.weights_cfg})" if report.weights_cfg else ""
    init = (f"; layers {describe_layers(report.initialised)} have Darknet's initialisation"
            if report.initialised else "")
    return (f"weights {path}{via}: version {h.major}.{h.minor}.{h.revision}, seen {h.seen}, "
            f"{report.floats_read:,} floats loaded into {report.layers_loaded} layers{left}{init}")


def error_text(exc: BaseException, args: argparse.Namespace) -> str:
    """`exc` as the command line shows it: a FitError's advice names this command's flags
    (the library's keyword argument where the command has no such flag)."""
    weights = sys.modules.get("darkcfg.weights")  # a FitError comes only after it was imported
    if weights is None or not isinstance(exc, weights.FitError):
        return str(exc)
    spelling = {key: flag if hasattr(args, attr) else weights.API_SPELLING[key]
                for key, (flag, attr) in _CLI_SPELLING.items()}
    return exc.render(spelling)
