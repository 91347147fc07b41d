"""Resource limits for untrusted cfg files, checked while parsing, before any tensor exists.

A cfg from a forum post or a half-finished edit can ask for absurd sizes (`filters=1000000000`,
`width=100000`). The graph already knows every layer's weights (its segments) and output shape, so
the memory a model needs is estimated from those numbers and a cfg over a limit is rejected with the
estimate in the message. The defaults are far above every public Darknet cfg at its own input size
(largest: 288M weights, 1.56G output floats and 1,637 BFLOPs per image) and well below what breaks
a machine; a caller
who really means it passes larger ones: ``darkcfg.parse(cfg, limits=darkcfg.Limits(max_weights=...))``
(``build`` and ``load`` pass ``limits=`` on to ``parse``).

Independent of the limits, Darknet keeps every layer's sizes in C ``int``s: a layer whose output or
weight count does not fit 32 bits is rejected, as Darknet cannot represent it either.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS", "INT_MAX", "human_bytes"]

INT_MAX = 2**31 - 1  # Darknet reads options with atoi() and keeps sizes in int


@dataclass(frozen=True)
class Limits:
    """What a parse may ask for. Every field is a plain count; raise one to accept bigger cfgs.

    - max_weights: float32 parameters of the whole model (default 2**30: 4 GiB).
    - max_activations: float32 outputs of one image summed over all layers, input included, i.e.
      what Darknet allocates for its layer outputs at batch 1 (default 2**32: 16 GiB).
    - max_bflops: Darknet's BFLOPs of one image, summed over the layers (default 20,000; the
      largest public cfg needs 1,637). Parameter-free windows (`[maxpool] size=1000000`) are
      bounded by nothing else, and would make a forward pass run for days.
    - max_cfg_bytes: size of the cfg text (default 4 MiB; the largest public cfg has 31 kB).
    - max_line: characters in one cfg line (default 65,536; the longest public line has 514).
    - max_layers: sections after [net] (default 20,000; the public cfgs have at most 375).
    - max_items: entries of a list or table a section allocates while it is parsed, such as
      `num=` anchors or a `mask=` (default 65,536).
    - max_warnings: CfgWarnings one parse shows before it sums up the rest in one (default 1,000).
    """

    max_weights: int = 2**30
    max_activations: int = 2**32
    max_bflops: int = 20_000
    max_cfg_bytes: int = 4 * 2**20
    max_line: int = 2**16
    max_layers: int = 20_000
    max_items: int = 2**16
    max_warnings: int = 1_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"Limits.{name} must be a non-negative int, not {value!r}")


DEFAULT_LIMITS = Limits()


def human_bytes(n: int | float) -> str:
    """`123.4 MB`-style size (decimal units, as file managers show them)."""
    value = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
