"""`darkcfg` command line. Errors are one line on stderr and exit code 1 (--debug: traceback).
Long steps say what they do on stderr (--quiet: not). Output cut short by its reader (`| head`)
ends quietly with exit code 0.

Each command is a module of this package with `HELP`, `add_arguments(parser)` and `run(args)`;
modules import torch and the heavy parts of darkcfg inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import CfgError
from ._weights import error_text

__all__ = ["main", "COMMANDS", "progress"]

# command name -> module in this package (the order is the order of `darkcfg --help`)
COMMANDS = {
    "build": "build",
    "summary": "summary",
    "detect": "detect",
    "map": "map",
    "valid": "valid",
    "calc_anchors": "calc_anchors",
    "train": "train",
    "convert": "convert",
    "partial": "partial",
    "export": "export",
    "diff": "diff",
    "graph": "graph",
}


def _command(name: str):
    return importlib.import_module(f".{COMMANDS[name]}", __name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darkcfg", description="Darknet .cfg files as PyTorch networks")
    p.add_argument("--version", action="version", version=f"darkcfg {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true",
                   help="do not say on stderr what a long step (ONNX export) is doing")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = _command(name)
        c = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(c)
        # Also accepted after the command; SUPPRESS keeps `darkcfg --debug build` from being reset.
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        c.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return p


def progress(args: argparse.Namespace, message: str) -> None:
    """Say on stderr what a long step is doing, before it starts (unless --quiet)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _stdout_gone() -> int:
    """The reader closed our stdout (`darkcfg summary x.cfg | head`): stop without a message.
    stdout now points at devnull, so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (called in-process with a captured one)
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug

    def _show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = _show
    try:
        code = _command(args.command).run(args)
        sys.stdout.flush()  # here, so that a closed pipe is seen here
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except (CfgError, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"darkcfg: error: {error_text(exc, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort (MemoryError, torch, image decoders): still one line
        if debug:
            raise
        print(f"darkcfg: internal error: {type(exc).__name__}: {exc} (--debug shows the "
              f"traceback)", file=sys.stderr)
        return 1
