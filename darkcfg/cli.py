"""`darkcfg` command line. Errors are one line on stderr and exit code 1 (--debug: traceback)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .errors import CfgError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darkcfg", description="Darknet .cfg files as PyTorch networks")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a cfg (and load weights), print the layer table")
    b.add_argument("cfg")
    b.add_argument("--weights", help="Darknet .weights file to load and verify")
    b.add_argument("--width", type=int, help="override [net] width")
    b.add_argument("--height", type=int, help="override [net] height")
    b.add_argument("--no-strict", action="store_true",
                   help="load the prefix of a weights file that has more layers than the cfg")
    # Also accepted after the command; SUPPRESS keeps `darkcfg --debug build` from being reset.
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _build(args: argparse.Namespace) -> int:
    from .model import build
    from .summary import format_table

    model = build(args.cfg, width=args.width, height=args.height)
    print(format_table(model.network))
    if args.weights:
        report = model.load_darknet_weights(args.weights, strict=not args.no_strict)
        h = report.header
        left = f", {report.floats_left:,} left unread" if report.floats_left else ""
        print(f"weights {args.weights}: version {h.major}.{h.minor}.{h.revision}, seen {h.seen}, "
              f"{report.floats_read:,} floats loaded into {report.layers_loaded} layers{left}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = args.debug

    def _show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = _show
    try:
        if args.command == "build":
            return _build(args)
    except (CfgError, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"darkcfg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2
