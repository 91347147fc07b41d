"""Activation names Darknet knows (activations.c `get_activation`), without torch."""

from __future__ import annotations

from .errors import warn_at
from .options import Options

__all__ = ["ACTIVATIONS", "read_activation"]

ACTIVATIONS: tuple[str, ...] = (
    "logistic", "swish", "mish", "hard_mish", "normalize_channels", "normalize_channels_softmax",
    "normalize_channels_softmax_maxval", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie",
    "plse", "hardtan", "lhtan", "linear", "ramp", "revleaky", "leaky", "tanh", "stair",
)


def read_activation(opts: Options, default: str) -> str:
    """Darknet turns an unknown name into relu (with a message on stderr); we do that and warn."""
    name = opts.str("activation", default) or default
    if name in ACTIVATIONS:
        return name
    warn_at(f"unknown activation {name!r}: Darknet uses relu", opts.key_loc("activation"))
    return "relu"
