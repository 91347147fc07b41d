"""Parsers for Darknet's section types: raw options → typed options, inputs, shape, weights layout.

One module per family of sections; importing this package registers all of them (with Darknet's
header aliases, `string_to_layer_type`). Defaults and arithmetic follow AlexeyAB/darknet's parser.c
and *_layer.c.
"""

from . import core, heads, misc, recurrent  # noqa: F401  (registration)
from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all

__all__ = list(_core_all)
