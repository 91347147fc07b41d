"""torch modules for Darknet's layers, one small builder per section type, keyed by type name.

A builder takes a :class:`LayerSpec` (typed options, shapes) and returns an ``nn.Module`` whose
forward takes the tensors of ``spec.inputs`` in order. Parameter names are part of the public
state_dict scheme (``conv.weight``, ``bn.running_var``, ``fc.weight``): do not rename them.

A module may define ``darknet_order(y)``: `y` rearranged so that its C-order flattening per image
is Darknet's ``l.output`` (for layers whose natural torch layout differs, e.g. ``[region]``).
Stateful (recurrent) modules define ``reset_state()``.
"""

from . import core, heads, misc, recurrent  # noqa: F401  (registration)
from ._common import Builder, builder_for, register_builder
from .core import *  # noqa: F401,F403

__all__ = ["Builder", "builder_for", "register_builder", *core.__all__]
