"""The cfg's sections as written, for the training options inference parsing skipped.

Inference parsing reads only what the forward needs; training reads more keys of the same
sections ([net] batch=, [yolo] iou_loss=, per-layer learning_rate=...). This re-reads the
network's own text with darkcfg's lexer and typed option reader, so training options follow
Darknet's rules (first key wins, atoi/atof prefixes) and errors carry the line.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

from ..errors import CfgWarning
from ..graph import Network
from ..lexer import lex
from ..options import Options

__all__ = ["section_options"]


def section_options(network: Network) -> tuple[Options, list[Options]]:
    """(`[net]` options, one Options per layer: index i = Darknet's layer i)."""
    return _read(network.source, network.path)


@lru_cache(maxsize=8)
def _read(source: str, path: str | None) -> tuple[Options, list[Options]]:
    with warnings.catch_warnings():  # parse() already warned about this text once
        warnings.simplefilter("ignore", CfgWarning)
        sections = lex(source, path)
        opts = [Options(s, path, i - 1) for i, s in enumerate(sections)]
    return opts[0], opts[1:]
